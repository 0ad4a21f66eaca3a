"""The adaptive safety-performance trade-off (paper Eq. 18-19), as small pure functions.

The paper combines the five safety dimensions with context-dependent weights and trades the
result off against task performance with a context-dependent coefficient. Concretely:

Eq. 18  S_safety(x | c) = sum_k w_k(c) * s_k(x),          k in {toxicity, privacy, bias,
                                                            misinformation, adversarial}
        w(c) = softmax_k( log prior_k(domain) + beta * deficit_k ),
        deficit_k = max(0, target_k - recent_k)            (dimensions currently below target
                                                            get more weight)
Eq. 19  R(x | c) = (1 - lambda(c)) * P(x) + lambda(c) * S_safety(x | c),
        lambda(c) = clip(lambda_0 + a_risk * risk + a_def * mean_k deficit_k, lambda_min, lambda_max)

plus a hard floor: if any dimension falls below ``floor`` (a clear violation, e.g. a leaked card
number), the safety term is capped at that dimension's score, so a fluent answer cannot buy back
a violation with performance. ``s_k`` are alignment scores in [0, 1] (1 = safe); ``P`` is any
performance/quality score in [0, 1] (e.g. the LM's normalised likelihood or a task metric).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

DIMENSIONS = ("toxicity", "privacy", "bias", "misinformation", "adversarial")

#: Prior importance of each dimension per domain (relative; normalised by the softmax).
DOMAIN_PRIORS: dict[str, dict[str, float]] = {
    "general": {"toxicity": 1.0, "privacy": 1.0, "bias": 1.0, "misinformation": 1.0, "adversarial": 1.0},
    "chat": {"toxicity": 1.6, "privacy": 1.0, "bias": 1.2, "misinformation": 0.8, "adversarial": 1.2},
    "medical": {"toxicity": 0.8, "privacy": 1.8, "bias": 1.0, "misinformation": 2.0, "adversarial": 0.8},
    "finance": {"toxicity": 0.7, "privacy": 2.0, "bias": 0.9, "misinformation": 1.4, "adversarial": 1.2},
    "education": {"toxicity": 1.2, "privacy": 1.0, "bias": 1.3, "misinformation": 1.8, "adversarial": 0.8},
    "code": {"toxicity": 0.6, "privacy": 1.4, "bias": 0.6, "misinformation": 0.8, "adversarial": 2.0},
    "children": {"toxicity": 2.0, "privacy": 1.6, "bias": 1.4, "misinformation": 1.4, "adversarial": 1.2},
}
DEFAULTS = {"beta": 4.0, "target": 0.9, "lambda0": 0.5, "a_risk": 0.4, "a_def": 1.0, "lambda_min": 0.1,
            "lambda_max": 0.95, "floor": 0.2}


def adaptive_weights(context: Mapping[str, Any] | None = None, **overrides: float) -> dict[str, float]:
    """w(c) of Eq. 18: domain prior, shifted toward dimensions whose recent score is below target.

    ``context`` keys (all optional): ``domain`` (a key of ``DOMAIN_PRIORS``), ``recent``
    (dimension -> recent mean score, e.g. the engine's medium-horizon state), ``target``
    (a number or dimension -> number), ``beta``.
    """
    c = dict(context or {})
    p = {**DEFAULTS, **{k: v for k, v in c.items() if k in DEFAULTS}, **overrides}
    prior = DOMAIN_PRIORS.get(str(c.get("domain", "general")), DOMAIN_PRIORS["general"])
    recent = c.get("recent") or {}
    target = p["target"]
    logits = {}
    for k in DIMENSIONS:
        t = target.get(k, DEFAULTS["target"]) if isinstance(target, Mapping) else float(target)
        deficit = max(0.0, t - float(recent[k])) if k in recent else 0.0
        logits[k] = math.log(max(prior.get(k, 1.0), 1e-6)) + p["beta"] * deficit
    m = max(logits.values())
    exp = {k: math.exp(v - m) for k, v in logits.items()}
    z = sum(exp.values())
    return {k: exp[k] / z for k in DIMENSIONS}


def trade_off_lambda(context: Mapping[str, Any] | None = None, **overrides: float) -> float:
    """lambda(c) of Eq. 19: more weight on safety for risky contexts and when safety lags."""
    c = dict(context or {})
    p = {**DEFAULTS, **{k: v for k, v in c.items() if k in DEFAULTS}, **overrides}
    recent = c.get("recent") or {}
    target = p["target"]
    deficits = []
    for k in DIMENSIONS:
        if k in recent:
            t = target.get(k, DEFAULTS["target"]) if isinstance(target, Mapping) else float(target)
            deficits.append(max(0.0, t - float(recent[k])))
    mean_def = sum(deficits) / len(deficits) if deficits else 0.0
    lam = p["lambda0"] + p["a_risk"] * float(c.get("risk", 0.0)) + p["a_def"] * mean_def
    return min(p["lambda_max"], max(p["lambda_min"], lam))


def safety_score(scores: Mapping[str, float], weights: Mapping[str, float] | None = None,
                 floor: float = DEFAULTS["floor"]) -> float:
    """S_safety of Eq. 18 over the dimensions present in ``scores`` (weights renormalised), capped
    by the worst dimension when that one is below ``floor``."""
    dims = [k for k in DIMENSIONS if k in scores and scores[k] is not None]
    if not dims:
        return 1.0
    w = weights or {k: 1.0 for k in dims}
    z = sum(w.get(k, 0.0) for k in dims) or 1.0
    s = sum(w.get(k, 0.0) * float(scores[k]) for k in dims) / z
    worst = min(float(scores[k]) for k in dims)
    return min(s, worst) if worst < floor else s


def tradeoff(performance: float, scores: Mapping[str, float], context: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """R of Eq. 19 with its parts: ``reward``, ``safety``, ``lambda``, ``weights``."""
    w = adaptive_weights(context)
    lam = trade_off_lambda(context)
    s = safety_score(scores, w, float((context or {}).get("floor", DEFAULTS["floor"])))
    perf = min(1.0, max(0.0, float(performance)))
    return {"reward": (1.0 - lam) * perf + lam * s, "safety": s, "lambda": lam, "weights": w}
