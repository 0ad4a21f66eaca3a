"""Emergence (Eq. 7, 21, 25): EmergenceScore = Novelty + Effectiveness + Generalizability.

Each part is measured, in [0, 1]:
- Novelty: distance of the current alignment state from the nearest earlier state in the
  history, divided by sqrt(#paradigms) (the largest possible distance in [0, 1]^P).
- Effectiveness: improvement of the mean unified reward over the previous window, clipped to [0, 1].
- Generalizability: improvement of the probe-set alignment since the last round (held-out
  texts never trained on), clipped to [0, 1].
The emergence indicator of Eq. 25 is the ratio of the interaction-based prediction's accuracy to
a direct (no-interaction) prediction's: > 1 means the paradigm graph explains the dynamics
better than each paradigm on its own.

None of this is differentiable with respect to the model (they are measurements over steps);
it enters training through the unified reward (Eq. 12), see docs/paper-map.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class EmergenceTracker:
    history: list[list[float]] = field(default_factory=list)
    max_history: int = 256
    last_window_reward: float | None = None
    last_probe: float | None = None
    novelty: float = 0.0
    effectiveness: float = 0.0
    generalizability: float = 0.0
    interaction_error: float | None = None
    direct_error: float | None = None

    @property
    def score(self) -> float:
        return self.novelty + self.effectiveness + self.generalizability

    def observe_state(self, state: list[float]) -> float:
        """Novelty of ``state`` against the history, then remember it."""
        if self.history:
            nearest = min(math.dist(state, past) for past in self.history if len(past) == len(state)) \
                if any(len(p) == len(state) for p in self.history) else 0.0
            self.novelty = min(1.0, nearest / math.sqrt(max(1, len(state))))
        self.history.append(list(state))
        del self.history[:-self.max_history]
        return self.novelty

    def observe_window(self, mean_reward: float) -> float:
        if self.last_window_reward is not None:
            self.effectiveness = min(1.0, max(0.0, mean_reward - self.last_window_reward))
        self.last_window_reward = mean_reward
        return self.effectiveness

    def observe_probe(self, probe_alignment: float) -> float:
        if self.last_probe is not None:
            self.generalizability = min(1.0, max(0.0, probe_alignment - self.last_probe))
        self.last_probe = probe_alignment
        return self.generalizability

    def observe_predictions(self, interaction_error: float, direct_error: float, decay: float = 0.9) -> None:
        """Running errors of the interaction network and of the direct baseline (a(t+1) = a(t))."""
        def ema(old, new):
            return new if old is None else decay * old + (1 - decay) * new
        self.interaction_error = ema(self.interaction_error, interaction_error)
        self.direct_error = ema(self.direct_error, direct_error)

    @property
    def indicator(self) -> float | None:
        """Eq. 25: direct error / interaction error (> 1: interactions explain more)."""
        if self.interaction_error is None or self.direct_error is None:
            return None
        return self.direct_error / max(self.interaction_error, 1e-12)

    def metrics(self) -> dict[str, float]:
        out = {"emergence.score": self.score, "emergence.novelty": self.novelty,
               "emergence.effectiveness": self.effectiveness, "emergence.generalizability": self.generalizability}
        if self.indicator is not None:
            out["emergence.indicator"] = self.indicator
        return {k: round(v, 6) for k, v in out.items()}

    def state_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("history", "last_window_reward", "last_probe", "novelty",
                                               "effectiveness", "generalizability", "interaction_error",
                                               "direct_error")}

    def load_state_dict(self, data: dict) -> None:
        for k, v in data.items():
            setattr(self, k, v)
