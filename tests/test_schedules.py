"""Schedule structure, no MPI: literal plans, invariants, deadlock freedom, memory bounds."""

import json
from collections import Counter

import pytest
from plans import chunk_samples

from ppbench.cli import main
from ppbench.plan import theory
from ppbench.plan.actions import Action, Op, parse_action
from ppbench.plan.comm import add_communication, highest_tag, message_key, message_tag
from ppbench.plan.list_schedule import list_schedule
from ppbench.plan.placement import Placement
from ppbench.plan.schedules import (
    NEEDS_NONBLOCKING,
    SCHEDULES,
    build_schedule,
    compute_order,
    peak_in_flight,
    placement_for,
    schedule_problem,
    warmup_forwards,
)
from ppbench.sim.costs import Costs
from ppbench.sim.simulator import DeadlockError, simulate

GRID = [(p, m) for p in range(1, 9) for m in range(1, 17)]
# every valid (schedule, p, m, v) with p <= 8, m <= 16; looped multi-stage schedules with v = 2 and 3
CASES = [(name, p, m, v) for name in SCHEDULES for v in chunk_samples(name) for p, m in GRID
         if schedule_problem(name, p, m, v) is None]
case_ids = [f"{n}-p{p}-m{m}-v{v}" for n, p, m, v in CASES]


#: F = 1, B = 2; a split backward is I = W = 1 (ZB-H1's theory)
UNIT = Costs(fwd=1, bwd=2, wgrad=1)


def plan(text: str) -> list[list[Action]]:
    """Rows of actions, one row per rank, as in the pipeline diagram. PyTorch's action text
    (``2F0``); an action without a stage (``F0``) is on the stage numbered like its row."""
    return [[parse_action(a if a[0].isdigit() else f"{r}{a}") for a in row.split()]
            for r, row in enumerate(text.strip().splitlines())]


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


@pytest.mark.parametrize("name,p,m,v", CASES, ids=case_ids)
def test_every_microbatch_and_stage_runs_each_pass_once_in_order(name, p, m, v):
    placement = placement_for(name, p, v)
    for r in range(p):
        everything = sorted((s, i) for i in range(m) for s in placement.stages_of(r))
        order = compute_order(name, p, m, r, v)
        assert len(order) == len(set(order))
        assert sorted((a.stage, a.mb) for a in order if a.op is Op.F) == everything
        # each (stage, microbatch) goes backward once: a full B, or I then W (DualPipeV mixes both)
        assert sorted((a.stage, a.mb) for a in order if a.op in (Op.B, Op.I)) == everything
        assert sorted((a.stage, a.mb) for a in order if a.op is Op.W) == \
            sorted((a.stage, a.mb) for a in order if a.op is Op.I)
        position = {a: i for i, a in enumerate(order)}
        for s, i in everything:
            passes = (Op.F, Op.B) if Action(s, Op.B, i) in position else (Op.F, Op.I, Op.W)
            chain = [position[Action(s, op, i)] for op in passes]
            assert chain == sorted(chain)                       # F before I before W (or F before B)


@pytest.mark.parametrize("name,p,m,v", CASES, ids=case_ids)
def test_every_send_has_its_receive(name, p, m, v):
    ranks = build_schedule(name, p, m, v)
    stages = p * v
    sends = Counter(message_key(a, stages) for acts in ranks for a in acts if a.is_send)
    recvs = Counter(message_key(a, stages) for acts in ranks for a in acts if a.is_recv)
    assert sends == recvs
    assert max(sends.values(), default=1) == 1
    assert sum(sends.values()) == 2 * m * (stages - 1)   # one activation and one gradient per boundary and microbatch


@pytest.mark.parametrize("name,p,m,v", CASES, ids=case_ids)
def test_every_message_of_a_step_has_its_own_tag_and_both_ends_agree(name, p, m, v):
    """Tags must not rely on both ends posting colliding messages in the same order."""
    stages = p * v
    tags: dict[tuple, set[int]] = {}
    for acts in build_schedule(name, p, m, v):
        for a in acts:
            if not a.is_compute:
                tags.setdefault(message_key(a, stages), set()).add(message_tag(a, stages, m))
    assert all(len(both_ends) == 1 for both_ends in tags.values())
    assert len({t for (tag,) in tags.values() for t in [tag]}) == len(tags)
    assert max((t for (t,) in tags.values()), default=0) <= highest_tag(stages, m)


