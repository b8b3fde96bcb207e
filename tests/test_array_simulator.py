"""The array form of the schedules and the compiled simulator against the reference ones:
same orders, same times, same deadlocks, same metrics; then the closed forms at scale."""

import math
import random

import numpy as np
import pytest
from plans import chunk_samples

from ppbench.measure.metrics import step_metrics
from ppbench.plan import jit, theory
from ppbench.plan.arrays import OP_B, OP_F, schedule_arrays
from ppbench.plan.schedules import SCHEDULES, build_schedule, compute_order, placement_for, schedule_problem
from ppbench.sim.array_simulator import array_metrics, simulate_arrays
from ppbench.sim.costs import Costs
from ppbench.sim.simulator import DeadlockError, simulate, simulated_events

CASES = [(name, p, m, v) for name in SCHEDULES for v in chunk_samples(name)
         for p in range(1, 9) for m in range(1, 17) if schedule_problem(name, p, m, v) is None]


def random_costs(rng: random.Random) -> Costs:
    igrad, wgrad = rng.uniform(0.5, 3), rng.uniform(0.1, 1)        # B = I + W
    return Costs(rng.uniform(0.5, 2), igrad + wgrad, wgrad, rng.choice([0.0, rng.uniform(0.01, 1)]),
                 rng.choice([0.0, rng.uniform(0.01, 0.3)]))


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_array_orders_equal_the_readable_orders(name):
    """Each array twin (the numba kernel for ZB-H1) against the readable definition."""
    for _, p, m, v in [c for c in CASES if c[0] == name]:
        arrays = schedule_arrays(name, p, m, v)
        assert [arrays.actions(r) for r in range(p)] == [compute_order(name, p, m, r, v) for r in range(p)]


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_array_simulation_equals_the_reference_simulation(name, monkeypatch):
    """Both array simulators (plain Python and numba-compiled) against one reference simulation per case."""
    rng = random.Random(name)
    for _, p, m, v in [c for c in CASES if c[0] == name]:
        placement = placement_for(name, p, v)
        for mode in ("blocking", "nonblocking"):
            costs = random_costs(rng)
            try:
                ref = simulate(build_schedule(name, p, m, v), costs, mode, placement)
            except DeadlockError as deadlock:
                for compiled in (False, True):
                    monkeypatch.setattr(jit, "COMPILE_ABOVE", 0 if compiled else 10**9)
                    with pytest.raises(DeadlockError) as also:
                        simulate_arrays(schedule_arrays(name, p, m, v), costs, mode)
                    assert also.value.stuck == deadlock.stuck
                continue
            compute = [e for r in range(p) for e in ref.by_rank(r) if e.action.is_compute]
            want = step_metrics(simulated_events(ref, placement, m), start=0.0)
            for compiled in (False, True):
                monkeypatch.setattr(jit, "COMPILE_ABOVE", 0 if compiled else 10**9)
                sim = simulate_arrays(schedule_arrays(name, p, m, v), costs, mode)
                assert np.allclose(sim.start, [e.start for e in compute], rtol=0, atol=1e-9), (compiled, p, m, v)
                assert np.allclose(sim.end, [e.end for e in compute], rtol=0, atol=1e-9), (compiled, p, m, v)
                got = array_metrics(sim)
                for key in ("step_time", "bubble_mean", "bubble_max", "overlap"):
                    assert got[key] == pytest.approx(want[key], abs=1e-9, nan_ok=True), (compiled, p, m, v, mode, key)


def test_both_simulators_name_the_same_stuck_actions():
    with pytest.raises(DeadlockError) as arrays:
        simulate_arrays(schedule_arrays("interleaved", 2, 4, 2), Costs(), "blocking")
    with pytest.raises(DeadlockError) as lists:
        simulate(build_schedule("interleaved", 2, 4, 2), Costs(), "blocking")
    assert arrays.value.stuck == lists.value.stuck == {0: "0F3", 1: "1F2"}


