"""The rules behind a timed step that are not MPI: the waiting policy, the serial limit and
efficiency, per-stage compute times (the MPI side is in test_runner)."""

import math

import numpy as np
import pandas as pd
import pytest

from ppbench.measure.metrics import compute_times
from ppbench.run.serial import serial_limits
from ppbench.run.waiting import WaitPolicy


def test_a_rank_with_its_own_core_spins_first_a_rank_sharing_one_does_not():
    own, shared = WaitPolicy.choose(shares_core=False), WaitPolicy.choose(shares_core=True)
    assert shared.spin == shared.yield_for == 0
    assert own.spin == own.yield_for == min(max(2 * own.sleep_measured, 50e-6), 2e-3)
    assert own.describe().startswith("spin ") and shared.describe().startswith("sleep 100 us")


def test_the_policy_spins_then_yields_then_sleeps(monkeypatch):
    calls = []
    monkeypatch.setattr("os.sched_yield", lambda: calls.append("yield"))
    monkeypatch.setattr("time.sleep", lambda s: calls.append(f"sleep {s:g}"))
    policy = WaitPolicy(spin=1e-3, yield_for=2e-3, sleep=1e-4)
    for waited in (0.0, 0.9e-3, 1.1e-3, 2.9e-3, 3.1e-3):
        policy.pause(waited)
    assert calls == ["yield", "yield", "sleep 0.0001"]


def test_limit_and_efficiency_by_hand():
    # gpipe, p = 2, m = 8: bubble (p - 1) / (m + p - 1) = 1/9; T_fb = 1.6 s, T_opt = 0.2 s
    got = serial_limits({"serial_fb_time": 1.6, "serial_optimizer_time": 0.2, "serial_steps": 3}, 2, 1 / 9, 1.25)
    assert got["limit_iteration_time"] == pytest.approx(1.6 * 9 / 16 + 0.1, rel=1e-15)      # 1.0
    assert got["efficiency"] == pytest.approx(0.8, rel=1e-15)
    assert got["speedup"] == pytest.approx(1.8 / 1.25, rel=1e-15)
    # no closed form (a schedule file): held to the bubble-free limit
    free = serial_limits({"serial_fb_time": 1.6, "serial_optimizer_time": 0.2, "serial_steps": 3}, 2, math.nan, 1.0)
    assert free["limit_iteration_time"] == pytest.approx(0.9, rel=1e-15)


def test_compute_times_are_medians_of_one_action_per_stage_and_op():
    rows = [("F", 0, 0.0, 1.0), ("F", 0, 2.0, 5.0), ("F", 0, 6.0, 8.0), ("I", 1, 0.0, 0.5), ("W", 1, 1.0, 1.25),
            ("SEND_F", 0, 1.0, 9.0)]
    events = pd.DataFrame(rows, columns=["op", "stage", "start", "end"])
    got = compute_times(events, 2)
    assert got["F"][0] == 2.0 and np.isnan(got["F"][1])
    assert np.isnan(got["I"][0]) and got["I"][1] == 0.5 and got["W"][1] == 0.25 and all(np.isnan(got["B"]))
