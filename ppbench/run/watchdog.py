"""Time limits inside a step: a rank past them reports what it was doing and ends the job."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable

__all__ = ["StepWatchdog"]


class StepWatchdog:
    """One per rank; ``with watchdog.step():`` around each step.

    Fires when a step has run ``limit`` seconds (0: no limit), or when ``last_progress()`` (the
    monotonic time this rank last started an action) is ``stall`` seconds old during a step (0:
    never). Firing prints ``describe()`` (which action this rank is in, which transfers it waits
    for), waits ``grace`` seconds so the other ranks' watchdogs print theirs too, and calls
    ``abort()`` (MPI_Abort): the job ends even if the main thread is stuck in MPI or in a
    computation. One thread per rank, started with the first step and idle between steps.
    """

    def __init__(self, limit: float, describe: Callable[[], str], abort: Callable[[], None], grace: float = 1.0,
                 stall: float = 0.0, last_progress: Callable[[], float] | None = None):
        self.limit, self.describe, self.abort, self.grace = limit, describe, abort, grace
        self.stall, self.last_progress = (stall, last_progress) if last_progress else (0.0, None)
        self._started: float | None = None          # monotonic start of the current step; None between steps
        self._thread: threading.Thread | None = None

    def step(self) -> StepWatchdog:
        return self

    def __enter__(self) -> StepWatchdog:
        if self.limit > 0 or self.stall > 0:
            self._started = time.monotonic()
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, daemon=True, name="ppbench-watchdog")
                self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._started = None

    def _watch(self) -> None:
        interval = min(x for x in (self.limit / 4, self.stall / 4, 1.0) if x > 0)
        while True:
            time.sleep(interval)
            started, now = self._started, time.monotonic()
            if started is None:
                continue
            if self.limit > 0 and now - started > self.limit:
                return self._fire(f"step time limit of {self.limit:g} s exceeded")
            if self.stall > 0 and now - max(started, self.last_progress()) > self.stall:
                return self._fire(f"no action started for {self.stall:g} s (--stall-timeout)")

    def _fire(self, why: str) -> None:
        print(f"ppbench: {why}: {self.describe()}", file=sys.stderr, flush=True)
        time.sleep(self.grace)
        self.abort()
