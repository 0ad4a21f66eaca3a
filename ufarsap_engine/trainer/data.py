"""Training data: read documents, tokenize, pack into fixed-length blocks, serve them in a
deterministic, resumable order.

Why blocks keep more than token ids: alignment plugins score *text* and report flagged
character spans; the engine must map those spans back onto the tokens the loss sees. So every
block keeps, per label token, the document it came from and its character offsets in that
document's text, and the batch carries the source documents (see :class:`Batch` and
:meth:`Batch.span_weights`).

Sources (:class:`DataSpec`):
- plain text (``.txt``): documents separated by blank lines;
- JSONL: one object per line with ``text``, or ``prompt`` + ``response``, or ``messages``
  (``[{"role", "content"}, ...]``, rendered as ``role: content`` lines); ``id`` optional;
- a Hugging Face ``datasets`` dataset saved with ``save_to_disk`` (needs ``pip install datasets``).

Tokenizer: by default a byte-level BPE trained on the corpus with ``tokenizers`` and saved into
the run directory as ``tokenizer.json`` (reused on resume); or a local HF tokenizer directory /
``tokenizer.json`` file.

Marks (``DataSpec.marks``, written once by the launching process for a data-side objective
family, see ``alignment/data_families.py``): per document a control token in front, character
spans whose tokens become ``<|hidden|>``, or spans that get a ``<|harmful|>`` tag in front. The
tokens they need are single special tokens of the tokenizer (added when it is trained; added to
a loaded tokenizer when the model's vocabulary has room).

Order: block order is a fresh permutation per epoch drawn from ``seed``; the position in the
stream (number of samples consumed) is all that is needed to resume, and it is stored in
checkpoints.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from ufarsap_engine.documents import jsonl_records, render_record
from ufarsap_engine.errors import UserError

EOS_CANDIDATES = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "<|eot_id|>")
DEFAULT_EOS = "<|endoftext|>"


def default_corpus_path() -> Path:
    """The corpus shipped inside the package (``ufarsap_engine/data/embedded/corpus.jsonl``)."""
    return Path(__file__).resolve().parent.parent / "data" / "embedded" / "corpus.jsonl"


class DataSpec(BaseModel):
    """Where the training text comes from and how it is tokenized."""

    model_config = ConfigDict(extra="forbid")

    path: str | None = None  # None -> the embedded default corpus
    format: Literal["auto", "text", "jsonl", "hf"] = "auto"
    text_field: str = "text"
    tokenizer: str | None = None  # None -> train a byte-level BPE on the corpus
    loss_on: Literal["all", "response"] = "all"  # "response": no loss on prompts / user turns
    hf_split: str = "train"
    max_documents: int | None = None
    holdout_documents: int = Field(0, ge=0, description="documents held out of training (the probe set)")
    holdout_seed: int = 0
    exclude_ids: list[str] = Field(default_factory=list, description="document ids never trained on "
                                   "(e.g. evolution's probe sets, which are scored elsewhere)")
    marks: str | None = Field(None, description="JSON file of per-document marks (control token, spans to "
                                                "hide or tag) applied when packing; see Marks")


class DocMarks(BaseModel):
    """What a data-side family does to one document (character offsets of its text)."""

    model_config = ConfigDict(extra="forbid")
    chars: int | None = None  # the text's length when marked: a changed document is refused
    prefix: str | None = None  # a special token put before the document (conditional training)
    hide: list[tuple[int, int]] = Field(default_factory=list)  # tokens overlapping become hidden_token
    tag: list[tuple[int, int]] = Field(default_factory=list)  # tag_token goes before each span


class Marks(BaseModel):
    """The marks file: the family, the special tokens it needs, and each document's marks by id."""

    model_config = ConfigDict(extra="allow")
    family: str
    special_tokens: list[str]
    hidden_token: str = "<|hidden|>"
    tag_token: str = "<|harmful|>"
    documents: dict[str, DocMarks]


def load_marks(path: str | os.PathLike) -> Marks:
    from pydantic import ValidationError

    try:
        return Marks.model_validate_json(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"cannot read the marks file {path}: {exc.strerror or type(exc).__name__}") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        raise UserError(f"{path} is not a marks file ({loc}: {err['msg']}); rerun the run that wrote it") from None


# --------------------------------------------------------------------------------------------
# Documents


