"""What the training step reads instead of calling detectors: one document's annotation.

:class:`AnnotationTable` maps each training document (by content hash, so held-out documents
and any order of the training list are fine) to its shard and row in an annotation directory,
and hands the objective that document's results in the shape scoring hooks return them:
``{(plugin, scale): (score, spans, unit_scores)}``. Shards are loaded once per process,
memory-mapped, and only when complete (listed in the manifest). A document whose shard is not
complete yet (a background annotation is still running ahead of the trainer, see
:mod:`ufarsap_engine.annotate.background`) is waited for; if that annotation failed, the wait
ends with its error.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterable

from ufarsap_engine.annotate.manifest import MANIFEST, Manifest, base_dir, content_hash, plugin_dir, read_manifest
from ufarsap_engine.errors import EngineFailure, UserError
from ufarsap_engine.schemas import SCALES, Sample, Span

#: Written by a background annotation that failed; readers stop waiting and raise its message.
ERROR_FILE = "annotate_error.json"
Result = tuple[float | None, list[Span] | None, list[float] | None]


def document_key(text: str, prompt: str | None, messages: list[dict] | None) -> str:
    """The content hash an annotation stores for a document (what its scoring hooks saw)."""
    return content_hash(text, prompt, messages)


class AnnotationTable:
    """Per-document annotation results for ``plugins`` from the annotation in ``root``.

    ``wait_s``: how long to wait without progress for a shard that is not complete yet."""

    def __init__(self, root: str | Path, plugins: Iterable[str], wait_s: float = 600.0, poll_s: float = 0.05):
        self.root = Path(root)
        self.plugins = sorted(plugins)
        self.wait_s, self.poll_s = wait_s, poll_s
        self._manifest: Manifest | None = None
        self._where: dict[str, tuple[int, int]] = {}  # content hash -> (shard index, row)
        self._shards: dict[int, dict[str, Any]] = {}  # shard index -> loaded columns
        self._entries: dict[str, dict] = {}  # content hash -> entry

    # -- the manifest ------------------------------------------------------------------------
    def _read(self) -> Manifest | None:
        if not (self.root / MANIFEST).is_file():
            return None
        return read_manifest(self.root)

    def _failed(self) -> None:
        err = self.root / ERROR_FILE
        if err.is_file():
            info = json.loads(err.read_text())
            cls = UserError if info.get("exit_code") == 2 else EngineFailure
            raise cls(f"annotation of the training data failed: {info.get('message')}")

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = (self.root / MANIFEST).stat()
        except FileNotFoundError:
            return None
        return st.st_mtime_ns, st.st_size

    def _wait_for(self, ready) -> Manifest:
        """Re-read the manifest until ``ready(manifest)``; raise on failure or no progress.
        The manifest is parsed again only when its file changed; the poll interval grows from
        ``poll_s`` to 0.5 s while nothing changes (a trainer ahead of the annotator waits cheaply)."""
        last_change, stamp, seen, poll = time.monotonic(), (), (), self.poll_s
        while True:
            self._failed()
            now = self._stamp()
            if now != stamp:
                stamp, m = now, self._read()
                if m is not None and ready(m):
                    self._manifest = m
                    return m
                state = None if m is None else sum(len(r.done) for r in m.plugins.values())
                if state != seen:
                    seen, last_change, poll = state, time.monotonic(), self.poll_s
            if time.monotonic() - last_change > self.wait_s:
                raise EngineFailure(f"{self.root}: no annotation progress for {self.wait_s:g} s while training "
                                    f"waited for it; run `ufarsap-engine annotate --plugins {','.join(self.plugins)} "
                                    f"--out {self.root}` and train on that directory")
            time.sleep(poll)
            poll = min(0.5, poll * 1.5)

    def _index(self) -> None:
        import datasets

        m = self._wait_for(lambda m: all(n in m.plugins for n in self.plugins))
        for i, shard in enumerate(m.shards):
            hashes = datasets.load_from_disk(str(base_dir(self.root, shard.key)))["content_hash"]
            for r, h in enumerate(hashes):
                self._where.setdefault(h, (i, r))

    def _shard(self, i: int) -> dict[str, Any]:
        if i in self._shards:
            return self._shards[i]
        import datasets

        m = self._manifest
        key = m.shards[i].key
        if not all(key in m.plugins[n].done for n in self.plugins):
            m = self._wait_for(lambda m: all(key in m.plugins[n].done for n in self.plugins))
        base = datasets.load_from_disk(str(base_dir(self.root, key))).select_columns(["text", "sentences"])
        cols: dict[str, Any] = base.to_dict()  # plain lists: one conversion per shard, not per lookup
        for n in self.plugins:
            rec = m.plugins[n]
            ds = datasets.load_from_disk(str(plugin_dir(self.root, n, rec.key, key)))
            cols.update(ds.select_columns(rec.columns).to_dict())
        self._shards[i] = cols
        return cols

    # -- what the objective asks ---------------------------------------------------------------
    def covers(self, plugin: str) -> bool:
        return plugin in self.plugins

    def entry(self, doc_key: str, sample_id: str) -> dict:
        """``{"sample", "sentences", "results"}`` for the document with content hash ``doc_key``."""
        hit = self._entries.get(doc_key)
        if hit is not None:
            return hit
        if not self._where:
            self._index()
        if doc_key not in self._where:
            raise UserError(f"{self.root} has no annotation of training document {sample_id!r} (its text differs "
                            "from what was annotated); annotate the data you train on")
        i, r = self._where[doc_key]
        cols = self._shard(i)
        text = cols["text"][r]
        sentences = [tuple(s) for s in cols["sentences"][r]]
        results: dict[tuple[str, str], Result] = {}
        m = self._manifest
        for n in self.plugins:
            scales = m.plugins[n].scales
            for scale in SCALES:
                if scale not in scales:
                    continue
                spans = units = None
                if scale == "token":  # built unvalidated: the objective checks every result it uses (check_sample)
                    spans = [Span.model_construct(start=a, end=b, severity=sev, label=lab or "") for (a, b), sev, lab in
                             zip(cols[f"{n}:spans"][r], cols[f"{n}:span_severity"][r], cols[f"{n}:span_labels"][r])]
                if scale == "sentence":
                    units = cols.get(f"{n}:sentence_units", [None] * (r + 1))[r]
                results[(n, scale)] = (cols[f"{n}:{scale}"][r], spans, units)
        entry = {"sample": Sample.model_construct(sample_id=sample_id, text=text, sentences=sentences),
                 "sentences": sentences, "results": results, "checked": {}}
        self._entries[doc_key] = entry
        return entry

