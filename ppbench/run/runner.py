"""``ppbench run`` on every rank: timed steps, events gathered outside the timed region, metrics
on rank 0, one result file per run."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
from mpi4py import MPI

from ppbench.config import RunConfig
from ppbench.measure.events import EVENT_FIELDS, events_frame
from ppbench.measure.metrics import step_metrics
from ppbench.measure.results import Run, write_run
from ppbench.plan import theory
from ppbench.plan.schedules import peak_in_flight
from ppbench.run.contention import CoreSharing
from ppbench.run.environment import environment, set_threads
from ppbench.run.grid import Grid
from ppbench.run.pipeline import make_rank
from ppbench.run.torch_impl import backward_observed
from ppbench.run.tracer import Tracer, clock_offset, gather_rows
from ppbench.sim.calibrate import simulated_bubble

__all__ = ["run_benchmark", "record_cost"]

_STEP_FIELDS = ("step", "rank", "stage", "replica", "start", "peak_in_flight", "peak_saved_bytes", "peak_device_bytes",
                "loss")


def record_cost(samples: int = 20000) -> float:
    """Seconds one Tracer.record call costs on this machine (the tracing overhead per event)."""
    tracer = Tracer()
    start = time.perf_counter()
    for i in range(samples):
        tracer.record("F", 0, i, 0.0, 1.0)
    return (time.perf_counter() - start) / samples


def run_benchmark(cfg: RunConfig, comm: MPI.Comm, results_dir: str | None) -> dict | None:
    """Run cfg.warmup + cfg.repeats steps; rank 0 returns the summary (and writes the file)."""
    cfg.validate(world_size=comm.Get_size())
    set_threads(cfg.threads, comm)
    env = environment(comm)
    offset, skew = clock_offset(comm)
    skews = gather_rows(comm, np.array([[skew]]))
    tracer = Tracer(offset)
    event_rows, step_rows = [], []
    sharing = CoreSharing(comm)
    with Grid(comm, cfg.pp, cfg.dp) as grid:
        pipe = make_rank(cfg, grid, tracer)
        env["device_used"] = str(pipe.device)
        env["cuda_aware_mpi"] = f"{pipe.cuda_aware} ({pipe.cuda_aware_how})"
        for step in range(cfg.warmup + cfg.repeats):
            if step == cfg.warmup:
                sharing.start()
            comm.Barrier()
            tracer.events.clear()
            start = tracer.now()
            loss, stats = pipe.forward_backward(step)
            pipe.optimizer_step()
            rows = tracer.take()          # the step is over for this rank; gathering is not timed
            if step < cfg.warmup:
                continue
            ids = np.tile([step, comm.Get_rank()], (len(rows), 1))
            event_rows.append(gather_rows(comm, np.hstack([ids, rows])))
            step_rows.append(gather_rows(comm, np.array([[step, comm.Get_rank(), grid.stage, grid.replica, start,
                                                          stats.peak_in_flight, stats.peak_saved_bytes,
                                                          stats.peak_device_bytes, loss]])))
    contention = sharing.stop()
    if comm.Get_rank() != 0:
        return None
    events = events_frame(np.vstack(event_rows), ("step", "rank") + EVENT_FIELDS)
    per_rank = pd.DataFrame(np.vstack(step_rows), columns=list(_STEP_FIELDS))
    steps = [_step_record(cfg, events[events["step"] == s], per_rank[per_rank["step"] == s])
             for s in sorted(per_rank["step"].unique())]
    summary = _summary(cfg, steps, per_rank, events, float(skews.max()))
    summary.update(contention)
    record = cfg.schedule_record()
    summary["bubble_simulated"] = simulated_bubble(Run(Path(), {"config": cfg.to_dict(), "schedule": record}, events))
    summary["path"] = (str(write_run(results_dir, cfg.to_dict(), env, steps, summary, events, record))
                       if results_dir else None)
    summary["environment"] = env
    return summary


def _step_record(cfg: RunConfig, events: pd.DataFrame, ranks: pd.DataFrame) -> dict:
    """One step's metrics from its events; ``ranks`` holds each rank's step start and counters."""
    start = float(ranks["start"].min())
    metrics = step_metrics(events, start=start,
                           ranks=sorted(ranks["rank"].astype(int)))
    metrics["throughput"] = cfg.batch / metrics["iteration_time"]
    if cfg.impl == "torch":          # its transfers happen inside PyTorch, unobserved
        metrics["overlap"] = metrics["exposed_comm"] = float("nan")
        if not backward_observed(cfg.schedule):   # its split backward is not timed: no busy time to count
            metrics["bubble_mean"] = metrics["bubble_max"] = metrics["utilization"] = float("nan")
            metrics["busy_time_mean"] = float("nan")
            metrics["bubble_per_rank"] = [float("nan")] * len(metrics["bubble_per_rank"])
    metrics["step"] = int(ranks["step"].iloc[0])
    metrics["loss"] = float(ranks["loss"].iloc[0])
    metrics["events"] = int(len(events))
    return metrics


def _summary(cfg: RunConfig, steps: list[dict], per_rank: pd.DataFrame, events: pd.DataFrame, skew: float) -> dict:
    med = {k: float(np.median([s[k] for s in steps])) for k in
           ("step_time", "iteration_time", "throughput", "bubble_mean", "bubble_max", "utilization", "overlap",
            "exposed_comm", "allreduce_time", "optimizer_time")}
    by_stage = per_rank.groupby("stage")
    events_per_step = len(events) / len(steps) / per_rank["rank"].nunique()
    return {
        **{f"{k}_median": v for k, v in med.items()},
        "step_time_min": float(min(s["step_time"] for s in steps)),
        "step_time_max": float(max(s["step_time"] for s in steps)),
        # a schedule file has no closed form; its peak in-flight comes from its own plan
        "bubble_theory": float("nan") if cfg.schedule_file else
        theory.bubble_fraction(cfg.schedule, cfg.pp, cfg.microbatches, cfg.chunks),
        "peak_in_flight": [int(v) for v in by_stage["peak_in_flight"].max()],
        "peak_in_flight_theory": [peak_in_flight(order) for order in cfg.plan()[0]] if cfg.schedule_file else
        [theory.peak_in_flight(cfg.schedule, cfg.pp, cfg.microbatches, r, cfg.chunks) for r in range(cfg.pp)],
        "peak_saved_bytes": [int(v) for v in by_stage["peak_saved_bytes"].max()],
        "peak_device_bytes": [int(v) for v in by_stage["peak_device_bytes"].max()],
        "clock_skew_max": skew,
        "trace_overhead": events_per_step * record_cost() / med["step_time"] if med["step_time"] > 0 else 0.0,
        "steps": len(steps),
    }
