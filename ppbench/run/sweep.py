"""``ppbench sweep``: a grid of configurations, each launched once under MPI, resumable.

A configuration whose result file already exists in the results directory (same config key)
is skipped unless ``redo`` is set, so a killed sweep continues where it stopped.
"""

from __future__ import annotations

import itertools
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
from tqdm import tqdm

from ppbench.config import ConfigError, RunConfig
from ppbench.measure.results import config_key
from ppbench.plan.schedules import SCHEDULES
from ppbench.run.launch import run_mpi

__all__ = ["sweep_configs", "recorded_keys", "run_sweep", "config_args"]


def sweep_configs(schedules, world_sizes, microbatches, models, sizes, workloads, dp: int = 1,
                  **common) -> tuple[list[RunConfig], list[str]]:
    """Valid configurations of the grid, and a note for each combination that was left out."""
    configs, notes, seen = [], [], set()
    for workload, schedule, world, m, model, size in itertools.product(workloads, schedules, world_sizes,
                                                                       microbatches, models, sizes):
        if workload == "synthetic":
            model, size = "mlp", "tiny"          # the model plays no part; keep one entry
        if world % dp:
            notes.append(f"world size {world} is not a multiple of dp={dp}")
            continue
        cfg = RunConfig(schedule=schedule, pp=world // dp, dp=dp, microbatches=m, model=model, size=size,
                        workload=workload, chunks=SCHEDULES[schedule].default_chunks if schedule in SCHEDULES else 1,
                        **common)
        try:
            cfg.validate(world_size=world)
        except ConfigError as exc:
            notes.append(f"{schedule} world={world} m={m} {model}/{size}: {exc}")
            continue
        if cfg not in seen:
            seen.add(cfg)
            configs.append(cfg)
    return configs, sorted(set(notes))


def recorded_keys(directory: str | Path) -> set[str]:
    """Config keys of the result files already in ``directory`` (reads only file metadata)."""
    import json

    keys = set()
    for path in Path(directory).rglob("*.parquet"):
        try:
            meta = pq.read_schema(path).metadata or {}
            keys.add(json.loads(meta[b"ppbench"])["config_key"])
        except Exception:  # noqa: BLE001 - unreadable files are the report's business, not the sweep's
            continue
    return keys


def config_args(cfg: RunConfig) -> list[str]:
    """The ``ppbench run`` options that reproduce ``cfg``."""
    args = []
    for name, value in cfg.to_dict().items():
        if name != "fault" or value:
            args += [f"--{name.replace('_', '-')}", str(value)]
    return args


def run_sweep(configs: list[RunConfig], results: str, redo: bool, timeout: float, show_progress: bool = True) -> int:
    """Run every configuration not yet recorded; returns the number that failed."""
    done = set() if redo else recorded_keys(results)
    todo = [c for c in configs if config_key(c.to_dict()) not in done]
    skipped = len(configs) - len(todo)
    if skipped:
        print(f"ppbench sweep: {skipped} of {len(configs)} configurations already in {results}/ (use --redo to rerun)")
    failures = 0
    bar = tqdm(todo, unit="run", disable=not show_progress, dynamic_ncols=True)
    for cfg in bar:
        bar.set_description(f"{cfg.schedule} p={cfg.pp} d={cfg.dp} m={cfg.microbatches} {cfg.workload}")
        start = time.monotonic()
        code = run_mpi(cfg.pp * cfg.dp, [sys.executable, "-m", "ppbench", "run", *config_args(cfg),
                                         "--results", results, "--quiet"], timeout)
        if code != 0:
            failures += 1
            tqdm.write(f"ppbench sweep: FAILED (exit {code}, {time.monotonic() - start:.1f} s): "
                       f"ppbench run {' '.join(config_args(cfg))}")
    print(f"ppbench sweep: {len(todo) - failures} run, {failures} failed, {skipped} already recorded")
    return failures
