"""How a rank waits for a transfer: spin, then yield, then sleep, chosen from this machine's
real sleep granularity.

A sleep of 100 us really lasts longer (the kernel's timer slack: about 150 us on this project's
machine), and MPICH moves a message only inside an MPI call, so a rank that sleeps while its
message arrives learns of it late. A rank with a core of its own therefore first spins (tests
its transfers back to back) for a bounded time, then yields the core between tests for as long
again, then sleeps between tests. A rank that shares its core (ranks x threads above the cores)
sleeps between tests from the start: its neighbours need the core (yielding in a loop measured
slower than sleeping at 4 ranks on 2 cores).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

__all__ = ["WaitPolicy", "measure_sleep"]

#: a spin (and a yield phase) lasts this many measured sleeps, within the bounds below
_SPIN_SLEEPS = 2
_SPIN_BOUNDS = (50e-6, 2e-3)


def measure_sleep(requested: float, samples: int = 20) -> float:
    """Median seconds that ``time.sleep(requested)`` really takes here."""
    taken = []
    for _ in range(samples):
        start = time.perf_counter()
        time.sleep(requested)
        taken.append(time.perf_counter() - start)
    return sorted(taken)[len(taken) // 2]


@dataclass(frozen=True)
class WaitPolicy:
    """Seconds to spin, then to yield, before sleeping ``sleep`` seconds between tests."""

    spin: float = 0.0
    yield_for: float = 0.0
    sleep: float = 1e-4
    sleep_measured: float = float("nan")   # what one such sleep really took at start-up

    @classmethod
    def choose(cls, shares_core: bool, sleep: float = 1e-4) -> WaitPolicy:
        """Measure the sleep; spin only when this rank has its core to itself."""
        measured = measure_sleep(sleep)
        budget = min(max(_SPIN_SLEEPS * measured, _SPIN_BOUNDS[0]), _SPIN_BOUNDS[1])
        if shares_core:                     # the neighbours need the core: sleep between tests from the start
            return cls(spin=0.0, yield_for=0.0, sleep=sleep, sleep_measured=measured)
        return cls(spin=budget, yield_for=budget, sleep=sleep, sleep_measured=measured)

    def pause(self, waited: float) -> None:
        """Between two tests, ``waited`` seconds into a wait."""
        if waited < self.spin:
            return
        if waited < self.spin + self.yield_for:
            os.sched_yield()
        else:
            time.sleep(self.sleep)

    def describe(self) -> str:
        parts = [f"spin {self.spin * 1e6:.0f} us"] if self.spin else []
        if self.yield_for:
            parts.append(f"yield {self.yield_for * 1e6:.0f} us")
        parts.append(f"sleep {self.sleep * 1e6:.0f} us (measured {self.sleep_measured * 1e6:.0f} us)")
        return ", then ".join(parts)
