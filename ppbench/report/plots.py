"""Report pictures (matplotlib, no display needed): timelines, bubble vs microbatches, scaling,
memory, overlap. Each function writes one PNG and returns its path, or None if the data lacks
what it needs."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ppbench.measure.events import COMPUTE, TRANSFER  # noqa: E402
from ppbench.measure.results import Run, atomic_write  # noqa: E402
from ppbench.plan import theory  # noqa: E402
from ppbench.plan.comm import add_communication  # noqa: E402
from ppbench.plan.files import from_record  # noqa: E402
from ppbench.plan.schedules import SCHEDULES, build_schedule, placement_for  # noqa: E402
from ppbench.sim.calibrate import measured_costs, resolved_transport  # noqa: E402
from ppbench.sim.costs import Costs  # noqa: E402
from ppbench.sim.simulator import simulate, simulated_events  # noqa: E402

__all__ = ["draw_all", "CAPTIONS"]

COLOURS = {"F": "#4c72b0", "B": "#55a868", "I": "#8fbf7f", "W": "#8172b2", "WAIT": "#dddddd"}
CAPTIONS = {
    "timeline": "One step per rank, measured (top; times on rank 0's clock) and simulated with the mean F, B, W, "
                "message latency and per-action overhead measured in the run (bottom). F blue, B green "
                "(I light green), W purple; grey = blocked waiting for a transfer; thin lines = "
                "transfers in flight (post to observed completion); white = idle.",
    "bubble": "Bubble fraction (share of step time idle, mean over ranks) against microbatches m, per schedule; "
              "points measured, dashed lines each schedule's closed-form theory for the same p.",
    "scaling": "Throughput (samples/s) and utilization against the number of ranks ('GPUs') per schedule, workload "
               "and model size, at the largest m measured.",
    "memory": "Peak in-flight microbatches (theory as black ticks) and peak saved-activation KiB per pipeline stage.",
    "overlap": "Communication overlap (share of transfer time during which the rank computed) by transport.",
}


def _save(fig, path: Path) -> Path:
    """Write the picture atomically (a half-written PNG never carries the final name)."""
    fig.tight_layout()
    try:
        return atomic_write(path, lambda partial: fig.savefig(partial, dpi=110, format="png"))
    finally:
        plt.close(fig)


def file_label(text: str) -> str:
    """``text`` made safe as part of a file name (letters, digits, ``-``, ``_``, ``.`` only)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text).strip(".") or "_"


def draw_all(runs: list[Run], table: pd.DataFrame, out: Path) -> list[Path]:
    made = []
    for schedule in sorted(table["schedule"].unique()):
        run = _representative(runs, schedule)
        if run is not None:
            made.append(timeline(run, out / f"timeline-{file_label(schedule)}.png"))
    for fn, name in ((bubble_vs_microbatches, "bubble"), (scaling, "scaling"), (overlap_by_transport, "overlap")):
        path = fn(table, out / f"{name}.png")
        if path:
            made.append(path)
    path = memory(runs, out / "memory.png")
    if path:
        made.append(path)
    return made


def _representative(runs: list[Run], schedule: str) -> Run | None:
    """The run whose timeline says most: most stages, then m nearest 2p, synthetic first."""
    mine = [r for r in runs if r.label == schedule]
    if not mine:
        return None
    return max(mine, key=lambda r: (r.config["pp"], -abs(r.config["microbatches"] - 2 * r.config["pp"]),
                                    r.config["workload"] == "synthetic", r.meta["run_id"]))


def timeline(run: Run, path: Path) -> Path:
    cfg = run.config
    events = run.events[run.events["step"] == run.events["step"].max()]
    events = events[events["rank"] < cfg["pp"]]                      # replica 0 only
    origin = events["start"].min()
    measured = events.assign(start=(events["start"] - origin) * 1e3, end=(events["end"] - origin) * 1e3)
    ms = measured_costs(events)
    costs = Costs(*(1e3 * x for x in (ms.fwd, ms.bwd, ms.wgrad, ms.comm, ms.overhead)))
    if run.meta.get("schedule"):                   # a schedule file: the actions the run recorded
        recorded = from_record(run.meta["schedule"])
        placement = recorded.placement
        plan = [add_communication(list(acts), placement) for acts in recorded.ranks]
    else:
        v = cfg.get("chunks", 1)
        placement = placement_for(cfg["schedule"], cfg["pp"], v)
        plan = build_schedule(cfg["schedule"], cfg["pp"], cfg["microbatches"], v)
    sim = simulated_events(simulate(plan, costs, resolved_transport(cfg), placement), placement, cfg["microbatches"])
    fig, axes = plt.subplots(2, 1, figsize=(11, 1.2 + 0.9 * cfg["pp"]), sharex=True)
    simulated = (f"simulated with the run's mean costs (F={costs.fwd:.2f}, B={costs.bwd:.2f}, "
                 f"message {costs.comm:.2f}, overhead {costs.overhead:.2f} ms)")
    for ax, ev, title in ((axes[0], measured, "measured"), (axes[1], sim, simulated)):
        _draw_lanes(ax, ev, cfg["pp"])
        ax.set_title(f"{run.label} p={cfg['pp']} m={cfg['microbatches']} {cfg['workload']}: {title}",
                     fontsize=10, loc="left")
    axes[1].set_xlabel("time since step start (ms)")
    return _save(fig, path)


