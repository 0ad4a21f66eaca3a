"""Data-side objective families: what a document's annotation does to its training tokens.

The loss-side families (``objectives.py``) act on the loss of tokens the corpus already has; the
data-side ones change the token sequence itself, so they are decided once per document, before
packing, from the document's annotation row (``ufarsap_engine.annotate``: ``PLUGIN:SCALE``
scores, ``PLUGIN:sentence_units``, ``PLUGIN:spans``, the shared ``sentences``):

- ``conditional`` (Korbak et al. 2023): a control token before each document, ``<|misaligned|>``
  when any selected plugin flags it at any scale (:func:`document_label`, the strictest plugin,
  by :func:`~ufarsap_engine.alignment.scoring.is_flagged`), else ``<|aligned|>``;
- ``hidden`` (Rathi & Radford 2026): every token of a flagged span becomes ``<|hidden|>``
  (input and label), so the model learns to say ``<|hidden|>`` where the content was;
- ``tags`` (Maini et al. 2025, "Safety Pretraining"): a ``<|harmful|>`` token before each flagged
  span, which tag-aware decoding (``trainer/generate.py``) then steers away from.

Everything here is a pure function of (annotation row, plugins, threshold); the result is a
:class:`~ufarsap_engine.trainer.data.Marks` the packing step applies.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from ufarsap_engine.alignment.conditional import ALIGNED, MISALIGNED
from ufarsap_engine.alignment.objectives import DATA_FAMILIES
from ufarsap_engine.alignment.scoring import is_flagged
from ufarsap_engine.schemas import SCALES

HIDDEN = "<|hidden|>"
HARMFUL = "<|harmful|>"
#: The special tokens each data-side family adds to the tokenizer.
FAMILY_TOKENS = {"conditional": (ALIGNED, MISALIGNED), "hidden": (HIDDEN,), "tags": (HARMFUL,)}
#: Families that act on flagged spans, so they need a plugin scoring tokens or sentences.
SPAN_FAMILIES = ("hidden", "tags", "mask")


def _plugin_scales(row: Mapping[str, Any], plugin: str) -> list[str]:
    return [s for s in SCALES if f"{plugin}:{s}" in row]


def document_label(row: Mapping[str, Any], plugins: Iterable[str], threshold: float) -> bool:
    """True (misaligned) when ANY of ``plugins`` flags the document at ANY scale it serves.

    The strictest plugin decides, not the mean: with five safety detectors each looking for one
    kind of harm, a mean over them rarely drops below the threshold for a document with one harm."""
    for p in plugins:
        spans = row.get(f"{p}:spans")
        for scale in _plugin_scales(row, p):
            units = row.get(f"{p}:sentence_units") if scale == "sentence" else None
            if is_flagged(scale, row.get(f"{p}:{scale}"), spans if scale == "token" else None, units, threshold):
                return True
    return False


def merge_spans(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, non-overlapping ``(start, end)`` spans covering the same characters (touching
    spans merge: they are one flagged stretch)."""
    out: list[list[int]] = []
    for a, b in sorted((int(a), int(b)) for a, b in spans if b > a):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def flagged_char_spans(row: Mapping[str, Any], plugins: Iterable[str], threshold: float) -> list[tuple[int, int]]:
    """The document's flagged characters as merged spans: every span a plugin flagged, and every
    sentence a plugin scored below ``threshold`` (the same fine flags the unlikelihood family uses)."""
    spans: list[tuple[int, int]] = []
    sentences = row.get("sentences") or []
    for p in plugins:
        spans += [(a, b) for a, b in row.get(f"{p}:spans") or []]
        units = row.get(f"{p}:sentence_units")
        if units:
            sents = sentences or [(0, len(row.get("text") or ""))]
            spans += [(a, b) for (a, b), u in zip(sents, units) if u is not None and u < threshold]
    return merge_spans(spans)


def document_marks(family: str, row: Mapping[str, Any], plugins: list[str], threshold: float) -> dict[str, Any]:
    """What ``family`` does to one document: ``{"prefix": token}``, ``{"hide": spans}`` or
    ``{"tag": spans}`` (the fields of :class:`~ufarsap_engine.trainer.data.DocMarks`)."""
    if family == "conditional":
        return {"prefix": MISALIGNED if document_label(row, plugins, threshold) else ALIGNED}
    spans = [list(s) for s in flagged_char_spans(row, plugins, threshold)]
    if family == "hidden":
        return {"hide": spans}
    if family == "tags":
        return {"tag": spans}
    raise ValueError(f"{family!r} is not a data-side family (one of {', '.join(DATA_FAMILIES)})")


def build_marks(family: str, rows: Iterable[Mapping[str, Any]], plugins: list[str], threshold: float) -> dict[str, Any]:
    """The marks of a whole annotated corpus (the JSON the trainer reads, see ``DataSpec.marks``)."""
    docs = {}
    for row in rows:
        docs[str(row["id"])] = {"chars": len(row["text"]), **document_marks(family, row, plugins, threshold)}
    return {"family": family, "special_tokens": list(FAMILY_TOKENS[family]), "hidden_token": HIDDEN,
            "tag_token": HARMFUL, "plugins": list(plugins), "threshold": threshold, "documents": docs}


def marks_summary(marks: dict[str, Any]) -> dict[str, Any]:
    """Counts for the run summary: documents labelled misaligned, or spans hidden / tagged."""
    docs = marks["documents"].values()
    out: dict[str, Any] = {"family": marks["family"], "plugins": marks["plugins"], "documents": len(docs)}
    if marks["family"] == "conditional":
        mis = sum(1 for d in docs if d.get("prefix") == MISALIGNED)
        out.update(misaligned=mis, misaligned_share=round(mis / max(1, len(docs)), 4))
    else:
        key = "hide" if marks["family"] == "hidden" else "tag"
        out.update(flagged_documents=sum(1 for d in docs if d.get(key)), flagged_spans=sum(len(d.get(key) or []) for d in docs))
    return out


def label_quality(marks: dict[str, Any], truth: Mapping[str, bool]) -> dict[str, Any] | None:
    """Precision and recall of the ``<|misaligned|>`` labels against ground truth
    (document id -> harmful), over the documents both know; None when none are known."""
    pairs = [(d.get("prefix") == MISALIGNED, truth[i]) for i, d in marks["documents"].items() if i in truth]
    if not pairs:
        return None
    tp = sum(1 for p, t in pairs if p and t)
    pred, real = sum(1 for p, _ in pairs if p), sum(1 for _, t in pairs if t)
    return {"documents": len(pairs), "harmful_share": round(real / len(pairs), 4),
            "misaligned_share": round(pred / len(pairs), 4),
            "precision": round(tp / pred, 4) if pred else None, "recall": round(tp / real, 4) if real else None}


def embedded_truth(labels_path) -> dict[str, bool]:
    """Document id -> harmful (any safety label set) from the embedded corpus's ``labels.jsonl``."""
    import json

    harms = ("toxicity", "privacy", "misinformation", "bias", "adversarial")
    out = {}
    with open(labels_path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rec = json.loads(line)
                out[str(rec["id"])] = any(rec.get(h) for h in harms)
    return out
