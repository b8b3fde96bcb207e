"""What ``ppbench advise`` prints and writes: the ranked table, why the others were dropped, and
(with ``--verify``) predicted beside measured."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd

from ppbench.advise.profile_file import Profile
from ppbench.report.summary import ADVICE_FORMAT

__all__ = ["advice_record", "advice_text", "write_advice", "exclusion_kind", "ADVICE_FORMAT"]


def exclusion_kind(reason: str) -> str:
    """The reason without its numbers, to count exclusions by kind."""
    for marker in (" above the cap", "deadlocks", "outside the profiled sizes", "does not split over",
                   "layers", "needs microbatches to be a multiple", "needs at least as many microbatches",
                   "needs at least 2 stages", "chunks must be"):
        if marker in reason:
            return {" above the cap": "over the memory cap", "layers": "more stages than layers"}.get(marker, marker)
    return reason


def advice_record(profile: Profile, world: int, batch: int, cap: float | None, ranked: list, excluded: list,
                  seconds: float) -> dict:
    return {
        "format": ADVICE_FORMAT, "version": 1, "profile": profile.path, "model": profile.record.get("model_name", ""),
        "workload": profile.workload, "dtype": profile.record["dtype"], "world_size": world, "global_batch": batch,
        "memory_per_rank": cap, "seconds": seconds, "considered": len(ranked) + len(excluded),
        "ranked": [p.row(batch) for p in ranked],
        "excluded": [{"schedule": c.label, "p": c.p, "d": c.d, "m": c.m, "v": c.v, "reason": c.excluded}
                     for c in excluded],
        "excluded_by_kind": dict(Counter(exclusion_kind(c.excluded) for c in excluded).most_common()),
        "verified": [],
    }


def _ms(x: float) -> str:
    return f"{x * 1e3:.2f}"


def advice_text(record: dict, top: int) -> str:
    rows = record["ranked"][:top]
    head = (f"ppbench advise: {record['model']} ({record['workload']}, {record['dtype']}) on {record['world_size']} "
            f"ranks, global batch {record['global_batch']}"
            + (f", at most {record['memory_per_rank'] / 2**30:.3g} GiB per rank" if record["memory_per_rank"] else "")
            + f"\n{record['considered']} candidates in {record['seconds']:.2f} s: {len(record['ranked'])} ranked, "
            f"{len(record['excluded'])} excluded (predicted by simulation with the profile's costs)\n")
    table = pd.DataFrame([{
        "rank": k + 1, "schedule": r["schedule"], "p": r["p"], "d": r["d"], "m": r["m"], "v": r["v"],
        "mb": r["microbatch_size"], "step ms": _ms(r["step_time"]), "iter ms": _ms(r["iteration_time"]),
        "bubble": f"{r['bubble']:.3f}", "peak GiB/rank": f"{r['peak_memory_bytes'] / 2**30:.3g}",
        "layers/stage": r["split"] if len(r["split"]) <= 24 else r["split"][:21] + "..."} for k, r in enumerate(rows)])
    text = head + (table.to_string(index=False) if len(table) else "no candidate fits")
    if record["excluded_by_kind"]:
        text += "\n\nexcluded: " + "; ".join(f"{n} {kind}" for kind, n in record["excluded_by_kind"].items())
        examples = {}
        for e in record["excluded"]:
            examples.setdefault(exclusion_kind(e["reason"]), e)
        text += "\n" + "\n".join(f"  e.g. {e['schedule']} p={e['p']} d={e['d']} m={e['m']} v={e['v']}: {e['reason']}"
                                 for e in examples.values())
    if record["verified"]:
        text += "\n\n" + verified_text(record["verified"])
    return text


def verified_text(verified: list[dict]) -> str:
    table = pd.DataFrame([{
        "schedule": v["schedule"], "p": v["p"], "d": v["d"], "m": v["m"], "v": v["v"], "why": v["why"],
        "predicted ms": _ms(v["predicted_iteration_time"]),
        "measured ms": _ms(v["measured_iteration_time"]) if v["measured_iteration_time"] == v["measured_iteration_time"]
        else "failed",
        "min..max": f"{_ms(v['measured_min'])}..{_ms(v['measured_max'])}" if v["rounds"] else "-",
        "error": f"{v['error']:+.1%}" if v["error"] == v["error"] else "-",
        "pred bubble": f"{v['predicted_bubble']:.3f}", "meas bubble": f"{v['measured_bubble']:.3f}",
        "compute meas/pred": f"{v['compute_ratio']:.2f}" if v["compute_ratio"] == v["compute_ratio"] else "-",
        "error, measured compute": f"{v['error_with_measured_compute']:+.1%}"
        if v["error_with_measured_compute"] == v["error_with_measured_compute"] else "-"}
        for v in verified])
    measured = [v for v in verified if v["measured_iteration_time"] == v["measured_iteration_time"]]
    rounds = max(v["rounds"] for v in verified)
    lines = [f"verified (ppbench run; median over {rounds} alternated runs of each run's median iteration time):",
             table.to_string(index=False)]
    if measured:
        best = min(measured, key=lambda v: v["measured_iteration_time"])
        worst = max(abs(v["error"]) for v in measured)
        lines.append(f"largest |error| {worst:.1%}; measured fastest: {best['schedule']} p={best['p']} d={best['d']} "
                     f"m={best['m']} (predicted rank {best['predicted_rank']})")
        lines.append("compute meas/pred: the runs' per-stage compute over the predicted (the machine's speed then "
                     "against when profiled); error, measured compute: the prediction redone with the runs' own "
                     "compute times (what the schedule model alone gets wrong)")
    return "\n".join(lines)


def write_advice(stem: Path, record: dict) -> Path:
    """``stem``.json (everything) and ``stem``.csv (the ranked table, with measured columns when verified),
    each written whole or not at all."""
    from ppbench.measure.results import atomic_write

    stem.parent.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame(record["ranked"])
    if record["verified"] and len(table):
        measured = pd.DataFrame(record["verified"])[["schedule", "p", "d", "m", "v", "measured_iteration_time",
                                                     "measured_step_time", "measured_bubble", "error", "run"]]
        table = table.merge(measured, on=["schedule", "p", "d", "m", "v"], how="left")
    atomic_write(stem.with_suffix(".csv"), lambda tmp: table.to_csv(tmp, index=False))
    atomic_write(stem.with_suffix(".json"), lambda tmp: Path(tmp).write_text(json.dumps(record, indent=1) + "\n"))
    return stem
