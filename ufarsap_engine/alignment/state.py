"""The alignment state a(t) (Eq. 1): per paradigm, short / medium / long horizon views.

short = the latest step's mean score (from the objective's end-of-step statistics); medium =
the mean per-sample score of a re-scored sample of the last window's documents, measured at the
window's end by the plugins' medium-horizon hooks; long = the held-out probe set's mean score
at the last round. A paradigm no plugin serves at a horizon has no value there (not faked).
"""

from __future__ import annotations

from ufarsap_engine.schemas import AlignmentState


class AlignmentTracker:
    def __init__(self, window_steps: int = 10):
        self.window_steps = max(1, window_steps)
        self.state = AlignmentState()

    def update_step(self, step: int, paradigm_scores: dict[str, float]) -> AlignmentState:
        """Short horizon: the step's mean score per paradigm."""
        self.state.step = step
        self.state.short.update(paradigm_scores)
        return self.state

    def update_window(self, step: int, paradigm_means: dict[str, float]) -> AlignmentState:
        """Medium horizon: per paradigm, the mean of the per-sample scores at a window's end."""
        self.state.step = step
        self.state.medium.update(paradigm_means)
        return self.state

    def update_round(self, round_index: int, paradigm_means: dict[str, float]) -> AlignmentState:
        """Long horizon: per paradigm, the held-out probe set's mean score at a round's end."""
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
