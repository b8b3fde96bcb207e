"""The simulator's own speed: every schedule at p = 1024 stages, m = 4096 microbatches
(8 to 25 million compute actions), from building the arrays to the metrics.

Quick mode (``PPBENCH_BENCH_QUICK=1``) uses p = 128, m = 512.
"""

import os

QUICK = os.environ.get("PPBENCH_BENCH_QUICK", "") not in ("", "0")
P, M = (128, 512) if QUICK else (1024, 4096)


def _simulate(schedule, p, m):
    from ppbench.plan.arrays import schedule_arrays
    from ppbench.plan.schedules import SCHEDULES
    from ppbench.sim.array_simulator import array_metrics, simulate_arrays
    from ppbench.sim.costs import Costs

    v = SCHEDULES[schedule].default_chunks
    mode = "blocking" if schedule == "naive" else "nonblocking"        # as `ppbench run`'s transport auto
    return array_metrics(simulate_arrays(schedule_arrays(schedule, p, m, v), Costs(1.0, 2.0, 1.0, comm=0.1), mode))


class Simulate:
    params = [["naive", "gpipe", "1f1b", "interleaved", "zb-h1"]]
    param_names = ["schedule"]
    number = 1
    repeat = 3
    timeout = 300

    def setup(self, schedule):
        _simulate(schedule, 16, 1024)     # above the compile threshold: compile the kernels or load them

    def time_simulate(self, schedule):
        _simulate(schedule, P, M)
