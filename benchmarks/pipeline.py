"""Pipeline schedules swept over ranks ("GPUs"), microbatches, model sizes and workloads.

``setup_cache`` launches every MPI configuration once (through ``ppbench sweep``'s code, which
also writes ppbench result files) and returns their summaries; the ``track_*`` benchmarks only
look values up, so no configuration is launched twice. Result files go to
``$PPBENCH_RESULTS/asv-<time>/`` (default ``results/``), so ``ppbench report results/`` shows
what asv measured. ``PPBENCH_BENCH_QUICK=1`` (``nox -s bench``) shrinks the grid to a few minutes.

Every run measures its serial baseline too (efficiency against the limit for p stages); where
PyTorch has the schedule, the same configuration also runs with ``--impl torch`` and
``track_vs_pytorch`` is ppbench's iteration time over PyTorch's (below 1: ppbench is faster).

The model workload computes for real, so it is skipped (NotImplementedError) where it would put
more ranks than cores; the synthetic workload (sleeps of fixed length) covers those sizes.
"""

import os
import time
from pathlib import Path

QUICK = os.environ.get("PPBENCH_BENCH_QUICK", "") not in ("", "0")
SCHEDULES = ["gpipe", "1f1b"] if QUICK else ["naive", "gpipe", "1f1b", "zb-h1"]
WORLD_SIZES = [1, 2, 4] if QUICK else [1, 2, 4, 8]
MICROBATCHES = [4] if QUICK else [1, 4, 16]
SIZES = ["small"] if QUICK else ["small", "medium"]
WORKLOADS = ["model", "synthetic"]


def _config(schedule, world, m, size, workload, impl="ppbench"):
    from ppbench.config import RunConfig

    if workload == "synthetic":
        size = "tiny"
    return RunConfig(schedule=schedule, pp=world, microbatches=m, size=size, workload=workload, impl=impl,
                     dtype="float32", warmup=1, repeats=3 if QUICK else 5, serial_steps=0 if impl == "torch" else 2)


def _torch_twin(schedule, world, m, size, workload):
    """The same configuration run by PyTorch's schedule, or None where PyTorch has none (or refuses it)."""
    from ppbench.config import ConfigError

    try:
        return _config(schedule, world, m, size, workload, impl="torch").validate()
    except ConfigError:
        return None


def _skip_reason(schedule, world, m, size, workload):
    if workload == "synthetic" and size != SIZES[0]:
        return "the synthetic workload has no model size (measured once, under the first size)"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if workload == "model" and world > cores:
        return f"model workload on {world} ranks would oversubscribe this machine's cores; see the synthetic workload"
    if world > _config(schedule, world, m, size, workload).model_config().num_layers:
        return "more stages than model layers"
    return None


def _track(key, unit):
    """A track_ benchmark returning summary[key] (the largest stage's value for per-stage lists); NaN,
    which asv shows as n/a, where the configuration has none (no PyTorch twin for the synthetic workload)."""

    def track(self, cache, *params):
        if key not in self.summary:
            return float("nan")
        value = self.summary[key]
        return float(max(value) if isinstance(value, list) else value)

    track.unit = unit
    return track


class Pipeline:
    params = [SCHEDULES, WORLD_SIZES, MICROBATCHES, SIZES, WORKLOADS]
    param_names = ["schedule", "gpus", "microbatches", "size", "workload"]
    timeout = 3600
    number = 1
    repeat = 1

    def setup_cache(self):
        """Run every configuration once; return {param tuple: summary or the reason it is skipped}."""
        import itertools

        from ppbench.measure.results import config_key, load_runs
        from ppbench.run.sweep import run_sweep

        points = list(itertools.product(*self.params))
        skipped = {p: _skip_reason(*p) for p in points}
        configs = {p: _config(*p) for p in points if skipped[p] is None}
        twins = {p: t for p in configs if (t := _torch_twin(*p)) is not None}
        # asv runs benchmarks from a temporary directory: anchor the default at the repository
        base = Path(os.environ.get("PPBENCH_RESULTS", Path(__file__).resolve().parents[1] / "results")).resolve()
        out = base / f"asv-{time.strftime('%Y%m%d-%H%M%S')}"
        run_sweep([*configs.values(), *twins.values()], str(out), redo=True, timeout=900, show_progress=False)
        runs, _ = load_runs(out)
        by_key = {run.meta["config_key"]: run.meta["summary"] for run in runs}
        cache = {}
        for p in points:
            if skipped[p]:
                cache[p] = skipped[p]
                continue
            found = by_key.get(config_key(configs[p].to_dict()), "this configuration's run failed; see the log")
            twin = by_key.get(config_key(twins[p].to_dict())) if p in twins else None
            if isinstance(found, dict) and twin:
                found = {**found, "vs_pytorch": found["iteration_time_median"] / twin["iteration_time_median"]}
            cache[p] = found
        return cache

    def setup(self, cache, *params):
        """A dict lookup only: each parameter point runs in its own process, so nothing is imported."""
        found = cache[params]
        if isinstance(found, str):
            raise NotImplementedError(found)
        self.summary = found

    track_step_time = _track("step_time_median", "seconds")
    track_throughput = _track("throughput_median", "samples/s")
    track_bubble = _track("bubble_mean_median", "fraction")
    track_bubble_theory = _track("bubble_theory", "fraction")
    track_utilization = _track("utilization_median", "fraction")
    track_overlap = _track("overlap_median", "fraction")
    track_peak_activation_bytes = _track("peak_saved_bytes", "bytes")
    track_iteration_time = _track("iteration_time_median", "seconds")
    track_efficiency = _track("efficiency", "fraction of the serial limit")
    track_vs_pytorch = _track("vs_pytorch", "ratio (ppbench / PyTorch iteration time)")