@pytest.mark.parametrize("name", ["naive", "gpipe", "1f1b"])
def test_bubble_and_in_flight_equal_closed_forms_p_1_to_16_m_1_to_64(name):
    for p in range(1, 17):
        for m in range(1, 65):
            sim = simulate_arrays(schedule_arrays(name, p, m), Costs(1, 2), "nonblocking")
            metrics = array_metrics(sim)
            assert metrics["bubble_mean"] == pytest.approx(theory.bubble_fraction(name, p, m), abs=1e-12)
            assert metrics["bubble_max"] == pytest.approx(theory.bubble_fraction(name, p, m), abs=1e-12)
            s = sim.schedule
            live = np.where(s.op == OP_F, 1, np.where(s.op == OP_B, -1, 0))
            for r in range(p):
                peak = np.cumsum(live[s.offsets[r]:s.offsets[r + 1]]).max()
                assert peak == theory.peak_in_flight(name, p, m, r)


def test_overlap_of_a_pipeline_with_slack_and_of_one_without():
    # GPipe's forwards: once the first message has paid its latency, every later one moves while
    # both ranks compute (the receiver is busy with the previous microbatch), so overlap -> 1.
    # 1F1B with uniform stages has no slack: each receiver waits for its message (0), each sender
    # computes meanwhile (1), so overlap is 1/2.
    c = 0.25
    gpipe = array_metrics(simulate_arrays(schedule_arrays("gpipe", 2, 64), Costs(1, 2, 0, c), "nonblocking"))
    one_f_one_b = array_metrics(simulate_arrays(schedule_arrays("1f1b", 2, 64), Costs(1, 2, 0, c), "nonblocking"))
    blocking = array_metrics(simulate_arrays(schedule_arrays("gpipe", 2, 64), Costs(1, 2, 0, c), "blocking"))
    assert gpipe["overlap"] > 0.95
    assert one_f_one_b["overlap"] == pytest.approx(0.5, abs=0.02)
    assert blocking["overlap"] == 0.0
    free = array_metrics(simulate_arrays(schedule_arrays("gpipe", 2, 4), Costs(1, 2), "nonblocking"))
    assert math.isnan(free["overlap"])


def test_a_thousand_stages_and_four_thousand_microbatches():
    p, m = 1024, 4096
    metrics = array_metrics(simulate_arrays(schedule_arrays("1f1b", p, m), Costs(1, 2), "nonblocking"))
    assert metrics["step_time"] == 3 * (m + p - 1)
    assert metrics["bubble_mean"] == pytest.approx(theory.bubble_fraction("1f1b", p, m), abs=1e-12)


def test_simulate_command_prints_metrics_as_json(capsys):
    from ppbench.cli import main

    assert main(["simulate", "--schedule", "gpipe", "-p", "4", "-m", "8", "--t-comm", "0.1", "--t-byte", "1e-6",
                 "--message-bytes", "100000", "--json"]) == 0
    out = __import__("json").loads(capsys.readouterr().out)
    want = array_metrics(simulate_arrays(schedule_arrays("gpipe", 4, 8), Costs(1, 2, 0, 0.1 + 0.1), "nonblocking"))
    assert out["step_time"] == pytest.approx(want["step_time"])
    assert out["bubble_mean"] == pytest.approx(want["bubble_mean"])
    assert out["bubble_theory"] == pytest.approx(theory.bubble_fraction("gpipe", 4, 8))


@pytest.mark.parametrize("args,message", [
    (["--schedule", "1f1b", "-p", "4"], "needs --microbatches"),
    (["--schedule", "1f1b", "-p", "4", "-m", "4", "--t-comm", "-1"], "must be >= 0"),
    (["--schedule", "interleaved", "-p", "4", "-m", "6"], "multiple of the stages"),
    (["--schedule", "zb-h1", "-p", "4", "-m", "4", "--transport", "blocking"], "deadlocks with the blocking"),
    (["--from-run", "/nonexistent/ppbench-results"], "no readable result files"),
])
def test_simulate_command_rejects_bad_input(capsys, args, message):
    from ppbench.cli import main

    assert main(["simulate", *args]) == 2
    assert message in capsys.readouterr().err
