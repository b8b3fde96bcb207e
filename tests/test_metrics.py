"""Metrics from events: hand-built cases with hand-computed answers, and the simulator against
the closed forms through the same metrics code."""

import math

import pandas as pd
import pytest

from ppbench.measure.metrics import step_metrics
from ppbench.plan import theory
from ppbench.plan.schedules import SCHEDULES, build_schedule, placement_for, schedule_problem
from ppbench.sim.costs import Costs
from ppbench.sim.simulator import simulate, simulated_events


def frame(rows):
    return pd.DataFrame(rows, columns=["rank", "op", "mb", "stage", "start", "end", "peer", "tag", "nbytes"])


def test_hand_built_two_rank_step():
    # rank 0: F0 [0,1], sends [1,1.5] while idle, waits [1,3], B0 [3,5]
    # rank 1: recv posted at 0 completes 1.5 (computes nothing before), F0 [1.5,2.5], B0 [2.5,3]
    ev = frame([
        (0, "F", 0, 0, 0.0, 1.0, -1, -1, 0),
        (0, "SEND_F", 0, 0, 1.0, 1.5, 1, 0, 8),
        (0, "WAIT", -1, 0, 1.0, 3.0, -1, -1, 0),
        (0, "B", 0, 0, 3.0, 5.0, -1, -1, 0),
        (1, "RECV_F", 0, 0, 0.0, 1.5, 0, 0, 8),
        (1, "WAIT", -1, 0, 0.0, 1.5, -1, -1, 0),
        (1, "F", 0, 0, 1.5, 2.5, -1, -1, 0),
        (1, "B", 0, 0, 2.5, 3.0, -1, -1, 0),
        (1, "OPTIMIZER", -1, 0, 5.0, 5.5, -1, -1, 0),
    ])
    m = step_metrics(ev, start=0.0)
    assert m["step_time"] == 5.0                      # schedule actions end at 5; optimizer apart
    assert m["iteration_time"] == 5.5
    assert m["bubble_per_rank"] == [1 - 3 / 5, 1 - 1.5 / 5]
    assert m["bubble_mean"] == pytest.approx(0.55) and m["bubble_max"] == pytest.approx(0.7)
    assert m["utilization"] == pytest.approx(0.45)
    assert m["overlap"] == 0.0                        # nobody computed while a transfer was in flight
    assert m["exposed_comm"] == pytest.approx((2.0 + 1.5) / 2)
    assert m["optimizer_time"] == 0.5


def test_overlap_counts_compute_inside_transfer_intervals():
    ev = frame([
        (0, "RECV_F", 1, 0, 0.0, 4.0, 1, 2, 8),       # posted before F0, completes during F1
        (0, "F", 0, 0, 0.0, 2.0, -1, -1, 0),
        (0, "F", 1, 0, 3.0, 5.0, -1, -1, 0),          # gap [2, 3] is idle
        (0, "SEND_F", 0, 0, 2.0, 3.0, 1, 0, 8),       # entirely in the idle gap
    ])
    # transfer time 4 + 1 = 5; computing during it: [0,2] + [3,4] = 3
    assert step_metrics(ev, start=0.0)["overlap"] == pytest.approx(3 / 5)


def test_transfer_interval_starts_when_both_ends_have_posted():
    # rank 1 pre-posts its receive at 0 and computes F0 [0, 2.5]; rank 0 computes [0, 2], posts
    # the send at 2 and computes again [2, 4]; the message completes at 3 on both ends. Before 2
    # nothing can move: transfer time is [2, 3] on each end. Receiver computed 0.5 of it, sender 1.
    ev = frame([
        (0, "F", 0, 0, 0.0, 2.0, -1, -1, 0),
        (0, "SEND_F", 0, 0, 2.0, 3.0, 1, 7, 8),
        (0, "F", 1, 0, 2.0, 4.0, -1, -1, 0),
        (1, "RECV_F", 0, 0, 0.0, 3.0, 0, 7, 8),
        (1, "F", 9, 0, 0.0, 2.5, -1, -1, 0),
    ])
    assert step_metrics(ev, start=0.0)["overlap"] == pytest.approx((0.5 + 1.0) / 2)


