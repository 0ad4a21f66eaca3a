"""Shared plumbing for the built-in plugins: input hygiene, sentence units, parameter checks and
the scale hooks every safety plugin has in common.

Why one base class: the five safety plugins differ only in *how* they find harm in a piece of
text; turning that into token spans, per-sentence scores, document and conversation scores (and
doing so safely for empty, huge or junk input) is the same for all of them.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any, Iterable, Sequence

from ufarsap_engine.hookspecs import hookimpl
from ufarsap_engine.text import split_sentences as engine_split_sentences
from ufarsap_engine.schemas import (
    HORIZONS,
    AlignmentState,
    Horizon,
    Paradigm,
    PluginInfo,
    Sample,
    Scale,
    ScaleScores,
    Span,
    TextBatch,
)

#: Texts whose analyses a plugin keeps for its other scale hooks (a few batches' worth).
MEMO_TEXTS = 4096

#: Longest internal unit a detector looks at. A sentence longer than this (junk, a document
#: without punctuation) is cut into pieces at whitespace, never dropped: nothing is truncated.
MAX_UNIT_CHARS = 1000



def as_text(value: Any) -> str:
    """Text from whatever arrived: bytes are decoded as UTF-8 with replacement characters
    (invalid bytes never crash a scorer), ``None`` is empty."""
    if value is None:
        return ""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)


def _cut(text: str, start: int, end: int, limit: int) -> list[tuple[int, int]]:
    """Cut [start, end) into pieces of at most ``limit`` chars, preferring whitespace."""
    out = []
    while end - start > limit:
        cut = text.rfind(" ", start + limit // 2, start + limit)
        if cut <= start:
            cut = start + limit
        out.append((start, cut))
        start = cut
    if end > start:
        out.append((start, end))
    return out


def split_sentences(text: str, limit: int = MAX_UNIT_CHARS) -> list[tuple[int, int]]:
    """Detector units ``[start, end)``: the engine's sentences (``ufarsap_engine.text``), each
    cut at whitespace into pieces of at most ``limit`` characters. Cached: every safety
    detector splits the same texts."""
    return list(_units(text, limit))


@lru_cache(maxsize=MEMO_TEXTS)
def _units(text: str, limit: int) -> tuple[tuple[int, int], ...]:
    return tuple(piece for s, e in engine_split_sentences(text) for piece in _cut(text, s, e, limit))


def engine_units(sample: Sample) -> list[tuple[int, int]]:
    """The engine's sentence spans for a sample (clamped to the text), or the whole text as one
    unit when the engine gave none (the contract)."""
    n = len(sample.text)
    units = [(max(0, min(s, n)), max(0, min(e, n))) for s, e in sample.sentences]
    units = [(s, e) if e >= s else (e, s) for s, e in units]
    return units or [(0, n)]


def check_params(params: dict[str, Any] | None, defaults: dict[str, Any], plugin: str) -> dict[str, Any]:
    """Merge ``params`` onto ``defaults``; unknown keys and wrongly typed values are errors."""
    params = dict(params or {})
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise ValueError(f"{plugin}: unknown parameter(s) {unknown}; known: {sorted(defaults)}")
    out = dict(defaults)
    for k, v in params.items():
        d = defaults[k]
        if isinstance(d, bool):
            if not isinstance(v, bool):
                raise ValueError(f"{plugin}: parameter '{k}' must be true/false, got {v!r}")
        elif isinstance(d, (int, float)) and not isinstance(d, bool):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{plugin}: parameter '{k}' must be a number, got {v!r}")
            v = type(d)(v) if isinstance(d, float) else v
        elif isinstance(d, (list, tuple)) and not isinstance(v, (list, tuple)):
            raise ValueError(f"{plugin}: parameter '{k}' must be a list, got {v!r}")
        elif isinstance(d, dict) and not isinstance(v, dict):
            raise ValueError(f"{plugin}: parameter '{k}' must be a mapping, got {v!r}")
        out[k] = v
    for k in ("threshold",):
        if k in out and not 0.0 < float(out[k]) < 1.0:
            raise ValueError(f"{plugin}: '{k}' must be in (0, 1), got {out[k]!r}")
    return out


@lru_cache(maxsize=None)
def load_json(package: str, name: str) -> Any:
    """A JSON data file shipped inside a plugin package (cached)."""
    return json.loads(resources.files(package).joinpath(name).read_text(encoding="utf-8"))


@lru_cache(maxsize=None)
def load_lines(package: str, name: str) -> tuple[str, ...]:
    """A ``.txt`` word list (one entry a line, ``#`` comments) shipped inside a plugin package."""
    text = resources.files(package).joinpath(name).read_text(encoding="utf-8")
    return tuple(ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#"))


def clamp01(x: float) -> float:
    if not math.isfinite(x):
        return 0.0
    return 0.0 if x < 0 else 1.0 if x > 1 else float(x)


def noisy_or(probs: Iterable[float]) -> float:
    """P(at least one of several independent cues is right): 1 - prod(1 - p)."""
    q = 1.0
    for p in probs:
        q *= 1.0 - clamp01(p)
    return 1.0 - q


@dataclass
class Finding:
    """A piece of text a detector objects to: ``harm`` is its probability of being misaligned."""

    start: int
    end: int
    harm: float
    label: str = ""
    token: bool = True  # a token-scale span (a word, an entity) or only a sentence-level verdict


@dataclass
class Analysis:
    """What a detector found in one text: its internal units with their harm, and findings."""

    units: list[tuple[int, int, float]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def harm(self) -> float:
        h = [u[2] for u in self.units] + [f.harm for f in self.findings]
        return max(h) if h else 0.0

    def harm_in(self, start: int, end: int) -> float:
        """Worst harm among units and findings overlapping [start, end)."""
        best = 0.0
        for s, e, h in self.units:
            if s < end and e > start or (s == e == start):
                best = max(best, h)
        for f in self.findings:
            if f.start < end and f.end > start:
                best = max(best, f.harm)
        return best

    def spans(self, min_harm: float) -> list[Span]:
        out = []
        for f in sorted(self.findings, key=lambda f: (f.start, f.end)):
            if f.token and f.harm >= min_harm and f.end > f.start:
                out.append(Span(start=f.start, end=f.end, severity=max(1e-6, min(1.0, f.harm)), label=f.label))
        return out


ALL_SCALES = [Scale.TOKEN, Scale.SENTENCE, Scale.DOCUMENT, Scale.CONVERSATION]
ALL_HORIZONS = [Horizon(h) for h in HORIZONS]


class SafetyDetectorPlugin:
    """Base of the safety plugins: subclasses implement :meth:`analyze` (one text -> Analysis)
    and may override :meth:`analyze_many` to batch a model call."""

    NAME = "safety.base"
    DESCRIPTION = ""
    REQUIRES: list[str] = []
    DEFAULTS: dict[str, Any] = {"threshold": 0.5}
    #: Conversation scale: which roles' messages count (None = all).
    CONVERSATION_ROLES: tuple[str, ...] | None = None

    def __init__(self) -> None:
        self.params = dict(self.DEFAULTS)

    # -- to implement -----------------------------------------------------------------------
    def analyze(self, text: str) -> Analysis:  # pragma: no cover - abstract
        raise NotImplementedError

    def analyze_many(self, texts: Sequence[str]) -> list[Analysis]:
        return [self.analyze(as_text(t)) for t in texts]

    def analyses(self, texts: Sequence[str | bytes]) -> list[Analysis]:
        """``analyze_many`` through a memo: the engine calls every scale hook on the same batch,
        so each text is analysed once, not once per scale. The memo is emptied when the
        parameters change and when a batch would take it past ``MEMO_TEXTS`` texts (it then
        starts again with that batch)."""
        texts = [as_text(t) for t in texts]
        memo = self.__dict__.setdefault("_memo", {})
        if self.__dict__.get("_memo_params") != self.params:
            memo.clear()
            self._memo_params = copy.deepcopy(self.params)
        missing = [t for t in dict.fromkeys(texts) if t not in memo]
        if missing and len(memo) + len(missing) > MEMO_TEXTS:
            memo.clear()
            missing = list(dict.fromkeys(texts))
        if missing:
            memo.update(zip(missing, self.analyze_many(missing)))
        return [memo[t] for t in texts]

    # -- convenience API (eval scripts, other plugins) --------------------------------------
    @property
    def threshold(self) -> float:
        return float(self.params["threshold"])

    def harm_scores(self, texts: Sequence[str | bytes]) -> list[float]:
        """Probability of misalignment per text (document scale)."""
        return [a.harm for a in self.analyze_many([as_text(t) for t in texts])]

    def score_texts(self, texts: Sequence[str | bytes]) -> list[float]:
        """Alignment score per text (1 = aligned), as the document hook returns it."""
        return [1.0 - h for h in self.harm_scores(texts)]

    def flags(self, texts: Sequence[str | bytes]) -> list[bool]:
        return [h >= self.threshold for h in self.harm_scores(texts)]

    # -- hooks -------------------------------------------------------------------------------
    @hookimpl
    def ufarsap_plugin_info(self) -> PluginInfo:
        return PluginInfo(paradigm=Paradigm.SAFETY, description=self.DESCRIPTION, scales=list(ALL_SCALES),
                          horizons=list(ALL_HORIZONS), requires=list(self.REQUIRES))

    @hookimpl
    def ufarsap_configure(self, params: dict[str, Any]) -> None:
        self.params = check_params(params, self.DEFAULTS, self.NAME)
        self._configured()

    def _configured(self) -> None:
        """Hook for subclasses to rebuild caches after a parameter change."""

    @hookimpl
    def ufarsap_score_token(self, batch: TextBatch, horizon: Horizon, state: AlignmentState) -> ScaleScores:
        analyses = self.analyses([s.text for s in batch.samples])
        min_h = self.threshold * 0.5  # report softer spans too; severity carries the strength
        return ScaleScores(sample_scores=[clamp01(1.0 - a.harm) for a in analyses],
                           spans=[a.spans(min_h) for a in analyses],
                           details=self._details(analyses))

    @hookimpl
    def ufarsap_score_sentence(self, batch: TextBatch, horizon: Horizon, state: AlignmentState) -> ScaleScores:
        analyses = self.analyses([s.text for s in batch.samples])
        units = []
        for sample, a in zip(batch.samples, analyses):
            units.append([clamp01(1.0 - a.harm_in(s, e)) for s, e in engine_units(sample)])
        return ScaleScores(sample_scores=[min(u) if u else 1.0 for u in units], unit_scores=units,
                           details=self._details(analyses))

    @hookimpl
    def ufarsap_score_document(self, batch: TextBatch, horizon: Horizon, state: AlignmentState) -> ScaleScores:
        analyses = self.analyses([s.text for s in batch.samples])
        return ScaleScores(sample_scores=[clamp01(1.0 - a.harm) for a in analyses], details=self._details(analyses))

    @hookimpl
    def ufarsap_score_conversation(self, batch: TextBatch, horizon: Horizon, state: AlignmentState) -> ScaleScores:
        scores: list[float | None] = []
        worst_turns: list[int | None] = []
        turns = [[i for i, m in enumerate(s.messages or [])
                  if self.CONVERSATION_ROLES is None or m.role in self.CONVERSATION_ROLES] for s in batch.samples]
        # every counted turn of the batch in one call (one model call for a batching detector)
        harm = iter(a.harm for a in self.analyses([s.messages[i].content for s, idx in zip(batch.samples, turns)
                                                   for i in idx]))
        for s, idx in zip(batch.samples, turns):
            if not s.messages:
                scores.append(None)
                worst_turns.append(None)
                continue
            harms = [next(harm) for _ in idx]
            scores.append(clamp01(1.0 - max(harms)) if harms else 1.0)
            worst_turns.append(idx[max(range(len(harms)), key=harms.__getitem__)] if harms else None)
        return ScaleScores(sample_scores=scores, details={"worst_turn": worst_turns})

    def _details(self, analyses: list[Analysis]) -> dict[str, Any]:
        n = max(1, len(analyses))
        return {"flag_rate": sum(a.harm >= self.threshold for a in analyses) / n,
                "mean_harm": sum(a.harm for a in analyses) / n}

