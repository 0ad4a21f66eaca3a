"""Pin a benchmark to one CPU core, so per-core rates are comparable between runs and machines."""

import os


def pin_one_core() -> None:
    """Run this process on its first allowed core (no-op where affinity cannot be set)."""
    if hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
        except OSError:
            pass
