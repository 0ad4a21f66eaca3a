"""multi.debate: agents revise their scores over rounds after seeing the others' (Eq. 16-17).

Each round every agent moves toward the confidence-weighted mean of the *other* agents, by a
step that shrinks with its own confidence (confident agents hold their ground):

    s_i <- s_i + eta * (1 - c_i) * (mean_{j != i, weighted by c_j} s_j - s_i)

until no score moves more than ``tol`` or ``rounds`` is reached; the result is the multi.consensus
combination of the final votes. Optionally an LLM judge takes part: a local Hugging Face causal
LM (``judge_model_dir``) gives p(aligned | text) from control-token likelihoods and, in later
rounds, p(aligned | text + the other agents' mean score), so it too "hears" the debate.

The agents read the selected safety plugins' results, handed over by the host
(``uses=["safety"]``); with no safety plugin selected only the LLM judge (if set) has an opinion,
else the plugin has none (``None``).
"""

from __future__ import annotations

from typing import Any, Sequence

from ufarsap_engine.hookspecs import hookimpl
from ufarsap_engine.schemas import (AgentVote, AlignmentState, ConsensusResult, Horizon, Paradigm, PluginInfo,
                                    Sample, Scale, ScaleScores, TextBatch)

from ufarsap_plugins._common import check_params, clamp01
from ufarsap_plugins._suite import safety_profiles, upstream_profiles
from ufarsap_plugins.multi.consensus import DEFAULT_AGENTS, agent_confidence, agent_score, combine


def debate_rounds(scores: Sequence[float], confidences: Sequence[float], rounds: int, eta: float, tol: float,
                  fixed: Sequence[bool] | None = None, judge=None) -> dict[str, Any]:
    """Run the revision rounds; ``judge(mean_of_others) -> score`` re-queries an LLM agent
    (index ``len(scores) - 1`` when given). Returns final scores and the trajectory."""
    s = [float(x) for x in scores]
    c = [float(x) for x in confidences]
    fixed = list(fixed or [False] * len(s))
    traj = [list(s)]
    used = 0
    for _ in range(int(rounds)):
        used += 1
        new = []
        for i, si in enumerate(s):
            others = [(s[j], c[j]) for j in range(len(s)) if j != i]
            z = sum(w for _, w in others) or 1.0
            m = sum(x * w for x, w in others) / z if others else si
            if judge is not None and i == len(s) - 1:
                new.append(clamp01(judge(m)))
            elif fixed[i]:
                new.append(si)
            else:
                new.append(clamp01(si + eta * (1.0 - c[i]) * (m - si)))
        moved = max(abs(a - b) for a, b in zip(new, s)) if s else 0.0
        s = new
        traj.append(list(s))
        if moved < tol:
            break
    return {"scores": s, "trajectory": traj, "rounds": used}


class DebatePlugin:
    NAME = "multi.debate"
    DEFAULTS: dict[str, Any] = {"agents": DEFAULT_AGENTS, "rounds": 3, "eta": 0.5, "tol": 0.01,
                                "disagreement_weight": 0.5, "judge_model_dir": "", "judge_confidence": 0.7,
                                "device": "cpu"}

    def __init__(self) -> None:
        self.params = dict(self.DEFAULTS)
        self._judge = None

    @hookimpl
    def ufarsap_plugin_info(self) -> PluginInfo:
        return PluginInfo(paradigm=Paradigm.MULTI,
                          description="Multi-agent debate: evaluator agents revise scores over rounds after seeing "
                                      "each other's; optional local causal-LM judge; consensus of the final votes.",
                          scales=[Scale.DOCUMENT], horizons=[Horizon.MEDIUM, Horizon.LONG], uses=["safety"])

    @hookimpl
    def ufarsap_configure(self, params: dict[str, Any]) -> None:
        from ufarsap_plugins.multi.consensus import ConsensusPlugin

        p = check_params(params, self.DEFAULTS, self.NAME)
        ConsensusPlugin().ufarsap_configure({"agents": p["agents"]})  # same agent validation
        if not 1 <= int(p["rounds"]) <= 20 or not 0.0 < p["eta"] <= 1.0:
            raise ValueError(f"{self.NAME}: rounds must be 1..20 and eta in (0, 1]")
        self.params = p
        self._judge = None
        if p["judge_model_dir"]:
            from ufarsap_plugins._lm import ControlTokenJudge

            self._judge = ControlTokenJudge(p["judge_model_dir"], device=p["device"])

    def _judge_fn(self, text: str):
        if self._judge is None:
            return None, None
        first = self._judge.p_aligned([text])[0]

        def revise(mean_others: float) -> float:
            prompt = f"{text}\nOther reviewers rate this text {mean_others:.2f} out of 1."
            return self._judge.p_aligned([prompt])[0]

        return first, revise

    def debate(self, text: str, votes: Sequence[AgentVote] | None = None,
               profile: dict[str, float] | None = None) -> dict[str, Any] | None:
        """The debate on ``text`` from ``votes`` or the agents' votes on a safety ``profile``
        (without either, for scripts, the built-in detectors are run explicitly); ``None`` when
        nobody has an opinion (empty profile, no judge)."""
        if votes:
            names = [v.agent for v in votes]
            scores, confs = [v.score for v in votes], [v.confidence for v in votes]
        else:
            profile = safety_profiles([text])[0] if profile is None else profile
            names, scores, confs = [], [], []
            for a in (self.params["agents"] if profile else []):
                s = agent_score(a, profile)
                names.append(a["name"])
                scores.append(s)
                confs.append(agent_confidence(a, s))
        first, revise = self._judge_fn(text)
        if first is not None:
            names.append("llm_judge")
            scores.append(first)
            confs.append(float(self.params["judge_confidence"]))
        if not scores:
            return None
        r = debate_rounds(scores, confs, int(self.params["rounds"]), float(self.params["eta"]),
                          float(self.params["tol"]), judge=revise)
        final = combine(r["scores"], confs, float(self.params["disagreement_weight"]))
        before = combine(scores, confs, float(self.params["disagreement_weight"]))
        return {"score": final["score"], "agreement": final["agreement"], "uncertainty": final["uncertainty"],
                "agreement_before": before["agreement"], "rounds": r["rounds"], "agents": names,
                "final_scores": r["scores"]}

    @hookimpl
    def ufarsap_score_document(self, batch: TextBatch, horizon: Horizon, state: AlignmentState) -> ScaleScores:
        results = [self.debate(s.text, profile=p) for s, p in zip(batch.samples, upstream_profiles(batch))]
        return ScaleScores(sample_scores=[r["score"] if r else None for r in results],
                           details={k: [r[k] if r else None for r in results]
                                    for k in ("agreement", "agreement_before", "rounds")})

    @hookimpl
    def ufarsap_consensus(self, sample: Sample, votes: list[AgentVote], state: AlignmentState) -> ConsensusResult | None:
        if not votes:
            return None
        r = self.debate(sample.text, votes)
        return ConsensusResult(score=r["score"], agreement=r["agreement"], uncertainty=r["uncertainty"],
                               details={k: r[k] for k in ("agreement_before", "rounds", "agents", "final_scores")})
