"""Simulate a measured run with costs taken from its own events, to check measurement against
the model: ``ppbench simulate --from-run FILE``.

Costs (means over every step and rank of the run: the sum along the critical path is what counts):

- F, I, W, B: durations of those compute events, per stage.
- overhead: the gap between one compute action's end and the next one's start on the same rank
  when no WAIT lies between them (the executor's own work: posting, bookkeeping, tracing; with
  the blocking transport also MPI copying a message that completes at the first Test).
- comm: message latency, from the later post of a message's two ends to the moment one end
  observed completion, over the ends a rank was blocked on (the messages on the critical path;
  a transfer completed during compute is seen late by polling, harmlessly), else all receives.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ppbench.config import RunConfig
from ppbench.measure.events import COMPUTE, TRANSFER
from ppbench.measure.metrics import transfer_intervals
from ppbench.measure.results import Run
from ppbench.plan.actions import COMPUTE_OPS
from ppbench.plan.arrays import from_actions, schedule_arrays
from ppbench.plan.files import from_record
from ppbench.sim.array_simulator import array_metrics, simulate_arrays
from ppbench.sim.costs import Costs

__all__ = ["measured_samples", "measured_costs", "simulate_run", "simulated_bubble", "compare_with_simulation",
           "resolved_transport", "bubble_attribution"]


def resolved_transport(config: dict) -> str:
    """The transport a run used ('auto': blocking for naive, non-blocking otherwise)."""
    return RunConfig(schedule=config["schedule"], transport=config["transport"],
                     schedule_file=config.get("schedule_file", "")).resolved_transport


def run_arrays(run: Run):
    """The array form of the schedule a run executed: its recorded schedule file, or the built-in."""
    cfg = run.config
    if run.meta.get("schedule"):
        recorded = from_record(run.meta["schedule"])
        return from_actions([list(acts) for acts in recorded.ranks], recorded.placement, recorded.microbatches)
    return schedule_arrays(cfg["schedule"], cfg["pp"], cfg["microbatches"], cfg.get("chunks", 1))


def measured_samples(events: pd.DataFrame) -> dict[str, np.ndarray]:
    """Every observed duration of one pipeline's events, by kind: F, I, W, B, overhead, comm (seconds)."""
    dur = (events["end"] - events["start"]).to_numpy()
    samples = {op: dur[(events["op"] == op).to_numpy()] for op in COMPUTE}
    samples["overhead"] = _gaps(events)
    samples["comm"] = _latencies(events)
    return samples


def measured_costs(events: pd.DataFrame) -> Costs:
    """Mean costs of one pipeline's events (one replica; any number of steps)."""
    return _mean_costs(measured_samples(events))


def _mean_costs(samples: dict[str, np.ndarray]) -> Costs:
    mean = {k: float(v.mean()) if v.size else 0.0 for k, v in samples.items()}
    split = samples["I"].size > 0
    bwd = mean["I"] + mean["W"] if split else mean["B"]
    return Costs(mean["F"], bwd, mean["W"] if split else 0.0, mean["comm"], mean["overhead"])


def _gaps(events: pd.DataFrame) -> np.ndarray:
    """Per rank and step, the gaps between consecutive compute actions with no WAIT starting inside them."""
    keys = ["step", "rank"] if "step" in events else ["rank"]
    group = events.groupby(keys, sort=False).ngroup().to_numpy()
    op, start, end = events["op"].to_numpy(), events["start"].to_numpy(), events["end"].to_numpy()
    compute = np.isin(op, COMPUTE)
    order = np.lexsort((start[compute], group[compute]))
    g, s, e = group[compute][order], start[compute][order], end[compute][order]
    same = g[1:] == g[:-1]
    ends, starts, gg = e[:-1][same], s[1:][same], g[1:][same]
    wait = op == "WAIT"
    w_order = np.lexsort((start[wait], group[wait]))
    wg, ws = group[wait][w_order], start[wait][w_order]
    # a wait lies in [end, start) of a gap when the count of (group, wait start) pairs below each bound differs
    below_start = _count_below(wg, ws, gg, starts)
    below_end = _count_below(wg, ws, gg, ends)
    return (starts - ends)[below_start == below_end]


def _count_below(keys: np.ndarray, values: np.ndarray, qkeys: np.ndarray, qvalues: np.ndarray) -> np.ndarray:
    """For each query, how many (key, value) pairs (sorted by key, then value) come before (qkey, qvalue)."""
    first = np.searchsorted(keys, qkeys, side="left")
    last = np.searchsorted(keys, qkeys, side="right")
    out = first.copy()
    for k in np.unique(qkeys):
        sel = qkeys == k
        lo, hi = first[sel][0], last[sel][0]
        out[sel] = lo + np.searchsorted(values[lo:hi], qvalues[sel])
    return out


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


