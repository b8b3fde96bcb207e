"""Result files: one Parquet file per run, written atomically, read back defensively.

A file's rows are the run's events (one row per action of every rank in every measured step).
Its Parquet key-value metadata ``ppbench`` holds JSON: the schema version, the full
configuration, the environment, one metrics record per measured step, and a summary.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["SCHEMA_VERSION", "Run", "ResultFileError", "config_key", "write_run", "read_run", "load_runs",
           "upgrade_events"]

#: 2: events name the ``stage`` (schema 1 named the rank-local ``chunk``) and the split backward's
#: first half is ``I`` (schema 1 called it ``B``); :func:`upgrade_events` reads schema 1.
SCHEMA_VERSION = 2
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
    ignored = {"fault", "stall_timeout"}     # what does not change the measurement (and fields added later)
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
    events = table.to_pandas()
    return Run(path, meta, upgrade_events(events, meta["config"]) if schema < 2 else events)


def upgrade_events(events: pd.DataFrame, config: dict) -> pd.DataFrame:
    """Schema-1 events in schema 2's terms: stage = chunk x pp + rank (the looped placement, the
    only one schema 1 had), and B -> I in runs whose backward was split (those with W events)."""
    events = events.copy()
    if "chunk" in events:
        stage = events["chunk"] * config["pp"] + events["rank"] % config["pp"]
        events.insert(events.columns.get_loc("chunk"), "stage", stage.where(events["mb"] >= 0, -1))   # WAIT etc.: -1
        events = events.drop(columns="chunk")
    if (events["op"] == "W").any():
        events["op"] = events["op"].replace({"B": "I"})
    return events


def load_runs(directory: str | Path) -> tuple[list[Run], list[str]]:
    """Every readable run under ``directory`` (recursively) and a warning per skipped file."""
    runs, skipped = [], []
    for path in sorted(Path(directory).rglob("*.parquet")):
        try:
            runs.append(read_run(path))
        except ResultFileError as exc:
            skipped.append(f"skipped {exc}")
    return runs, skipped
