"""Stop training on a non-finite loss, gradient norm or weights, whatever their source.

A NaN that reaches the loss poisons the weights at the next update and every checkpoint after
it, while the run would otherwise report success. The loop checks each step's reduced metrics
(identical on every rank, so all ranks stop together) and the weights before every save, so no
checkpoint of NaN weights is ever written.
"""

from __future__ import annotations

import math

from ufarsap_engine.errors import EngineFailure


class NonFiniteError(EngineFailure):
    """Training produced a NaN or infinity; the message names the step and the quantity."""


def _bad(v) -> bool:
    return isinstance(v, float) and not math.isfinite(v)


def check_step(metrics: dict, grad_norm_computed: bool) -> None:
    """Raise :class:`NonFiniteError` when the step's loss (or gradient norm) is not finite,
    naming the loss terms that are not finite either."""
    step = metrics.get("step")
    problems = []
    if _bad(metrics.get("loss")):
        problems.append(f"the loss (total objective) is {metrics['loss']}")
    if _bad(metrics.get("lm_loss")):
        problems.append(f"the LM loss is {metrics['lm_loss']}")
    if grad_norm_computed and _bad(metrics.get("grad_norm")):
        problems.append(f"the gradient norm is {metrics['grad_norm']}")
    if not problems:
        return
    terms = sorted(k for k, v in metrics.items() if k.startswith("loss.") and _bad(v))
    where = f" (terms not finite: {', '.join(terms)})" if terms else ""
    raise NonFiniteError(f"step {step}: {' and '.join(problems)}{where}; training stopped, "
                         "no checkpoint of these weights was written")


def check_weights(norm: float, step: int) -> None:
    """Raise before a checkpoint is saved when the weights' norm is not finite."""
    if not math.isfinite(norm):
        raise NonFiniteError(f"step {step}: the model weights are not finite (norm {norm}); training stopped "
                             "before saving them, no checkpoint of these weights was written")
