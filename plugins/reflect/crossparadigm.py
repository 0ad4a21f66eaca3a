"""reflect.crossparadigm: feedback combined from all paradigms (Eq. 14) and the CrossReflect check.

Feedback (Eq. 14): F(x) = sum_p omega_p f_p(x) / sum_p omega_p over the four paradigms, each
computed from the selected safety plugins' results, which the host hands over
(``uses=["safety"]``; this plugin runs no detector):
  safety  - the Eq. 18 context-weighted safety score;
  self    - self.eval's calibrated p(aligned | x);
  multi   - multi.consensus's consensus of its evaluator agents;
  reflect - the quality proxy (coherence of the text, what refinement must preserve).
Scores the engine already has (``Feedback.paradigm_scores``) replace the local estimate. A safety
plugin left out (``no:safety.privacy``) is absent from every term; with no safety plugin selected
the safety, self and multi terms are absent and F is the reflect term (quality) alone.

CrossReflect: a refinement is accepted only if it does not break a dimension while fixing
another: no safety dimension, the self-evaluation or quality may drop by more than ``tol``, and at
least ``min_preservation`` of the original text must survive. If the full self-refinement breaks
something, edits are re-applied group by group (greedily) and only the groups that improve the
combined feedback without breaking anything are kept. In ``ufarsap_refine`` the edits are those
of the engine's flagged spans and a candidate's safety dimensions are what the edits leave of
them (``SelfRefinePlugin.residual_profile``); ``cross_refine(text)`` without feedback runs the
built-in detectors explicitly on every candidate, for scripts.
"""

from __future__ import annotations

import difflib
from typing import Any

from ufarsap_engine.hookspecs import hookimpl
from ufarsap_engine.schemas import (AlignmentState, Feedback, Horizon, Paradigm, PluginInfo, Refinement, Sample,
                                    Scale, ScaleScores, TextBatch)

from ufarsap_plugins._common import ALL_HORIZONS, as_text, check_params, clamp01
from ufarsap_plugins._suite import DIMENSIONS, quality, safety_profiles, upstream_profiles
from ufarsap_plugins.multi.consensus import DEFAULT_AGENTS, agent_confidence, agent_score, combine
from ufarsap_plugins.reflect.selfrefine import SelfRefinePlugin, apply_edits, tidy
from ufarsap_plugins.safety import tradeoff as eq19
from ufarsap_plugins.self_alignment.evaluation import calibrated_p


