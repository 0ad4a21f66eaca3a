"""The five safety detectors as one evaluator suite, and a model-free text-quality score.

The self-alignment, reflection and multi-agent plugins judge text with "the active evaluators".
Rather than depend on the engine having scored a sample already (hooks are independent), they
run the built-in safety detectors here, once per text; the engine's own paradigm scores, when it
passes them (``Feedback.paradigm_scores``, ``Sample.meta["scores"]``), are merged on top.
"""

from __future__ import annotations

import math
import re
from typing import Any, Sequence

from ufarsap_plugins._common import as_text

DIM_PLUGIN = {"toxicity": "safety.toxicity", "privacy": "safety.privacy", "bias": "safety.bias",
              "misinformation": "safety.misinformation", "adversarial": "safety.adversarial"}
DIMENSIONS = tuple(DIM_PLUGIN)


def safety_profiles(texts: Sequence[str], dims: Sequence[str] = DIMENSIONS) -> list[dict[str, float]]:
    """Per text, the alignment score (1 = safe) of each requested safety dimension."""
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
    """Full analyses (spans, units) per dimension, for plugins that edit text."""
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