@dataclass
class Document:
    """One source text. ``loss_ranges``: character ranges trained on (None = all of it)."""

    doc_id: str
    text: str
    loss_ranges: list[tuple[int, int]] | None = None
    prompt: str | None = None
    messages: list[dict[str, str]] | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def _render_record(rec: Any, where: str, spec: DataSpec, index: int) -> Document:
    """Turn one JSON object into a Document (rendered by ``documents.render_record``, the one
    renderer of training, evaluation and the benchmark), or raise ``UserError('FILE:LINE: ...')``."""
    try:
        r = render_record(rec, spec.text_field)
    except ValueError as exc:
        raise UserError(f"{where}: {exc}") from None
    doc_id = str(rec.get("id", index))
    meta = {k: v for k, v in rec.items() if k not in ("id", spec.text_field, "prompt", "response", "messages")}
    ranges = r.response_ranges if spec.loss_on == "response" else None
    return Document(doc_id, r.text, ranges, prompt=r.prompt, messages=r.messages, meta=meta)


def _not_utf8(path: Path, lineno: int, exc: UnicodeDecodeError, line: bytes) -> UserError:
    bad = line[exc.start:exc.start + 1].hex()
    return UserError(f"{path}:{lineno}: not UTF-8 text (byte 0x{bad} at byte {exc.start + 1} of the line); "
                     "convert the file to UTF-8 (e.g. iconv -f latin1 -t utf-8)")


def _cannot_read(path: Path, exc: OSError) -> UserError:
    return UserError(f"cannot read data file {path}: {exc.strerror or exc.__class__.__name__}")