@pytest.mark.parametrize("name,p,m,v,mode", [(*c, mode) for c in CASES for mode in ("blocking", "nonblocking")
                                               if mode == "nonblocking" or c[0] not in NEEDS_NONBLOCKING],
                         ids=[f"{i}-{mode}" for i, c in zip(case_ids, CASES) for mode in ("blocking", "nonblocking")
                              if mode == "nonblocking" or c[0] not in NEEDS_NONBLOCKING])
def test_no_deadlock_and_bubble_matches_theory(name, p, m, v, mode):
    # interleaved and zb-h1 are only allowed with the non-blocking transport (see the deadlock test)
    result = simulate(build_schedule(name, p, m, v), UNIT, mode=mode)
    for r in range(p):
        busy = sum(e.end - e.start for e in result.by_rank(r) if e.action.is_compute)
        if not theory.closed_form_holds(name, p, m, v):   # few microbatches: never worse than 1F1B
            assert result.makespan <= 3 * v * (m + p - 1)
        else:
            assert 1 - busy / result.makespan == pytest.approx(theory.bubble_fraction(name, p, m, v), abs=1e-12)


@pytest.mark.parametrize("name,p,m,v", CASES, ids=case_ids)
def test_peak_in_flight_matches_theory(name, p, m, v):
    for r in range(p):
        peak, bound = peak_in_flight(compute_order(name, p, m, r, v)), theory.peak_in_flight(name, p, m, r, v)
        assert peak == bound if theory.closed_form_holds(name, p, m, v) else 1 <= peak <= bound


@pytest.mark.parametrize("p,m", GRID)
def test_1f1b_warmup_and_peak_in_flight(p, m):
    for r in range(p):
        order = compute_order("1f1b", p, m, r)
        first_b = next(i for i, a in enumerate(order) if a.op is Op.B)
        assert warmup_forwards(p, m, r) == min(p - r - 1, m)
        assert order[:warmup_forwards(p, m, r)] == [Action(r, Op.F, i) for i in range(min(p - r - 1, m))]
        # warm-up forwards, plus the first steady-state forward when any microbatch is left
        assert first_b == min(p - r, m)
        assert peak_in_flight(order) == min(p - r, m)


def test_naive_keeps_one_stage_busy_at_a_time():
    result = simulate(build_schedule("naive", 4, 3), UNIT)
    spans = sorted((e.start, e.end) for e in result.events if e.action.is_compute)
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:]))


def test_interleaved_deadlocks_if_every_transfer_must_finish_before_computing():
    with pytest.raises(DeadlockError) as info:
        simulate(build_schedule("interleaved", 2, 4, 2), mode="blocking")
    assert info.value.stuck == {0: "0F3", 1: "1F2"}


def test_deadlock_is_reported_with_the_stuck_actions():
    ranks = plan("""
        RECV_B0 F0 SEND_F0 B0
        RECV_F0 F0 B0 SEND_B0
    """)
    with pytest.raises(DeadlockError) as info:
        simulate(ranks)
    assert info.value.stuck == {0: "0F0", 1: "1F0"}
    assert "rank 0: 0RECV_B0 [0F0] 0SEND_F0 0B0" in str(info.value)


def test_unknown_schedule_and_bad_sizes_are_rejected():
    with pytest.raises(ValueError, match="unknown schedule 'zb'; allowed: naive, gpipe, 1f1b, interleaved, zb-h1"):
        compute_order("zb", 2, 2, 0)
    with pytest.raises(ValueError, match="m=0"):
        compute_order("gpipe", 2, 0, 0)
    with pytest.raises(ValueError, match="interleaved needs microbatches to be a multiple of the stages: m=6, p=4"):
        compute_order("interleaved", 4, 6, 0, 2)
    with pytest.raises(ValueError, match="1f1b places one model chunk per rank; chunks must be 1, got 2"):
        compute_order("1f1b", 4, 8, 0, 2)


