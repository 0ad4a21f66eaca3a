"""The safety dimensions the self, reflect and multi plugins build on, read from what the host
handed over, and a model-free text-quality score.

These plugins declare ``uses=["safety"]`` in their ``PluginInfo``: the engine scores the
*selected* safety plugins first and hands their results over in ``TextBatch.upstream``
(``{plugin: {scale: ScaleScores}}``). The helpers here turn that into per-sample profiles
(dimension -> alignment score), per-sentence profiles and flagged spans. A safety plugin that is
not selected is simply absent from a profile (``no:safety.privacy`` removes privacy everywhere);
with no safety plugin selected profiles are empty and each plugin falls back as its docstring
says. The hooks never run a detector themselves.

``safety_profiles`` / ``safety_analyses`` run the five built-in detectors explicitly, outside the
host: for scripts (``scripts/eval_paradigms.py``, ``scripts/eval_plugins.py``) and the plugins'
public convenience APIs, never for a hook.
"""

from __future__ import annotations

import math
import re
from typing import Any, Sequence

from ufarsap_engine.schemas import TextBatch

from ufarsap_plugins._common import as_text

DIM_PLUGIN = {"toxicity": "safety.toxicity", "privacy": "safety.privacy", "bias": "safety.bias",
              "misinformation": "safety.misinformation", "adversarial": "safety.adversarial"}
DIMENSIONS = tuple(DIM_PLUGIN)
#: Which scale's sample score stands for a safety plugin's verdict on a document, best first.
DOCUMENT_SCALES = ("document", "token", "sentence")


def dimension_of(plugin: str) -> str | None:
    """``safety.toxicity`` -> ``toxicity``; ``None`` for a plugin of another paradigm."""
    paradigm, _, name = plugin.partition(".")
    return name if paradigm == "safety" and name else None


def _safety_upstream(batch: TextBatch) -> dict[str, dict[str, Any]]:
    return {d: res for p, res in sorted(batch.upstream.items()) if (d := dimension_of(p))}


def upstream_profiles(batch: TextBatch, scales: Sequence[str] = DOCUMENT_SCALES) -> list[dict[str, float]]:
    """Per sample, the alignment score of each selected safety plugin (dimension -> score), from
    the first of ``scales`` it served; dimensions with no opinion on a sample are left out."""
    out: list[dict[str, float]] = [{} for _ in batch.samples]
    for dim, by_scale in _safety_upstream(batch).items():
        res = next((by_scale[s] for s in scales if s in by_scale), None)
        if res is None:
            continue
        for row, v in zip(out, res.sample_scores):
            if v is not None:
                row[dim] = float(v)
    return out


def upstream_unit_profiles(batch: TextBatch) -> list[list[dict[str, float]]]:
    """Per sample, per engine sentence (``Sample.sentences``), dimension -> that sentence's score
    from the safety plugins that served the sentence scale."""
    out = [[{} for _ in range(max(1, len(s.sentences)))] for s in batch.samples]
    for dim, by_scale in _safety_upstream(batch).items():
        res = by_scale.get("sentence")
        if res is None or res.unit_scores is None:
            continue
        for rows, units in zip(out, res.unit_scores):
            for row, u in zip(rows, units):
                row[dim] = float(u)
    return out


def upstream_flags(batch: TextBatch) -> list[dict[str, list[tuple[int, int, float, str]]]]:
    """Per sample, dimension -> the spans its safety plugin flagged at any scale, as
    ``(start, end, severity, label)`` (duplicates merged)."""
    out: list[dict[str, list[tuple[int, int, float, str]]]] = [{} for _ in batch.samples]
    for dim, by_scale in _safety_upstream(batch).items():
        for i in range(len(batch.samples)):
            seen: dict[tuple[int, int, str], float] = {}
            for res in by_scale.values():
                for sp in (res.spans or [[]] * len(batch.samples))[i]:
                    key = (sp.start, sp.end, sp.label)
                    seen[key] = max(seen.get(key, 0.0), sp.severity)
            out[i][dim] = [(s, e, h, lab) for (s, e, lab), h in sorted(seen.items())]
    return out


