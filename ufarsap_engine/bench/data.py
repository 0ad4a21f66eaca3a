"""The benchmark's data: one training corpus for every method, the held-out evaluation sets, and
one shared tokenizer.

Held out of training (never in ``train.jsonl``), all from the corpus's *test* split:

* ``heldout_clean``: clean documents (``kind == clean``) for held-out LM loss / perplexity;
* ``auc_docs``: the clean ones plus labelled-bad documents (toxic, pii, misinfo, myth, bias), for
  the self-evaluation AUC;
* ``adversarial``: the records whose user turn / prompt becomes an adversarial prompt
  (conversations whose assistant turn is toxic, leaks personal data or asserts a false claim,
  and jailbreak records), rendered as the trainer renders a conversation up to the assistant's
  turn (``user: ...\\nassistant:``) or a prompt record up to its response.

One byte-level BPE tokenizer (``tokenizer.json``, with ``<|endoftext|>``, ``<|aligned|>``,
``<|misaligned|>`` as special tokens) is trained on the training corpus and copied into every run
directory, so every method (conditional training included) sees the same token ids and
held-out losses are comparable per token. It leaves room in the model's vocabulary for the
data-side families' own tokens (``<|hidden|>``, ``<|harmful|>``), which a run of those families
appends at the end; only that run's tokenizer has them, so no other checkpoint decodes as if
trained with tags.

With ``harm_repeat > 1`` every training document labelled harmful is repeated that many times
(the copies get distinct ids): the regime where a model trained by plain MLE reproduces harmful
content often enough that a reduction can be measured.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ufarsap_engine.alignment.conditional import CONTROL_TOKENS, render_record
from ufarsap_engine.alignment.data_families import HARMFUL, HIDDEN
from ufarsap_engine.data.corpus import EMBEDDED_DIR

ADV_KINDS = ("conv-toxic", "conv-pii", "conv-misinfo", "conv-adversarial", "adversarial")
BAD_KINDS = ("toxic", "pii", "misinfo", "myth", "bias")
#: Corpus kinds whose documents carry harmful content (repeated with ``harm_repeat``).
HARMFUL_KINDS = BAD_KINDS + ("conv-toxic", "conv-pii", "conv-misinfo", "conv-adversarial")
#: Vocabulary ids kept free for the data-side families' tokens.
RESERVED_TOKENS = (HIDDEN, HARMFUL)


@dataclass
class BenchData:
    root: Path
    train_path: Path
    tokenizer_path: Path
    heldout_clean: list[str]
    auc_texts: list[str]
    auc_labels: list[int]  # 1 = clean (aligned), 0 = labelled bad
    adversarial_prompts: list[dict[str, str]]  # {"id", "kind", "prompt"}
    n_train: int

    def summary(self) -> dict[str, Any]:
        return {"train_documents": self.n_train, "heldout_clean": len(self.heldout_clean),
                "auc_documents": len(self.auc_texts), "auc_positives": sum(self.auc_labels),
                "adversarial_prompts": len(self.adversarial_prompts)}


def adversarial_prompt(rec: dict) -> str:
    if "messages" in rec:
        user = next(m["content"] for m in rec["messages"] if m["role"] == "user")
        return f"user: {user}\nassistant:"
    if "prompt" in rec:
        p = rec["prompt"]
        return p if p[-1:].isspace() else p + "\n"
    return rec["text"][:80]


def build(root: str | Path, *, n_clean: int, n_bad_per_kind: int, n_adv_per_kind: int,
          max_train_documents: int | None = None, vocab_size: int = 1024, harm_repeat: int = 1,
          seed: int = 0) -> BenchData:
    """Write ``ROOT/data/train.jsonl`` and ``ROOT/data/tokenizer.json`` (reused when present and
    built with the same settings) and return the evaluation sets."""
    root = Path(root)
    ddir = root / "data"
    ddir.mkdir(parents=True, exist_ok=True)
    recs = [json.loads(x) for x in open(EMBEDDED_DIR / "corpus.jsonl", encoding="utf-8") if x.strip()]
    labels = {json.loads(x)["id"]: json.loads(x) for x in open(EMBEDDED_DIR / "labels.jsonl", encoding="utf-8") if x.strip()}
    rng = random.Random(seed)
    by_kind: dict[str, list[dict]] = {}
    for r in recs:
        lab = labels[r["id"]]
        if lab["split"] == "test":
            by_kind.setdefault(lab["kind"], []).append(r)
    pick = lambda kind, n: rng.sample(by_kind.get(kind, []), min(n, len(by_kind.get(kind, []))))  # noqa: E731
    clean = pick("clean", n_clean)
    bad = [r for k in BAD_KINDS for r in pick(k, n_bad_per_kind)]
    per_kind = [[(k, r) for r in pick(k, n_adv_per_kind)] for k in ADV_KINDS]
    # round-robin over kinds, so that the first N prompts cover every kind
    adv = [grp[i] for i in range(n_adv_per_kind) for grp in per_kind if i < len(grp)]
    held = {r["id"] for r in clean + bad} | {r["id"] for _, r in adv}
    train = [r for r in recs if r["id"] not in held]
    if max_train_documents:
        train = train[:max_train_documents]
    if harm_repeat > 1:
        train = train + [{**r, "id": f"{r['id']}~{i}"} for i in range(1, harm_repeat) for r in train
                         if labels[r["id"]]["kind"] in HARMFUL_KINDS]
        rng.shuffle(train)
    settings = {"n_clean": n_clean, "n_bad_per_kind": n_bad_per_kind, "n_adv_per_kind": n_adv_per_kind,
                "max_train_documents": max_train_documents, "vocab_size": vocab_size, "harm_repeat": harm_repeat,
                "reserved_tokens": len(RESERVED_TOKENS), "seed": seed}
    stamp = ddir / "settings.json"
    train_path, tok_path = ddir / "train.jsonl", ddir / "tokenizer.json"
    if not (stamp.exists() and json.loads(stamp.read_text()) == settings and train_path.exists() and tok_path.exists()):
        train_path.write_text("".join(json.dumps(r) + "\n" for r in train), encoding="utf-8")
        tok = train_tokenizer([render_record(r)[0] for r in train], vocab_size - len(RESERVED_TOKENS))
        tok.save(str(tok_path))
        stamp.write_text(json.dumps(settings))
    return BenchData(
        root=root, train_path=train_path, tokenizer_path=tok_path,
        heldout_clean=[render_record(r)[0] for r in clean],
        auc_texts=[render_record(r)[0] for r in clean + bad],
        auc_labels=[1] * len(clean) + [0] * len(bad),
        adversarial_prompts=[{"id": r["id"], "kind": k, "prompt": adversarial_prompt(r)} for k, r in adv],
        n_train=len(train),
    )


def train_tokenizer(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from ufarsap_engine.trainer.data import DEFAULT_EOS

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[DEFAULT_EOS, *CONTROL_TOKENS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
                                  min_frequency=2)
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def seed_run_dir(run_dir: str | Path, data: BenchData) -> None:
    """Give a fresh run directory the shared tokenizer (the trainer reuses ``OUT/tokenizer.json``)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / "tokenizer.json").exists():
        shutil.copyfile(data.tokenizer_path, run_dir / "tokenizer.json")
