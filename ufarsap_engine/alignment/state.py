"""The alignment state a(t) (Eq. 1): per paradigm, short / medium / long horizon views.

short = the latest step's mean score; medium = an exponential moving average over steps (its
time constant is the window length); long = the value measured at the last round.
"""

from __future__ import annotations

from ufarsap_engine.schemas import AlignmentState


class AlignmentTracker:
    def __init__(self, window_steps: int = 10):
        self.decay = 1.0 - 1.0 / max(1, window_steps)
        self.state = AlignmentState()

    def update_step(self, step: int, paradigm_scores: dict[str, list[float | None]]) -> AlignmentState:
        s = self.state
        s.step = step
        for paradigm, values in paradigm_scores.items():
            vals = [v for v in values if v is not None]
            if not vals:
                continue
            now = sum(vals) / len(vals)
            s.short[paradigm] = now
            prev = s.medium.get(paradigm)
            s.medium[paradigm] = now if prev is None else self.decay * prev + (1 - self.decay) * now
        return s

    def update_round(self, round_index: int, paradigm_means: dict[str, float]) -> AlignmentState:
        self.state.round = round_index
        self.state.long.update(paradigm_means)
        return self.state

    def metrics(self) -> dict[str, float]:
        """Flat view for metrics.jsonl: ``state.<horizon>.<paradigm>``."""
        out = {}
        for horizon in ("short", "medium", "long"):
            for p, v in getattr(self.state, horizon).items():
                out[f"state.{horizon}.{p}"] = round(v, 6)
        return out

    def load(self, data: dict) -> None:
        self.state = AlignmentState.model_validate(data)
