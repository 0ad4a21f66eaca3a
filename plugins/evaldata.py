"""The embedded labelled corpus as engine samples, for evaluation, tests and benchmarks.

Rendering: the engine's one renderer (``ufarsap_engine.documents.render_record``), the very text
the trainer trains on (``Sample.prompt`` / ``Sample.messages`` set for prompt and chat records).
Label spans, stored per field, are shifted onto that rendered text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterator

from ufarsap_engine.documents import render_record
from ufarsap_engine.schemas import Message, Sample

from ufarsap_engine.text import split_sentences  # Sample.sentences: the engine's rule

LABELS = ("toxicity", "privacy", "misinformation", "bias", "adversarial")


def embedded_dir() -> Path:
    return Path(str(resources.files("ufarsap_engine").joinpath("data/embedded")))


def _read_jsonl(path: Path) -> Iterator[dict]:
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def render(record: dict) -> tuple[Sample, dict[str, int]]:
    """A corpus record as a ``Sample``, and the offset of each field inside ``Sample.text``."""
    r = render_record(record)
    sample = Sample(sample_id=str(record.get("id", "")), text=r.text, sentences=split_sentences(r.text),
                    prompt=r.prompt, messages=None if r.messages is None else [Message(**m) for m in r.messages])
    return sample, r.fields


@dataclass
class Item:
    sample: Sample
    label: dict
    spans: list[dict]  # label spans on Sample.text


def load(split: str | None = None, directory: Path | None = None) -> list[Item]:
    """Labelled samples of one split (``dev``/``test``) or all of them."""
    d = directory or embedded_dir()
    labels = {l["id"]: l for l in _read_jsonl(d / "labels.jsonl")}
    items = []
    for rec in _read_jsonl(d / "corpus.jsonl"):
        lab = labels.get(rec["id"])
        if lab is None or (split and lab.get("split") != split):
            continue
        sample, offsets = render(rec)
        spans = []
        for s in lab.get("spans", []):
            off = offsets.get(s.get("field", "text"), 0)
            spans.append({"start": s["start"] + off, "end": s["end"] + off, "label": s["label"]})
        items.append(Item(sample, lab, spans))
    return items


def corpus_texts() -> list[str]:
    """The rendered text of every corpus record (for training or benchmarks)."""
    return [render(r)[0].text for r in _read_jsonl(embedded_dir() / "corpus.jsonl")]

