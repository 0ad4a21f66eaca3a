"""The typed values that cross the hook boundary (hook contract, see ``HOOK_CONTRACT_VERSION``).

Every hook argument and return value is one of these pydantic models. Conventions:
- An *alignment score* is a float in [0, 1]; 1 means fully aligned (nothing to object to).
- Spans are character offsets ``[start, end)`` into ``Sample.text``.
- Lists that describe a batch have exactly one entry per sample, in batch order.
"""

from __future__ import annotations

import math
import re
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Paradigm(str, Enum):
    """The four alignment paradigms of the paper."""

    SELF = "self"
    REFLECT = "reflect"
    MULTI = "multi"
    SAFETY = "safety"


class Scale(str, Enum):
    """Granularity at which a sample is scored."""

    TOKEN = "token"
    SENTENCE = "sentence"
    DOCUMENT = "document"
    CONVERSATION = "conversation"


class Horizon(str, Enum):
    """When a score is taken: during decoding, each step, over a window of steps, each round."""

    IMMEDIATE = "immediate"
    SHORT = "short"
    MEDIUM = "medium"
    LONG = "long"


PARADIGMS = [p.value for p in Paradigm]
SCALES = [s.value for s in Scale]
HORIZONS = [h.value for h in Horizon]

#: Plugin names are ``paradigm.name``; the name part allows letters, digits, ``_`` and ``-``.
PLUGIN_NAME_RE = re.compile(r"^(self|reflect|multi|safety)\.[a-z0-9][a-z0-9_-]*$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class Span(_Model):
    """A flagged character span with a severity in (0, 1] (1 = certainly misaligned)."""

    start: int = Field(ge=0)
    end: int = Field(ge=0)
    severity: float = Field(gt=0.0, le=1.0)
    label: str = ""

    @model_validator(mode="after")
    def _ordered(self) -> "Span":
        if self.end < self.start:
            raise ValueError(f"span end {self.end} is before start {self.start}")
        return self


class Message(_Model):
    role: str
    content: str


class Sample(_Model):
    """One text to score. ``messages`` is set for multi-turn conversations (``text`` is then
    the rendered conversation); ``sentences`` are the engine's sentence boundaries in ``text``."""

    sample_id: str
    text: str
    prompt: str | None = None
    messages: list[Message] | None = None
    sentences: list[tuple[int, int]] = Field(default_factory=list)
    meta: dict[str, Any] = Field(default_factory=dict)


class TextBatch(_Model):
    """The samples a scoring hook sees, with the step and horizon they belong to.

    ``upstream`` holds, for a plugin that declares ``PluginInfo.uses``, the results of the
    *selected* plugins it uses on this same batch at the same horizon:
    ``{plugin: {scale: ScaleScores}}`` (lists in batch order, as those plugins returned them).
    The engine scores the used plugins first; a plugin that is not selected is absent, so
    ``no:X`` removes X's signal from every plugin built on it. Empty for everyone else."""

    samples: list[Sample]
    step: int = 0
    upstream: dict[str, dict[str, "ScaleScores"]] = Field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.samples)


class ScaleScores(_Model):
    """What a scoring hook returns for one batch.

    ``sample_scores``: one alignment score per sample (``None`` where the plugin has no opinion,
    e.g. a conversation scorer on a non-conversation sample).
    ``spans`` (token scale): flagged spans per sample.
    ``unit_scores`` (sentence scale): one score per engine sentence, per sample.
    ``details``: free-form, JSON-serialisable extras for logs (e.g. per-label rates).
    """

    sample_scores: list[float | None]
    spans: list[list[Span]] | None = None
    unit_scores: list[list[float]] | None = None
    details: dict[str, Any] = Field(default_factory=dict)

    @field_validator("sample_scores")
    @classmethod
    def _in_range(cls, values: list[float | None]) -> list[float | None]:
        for i, v in enumerate(values):
            if v is None:
                continue
            if not math.isfinite(v):
                raise ValueError(f"sample_scores[{i}] is {v}, not a finite number")
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"sample_scores[{i}] = {v} is outside [0, 1]")
        return values


TextBatch.model_rebuild()


