"""Report pictures (matplotlib, no display needed): timelines, bubble vs microbatches, scaling,
memory, overlap. Each function writes one PNG and returns its path, or None if the data lacks
what it needs."""

from __future__ import annotations

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
from ppbench.report.findings import file_label  # noqa: E402
from ppbench.sim.calibrate import measured_costs, resolved_transport  # noqa: E402
from ppbench.sim.costs import Costs  # noqa: E402
from ppbench.sim.simulator import simulate, simulated_events  # noqa: E402

__all__ = ["draw_all", "default_timelines", "file_label", "CAPTIONS"]

COLOURS = {"F": "#4c72b0", "B": "#55a868", "I": "#8fbf7f", "W": "#8172b2", "WAIT": "#dddddd"}
CAPTIONS = {
    "timeline": "One step per rank, measured (top; times on rank 0's clock) and simulated with the mean F, B, W, "
                "message latency and per-action overhead measured in the run (bottom). F blue, B green "
                "(I light green), W purple; grey = blocked waiting for a transfer; thin lines = "
                "transfers in flight (post to observed completion); white = idle.",
    "bubble": "Bubble fraction (share of step time idle, mean over ranks) against microbatches m, one panel per "
              "number of stages p; points measured (circles synthetic, squares model), dashed lines each "
              "schedule's closed-form theory.",
    "heatmap": "Throughput of each schedule as a share of the fastest schedule in the same (p, m) column "
               "(1.00 = the winner), one replica (d = 1).",
    "scaling": "Throughput (samples/s) against the number of ranks ('GPUs'), one panel per workload and model, one "
               "line per schedule, at the largest m measured.",
    "efficiency": "Efficiency: the serial limit (the whole model on one rank, spread over p stages and stretched by "
                  "the theoretical bubble) over the measured iteration time, per configuration with a serial "
                  "baseline.",
    "pytorch": "Median step time of ppbench's executor beside torch.distributed.pipelining (--impl torch) on the "
               "same configurations.",
    "baseline": "Step time against the baseline result set, per configuration in both: green faster, red slower; "
                "the whisker spans min/max to max/min of the two sets' step times.",
    "advice": "ppbench advise --verify: predicted against measured iteration time of every verified candidate; "
              "the grey band is within 10%.",
    "memory": "Peak in-flight microbatches (theory as black ticks) and peak saved-activation KiB per pipeline stage.",
    "overlap": "Communication overlap (share of transfer time during which the rank computed) by transport.",
}


def _save(fig, path: Path, tight: bool = True) -> Path:
    """Write the picture atomically (a half-written PNG never carries the final name)."""
    if tight:
        fig.tight_layout()
    try:
        return atomic_write(path, lambda partial: fig.savefig(partial, dpi=110, format="png"))
    finally:
        plt.close(fig)


def draw_all(runs: list[Run], table: pd.DataFrame, out: Path, timelines: list[Run] | None = None,
             advice: list[dict] | None = None) -> list[Path]:
    """Every picture the data allows: ``timelines`` (default: one per schedule at its largest p and m),
    then the summary pictures, and ``advice`` (predicted beside measured) when given."""
    made = []
    for run in (timelines if timelines is not None else default_timelines(runs)):
        c = run.config
        made.append(timeline(run, out / file_label(f"timeline-{run.label}-p{c['pp']}-m{c['microbatches']}"
                                                   f"-{c['workload']}.png")))
    for fn, name in ((bubble_vs_microbatches, "bubble"), (scaling, "scaling"), (efficiency, "efficiency"),
                     (pytorch_pairs, "pytorch"), (overlap_by_transport, "overlap"), (baseline_ratios, "baseline")):
        path = fn(table, out / f"{name}.png")
        if path:
            made.append(path)
    made += heatmaps(table, out)
    path = memory(runs, out / "memory.png")
    if path:
        made.append(path)
    if advice:
        path = advice_accuracy(advice, out / "advice.png")
        if path:
            made.append(path)
    return made


