"""SIGINT and SIGTERM: stop at a step boundary, save, say how to resume.

A process that handles signals (:func:`signals_handled`; the ``run`` command and the training
loop install it) reacts in one of three ways, depending on where it is:

- inside :func:`deferred` (the training loop): the signal is only recorded. The current step
  finishes; at the step boundary :func:`poll` combines every rank's record with one collective
  (MAX over the world), so all ranks stop after the same step; the loop saves a checkpoint,
  writes the summary and raises :class:`Interrupted`. Repeated signals change nothing while a
  step or a save is under way (a launcher that forwards the signal may send it twice); SIGKILL
  still stops everything, and the previous checkpoint stays intact.
- inside :func:`forwarded` (the parent of ``torchrun``): the signal is passed on to the
  launcher, which passes it to every worker; the parent then waits for them.
- elsewhere (setting up, before any step): :class:`Interrupted` is raised at once; there is
  nothing to save yet.

:class:`Interrupted` exits with 128 + the signal number (130 for SIGINT, 143 for SIGTERM). Rank 0
of a ``torchrun`` world leaves ``OUT/interrupted.json`` for the launching process.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from contextlib import contextmanager
from pathlib import Path

from ufarsap_engine.errors import EngineError

SIGNALS = (signal.SIGINT, signal.SIGTERM)
RECORD = "interrupted.json"


class Interrupted(EngineError):
    """The run was stopped by a signal; ``step``/``checkpoint`` are None before training."""

    def __init__(self, signum: int, step: int | None = None, checkpoint: str | None = None):
        self.signum, self.step, self.checkpoint = int(signum), step, checkpoint
        self.exit_code = 128 + self.signum
        name = signal.Signals(self.signum).name
        if step is None:
            what = "before a step boundary; nothing new was saved"
        else:
            what = f"at step {step}; checkpoint {checkpoint} saved" if checkpoint else f"at step {step}"
        super().__init__(f"interrupted by {name} {what}")

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    def record(self) -> dict:
        return {"signum": self.signum, "step": self.step, "checkpoint": self.checkpoint}


class _State:
    signum: int | None = None
    deferring: int = 0
    forward_to: int | None = None
    installed: int = 0
    previous: dict = {}


_S = _State()


def _handler(signum, frame) -> None:
    if _S.forward_to is not None:
        _S.signum = _S.signum or signum
        try:
            os.kill(_S.forward_to, signum)
        except ProcessLookupError:
            pass
        return
    if _S.deferring:
        _S.signum = _S.signum or signum
        return
    raise Interrupted(signum)


@contextmanager
def signals_handled():
    """Install the handler for SIGINT and SIGTERM (main thread only; nested use is fine)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if not _S.installed:
        _S.previous = {s: signal.signal(s, _handler) for s in SIGNALS}
        _S.signum = None
    _S.installed += 1
    try:
        yield
    finally:
        _S.installed -= 1
        if not _S.installed:
            for s, h in _S.previous.items():
                signal.signal(s, h)
            _S.previous = {}


@contextmanager
def deferred():
    """Signals are only recorded in here; read them with :func:`requested` / :func:`poll`."""
    with signals_handled():
        _S.deferring += 1
        try:
            yield
        finally:
            _S.deferring -= 1


@contextmanager
def forwarded(pid: int):
    """Signals are passed on to process ``pid`` in here; :func:`requested` tells which came."""
    with signals_handled():
        saved, _S.forward_to = _S.forward_to, pid
        try:
            yield
        finally:
            _S.forward_to = saved


def requested() -> int | None:
    """The signal received by this process (None if none)."""
    return _S.signum


def poll(device, *flags: bool) -> tuple[int | None, ...]:
    """Collective at a step boundary: (the signal any rank received, then each of ``flags``
    true on any rank). Every rank gets the same answer, so all act at the same step."""
    import torch
    import torch.distributed as dist

    values = [_S.signum or 0] + [int(bool(f)) for f in flags]
    if dist.is_initialized() and dist.get_world_size() > 1:
        t = torch.tensor(values, dtype=torch.int64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        values = [int(x) for x in t.tolist()]
    return (values[0] or None, *(bool(v) for v in values[1:]))


def write_record(out_dir: str | os.PathLike, exc: Interrupted) -> None:
    out = Path(out_dir)
    tmp = out / f"{RECORD}.tmp"
    tmp.write_text(json.dumps(exc.record()))
    os.replace(tmp, out / RECORD)


def read_record(out_dir: str | os.PathLike) -> Interrupted | None:
    p = Path(out_dir) / RECORD
    try:
        return Interrupted(**json.loads(p.read_text()))
    except (OSError, ValueError, TypeError):
        return None
