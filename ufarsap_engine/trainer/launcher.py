"""``torch.distributed.run`` with a quiet failure report.

Same command line as ``torchrun``. When a worker fails, torchrun itself raises
``ChildFailedError`` and prints a long traceback plus a failure table, even when the worker
already said what was wrong in one line (a user error, exit code 2). This wrapper runs
torchrun's ``run`` and turns that into the first failed worker's exit code, so the user sees
the worker's one line and the caller gets 2 for a user error, 1 (or the signal) otherwise.
A SIGINT/SIGTERM to the launcher is passed on to the workers (torchrun does that) and gives
128 + the signal number, without torchrun's traceback.
"""

from __future__ import annotations

import logging
import sys


def main(argv: list[str] | None = None) -> int:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    try:
        run(parse_args(argv))
    except SignalException as e:  # the workers got the signal too and stopped at a step boundary
        return 128 + int(e.sigval)
    except ChildFailedError as e:
        _, failure = e.get_first_failure()
        code = failure.exitcode
        return code if code > 0 else 128 + (-code if code < 0 else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
