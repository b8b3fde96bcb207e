"""The simulator's own speed: every schedule at p = 1024 stages, m = 4096 microbatches
(8 to 25 million compute actions), from building the arrays to the metrics.

Quick mode (``PPBENCH_BENCH_QUICK=1``) uses p = 128, m = 512.
"""

import os

QUICK = os.environ.get("PPBENCH_BENCH_QUICK", "") not in ("", "0")
P, M = (128, 512) if QUICK else (1024, 4096)


def _simulate(schedule, p, m, compile_above=20_000):
    from ppbench.sim.array_simulator import array_metrics, simulate_arrays
    from ppbench.cli import unit_costs
    from ppbench.plan.arrays import schedule_arrays

    v = 2 if schedule == "interleaved" else 1
    mode = "blocking" if schedule == "naive" else "nonblocking"        # as `ppbench run`'s transport auto
    sim = simulate_arrays(schedule_arrays(schedule, p, m, v), unit_costs(schedule, 1.0, 2.0, comm=0.1), mode,
                          compile_above=compile_above)
    return array_metrics(sim, compile_above=compile_above)


class Simulate:
    params = [["naive", "gpipe", "1f1b", "interleaved", "zb-h1"]]
    param_names = ["schedule"]
    number = 1
    repeat = 3
    timeout = 300

    def setup(self, schedule):
        _simulate(schedule, 4, 8, compile_above=0)        # compile the kernels, or load them from numba's cache

    def time_simulate(self, schedule):
        _simulate(schedule, P, M)