def test_interleaved_plan_written_out():
    # p = 2, v = 2, m = 4: forwards cycle chunk 0 over microbatches 0-1, chunk 1 over 0-1, then 2-3
    assert [compute_order("interleaved", 2, 4, r, 2) for r in range(2)] == plan("""
        0F0 0F1 2F0 2F1 0F2 2B0 0F3 2B1 2F2 0B0 2F3 0B1 2B2 2B3 0B2 0B3
        1F0 1F1 3F0 3B0 3F1 3B1 1F2 1B0 1F3 1B1 3F2 3B2 3F3 3B3 1B2 1B3
    """)


def test_1f1b_with_recomputation_keeps_1f1bs_order():
    assert all(compute_order("1f1b-recompute", 4, 6, r) == compute_order("1f1b", 4, 6, r) for r in range(4))


def test_looped_bfs_plan_written_out():
    # p = 2, v = 2 (stages 0, 2 on rank 0; 1, 3 on rank 1), m = 3: all F of the first stage, then of the
    # second; then B of the second stage, last microbatch first, then of the first
    assert [compute_order("looped-bfs", 2, 3, r, 2) for r in range(2)] == plan("""
        0F0 0F1 0F2 2F0 2F1 2F2 2B2 2B1 2B0 0B2 0B1 0B0
        1F0 1F1 1F2 3F0 3F1 3F2 3B2 3B1 3B0 1B2 1B1 1B0
    """)


def test_zb_h1_plan_written_out():
    # W's wait while I's and F's are ready, at most p - 1 of them pending; they fill the cool-down
    assert [compute_order("zb-h1", 3, 6, r) for r in range(3)] == plan("""
        F0 F1 F2 I0 F3 I1 F4 I2 W0 F5 I3 W1 W2 I4 W3 W4 I5 W5
        F0 F1 I0 F2 I1 F3 I2 W0 F4 I3 W1 F5 I4 W2 W3 I5 W4 W5
        F0 I0 F1 I1 F2 I2 W0 F3 I3 W1 F4 I4 W2 F5 I5 W3 W4 W5
    """)


def test_zb_h2_plan_written_out():
    # ZB-H1's rules with a longer warm-up: rank r holds up to 2(p - r) - 1 microbatches between F and I
    assert [compute_order("zb-h2", 3, 6, r) for r in range(3)] == plan("""
        F0 F1 F2 F3 F4 I0 F5 I1 W0 I2 W1 W2 I3 W3 I4 W4 I5 W5
        F0 F1 F2 I0 F3 I1 F4 I2 W0 F5 I3 W1 W2 I4 W3 W4 I5 W5
        F0 I0 F1 I1 F2 I2 W0 F3 I3 W1 F4 I4 W2 F5 I5 W3 W4 W5
    """)


def test_zb_h2_hides_transfer_time_that_zb_h1_waits_for():
    # free transfers: both reach the flushed lower bound 3m + p - 1; a transfer of one F's length
    # costs ZB-H1 far more than ZB-H2, whose extra warm-up forwards keep every rank busy meanwhile
    p, m = 4, 16
    for comm, (h1, h2) in ((0.0, (51, 51)), (0.5, (56, 54)), (1.0, (70, 57))):
        costs = Costs(fwd=1, bwd=2, wgrad=1, comm=comm)
        assert simulate(build_schedule("zb-h1", p, m), costs, "nonblocking").makespan == h1
        assert simulate(build_schedule("zb-h2", p, m), costs, "nonblocking").makespan == h2


def test_zb_interleaved_plan_written_out():
    # p = 2, v = 2 (stages 0, 2 on rank 0; 1, 3 on rank 1), m = 4: F's and I's in interleaved 1F1B's
    # order (rounds of p microbatches per chunk), at most 2p - r pairs between F and I, W's in the gaps
    assert [compute_order("zb-interleaved", 2, 4, r, 2) for r in range(2)] == plan("""
        0F0 0F1 2F0 2F1 2I0 0F2 2I1 2W0 0I0 2W1 0I1 0W0 0F3 2F2 2F3 0W1 2I2 2W2 2I3 2W3 0I2 0W2 0I3 0W3
        1F0 1F1 3F0 3I0 3F1 3I1 3W0 1I0 3W1 1I1 1W0 1F2 1W1 1F3 3F2 3I2 3F3 3I3 3W2 1I2 3W3 1I3 1W2 1W3
    """)


