"""Calibration from events: a 'measured' run made by the reference simulator with known costs
(plus the WAIT events a real rank would record) must give back those costs, and simulating it
with them must give back its own bubble and overlap."""

from pathlib import Path

import pandas as pd
import pytest

from ppbench.measure.metrics import step_metrics
from ppbench.measure.results import Run
from ppbench.plan.placement import Placement
from ppbench.plan.schedules import build_schedule
from ppbench.sim.calibrate import compare_with_simulation, measured_costs
from ppbench.sim.costs import Costs
from ppbench.sim.simulator import simulate, simulated_events

COSTS = Costs(fwd=2.0, bwd=4.0, wgrad=0.0, comm=0.3, overhead=0.1)


def fake_run(schedule: str, p: int, m: int, transport: str, costs: Costs = COSTS) -> Run:
    events = simulated_events(simulate(build_schedule(schedule, p, m), costs, transport), Placement.looped(p), m)
    waits = []
    for rank, mine in events[events["op"].isin(["F", "I", "W", "B"])].groupby("rank"):
        mine = mine.sort_values("start")
        ready = [costs.overhead] + list(mine["end"].to_numpy()[:-1] + costs.overhead)
        for begin, start in zip(ready, mine["start"]):
            if start > begin + 1e-12:                      # the rank was blocked: a real rank records a WAIT
                waits.append((rank, "WAIT", -1, -1, begin, start, -1, -1, 0))
    events = pd.concat([events, pd.DataFrame(waits, columns=events.columns)], ignore_index=True)
    events.insert(0, "step", 1)
    metrics = step_metrics(events, start=0.0)
    config = {"schedule": schedule, "pp": p, "dp": 1, "microbatches": m, "chunks": 1, "transport": transport,
              "workload": "synthetic", "message_bytes": 8}
    summary = {"step_time_median": metrics["step_time"], "bubble_mean_median": metrics["bubble_mean"],
               "overlap_median": metrics["overlap"]}
    return Run(Path("fake.parquet"), {"config": config, "summary": summary}, events)


@pytest.mark.parametrize("schedule,transport,costs", [
    ("gpipe", "nonblocking", COSTS), ("1f1b", "nonblocking", COSTS), ("1f1b", "blocking", COSTS),
    ("naive", "blocking", COSTS), ("zb-h1", "nonblocking", Costs(2.0, 4.0, 1.5, 0.3, 0.1))])
def test_costs_come_back_and_the_simulation_reproduces_the_run(schedule, transport, costs):
    run = fake_run(schedule, 4, 8, transport, costs)
    got = measured_costs(run.events)
    for field in ("fwd", "bwd", "wgrad", "comm", "overhead"):
        assert getattr(got, field) == pytest.approx(getattr(costs, field), abs=1e-9), field
    row = compare_with_simulation(run)
    assert row["bubble_difference"] == pytest.approx(0.0, abs=1e-9)
    assert row["simulated"]["step_time"] == pytest.approx(row["measured"]["step_time"], abs=1e-9)
    assert row["simulated"]["overlap"] == pytest.approx(row["measured"]["overlap"], abs=1e-9, nan_ok=True)


def test_sampling_identical_costs_changes_nothing():
    run = fake_run("1f1b", 3, 6, "nonblocking")
    sampled = compare_with_simulation(run, samples=5)["simulated"]
    assert sampled == pytest.approx(compare_with_simulation(run)["simulated"])


def test_sampled_jitter_only_lengthens_a_pipeline_on_average():
    # Unequal costs with the same mean: waiting on the slowest of two (max) can only add time.
    run = fake_run("1f1b", 4, 8, "nonblocking")
    jittered = run.events.copy()
    compute = jittered["op"].isin(["F", "B"])
    jittered.loc[compute, "end"] += [0.5 if k % 2 else -0.5 for k in range(int(compute.sum()))]
    run = Run(run.path, run.meta, jittered)
    assert compare_with_simulation(run, samples=20)["simulated"]["step_time"] > \
        compare_with_simulation(run)["simulated"]["step_time"]