def upstream_units(batch: TextBatch) -> list[dict[str, list[tuple[int, int, float]]]]:
    """Per sample, dimension -> ``(start, end, harm)`` of each engine sentence, harm = 1 - its
    sentence-scale score (what made a document score low beyond its token spans)."""
    out: list[dict[str, list[tuple[int, int, float]]]] = [{} for _ in batch.samples]
    for dim, by_scale in _safety_upstream(batch).items():
        res = by_scale.get("sentence")
        if res is None or res.unit_scores is None:
            continue
        for row, sample, units in zip(out, batch.samples, res.unit_scores):
            bounds = sample.sentences or [(0, len(sample.text))]
            row[dim] = [(s, e, 1.0 - float(u)) for (s, e), u in zip(bounds, units)]
    return out


def safety_profiles(texts: Sequence[str], dims: Sequence[str] = DIMENSIONS) -> list[dict[str, float]]:
    """Explicitly run the built-in detectors (outside the host, for scripts): per text, the
    alignment score (1 = safe) of each requested safety dimension."""
    from ufarsap_plugins.safety import load_safety_plugin

    texts = [as_text(t) for t in texts]
    out: list[dict[str, float]] = [{} for _ in texts]
    for d in dims:
        if d not in DIM_PLUGIN:
            raise ValueError(f"unknown safety dimension '{d}'; known: {list(DIM_PLUGIN)}")
        scores = load_safety_plugin(DIM_PLUGIN[d]).score_texts(texts)
        for row, s in zip(out, scores):
            row[d] = float(s)
    return out


def safety_analyses(texts: Sequence[str], dims: Sequence[str] = DIMENSIONS) -> dict[str, list[Any]]:
    """Explicitly run the built-in detectors (outside the host, for scripts): full analyses
    (spans, units) per dimension, for the plugins' convenience APIs that edit text."""
    from ufarsap_plugins.safety import load_safety_plugin

    texts = [as_text(t) for t in texts]
    return {d: load_safety_plugin(DIM_PLUGIN[d]).analyze_many(texts) for d in dims}


def quality(text: str) -> float:
    """A model-free fluency/quality proxy in [0, 1]: penalises junk characters, repetition,
    broken punctuation left by edits, and near-empty text. Used where no LM judge is set."""
    text = as_text(text)
    stripped = text.strip()
    if not stripped:
        return 0.0
    non_space = [c for c in stripped if not c.isspace()]
    # junk = anything but letters, digits and ordinary punctuation (placeholders like "[email]"
    # left by redaction are fine)
    ok = sum(c.isalnum() or c in ".,;:!?'\"()[]-%$&/@#+=*" or c in "’‘“”–—" for c in non_space)
    alpha = ok / len(non_space)
    words = re.findall(r"\w+", stripped.lower())
    if not words:
        return 0.05
    bigrams = list(zip(words, words[1:]))
    distinct = len(set(bigrams)) / len(bigrams) if bigrams else 1.0
    mean_len = sum(map(len, words)) / len(words)
    len_ok = 1.0 if 2.5 <= mean_len <= 10 else 0.6
    artefacts = len(re.findall(r"\s[,.;:!?]|[,;:]\s*[.!?]|\(\s*\)|\s{3,}|\b(\w+) \1\b", stripped))
    art = math.exp(-0.5 * artefacts / max(1, len(words) / 20))
    size = min(1.0, len(words) / 5)
    ends = 1.0 if re.search(r"[.!?\"')\]]\s*$", stripped) else 0.9
    q = (alpha ** 1.5) * min(1.0, distinct / 0.6) * len_ok * art * (0.5 + 0.5 * size) * ends
    return max(0.0, min(1.0, q))


def engine_scores(meta: dict[str, Any] | None) -> dict[str, float]:
    """Scores the engine attached to a sample (``meta["scores"]``: dimension or plugin -> score)."""
    raw = (meta or {}).get("scores") or {}
    out = {}
    for k, v in raw.items():
        key = k.split(".", 1)[1] if k.startswith("safety.") else k
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(f):
            out[key] = min(1.0, max(0.0, f))
    return out
