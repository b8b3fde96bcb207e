"""``ppbench advise --verify K``: the top K predictions (and 1F1B with m = 4p, the usual default)
run with ``ppbench run`` under MPI, each with the layer split advise chose, and measured beside
what was predicted."""

from __future__ import annotations

import numpy as np

from ppbench.advise.predict import Prediction, split_text
from ppbench.advise.profile_file import Profile
from ppbench.config import ConfigError, RunConfig

__all__ = ["verify", "run_config", "default_candidate"]


def run_config(profile: Profile, pred: Prediction, batch: int, repeats: int) -> RunConfig:
    """The ``ppbench run`` configuration of a prediction: same model, dtype, optimizer, threads, split.
    A synthetic profile runs the synthetic workload with each rank's F and B per microbatch and the
    message size of its microbatch."""
    c = pred.candidate
    env = profile.record["environment"]
    common = dict(schedule=c.schedule if not c.schedule_file else "1f1b", schedule_file=c.schedule_file, pp=c.p,
                  dp=c.d, microbatches=c.m, chunks=c.v, global_batch=batch, dtype=profile.record["dtype"],
                  optimizer=profile.record["optimizer"], threads=int(env.get("threads_per_rank", 0)), warmup=2,
                  repeats=repeats)
    if profile.workload == "synthetic":
        at = profile.at(c.microbatch_size)
        per_stage = len(c.split[0])                       # equal stages
        return RunConfig(workload="synthetic", t_fwd=float(at["fwd"][:per_stage].sum()) * c.v,
                         t_bwd=float(at["bwd"][:per_stage].sum()) * c.v,
                         message_bytes=max(4, profile.message_bytes_per_sample * c.microbatch_size), **common)
    model = {k: v for k, v in profile.model.items() if k in ("model", "size", "layers", "width", "heads", "embd",
                                                              "context", "vocab")}
    return RunConfig(**model, split=split_text(c.split), **common)


def default_candidate(ranked: list[Prediction], top: Prediction) -> Prediction | None:
    """1F1B on the best prediction's p and d with m = 4p, or the 1F1B m nearest to it."""
    ones = [r for r in ranked if r.candidate.schedule == "1f1b" and not r.candidate.schedule_file
            and (r.candidate.p, r.candidate.d) == (top.candidate.p, top.candidate.d)]
    if not ones:
        return None
    return min(ones, key=lambda r: (abs(r.candidate.m - 4 * r.candidate.p), r.candidate.m))


def verify(profile: Profile, ranked: list[Prediction], k: int, batch: int, results: str, repeats: int,
           timeout: float, rounds: int = 3) -> list[dict]:
    """Run the top ``k`` predictions and the 1F1B default, ``rounds`` times in alternation (round 1 runs
    each once, then round 2, ...: a host that drifts shifts them all alike); one row per candidate,
    predicted beside the median over rounds of each run's median iteration time."""
    from ppbench.measure.results import load_runs, run_key
    from ppbench.run.sweep import run_sweep

    chosen = [(i + 1, pred, "top") for i, pred in enumerate(ranked[:k])]
    default = default_candidate(ranked, ranked[0])
    if default is not None and all(default is not pred for _, pred, _ in chosen):
        chosen.append((ranked.index(default) + 1, default, "1F1B m=4p"))
    configs, rows = [], []
    for position, pred, why in chosen:
        cfg = run_config(profile, pred, batch, repeats)
        try:
            cfg.validate()
        except ConfigError as exc:
            rows.append(_row(position, pred, why, [], f"not runnable: {exc}"))
            continue
        configs.append((position, pred, why, cfg))
    by_key: dict[str, list] = {}
    for round_ in range(rounds):
        directory = f"{results}/round-{round_ + 1}"
        run_sweep([cfg for *_, cfg in configs], directory, redo=True, timeout=timeout, show_progress=False)
        for run in load_runs(directory)[0]:
            by_key.setdefault(run.meta["config_key"], []).append(run)
    for position, pred, why, cfg in configs:
        runs = by_key.get(run_key(cfg), [])
        row = _row(position, pred, why, runs, "" if runs else "the run failed (see its message above)")
        row.update(_with_measured_compute(profile, pred, runs, row["measured_iteration_time"]))
        rows.append(row)
    return sorted(rows, key=lambda r: r["predicted_rank"])


def _with_measured_compute(profile: Profile, pred: Prediction, runs: list, measured: float) -> dict:
    """The prediction again with the runs' own per-stage compute times (medians over rounds), and the
    ratio of measured to predicted compute: whether an error is the compute profile's (the machine
    computed at another speed than when profiled) or the schedule model's."""
    from copy import copy

    from ppbench.advise.predict import predict

    nan = float("nan")
    if not runs:
        return {"compute_ratio": nan, "predicted_with_measured_compute": nan, "error_with_measured_compute": nan}
    stage_compute = {}
    for op in ("F", "I", "W", "B"):
        per_run = np.array([r.meta["summary"]["compute_time_per_stage"][op] for r in runs], dtype=float)
        if np.isfinite(per_run).any():            # ops the schedule ran: medians over rounds, per stage
            stage_compute[op] = list(np.nanmedian(per_run, axis=0))
    again = predict(profile, copy(pred.candidate), stage_compute=stage_compute)
    ratios = [m / e for op, values in stage_compute.items() for m, e in zip(values, pred.stage_compute[op])
              if np.isfinite(m) and e > 0]
    with_compute = again.iteration_time if again is not None else nan
    return {"compute_ratio": float(np.median(ratios)) if ratios else nan,
            "predicted_with_measured_compute": with_compute,
            "error_with_measured_compute": with_compute / measured - 1 if measured == measured and measured > 0
            else nan}


def _row(position: int, pred: Prediction, why: str, runs: list, note: str) -> dict:
    c = pred.candidate
    nan = float("nan")

    def median(key: str) -> float:
        return float(np.median([r.meta["summary"][key] for r in runs])) if runs else nan

    measured = median("iteration_time_median")
    each = [r.meta["summary"]["iteration_time_median"] for r in runs]
    return {"predicted_rank": position, "why": why, "schedule": c.label, "p": c.p, "d": c.d, "m": c.m, "v": c.v,
            "split": split_text(c.split), "predicted_iteration_time": pred.iteration_time,
            "predicted_step_time": pred.step_time, "predicted_bubble": pred.bubble,
            "measured_iteration_time": measured, "measured_min": min(each, default=nan),
            "measured_max": max(each, default=nan), "rounds": len(runs),
            "measured_step_time": median("step_time_median"), "measured_bubble": median("bubble_mean_median"),
            "error": pred.iteration_time / measured - 1 if measured == measured and measured > 0 else nan,
            "run": str(runs[0].path) if runs else "", "note": note}
