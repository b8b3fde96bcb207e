"""``ppbench report DIR``: result files -> a tidy table, a terminal summary, and a report page.

Repeats of one configuration (same config key: several steps, several runs) are aggregated
to the median, with min and max of the step time. Beside the measured bubble: ``theory`` (uniform
stages, free communication) and ``sim`` (the schedule simulated with the F, B, W, message
latency and per-action overhead measured in the same run; see ``ppbench.calibrate``).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ppbench.measure.results import Run, atomic_write, load_runs
from ppbench.plan import theory
from ppbench.sim.calibrate import resolved_transport, simulated_bubble

#: the closed forms behind the theory column, in words (one place for the page and the Markdown)
THEORY_TEXT = ("theory assumes uniform stages and free communication, as fraction of step time idle: naive (p-1)/p; "
               "GPipe and 1F1B (p-1)/(m+p-1); interleaved (p-1)/(vm+p-1); LoopedBFS 1-vm/((v-1)max(m,p)+m+p-1); "
               "ZB-H1 (p-1)/(3m+p-1) with F = I = W and m >= p (Megatron-LM's bubble/ideal form is (p-1)/m)")

__all__ = ["tidy_table", "format_summary", "write_report", "compare", "run_report", "environments",
           "select_timelines", "load_advice", "ADVICE_FORMAT"]

_CONFIG_COLS = ["schedule", "transport", "pp", "dp", "microbatches", "chunks", "workload", "model", "size", "dtype",
                "impl", "split"]
_DEFAULTS = {"chunks": 1, "impl": "ppbench", "split": ""}     # keys that older result files may lack


def _simulated_bubble(run: Run) -> float:
    """The run's ``bubble_simulated`` (older files lack it: simulated here, the same way)."""
    value = run.meta["summary"].get("bubble_simulated")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    try:
        return simulated_bubble(run)
    except (ValueError, KeyError):      # a schedule this version cannot simulate
        return float("nan")


def _steps_frame(runs: list[Run]) -> pd.DataFrame:
    rows = []
    for run in runs:
        cfg, env, summary = run.config, run.meta["environment"], run.meta["summary"]
        simulated = _simulated_bubble(run)
        transport = resolved_transport(cfg)
        for step in run.meta["steps"]:
            rows.append({
                "config_key": run.meta["config_key"], **{c: cfg.get(c, _DEFAULTS.get(c)) for c in _CONFIG_COLS},
                "transport": transport, "schedule": run.label,
                "world_size": cfg["pp"] * cfg["dp"], "run_id": run.meta["run_id"],
                "step_time": step["step_time"], "throughput": step["throughput"], "bubble": step["bubble_mean"],
                "bubble_max": step["bubble_max"], "bubble_simulated": simulated, "utilization": step["utilization"],
                "overlap": step["overlap"],
                "exposed_comm": step["exposed_comm"],
                "peak_in_flight": max(summary["peak_in_flight"]), "peak_saved_bytes": max(summary["peak_saved_bytes"]),
                "host": env["host"], "cores": env["cores"], "device": env["device"], "mpi": env["mpi_library"],
                "threads": env.get("threads_per_rank", 0), "oversubscribed": env["oversubscribed"],
                "efficiency": summary.get("efficiency", float("nan")),     # runs with a serial baseline
            })
    return pd.DataFrame(rows)


def tidy_table(runs: list[Run]) -> pd.DataFrame:
    """One row per configuration: medians over every step of every run, with min/max step time."""
    steps = _steps_frame(runs)
    if steps.empty:
        return steps
    keys = ["config_key", *_CONFIG_COLS, "world_size", "host", "cores", "device", "mpi", "threads", "oversubscribed"]
    grouped = steps.groupby(keys, dropna=False, sort=False)
    table = grouped.agg(
        runs=("run_id", "nunique"), steps=("step_time", "size"),
        step_time_ms=("step_time", lambda s: 1e3 * s.median()), step_time_ms_min=("step_time", lambda s: 1e3 * s.min()),
        step_time_ms_max=("step_time", lambda s: 1e3 * s.max()), throughput=("throughput", "median"),
        bubble=("bubble", "median"), bubble_max=("bubble_max", "median"),
        bubble_simulated=("bubble_simulated", "median"), utilization=("utilization", "median"),
        overlap=("overlap", "median"), exposed_comm_ms=("exposed_comm", lambda s: 1e3 * s.median()),
        peak_in_flight=("peak_in_flight", "max"), peak_act_kib=("peak_saved_bytes", lambda s: s.max() / 1024),
    ).reset_index()
    # efficiency against the serial limit is one number per run: the median over runs
    per_run = steps.drop_duplicates("run_id").groupby("config_key")["efficiency"].median()
    table.insert(table.columns.get_loc("utilization") + 1, "efficiency", table["config_key"].map(per_run))
    rows = list(zip(table["schedule"], table["pp"], table["microbatches"], table["chunks"]))
    table.insert(table.columns.get_loc("bubble_simulated"), "bubble_theory",
                 [_closed_form(theory.bubble_fraction, s, p, m, v) for s, p, m, v in rows])
    table["peak_in_flight_theory"] = [_closed_form(theory.peak_in_flight, s, p, m, 0, v) for s, p, m, v in rows]
    order = ["workload", "model", "size", "schedule", "transport", "world_size", "pp", "dp", "microbatches"]
    return table.sort_values(order, kind="stable").reset_index(drop=True)


