"""What each annotation worker process runs: one configured ``PluginHost`` per plugin set,
built once, and the engine's own ``score_batch`` on each batch it is handed.

Errors cross the process boundary as ``(exit_code, message)``: the engine's exception types
carry constructor arguments that do not survive pickling, and the CLI only needs the line.
"""

from __future__ import annotations

import signal
import time
from typing import Any

from ufarsap_engine.alignment.scoring import make_sample, score_batch
from ufarsap_engine.annotate.columns import HORIZON, cells_to_columns, served_scales
from ufarsap_engine.errors import EngineError
from ufarsap_engine.plugin_host import PluginHost
from ufarsap_engine.schemas import AlignmentState, Message, TextBatch

_PARAMS: dict[str, dict[str, Any]] = {}
_HOSTS: dict[tuple[str, ...], PluginHost] = {}


def init_worker(plugin_params: dict[str, dict[str, Any]]) -> None:
    """Pool initializer: remember the parameters; one thread per worker (the pool is the parallelism)."""
    global _PARAMS
    _PARAMS = plugin_params
    _HOSTS.clear()  # hosts configured with other parameters (an earlier in-process run)
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)  # one BLAS thread per worker: the workers are the parallelism


def host_for(plugins: tuple[str, ...]) -> PluginHost:
    """The configured host for ``plugins`` in this process (built on first use)."""
    host = _HOSTS.get(plugins)
    if host is None:
        host = PluginHost(list(plugins), strict=True)
        for name in host.names:
            host.call("ufarsap_configure", only=[name], params=_PARAMS.get(name, {}))
        _HOSTS[plugins] = host
    return host


def score_docs(plugins: tuple[str, ...], docs: list[tuple[str, str, str | None, list[dict] | None]]):
    """Score ``docs`` (id, text, prompt, messages) with ``plugins``: ``(columns, CPU seconds)`` or
    ``(None, (exit_code, message))`` on failure."""
    t0 = time.process_time()
    try:
        host = host_for(plugins)
        samples = [make_sample(i, t, prompt=p, messages=[Message(**m) for m in msgs] if msgs else None)
                   for i, t, p, msgs in docs]
        cells = score_batch(host, TextBatch(samples=samples), HORIZON, AlignmentState())
        cols = cells_to_columns(cells, {n: served_scales(host.info[n]) for n in plugins})
    except EngineError as exc:
        return None, (exc.exit_code, str(exc).splitlines()[0])
    except Exception as exc:  # a bug or environment failure in this worker
        return None, (1, f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}")
    return cols, time.process_time() - t0


_STARTUP_ERROR: tuple[int, str] | None = None


def init_pool_worker(plugin_params: dict[str, dict[str, Any]], plugins: tuple[str, ...], barrier) -> None:
    """Pool initializer: build and warm the host (lazy imports, first call) before any timed
    work, then wait for the other workers, so a pool's throughput is measured warm."""
    global _STARTUP_ERROR
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the pool
    init_worker(plugin_params)
    cols, err = score_docs(plugins, [("warm-up", "A short warm-up sentence.", None, None)])
    if cols is None:
        _STARTUP_ERROR = err
    try:
        barrier.wait(timeout=600)
    except Exception:  # another worker died; the pool reports it
        pass


def ready() -> tuple[int, str] | None:
    """A no-op task the parent waits on once per worker: the startup error, if any."""
    return _STARTUP_ERROR
