"""Result files: one Parquet file per run, written atomically, read back defensively.

A file's rows are the run's events (one row per action of every rank in every measured step).
Its Parquet key-value metadata ``ppbench`` holds JSON: the schema version, the full
configuration, the environment, one metrics record per measured step, and a summary.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["SCHEMA_VERSION", "Run", "ResultFileError", "config_key", "write_run", "read_run", "load_runs",
           "environment"]

SCHEMA_VERSION = 1
_META_KEY = b"ppbench"


class ResultFileError(ValueError):
    """A file that is not a readable ppbench result of a schema this version understands."""


@dataclass
class Run:
    path: Path
    meta: dict            # schema, run_id, config_key, config, environment, steps, summary
    events: pd.DataFrame

    @property
    def config(self) -> dict:
        return self.meta["config"]


def config_key(config: dict) -> str:
    """Stable identity of a configuration (what a sweep compares to skip finished work)."""
    ignored = {"fault"}
    canonical = json.dumps({k: v for k, v in sorted(config.items()) if k not in ignored}, sort_keys=True)
    return hashlib.sha1(canonical.encode()).hexdigest()[:16]


def write_run(directory: str | Path, config: dict, env: dict, steps: list[dict], summary: dict,
              events: pd.DataFrame) -> Path:
    """Write one run atomically (temporary file in the same directory, then rename)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
    meta = {"schema": SCHEMA_VERSION, "run_id": run_id, "config_key": config_key(config), "config": config,
            "environment": env, "steps": steps, "summary": summary}
    table = pa.Table.from_pandas(events, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), _META_KEY: json.dumps(meta).encode()})
    name = (f"{run_id}-{config['schedule']}-pp{config['pp']}-dp{config['dp']}-m{config['microbatches']}-"
            f"{config['workload']}.parquet")
    final = directory / name
    partial = directory / f".{name}.partial"
    pq.write_table(table, partial)
    with open(partial, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(partial, final)
    return final


def read_run(path: str | Path) -> Run:
    """Read one result file; raise ResultFileError saying why it is not usable."""
    path = Path(path)
    try:
        table = pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several kinds for broken files
        raise ResultFileError(f"{path}: not a readable Parquet file ({type(exc).__name__}: {exc})") from exc
    raw = (table.schema.metadata or {}).get(_META_KEY)
    if raw is None:
        raise ResultFileError(f"{path}: not a ppbench result (no ppbench metadata)")
    try:
        meta = json.loads(raw)
        schema = int(meta["schema"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ResultFileError(f"{path}: ppbench metadata is damaged ({exc})") from exc
    if schema > SCHEMA_VERSION:
        raise ResultFileError(f"{path}: schema version {schema} is newer than this ppbench understands "
                              f"({SCHEMA_VERSION}); upgrade ppbench to read it")
    return Run(path, meta, table.to_pandas())


def load_runs(directory: str | Path) -> tuple[list[Run], list[str]]:
    """Every readable run under ``directory`` (recursively) and a warning per skipped file."""
    runs, skipped = [], []
    for path in sorted(Path(directory).rglob("*.parquet")):
        try:
            runs.append(read_run(path))
        except ResultFileError as exc:
            skipped.append(f"skipped {exc}")
    return runs, skipped


def environment(comm) -> dict:
    """Where a run ran: versions, host, cores, MPI library, device, oversubscription."""
    import mpi4py
    import numpy
    import torch
    from mpi4py import MPI

    from ppbench import __version__

    local = comm.Split_type(MPI.COMM_TYPE_SHARED)
    ranks_here = local.Get_size()
    local.Free()
    hosts = sorted(set(comm.allgather(socket.gethostname())))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "ppbench": __version__, "torch": torch.__version__, "mpi4py": mpi4py.__version__,
        "numpy": numpy.__version__, "pandas": pd.__version__, "python": os.sys.version.split()[0],
        "mpi_library": MPI.Get_library_version().splitlines()[0].strip(),
        "hosts": hosts, "host": hosts[0] if len(hosts) == 1 else f"{len(hosts)} hosts",
        "cores": cores, "world_size": comm.Get_size(), "ranks_per_host": ranks_here,
        "oversubscribed": ranks_here > (cores or 1),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
