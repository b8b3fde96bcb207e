"""Schedules as files: PyTorch pipelining's CSV (one row per rank, one action per cell in its
action text, an empty cell for an idle slot; compute-only or with sends and receives) and
ppbench's JSON, which also states the placement and the microbatch count.

Reading never trusts the file: its size, rank count and action count are limited before parsing,
and every problem names the row (rank) and the position of the cell.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

from ppbench.plan.actions import Action, parse_action
from ppbench.plan.placement import Placement, infer_placement

__all__ = ["ScheduleFile", "ScheduleFileError", "read_schedule", "parse_schedule", "to_csv", "to_json",
           "schedule_record", "from_record", "schedule_label", "MAX_FILE_BYTES", "MAX_RANKS", "MAX_ACTIONS"]

MAX_FILE_BYTES = 64 * 2**20      # a schedule file larger than this is refused unread
MAX_RANKS = 4096                 # rows of a CSV file / entries of "ranks" (the --pp limit)
MAX_ACTIONS = 2_000_000          # cells of all rows together
JSON_FORMAT = "ppbench-schedule"


class ScheduleFileError(ValueError):
    """A schedule file that cannot be read; the message names the file, and the rank and position."""


@dataclass(frozen=True)
class ScheduleFile:
    """Per-rank action lists from a file, with the placement (stated, or implied by who computes
    what) and the number of microbatches (stated, or one more than the largest used)."""

    name: str
    ranks: tuple[tuple[Action, ...], ...]
    placement: Placement
    microbatches: int

    @property
    def has_communication(self) -> bool:
        return any(not a.is_compute for acts in self.ranks for a in acts)

    @property
    def p(self) -> int:
        return len(self.ranks)


def read_schedule(path: str | Path) -> ScheduleFile:
    """A schedule file, CSV or JSON (by its first character), checked for size before it is read."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise ScheduleFileError(f"{path}: not a regular file")
        if size > MAX_FILE_BYTES:
            raise ScheduleFileError(f"{path}: {size:,} bytes, more than the {MAX_FILE_BYTES:,} a schedule file "
                                    "may have")
        raw = path.read_bytes()
    except OSError as exc:
        raise ScheduleFileError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ScheduleFileError(f"{path}: not a text file (byte {exc.start} is not UTF-8); expected PyTorch's CSV "
                                "schedule format or ppbench's JSON") from None
    return parse_schedule(text, path.stem, str(path))


def parse_schedule(text: str, name: str = "schedule", where: str = "schedule") -> ScheduleFile:
    if text.lstrip().startswith("{"):
        return _from_json(text, name, where)
    return _from_csv(text, name, where)


def _from_csv(text: str, name: str, where: str) -> ScheduleFile:
    try:
        rows = []
        for row in csv.reader(io.StringIO(text)):
            rows.append(row)
            if len(rows) > MAX_RANKS:
                raise ScheduleFileError(f"{where}: more than {MAX_RANKS} rows (one per rank); allowed: 1..{MAX_RANKS}")
    except csv.Error as exc:
        raise ScheduleFileError(f"{where}: not a CSV schedule ({exc})") from None
    while rows and not any(cell.strip() for cell in rows[-1]):
        rows.pop()                                       # trailing blank lines
    ranks = _actions(rows, where)
    return _complete(name, ranks, None, None, where)


def _from_json(text: str, name: str, where: str) -> ScheduleFile:
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ScheduleFileError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != JSON_FORMAT:
        raise ScheduleFileError(f"{where}: JSON without \"format\": \"{JSON_FORMAT}\" is not a ppbench schedule")
    rows = doc.get("ranks")
    if not isinstance(rows, list) or not all(isinstance(r, list) and all(isinstance(c, str) for c in r) for r in rows):
        raise ScheduleFileError(f"{where}: \"ranks\" must be a list of lists of action texts")
    if len(rows) > MAX_RANKS:
        raise ScheduleFileError(f"{where}: {len(rows)} ranks; allowed: 1..{MAX_RANKS}")
    placement = None
    if "placement" in doc:
        stage_ranks = doc["placement"].get("stage_ranks") if isinstance(doc["placement"], dict) else None
        if not isinstance(stage_ranks, list) or not all(isinstance(r, int) and not isinstance(r, bool)
                                                        for r in stage_ranks):
            raise ScheduleFileError(f"{where}: \"placement\" must hold \"stage_ranks\", a list of ranks")
        try:
            placement = Placement(tuple(stage_ranks), str(doc["placement"].get("name", "custom")))
        except ValueError as exc:
            raise ScheduleFileError(f"{where}: {exc}") from None
    m = doc.get("microbatches")
    if m is not None and not (isinstance(m, int) and 1 <= m <= 65536):
        raise ScheduleFileError(f"{where}: \"microbatches\" must be an integer in 1..65536, got {m!r}")
    return _complete(str(doc.get("name", name)), _actions(rows, where), placement, m, where)


