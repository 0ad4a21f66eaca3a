"""Integrate if beneficial (Eq. 23): the test, and writing its outcome to the registry.

A candidate replaces the incumbent only if

    objective(candidate) - objective(incumbent) > margin,
    margin = max(min_margin, noise_k * noise),

where ``noise`` is the standard error of that difference: from a paired bootstrap when both
evaluations used the same probe resamples (same ``probe_key``), else
``sqrt(se_candidate^2 + se_incumbent^2)``; and only if the hard constraints hold:

* ``lm_loss <= max_lm_loss_ratio * baseline`` when a model was trained (baseline: the
  evaluation's ``lm_loss_mle``, else the configured ``mle_baseline_loss``);
* ``cost <= max_cost_ratio * max(incumbent cost, cost_floor_s)``;
* the objective is finite.

Of the candidates that pass, the best objective is activated (``Registry.activate``, one
transaction that also retires the incumbent); every other candidate is rejected, with the
numbers that decided it in ``reason`` (the registry turns both into lineage events).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ufarsap_engine.evolution.evaluate import Evaluation


class IntegrationSettings(BaseModel):
    """Thresholds of the beneficial test."""

    model_config = ConfigDict(extra="forbid")
    min_margin: float = Field(0.01, ge=0, description="smallest objective gain that counts")
    noise_k: float = Field(2.0, ge=0, description="margin in units of the noise (std error) of the gain")
    max_cost_ratio: float = Field(3.0, gt=0, description="candidate cost / incumbent cost bound")
    cost_floor_s: float = Field(0.05, gt=0, description="incumbent costs below this (s/step) count as this")
    max_lm_loss_ratio: float = Field(1.05, gt=0, description="LM loss / MLE baseline bound")
    mle_baseline_loss: float | None = Field(None, gt=0, description="MLE LM loss, if not in the evaluation")


@dataclass
class Decision:
    """The beneficial test for one candidate against the incumbent."""

    candidate_id: int
    objective: float
    improvement: float
    margin: float
    noise: float
    paired: bool
    violations: list[str] = field(default_factory=list)

    @property
    def beneficial(self) -> bool:
        return not self.violations and self.improvement > self.margin

    def why(self) -> str:
        """The numbers, in one line, for the registry's ``reason``."""
        noise = f"{'paired ' if self.paired else ''}noise {self.noise:.4f}"
        core = (f"objective {self.objective:.4f}, gain {self.improvement:+.4f} vs margin {self.margin:.4f} "
                f"({noise})")
        if self.violations:
            return f"{core}; constraint failed: {'; '.join(self.violations)}"
        return core


def gain_noise(candidate: Evaluation, incumbent: Evaluation) -> tuple[float, bool]:
    """Standard error of objective(candidate) - objective(incumbent), and whether it was paired."""
    a, b = candidate.replicates, incumbent.replicates
    if (a is not None and b is not None and len(a) == len(b) and len(a) > 1
            and candidate.probe_key and candidate.probe_key == incumbent.probe_key):
        return float(np.std(np.asarray(a) - np.asarray(b), ddof=1)), True
    return math.hypot(candidate.noise_std, incumbent.noise_std), False


def beneficial_test(candidate_id: int, candidate: Evaluation, incumbent: Evaluation,
                    settings: IntegrationSettings) -> Decision:
    """Eq. 23 for one candidate; pure (no registry)."""
    noise, paired = gain_noise(candidate, incumbent)
    margin = max(settings.min_margin, settings.noise_k * noise)
    improvement = candidate.objective - incumbent.objective
    violations = []
    if not math.isfinite(candidate.objective):
        violations.append(f"objective is {candidate.objective}")
    baseline = candidate.lm_baseline or settings.mle_baseline_loss
    if candidate.lm_loss is not None and baseline:
        if not (math.isfinite(candidate.lm_loss) and candidate.lm_loss <= settings.max_lm_loss_ratio * baseline):
            violations.append(f"LM loss {candidate.lm_loss:.4f} > {settings.max_lm_loss_ratio:g} x MLE baseline "
                              f"{baseline:.4f}")
    if candidate.cost is not None and incumbent.cost is not None:
        bound = settings.max_cost_ratio * max(incumbent.cost, settings.cost_floor_s)
        if candidate.cost > bound:
            violations.append(f"cost {candidate.cost:.4f} s/step > {settings.max_cost_ratio:g} x incumbent "
                              f"{incumbent.cost:.4f} s/step")
    return Decision(candidate_id, candidate.objective, improvement, margin, noise, paired, violations)


def choose(decisions: list[Decision]) -> Decision | None:
    """The beneficial candidate with the best objective (ties: the earliest), or ``None``."""
    passing = [d for d in decisions if d.beneficial]
    return max(passing, key=lambda d: (d.objective, -d.candidate_id)) if passing else None


def record_decision(reg, decision: Decision, round_index: int) -> None:
    """The test's numbers as scores of the candidate, at the round's step."""
    reg.record_scores(decision.candidate_id, {
        "evolution.gain": decision.improvement, "evolution.margin": decision.margin,
        "evolution.noise": decision.noise, "evolution.beneficial": float(decision.beneficial),
    }, step=round_index)


def apply(reg, *, incumbent_id: int, decisions: list[Decision], winner: Decision | None, round_index: int,
          scope: str, extra_reason: str = "", gen_improvement: float | None = None) -> int | None:
    """Write the round's outcome: activate the winner (if the incumbent is still the active
    one), reject the others with the numbers. Returns the activated id or ``None``."""
    for d in decisions:
        record_decision(reg, d, round_index)
    activated = None
    if winner is not None:
        active = reg.active_strategy(scope)
        if active is None or active.id != incumbent_id:
            now = active.id if active else None
            winner.violations.append(f"the active strategy changed during round {round_index} "
                                     f"({incumbent_id} -> {now}); not compared against it")
        else:
            reason = f"round {round_index}: integrated over strategy {incumbent_id}: {winner.why()}{extra_reason}"
            scores = {"evolution.improvement": winner.improvement, "evolution.integrated": 1.0}
            if gen_improvement is not None:
                scores["evolution.gen_improvement"] = gen_improvement
            reg.record_scores(winner.candidate_id, scores, step=round_index)
            reg.activate(winner.candidate_id, reason=reason)
            activated = winner.candidate_id
    for d in decisions:
        if d.candidate_id == activated:
            continue
        if d is winner or d.beneficial is False or winner is None:
            why = f"round {round_index}: not beneficial over strategy {incumbent_id}: {d.why()}"
        else:
            why = (f"round {round_index}: beneficial but not the best (objective {d.objective:.4f} < "
                   f"{winner.objective:.4f} of strategy {winner.candidate_id}): {d.why()}")
        reg.reject(d.candidate_id, why)
    return activated
