"""Simulate a measured run with costs taken from its own events, to check measurement against
the model: ``ppbench simulate --from-run FILE``.

Costs (medians over every step and rank of the run):

- F, B, W: durations of those compute events.
- overhead: the gap between one compute action's end and the next one's start on the same rank
  when no WAIT lies between them (the executor's own work: posting, bookkeeping, tracing).
- comm: message latency, from the later post of a message's two ends to the moment its
  receiver observed completion, over the receives that the receiver was blocked on (the ones on
  the critical path; a receive completed during compute is seen late by polling, harmlessly).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .array_simulator import array_metrics, simulate_arrays
from .metrics import TRANSFER, transfer_intervals
from .results import Run
from .schedule_arrays import schedule_arrays
from .simulator import Costs

__all__ = ["measured_costs", "compare_with_simulation", "resolved_transport"]


def resolved_transport(config: dict) -> str:
    """The transport a run used ('auto': blocking for naive, non-blocking otherwise)."""
    if config["transport"] != "auto":
        return config["transport"]
    return "blocking" if config["schedule"] == "naive" else "nonblocking"


def measured_costs(events: pd.DataFrame) -> Costs:
    """Costs of one pipeline's events (one replica; any number of steps)."""
    dur = events["end"] - events["start"]

    def median(op: str) -> float:
        sel = dur[events["op"] == op]
        return float(sel.mean()) if len(sel) else 0.0

    return Costs(median("F"), median("B"), median("W"), _latency(events), _overhead(events))


def _overhead(events: pd.DataFrame) -> float:
    gaps = []
    for _, mine in events.groupby(["step", "rank"] if "step" in events else ["rank"]):
        compute = mine[mine["op"].isin(("F", "B", "W"))].sort_values("start")
        waits = mine.loc[mine["op"] == "WAIT", "start"].to_numpy()
        ends, starts = compute["end"].to_numpy()[:-1], compute["start"].to_numpy()[1:]
        waited = np.searchsorted(np.sort(waits), starts) > np.searchsorted(np.sort(waits), ends)
        gaps.append((starts - ends)[~waited])
    gaps = np.concatenate(gaps) if gaps else np.array([])
    return float(np.mean(gaps)) if gaps.size else 0.0


def _latency(events: pd.DataFrame) -> float:
    transfers = events[events["op"].isin(TRANSFER)]
    if transfers.empty:
        return 0.0
    begin, finish = transfer_intervals(transfers)
    recv = transfers["op"].str.startswith("RECV").to_numpy()
    waits = events[events["op"] == "WAIT"]
    blocked = np.zeros(len(transfers), dtype=bool)
    for rank, idx in transfers.groupby("rank").indices.items():
        mine = waits[waits["rank"] == rank].sort_values("end")
        k = np.searchsorted(mine["end"].to_numpy(), finish[idx])            # first wait ending at/after completion
        k = np.minimum(k, max(len(mine) - 1, 0))
        if len(mine):
            blocked[idx] = (mine["start"].to_numpy()[k] <= finish[idx]) & (finish[idx] <= mine["end"].to_numpy()[k])
    chosen = blocked
    if not chosen.any():
        chosen = recv
    return float(np.mean((finish - begin)[chosen])) if chosen.any() else 0.0


def compare_with_simulation(run: Run) -> dict:
    """Measured medians of a run beside the simulation of its schedule with its measured costs."""
    cfg = run.config
    events = run.events[run.events["rank"] < cfg["pp"]]                  # replica 0
    costs = measured_costs(events)
    mode = resolved_transport(cfg)
    sim = simulate_arrays(schedule_arrays(cfg["schedule"], cfg["pp"], cfg["microbatches"], cfg.get("chunks", 1)),
                          costs, mode)
    simulated = array_metrics(sim)
    summary = run.meta["summary"]
    measured = {"step_time": summary["step_time_median"], "bubble_mean": summary["bubble_mean_median"],
                "overlap": summary["overlap_median"]}
    return {"run": str(run.path.name), "schedule": cfg["schedule"], "pp": cfg["pp"], "microbatches": cfg["microbatches"],
            "transport": mode, "workload": cfg["workload"],
            "costs": {"fwd": costs.fwd, "bwd": costs.bwd, "wgrad": costs.wgrad, "comm": costs.comm,
                      "overhead": costs.overhead},
            "measured": measured,
            "simulated": {k: simulated[k] for k in ("step_time", "bubble_mean", "overlap")},
            "bubble_difference": measured["bubble_mean"] - simulated["bubble_mean"]}