def simulate_run(run: Run, samples: int = 0, seed: int = 0) -> tuple[dict, Costs]:
    """(step time, bubble mean and overlap; mean costs) of the run's schedule simulated with the
    costs measured in it: each stage's mean F, B and W (stages may differ: a model's first and
    last stages do more), the mean overhead and message latency (``samples=0``); or the median
    over ``samples`` simulations whose every action's time, overhead and latency is drawn from
    those measured in the run (the same stage's, for F, B and W)."""
    cfg = run.config
    events = run.events[run.events["rank"] < cfg["pp"]]                  # replica 0
    observed = measured_samples(events)
    costs = _mean_costs(observed)
    mode = resolved_transport(cfg)
    arrays = run_arrays(run)
    keys = ("step_time", "bubble_mean", "overlap")
    by_stage = _durations_by_action(events[events["op"].isin(COMPUTE)])
    key = arrays.stage.astype(np.int64) * 4 + arrays.op
    n = arrays.op.size
    if not samples:
        dur = _mean_durations(by_stage, observed, key)
        metrics = array_metrics(simulate_arrays(arrays, costs, mode, durations=(
            dur, np.full(n, costs.overhead), np.full(n, costs.comm))))
        return {k: metrics[k] for k in keys}, costs
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(samples):
        dur = np.zeros(n)
        for k in np.unique(key):
            sel = key == k
            dur[sel] = rng.choice(by_stage.get(int(k), observed[COMPUTE_OPS[k % 4].value]), sel.sum())
        overhead, comm = (rng.choice(observed[k], n) if observed[k].size else np.zeros(n) for k in ("overhead", "comm"))
        draws.append(array_metrics(simulate_arrays(arrays, costs, mode, durations=(dur, overhead, comm))))
    return {k: float(np.nanmedian([d[k] for d in draws])) if any(np.isfinite(d[k]) for d in draws) else float("nan")
            for k in keys}, costs


def bubble_attribution(run: Run) -> dict[str, float]:
    """Mean bubble of the run's schedule simulated with its own mean costs (``simulated``), then
    without message latency (``no_latency``), without per-action overhead (``no_overhead``), and
    without either (``free``: what is left comes from unequal stage costs). What each removal
    lowers the bubble by is what that cost contributes."""
    cfg = run.config
    events = run.events[run.events["rank"] < cfg["pp"]]
    observed = measured_samples(events)
    costs = _mean_costs(observed)
    arrays = run_arrays(run)
    key = arrays.stage.astype(np.int64) * 4 + arrays.op
    dur = _mean_durations(_durations_by_action(events[events["op"].isin(COMPUTE)]), observed, key)
    n, mode = arrays.op.size, resolved_transport(cfg)

    def bubble(comm: float, overhead: float) -> float:
        sim = simulate_arrays(arrays, costs, mode, durations=(dur, np.full(n, overhead), np.full(n, comm)))
        return array_metrics(sim)["bubble_mean"]

    return {"simulated": bubble(costs.comm, costs.overhead), "no_latency": bubble(0.0, costs.overhead),
            "no_overhead": bubble(costs.comm, 0.0), "free": bubble(0.0, 0.0),
            "latency": costs.comm, "overhead": costs.overhead}


def _mean_durations(by_stage: dict[int, np.ndarray], observed: dict[str, np.ndarray], key: np.ndarray) -> np.ndarray:
    """Each action's duration: the mean of its stage's observed ones for that op (else of the op's)."""
    mean = np.zeros(key.max() + 1)
    for k in np.unique(key):
        mean[k] = np.mean(by_stage.get(int(k), observed[COMPUTE_OPS[k % 4].value]))
    return mean[key]


def _durations_by_action(compute: pd.DataFrame) -> dict[int, np.ndarray]:
    """Observed durations of each (stage, op), keyed like the simulation's actions (stage x 4 + op code)."""
    code = compute["op"].map({op.value: op.code for op in COMPUTE_OPS}).to_numpy()
    key = compute["stage"].to_numpy() * 4 + code
    dur = (compute["end"] - compute["start"]).to_numpy()
    return {int(k): dur[key == k] for k in np.unique(key)}


def simulated_bubble(run: Run) -> float:
    """Mean bubble of the run's schedule simulated with its mean costs (NaN for --impl torch,
    whose order of actions is PyTorch's)."""
    if run.config.get("impl", "ppbench") != "ppbench":
        return float("nan")
    return simulate_run(run)[0]["bubble_mean"]


def compare_with_simulation(run: Run, samples: int = 0, seed: int = 0) -> dict:
    """Measured medians of a run beside :func:`simulate_run`'s simulation of it."""
    cfg = run.config
    simulated, costs = simulate_run(run, samples, seed)
    summary = run.meta["summary"]
    measured = {"step_time": summary["step_time_median"], "bubble_mean": summary["bubble_mean_median"],
                "overlap": summary["overlap_median"]}
    return {"run": str(run.path.name), "schedule": cfg["schedule"], "pp": cfg["pp"],
            "microbatches": cfg["microbatches"], "transport": resolved_transport(cfg), "workload": cfg["workload"],
            "message_bytes": cfg.get("message_bytes"),
            "costs": {"fwd": costs.fwd, "bwd": costs.bwd, "wgrad": costs.wgrad, "comm": costs.comm,
                      "overhead": costs.overhead},
            "samples": samples, "measured": measured, "simulated": simulated,
            "bubble_difference": measured["bubble_mean"] - simulated["bubble_mean"]}
