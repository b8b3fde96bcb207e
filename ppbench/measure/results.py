"""Result files: one Parquet file per run, written atomically, read back defensively.

A file's rows are the run's events (one row per action of every rank in every measured step).
Its Parquet key-value metadata ``ppbench`` holds JSON: the schema version, the full
configuration, the environment, one metrics record per measured step, and a summary.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import stat
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ppbench.plan.files import schedule_label

__all__ = ["atomic_write", "SCHEMA_VERSION", "Run", "ResultFileError", "config_key", "write_run", "read_run",
           "load_runs", "run_key",
           "upgrade_events", "remove_stale_partials", "alive", "result_files", "metadata_problem"]

#: 2: events name the ``stage`` (schema 1 named the rank-local ``chunk``) and the split backward's
#: first half is ``I`` (schema 1 called it ``B``); :func:`upgrade_events` reads schema 1.
SCHEMA_VERSION = 2
_META_KEY = b"ppbench"


_NUMBER = (int, float)
#: what a result file's metadata must hold, and of what type, for the report and the calibration to use it
REQUIRED = {
    "run_id": str, "config_key": str, "config": dict, "environment": dict, "steps": list, "summary": dict,
    "config.schedule": str, "config.pp": int, "config.dp": int, "config.microbatches": int, "config.workload": str,
    "config.transport": str, "config.model": str, "config.size": str, "config.dtype": str,
    "environment.host": str, "environment.cores": int, "environment.device": str, "environment.mpi_library": str,
    "environment.oversubscribed": bool, "environment.torch": str, "environment.mpi4py": str,
    "summary.peak_in_flight": list, "summary.peak_saved_bytes": list, "summary.step_time_median": _NUMBER,
    "summary.bubble_mean_median": _NUMBER, "summary.overlap_median": _NUMBER,
}
#: what every entry of ``steps`` must hold
REQUIRED_STEP = ("step_time", "throughput", "bubble_mean", "bubble_max", "utilization", "overlap", "exposed_comm")
#: the events table's columns
REQUIRED_EVENTS = ("step", "rank", "op", "stage", "mb", "start", "end", "peer", "tag", "nbytes")


def metadata_problem(meta: object) -> str | None:
    """Why ``meta`` is not usable result metadata (the first missing or ill-typed field), or None."""
    if not isinstance(meta, dict):
        return f"metadata is a {type(meta).__name__}, not an object"
    for path, kind in REQUIRED.items():
        node: object = meta
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                return f"metadata lacks {path}"
            node = node[part]
        if not isinstance(node, kind) or (kind is int and isinstance(node, bool)):
            expected = getattr(kind, "__name__", "number")
            return f"metadata field {path} is {type(node).__name__} {node!r:.40}, expected {expected}"
    record = meta.get("schedule")
    if record is not None and not (isinstance(record, dict) and isinstance(record.get("ranks"), list)
                                   and isinstance(record.get("placement"), list)
                                   and isinstance(record.get("name"), str)
                                   and isinstance(record.get("microbatches"), int)):
        return "metadata field schedule is not a schedule record (name, microbatches, placement, ranks)"
    for i, step in enumerate(meta["steps"]):
        if not isinstance(step, dict):
            return f"metadata steps[{i}] is not an object"
        for key in REQUIRED_STEP:
            if not isinstance(step.get(key), _NUMBER) or isinstance(step.get(key), bool):
                return f"metadata steps[{i}].{key} is missing or not a number"
    return None


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

    @property
    def label(self) -> str:
        """The schedule's name in reports: the built-in's, or ``file:NAME`` for a schedule file."""
        return schedule_label(self.config, self.meta.get("schedule"))


def config_key(config: dict) -> str:
    """Stable identity of a configuration (what a sweep compares to skip finished work)."""
    ignored = {"fault", "stall_timeout"}     # what does not change the measurement
    defaults = {"threads": 0, "serial_steps": 0, "layers": 0, "width": 0, "heads": 0, "embd": 0, "context": 0,
                "vocab": 0, "split": ""}              # fields added later, left out at their default: older keys hold
    canonical = json.dumps({k: v for k, v in sorted(config.items())
                            if k not in ignored and not (k in defaults and v == defaults[k])}, sort_keys=True)
    return hashlib.sha1(canonical.encode()).hexdigest()[:16]


def atomic_write(path: str | Path, write) -> Path:
    """Call ``write(temporary_path)``, then rename the temporary file to ``path``: readers see the whole
    file or none. The temporary name is hidden and names this host and process."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.{socket.gethostname()}-{os.getpid()}.partial")
    try:
        write(partial)
        with open(partial, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(partial, path)
    except BaseException:
        if not isinstance(sys.exc_info()[1], KeyboardInterrupt):
            partial.unlink(missing_ok=True)
        raise
    return path


def record_key(config: dict, schedule: dict | None) -> str:
    """The key a run is recorded under: its configuration and, for a schedule file, the digest of
    the actions the file held (so an edited file is a new configuration)."""
    return config_key({**config, "schedule_digest": schedule["digest"]} if schedule else config)


def run_key(cfg) -> str:
    """:func:`record_key` of a run of ``cfg`` (a RunConfig): what a sweep compares to skip finished work."""
    return record_key(cfg.to_dict(), cfg.schedule_record())


def write_run(directory: str | Path, config: dict, env: dict, steps: list[dict], summary: dict,
              events: pd.DataFrame, schedule: dict | None = None) -> Path:
    """Write one run atomically (temporary file in the same directory, then rename). ``schedule``:
    the record of a schedule file (:func:`ppbench.plan.files.schedule_record`); its digest joins the key."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
    meta = {"schema": SCHEMA_VERSION, "run_id": run_id, "config_key": record_key(config, schedule), "config": config,
            "environment": env, "steps": steps, "summary": summary, **({"schedule": schedule} if schedule else {})}
    table = pa.Table.from_pandas(events, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), _META_KEY: json.dumps(meta).encode()})
    label = f"file-{re.sub(r'[^A-Za-z0-9_.-]', '_', schedule['name'])}" if schedule else config["schedule"]
    name = f"{run_id}-{label}-pp{config['pp']}-dp{config['dp']}-m{config['microbatches']}-{config['workload']}.parquet"
    return atomic_write(directory / name, lambda partial: pq.write_table(table, partial))


def remove_stale_partials(directory: str | Path) -> list[Path]:
    """Delete the ``.partial`` files of writers that no longer run (killed mid-write) on this host;
    a writer that is alive, or on another host, keeps its file. Returns what was removed."""
    removed = []
    directory = Path(directory)
    if not directory.is_dir():
        return removed
    marker = f".{socket.gethostname()}-"          # host names may hold dots: match this host's marker
    for path in directory.glob(".*.partial"):
        stem = path.name[:-len(".partial")]
        at = stem.rfind(marker)
        pid = stem[at + len(marker):] if at >= 0 else ""
        if pid.isdigit() and not alive(int(pid)):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def alive(pid: int) -> bool:
    """Whether process ``pid`` of this host still runs."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_run(path: str | Path) -> Run:
    """Read one result file; raise ResultFileError saying why it is not usable."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise ResultFileError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(mode):
        raise ResultFileError(f"{path}: not a regular file (a directory is a Parquet dataset, not a result)")
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
    problem = metadata_problem(meta)
    if problem:
        raise ResultFileError(f"{path}: {problem}")
    events = table.to_pandas()
    events = upgrade_events(events, meta["config"]) if schema < 2 else events
    missing = [c for c in REQUIRED_EVENTS if c not in events]
    if missing:
        raise ResultFileError(f"{path}: events table lacks column(s) {', '.join(missing)}")
    return Run(path, meta, events)


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


def result_files(directory: str | Path) -> tuple[list[Path], list[str]]:
    """The regular ``*.parquet`` files under ``directory`` (recursively, hidden ones and links left
    out), and why each other candidate was not taken: a symbolic link is never followed (out of the
    directory, or into a loop), a directory named ``*.parquet`` (a Parquet dataset) is not a result."""
    found, skipped = [], []
    for top, dirs, files in os.walk(directory, followlinks=False):
        for name in sorted(dirs):
            path = Path(top) / name
            if path.is_symlink():
                skipped.append(f"skipped {_shown(path)}: symbolic link to a directory, not followed")
                dirs.remove(name)
            elif name.endswith(".parquet"):
                skipped.append(f"skipped {_shown(path)}: a directory (a Parquet dataset?), not a result file")
                dirs.remove(name)
        dirs.sort()
        for name in sorted(files):
            path = Path(top) / name
            if not name.endswith(".parquet") or name.startswith("."):
                continue
            if path.is_symlink():
                skipped.append(f"skipped {_shown(path)}: symbolic link, not followed")
            elif not stat.S_ISREG(os.lstat(path).st_mode):
                skipped.append(f"skipped {_shown(path)}: not a regular file")
            else:
                found.append(path)
    return found, skipped


def _shown(path: Path) -> str:
    """A path printable whatever bytes its name holds."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def load_runs(directory: str | Path) -> tuple[list[Run], list[str]]:
    """Every readable run under ``directory`` (recursively) and a warning per skipped file."""
    paths, skipped = result_files(directory)
    runs = []
    for path in paths:
        try:
            runs.append(read_run(path))
        except ResultFileError as exc:
            skipped.append(f"skipped {_shown(Path(str(exc).partition(': ')[0]))}: {str(exc).partition(': ')[2]}")
        except OSError as exc:
            skipped.append(f"skipped {_shown(path)}: cannot be read ({exc.strerror or exc})")
    return runs, skipped