def default_timelines(runs: list[Run]) -> list[Run]:
    """One run per schedule: its largest p, then largest m, synthetic before model, newest."""
    best: dict[str, Run] = {}
    for r in runs:
        if r.config.get("impl", "ppbench") != "ppbench":
            continue
        key = (r.config["pp"], r.config["microbatches"], r.config["workload"] == "synthetic", r.meta["run_id"])
        held = best.get(r.label)
        if held is None or key > (held.config["pp"], held.config["microbatches"],
                                  held.config["workload"] == "synthetic", held.meta["run_id"]):
            best[r.label] = r
    return [best[k] for k in sorted(best)]


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
    """One broken bar per rank and kind of computation (few artists: fast to draw for thousands of
    events); labels only where there are few enough to read."""
    compute = ev[ev["op"].isin([*COMPUTE, "WAIT"])]
    for (rank, op), sel in compute.groupby(["rank", "op"]):
        spans = list(zip(sel["start"], sel["end"] - sel["start"]))
        ax.broken_barh(spans, (rank - 0.35, 0.7), facecolors=COLOURS[op],
                       edgecolors="white" if op != "WAIT" else "none", linewidth=0.5)
    labelled = ev[ev["op"].isin(COMPUTE) & (ev["end"] > ev["start"])]
    if len(labelled) <= 400:
        for rank, op, mb, start, end in zip(labelled["rank"], labelled["op"], labelled["mb"], labelled["start"],
                                            labelled["end"]):
            ax.text((start + end) / 2, rank, f"{op}{mb}", ha="center", va="center", fontsize=6, color="white")
    transfers = ev[ev["op"].isin(TRANSFER)]
    if len(transfers):
        offset = np.where(transfers["op"].str.startswith("SEND"), -0.42, 0.42) + transfers["rank"].to_numpy()
        ax.hlines(offset, transfers["start"], transfers["end"], color="#c44e52", linewidth=0.8)
    ax.set_yticks(range(p), [f"rank {r}" for r in range(p)])
    ax.set_ylim(p - 0.5, -0.5)


def schedule_colour(schedule: str) -> str:
    """The same colour for a schedule in every picture (built-ins in their table order; files after)."""
    names = list(SCHEDULES)
    index = names.index(schedule) if schedule in names else len(names) + sum(map(ord, schedule)) % 7
    return f"C{index % 10}" if index < 10 else ["#17becf", "#bcbd22", "#7f7f7f", "#8c564b"][index % 4]


def bubble_vs_microbatches(table: pd.DataFrame, path: Path) -> Path | None:
    """One panel per p; per schedule, measured bubbles as points and its closed form as a dashed line."""
    data = table[(table["pp"] > 1) & (table["impl"] == "ppbench")]
    if data.empty:
        return None
    ps = sorted(data["pp"].unique())
    schedules = sorted(data["schedule"].unique())
    colour = {s: schedule_colour(s) for s in schedules}
    fig, axes = plt.subplots(1, len(ps), figsize=(3.6 * len(ps) + 1.5, 3.6), sharey=True, squeeze=False)
    for ax, p in zip(axes[0], ps):
        sel = data[data["pp"] == p]
        for schedule in schedules:
            pts = sel[sel["schedule"] == schedule]
            if pts.empty:
                continue
            for work, marker in (("synthetic", "o"), ("model", "s")):
                w = pts[pts["workload"] == work]
                ax.plot(w["microbatches"], w["bubble"], marker, color=colour[schedule], alpha=0.75, markersize=4)
            ms = np.arange(1, max(int(pts["microbatches"].max()), 2) + 1)
            v = int(pts["chunks"].iloc[0])
            if schedule in SCHEDULES:               # a schedule file has no closed form to draw
                curve = []
                for m in ms:
                    try:
                        curve.append(theory.bubble_fraction(schedule, p, m, v))
                    except ValueError:
                        curve.append(np.nan)
                ax.plot(ms, curve, "--", color=colour[schedule], linewidth=1)
        ax.set_xscale("log", base=2)
        ax.set_title(f"p = {p}")
        ax.set_xlabel("microbatches m")
    axes[0][0].set_ylabel("bubble (idle share of step)")
    handles = [plt.Line2D([], [], color=colour[s], marker="o", linestyle="--", label=s) for s in schedules]
    handles += [plt.Line2D([], [], color="grey", marker=m, linestyle="", label=w)
                for m, w in (("o", "synthetic"), ("s", "model"))]
    fig.legend(handles=handles, loc="center right", fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0, 1 - 1.3 / fig.get_figwidth(), 1))
    return _save(fig, path, tight=False)