def _draw_lanes(ax, ev: pd.DataFrame, p: int) -> None:
    for _, e in ev.iterrows():
        y = e["rank"]
        if e["op"] in COMPUTE or e["op"] == "WAIT":
            ax.barh(y, e["end"] - e["start"], left=e["start"], height=0.7, color=COLOURS[e["op"]],
                    edgecolor="white" if e["op"] != "WAIT" else "none", linewidth=0.5)
            if e["op"] in COMPUTE and e["end"] - e["start"] > 0:
                ax.text((e["start"] + e["end"]) / 2, y, f"{e['op']}{e['mb']}", ha="center", va="center", fontsize=6,
                        color="white")
        elif e["op"] in TRANSFER:
            offset = -0.42 if e["op"].startswith("SEND") else 0.42
            ax.plot([e["start"], e["end"]], [y + offset] * 2, color="#c44e52", linewidth=0.8)
    ax.set_yticks(range(p), [f"rank {r}" for r in range(p)])
    ax.set_ylim(p - 0.5, -0.5)


def bubble_vs_microbatches(table: pd.DataFrame, path: Path) -> Path | None:
    data = table[table["pp"] > 1]
    if data.empty:
        return None
    schedules = sorted(data["schedule"].unique())
    fig, axes = plt.subplots(1, len(schedules), figsize=(4.2 * len(schedules), 3.6), sharey=True, squeeze=False)
    for ax, schedule in zip(axes[0], schedules):
        sel = data[data["schedule"] == schedule]
        for i, p in enumerate(sorted(sel["pp"].unique())):
            colour = f"C{i}"
            pts = sel[sel["pp"] == p]
            for work, marker in (("synthetic", "o"), ("model", "s")):
                w = pts[pts["workload"] == work]
                ax.plot(w["microbatches"], w["bubble"], marker, color=colour, alpha=0.8,
                        label=f"p={p} {work}" if len(w) else None)
            ms = np.arange(1, max(sel["microbatches"].max(), 2) + 1)
            v = int(sel["chunks"].iloc[0])
            if schedule in SCHEDULES:               # a schedule file has no closed form to draw
                ax.plot(ms, [theory.bubble_fraction(schedule, p, m, v) for m in ms], "--", color=colour,
                        linewidth=1)
        ax.set_xscale("log", base=2)
        ax.set_title(schedule)
        ax.set_xlabel("microbatches m")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("bubble fraction (idle share of step)")
    return _save(fig, path)


def scaling(table: pd.DataFrame, path: Path) -> Path | None:
    if table["world_size"].nunique() < 2:
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
    biggest = table.groupby(["schedule", "workload", "model", "size", "world_size"])["microbatches"].transform("max")
    data = table[table["microbatches"] == biggest]
    for (schedule, work, model, size), sel in data.groupby(["schedule", "workload", "model", "size"]):
        sel = sel.sort_values("world_size")
        label = f"{schedule} {'synthetic' if work == 'synthetic' else f'{model}/{size}'}"
        ax1.plot(sel["world_size"], sel["throughput"], "o-", label=label)
        ax2.plot(sel["world_size"], sel["utilization"], "o-", label=label)
    ax1.set_ylabel("throughput (samples/s)")
    ax2.set_ylabel("utilization (1 - bubble)")
    for ax in (ax1, ax2):
        ax.set_xlabel("ranks ('GPUs')")
        ax.set_xticks(sorted(data["world_size"].unique()))
    ax1.set_yscale("log")
    ax2.legend(fontsize=7)
    return _save(fig, path)


def memory(runs: list[Run], path: Path) -> Path | None:
    model_runs = [r for r in runs if r.config["workload"] == "model" and r.config["pp"] > 1]
    if not model_runs:
        return None
    pick = {}
    for r in model_runs:   # per schedule: most stages, then most microbatches
        key = (r.config["pp"], r.config["microbatches"])
        if r.label not in pick or key > (pick[r.label].config["pp"], pick[r.label].config["microbatches"]):
            pick[r.label] = r
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.6))
    width = 0.8 / len(pick)
    for i, (schedule, r) in enumerate(sorted(pick.items())):
        s, c = r.meta["summary"], r.config
        x = np.arange(len(s["peak_in_flight"])) + i * width
        label = f"{schedule} p={c['pp']} m={c['microbatches']}"
        ax1.bar(x, s["peak_in_flight"], width, label=label)
        if isinstance(s.get("peak_in_flight_theory"), list):
            ax1.plot(x, s["peak_in_flight_theory"], "k_", markersize=12)
        ax2.bar(x, np.array(s["peak_saved_bytes"]) / 1024, width, label=label)
    ax1.set_ylabel("peak in-flight microbatches")
    ax2.set_ylabel("peak saved activations (KiB)")
    for ax in (ax1, ax2):
        ax.set_xlabel("pipeline stage")
        ax.legend(fontsize=7)
    return _save(fig, path)


def overlap_by_transport(table: pd.DataFrame, path: Path) -> Path | None:
    data = table[(table["pp"] > 1) & table["overlap"].notna()]
    if data.empty:
        return None
    agg = data.groupby(["schedule", "transport"])["overlap"].median().unstack("transport")
    ax = agg.plot.bar(figsize=(6, 3.6), rot=0)
    ax.set_ylabel("communication overlap")
    ax.set_ylim(0, 1)
    ax.set_xlabel("schedule (median over configurations with p > 1)")
    return _save(ax.figure, path)
