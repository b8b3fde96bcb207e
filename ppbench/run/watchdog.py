"""A per-step time limit: a rank whose step runs past it reports what it was doing and ends the job."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable

__all__ = ["StepWatchdog"]


class StepWatchdog:
    """``with StepWatchdog(limit, describe, abort):`` around one step.

    When ``limit`` seconds pass inside the block, a background thread prints
    ``describe()`` (which action this rank is in, which transfers it waits for), waits
    ``grace`` seconds so that the other ranks' watchdogs (started after the same barrier) print
    theirs too, and calls ``abort()`` (MPI_Abort): the job ends even if the main thread is stuck
    in MPI or in a computation. A limit of 0 disables it.
    """

    def __init__(self, limit: float, describe: Callable[[], str], abort: Callable[[], None], grace: float = 1.0):
        self.limit, self.describe, self.abort, self.grace = limit, describe, abort, grace
        self._timer: threading.Timer | None = None

    def __enter__(self) -> StepWatchdog:
        if self.limit > 0:
            self._timer = threading.Timer(self.limit, self._fire)
            self._timer.daemon = True
            self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def _fire(self) -> None:
        print(f"ppbench: step time limit of {self.limit:g} s exceeded: {self.describe()}", file=sys.stderr, flush=True)
        time.sleep(self.grace)
        self.abort()