def _actions(rows: list[list[str]], where: str) -> list[list[Action]]:
    if not rows:
        raise ScheduleFileError(f"{where}: no rows; expected one row of actions per rank")
    if sum(len(row) for row in rows) > MAX_ACTIONS:
        raise ScheduleFileError(f"{where}: more than {MAX_ACTIONS:,} cells")
    ranks = []
    for r, row in enumerate(rows):
        acts = []
        for k, cell in enumerate(row):
            if not cell.strip():
                continue                                 # an idle slot
            try:
                acts.append(parse_action(cell))
            except ValueError as exc:
                raise ScheduleFileError(f"{where}: rank {r}, position {k}: {exc}") from None
        ranks.append(acts)
    return ranks


def _complete(name: str, ranks: list[list[Action]], placement: Placement | None, m: int | None,
              where: str) -> ScheduleFile:
    if placement is None:                                # the placement the compute actions imply
        try:
            placement = infer_placement(ranks)
        except ValueError as exc:
            raise ScheduleFileError(f"{where}: {exc}") from None
    if placement.p != len(ranks):
        raise ScheduleFileError(f"{where}: the placement spans {placement.p} ranks but the file has {len(ranks)}")
    used = max((a.mb for acts in ranks for a in acts), default=-1) + 1
    if m is not None and used > m:
        raise ScheduleFileError(f"{where}: microbatch {used - 1} is used but \"microbatches\" is {m}")
    return ScheduleFile(name, tuple(tuple(acts) for acts in ranks), placement, m or used)


def to_csv(ranks: list[list[Action]]) -> str:
    """PyTorch's CSV schedule format: one row per rank, one action per cell."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for acts in ranks:
        writer.writerow([str(a) for a in acts])
    return out.getvalue()


def to_json(ranks: list[list[Action]], placement: Placement, microbatches: int, name: str) -> str:
    """ppbench's JSON schedule: the actions in PyTorch's text, with the placement and microbatch count."""
    return json.dumps({"format": JSON_FORMAT, "version": 1, "name": name, "microbatches": microbatches,
                       "placement": placement.to_dict(), "ranks": [[str(a) for a in acts] for acts in ranks]})


def schedule_record(schedule: ScheduleFile) -> dict:
    """What a result file keeps of a schedule from a file, so the run can be simulated and drawn
    later whatever happens to the file: its name, placement, compute actions and their digest."""
    ranks = [[str(a) for a in acts if a.is_compute] for acts in schedule.ranks]
    digest = hashlib.sha1(json.dumps([ranks, list(schedule.placement.stage_ranks)]).encode()).hexdigest()[:16]
    return {"name": schedule.name, "microbatches": schedule.microbatches,
            "placement": list(schedule.placement.stage_ranks), "ranks": ranks, "digest": digest}


def from_record(record: dict) -> ScheduleFile:
    """The schedule a result file recorded (:func:`schedule_record`)."""
    placement = Placement(tuple(record["placement"]), infer_placement(
        [[parse_action(a) for a in acts] for acts in record["ranks"]]).name)
    return ScheduleFile(record["name"], tuple(tuple(parse_action(a) for a in acts) for acts in record["ranks"]),
                        placement, record["microbatches"])


def schedule_label(config: dict, record: dict | None) -> str:
    """How reports name a run's schedule: the built-in's name, or ``file:NAME`` for a schedule file."""
    return f"file:{record['name']}" if record else config["schedule"]
