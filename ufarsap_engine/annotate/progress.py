"""Progress of an annotation: a rich bar on a terminal, plain lines otherwise (logs, CI)."""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Callable, Iterator


@contextlib.contextmanager
def progress_reporter(enabled: bool = True, stream=None) -> Iterator[Callable[[int, int], None]]:
    """Yield ``update(done, total)``: a rich bar when ``stream`` (default stderr) is a TTY,
    else one line per 10% of the work (and at the end)."""
    stream = stream or sys.stderr
    if not enabled:
        yield lambda done, total: None
        return
    if stream.isatty():
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        with Progress(TextColumn("[bold]annotate"), BarColumn(), MofNCompleteColumn(), TextColumn("documents"),
                      TimeElapsedColumn(), TimeRemainingColumn(), console=Console(file=stream)) as bar:
            task = bar.add_task("annotate", total=None)
            yield lambda done, total: bar.update(task, completed=done, total=total)
        return
    first: list[float] = []  # (time, done) of the first update: the rate leaves out start-up
    last = [-1]

    def update(done: int, total: int) -> None:
        now = time.perf_counter()
        if not first:
            first.extend((now, done))
        tenth = 10 * done // max(1, total)
        if tenth > last[0] or done == total:
            last[0] = tenth
            rate = f", {(done - first[1]) / (now - first[0]):.0f}/s" if now > first[0] else ""
            print(f"annotate: {done}/{total} documents ({100 * done // max(1, total)}%{rate})",
                  file=stream, flush=True)
    yield update
