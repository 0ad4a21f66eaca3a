"""CPU compatibility layer for Megatron-Core (development machines and CI only).

Megatron-Core assumes CUDA in a handful of places. On a machine whose torch has no CUDA, the
engine still has to train, checkpoint and generate (with the gloo backend) so that every
feature can be developed and tested without a GPU. :func:`apply_cpu_compat` installs the
smallest set of shims that was found sufficient (see ``/work/shared/notes/megatron-on-cpu.md``):

1. ``torch.cuda.current_device()`` returns ``"cpu"``: DDP grad buffers, pipeline receive
   buffers, the attention memory buffer and tensor-parallel gathers allocate with it.
2. A ``TorchFunctionMode`` rewrites ``device="cuda"`` keyword arguments and ``Tensor.cuda()``
   calls (optimizer, grad clipping, schedules, tied-embedding sync) to the CPU.
3. ``torch.cuda.synchronize`` / ``empty_cache`` become no-ops (pipeline p2p calls them).
4. Gradient clipping: Megatron's fp32 clip asserts ``torch.cuda.FloatTensor``; it is replaced by
   a plain scale-by-coefficient with the same maths (``max_norm / (norm + 1e-6)`` when < 1).
5. ``torch.cuda.Event`` becomes a wall-clock stub (Megatron timers).

Not needed here: Megatron's own inference engine (it would also need its ``is_cuda`` asserts in
``inference.communication_utils`` relaxed); the engine samples with ``generate.py`` instead.

It is applied only when ``torch.cuda.is_available()`` is False, so real runs (CUDA + NCCL) never
see any of it. It is idempotent and process-wide (the function mode is pushed once, for the
life of the process, and stays active in the thread that applied it).
"""

from __future__ import annotations

import contextlib
import time

import torch
from torch.overrides import TorchFunctionMode

_APPLIED = False
_MODE: "_CudaToCpuMode | None" = None


def _is_cuda_device(dev) -> bool:
    if isinstance(dev, str):
        return dev.startswith("cuda")
    if isinstance(dev, torch.device):
        return dev.type == "cuda"
    return False


class _CudaToCpuMode(TorchFunctionMode):
    """Rewrites CUDA device requests inside torch calls to the CPU."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.cuda:
            return args[0]
        dev = kwargs.get("device")
        if dev is not None and _is_cuda_device(dev):
            kwargs = dict(kwargs)
            kwargs["device"] = "cpu"
        if func is torch.Tensor.to and args and len(args) > 1 and _is_cuda_device(args[1]):
            args = (args[0], "cpu", *args[2:])
        return func(*args, **kwargs)


class _EventStub:
    """Stands in for ``torch.cuda.Event``: records wall-clock time."""

    def __init__(self, *args, **kwargs):
        self._t = None

    def record(self, *args, **kwargs):
        self._t = time.perf_counter()

    def synchronize(self):
        pass

    def wait(self, *args, **kwargs):
        pass

    def query(self):
        return True

    def elapsed_time(self, end: "_EventStub") -> float:
        return ((end._t or 0.0) - (self._t or 0.0)) * 1000.0


def _clip_grad_by_total_norm_cpu(parameters, max_norm, total_norm, use_decoupled_grad=False):
    """Same maths as Megatron's ``clip_grad_by_total_norm_fp32``, without the CUDA assert."""
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    attr = "decoupled_grad" if use_decoupled_grad else "grad"
    grads = [getattr(p, attr) for p in parameters if getattr(p, attr, None) is not None]
    clip_coeff = max_norm / (total_norm + 1.0e-6)
    if clip_coeff < 1.0:
        with torch.no_grad():
            for g in grads:
                g.mul_(clip_coeff)


@contextlib.contextmanager
def suspended():
    """Run a block without the function-mode shim (e.g. plain PyTorch code timed next to the
    engine in one process). The other shims stay; they only matter to Megatron code."""
    if _MODE is None:
        yield
        return
    _MODE.__exit__(None, None, None)
    try:
        yield
    finally:
        _MODE.__enter__()


def cpu_compat_active() -> bool:
    """True once :func:`apply_cpu_compat` has installed the shims in this process."""
    return _APPLIED


def apply_cpu_compat() -> bool:
    """Install the CPU shims if (and only if) CUDA is absent. Returns whether they are active.

    Call it before building any Megatron object. Safe to call more than once.
    """
    global _APPLIED, _MODE
    if torch.cuda.is_available():
        return False
    if _APPLIED:
        return True

    torch.cuda.current_device = lambda: "cpu"  # type: ignore[assignment]
    torch.cuda.synchronize = lambda *a, **k: None  # type: ignore[assignment]
    torch.cuda.empty_cache = lambda *a, **k: None  # type: ignore[assignment]
    torch.cuda.Event = _EventStub  # type: ignore[assignment,misc]

    # Grad clipping: patch where it is looked up (module globals), not only where defined.
    import megatron.core.optimizer.clip_grads as clip_grads
    import megatron.core.optimizer.optimizer as meg_optimizer

    clip_grads.clip_grad_by_total_norm_fp32 = _clip_grad_by_total_norm_cpu
    meg_optimizer.clip_grad_by_total_norm_fp32 = _clip_grad_by_total_norm_cpu

    _MODE = _CudaToCpuMode()
    _MODE.__enter__()
    _APPLIED = True
    return True