def heatmaps(table: pd.DataFrame, out: Path) -> list[Path]:
    """Per workload: schedule x (p, m), each cell's throughput as a share of the best in its column."""
    from ppbench.report.findings import schedule_label, workload_label

    data = table[(table["impl"] == "ppbench") & (table["dp"] == 1)]
    made = []
    for work, sel in data.assign(work=data.apply(workload_label, axis=1),
                                 label=data.apply(schedule_label, axis=1)).groupby("work", sort=True):
        grid = sel.pivot_table(index="label", columns=["pp", "microbatches"], values="throughput", aggfunc="median")
        if grid.shape[0] < 2 or grid.shape[1] < 1:
            continue
        share = grid / grid.max(axis=0)
        fig, ax = plt.subplots(figsize=(1.5 + 0.55 * share.shape[1], 1.0 + 0.38 * share.shape[0]))
        ax.imshow(share.to_numpy(), cmap="viridis", vmin=max(0.0, float(np.nanmin(share.to_numpy()))), vmax=1.0,
                  aspect="auto")
        for (i, j), value in np.ndenumerate(share.to_numpy()):
            if np.isfinite(value):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6,
                        color="black" if value > 0.9 else "white")
        ax.set_yticks(range(share.shape[0]), share.index)
        ax.set_xticks(range(share.shape[1]), [f"{p},{m}" for p, m in share.columns], rotation=90, fontsize=7)
        ax.set_xlabel("p, m")
        ax.set_title(f"{work}: throughput / best in column", fontsize=9, loc="left")
        made.append(_save(fig, out / f"heatmap-{file_label(work)}.png"))
    return made


def scaling(table: pd.DataFrame, path: Path) -> Path | None:
    """Throughput against ranks, one panel per workload and model, one line per schedule (largest m)."""
    from ppbench.report.findings import workload_label

    data = table[table["impl"] == "ppbench"]
    if data["world_size"].nunique() < 2:
        return None
    data = data.assign(work=data.apply(workload_label, axis=1))
    biggest = data.groupby(["schedule", "work", "world_size"])["microbatches"].transform("max")
    data = data[data["microbatches"] == biggest]
    works = sorted(data["work"].unique())
    cols = min(3, len(works))
    rows = -(-len(works) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, work in zip(axes.flat, works):
        sel = data[data["work"] == work]
        for schedule, line in sel.groupby("schedule"):
            line = line.groupby("world_size")["throughput"].max()
            ax.plot(line.index, line.to_numpy(), "o-", label=schedule, markersize=3, color=schedule_colour(schedule))
        ax.set_title(work, fontsize=9)
        ax.set_xlabel("ranks ('GPUs')")
        ax.set_ylabel("samples/s")
        ax.set_xticks(sorted(sel["world_size"].unique()))
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(works):]:
        ax.set_visible(False)
    return _save(fig, path)


def efficiency(table: pd.DataFrame, path: Path) -> Path | None:
    """Efficiency against the serial limit per configuration that measured a serial baseline."""
    from ppbench.report.findings import schedule_label, workload_label

    data = table[table["efficiency"].notna()] if "efficiency" in table else table.iloc[:0]
    if data.empty:
        return None
    data = data.assign(work=data.apply(workload_label, axis=1), label=data.apply(schedule_label, axis=1))
    works = sorted(data["work"].unique())
    fig, axes = plt.subplots(len(works), 1, figsize=(11, 2.6 * len(works)), squeeze=False)
    for ax, work in zip(axes[:, 0], works):
        sel = data[data["work"] == work].sort_values(["pp", "microbatches", "label"])
        ax.bar(range(len(sel)), sel["efficiency"], color=[schedule_colour(s.split()[0]) for s in sel["label"]])
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(sel)), [f"{s} p{p} m{m}" for s, p, m in zip(sel["label"], sel["pp"],
                                                                             sel["microbatches"])],
                      rotation=90, fontsize=6)
        ax.set_ylabel("efficiency")
        ax.set_title(f"{work}: serial limit / iteration time (1 = lost nothing but the theoretical bubble)",
                     fontsize=9, loc="left")
    return _save(fig, path)