def _closed_form(formula, schedule: str, *args) -> float:
    """The closed form for a built-in; NaN for a schedule file (or a name this version lacks)."""
    try:
        return formula(schedule, *args)
    except ValueError:
        return float("nan")


def compare(table: pd.DataFrame, baseline: pd.DataFrame) -> pd.DataFrame:
    """Configurations present in both, with the baseline's step time and throughput and the ratios."""
    base = baseline.set_index("config_key")[["step_time_ms", "step_time_ms_min", "step_time_ms_max", "throughput",
                                             "bubble"]].add_prefix("baseline_")
    both = table.join(base, on="config_key", how="inner")
    both["step_time_ratio"] = both["step_time_ms"] / both["baseline_step_time_ms"]
    both["throughput_ratio"] = both["throughput"] / both["baseline_throughput"]
    return both


_SHOW = {"schedule": "schedule", "transport": "transport", "world_size": "ranks", "pp": "p", "dp": "d",
         "microbatches": "m", "work": "workload", "threads": "threads", "step_time_ms": "step ms",
         "throughput": "samples/s", "bubble": "bubble", "bubble_theory": "theory",
         "bubble_simulated": "sim", "utilization": "util", "efficiency": "eff", "overlap": "overlap",
         "peak_in_flight": "in-flight", "peak_act_kib": "act KiB", "runs": "runs"}


def _display(table: pd.DataFrame) -> pd.DataFrame:
    shown = table.assign(work=[w if w == "synthetic" else f"{m}/{s}" for w, m, s in
                               zip(table["workload"], table["model"], table["size"])])
    if "threads" in shown:        # torch threads per rank; files from before it was recorded: "?"
        shown["threads"] = [str(int(t)) if t else "?" for t in shown["threads"]]
    cols = [c for c in _SHOW if c in shown.columns] + [c for c in ("baseline_step_time_ms", "step_time_ratio",
                                                                    "throughput_ratio") if c in shown.columns]
    return shown[cols].rename(columns=_SHOW)


def format_summary(table: pd.DataFrame, fmt: str) -> str:
    """The table as text: table (terminal), markdown, csv or json."""
    if fmt == "csv":
        return table.to_csv(index=False)
    if fmt == "json":
        return table.to_json(orient="records", indent=1)
    shown = _display(table)
    if fmt == "markdown":
        return _markdown(shown)
    return shown.to_string(index=False, float_format=lambda v: f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}")


def _markdown(frame: pd.DataFrame) -> str:
    def cell(v):
        return f"{v:.3f}" if isinstance(v, float) and abs(v) < 100 else (f"{v:.1f}" if isinstance(v, float) else str(v))

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def environments(runs: list[Run]) -> list[str]:
    """One line per distinct machine set-up the runs came from."""
    seen = []
    for run in runs:
        e = run.meta["environment"]
        line = (f"{e['host']}: {e['cores']} cores, {e['device']}, {e['mpi_library']}, torch {e['torch']}, "
                f"mpi4py {e['mpi4py']}" + (" (some runs OVERSUBSCRIBED: more ranks x threads than cores)"
                                           if e["oversubscribed"] else ""))
        if line not in seen:
            seen.append(line)
    return seen


def write_report(runs: list[Run], table: pd.DataFrame, out: Path, skipped: list[str],
                 timelines: list[Run] | None = None, advice: list[dict] | None = None) -> list[Path]:
    """index.html with its pictures, summary.md and summary.csv under ``out``; returns the files.
    ``timelines``: the runs to draw (default: one per schedule at its largest p and m)."""
    from ppbench.report import plots
    from ppbench.report.findings import attributions, findings
    from ppbench.report.page import render

    out.mkdir(parents=True, exist_ok=True)
    images = plots.draw_all(runs, table, out, timelines, advice)
    found = findings(table, attributions(runs, table), advice)
    _write_text(out / "summary.csv", table.to_csv(index=False))
    env = environments(runs)
    md = ["# ppbench report", "", "## Findings", "", *[f"- {f.text}" for f in found if f.headline], "",
          *[f"- {line}" for line in env], "",
          f"Bubble: fraction of step time idle (mean over ranks); {THEORY_TEXT}. Medians over all measured steps.",
          "", _markdown(_display(table)), ""]
    md += [f"![{img.stem}]({img.name})" for img in images]
    _write_text(out / "summary.md", "\n".join(md) + "\n")
    _write_text(out / "index.html", render(table, env, images, skipped, found, THEORY_TEXT, plots.CAPTIONS, advice))
    return [out / "index.html", out / "summary.md", out / "summary.csv", *images]


