"""``ppbench sweep``: a grid of configurations, each launched once under MPI, resumable.

A configuration whose result file already exists in the results directory (same config key)
is skipped unless ``redo`` is set, so a killed sweep continues where it stopped.
"""

from __future__ import annotations

import itertools
import os
import socket
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
from tqdm import tqdm

from ppbench.config import ConfigError, RunConfig
from ppbench.measure.results import alive, remove_stale_partials, run_key
from ppbench.plan.schedules import SCHEDULES
from ppbench.run.jobs import output_directory
from ppbench.run.launch import run_mpi
from ppbench.sim.validate import require_runnable

__all__ = ["sweep_configs", "recorded_keys", "run_sweep", "config_args", "claim", "remove_stale_claims"]


def sweep_configs(schedules, world_sizes, microbatches, models, sizes, workloads, dp: int = 1,
                  schedule_files=(), **common) -> tuple[list[RunConfig], list[str]]:
    """Valid configurations of the grid, and a note for each combination that was left out. A
    schedule file fixes its own ranks and microbatches: it joins every world size of pp x dp and
    every microbatch count that match it."""
    configs, notes, seen = [], [], set()
    entries = [(name, "") for name in schedules] + [("1f1b", path) for path in schedule_files]
    for workload, (schedule, path), world, m, model, size in itertools.product(workloads, entries, world_sizes,
                                                                               microbatches, models, sizes):
        if workload == "synthetic":
            model, size = "mlp", "tiny"          # the model plays no part; keep one entry
        if world % dp:
            notes.append(f"world size {world} is not a multiple of dp={dp}")
            continue
        chunks = SCHEDULES[schedule].default_chunks if schedule in SCHEDULES and not path else 1
        cfg = RunConfig(schedule=schedule, schedule_file=path, pp=world // dp, dp=dp, microbatches=m, model=model,
                        size=size, workload=workload, chunks=chunks, **common)
        try:
            cfg.validate(world_size=world)
            require_runnable(cfg)
        except ConfigError as exc:
            notes.append(f"{path or schedule} world={world} m={m} {model}/{size}: {exc}")
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


def claim(directory: str | Path, key: str) -> Path | None:
    """Take ``key``'s claim file in ``directory`` (created exclusively, holding host and pid), or None
    when a live process on this host holds it (another sweep runs that configuration). A claim
    whose holder is gone is taken over."""
    path = Path(directory) / f".{key}.claim"
    me = f"{socket.gethostname()} {os.getpid()}"
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            host, pid = _holder(path)
            here = host == socket.gethostname()
            if (here and pid is not None and alive(pid)) or (host and not here):
                return None
            path.unlink(missing_ok=True)              # stale: its sweep was killed
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(me)
        return path
    return None


def _holder(path: Path) -> tuple[str, int | None]:
    """(host, pid) written in a claim file; ("", None) when it is gone or unreadable, pid None when not a number."""
    try:
        host, _, pid = path.read_text().partition(" ")
    except OSError:
        return "", None
    return host, int(pid) if pid.isdigit() else None


def remove_stale_claims(directory: str | Path) -> list[Path]:
    """Remove claim files left by sweeps on this host that are no longer alive (a sweep killed just after
    its run finished leaves the claim of a configuration no later sweep needs to touch)."""
    removed = []
    for path in Path(directory).glob(".*.claim"):
        host, pid = _holder(path)
        if host == socket.gethostname() and pid is not None and not alive(pid):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def run_sweep(configs: list[RunConfig], results: str, redo: bool, timeout: float, show_progress: bool = True) -> int:
    """Run every configuration not yet recorded (nor claimed by a sweep running beside this one);
    returns the number that failed. A signal ends the current run's job and stops the sweep
    (:class:`~ppbench.run.launch.Interrupted`); run again, it resumes at that configuration.
    ``results`` is created if missing."""
    output_directory(results, "results")
    remove_stale_partials(results)
    remove_stale_claims(results)
    done = set() if redo else recorded_keys(results)
    todo = [c for c in configs if run_key(c) not in done]
    skipped = len(configs) - len(todo)
    if skipped:
        print(f"ppbench sweep: {skipped} of {len(configs)} configurations already in {results}/ (use --redo to rerun)")
    failures = busy = 0
    bar = tqdm(todo, unit="run", disable=not show_progress, dynamic_ncols=True)
    for cfg in bar:
        key = run_key(cfg)
        held = claim(results, key)
        if held is None or (not redo and key in recorded_keys(results)):   # another sweep has it, or did it
            busy += 1
            if held is not None:
                held.unlink(missing_ok=True)
            continue
        bar.set_description(f"{cfg.schedule_file or cfg.schedule} p={cfg.pp} d={cfg.dp} m={cfg.microbatches} "
                            f"{cfg.workload}")
        start = time.monotonic()
        try:
            code = run_mpi(cfg.pp * cfg.dp, [sys.executable, "-m", "ppbench", "run", *config_args(cfg),
                                             "--results", results, "--quiet"], timeout)
        finally:
            held.unlink(missing_ok=True)
        if code != 0:
            failures += 1
            tqdm.write(f"ppbench sweep: FAILED (exit {code}, {time.monotonic() - start:.1f} s): "
                       f"ppbench run {' '.join(config_args(cfg))}")
    print(f"ppbench sweep: {len(todo) - failures - busy} run, {failures} failed, {skipped} already recorded"
          + (f", {busy} left to another sweep in {results}/" if busy else ""))
    return failures
