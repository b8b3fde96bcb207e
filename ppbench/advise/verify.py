"""``ppbench advise --verify K``: the top K predictions (and 1F1B with m = 4p, the usual default)
run with ``ppbench run`` under MPI, each with the layer split advise chose, and measured beside
what was predicted."""

from __future__ import annotations

from ppbench.advise.predict import Prediction
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
    split = ",".join(str(len(r)) for r in c.split)
    return RunConfig(**model, split=split, **common)


def default_candidate(ranked: list[Prediction], top: Prediction) -> Prediction | None:
    """1F1B on the best prediction's p and d with m = 4p, or the 1F1B m nearest to it."""
    ones = [r for r in ranked if r.candidate.schedule == "1f1b" and not r.candidate.schedule_file
            and (r.candidate.p, r.candidate.d) == (top.candidate.p, top.candidate.d)]
    if not ones:
        return None
    return min(ones, key=lambda r: (abs(r.candidate.m - 4 * r.candidate.p), r.candidate.m))


def verify(profile: Profile, ranked: list[Prediction], k: int, batch: int, results: str, repeats: int,
           timeout: float) -> list[dict]:
    """Run the top ``k`` predictions and the 1F1B default; one row per run, predicted beside measured."""
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
            rows.append(_row(position, pred, why, None, f"not runnable: {exc}"))
            continue
        configs.append((position, pred, why, cfg))
    run_sweep([cfg for *_, cfg in configs], results, redo=True, timeout=timeout, show_progress=False)
    runs, _ = load_runs(results)
    by_key: dict[str, object] = {}
    for run in runs:
        by_key[run.meta["config_key"]] = run
    for position, pred, why, cfg in configs:
        run = by_key.get(run_key(cfg))
        rows.append(_row(position, pred, why, run, "" if run else "the run failed (see its message above)"))
    return sorted(rows, key=lambda r: r["predicted_rank"])


def _row(position: int, pred: Prediction, why: str, run, note: str) -> dict:
    c = pred.candidate
    nan = float("nan")
    summary = run.meta["summary"] if run is not None else {}
    measured = summary.get("iteration_time_median", nan)
    return {"predicted_rank": position, "why": why, "schedule": c.label, "p": c.p, "d": c.d, "m": c.m, "v": c.v,
            "split": ",".join(str(len(r)) for r in c.split), "predicted_iteration_time": pred.iteration_time,
            "predicted_step_time": pred.step_time, "predicted_bubble": pred.bubble,
            "measured_iteration_time": measured, "measured_step_time": summary.get("step_time_median", nan),
            "measured_bubble": summary.get("bubble_mean_median", nan),
            "error": pred.iteration_time / measured - 1 if measured == measured and measured > 0 else nan,
            "run": str(run.path) if run is not None else "", "note": note}