def test_a_send_completed_before_its_receive_was_posted_has_no_transfer_time():
    # eager protocol: the send completes at 1.5 (buffered); the receive is posted at 2 and
    # completes at 2.2 while rank 1 idles: all transfer time is the receiver's 0.2, not overlapped
    ev = frame([
        (0, "SEND_F", 0, 0, 1.0, 1.5, 1, 3, 8),
        (0, "F", 1, 0, 1.0, 4.0, -1, -1, 0),
        (1, "RECV_F", 0, 0, 2.0, 2.2, 0, 3, 8),
        (1, "F", 0, 0, 2.2, 3.0, -1, -1, 0),
    ])
    assert step_metrics(ev, start=0.0)["overlap"] == 0.0


def test_no_transfers_means_no_overlap_value():
    ev = frame([(0, "F", 0, 0, 0.0, 1.0, -1, -1, 0), (0, "B", 0, 0, 1.0, 3.0, -1, -1, 0)])
    m = step_metrics(ev)
    assert math.isnan(m["overlap"]) and m["bubble_mean"] == 0.0


@pytest.mark.parametrize("name", list(SCHEDULES))
@pytest.mark.parametrize("p", range(1, 9))
def test_simulated_bubble_and_peak_in_flight_equal_closed_forms(name, p):
    """Through the events form and ``step_metrics``; the larger grid (p <= 16, m <= 64) is checked on the
    array simulator (tests/test_array_simulator.py), which is checked equal to this simulator."""
    v = SCHEDULES[name].default_chunks
    costs = Costs(1, 2, 1)          # F = 1, B = 2 = I + W
    for m in (*range(1, 17), 24, 32):
        if schedule_problem(name, p, m, v) or not theory.closed_form_holds(name, p, m, v):
            continue
        placement = placement_for(name, p, v)
        result = simulate(build_schedule(name, p, m, v), costs, "nonblocking", placement)
        metrics = step_metrics(simulated_events(result, placement, m), start=0.0)
        assert metrics["bubble_mean"] == pytest.approx(theory.bubble_fraction(name, p, m, v), abs=1e-12)
        assert metrics["bubble_max"] == pytest.approx(theory.bubble_fraction(name, p, m, v), abs=1e-12)
        for r in range(p):
            live = peak = 0
            for e in sorted(result.by_rank(r), key=lambda e: e.start):
                live += (e.action.op == "F") - e.action.op.is_backward
                peak = max(peak, live)
            assert peak == theory.peak_in_flight(name, p, m, r, v)


def test_megatron_form_is_bubble_over_ideal_time():
    assert theory.megatron_bubble_ratio("1f1b", 4, 8) == pytest.approx(3 / 8)
    assert theory.bubble_fraction("interleaved", 4, 8, v=2) == pytest.approx(3 / 19)


def test_communication_cost_lengthens_the_simulated_step():
    free = simulate(build_schedule("gpipe", 4, 4), Costs(1, 2, 0, 0)).makespan
    paid = simulate(build_schedule("gpipe", 4, 4), Costs(1, 2, 0, 0.5)).makespan
    assert free == (4 + 3) * 3 and paid > free


def test_clock_offset_reads_rank_0s_clock():
    """Rank 0's clock runs 100 s ahead: we sent at 10.0 and heard back at 11.0 that it read 110.5."""
    from ppbench.run.tracer import Tracer, offset_from_ping

    offset = offset_from_ping(10.0, 110.5, 11.0)
    assert offset == 100.0
    tracer = Tracer(offset)
    import time
    assert tracer.now() - time.perf_counter() == pytest.approx(100.0, abs=1e-3)
