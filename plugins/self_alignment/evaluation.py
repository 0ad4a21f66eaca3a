"""self.eval: self-evaluation, p(aligned | text).

Without a trained model, the estimate is a *calibrated* combination: a logistic regression over
the five safety scores and the quality proxy, fitted on the labelled corpus's dev split
(``calibration.json``, written by ``scripts/eval_plugins.py --fit-calibration``), so the output
is a probability and not just an average. Once the LM under training has learned control tokens
(conditional training), its own likelihood-based judgement can be mixed in: set ``model_dir``
(a local Hugging Face causal LM) or call :meth:`SelfEvalPlugin.set_likelihood` with any
``texts -> p(aligned)`` function.

The safety scores are the selected safety plugins' results, handed over by the host
(``uses=["safety"]``); a dimension that is not selected counts as safe (1.0), so with no safety
plugin the estimate varies with the quality proxy (and the model judge) only.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, Callable, Sequence

from ufarsap_engine.hookspecs import hookimpl
from ufarsap_engine.schemas import AlignmentState, Horizon, Paradigm, PluginInfo, Scale, ScaleScores, TextBatch

from ufarsap_plugins._common import ALL_HORIZONS, check_params, clamp01, load_json
from ufarsap_plugins._suite import (DIMENSIONS, engine_scores, quality, safety_profiles, upstream_profiles,
                                    upstream_unit_profiles)

FEATURES = list(DIMENSIONS) + ["quality"]
#: Used only if calibration.json is missing: equal weights, centred so all-safe text -> ~0.95.
FALLBACK = {"features": FEATURES, "coef": [4.0] * len(DIMENSIONS) + [1.0], "intercept": -18.0}


@lru_cache(maxsize=1)
def calibration() -> dict[str, Any]:
    try:
        cal = load_json("ufarsap_plugins.self_alignment", "calibration.json")
    except FileNotFoundError:
        return FALLBACK
    return cal if cal.get("features") == FEATURES else FALLBACK


def calibrated_p(profile: dict[str, float]) -> float:
    cal = calibration()
    z = cal["intercept"] + sum(c * float(profile.get(f, 1.0)) for c, f in zip(cal["coef"], cal["features"]))
    return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))


class SelfEvalPlugin:
    NAME = "self.eval"
    DEFAULTS: dict[str, Any] = {"model_dir": "", "model_weight": 0.5, "device": "cpu"}

    def __init__(self) -> None:
        self.params = dict(self.DEFAULTS)
        self._likelihood: Callable[[Sequence[str]], list[float]] | None = None

    @hookimpl
    def ufarsap_plugin_info(self) -> PluginInfo:
        return PluginInfo(paradigm=Paradigm.SELF,
                          description="Self-evaluation p(aligned|text): calibrated logistic combination of the "
                                      "safety scores and a quality proxy; optional control-token likelihood judge.",
                          scales=[Scale.SENTENCE, Scale.DOCUMENT], horizons=list(ALL_HORIZONS), uses=["safety"])

    @hookimpl
    def ufarsap_configure(self, params: dict[str, Any]) -> None:
        p = check_params(params, self.DEFAULTS, self.NAME)
        if not 0.0 <= p["model_weight"] <= 1.0:
            raise ValueError(f"{self.NAME}: model_weight must be in [0, 1]")
        self.params = p
        self._likelihood = None
        if p["model_dir"]:
            from ufarsap_plugins._lm import ControlTokenJudge

            self._likelihood = ControlTokenJudge(p["model_dir"], device=p["device"]).p_aligned

    def set_likelihood(self, fn: Callable[[Sequence[str]], list[float]] | None) -> None:
        """Plug in the model's own judgement: a function texts -> p(aligned) in [0, 1]."""
        self._likelihood = fn

    def p_aligned(self, texts: Sequence[str], metas: Sequence[dict] | None = None,
                  profiles: Sequence[dict[str, float]] | None = None) -> tuple[list[float], dict]:
        """p(aligned) per text from its safety ``profiles`` (the hooks pass the host's; without
        them, for scripts, the built-in detectors are run explicitly)."""
        profiles = safety_profiles(texts) if profiles is None else profiles
        ps = []
        for i, (t, prof) in enumerate(zip(texts, profiles)):
            prof = {**prof, "quality": quality(t), **engine_scores((metas or [None] * len(texts))[i])}
            ps.append(calibrated_p(prof))
        details: dict[str, Any] = {"calibrated": list(ps)}
        if self._likelihood is not None and texts:
            model_p = [clamp01(float(x)) for x in self._likelihood(list(texts))]
            w = float(self.params["model_weight"])
            ps = [(1 - w) * a + w * b for a, b in zip(ps, model_p)]
            details["model"] = model_p
        return [clamp01(p) for p in ps], details

    @hookimpl
    def ufarsap_score_document(self, batch: TextBatch, horizon: Horizon, state: AlignmentState) -> ScaleScores:
        ps, details = self.p_aligned([s.text for s in batch.samples], [s.meta for s in batch.samples],
                                     upstream_profiles(batch))
        return ScaleScores(sample_scores=ps, details=details)

    @hookimpl
    def ufarsap_score_sentence(self, batch: TextBatch, horizon: Horizon, state: AlignmentState) -> ScaleScores:
        from ufarsap_plugins._common import engine_units

        units, flat, profiles = [], [], []
        for s, unit_profiles in zip(batch.samples, upstream_unit_profiles(batch)):
            us = engine_units(s)
            units.append(len(us))
            flat.extend(s.text[a:b] for a, b in us)
            profiles.extend(unit_profiles[:len(us)] + [{}] * (len(us) - len(unit_profiles)))
        ps, _ = self.p_aligned(flat, profiles=profiles) if flat else ([], {})
        out, k = [], 0
        for n in units:
            out.append(ps[k:k + n])
            k += n
        return ScaleScores(sample_scores=[min(u) if u else 1.0 for u in out], unit_scores=out)
