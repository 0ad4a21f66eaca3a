"""Annotating ahead of the trainer: a run on raw data scores its corpus once, in the background.

One process (global rank 0) runs :func:`~ufarsap_engine.annotate.annotate` in a thread, with
its pool of worker processes, into the run's annotation directory, shards first that the
trainer needs first (the data order is known from the seed). Every rank's step reads finished
shards through :class:`~ufarsap_engine.annotate.table.AnnotationTable` and waits where the
annotation has not got that far yet; no rank, TP/PP or DP, calls a detector in its step. A
failure is written to ``DIR/annotate_error.json``, which ends the waiting readers with its line.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ufarsap_engine.annotate.table import ERROR_FILE, document_key


def need_order(ds, seed: int, consumed: int, steps_left: int, global_batch: int) -> list[str]:
    """Content hashes of the training documents in the order the remaining steps first use them
    (then every other document), from the same stream order the trainer draws its blocks in."""
    from ufarsap_engine.trainer.data import sample_order

    count = max(0, steps_left) * global_batch
    blocks = sample_order(ds.num_blocks, seed, consumed, min(count, 4 * ds.num_blocks))
    seen: dict[int, None] = {}
    for b in blocks:
        for d in np.unique(ds.doc_of[ds.block_slice(int(b))]).tolist():
            seen.setdefault(int(d), None)
    for d in range(len(ds.docs)):
        seen.setdefault(d, None)
    docs = ds.docs
    return [document_key(docs[d].text, docs[d].prompt, docs[d].messages) for d in seen]


class BackgroundAnnotation:
    """``annotate(root, plugins, data=...)`` in a daemon thread; :meth:`join` waits and re-raises."""

    def __init__(self, root: str | Path, plugins: list[str], plugin_params: dict[str, dict[str, Any]],
                 data: str | None, workers: int, order: list[str] | None):
        self.root = Path(root)
        self.error: BaseException | None = None
        self.summary: dict | None = None
        self._stop = threading.Event()
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / ERROR_FILE).unlink(missing_ok=True)
        self._thread = threading.Thread(target=self._run, name="ufarsap-annotate", daemon=True,
                                        args=(plugins, plugin_params, data, workers, order))
        self._thread.start()

    def _run(self, plugins, plugin_params, data, workers, order) -> None:
        from ufarsap_engine.annotate.pipeline import annotate
        from ufarsap_engine.errors import EngineError

        try:
            self.summary = annotate(self.root, plugins, data=data, workers=workers, plugin_params=plugin_params,
                                    need_first=order, note=lambda line: None, stop=self._stop.is_set)
        except BaseException as exc:  # recorded for the readers on every rank
            self.error = exc
            code = exc.exit_code if isinstance(exc, EngineError) else 1
            tmp = self.root / f".{ERROR_FILE}.tmp"
            tmp.write_text(json.dumps({"message": (str(exc).splitlines() or [type(exc).__name__])[0],
                                       "exit_code": code}))
            os.replace(tmp, self.root / ERROR_FILE)

    def stop(self) -> None:
        """Ask the annotation to return after the batches in flight."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> dict | None:
        self._thread.join(timeout)
        if self.error is not None:
            raise self.error
        return self.summary

    @property
    def running(self) -> bool:
        return self._thread.is_alive()
