"""Simulate a measured run with costs taken from its own events, to check measurement against
the model: ``ppbench simulate --from-run FILE``.

Costs (means over every step and rank of the run: the sum along the critical path is what counts):

- F, B, W: durations of those compute events.
- overhead: the gap between one compute action's end and the next one's start on the same rank
  when no WAIT lies between them and no transfer completed in it (the executor's own work:
  posting, bookkeeping, tracing; a completion inside the gap may include MPI copying data).
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

__all__ = ["measured_samples", "measured_costs", "compare_with_simulation", "resolved_transport"]


def resolved_transport(config: dict) -> str:
    """The transport a run used ('auto': blocking for naive, non-blocking otherwise)."""
    if config["transport"] != "auto":
        return config["transport"]
    return "blocking" if config["schedule"] == "naive" else "nonblocking"


def measured_samples(events: pd.DataFrame) -> dict[str, np.ndarray]:
    """Every observed duration of one pipeline's events, by kind: F, B, W, overhead, comm (seconds)."""
    dur = (events["end"] - events["start"]).to_numpy()
    samples = {op: dur[(events["op"] == op).to_numpy()] for op in ("F", "B", "W")}
    samples["overhead"] = _gaps(events)
    samples["comm"] = _latencies(events)
    return samples


def measured_costs(events: pd.DataFrame) -> Costs:
    """Mean costs of one pipeline's events (one replica; any number of steps)."""
    mean = {k: float(v.mean()) if v.size else 0.0 for k, v in measured_samples(events).items()}
    return Costs(mean["F"], mean["B"], mean["W"], mean["comm"], mean["overhead"])


def _gaps(events: pd.DataFrame) -> np.ndarray:
    gaps = []
    for _, mine in events.groupby(["step", "rank"] if "step" in events else ["rank"]):
        compute = mine[mine["op"].isin(("F", "B", "W"))].sort_values("start")
        ends, starts = compute["end"].to_numpy()[:-1], compute["start"].to_numpy()[1:]
        waits = np.sort(mine.loc[mine["op"] == "WAIT", "start"].to_numpy())
        gaps.append((starts - ends)[np.searchsorted(waits, starts) == np.searchsorted(waits, ends)])
    return np.concatenate(gaps) if gaps else np.array([])


def _latencies(events: pd.DataFrame) -> np.ndarray:
    transfers = events[events["op"].isin(TRANSFER)]
    if transfers.empty:
        return np.array([])
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
    return (finish - begin)[chosen]


def compare_with_simulation(run: Run, samples: int = 0, seed: int = 0) -> dict:
    """Measured medians of a run beside the simulation of its schedule with its measured costs:
    the mean costs (``samples=0``), or the median over ``samples`` simulations whose every
    action's time, overhead and message latency is drawn from those measured in the run."""
    cfg = run.config
    events = run.events[run.events["rank"] < cfg["pp"]]                  # replica 0
    observed = measured_samples(events)
    costs = measured_costs(events)
    mode = resolved_transport(cfg)
    arrays = schedule_arrays(cfg["schedule"], cfg["pp"], cfg["microbatches"], cfg.get("chunks", 1))
    keys = ("step_time", "bubble_mean", "overlap")
    if samples:
        rng = np.random.default_rng(seed)
        draws = []
        for _ in range(samples):
            dur = np.zeros(arrays.op.size)
            for code, op in enumerate(("F", "B", "W")):
                sel = arrays.op == code
                if sel.any():
                    dur[sel] = rng.choice(observed[op], sel.sum())
            overhead, comm = (rng.choice(observed[k], arrays.op.size) if observed[k].size else np.zeros(arrays.op.size)
                              for k in ("overhead", "comm"))
            draws.append(array_metrics(simulate_arrays(arrays, costs, mode, durations=(dur, overhead, comm))))
        simulated = {k: float(np.nanmedian([d[k] for d in draws])) if any(np.isfinite(d[k]) for d in draws)
                     else float("nan") for k in keys}
    else:
        simulated = array_metrics(simulate_arrays(arrays, costs, mode))
    summary = run.meta["summary"]
    measured = {"step_time": summary["step_time_median"], "bubble_mean": summary["bubble_mean_median"],
                "overlap": summary["overlap_median"]}
    return {"run": str(run.path.name), "schedule": cfg["schedule"], "pp": cfg["pp"], "microbatches": cfg["microbatches"],
            "transport": mode, "workload": cfg["workload"], "message_bytes": cfg.get("message_bytes"),
            "costs": {"fwd": costs.fwd, "bwd": costs.bwd, "wgrad": costs.wgrad, "comm": costs.comm,
                      "overhead": costs.overhead},
            "samples": samples,
            "measured": measured,
            "simulated": {k: simulated[k] for k in keys},
            "bubble_difference": measured["bubble_mean"] - simulated["bubble_mean"]}
