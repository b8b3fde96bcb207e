"""The simulator's own speed: every schedule at p = 1024 stages, m = 4096 microbatches
(8 to 25 million compute actions), from building the arrays to the metrics.

Quick mode (``PPBENCH_BENCH_QUICK=1``) uses p = 128, m = 512.
"""

import os

QUICK = os.environ.get("PPBENCH_BENCH_QUICK", "") not in ("", "0")
P, M = (128, 512) if QUICK else (1024, 4096)


class Simulate:
    params = [["naive", "gpipe", "1f1b", "interleaved", "zb-h1"]]
    param_names = ["schedule"]
    number = 1
    repeat = 3
    timeout = 300

    def setup(self, schedule):
        from ppbench.array_simulator import array_metrics, simulate_arrays   # compile (or load) the kernels once
        from ppbench.schedule_arrays import schedule_arrays

        small = simulate_arrays(schedule_arrays(schedule, 4, 8, 2 if schedule == "interleaved" else 1), compile_above=0)
        array_metrics(small, compile_above=0)

    def time_simulate(self, schedule):
        from ppbench.array_simulator import array_metrics, simulate_arrays
        from ppbench.cli import unit_costs
        from ppbench.schedule_arrays import schedule_arrays

        v = 2 if schedule == "interleaved" else 1
        mode = "blocking" if schedule == "naive" else "nonblocking"
        array_metrics(simulate_arrays(schedule_arrays(schedule, P, M, v), unit_costs(schedule, 1.0, 2.0, comm=0.1), mode))