def _write_text(path: Path, text: str) -> None:
    """UTF-8, any unencodable character (a file name's stray bytes) escaped, written atomically."""
    atomic_write(path, lambda partial: partial.write_bytes(text.encode("utf-8", "backslashreplace")))


#: what ``ppbench advise`` writes into its JSON record's "format"
ADVICE_FORMAT = "ppbench-advice"
TIMELINE_KEYS = {"schedule": "schedule", "p": "pp", "m": "microbatches", "d": "dp", "v": "chunks",
                 "workload": "workload", "model": "model", "size": "size", "impl": "impl"}


def select_timelines(runs: list[Run], specs: list[str]) -> list[Run]:
    """The newest run matching each ``--timeline`` spec (``schedule=1f1b,p=4,m=8``); ValueError (one line,
    what is present) when a spec is malformed or matches nothing."""
    chosen = []
    for spec in specs:
        wanted = {}
        for part in spec.split(","):
            key, sep, value = part.partition("=")
            key = key.strip()
            if not sep or key not in TIMELINE_KEYS or not value.strip():
                raise ValueError(f"--timeline {spec!r}: expected KEY=VALUE pairs separated by commas, KEY one of "
                                 f"{', '.join(TIMELINE_KEYS)} (e.g. schedule=1f1b,p=4,m=8)")
            wanted[TIMELINE_KEYS[key]] = value.strip()

        hits = [r for r in runs if _matches(r, wanted)]
        if not hits:
            present = sorted({f"schedule={r.label},p={r.config['pp']},m={r.config['microbatches']}" for r in runs})
            raise ValueError(f"--timeline {spec!r} matches no run; present: {'; '.join(present[:8])}"
                             + (f" and {len(present) - 8} more" if len(present) > 8 else ""))
        chosen.append(max(hits, key=lambda r: r.meta["run_id"]))
    return chosen


def _matches(run: Run, wanted: dict[str, str]) -> bool:
    values = {**run.config, "schedule": run.label}
    return all(str(values.get(k, _DEFAULTS.get(k, ""))) == v for k, v in wanted.items())


def load_advice(directory: str) -> list[dict]:
    """Every ``ppbench advise`` record under ``directory`` (any ``*.json`` whose format says so; other
    JSON, such as profiles, is passed over), in path order."""
    import json

    found = []
    for path in sorted(Path(directory).rglob("*.json")):
        if path.stat().st_size > 64 * 2**20:
            continue
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and record.get("format") == ADVICE_FORMAT and \
                isinstance(record.get("ranked"), list):
            found.append(record)
    return found


def run_report(directory: str, fmt: str, out: str | None, schedules: list[str] | None, models: list[str] | None,
               workloads: list[str] | None, baseline: str | None, write: bool = True,
               timelines: list[str] | None = None) -> tuple[int, str, list[str]]:
    """Everything ``ppbench report`` does; returns (exit status, text for stdout, warnings)."""
    runs, skipped = load_runs(directory)
    warnings = list(skipped) + [f"{len(runs)} result files read, {len(skipped)} skipped in {Path(directory)}/"]
    runs = [r for r in runs if (not schedules or r.label in schedules)
            and (not models or r.config["model"] in models) and (not workloads or r.config["workload"] in workloads)]
    if not runs:
        return 1, "", warnings + [f"no ppbench results in {directory}/ (after filters): run `ppbench run` or "
                                  "`ppbench sweep` first"]
    try:
        drawn = select_timelines(runs, timelines) if timelines else None
    except ValueError as exc:
        return 2, "", warnings + [f"error: {exc}"]
    table = tidy_table(runs)
    if baseline:
        base_runs, base_skipped = load_runs(baseline)
        warnings += base_skipped
        if not base_runs:
            return 1, "", warnings + [f"no ppbench results in baseline {baseline}/"]
        table = compare(table, tidy_table(base_runs))
        if table.empty:
            return 1, "", warnings + [f"no configuration is in both {directory}/ and {baseline}/"]
    text = format_summary(table, fmt)
    if write:
        target = Path(out) if out else Path(directory) / "report"
        files = write_report(runs, table, target, skipped, drawn, load_advice(directory))
        if fmt == "table":
            text += f"\n\nreport: {files[0]} ({len(files) - 3} pictures), {files[1]}, {files[2]}"
    return 0, text, warnings
