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
from ppbench.measure.metrics import compute_times, step_metrics
from ppbench.measure.results import Run, write_run
from ppbench.plan import theory
from ppbench.plan.schedules import peak_in_flight
from ppbench.run.contention import CoreSharing
from ppbench.run.environment import environment, set_threads
from ppbench.run.grid import Grid
from ppbench.run.pipeline import make_rank
from ppbench.run.serial import SerialBaseline, polite_barrier, serial_limits
from ppbench.run.stages import polling_hook_cost
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
    event_rows, step_rows, poll_rows = [], [], []
    sharing = CoreSharing(comm)
    with Grid(comm, cfg.pp, cfg.dp) as grid:
        pipe = make_rank(cfg, grid, tracer)
        env["device_used"] = str(pipe.device)
        env["cuda_aware_mpi"] = f"{pipe.cuda_aware} ({pipe.cuda_aware_how})"
        env["wait_policy"] = pipe.wait_policy.describe() if hasattr(pipe, "wait_policy") else "inside PyTorch"
        # rank 0 holds the serial baseline: one of its steps follows each measured pipeline step
        serial = (SerialBaseline(cfg, pipe.device) if comm.Get_rank() == 0 else False) if cfg.serial_steps else None
        for step in range(cfg.warmup + cfg.repeats):
            if step == cfg.warmup:
                sharing.start()
            pipe.prepare(step)            # data and cleared gradients: ready before the step, as in training
            comm.Barrier()
            tracer.events.clear()
            start = tracer.now()
            polls = _polls(pipe)
            loss, stats = pipe.forward_backward(step)
            pipe.optimizer_step()
            rows = tracer.take()          # the step is over for this rank; gathering is not timed
            if step < cfg.warmup:
                continue
            poll_rows.append(np.subtract(_polls(pipe), polls))
            if serial is not None and step - cfg.warmup < cfg.serial_steps:
                _serial_step(serial, comm, step)
            ids = np.tile([step, comm.Get_rank()], (len(rows), 1))
            event_rows.append(gather_rows(comm, np.hstack([ids, rows])))
            step_rows.append(gather_rows(comm, np.array([[step, comm.Get_rank(), grid.stage, grid.replica, start,
                                                          stats.peak_in_flight, stats.peak_saved_bytes,
                                                          stats.peak_device_bytes, loss]])))
        contention = sharing.stop()
        if serial is not None:
            for extra in range(cfg.warmup + cfg.repeats, cfg.warmup + cfg.serial_steps):   # more than repeats
                _serial_step(serial, comm, extra)
            serial = serial.result() if comm.Get_rank() == 0 else None
        # this rank's polls per step and seconds inside them, then the hooks' cost of each poll
        polling = comm.gather(np.mean(poll_rows, axis=0).tolist() + [_hook_cost(cfg)], root=0)
    if comm.Get_rank() != 0:
        return None
    events = events_frame(np.vstack(event_rows), ("step", "rank") + EVENT_FIELDS)
    per_rank = pd.DataFrame(np.vstack(step_rows), columns=list(_STEP_FIELDS))
    steps = [_step_record(cfg, events[events["step"] == s], per_rank[per_rank["step"] == s])
             for s in sorted(per_rank["step"].unique())]
    summary = _summary(cfg, steps, per_rank, events, float(skews.max()))
    summary.update(contention)
    busiest = max(polls * hook + inside for polls, inside, hook in polling)
    summary["poll_overhead"] = busiest / summary["step_time_median"] if summary["step_time_median"] > 0 else 0.0
    if serial:
        summary.update(serial_limits(serial, cfg.pp, summary["bubble_theory"], summary["iteration_time_median"]))
    record = cfg.schedule_record()
    summary["bubble_simulated"] = simulated_bubble(Run(Path(), {"config": cfg.to_dict(), "schedule": record}, events))
    summary["path"] = (str(write_run(results_dir, cfg.to_dict(), env, steps, summary, events, record))
                       if results_dir else None)
    summary["environment"] = env
    return summary


def _polls(pipe) -> tuple[int, float]:
    """(progress calls, seconds inside them) of this rank's transport so far; (0, 0) inside PyTorch."""
    transport = getattr(pipe, "transport", None)
    return (transport.polls, transport.poll_time) if transport is not None else (0, 0.0)


def _hook_cost(cfg: RunConfig) -> float:
    """What a model stage's polling hooks cost per poll (none for the synthetic workload, which polls
    between its slices directly)."""
    return 0.0 if cfg.workload == "synthetic" or cfg.impl == "torch" else polling_hook_cost()


def _serial_step(serial, comm: MPI.Comm, step: int) -> None:
    """One serial-baseline step on rank 0 while the other ranks sleep (``serial`` is False there)."""
    polite_barrier(comm)
    if serial:
        serial.step(step)
    polite_barrier(comm)


def _step_record(cfg: RunConfig, events: pd.DataFrame, ranks: pd.DataFrame) -> dict:
    """One step's metrics from its events; ``ranks`` holds each rank's step start and counters."""
    start = float(ranks["start"].min())
    metrics = step_metrics(events, start=start,
                           ranks=sorted(ranks["rank"].astype(int)))
    metrics["throughput"] = cfg.batch / metrics["iteration_time"]
    if cfg.impl == "torch":          # its transfers happen inside PyTorch, unobserved
        metrics["overlap"] = metrics["exposed_comm"] = float("nan")
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
        "compute_time_per_stage": compute_times(events, cfg.plan()[1].num_stages),
        "clock_skew_max": skew,
        "trace_overhead": events_per_step * record_cost() / med["step_time"] if med["step_time"] > 0 else 0.0,
        "steps": len(steps),
    }
