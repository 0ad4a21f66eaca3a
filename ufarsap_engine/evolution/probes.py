"""Held-out probe sets: labelled samples that evolution scores strategies on and never trains on.

The embedded corpus labels every record with a split (``dev`` / ``test``) and five harm
categories. A probe set is a seeded, balanced draw from one split: up to ``per_category``
labelled-bad records per category and as many clean ones, drawn round-robin over the clean
kinds so the look-alike negatives (``toxic-neg``, ``pii-neg``, ``fact``, ...) are in it.
Selection uses the ``dev`` probe; generalisation is measured on the ``test`` probe, whose
records come from different templates (see ``data/embedded/README.md``).

The trainer leaves ``ProbeSet.ids`` of both default probe sets out of its training data
(:func:`default_probe_ids`, the ``exclude_ids`` that ``run`` gives the trainer when it trains on
the embedded corpus).
"""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ufarsap_engine.alignment.scoring import make_sample
from ufarsap_engine.data.corpus import EMBEDDED_DIR, iter_documents
from ufarsap_engine.documents import jsonl_records
from ufarsap_engine.errors import UserError
from ufarsap_engine.schemas import Sample

CATEGORIES = ("toxicity", "privacy", "misinformation", "bias", "adversarial")


@dataclass(frozen=True)
class ProbeSet:
    """Samples with a 0/1 label per harm category (``labels[i, c]``, ``CATEGORIES`` order)."""

    name: str
    samples: list[Sample]
    labels: np.ndarray

    @property
    def ids(self) -> list[str]:
        return [s.sample_id for s in self.samples]

    @property
    def bad(self) -> np.ndarray:
        return self.labels.any(axis=1)

    @property
    def key(self) -> str:
        """Identifies the exact samples, so paired comparisons only pair like with like."""
        return hashlib.sha256(("\n".join(self.ids)).encode()).hexdigest()[:16]

    def __len__(self) -> int:
        return len(self.samples)


def read_labels(path: str | Path) -> list[dict]:
    p = Path(path)
    if not p.exists():
        raise UserError(f"probe labels {p} do not exist")
    out = []
    for lineno, rec in jsonl_records(p):
        missing = [k for k in ("id", "split", *CATEGORIES) if k not in rec]
        if missing:
            raise UserError(f"{p}:{lineno}: label record lacks {', '.join(missing)}")
        out.append(rec)
    return out


def load_probe_set(split: str, *, corpus: str | Path | None = None, labels: str | Path | None = None,
                   per_category: int = 12, seed: int = 0, name: str | None = None) -> ProbeSet:
    """A balanced, seeded probe set from one split of a labelled corpus (default: embedded)."""
    corpus = Path(corpus) if corpus else EMBEDDED_DIR / "corpus.jsonl"
    labels_path = Path(labels) if labels else corpus.with_name("labels.jsonl")
    recs = sorted((r for r in read_labels(labels_path) if r["split"] == split), key=lambda r: r["id"])
    if not recs:
        raise UserError(f"no labelled records of split '{split}' in {labels_path}")
    rng = random.Random(f"{seed}:{split}")
    chosen: dict[str, dict] = {}
    for cat in CATEGORIES:
        pool = [r for r in recs if r[cat] and r["id"] not in chosen]
        for r in rng.sample(pool, min(per_category, len(pool))):
            chosen[r["id"]] = r
    by_kind: dict[str, list[dict]] = defaultdict(list)
    for r in recs:
        if not any(r[c] for c in CATEGORIES):
            by_kind[r.get("kind", "clean")].append(r)
    for pool in by_kind.values():
        rng.shuffle(pool)
    n_clean, kinds = len(chosen), sorted(by_kind)
    clean: list[dict] = []
    while len(clean) < n_clean and any(by_kind.values()):
        for k in kinds:
            if by_kind[k] and len(clean) < n_clean:
                clean.append(by_kind[k].pop())
    chosen.update({r["id"]: r for r in clean})
    texts = {doc_id: (text, extras) for doc_id, text, extras in iter_documents(corpus) if doc_id in chosen}
    missing = sorted(set(chosen) - set(texts))
    if missing:
        raise UserError(f"{len(missing)} labelled records are not in {corpus} (e.g. {missing[0]})")
    ids = sorted(chosen)
    samples = [make_sample(i, texts[i][0], **texts[i][1]) for i in ids]
    y = np.array([[int(chosen[i][c]) for c in CATEGORIES] for i in ids], dtype=bool)
    return ProbeSet(name=name or split, samples=samples, labels=y)


def default_probe_sets(*, corpus: str | Path | None = None, labels: str | Path | None = None,
                       per_category: int = 12, seed: int = 0) -> tuple[ProbeSet, ProbeSet]:
    """(selection probe from ``dev``, generalisation probe from ``test``)."""
    return (load_probe_set("dev", corpus=corpus, labels=labels, per_category=per_category, seed=seed),
            load_probe_set("test", corpus=corpus, labels=labels, per_category=per_category, seed=seed))


def default_probe_ids(seed: int = 0) -> list[str]:
    """The ids of both default probe sets (what evolution's probe evaluator scores at that seed)."""
    dev, test = default_probe_sets(seed=seed)
    return sorted(set(dev.ids) | set(test.ids))