def test_zb_v_plan_written_out():
    # V placement, p = 2: rank 0 holds stages 0 and 3 (input and loss), rank 1 stages 1 and 2
    assert [compute_order("zb-v", 2, 4, r) for r in range(2)] == plan("""
        0F0 0F1 0F2 3F0 3I0 3W0 3F1 3I1 3W1 0F3 0I0 0W0 3F2 3I2 3W2 0I1 0W1 3F3 3I3 3W3 0I2 0W2 0I3 0W3
        1F0 2F0 1F1 2F1 2I0 2W0 1F2 1I0 1W0 2F2 2I1 2W1 1F3 1I1 1W1 2F3 2I2 2W2 1I2 2I3 1I3 1W2 2W3 1W3
    """)


def test_dualpipev_plan_written_out():
    # steady state pairs F0 with B1 and F1 with B0 (run one after the other here); the tail splits B
    assert [compute_order("dualpipev", 2, 4, r) for r in range(2)] == plan("""
        0F0 0F1 0F2 3F0 3I0 3W0 3F1 0F3 3B1 3F2 0B0 3B2 3F3 0B1 3B3 0I2 0W2 0I3 0W3
        1F0 2F0 1F1 2F1 1F2 2B0 2F2 1B0 1F3 2B1 2F3 1B1 2B2 1B2 2I3 1I3 2W3 1W3
    """)


def test_v_schedules_need_two_stages_per_rank_and_dualpipev_enough_microbatches():
    with pytest.raises(ValueError, match="zb-v uses the V placement, two stages per rank; chunks must be 2, got 3"):
        compute_order("zb-v", 2, 4, 0, 3)
    with pytest.raises(ValueError, match="dualpipev needs at least as many microbatches as stages: m=7, 8 stages"):
        compute_order("dualpipev", 4, 7, 0, 2)


def test_list_scheduler_reports_limits_that_admit_no_action():
    with pytest.raises(ValueError, match=r"in-flight limits \(1, 1\) leave every rank waiting at tick 2"):
        list_schedule(Placement.looped(2, 2), 2, (1, 1), 1)


def test_zb_h1_step_is_shorter_than_1f1b_by_the_weight_gradients():
    # F = I = W = 1: 1F1B (I and W fused in B = 2) needs 3(m + p - 1), ZB-H1 3m + p - 1
    for p, m in ((4, 8), (8, 16)):
        zb = simulate(build_schedule("zb-h1", p, m), UNIT, "nonblocking").makespan
        ref = simulate(build_schedule("1f1b", p, m), UNIT, "nonblocking").makespan
        assert (zb, ref) == (3 * m + p - 1, 3 * (m + p - 1))


def test_single_stage_needs_no_communication():
    assert add_communication(compute_order("1f1b", 1, 3, 0), Placement.looped(1)) == plan("F0 B0 F1 B1 F2 B2")[0]


def test_schedule_command_prints_json(capsys):
    assert main(["schedule", "1f1b", "--stages", "2", "--microbatches", "3", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schedule"] == "1f1b" and doc["stages"] == 2 and doc["microbatches"] == 3
    assert [f"{a['op']}{a['mb']}" for a in doc["ranks"][0]] == ["F0", "F1", "B0", "F2", "B1", "B2"]
    assert all(a["chunk"] == 0 for row in doc["ranks"] for a in row)


def test_schedule_command_prints_table_and_timeline(capsys):
    assert main(["schedule", "gpipe", "-p", "2", "-m", "2"]) == 0
    out = capsys.readouterr().out
    assert "rank 0: 0F0 0F1 0B0 0B1" in out
    # F = 1 unit, B = 2: rank 0 idles from t=2 until rank 1's B0 ends at t=5
    assert "rank 0 |F0F1......B0B0B1B1|" in out
    assert "rank 1 |..F0F1B0B0B1B1....|" in out


def test_schedule_command_names_stages_in_the_interleaved_timeline(capsys):
    assert main(["schedule", "interleaved", "-p", "2", "-m", "2"]) == 0
    out = capsys.readouterr().out
    assert "rank 0: 0F0 0F1 2F0 2F1 2B0 2B1 0B0 0B1" in out
    assert "2F0" in out.split("timeline")[1] and "2B1" in out.split("timeline")[1]