def pytorch_pairs(table: pd.DataFrame, path: Path) -> Path | None:
    """Step time of ppbench's executor and of torch.distributed.pipelining on the same configurations."""
    from ppbench.report.findings import pytorch_pairs, workload_label

    pairs = pytorch_pairs(table)
    if pairs.empty:
        return None
    labels = [f"{r['schedule']} p{r['pp']} m{r['microbatches']} {workload_label(r)}" for _, r in pairs.iterrows()]
    y = np.arange(len(pairs))
    fig, ax = plt.subplots(figsize=(8, 1 + 0.3 * len(pairs)))
    ax.barh(y - 0.2, pairs["step_time_ms"], 0.4, label="ppbench")
    ax.barh(y + 0.2, pairs["step_time_ms_torch"], 0.4, label="PyTorch (--impl torch)")
    ax.set_yticks(y, labels, fontsize=7)
    ax.set_xlabel("step time (ms, median)")
    ax.legend(fontsize=7)
    return _save(fig, path)


def baseline_ratios(table: pd.DataFrame, path: Path) -> Path | None:
    """With --baseline: each configuration's step-time ratio (this / baseline, medians) as a bar, the
    whisker from min/max to max/min of the two runs' step times."""
    if "step_time_ratio" not in table:
        return None
    from ppbench.report.findings import schedule_label, workload_label

    data = table.sort_values("step_time_ratio")
    low = data["step_time_ms_min"] / data["baseline_step_time_ms_max"]
    high = data["step_time_ms_max"] / data["baseline_step_time_ms_min"]
    y = np.arange(len(data))
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.22 * len(data)))
    colours = ["#55a868" if r < 1 else "#c44e52" for r in data["step_time_ratio"]]
    ax.barh(y, data["step_time_ratio"] - 1, left=1, color=colours)
    ax.errorbar(data["step_time_ratio"], y, xerr=[data["step_time_ratio"] - low, high - data["step_time_ratio"]],
                fmt="none", ecolor="black", linewidth=0.6)
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_yticks(y, [f"{schedule_label(r)} p{r['pp']} m{r['microbatches']} {workload_label(r)}"
                      for _, r in data.iterrows()], fontsize=6)
    ax.set_xlabel("step time / baseline step time (median; whisker: min/max .. max/min)")
    return _save(fig, path)


def advice_accuracy(advice: list[dict], path: Path) -> Path | None:
    """Predicted against measured iteration time of every verified candidate, with the +-10% band."""
    points = [(v["predicted_iteration_time"], v["measured_iteration_time"], a["model"])
              for a in advice for v in a.get("verified", []) if np.isfinite(v["measured_iteration_time"])]
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(5, 4.2))
    for i, model in enumerate(sorted({m for *_, m in points})):
        sel = np.array([(p, q) for p, q, m in points if m == model]) * 1e3
        ax.plot(sel[:, 1], sel[:, 0], "o", color=f"C{i}", label=model, markersize=4)
    top = 1.15 * max(max(p, q) for p, q, _ in points) * 1e3
    ax.plot([0, top], [0, top], "k-", linewidth=0.8)
    ax.fill_between([0, top], [0, 0.9 * top], [0, 1.1 * top], color="grey", alpha=0.2, label="within 10%")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("measured iteration (ms, median over rounds)")
    ax.set_ylabel("predicted iteration (ms)")
    ax.legend(fontsize=7)
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
