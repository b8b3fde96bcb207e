"""Schedules from files: PyTorch's CSV and ppbench's JSON both ways, and a validator that says
exactly what is wrong (rank, position, action) without launching anything."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ppbench.plan.actions import Op
from ppbench.plan.comm import add_communication
from ppbench.plan.files import ScheduleFileError, parse_schedule, read_schedule, to_csv, to_json
from ppbench.plan.schedules import CHUNKED, SCHEDULES, build_schedule, compute_order, placement_for, schedule_problem
from ppbench.sim.validate import validate_schedule

ROOT = Path(__file__).resolve().parent.parent
BUILT_INS = [(n, p, m, 2 if n in CHUNKED else 1) for n in SCHEDULES for p in (1, 2, 3, 4) for m in (1, 2, 4, 8)
             if schedule_problem(n, p, m, 2 if n in CHUNKED else 1) is None]


@pytest.mark.parametrize("name,p,m,v", BUILT_INS, ids=[f"{n}-p{p}-m{m}" for n, p, m, v in BUILT_INS])
def test_every_built_in_round_trips_through_csv_and_json(name, p, m, v):
    compute = [compute_order(name, p, m, r, v) for r in range(p)]
    full = build_schedule(name, p, m, v)
    placement = placement_for(name, p, v)
    for ranks in (compute, full):
        from_csv = parse_schedule(to_csv(ranks))
        from_json = parse_schedule(to_json(ranks, placement, m, name))
        for read in (from_csv, from_json):
            assert [list(acts) for acts in read.ranks] == ranks
            assert read.placement.stage_ranks == placement.stage_ranks and read.microbatches == m
        assert from_json.name == name
        check = validate_schedule(from_csv)
        assert check.valid and check.problems == []
        assert "nonblocking" in check.runs_under
        if not SCHEDULES[name].needs_nonblocking:
            assert check.runs_under == ["blocking", "nonblocking"]


def test_pytorch_csv_with_idle_cells_reads_as_the_same_schedule():
    text = "0F0,0F1,,0B0,0B1\n,1F0,1B0,1F1,1B1\n"
    schedule = parse_schedule(text)
    assert [[str(a) for a in acts] for acts in schedule.ranks] == [["0F0", "0F1", "0B0", "0B1"],
                                                                   ["1F0", "1B0", "1F1", "1B1"]]
    assert schedule.ranks == parse_schedule(to_csv([list(a) for a in schedule.ranks])).ranks


def problems(text: str) -> str:
    return "\n".join(str(p) for p in validate_schedule(parse_schedule(text)).problems)


def test_a_missing_backward_is_named():
    assert problems("0F0,0F1,0B0\n1F0,1B0,1F1,1B1\n") == \
        "rank 0: stage 0, microbatch 1 has B x0, I x0, W x0; expected one B, or one I and one W"


def test_a_weight_gradient_before_its_input_gradient_is_named():
    assert problems("0F0,0W0,0I0\n1F0,1I0,1W0\n") == "rank 0, position 1, 0W0: runs before 0I0, which it needs"


def test_a_stage_on_two_ranks_is_refused_when_read():
    with pytest.raises(ScheduleFileError, match="stage 0 is computed on ranks 0 and 1; a stage lives on one rank"):
        parse_schedule("0F0,0B0\n0F1,0B1\n")


def test_a_receive_without_a_send_is_named():
    text = "0F0,0SEND_F0,0RECV_B0,0B0\n1RECV_F0,1RECV_F1,1F0,1B0,1SEND_B0\n"
    assert "rank 1, position 1, 1RECV_F1: no matching send on the other end" in problems(text)


def test_a_wait_cycle_that_deadlocks_only_when_transfers_block_is_shown_with_its_grid():
    # interleaved 1F1B, p = 2, m = 4, v = 2: fine with pre-posted receives, stuck if each transfer
    # must finish before the next computation
    plan = build_schedule("interleaved", 2, 4, 2)
    check = validate_schedule(parse_schedule(to_csv(plan)))
    assert check.valid and check.runs_under == ["nonblocking"]
    grid = check.deadlocks["blocking"]
    assert grid.startswith("schedule deadlocks: rank 0 at 0F3, rank 1 at 1F2")
    assert "rank 0: 0F0 0SEND_F0 0F1 0SEND_F1 2RECV_F0 2F0" in grid and "[0F3]" in grid and "[1F2]" in grid


def test_a_schedule_that_deadlocks_under_both_transports_is_invalid():
    # rank 0 wants B0 (after rank 1's B0) before sending F1; rank 1 wants F1 before its B0: a cycle
    check = validate_schedule(parse_schedule("0F0,0B0,0F1,0B1\n1F0,1F1,1B0,1B1\n"))
    assert not check.valid and check.problems == [] and set(check.deadlocks) == {"blocking", "nonblocking"}
    assert check.deadlocks["nonblocking"].startswith("schedule deadlocks: rank 0 at 0B0, rank 1 at 1F1")


def test_peak_in_flight_and_unit_bubble_are_reported():
    check = validate_schedule(parse_schedule(to_csv(build_schedule("1f1b", 4, 8))))
    assert check.peak_in_flight == [4, 3, 2, 1]
    assert check.bubble == pytest.approx(3 / 11)


def test_a_ten_thousand_row_file_is_refused(tmp_path):
    path = tmp_path / "huge.csv"
    path.write_text("0F0,0B0\n" * 10_000)
    with pytest.raises(ScheduleFileError, match=r"more than 4096 rows \(one per rank\); allowed: 1..4096"):
        read_schedule(path)


@pytest.mark.parametrize("content,message", [
    (b"\x89PNG\r\n\x1a\n\x00\x00", "not a text file (byte 0 is not UTF-8)"),
    (b"hello, world\n", "rank 0, position 0: cannot parse action 'hello'"),
    (b'{"ranks": [["0F0"]]}', 'JSON without "format": "ppbench-schedule" is not a ppbench schedule'),
    (b"", "no rows; expected one row of actions per rank"),
])
def test_files_that_are_not_schedules_are_named(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(ScheduleFileError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        read_schedule(path)


def ppbench(*args):
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "ppbench", *args], capture_output=True, text=True, timeout=60,
                          cwd=ROOT, env={"PPBENCH_MPIEXEC": "/nonexistent/mpiexec", "PATH": "/usr/bin:/bin"})
    return proc, time.monotonic() - start


def test_validate_command_explains_and_exits_2_without_launching_mpi(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("0F0,0W0,0I0\n1F0,1I0,1W0\n")
    proc, elapsed = ppbench("validate", str(bad))
    assert proc.returncode == 2 and "rank 0, position 1, 0W0: runs before 0I0, which it needs" in proc.stdout
    assert elapsed < 20
    good = tmp_path / "good.csv"
    good.write_text(to_csv(build_schedule("interleaved", 2, 4, 2)))
    proc, _ = ppbench("validate", str(good))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "valid: runs with the nonblocking transport; deadlocks with the blocking one" in proc.stdout
    assert "peak in-flight per rank [5, 3]" in proc.stdout


@pytest.mark.parametrize("fmt", ["torch-csv", "json"])
def test_schedule_command_exports_what_validate_reads(tmp_path, fmt):
    proc, _ = ppbench("schedule", "zb-h1", "-p", "3", "-m", "6", "--format", fmt)
    assert proc.returncode == 0, proc.stderr
    path = tmp_path / ("s.csv" if fmt == "torch-csv" else "s.json")
    path.write_text(proc.stdout)
    read = read_schedule(path)
    assert [list(acts) for acts in read.ranks] == [compute_order("zb-h1", 3, 6, r) for r in range(3)]
    assert any(a.op is Op.W for acts in read.ranks for a in acts)
    if fmt == "json":
        assert json.loads(proc.stdout)["placement"] == {"name": "looped", "stage_ranks": [0, 1, 2]}


def test_a_users_1f1b_file_runs_in_the_same_order_with_the_same_gradients(tmp_path):
    from ppbench.config import RunConfig
    from ppbench.run.check import check_in_process

    path = tmp_path / "mine.csv"
    path.write_text(to_csv([compute_order("1f1b", 2, 4, r) for r in range(2)]))
    result = check_in_process(RunConfig(schedule_file=str(path), pp=2, microbatches=4))
    assert result["passed"] and result["max_rel_err"] <= 1e-10
    plan = [add_communication(compute_order("1f1b", 2, 4, r), placement_for("1f1b", 2)) for r in range(2)]
    from ppbench.run.local import LocalPipeline

    pipe = LocalPipeline(RunConfig(schedule_file=str(path), pp=2, microbatches=4))
    assert [e.actions for e in pipe.executors] == plan


def test_the_audit_of_pytorchs_schedules_finds_what_is_known():
    from ppbench.run.audit import audit

    rows = {r["schedule"]: r for r in audit(2, 4)}
    assert len(rows) == 7
    gpipe = rows["ScheduleGPipe"]
    assert gpipe["valid"] and gpipe["equivalent"] and gpipe["vs_ppbench"] == "same actions in the same order"
    assert gpipe["notes"] == ["dropped FSDP-only REDUCE_GRAD"] and gpipe["bubble_unit_cost"] == pytest.approx(0.2)
    one_f_one_b = rows["Schedule1F1B"]                      # its description lists microbatches 1..m on the last rank
    assert not one_f_one_b["valid"] and one_f_one_b["problems"][0] == "uses microbatches 0..4, not 0..3"
    assert rows["ScheduleInterleaved1F1B"]["vs_ppbench"] == "same actions in the same order"
    assert rows["ScheduleLoopedBFS"]["vs_ppbench"] == "same actions in the same order"
    for name in ("ScheduleZBVZeroBubble", "ScheduleDualPipeV"):        # the V placement, run by ppbench
        assert rows[name]["placement"] == "v" and rows[name]["valid"] and rows[name]["equivalent"], rows[name]
        assert rows[name]["vs_ppbench"] == "same actions in the same order"
    assert rows["ScheduleDualPipeV"]["notes"] == ["6 overlapped F;B pairs run one after the other"]
    # ppbench list-schedules the interleaved zero bubble: another order, the same bubble and memory
    assert rows["ScheduleInterleavedZeroBubble"]["vs_ppbench"] == (
        "rank 0 position 5: ppbench 0F2, PyTorch 2W0; ppbench's zb-interleaved: bubble 0.040, peak in-flight [4, 3]")
    assert rows["ScheduleInterleavedZeroBubble"]["peak_in_flight"] == [4, 3]


@pytest.mark.parametrize("name,cls", [("zb-v", "ScheduleZBVZeroBubble"), ("dualpipev", "ScheduleDualPipeV"),
                                      ("zb-interleaved", "ScheduleInterleavedZeroBubble")])
def test_ppbench_zero_bubble_schedules_against_pytorchs(name, cls):
    """ZB-V and DualPipeV are PyTorch's orders action for action; the list-scheduled interleaved
    zero bubble has PyTorch's unit-cost bubble and peak in-flight microbatches on every rank."""
    from ppbench.run.audit import torch_orders
    from ppbench.sim.validate import validate_schedule

    compared = 0
    for p in (1, 2, 3, 4, 6):
        for m in range(1, 25):
            if schedule_problem(name, p, m) is not None:
                continue
            try:
                texts, _ = torch_orders(cls, p, m)
            except (ValueError, AssertionError):     # PyTorch refuses this (p, m)
                continue
            theirs = parse_schedule("\n".join(",".join(t) for t in texts), cls)
            ours = [compute_order(name, p, m, r) for r in range(p)]
            if name != "zb-interleaved":
                assert [[a for a in acts if a.is_compute] for acts in theirs.ranks] == ours, (p, m)
            else:
                mine = validate_schedule(parse_schedule(to_csv(ours)))
                other = validate_schedule(theirs)
                assert (mine.bubble, mine.peak_in_flight) == (pytest.approx(other.bubble), other.peak_in_flight), (p, m)
            compared += 1
    assert compared >= 25                      # (p, m) both accept


def test_the_audit_checks_gradients_under_mpi():
    from ppbench.run.audit import audit

    row, = audit(2, 4, mpi=True, classes=("ScheduleZBVZeroBubble",))
    assert row["checked"] == "MPI" and row["equivalent"] is True and row["max_rel_err"] < 1e-10


def test_a_result_keeps_the_schedule_file_it_ran():
    from ppbench.plan.files import from_record, schedule_record

    schedule = parse_schedule(to_csv(build_schedule("zb-h1", 3, 6)))
    record = schedule_record(schedule)
    back = from_record(json.loads(json.dumps(record)))                    # as stored in a result file
    assert [[a for a in acts if a.is_compute] for acts in schedule.ranks] == [list(acts) for acts in back.ranks]
    assert back.placement == schedule.placement and back.microbatches == 6 and record["name"] == "schedule"
    other = schedule_record(parse_schedule(to_csv([compute_order("1f1b", 3, 6, r) for r in range(3)])))
    assert other["digest"] != record["digest"] and len(record["digest"]) == 16