def _text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` of a UTF-8 file; unreadable or non-UTF-8 data is a one-line
    UserError naming the file and line (binary data included)."""
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise _cannot_read(path, exc) from None
    with f:
        lineno = 0
        while True:
            try:
                raw = f.readline()
            except OSError as exc:
                raise _cannot_read(path, exc) from None
            if not raw:
                return
            lineno += 1
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise _not_utf8(path, lineno, exc, raw) from None
            if "\x00" in line:
                raise UserError(f"{path}:{lineno}: holds a NUL byte, so it looks like binary data, not text")
            yield lineno, line


def _read_jsonl(path: Path, spec: DataSpec) -> Iterator[Document]:
    for n, (lineno, rec) in enumerate(jsonl_records(path, _text_lines(path))):
        yield _render_record(rec, f"{path}:{lineno}", spec, n)


def _read_text(path: Path) -> Iterator[Document]:
    raw = "".join(line for _, line in _text_lines(path))
    chunks = [c.strip("\n") for c in raw.replace("\r\n", "\n").replace("\r", "\n").split("\n\n")]
    for i, c in enumerate(x for x in chunks if x.strip()):
        yield Document(str(i), c)


def _read_hf(path: Path, spec: DataSpec) -> Iterator[Document]:
    try:
        import datasets  # noqa: F401
    except ImportError:
        raise UserError(
            f"{path} looks like a Hugging Face dataset saved on disk; reading it needs the "
            "'datasets' package: pip install datasets"
        ) from None
    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        if spec.hf_split not in ds:
            raise UserError(f"{path}: no split '{spec.hf_split}' (splits: {', '.join(ds)})")
        ds = ds[spec.hf_split]
    for i, rec in enumerate(ds):
        yield _render_record(rec, f"{path}[row {i}]", spec, i)


def _read_annotation(path: Path, spec: DataSpec) -> Iterator[Document]:
    """The documents of an annotation directory (``ufarsap-engine annotate --out``), rendered
    back from the stored text, prompt and turns exactly as they were read when annotated."""
    from ufarsap_engine.annotate import load_annotations

    base = load_annotations(path, plugins=[])
    for i, row in enumerate(base):
        if row["messages"]:
            rec = {"id": row["id"], "messages": row["messages"]}
        elif row["prompt"] is not None:
            prompt, text = row["prompt"], row["text"]
            sep = "" if (not prompt or prompt[-1].isspace()) else "\n"
            rec = {"id": row["id"], "prompt": prompt, "response": text[len(prompt) + len(sep):]}
        else:
            rec = {"id": row["id"], "text": row["text"]}
        yield _render_record(rec, f"{path}[row {i}]", spec.model_copy(update={"text_field": "text"}), i)


def detect_format(path: Path) -> str:
    if path.is_dir():
        from ufarsap_engine.annotate.manifest import MANIFEST

        if (path / MANIFEST).exists():
            return "annotation"
        if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
            return "hf"
        raise UserError(f"{path} is a directory but neither an annotation (`ufarsap-engine annotate --out`) nor "
                        "a Hugging Face dataset saved on disk")
    if path.suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    return "text"


def load_documents(spec: DataSpec) -> list[Document]:
    """The documents to train on: the source less the held-out ones (see :func:`split_holdout`)."""
    return split_holdout(spec)[0]


def heldout_documents(spec: DataSpec) -> list[Document]:
    """The documents held out of training (probe set), in file order."""
    return split_holdout(spec)[1]


def split_holdout(spec: DataSpec) -> tuple[list[Document], list[Document]]:
    """(train, held out): the held-out probe set is ``holdout_documents`` picked by a seeded draw
    among the documents not in ``exclude_ids``; training gets neither. The same for every rank
    and every resume."""
    docs = read_documents(spec)
    if not spec.holdout_documents and not spec.exclude_ids:
        return docs, []
    excluded = set(spec.exclude_ids)
    pool = [d for d in docs if str(d.doc_id) not in excluded]
    n = min(spec.holdout_documents, len(pool) // 10)
    held = set(np.random.default_rng([spec.holdout_seed, 7]).choice(len(pool), size=n, replace=False).tolist())
    train = [d for i, d in enumerate(pool) if i not in held]
    if not train:
        raise UserError("every document is held out; give more data or a smaller holdout_documents")
    return train, [d for i, d in enumerate(pool) if i in held]


def read_documents(spec: DataSpec) -> list[Document]:
    """Read every document of the source, in file order. Errors are one-line UserErrors."""
    path = Path(spec.path) if spec.path else default_corpus_path()
    if not path.exists():
        what = "the embedded default corpus" if spec.path is None else "data file"
        raise UserError(f"{what} not found: {path}")
    fmt = spec.format if spec.format != "auto" else detect_format(path)
    reader: Iterable[Document]
    if fmt == "jsonl":
        reader = _read_jsonl(path, spec)
    elif fmt == "hf":
        reader = _read_hf(path, spec)
    elif fmt == "annotation":
        reader = _read_annotation(path, spec)
    else:
        reader = _read_text(path)
    docs = []
    for d in reader:
        if d.text:
            docs.append(d)
        if spec.max_documents and len(docs) >= spec.max_documents:
            break
    if not docs:
        raise UserError(f"{path}: no non-empty documents")
    return docs


# --------------------------------------------------------------------------------------------
# Tokenizer


class TextTokenizer:
    """A ``tokenizers.Tokenizer`` with the EOS id and offsets the engine needs."""

    def __init__(self, tok, eos_id: int, source: str):
        self.tok = tok
        self.eos_id = eos_id
        self.source = source

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def encode_batch_with_offsets(self, texts: list[str]) -> list[tuple[list[int], list[tuple[int, int]]]]:
        encs = self.tok.encode_batch(texts, add_special_tokens=False)
        return [(e.ids, e.offsets) for e in encs]

    def decode(self, ids: Iterable[int]) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=False)

    def token_to_id(self, token: str) -> int | None:
        return self.tok.token_to_id(token)

    def save(self, path: str | os.PathLike) -> None:
        self.tok.save(str(path))


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int, special_tokens: Iterable[str] = ()) -> TextTokenizer:
    """Byte-level BPE trained on ``texts`` (deterministic for the same input); EOS and
    ``special_tokens`` are single, never-split tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[DEFAULT_EOS, *special_tokens],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
        min_frequency=2,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return TextTokenizer(tok, tok.token_to_id(DEFAULT_EOS), "trained")


def load_tokenizer(path: str | os.PathLike) -> TextTokenizer:
    """A local HF tokenizer directory (with ``tokenizer.json``) or a ``tokenizer.json`` file."""
    from tokenizers import Tokenizer

    p = Path(path)
    file = p / "tokenizer.json" if p.is_dir() else p
    if not file.exists():
        raise UserError(
            f"tokenizer not found: {file} (give a directory holding a fast tokenizer's "
            "tokenizer.json, or the file itself)"
        )
    try:
        tok = Tokenizer.from_file(str(file))
    except Exception as exc:  # tokenizers raises a bare Exception for every kind of bad file
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise UserError(f"{file} is not a valid tokenizer.json ({first}); replace it with a fast "
                        "tokenizer's tokenizer.json (a run trains its own when OUT/tokenizer.json is absent)") from None
    eos = None
    cfg = file.parent / "tokenizer_config.json"
    if cfg.exists():
        try:
            e = json.loads(cfg.read_text()).get("eos_token")
            if isinstance(e, dict):
                e = e.get("content")
            if isinstance(e, str):
                eos = tok.token_to_id(e)
        except (json.JSONDecodeError, OSError):
            pass
    if eos is None:
        for cand in EOS_CANDIDATES:
            if tok.token_to_id(cand) is not None:
                eos = tok.token_to_id(cand)
                break
    if eos is None:
        raise UserError(f"{file}: cannot tell the end-of-text token (none of {', '.join(EOS_CANDIDATES)})")
    return TextTokenizer(tok, eos, str(file))


def check_vocab(tokenizer: TextTokenizer, model_vocab_size: int) -> None:
    if tokenizer.vocab_size > model_vocab_size:
        raise UserError(
            f"the tokenizer has {tokenizer.vocab_size} tokens but the model's vocab_size is "
            f"{model_vocab_size}; use a model with vocab_size >= {tokenizer.vocab_size}"
        )


def special_tokens(tokenizer: TextTokenizer) -> set[str]:
    """The tokenizer's added special tokens (EOS, control tokens, ``<|hidden|>``, ``<|harmful|>``)."""
    return {t.content for t in tokenizer.tok.get_added_tokens_decoder().values() if t.special}


def ensure_special_tokens(tokenizer: TextTokenizer, tokens: Iterable[str], model_vocab_size: int) -> TextTokenizer:
    """Make each of ``tokens`` a single special token of ``tokenizer``: added at the end of its
    vocabulary (the same ids on every rank) when the model's vocabulary has room, else a UserError."""
    from tokenizers import AddedToken

    specials = special_tokens(tokenizer)
    missing = [t for t in tokens if t not in specials]
    if not missing:
        return tokenizer
    taken = [t for t in missing if tokenizer.token_to_id(t) is not None]
    if taken:
        raise UserError(f"{tokenizer.source}: {taken[0]} is an ordinary token of this tokenizer, not a special one; "
                        "use a tokenizer without it (or let the run train its own)")
    if tokenizer.vocab_size + len(missing) > model_vocab_size:
        raise UserError(f"{tokenizer.source} has {tokenizer.vocab_size} tokens and the model's vocab_size is "
                        f"{model_vocab_size}: no room for the special tokens {', '.join(missing)}; use a model with "
                        f"vocab_size >= {tokenizer.vocab_size + len(missing)} (model_overrides.vocab_size)")
    tokenizer.tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in missing])
    return tokenizer


def get_tokenizer(
    spec: DataSpec, docs: list[Document], model_vocab_size: int, run_dir: Path | None, is_writer: bool
) -> TextTokenizer:
    """The tokenizer for this run. A trained one is saved as ``RUN/tokenizer.json`` by the
    writer rank and reused by every later call (other ranks, resumed runs). The special tokens
    of ``spec.marks`` are part of it (see :func:`ensure_special_tokens`)."""
    specials = load_marks(spec.marks).special_tokens if spec.marks else []
    if spec.tokenizer:
        tok = load_tokenizer(spec.tokenizer)
    else:
        saved = run_dir / "tokenizer.json" if run_dir else None
        if saved is not None and saved.exists():
            tok = load_tokenizer(saved)
        else:
            tok = train_bpe_tokenizer((d.text for d in docs), model_vocab_size, specials)
            if saved is not None and is_writer:
                saved.parent.mkdir(parents=True, exist_ok=True)
                tmp = saved.with_suffix(".json.tmp")
                tok.save(tmp)
                os.replace(tmp, saved)
    ensure_special_tokens(tok, specials, model_vocab_size)
    check_vocab(tok, model_vocab_size)
    return tok


# --------------------------------------------------------------------------------------------
# Packing


@dataclass
class Segment:
    """The part of one document that falls in one batch row.

    ``start``/``end``: label positions ``[start, end)`` in the row; ``char_start``/``char_end``:
    the characters of ``text`` those labels cover."""

    doc_index: int
    doc_id: str
    text: str
    start: int
    end: int
    char_start: int
    char_end: int


def _special_id(tokenizer: TextTokenizer, token: str) -> int:
    tid = tokenizer.token_to_id(token)
    if tid is None:
        raise UserError(f"the tokenizer has no token {token} that the marks file needs; rerun so that the run "
                        "adds it (a tokenizer given with data.tokenizer must leave the model vocabulary room)")
    return tid


def apply_marks(tokenizer: TextTokenizer, marks: Marks, doc: Document, ids: np.ndarray,
                offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One document's token ids and ``[n, 2]`` character offsets after its marks: tokens that
    overlap a ``hide`` span become ``hidden_token`` (same offsets), a ``tag_token`` (zero-width,
    at the span's start) goes before the first token of each ``tag`` span, the ``prefix`` token
    (offsets 0, 0) before the document."""
    dm = marks.documents.get(str(doc.doc_id))
    if dm is None:
        raise UserError(f"the marks file has no entry for document {doc.doc_id!r}; the data changed since it "
                        "was written: rerun with --overwrite")
    if dm.chars is not None and dm.chars != len(doc.text):
        raise UserError(f"document {doc.doc_id!r} has {len(doc.text)} characters but {dm.chars} when it was "
                        "marked: the data changed since; rerun with --overwrite")
    ids, offsets = ids.copy(), offsets.copy()
    for a, b in dm.hide:
        ids[(offsets[:, 0] < b) & (offsets[:, 1] > a)] = _special_id(tokenizer, marks.hidden_token)
    if dm.tag:
        tag_id = _special_id(tokenizer, marks.tag_token)
        at = sorted({int(np.argmax(hit)) for a, b in dm.tag
                     if (hit := (offsets[:, 0] < b) & (offsets[:, 1] > a)).any()})
        starts = offsets[at, 0]
        ids = np.insert(ids, at, tag_id)
        offsets = np.insert(offsets, at, np.stack([starts, starts], axis=1), axis=0)
    if dm.prefix:
        ids = np.concatenate([[_special_id(tokenizer, dm.prefix)], ids])
        offsets = np.concatenate([np.zeros((1, 2), dtype=np.int64), offsets])
    return ids, offsets


class PackedDataset:
    """All documents tokenized into one stream (EOS after each), cut into blocks of
    ``seq_length + 1`` tokens (inputs = block[:-1], labels = block[1:]). ``marks``: per-document
    control tokens, hidden or tagged spans applied to each document's tokens (:func:`apply_marks`)."""

    def __init__(self, docs: list[Document], tokenizer: TextTokenizer, seq_length: int, marks: Marks | None = None):
        self.docs = docs
        self.tokenizer = tokenizer
        self.seq_length = seq_length
        self.marks = marks
        ids, doc_of, cs, ce, lossable = [], [], [], [], []
        encoded = tokenizer.encode_batch_with_offsets([d.text for d in docs])
        for di, (d, (tids, offs)) in enumerate(zip(docs, encoded)):
            tids = np.asarray(tids, dtype=np.int64)
            o = np.asarray(offs, dtype=np.int64).reshape(len(tids), 2)
            if marks is not None:
                tids, o = apply_marks(tokenizer, marks, d, tids, o)
            n = len(tids)
            ids.append(tids)
            ids.append(np.asarray([tokenizer.eos_id], dtype=np.int64))
            doc_of.append(np.full(n + 1, di, dtype=np.int32))
            cs.append(np.concatenate([o[:, 0], [len(d.text)]]))
            ce.append(np.concatenate([o[:, 1], [len(d.text)]]))
            if d.loss_ranges is None:
                m = np.ones(n + 1, dtype=bool)
            else:
                m = np.zeros(n + 1, dtype=bool)
                for a, b in d.loss_ranges:
                    m[:n] |= (o[:, 0] >= a) & (o[:, 0] < b)
                m[n] = True
            lossable.append(m)
        self.ids = np.concatenate(ids)
        self.doc_of = np.concatenate(doc_of)
        self.char_start = np.concatenate(cs).astype(np.int64)
        self.char_end = np.concatenate(ce).astype(np.int64)
        self.lossable = np.concatenate(lossable)
        self.num_blocks = (len(self.ids) - 1) // seq_length
        if self.num_blocks < 1:
            raise UserError(
                f"the corpus has {len(self.ids)} tokens, fewer than one block of "
                f"seq_length+1 = {seq_length + 1}; give more text or a shorter seq_length"
            )

    @property
    def num_tokens(self) -> int:
        return len(self.ids)

    def block_slice(self, block: int) -> slice:
        a = block * self.seq_length
        return slice(a, a + self.seq_length + 1)

    def unigram_entropy(self) -> float:
        """Entropy (nats) of the unigram distribution of the label tokens of all blocks."""
        used = self.ids[1 : self.num_blocks * self.seq_length + 1]
        counts = np.bincount(used).astype(np.float64)
        p = counts[counts > 0] / counts.sum()
        return float(-(p * np.log(p)).sum())


def epoch_permutation(num_blocks: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(num_blocks)


def sample_order(num_blocks: int, seed: int, start: int, count: int) -> np.ndarray:
    """Block ids of stream positions ``start .. start+count-1`` (epochs reshuffled by seed)."""
    out = np.empty(count, dtype=np.int64)
    cache: dict[int, np.ndarray] = {}
    for i in range(count):
        pos = start + i
        e, k = divmod(pos, num_blocks)
        if e not in cache:
            cache[e] = epoch_permutation(num_blocks, seed, e)
        out[i] = cache[e][k]
    return out


@dataclass
class Batch:
    """One microbatch. Tensors are ``[b, s]`` unless noted.

    ``label_doc``/``label_char_start``/``label_char_end``: for each label token, the index of
    its document in ``dataset.docs`` and its character range in that document's text.
    ``segments[row]``: the documents (parts) that make up each row."""

    tokens: torch.Tensor
    labels: torch.Tensor
    loss_mask: torch.Tensor
    position_ids: torch.Tensor
    sample_positions: torch.Tensor  # [b] position in the sample stream (resume key)
    block_ids: torch.Tensor  # [b] block index in the dataset
    label_doc: torch.Tensor
    label_char_start: torch.Tensor
    label_char_end: torch.Tensor
    segments: list[list[Segment]]
    dataset: PackedDataset | None = None
    #: ``[b]``: set on the on-policy phase's preference rows, whose loss is ``row_weight`` x
    #: their token cross-entropy sum (see ``alignment/onpolicy.py``); None on training data.
    row_weight: torch.Tensor | None = None

    @property
    def size(self) -> int:
        return self.tokens.shape[0]

    def to(self, device) -> "Batch":
        kw = {}
        for name in (
            "tokens", "labels", "loss_mask", "position_ids", "label_doc",
            "label_char_start", "label_char_end",
        ):
            kw[name] = getattr(self, name).to(device)
        return Batch(
            sample_positions=self.sample_positions, block_ids=self.block_ids,
            segments=self.segments, dataset=self.dataset,
            row_weight=None if self.row_weight is None else self.row_weight.to(device), **kw,
        )

    def span_weights(self, row: int, doc_index: int, spans: Iterable, default: float = 0.0) -> torch.Tensor:
        """Map character spans of one document onto this row's label tokens.

        ``spans``: objects with ``start``/``end`` (and optional ``severity``) or
        ``(start, end[, severity])`` tuples, in the document's character offsets. Returns a
        float ``[s]`` tensor: the highest severity of any span a token overlaps, else
        ``default``."""
        out = torch.full((self.tokens.shape[1],), float(default))
        in_doc = self.label_doc[row].cpu() == doc_index
        cs, ce = self.label_char_start[row].cpu(), self.label_char_end[row].cpu()
        for sp in spans:
            if isinstance(sp, (tuple, list)):
                a, b = sp[0], sp[1]
                sev = sp[2] if len(sp) > 2 else 1.0
            else:
                a, b, sev = sp.start, sp.end, getattr(sp, "severity", 1.0)
            hit = in_doc & (cs < b) & (ce > a)
            out[hit] = torch.maximum(out[hit], torch.tensor(float(sev)))
        return out


def make_batch(ds: PackedDataset, positions: np.ndarray, blocks: np.ndarray) -> Batch:
    s = ds.seq_length
    rows = [ds.block_slice(int(b)) for b in blocks]
    ids = np.stack([ds.ids[r] for r in rows])
    lab = lambda arr: np.stack([arr[r][1:] for r in rows])  # noqa: E731
    label_doc = lab(ds.doc_of).astype(np.int64)
    segments = []
    cst, cen = lab(ds.char_start), lab(ds.char_end)
    for i in range(len(rows)):
        segs, d = [], label_doc[i]
        bounds = np.flatnonzero(np.diff(d)) + 1
        starts = np.concatenate([[0], bounds])
        ends = np.concatenate([bounds, [s]])
        for a, b in zip(starts, ends):
            di = int(d[a])
            doc = ds.docs[di]
            segs.append(
                Segment(di, doc.doc_id, doc.text, int(a), int(b), int(cst[i, a]), int(cen[i, b - 1]))
            )
        segments.append(segs)
    return Batch(
        tokens=torch.from_numpy(ids[:, :-1].copy()),
        labels=torch.from_numpy(ids[:, 1:].copy()),
        loss_mask=torch.from_numpy(lab(ds.lossable).astype(np.float32)),
        position_ids=torch.arange(s, dtype=torch.long).unsqueeze(0).expand(len(rows), s).contiguous(),
        sample_positions=torch.as_tensor(positions, dtype=torch.long),
        block_ids=torch.as_tensor(blocks, dtype=torch.long),
        label_doc=torch.from_numpy(label_doc),
        label_char_start=torch.from_numpy(cst.astype(np.int64)),
        label_char_end=torch.from_numpy(cen.astype(np.int64)),
        segments=segments,
        dataset=ds,
    )


class StepBatches:
    """Serves this data-parallel rank's microbatches for each optimizer step.

    Step k covers stream positions ``[consumed, consumed + global_batch)``; DP rank r takes the
    r-th contiguous slice, cut into microbatches. The same global batch is seen whatever the
    TP/PP/DP layout, which is what makes losses comparable across layouts."""

    def __init__(
        self, ds: PackedDataset, seed: int, global_batch: int, micro_batch: int, dp: int, dp_rank: int
    ):
        self.ds, self.seed = ds, seed
        self.global_batch, self.micro_batch, self.dp, self.dp_rank = global_batch, micro_batch, dp, dp_rank
        self.consumed = 0  # samples consumed (all ranks); saved in checkpoints

    @property
    def num_microbatches(self) -> int:
        return self.global_batch // (self.micro_batch * self.dp)

    def next_step(self) -> list[Batch]:
        per_rank = self.global_batch // self.dp
        start = self.consumed + self.dp_rank * per_rank
        blocks = sample_order(self.ds.num_blocks, self.seed, start, per_rank)
        positions = np.arange(start, start + per_rank)
        mbs = [
            make_batch(self.ds, positions[i : i + self.micro_batch], blocks[i : i + self.micro_batch])
            for i in range(0, per_rank, self.micro_batch)
        ]
        self.consumed += self.global_batch
        return mbs

    def recent_documents(self, steps: int) -> list[int]:
        """Indices (into ``ds.docs``, ascending) of the documents the last ``steps`` steps trained
        on, over all data-parallel ranks: the same list on every rank."""
        start = max(0, self.consumed - steps * self.global_batch)
        blocks = sample_order(self.ds.num_blocks, self.seed, start, self.consumed - start)
        found: set[int] = set()
        for b in blocks.tolist():
            sl = self.ds.block_slice(b)
            found.update(np.unique(self.ds.doc_of[sl.start + 1 : sl.stop]).tolist())
        return sorted(found)

    def state_dict(self) -> dict:
        return {"consumed": self.consumed, "seed": self.seed, "num_blocks": self.ds.num_blocks}

    def load_state_dict(self, state: dict) -> None:
        if state.get("num_blocks") not in (None, self.ds.num_blocks):
            raise UserError(
                f"the checkpoint's data had {state['num_blocks']} blocks but this data has "
                f"{self.ds.num_blocks}; resume with the same data, tokenizer and seq_length"
            )
        self.consumed = int(state["consumed"])


def prepare_data(
    spec: DataSpec, vocab_size: int, seq_length: int, run_dir: Path | None, is_writer: bool = True
) -> PackedDataset:
    """Documents -> tokenizer -> packed dataset (one call, used by every rank)."""
    docs = load_documents(spec)
    tok = get_tokenizer(spec, docs, vocab_size, run_dir, is_writer)
    return PackedDataset(docs, tok, seq_length, load_marks(spec.marks) if spec.marks else None)
