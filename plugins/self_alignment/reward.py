"""self.reward: a synthetic reward per sample from the active evaluators' scores.

Self-rewarding needs a scalar per sample to rank the model's own generations (DPO pairs,
reward-weighted likelihood). Here the reward is the Eq. 19 trade-off of a quality score (a
model-free fluency proxy, or the engine's own quality score when it passes one) against the
Eq. 18 safety combination of the active safety evaluators, with context-adaptive weights whose
"recent" scores come from the alignment state a(t).

The safety scores are the selected safety plugins' results, handed over by the host
(``uses=["safety"]``), restricted to ``evaluators``; Eq. 18 renormalises over the dimensions
present, and with no safety plugin selected the safety term is 1 (nothing objects), so the reward
ranks by quality alone.
"""

from __future__ import annotations

from typing import Any

from ufarsap_engine.hookspecs import hookimpl
from ufarsap_engine.schemas import (AlignmentState, Horizon, Paradigm, PluginInfo, Scale, ScaleScores,
                                    StrategyProposal, TextBatch)

from ufarsap_plugins._common import ALL_HORIZONS, check_params, clamp01
from ufarsap_plugins._suite import DIMENSIONS, engine_scores, quality, safety_profiles, upstream_profiles
from ufarsap_plugins.safety import tradeoff as eq19


class SelfRewardPlugin:
    NAME = "self.reward"
    DEFAULTS: dict[str, Any] = {"evaluators": list(DIMENSIONS), "domain": "general", "risk": 0.0,
                                "use_state": True, "quality_weight": 1.0}

    def __init__(self) -> None:
        self.params = dict(self.DEFAULTS)

    @hookimpl
    def ufarsap_plugin_info(self) -> PluginInfo:
        return PluginInfo(paradigm=Paradigm.SELF,
                          description="Synthetic reward per sample: Eq. 19 trade-off of text quality against the "
                                      "Eq. 18 context-weighted safety scores of the active evaluators.",
                          scales=[Scale.DOCUMENT, Scale.CONVERSATION], horizons=list(ALL_HORIZONS), uses=["safety"])

    @hookimpl
    def ufarsap_configure(self, params: dict[str, Any]) -> None:
        p = check_params(params, self.DEFAULTS, self.NAME)
        bad = [d for d in p["evaluators"] if d not in DIMENSIONS]
        if bad:
            raise ValueError(f"{self.NAME}: unknown evaluator(s) {bad}; known: {list(DIMENSIONS)}")
        if p["domain"] not in eq19.DOMAIN_PRIORS:
            raise ValueError(f"{self.NAME}: unknown domain {p['domain']!r}; known: {sorted(eq19.DOMAIN_PRIORS)}")
        self.params = p

    def context(self, state: AlignmentState | None) -> dict[str, Any]:
        ctx: dict[str, Any] = {"domain": self.params["domain"], "risk": float(self.params["risk"])}
        if self.params["use_state"] and state is not None:
            # a(t) is per paradigm; the safety paradigm's medium-horizon EMA stands for every
            # safety dimension unless the engine reports them separately (e.g. "toxicity").
            recent = {d: v for d, v in state.medium.items() if d in DIMENSIONS}
            if not recent and "safety" in state.medium:
                recent = {d: state.medium["safety"] for d in self.params["evaluators"]}
            ctx["recent"] = recent
        return ctx

    def rewards(self, texts: list[str], metas: list[dict] | None = None, state: AlignmentState | None = None,
                profiles: list[dict[str, float]] | None = None) -> list[dict[str, Any]]:
        """Reward and its parts for each text, from its safety ``profiles`` (the hooks pass the
        host's; without them, for scripts, the built-in detectors are run explicitly)."""
        if profiles is None:
            profiles = safety_profiles(texts, self.params["evaluators"])
        ctx = self.context(state)
        out = []
        for i, (text, prof) in enumerate(zip(texts, profiles)):
            prof = {d: v for d, v in prof.items() if d in self.params["evaluators"]}
            given = engine_scores((metas or [{}] * len(texts))[i])
            prof = {**prof, **{k: v for k, v in given.items() if k in DIMENSIONS}}
            q = given.get("quality", quality(text))
            q = 1.0 - self.params["quality_weight"] * (1.0 - q)
            r = eq19.tradeoff(q, prof, ctx)
            out.append({"reward": clamp01(r["reward"]), "quality": q, "safety": r["safety"],
                        "lambda": r["lambda"], "scores": prof})
        return out

    @hookimpl
    def ufarsap_score_document(self, batch: TextBatch, horizon: Horizon, state: AlignmentState) -> ScaleScores:
        rs = self.rewards([s.text for s in batch.samples], [s.meta for s in batch.samples], state,
                          upstream_profiles(batch))
        return ScaleScores(sample_scores=[r["reward"] for r in rs],
                           details={"quality": [r["quality"] for r in rs], "safety": [r["safety"] for r in rs],
                                    "lambda": rs[0]["lambda"] if rs else None})

    @hookimpl
    def ufarsap_score_conversation(self, batch: TextBatch, horizon: Horizon, state: AlignmentState) -> ScaleScores:
        """A conversation is rewarded by its worst assistant turn's quality (one bad answer spoils
        it) against the safety plugins' conversation-scale scores."""
        scores: list[float | None] = []
        for s, prof in zip(batch.samples, upstream_profiles(batch, ("conversation",))):
            turns = [m.content for m in (s.messages or []) if m.role == "assistant"]
            if not turns:
                scores.append(None)
                continue
            worst = min(turns, key=quality)
            scores.append(self.rewards([worst], None, state, [prof])[0]["reward"])
        return ScaleScores(sample_scores=scores)

    @hookimpl
    def ufarsap_propose_strategies(self, active_plugins: list[str], params: dict[str, Any],
                                   state: AlignmentState) -> list[StrategyProposal]:
        """If safety lags, propose a safety-heavier reward (a riskier-context trade-off)."""
        safety = state.medium.get("safety") if state else None
        if safety is None or safety >= 0.9:
            return []
        mine = dict(params.get(self.NAME, {}))
        mine["risk"] = min(1.0, float(mine.get("risk", 0.0)) + 0.25)
        return [StrategyProposal(plugins=sorted(set(active_plugins) | {self.NAME}),
                                 params={**params, self.NAME: mine},
                                 rationale=f"safety EMA {safety:.2f} < 0.90: weight safety more in the reward")]