class CrossParadigmPlugin:
    NAME = "reflect.crossparadigm"
    DEFAULTS: dict[str, Any] = {"omega": {"safety": 1.0, "self": 1.0, "multi": 1.0, "reflect": 1.0},
                                "tol": 0.05, "min_preservation": 0.5, "max_iterations": 3, "domain": "general"}

    def __init__(self) -> None:
        self.params = dict(self.DEFAULTS)
        self.refiner = SelfRefinePlugin()

    @hookimpl
    def ufarsap_plugin_info(self) -> PluginInfo:
        return PluginInfo(paradigm=Paradigm.REFLECT,
                          description="Cross-paradigm reflection: Eq. 14 feedback combined from the safety, self, "
                                      "multi and reflect paradigms; refinements that fix one dimension but break "
                                      "another are rejected or reduced (CrossReflect).",
                          scales=[Scale.DOCUMENT], horizons=list(ALL_HORIZONS), uses=["safety"])

    @hookimpl
    def ufarsap_configure(self, params: dict[str, Any]) -> None:
        p = check_params(params, self.DEFAULTS, self.NAME)
        bad = set(p["omega"]) - {"safety", "self", "multi", "reflect"}
        if bad or any(float(v) < 0 for v in p["omega"].values()):
            raise ValueError(f"{self.NAME}: omega needs non-negative weights for safety/self/multi/reflect")
        self.params = p
        self.refiner.ufarsap_configure({"max_iterations": int(p["max_iterations"]), "domain": p["domain"]})

    # -- Eq. 14 ------------------------------------------------------------------------------
    def dimensions(self, texts: list[str], profiles: list[dict[str, float]]) -> list[dict[str, float]]:
        """Every dimension CrossReflect watches, for each text, from its safety profile (the
        paradigm terms built on safety are absent when the profile is empty)."""
        out = []
        for text, prof in zip(texts, profiles):
            q = quality(text)
            row = {**prof, "quality": q, "reflect": q}
            if prof:
                votes = [agent_score(a, prof) for a in DEFAULT_AGENTS]
                confs = [agent_confidence(a, s) for a, s in zip(DEFAULT_AGENTS, votes)]
                row.update(safety=eq19.safety_score(prof, eq19.adaptive_weights({"domain": self.params["domain"]})),
                           self=calibrated_p({**prof, "quality": q}), multi=combine(votes, confs, 0.5)["score"])
            out.append(row)
        return out

    def detected_dimensions(self, texts: list[str]) -> list[dict[str, float]]:
        """:meth:`dimensions` with the built-in detectors run explicitly (scripts only)."""
        return self.dimensions(texts, safety_profiles(texts))

    def combined(self, dims: dict[str, float], given: dict[str, float] | None = None) -> float:
        """Eq. 14 over the paradigms that have a value (given scores first)."""
        om = self.params["omega"]
        vals = {p: (given or {}).get(p, dims.get(p)) for p in om}
        vals = {p: v for p, v in vals.items() if v is not None}
        z = sum(float(om[p]) for p in vals) or 1.0
        return clamp01(sum(float(om[p]) * v for p, v in vals.items()) / z)

    # -- CrossReflect ------------------------------------------------------------------------
    def broken(self, before: dict[str, float], after: dict[str, float], original: str, new: str) -> list[str]:
        tol = float(self.params["tol"])
        out = [d for d in (*DIMENSIONS, "self", "quality") if d in before and d in after and after[d] < before[d] - tol]
        kept = difflib.SequenceMatcher(None, original, new, autojunk=False).get_matching_blocks()
        preserved = sum(b.size for b in kept) / max(1, len(original))
        if preserved < float(self.params["min_preservation"]):
            out.append(f"preservation {preserved:.2f}")
        return out

    def cross_refine(self, text: str, feedback: Feedback | None = None,
                     detect: bool | None = None) -> tuple[str, dict[str, Any]]:
        """CrossReflect over the self-refinement of ``text``. With ``feedback`` (the hook) the
        edits come from its spans and candidates are measured without detectors; without it
        (``detect`` defaults to True then, for scripts) the detectors run on every candidate."""
        text = as_text(text)
        detect = feedback is None if detect is None else detect
        given = dict(feedback.paradigm_scores) if feedback else {}
        if detect:
            _, _, info = self.refiner.assess(text)
            extra = feedback.spans if feedback else None
            candidate, _ = self.refiner.refine_text(text, extra)

            def measure(trial: str, edits: list) -> dict[str, float]:
                return self.detected_dimensions([trial])[0]
        else:
            info, extra = self.refiner.info_from_feedback(text, feedback)
            candidate = tidy(apply_edits(text, self.refiner.propose_edits(text, info, extra)))

            def measure(trial: str, edits: list) -> dict[str, float]:
                return self.dimensions([trial], [self.refiner.residual_profile(info["profile"], info, edits)])[0]
        all_edits = self.refiner.propose_edits(text, info, extra)
        before = measure(text, [])
        report: dict[str, Any] = {"before": self.combined(before, given), "rejected": []}
        after = measure(candidate, all_edits)
        broke = self.broken(before, after, text, candidate)
        if candidate != text and not broke and self.combined(after) > report["before"]:
            report.update(after=self.combined(after), mode="full")
            return candidate, report
        report["rejected"].append({"mode": "full", "broken": broke})
        # greedy, edit group by edit group
        groups: dict[str, list] = {}
        for e in all_edits:
            groups.setdefault(e[3].split(" ")[0] + " " + e[3].split(" ")[-1], []).append(e)
        current, cur_dims, accepted = text, before, []
        for name, edits in groups.items():
            chosen = [e for g in accepted for e in groups[g]] + edits
            trial = tidy(apply_edits(text, chosen))
            dims = measure(trial, chosen)
            broke = self.broken(cur_dims, dims, text, trial)
            if not broke and self.combined(dims) > self.combined(cur_dims):
                accepted.append(name)
                current, cur_dims = trial, dims
            else:
                report["rejected"].append({"edit": name, "broken": broke})
        report.update(after=self.combined(cur_dims), mode="greedy", accepted=accepted)
        return current, report

    # -- hooks -------------------------------------------------------------------------------
    @hookimpl
    def ufarsap_score_document(self, batch: TextBatch, horizon: Horizon, state: AlignmentState) -> ScaleScores:
        texts = [as_text(s.text) for s in batch.samples]
        dims = self.dimensions(texts, upstream_profiles(batch))
        return ScaleScores(sample_scores=[self.combined(d) for d in dims],
                           details={p: [d.get(p) for d in dims] for p in ("safety", "self", "multi", "reflect")})

    @hookimpl
    def ufarsap_refine(self, sample: Sample, feedback: Feedback, state: AlignmentState) -> Refinement | None:
        new, report = self.cross_refine(sample.text, feedback or Feedback(), detect=False)
        if new == sample.text:
            return None
        rejected = [r.get("edit", r.get("mode")) + " (" + ", ".join(r["broken"]) + ")" for r in report["rejected"]
                    if r.get("broken")]
        rationale = (f"Eq. 14 feedback {report['before']:.2f} -> {report['after']:.2f} ({report['mode']})"
                     + (f"; CrossReflect rejected: {'; '.join(rejected)}" if rejected else ""))
        return Refinement(text=new, rationale=rationale, changed_spans=SelfRefinePlugin.changed_spans(sample.text, new))