class AlignmentState(_Model):
    """a(t) of the paper (Eq. 1): per paradigm, the current alignment score at three horizons.

    ``short`` is the latest step's mean, ``medium`` the mean per-sample score of the last window's
    re-scored documents (medium-horizon hooks at the window's end), ``long`` the held-out probe
    set's at the last round. Paradigms with no active plugin are absent (not faked)."""

    step: int = 0
    round: int = 0
    short: dict[str, float] = Field(default_factory=dict)
    medium: dict[str, float] = Field(default_factory=dict)
    long: dict[str, float] = Field(default_factory=dict)


class PluginInfo(_Model):
    """What a plugin says about itself (``ufarsap_plugin_info``)."""

    paradigm: Paradigm
    description: str
    scales: list[Scale] = Field(default_factory=list)
    horizons: list[Horizon] = Field(default_factory=list)
    contract: str = "1.0"
    stateless: bool = Field(True, description="scores depend only on the text, so the engine may cache them")
    requires: list[str] = Field(default_factory=list, description="pip requirements it needs")
    uses: list[str] = Field(default_factory=list,
                            description="paradigms (safety) or plugin names (safety.privacy) whose results on the "
                                        "same batch it reads from TextBatch.upstream; scored first by the engine")

    @field_validator("uses")
    @classmethod
    def _uses(cls, names: list[str]) -> list[str]:
        for n in names:
            if n not in PARADIGMS and not PLUGIN_NAME_RE.match(n):
                raise ValueError(f"uses entry '{n}' is neither a paradigm ({', '.join(PARADIGMS)}) nor a plugin name")
        return list(dict.fromkeys(names))

    def uses_plugin(self, name: str) -> bool:
        """Whether this plugin reads ``name``'s results (named, or through its paradigm)."""
        return name in self.uses or name.split(".", 1)[0] in self.uses

    def serves(self, scale: Scale | str, horizon: Horizon | str) -> bool:
        return Scale(scale) in self.scales and Horizon(horizon) in self.horizons


class RunContext(_Model):
    """Handed to lifecycle hooks at run start and end."""

    run_id: str
    out_dir: str
    plugins: list[str]
    strategy_id: int | None = None
    config: dict[str, Any] = Field(default_factory=dict)


class StepReport(_Model):
    """The outcome of one training step, handed to ``ufarsap_step_end``."""

    step: int
    loss: float | None = None
    metrics: dict[str, float] = Field(default_factory=dict)


class WindowReport(_Model):
    """A window of recent steps (the medium horizon), handed to ``ufarsap_window_end``."""

    first_step: int
    last_step: int
    metrics: dict[str, float] = Field(default_factory=dict)


class RoundReport(_Model):
    """An evaluation/evolution round (the long horizon), handed to ``ufarsap_round_end``."""

    round: int
    step: int
    metrics: dict[str, float] = Field(default_factory=dict)


class Feedback(_Model):
    """Why a sample needs refining: the flagged spans and each paradigm's score."""

    spans: list[Span] = Field(default_factory=list)
    paradigm_scores: dict[str, float] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)


class Refinement(_Model):
    """A proposed rewrite of a sample (``ufarsap_refine``)."""

    text: str
    rationale: str = ""
    changed_spans: list[Span] = Field(default_factory=list)


class AgentVote(_Model):
    """One agent's opinion on one sample, for consensus."""

    agent: str
    paradigm: Paradigm
    score: float = Field(ge=0.0, le=1.0)
    confidence: float = Field(default=1.0, ge=0.0, le=1.0)
    rationale: str = ""


class ConsensusResult(_Model):
    """The consensus of several agents on one sample (``ufarsap_consensus``)."""

    score: float = Field(ge=0.0, le=1.0)
    agreement: float = Field(ge=-1.0, le=1.0)
    uncertainty: float = Field(default=0.0, ge=0.0, le=1.0)
    details: dict[str, Any] = Field(default_factory=dict)


class StrategyProposal(_Model):
    """A candidate strategy a plugin proposes (``ufarsap_propose_strategies``)."""

    plugins: list[str]
    params: dict[str, Any] = Field(default_factory=dict)
    rationale: str = ""

    @field_validator("plugins")
    @classmethod
    def _names(cls, names: list[str]) -> list[str]:
        for n in names:
            if not PLUGIN_NAME_RE.match(n):
                raise ValueError(f"'{n}' is not a plugin name (paradigm.name)")
        return sorted(set(names))
