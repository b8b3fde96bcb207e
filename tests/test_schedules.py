"""Schedule structure, no MPI: literal plans, invariants, deadlock freedom, memory bounds."""

import json
from collections import Counter

import pytest

from ppbench.actions import Action, parse_action
from ppbench.cli import main
from ppbench.schedules import (SCHEDULES, add_communication, build_schedule, compute_order, peak_in_flight,
                               warmup_forwards)
from ppbench.simulator import Costs, DeadlockError, peer_rank, simulate

GRID = [(p, m) for p in range(1, 9) for m in range(1, 17)]


def plan(text: str) -> list[list[Action]]:
    """Rows of action strings, one row per rank, as in the pipeline diagram."""
    return [[parse_action(a) for a in row.split()] for row in text.strip().splitlines()]


def test_gpipe_plan_written_out():
    assert [compute_order("gpipe", 3, 4, r) for r in range(3)] == plan("""
        F0 F1 F2 F3 B0 B1 B2 B3
        F0 F1 F2 F3 B0 B1 B2 B3
        F0 F1 F2 F3 B0 B1 B2 B3
    """)


def test_1f1b_plan_written_out():
    assert [compute_order("1f1b", 4, 6, r) for r in range(4)] == plan("""
        F0 F1 F2 F3 B0 F4 B1 F5 B2 B3 B4 B5
        F0 F1 F2 B0 F3 B1 F4 B2 F5 B3 B4 B5
        F0 F1 B0 F2 B1 F3 B2 F4 B3 F5 B4 B5
        F0 B0 F1 B1 F2 B2 F3 B3 F4 B4 F5 B5
    """)


def test_naive_plan_with_communication_written_out():
    assert build_schedule("naive", 2, 2) == plan("""
        F0 SEND_F0 RECV_B0 B0 F1 SEND_F1 RECV_B1 B1
        RECV_F0 F0 B0 SEND_B0 RECV_F1 F1 B1 SEND_B1
    """)


@pytest.mark.parametrize("name", list(SCHEDULES))
@pytest.mark.parametrize("p,m", GRID)
def test_every_microbatch_forwarded_then_backwarded_once(name, p, m):
    for r in range(p):
        order = compute_order(name, p, m, r)
        forwards = [a.mb for a in order if a.op == "F"]
        backwards = [a.mb for a in order if a.op == "B"]
        assert sorted(forwards) == list(range(m)) and sorted(backwards) == list(range(m))
        position = {str(a): i for i, a in enumerate(order)}
        assert all(position[f"F{i}"] < position[f"B{i}"] for i in range(m))


@pytest.mark.parametrize("name", list(SCHEDULES))
@pytest.mark.parametrize("p,m", GRID)
def test_every_send_has_its_receive(name, p, m):
    ranks = build_schedule(name, p, m)
    sends = Counter((r, peer_rank(a, r, p)[0], a.direction, a.mb) for r, acts in enumerate(ranks) for a in acts if a.is_send)
    recvs = Counter((peer_rank(a, r, p)[0], r, a.direction, a.mb) for r, acts in enumerate(ranks) for a in acts if a.is_recv)
    assert sends == recvs
    assert sum(sends.values()) == 2 * m * (p - 1)   # one activation and one gradient per boundary and microbatch


@pytest.mark.parametrize("mode", ["blocking", "nonblocking"])
@pytest.mark.parametrize("name", list(SCHEDULES))
@pytest.mark.parametrize("p,m", GRID)
def test_no_deadlock_and_bubble_matches_theory(name, p, m, mode):
    result = simulate(build_schedule(name, p, m), Costs(fwd=1, bwd=2), mode=mode)
    theory = (p - 1) / p if name == "naive" else (p - 1) / (m + p - 1)
    for r in range(p):
        busy = sum(e.end - e.start for e in result.by_rank(r) if e.action.is_compute)
        assert 1 - busy / result.makespan == pytest.approx(theory, abs=1e-12)


@pytest.mark.parametrize("p,m", GRID)
def test_1f1b_warmup_and_peak_in_flight(p, m):
    for r in range(p):
        order = compute_order("1f1b", p, m, r)
        first_b = next(i for i, a in enumerate(order) if a.op == "B")
        assert warmup_forwards(p, m, r) == min(p - r - 1, m)
        assert order[:warmup_forwards(p, m, r)] == [Action("F", i) for i in range(min(p - r - 1, m))]
        # warm-up forwards, plus the first steady-state forward when any microbatch is left
        assert first_b == min(p - r, m)
        assert peak_in_flight(order) == min(p - r, m)


@pytest.mark.parametrize("p,m", GRID)
def test_gpipe_and_naive_peak_in_flight(p, m):
    for r in range(p):
        assert peak_in_flight(compute_order("gpipe", p, m, r)) == m
        assert peak_in_flight(compute_order("naive", p, m, r)) == 1


def test_naive_keeps_one_stage_busy_at_a_time():
    result = simulate(build_schedule("naive", 4, 3), Costs(fwd=1, bwd=2))
    spans = sorted((e.start, e.end) for e in result.events if e.action.is_compute)
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:]))


def test_deadlock_is_reported_with_the_stuck_actions():
    ranks = plan("""
        RECV_B0 F0 SEND_F0 B0
        RECV_F0 F0 B0 SEND_B0
    """)
    with pytest.raises(DeadlockError) as info:
        simulate(ranks)
    assert info.value.stuck == {0: "F0", 1: "F0"}
    assert "rank 0: RECV_B0 [F0] SEND_F0 B0" in str(info.value)


def test_unknown_schedule_and_bad_sizes_are_rejected():
    with pytest.raises(ValueError, match="unknown schedule 'zb'; allowed: naive, gpipe, 1f1b"):
        compute_order("zb", 2, 2, 0)
    with pytest.raises(ValueError, match="m=0"):
        compute_order("gpipe", 2, 0, 0)


def test_single_stage_needs_no_communication():
    assert add_communication(compute_order("1f1b", 1, 3, 0), 1, 0) == plan("F0 B0 F1 B1 F2 B2")[0]


def test_schedule_command_prints_json(capsys):
    assert main(["schedule", "1f1b", "--stages", "2", "--microbatches", "3", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schedule"] == "1f1b" and doc["stages"] == 2 and doc["microbatches"] == 3
    assert [f"{a['op']}{a['mb']}" for a in doc["ranks"][0]] == ["F0", "F1", "B0", "F2", "B1", "B2"]
    assert all(a["chunk"] == 0 for row in doc["ranks"] for a in row)


def test_schedule_command_prints_table_and_timeline(capsys):
    assert main(["schedule", "gpipe", "-p", "2", "-m", "2"]) == 0
    out = capsys.readouterr().out
    assert "rank 0: F0 F1 B0 B1" in out
    # F = 1 unit, B = 2: rank 0 idles from t=2 until rank 1's B0 ends at t=5
    assert "rank 0 |F0F1......B0B0B1B1|" in out
    assert "rank 1 |..F0F1B0B0B1B1....|" in out
