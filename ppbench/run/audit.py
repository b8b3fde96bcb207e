"""``ppbench audit torch``: PyTorch pipelining's own schedule classes through ppbench's checks.

Each class's per-rank order comes from PyTorch's schedule visualizer (no process group needed).
FSDP-only actions (UNSHARD, RESHARD, REDUCE_GRAD) are dropped; DualPipeV's overlapped
``(F;B)OVERLAP_F_B`` pairs are run one after the other, as a CPU must. Then ppbench validates the
order (counts, order, placement, deadlocks under both transports), compares it action by action
with ppbench's own schedule of the same design where there is one, and, when valid, runs it
through ppbench's executor against single-process training: in process (ranks as threads), or
under MPI with ``mpi=True`` (``ppbench check --schedule-file`` on p ranks).
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
from pathlib import Path

from ppbench.config import ConfigError, RunConfig
from ppbench.plan.actions import Action
from ppbench.plan.files import ScheduleFile, ScheduleFileError, parse_schedule, to_json
from ppbench.plan.schedules import SCHEDULES, compute_order, schedule_problem
from ppbench.sim.validate import validate_schedule

__all__ = ["TORCH_CLASSES", "torch_orders", "audit"]

#: PyTorch schedule class -> ppbench's schedule of the same design (None: ppbench has none yet)
TORCH_CLASSES = {cls: next((name for name, spec in SCHEDULES.items() if spec.torch_class == cls), None)
                 for cls in ("ScheduleGPipe", "Schedule1F1B", "ScheduleInterleaved1F1B", "ScheduleLoopedBFS",
                             "ScheduleInterleavedZeroBubble", "ScheduleZBVZeroBubble", "ScheduleDualPipeV")}
_FSDP = re.compile(r"^\d+(UNSHARD|RESHARD|REDUCE_GRAD)\d*$")
_OVERLAP = re.compile(r"^\((.+);(.+)\)OVERLAP_F_B$")


def torch_orders(name: str, p: int, m: int) -> tuple[list[list[str]], list[str]]:
    """(each rank's action texts, notes on what was changed) for PyTorch's schedule class ``name``."""
    from torch.distributed.pipelining import schedules
    from torch.distributed.pipelining._schedule_visualizer import get_schedule_ops

    ops = get_schedule_ops(getattr(schedules, name), p, m)
    ranks, dropped, split = [], set(), 0
    for row in ops:
        texts = []
        for op in row:
            if op is None:
                continue
            text = str(op)
            pair = _OVERLAP.match(text)
            if pair:
                texts += [pair.group(1), pair.group(2)]
                split += 1
            elif _FSDP.match(text):
                dropped.add(_FSDP.match(text).group(1))
            else:
                texts.append(text)
        ranks.append(texts)
    notes = [f"dropped FSDP-only {', '.join(sorted(dropped))}"] if dropped else []
    if split:
        notes.append(f"{split} overlapped F;B pairs run one after the other")
    return ranks, notes


def _difference(ours: list[list[Action]], theirs: list[list[Action]]) -> str:
    for r, (a, b) in enumerate(zip(ours, theirs)):
        for k in range(max(len(a), len(b))):
            x = str(a[k]) if k < len(a) else "(end)"
            y = str(b[k]) if k < len(b) else "(end)"
            if x != y:
                return f"rank {r} position {k}: ppbench {x}, PyTorch {y}"
    return "same actions in the same order"


def audit(p: int, m: int, check: bool = True, model: str = "mlp", mpi: bool = False,
          classes: tuple[str, ...] = tuple(TORCH_CLASSES)) -> list[dict]:
    """One row per PyTorch schedule class at (p, m)."""
    rows = []
    for name in classes:
        ours_name = TORCH_CLASSES[name]
        row: dict = {"schedule": name, "p": p, "m": m, "notes": []}
        try:
            texts, row["notes"] = torch_orders(name, p, m)
        except Exception as exc:  # noqa: BLE001 - PyTorch refuses some (p, m); that is a finding too
            row.update(valid=False, problems=[f"PyTorch refuses p={p}, m={m}: {type(exc).__name__}: {exc}"])
            rows.append(row)
            continue
        try:
            schedule = parse_schedule("\n".join(",".join(t) for t in texts), name)
        except ScheduleFileError as exc:
            row.update(valid=False, problems=[str(exc)])
            rows.append(row)
            continue
        if schedule.microbatches != m:
            row["problems"] = [f"uses microbatches 0..{schedule.microbatches - 1}, not 0..{m - 1}"]
        result = validate_schedule(schedule)
        ranks = [[a for a in acts if a.is_compute] for acts in schedule.ranks]
        row.update(valid=result.valid and schedule.microbatches == m,
                   problems=row.get("problems", []) + [str(x) for x in result.problems[:3]],
                   runs_under=result.runs_under, peak_in_flight=result.peak_in_flight,
                   bubble_unit_cost=result.bubble, placement=schedule.placement.name,
                   stages=schedule.placement.num_stages)
        v = schedule.placement.num_stages // p
        if ours_name and schedule_problem(ours_name, p, m, v) is None:
            ours = [compute_order(ours_name, p, m, r, v) for r in range(p)]
            row["vs_ppbench"] = _difference(ours, ranks)
            if ours != ranks:
                mine = validate_schedule(ScheduleFile(ours_name, tuple(map(tuple, ours)), schedule.placement, m))
                row["vs_ppbench"] += (f"; ppbench's {ours_name}: bubble {mine.bubble:.3f}, "
                                      f"peak in-flight {mine.peak_in_flight}")
        else:
            row["vs_ppbench"] = "no ppbench version" if not ours_name else "ppbench refuses this (p, m)"
        if check and row["valid"]:
            row["equivalent"], row["max_rel_err"] = _check(schedule, p, m, model, mpi)
            row["checked"] = "MPI" if mpi else "in process"
        rows.append(row)
    return rows


def _check(schedule, p: int, m: int, model: str, mpi: bool) -> tuple[bool | None, float | None]:
    """Gradients of PyTorch's order run by ppbench's executor against one process."""
    from ppbench.run.check import check_in_process

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "torch.json"
        ranks = [list(acts) for acts in schedule.ranks]
        path.write_text(to_json(ranks, schedule.placement, schedule.microbatches, schedule.name))
        cfg = RunConfig(schedule_file=str(path), pp=p, microbatches=m, model=model, transport="nonblocking", steps=1)
        try:
            cfg.validate(world_size=p)
        except ConfigError:
            return None, None                      # e.g. more stages than the model has layers
        if not mpi:
            result = check_in_process(cfg)
            return result["passed"], result["max_rel_err"]
        return _check_under_mpi(cfg, Path(tmp))


def _check_under_mpi(cfg: RunConfig, tmp: Path) -> tuple[bool | None, float | None]:
    """``ppbench check --schedule-file`` on p ranks; its JSON verdict (None: the job failed)."""
    from ppbench.run.launch import run_mpi

    argv = [sys.executable, "-m", "ppbench", "check", "--schedule-file", cfg.schedule_file, "--pp", str(cfg.pp),
            "--microbatches", str(cfg.microbatches), "--model", cfg.model, "--steps", "1", "--json"]
    out = tmp / "check.json"
    with out.open("w") as stdout:
        status = run_mpi(cfg.pp, argv, timeout=300, stdout=stdout)
    try:
        result = json.loads(out.read_text().strip().splitlines()[-1])
    except (IndexError, ValueError):
        return None, None
    return (bool(result["passed"]) if status in (0, 1) else None), result.get("max_rel_err")
