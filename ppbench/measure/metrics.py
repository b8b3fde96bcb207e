"""Metrics of one step, computed from its events only (measured or simulated alike).

Events: a table as :mod:`ppbench.measure.events` describes it (one step). Definitions (README "Metrics" says the same):

- step time T: from the step's start (the end of the barrier before it) to the end of the last
  schedule action (compute or transfer) on any rank. The data-parallel Allreduce and the
  optimizer come after the schedule and are reported apart.
- busy time C_r: summed duration of rank r's compute events (F, I, W, B).
- bubble fraction of rank r: 1 - C_r / T; reported as mean and max over ranks.
- utilization: 1 - mean bubble fraction.
- transfer interval of one end of a message: from the moment both ends had posted (the later
  of the Isend and the Irecv: before that the data cannot move, the rank is waiting for its
  peer, which the bubble already counts) to the moment this rank observed completion (a Test
  or Wait returning true). An end whose peer is missing from the events starts at its own post.
- communication overlap: the share of all transfer-interval time (both ends of every message)
  during which the same rank was computing. Blocking transfers (posted after one computation,
  completed before the next) score 0 by construction; a pre-posted transfer scores 1 when it
  moves while both ranks compute, which needs slack: the data must arrive before the receiver
  needs it. With uniform stages 1F1B has none (every message is on the critical path, so the
  receiving end waits and scores 0 while the sending end, computing, scores 1).
- exposed communication: per rank, time blocked waiting for transfers (WAIT events; it includes
  waiting for the peer to produce the data); reported as the mean over ranks.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ppbench.measure.events import COMPUTE, TRANSFER

__all__ = ["COMPUTE", "TRANSFER", "step_metrics", "overlap", "transfer_intervals", "compute_times"]


def step_metrics(events: pd.DataFrame, start: float | None = None, ranks: list[int] | None = None) -> dict:
    """Step time, busy time, bubble, utilization, overlap and exposed communication of one step."""
    schedule_ops = events["op"].isin(COMPUTE + TRANSFER)
    origin = events.loc[schedule_ops, "start"].min() if start is None else start
    step_time = float(events.loc[schedule_ops, "end"].max() - origin)
    ranks = sorted(events["rank"].unique()) if ranks is None else ranks
    compute = events[events["op"].isin(COMPUTE)]
    busy = (compute["end"] - compute["start"]).groupby(compute["rank"]).sum().reindex(ranks, fill_value=0.0)
    bubble = 1 - busy / step_time if step_time > 0 else busy * np.nan
    waits = events[events["op"] == "WAIT"]
    exposed = (waits["end"] - waits["start"]).groupby(waits["rank"]).sum().reindex(ranks, fill_value=0.0)
    return {
        "step_time": step_time,
        "busy_time_mean": float(busy.mean()),
        "bubble_mean": float(bubble.mean()),
        "bubble_max": float(bubble.max()),
        "utilization": float(1 - bubble.mean()),
        "overlap": overlap(events),
        "exposed_comm": float(exposed.mean()),
        "allreduce_time": _span(events, "ALLREDUCE"),
        "optimizer_time": _span(events, "OPTIMIZER"),
        "iteration_time": float(events["end"].max() - origin),
        "bubble_per_rank": [float(b) for b in bubble],
    }


def compute_times(events: pd.DataFrame, stages: int) -> dict[str, list[float]]:
    """Median seconds of one F, I, W and B per stage (NaN where a stage never ran that op):
    what the split backward costs against the full one, stage by stage."""
    compute = events[events["op"].isin(COMPUTE)]
    medians = (compute["end"] - compute["start"]).groupby([compute["op"], compute["stage"]]).median()
    return {op: [float(medians.get((op, s), np.nan)) for s in range(stages)] for op in COMPUTE}


def _span(events: pd.DataFrame, op: str) -> float:
    sel = events[events["op"] == op]
    return float((sel["end"] - sel["start"]).max()) if len(sel) else 0.0


def overlap(events: pd.DataFrame) -> float:
    """Share of transfer-interval time during which the transferring rank computed (NaN: no transfers)."""
    transfers = events[events["op"].isin(TRANSFER)]
    if transfers.empty:
        return float("nan")
    begin, finish = transfer_intervals(transfers)
    total = float((finish - begin).sum())
    if total <= 0:
        return float("nan")
    compute = events[events["op"].isin(COMPUTE)]
    covered = 0.0
    for rank, idx in transfers.groupby("rank").indices.items():
        mine = compute[compute["rank"] == rank]
        covered += float((_computed_before(mine, finish[idx]) - _computed_before(mine, begin[idx])).sum())
    return covered / total


def transfer_intervals(transfers: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(begin, end) of each transfer event: from the later post of its message's two ends (matched
    by step, tag, sender and receiver) to this end's observed completion; never negative."""
    rank, peer = transfers["rank"].to_numpy(), transfers["peer"].to_numpy()
    sends = transfers["op"].str.startswith("SEND").to_numpy()
    keys = pd.DataFrame({"tag": transfers["tag"].to_numpy(), "sender": np.where(sends, rank, peer),
                         "receiver": np.where(sends, peer, rank), "start": transfers["start"].to_numpy()})
    if "step" in transfers:
        keys["step"] = transfers["step"].to_numpy()
    later = keys.groupby([c for c in ("step", "tag", "sender", "receiver") if c in keys])["start"].transform("max")
    finish = transfers["end"].to_numpy()
    return np.minimum(later.to_numpy(), finish), finish


def _computed_before(compute: pd.DataFrame, t: np.ndarray) -> np.ndarray:
    """Compute time of one rank before each time in ``t`` (its compute events do not overlap)."""
    order = np.argsort(compute["start"].to_numpy())
    s, e = compute["start"].to_numpy()[order], compute["end"].to_numpy()[order]
    if len(s) == 0:
        return np.zeros_like(t)
    done = np.concatenate([[0.0], np.cumsum(e - s)])
    k = np.searchsorted(s, t, side="right")          # intervals started by t
    partial = np.where(k > 0, np.minimum(t - s[np.maximum(k - 1, 0)], (e - s)[np.maximum(k - 1, 0)]), 0.0)
    return done[np.maximum(k - 1, 0)] * (k > 0) + np.maximum(partial, 0.0)
