"""What a report's first screen says: sentences computed from the results, never written by hand.

Each :class:`Finding` names the configurations (config keys: the table rows) and the picture
behind it, so the page can link to them. Four kinds, each a headline and its details:

- ``winners``: for each workload and (d, p, m) where several schedules ran, the fastest by
  throughput and its margin over the next;
- ``theory``: where the measured bubble departs from the closed form by more than
  :data:`THEORY_GAP`, and what the run's own costs, simulated, attribute it to (message latency,
  per-action overhead, unequal stage costs; the rest is unexplained: noise, contention);
- ``efficiency``: iteration time against the serial limit, where runs measured a serial baseline;
- ``pytorch``: ppbench's executor against torch.distributed.pipelining on the same configuration;
- ``advice``: what ``ppbench advise --verify`` predicted and measured.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ppbench.measure.results import Run

__all__ = ["Finding", "THEORY_GAP", "findings", "winners", "theory_departures", "efficiency", "pytorch",
           "workload_label", "schedule_label", "file_label", "attributions", "advice", "KINDS", "pytorch_pairs"]

#: the kinds of finding in page order, with their headings
KINDS = {"winners": "Which schedule is fastest", "theory": "Bubble against theory",
         "efficiency": "Against the serial limit", "pytorch": "Against PyTorch's own schedules",
         "advice": "Advice, predicted and measured"}

#: measured bubble further than this from its closed form is a finding
THEORY_GAP = 0.05
_SAME_CONFIG = ["workload", "model", "size", "dtype", "dp", "pp", "microbatches"]


def pytorch_pairs(table: pd.DataFrame) -> pd.DataFrame:
    """Rows of ppbench's executor joined with --impl torch rows of the same schedule and configuration
    (the PyTorch side's columns end in ``_torch``)."""
    return table[table["impl"] == "torch"].merge(table[table["impl"] == "ppbench"], on=["schedule", *_SAME_CONFIG],
                                                  suffixes=("_torch", ""))


def _beside_theory(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(configurations with p > 1 and a closed form, run by ppbench's executor; those more than
    THEORY_GAP away from it)."""
    rows = table[(table["pp"] > 1) & table["bubble_theory"].notna() & (table["impl"] == "ppbench")]
    return rows, rows[(rows["bubble"] - rows["bubble_theory"]).abs() > THEORY_GAP]


@dataclass
class Finding:
    kind: str                                 # winners, theory, efficiency, pytorch, advice
    text: str
    rows: list[str] = field(default_factory=list)      # config keys
    figure: str = ""                          # the picture's file stem
    headline: bool = False                    # shown on the first screen (else among the details)


def workload_label(row) -> str:
    return "synthetic" if row["workload"] == "synthetic" else f"{row['model']}/{row['size']} {row['dtype']}"


def schedule_label(row) -> str:
    """The schedule, with v where a chunked schedule ran at other than its usual 2, and PyTorch's
    implementation marked."""
    chunks = int(row.get("chunks", 1) or 1)
    torch = row.get("impl", "ppbench") == "torch"
    return row["schedule"] + (f" v={chunks}" if chunks > 2 else "") + (" (PyTorch)" if torch else "")


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%" if abs(x) >= 0.095 else f"{100 * x:.1f}%"


def winners(table: pd.DataFrame) -> list[Finding]:
    """Fastest schedule per workload and (d, p, m), with its margin; a headline per workload."""
    own = table[table["impl"] == "ppbench"].assign(work=lambda t: t.apply(workload_label, axis=1),
                                                   label=lambda t: t.apply(schedule_label, axis=1))
    out: list[Finding] = []
    for work, sel in own.groupby("work", sort=True):
        details, wins, margins = [], Counter(), []
        for (dp, pp, m), group in sel.groupby(["dp", "pp", "microbatches"], sort=True):
            if group["label"].nunique() < 2:
                continue
            ranked = group.sort_values("throughput", ascending=False)
            first, second = ranked.iloc[0], ranked.iloc[1]
            margin = first["throughput"] / second["throughput"] - 1
            wins[first["label"]] += 1
            margins.append(margin)
            where = f"p={pp}, m={m}" + (f", d={dp}" if dp > 1 else "")
            details.append(Finding("winners", f"{work}, {where}: {first['label']} is fastest "
                                   f"({first['throughput']:.4g} samples/s), {_pct(margin)} ahead of {second['label']} "
                                   f"({second['throughput']:.4g}).", [first["config_key"], second["config_key"]],
                                   f"heatmap-{file_label(work)}"))
        if not details:
            continue
        total = sum(wins.values())
        tally = ", ".join(f"{name} in {n}" for name, n in wins.most_common(4))
        margin = _pct(float(np.median(margins)))
        out.append(Finding("winners", f"{work}: across {total} (p, m) configurations with two or more schedules, "
                           f"the fastest is {tally}; median margin over the runner-up {margin}.",
                           [k for d in details for k in d.rows[:1]], f"heatmap-{file_label(work)}", headline=True))
        out += details
    return out


def theory_departures(table: pd.DataFrame, attribution: dict[str, dict] | None = None) -> list[Finding]:
    """Configurations whose measured bubble is more than THEORY_GAP from the closed form, with what the
    simulation of the run's own costs attributes the gap to (``attribution``: config key ->
    :func:`ppbench.sim.calibrate.bubble_attribution`; missing keys are described without it)."""
    rows, far = _beside_theory(table)
    attribution = attribution or {}
    details, causes = [], Counter()
    for _, r in far.iterrows():
        where = f"{schedule_label(r)} p={r['pp']} m={r['microbatches']} {workload_label(r)}"
        text = f"{where}: measured bubble {r['bubble']:.2f} against theory {r['bubble_theory']:.2f}"
        a = attribution.get(r["config_key"])
        if a is None or not np.isfinite(a.get("simulated", np.nan)):
            causes["not simulated"] += 1
            details.append(Finding("theory", text + ".", [r["config_key"]], "bubble"))
            continue
        parts = {"message latency": a["simulated"] - a["no_latency"], "per-action overhead":
                 a["simulated"] - a["no_overhead"], "unequal stage costs": a["free"] - r["bubble_theory"]}
        unexplained = r["bubble"] - a["simulated"]
        main = max(parts, key=lambda k: parts[k])
        if abs(unexplained) > max(abs(v) for v in parts.values()):
            main = "not explained by the simulation (noise or contention)"
        causes[main] += 1
        text += (f"; the run's own costs, simulated, give {a['simulated']:.2f}: message latency "
                 f"({1e6 * a['latency']:.0f} us) adds {parts['message latency']:+.2f}, per-action overhead "
                 f"({1e6 * a['overhead']:.0f} us) {parts['per-action overhead']:+.2f}, unequal stage costs "
                 f"{parts['unequal stage costs']:+.2f}; {unexplained:+.2f} is left unexplained.")
        details.append(Finding("theory", text, [r["config_key"]], "bubble"))
    if rows.empty:
        return []
    head = (f"The measured bubble is within {THEORY_GAP} of its closed form in {len(rows) - len(far)} of {len(rows)} "
            f"configurations with p > 1")
    if len(far):
        head += "; where it is not, the largest share comes from " + ", ".join(
            f"{cause} ({n})" for cause, n in causes.most_common()) + "."
    else:
        head += "."
    return [Finding("theory", head, list(far["config_key"]), "bubble", headline=True), *details]


def efficiency(table: pd.DataFrame) -> list[Finding]:
    """Iteration time against the serial limit, where runs carried a serial baseline."""
    rows = table[table["efficiency"].notna()] if "efficiency" in table else table.iloc[:0]
    if rows.empty:
        return []
    out = []
    for work, sel in rows.assign(work=rows.apply(workload_label, axis=1)).groupby("work", sort=True):
        lo, hi = sel.loc[sel["efficiency"].idxmin()], sel.loc[sel["efficiency"].idxmax()]
        out.append(Finding("efficiency", f"{work}: efficiency against the serial limit is "
                           f"{sel['efficiency'].median():.2f} (median of {len(sel)}), from {lo['efficiency']:.2f} "
                           f"({schedule_label(lo)} p={lo['pp']} m={lo['microbatches']}) to {hi['efficiency']:.2f} "
                           f"({schedule_label(hi)} p={hi['pp']} m={hi['microbatches']}).",
                           list(sel["config_key"]), "efficiency", headline=True))
    return out


def pytorch(table: pd.DataFrame) -> list[Finding]:
    """ppbench's executor against torch.distributed.pipelining where both ran the same configuration."""
    pairs = pytorch_pairs(table)
    if pairs.empty:
        return []
    ratio = pairs["step_time_ms"] / pairs["step_time_ms_torch"]
    details = [Finding("pytorch", f"{r['schedule']} p={r['pp']} m={r['microbatches']} {workload_label(r)}: ppbench "
                       f"{r['step_time_ms']:.3g} ms, PyTorch {r['step_time_ms_torch']:.3g} ms (ratio {q:.2f}).",
                       [r["config_key"], r["config_key_torch"]], "pytorch")
               for (_, r), q in zip(pairs.iterrows(), ratio)]
    head = Finding("pytorch", f"ppbench's executor against torch.distributed.pipelining on the same {len(pairs)} "
                   f"configurations: step-time ratio ppbench / PyTorch median {ratio.median():.2f} "
                   f"(from {ratio.min():.2f} to {ratio.max():.2f}); ppbench faster in {(ratio < 1).sum()}. Runs of "
                   f"the two may come from different times; benchmarks/side_by_side.py alternates them.",
                   [k for d in details for k in d.rows], "pytorch", headline=True)
    return [head, *details]


def advice(records: list[dict]) -> list[Finding]:
    """What each ``ppbench advise --verify`` record found: its best prediction, its largest error, and
    where the measured fastest ranked among the predictions."""
    out = []
    for a in records:
        if not a.get("ranked"):
            continue
        top = a["ranked"][0]
        text = (f"{a['model']} on {a['world_size']} ranks, global batch {a['global_batch']}: ppbench advise predicts "
                f"{top['schedule']} p={top['p']} d={top['d']} m={top['m']}" + (f" v={top['v']}" if top["v"] > 1 else "")
                + f" fastest ({1e3 * top['iteration_time']:.4g} ms per iteration) of {a['considered']} candidates")
        measured = [v for v in a.get("verified") or [] if np.isfinite(v["measured_iteration_time"])]
        if measured:
            best = min(measured, key=lambda v: v["measured_iteration_time"])
            worst = max(measured, key=lambda v: abs(v["error"]))
            within = sum(abs(v["error"]) <= 0.10 for v in measured)
            text += (f"; of {len(measured)} verified, {within} within 10% of measured (largest error "
                     f"{worst['error']:+.0%}, {worst['schedule']} p={worst['p']} m={worst['m']}), and the measured "
                     f"fastest is predicted rank {best['predicted_rank']}")
        out.append(Finding("advice", text + ".", [], "advice", headline=True))
    return out


def findings(table: pd.DataFrame, attribution: dict[str, dict] | None = None,
             advice_records: list[dict] | None = None) -> list[Finding]:
    return [*winners(table), *theory_departures(table, attribution), *efficiency(table), *pytorch(table),
            *advice(advice_records or [])]


def attributions(runs: list[Run], table: pd.DataFrame) -> dict[str, dict]:
    """bubble_attribution for one run of each configuration whose bubble departs from theory."""
    from ppbench.sim.calibrate import bubble_attribution

    wanted = set(_beside_theory(table)[1]["config_key"])
    out = {}
    for run in runs:
        key = run.meta["config_key"]
        if key in wanted and key not in out:
            try:
                out[key] = bubble_attribution(run)
            except (ValueError, KeyError):          # a schedule this version cannot simulate
                continue
    return out


def file_label(text: str) -> str:
    """``text`` made safe as part of a file name (letters, digits, ``-``, ``_``, ``.`` only)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text).strip(".") or "_"
