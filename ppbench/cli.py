"""The ``ppbench`` command line: parses, validates what it can, and dispatches. The work lives in
the layers (plan, sim, run, measure, report); this module imports them only inside commands, so
``ppbench schedule``, ``simulate`` and ``report`` start without torch or MPI."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from dataclasses import fields

from ppbench.advise.commands import add_advise_command, add_profile_command
from ppbench.config import RunConfig
from ppbench.plan.schedules import SCHEDULES, schedule_problem
from ppbench.run.jobs import error, launch_or_run

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 done, 1 a check not equivalent or a job that failed, 2 a usage, configuration, path
    or launcher error (one line; ``--debug`` or PPBENCH_DEBUG=1 adds the traceback), 124 an MPI job past
    its --timeout, 128 + N stopped by signal N (SIGINT 130, SIGTERM 143, SIGHUP 129) with the job ended."""
    from ppbench.config import ConfigError
    from ppbench.run.launch import Interrupted, LauncherError

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    ns = parser.parse_args(argv)
    if not hasattr(ns, "handler"):
        parser.print_help()
        return 2
    argv = [a for a in argv if a != "--debug"]          # what a self-launched job re-runs
    try:
        return ns.handler(ns, argv)
    except Interrupted as exc:
        print(f"ppbench: {exc}", file=sys.stderr, flush=True)
        return exc.status
    except (ConfigError, LauncherError) as exc:
        if ns.debug or os.environ.get("PPBENCH_DEBUG") == "1":
            traceback.print_exc()
        return error(str(exc))
    except BrokenPipeError:                               # e.g. `ppbench schedule ... | head`
        sys.stderr.close()
        return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ppbench", description="Pipeline-parallel schedules over MPI: "
                                     "reference implementations, gradient equivalence, measurements.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of user errors too (or PPBENCH_DEBUG=1)")
    sub = parser.add_subparsers(metavar="COMMAND")
    _schedule_command(sub)
    _validate_command(sub)
    _check_command(sub)
    _run_command(sub)
    _sweep_command(sub)
    _report_command(sub)
    _simulate_command(sub)
    _audit_command(sub)
    add_profile_command(sub, _add_config_options)
    add_advise_command(sub)
    return parser


def _schedule_command(sub) -> None:
    sched = sub.add_parser("schedule", help="print a schedule's per-rank action lists")
    sched.add_argument("name", choices=list(SCHEDULES))
    sched.add_argument("--stages", "-p", type=int, required=True, help="pipeline stages p")
    sched.add_argument("--microbatches", "-m", type=int, required=True, help="microbatches m")
    sched.add_argument("--chunks", "-v", type=int, default=None, help="model chunks per rank (interleaved: default 2)")
    sched.add_argument("--comm", action="store_true", help="include send/recv actions")
    sched.add_argument("--json", action="store_true", help="print every action's fields as JSON instead of a table")
    sched.add_argument("--format", choices=["table", "json", "torch-csv"], default="table",
                       help="table (default); json: ppbench's schedule file (with the placement); torch-csv: "
                            "PyTorch's CSV schedule format. Both files are what --schedule-file and validate read")
    sched.set_defaults(handler=_cmd_schedule)


def _validate_command(sub) -> None:
    val = sub.add_parser("validate", help="check a schedule file (PyTorch CSV or ppbench JSON): counts, order, "
                         "placement, sends and receives, deadlocks under both transports")
    val.add_argument("file", help="the schedule file")
    val.add_argument("--json", action="store_true", help="print the verdict as one JSON object")
    val.set_defaults(handler=_cmd_validate)


def _check_command(sub) -> None:
    check = sub.add_parser("check", help="compare a pipeline's gradients with single-process training")
    _add_config_options(check, groups=("run",))
    check.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    check.add_argument("--in-process", action="store_true",
                       help="run every rank of the pipeline as a thread of this process, without MPI (dp = 1)")
    check.add_argument("--timeout", type=_seconds, default=900.0, help="seconds before the MPI job is ended")
    check.set_defaults(handler=_cmd_check)


def _run_command(sub) -> None:
    run = sub.add_parser("run", help="measure a configuration and record its result file")
    _add_config_options(run, groups=("run", "measure"))
    run.add_argument("--results", default="results", help="directory for the result file (default results/)")
    run.add_argument("--no-save", action="store_true", help="print the metrics, write no file")
    run.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    run.add_argument("--quiet", action="store_true", help="print nothing (sweeps)")
    run.add_argument("--timeout", type=_seconds, default=1800.0, help="seconds before the MPI job is ended")
    run.set_defaults(handler=_cmd_run)


def _sweep_command(sub) -> None:
    sweep = sub.add_parser("sweep", help="run a grid of configurations, skipping those already recorded")
    sweep.add_argument("--schedules", default="naive,gpipe,1f1b", help="comma-separated (default naive,gpipe,1f1b)")
    sweep.add_argument("--world-sizes", default="1,2,4", help="ranks per run, comma-separated (default 1,2,4)")
    sweep.add_argument("--microbatches", default="1,4,16", help="comma-separated (default 1,4,16)")
    sweep.add_argument("--models", default="mlp", help="comma-separated families (default mlp)")
    sweep.add_argument("--sizes", default="tiny", help="comma-separated presets (default tiny)")
    sweep.add_argument("--workloads", default="model,synthetic", help="comma-separated (default model,synthetic)")
    sweep.add_argument("--schedule-files", default="", help="comma-separated schedule files to run too (each fixes "
                       "its ranks and microbatches; it joins the world sizes and microbatches that match it)")
    _add_config_options(sweep, sweep_only=True)
    sweep.add_argument("--results", default="results", help="result directory (default results/)")
    sweep.add_argument("--redo", action="store_true", help="rerun configurations already recorded")
    sweep.add_argument("--dry-run", action="store_true", help="list the configurations and stop")
    sweep.add_argument("--timeout", type=_seconds, default=900.0, help="seconds per run before it is ended")
    sweep.set_defaults(handler=_cmd_sweep)


def _report_command(sub) -> None:
    report = sub.add_parser("report", help="summarise result files: table, pictures, HTML page")
    report.add_argument("directory", help="directory of result files (searched recursively)")
    report.add_argument("--format", choices=["table", "markdown", "csv", "json"], default="table",
                        help="what to print (default table)")
    report.add_argument("--out", help="where to write the report (default DIR/report)")
    report.add_argument("--schedule", action="append", help="only this schedule (repeatable)")
    report.add_argument("--model", action="append", help="only this model family (repeatable)")
    report.add_argument("--workload", action="append", help="only this workload (repeatable)")
    report.add_argument("--baseline", help="another result directory to compare with (ratios)")
    report.add_argument("--no-files", action="store_true", help="print only; write no report files")
    report.add_argument("--timeline", action="append", metavar="KEY=VALUE,...",
                        help="draw the timeline of the newest run matching, e.g. schedule=1f1b,p=4,m=8 (keys: "
                             "schedule, p, m, d, v, workload, model, size, impl; repeatable; default: one per "
                             "schedule at its largest p and m)")
    report.set_defaults(handler=_cmd_report)


def _simulate_command(sub) -> None:
    sim = sub.add_parser("simulate", help="simulate a schedule's metrics (no MPI; thousands of ranks in seconds), "
                         "or measured runs with their own measured costs (--from-run)")
    sim.add_argument("--schedule", choices=list(SCHEDULES))
    sim.add_argument("--schedule-file", help="simulate a schedule file (PyTorch CSV or ppbench JSON) instead")
    sim.add_argument("--stages", "-p", type=int)
    sim.add_argument("--microbatches", "-m", type=int)
    sim.add_argument("--t-fwd", type=float, default=1.0, help="time of one F (default 1)")
    sim.add_argument("--t-bwd", type=float, default=2.0, help="time of one full backward B (default 2)")
    sim.add_argument("--t-comm", type=float, default=0.0, help="time of one message, from the later of its two "
                     "posts to completion, whatever its size (default 0)")
    sim.add_argument("--t-byte", type=float, default=0.0,
                     help="time per byte of a message, added to --t-comm (default 0; 1e-10 is 10 GB/s)")
    sim.add_argument("--message-bytes", type=int, default=0, help="bytes of every message, for --t-byte (default 0)")
    sim.add_argument("--t-wgrad", type=float, default=None,
                     help="the W share of --t-bwd in split-backward schedules (I gets the rest; default: half)")
    sim.add_argument("--overhead", type=float, default=0.0,
                     help="host time a rank spends before each compute action (default 0)")
    sim.add_argument("--chunks", "-v", type=int, default=None, help="model chunks per rank (interleaved: default 2)")
    sim.add_argument("--transport", choices=["auto", "blocking", "nonblocking"], default="auto",
                     help="auto: blocking for naive, non-blocking otherwise (as ppbench run)")
    sim.add_argument("--from-run", nargs="+", metavar="PATH",
                     help="result files or directories: simulate each run with the F, I, W, B, message latency and "
                          "per-action overhead measured in it, and print measured beside simulated")
    sim.add_argument("--samples", type=int, default=30,
                     help="with --from-run: simulations per run, each action's costs drawn from the run's measured "
                          "ones; the median is shown (default 30; 0: one simulation with the mean costs)")
    sim.add_argument("--json", action="store_true")
    sim.set_defaults(handler=_cmd_simulate)


def _audit_command(sub) -> None:
    audit = sub.add_parser("audit", help="PyTorch pipelining's own schedule classes through ppbench's validator, "
                           "simulator and executor")
    audit.add_argument("what", choices=["torch"], help="whose schedules (torch: torch.distributed.pipelining)")
    audit.add_argument("-p", "--stages", default="2,4", help="ranks, comma-separated (default 2,4)")
    audit.add_argument("-m", "--microbatches", default="4,8", help="microbatches, comma-separated (default 4,8)")
    audit.add_argument("--no-check", action="store_true", help="skip the gradient check")
    audit.add_argument("--mpi", action="store_true", help="run the gradient check under MPI, one process per rank "
                       "(ppbench check --schedule-file), instead of in process")
    audit.add_argument("--json", action="store_true", help="print the rows as JSON")
    audit.set_defaults(handler=_cmd_audit)


def _cmd_audit(ns: argparse.Namespace, argv: list[str]) -> int:
    from ppbench.config import ConfigError
    from ppbench.run.audit import audit

    try:
        grid = [(int(p), int(m)) for p in ns.stages.split(",") for m in ns.microbatches.split(",")]
    except ValueError:
        raise ConfigError("stages/microbatches", "comma-separated integers, e.g. -p 2,4 -m 4,8") from None
    if not all(1 <= p <= 16 and 1 <= m <= 64 for p, m in grid):
        raise ConfigError("stages/microbatches", "the audit runs every class in process: p in 1..16, m in 1..64")
    rows = [row for p, m in grid for row in audit(p, m, check=not ns.no_check, mpi=ns.mpi)]
    if ns.json:
        print(json.dumps(rows))
        return 0
    print(f"{'PyTorch schedule':<30}{'p':>3}{'m':>4}  {'valid':<6}{'runs under':<22}{'equivalent':<11}"
          f"{'bubble':>7}  {'peak in-flight':<20}vs ppbench / problems")
    for r in rows:
        equivalent = {True: "yes", False: "NO", None: "-"}[r.get("equivalent")]
        bubble = f"{r['bubble_unit_cost']:.3f}" if r.get("bubble_unit_cost") is not None else "-"
        detail = "; ".join(r.get("problems") or []) or r.get("vs_ppbench", "")
        notes = f" ({'; '.join(r['notes'])})" if r.get("notes") else ""
        print(f"{r['schedule']:<30}{r['p']:>3}{r['m']:>4}  {'yes' if r['valid'] else 'NO':<6}"
              f"{'+'.join(r.get('runs_under') or []) or '-':<22}{equivalent:<11}{bubble:>7}  "
              f"{str(r.get('peak_in_flight') or '-'):<20}{detail}{notes}")
    if not ns.no_check:
        print("gradients checked " + ("under MPI (ppbench check --schedule-file, one process per rank)" if ns.mpi
                                      else "in process (ranks as threads; --mpi for one process per rank)"))
    return 0


def _seconds(text: str) -> float:
    """A --timeout: finite, above 0, at most a week."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 7 * 86400:
        raise argparse.ArgumentTypeError(f"must be seconds in (0, 604800], got {text!r}")
    return value


def _add_config_options(parser: argparse.ArgumentParser, groups: tuple[str, ...] = (),
                        sweep_only: bool = False, names: tuple[str, ...] = ()) -> None:
    """One option per RunConfig field of ``groups`` (or every field marked for sweeps, or the fields
    ``names``), with its default and help."""
    for f in fields(RunConfig):
        meta = f.metadata
        if f.name in names or (meta["sweep"] if sweep_only else meta["group"] in groups):
            flags = [f"--{f.name.replace('_', '-')}"] + ([meta["short"]] if meta["short"] and not sweep_only else [])
            parser.add_argument(*flags, type=type(f.default), default=f.default, dest=f.name,
                                help=f"{meta['help']} (default {f.default!r})")


def _config(ns: argparse.Namespace) -> RunConfig:
    return RunConfig(**{f.name: getattr(ns, f.name) for f in fields(RunConfig) if hasattr(ns, f.name)})


def _chunks(name: str, given: int | None) -> int:
    return given if given is not None else SCHEDULES[name].default_chunks


def _cmd_schedule(ns: argparse.Namespace, argv: list[str]) -> int:
    from ppbench.config import ConfigError
    from ppbench.plan.comm import add_communication
    from ppbench.plan.schedules import compute_order, placement_for
    from ppbench.resources import check_listing_fits
    from ppbench.sim.costs import Costs
    from ppbench.sim.simulator import simulate
    from ppbench.sim.timeline import timeline_text

    p, m, v = ns.stages, ns.microbatches, _chunks(ns.name, ns.chunks)
    problem = schedule_problem(ns.name, p, m, v)
    if problem:
        return error(problem)
    try:
        check_listing_fits(p, m, v)
    except ConfigError as exc:
        return error(str(exc))
    placement = placement_for(ns.name, p, v)
    compute = [compute_order(ns.name, p, m, r, v) for r in range(p)]
    full = [add_communication(acts, placement) for acts in compute]
    shown = full if ns.comm else compute
    if ns.format != "table":
        from ppbench.plan.files import to_csv, to_json

        print(to_csv(shown) if ns.format == "torch-csv" else to_json(shown, placement, m, ns.name), end="\n"
              if ns.format == "json" else "")
        return 0
    if ns.json:
        print(json.dumps({"schedule": ns.name, "stages": p, "microbatches": m, "chunks": v,
                          "placement": placement.to_dict(),
                          "ranks": [[a.to_dict(placement.chunk_of(a.stage)) for a in acts] for acts in shown]}))
        return 0
    print(f"{ns.name}: p={p} ranks, m={m} microbatches" + (f", v={v} stages per rank" if v > 1 else "")
          + f", {placement.name} placement; action order per rank (PyTorch's action text: stage, op, microbatch)")
    for r, acts in enumerate(shown):
        print(f"  rank {r}: " + " ".join(map(str, acts)))
    costs = Costs(1.0, 2.0, 1.0)
    split = any(a.op.value in "IW" for acts in compute for a in acts)
    print(f"\ntimeline (simulated: F = {costs.fwd:g}, " + (f"I = {costs.bwd - costs.wgrad:g}, W = {costs.wgrad:g}"
          if split else f"B = {costs.bwd:g}") + " units, free communication; '.' = idle)")
    mode = RunConfig(schedule=ns.name).resolved_transport
    print(timeline_text(simulate(full, costs, mode, placement), p, show_stage=v > 1))
    return 0


def _cmd_check(ns: argparse.Namespace, argv: list[str]) -> int:
    from ppbench.report.text import check_text

    def report(result: dict) -> int:
        print(json.dumps(result) if ns.json else check_text(result), flush=True)
        return 0 if result["passed"] else 1

    def on_rank(cfg: RunConfig, comm) -> int:
        from ppbench.run.check import run_check

        result = run_check(cfg, comm)
        return report(result) if comm.Get_rank() == 0 else (0 if result["passed"] else 1)

    if ns.in_process:
        from ppbench.config import ConfigError
        from ppbench.resources import check_run_fits
        from ppbench.run.check import check_in_process

        try:
            cfg = _config(ns)
            if cfg.dp != 1 or cfg.impl != "ppbench":
                raise ConfigError("in-process", "runs one replica (dp = 1) with ppbench's executor")
            check_run_fits(cfg.validate(world_size=cfg.pp), 1, reference=True)
            return report(check_in_process(cfg))
        except ConfigError as exc:
            return error(str(exc))
    return launch_or_run(_config(ns), argv, ns.timeout, on_rank, reference=True)


def _cmd_run(ns: argparse.Namespace, argv: list[str]) -> int:
    from ppbench.measure.results import remove_stale_partials
    from ppbench.run.jobs import output_directory

    if not ns.no_save:
        output_directory(ns.results, "results")
        remove_stale_partials(ns.results)

    def on_rank(cfg: RunConfig, comm) -> int:
        from ppbench.report.text import run_text
        from ppbench.run.runner import run_benchmark

        summary = run_benchmark(cfg, comm, None if ns.no_save else ns.results)
        if summary is not None and not ns.quiet:
            print(json.dumps(summary) if ns.json else run_text(cfg, summary), flush=True)
        return 0

    return launch_or_run(_config(ns), argv, ns.timeout, on_rank)


def _cmd_sweep(ns: argparse.Namespace, argv: list[str]) -> int:
    from ppbench.config import ConfigError
    from ppbench.run.sweep import run_sweep, sweep_configs

    def items(text: str, kind=str) -> list:
        try:
            return [kind(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise SystemExit(error(f"cannot read {text!r} as a comma-separated list of {kind.__name__}")) from None

    from ppbench.run.jobs import output_directory

    output_directory(ns.results, "results")
    shared = {f.name: getattr(ns, f.name) for f in fields(RunConfig) if f.metadata["sweep"]}
    try:
        RunConfig(**shared).validate()
    except ConfigError as exc:
        return error(str(exc))
    configs, notes = sweep_configs(items(ns.schedules), items(ns.world_sizes, int), items(ns.microbatches, int),
                                   items(ns.models), items(ns.sizes), items(ns.workloads),
                                   schedule_files=items(ns.schedule_files), **shared)
    for note in notes:
        print(f"ppbench sweep: left out {note}")
    if not configs:
        return error("the sweep grid holds no valid configuration")
    if ns.dry_run:
        for cfg in configs:
            print(f"{cfg.schedule_file or cfg.schedule} pp={cfg.pp} dp={cfg.dp} m={cfg.microbatches} {cfg.workload} "
                  f"{cfg.model}/{cfg.size}")
        return 0
    return 1 if run_sweep(configs, ns.results, ns.redo, ns.timeout) else 0


def _cmd_report(ns: argparse.Namespace, argv: list[str]) -> int:
    from pathlib import Path

    from ppbench.report.summary import run_report
    from ppbench.run.jobs import output_directory

    if not Path(ns.directory).is_dir():
        return error(f"{ns.directory} is not a directory")
    if not ns.no_files:
        output_directory(ns.out or str(Path(ns.directory) / "report"), "out")
    code, text, warnings = run_report(ns.directory, ns.format, ns.out, ns.schedule, ns.model, ns.workload,
                                      ns.baseline, write=not ns.no_files, timelines=ns.timeline)
    for warning in warnings:
        if warning.startswith("error: "):
            return error(warning[len("error: "):])
        print(f"ppbench report: {warning}", file=sys.stderr)
    if text:
        print(text)
    return code


def _cmd_simulate(ns: argparse.Namespace, argv: list[str]) -> int:
    if ns.from_run:
        if ns.samples < 0:
            return error(f"--samples must be >= 0, got {ns.samples}")
        return _simulate_runs(ns.from_run, ns.samples, ns.json)
    from ppbench.config import ConfigError
    from ppbench.plan import theory
    from ppbench.plan.arrays import has_array_twin, schedule_arrays
    from ppbench.resources import check_simulation_fits
    from ppbench.sim.array_simulator import array_metrics, simulate_arrays
    from ppbench.sim.costs import Costs

    if ns.schedule_file:
        return _simulate_file(ns)
    missing = [flag for flag, value in (("--schedule", ns.schedule), ("--stages", ns.stages),
                                        ("--microbatches", ns.microbatches)) if value is None]
    if missing:
        return error(f"simulate needs {', '.join(missing)} (or --from-run FILE)")
    p, m, v = ns.stages, ns.microbatches, _chunks(ns.schedule, ns.chunks)
    problem = schedule_problem(ns.schedule, p, m, v)
    if problem:
        return error(problem)
    try:
        check_simulation_fits(p, m, v, listed=not has_array_twin(ns.schedule))
    except ConfigError as exc:
        return error(str(exc))
    wgrad = ns.t_bwd / 2 if ns.t_wgrad is None else ns.t_wgrad
    times = (ns.t_fwd, ns.t_bwd, ns.t_comm, wgrad, ns.overhead, ns.t_byte, ns.message_bytes)
    if min(times) < 0 or wgrad > ns.t_bwd:
        return error("--t-fwd, --t-bwd, --t-comm, --t-byte, --message-bytes, --t-wgrad and --overhead must be >= 0, "
                     "and --t-wgrad <= --t-bwd")
    comm = ns.t_comm + ns.t_byte * ns.message_bytes
    costs = Costs(ns.t_fwd, ns.t_bwd, wgrad, comm, ns.overhead)
    transport = RunConfig(schedule=ns.schedule, transport=ns.transport).resolved_transport
    if transport == "blocking" and SCHEDULES[ns.schedule].needs_nonblocking:
        return error(f"{ns.schedule} deadlocks with the blocking transport; use --transport nonblocking or auto")
    started = time.perf_counter()
    arrays = schedule_arrays(ns.schedule, p, m, v)
    metrics = array_metrics(simulate_arrays(arrays, costs, transport))
    metrics.update(schedule=ns.schedule, stages=p, microbatches=m, chunks=v,
                   bubble_theory=theory.bubble_fraction(ns.schedule, p, m, v),
                   seconds=time.perf_counter() - started)
    if ns.json:
        print(json.dumps(metrics))
        return 0
    split = bool((arrays.op == 2).any())
    print(f"simulated {ns.schedule}: p={p} m={m}" + (f" v={v}" if v > 1 else "") + f" F={costs.fwd:g} "
          + (f"I={costs.bwd - costs.wgrad:g} W={costs.wgrad:g}" if split else f"B={costs.bwd:g}") + f" comm={comm:g}"
          + (f" overhead={ns.overhead:g}" if ns.overhead else "") + f" ({transport}; {metrics['seconds']:.2f} s)")
    print(f"  step time {metrics['step_time']:g}   bubble mean {metrics['bubble_mean']:.4f} "
          f"max {metrics['bubble_max']:.4f} (theory {metrics['bubble_theory']:.4f})   "
          f"utilization {metrics['utilization']:.4f}   overlap {metrics['overlap']:.3f}")
    return 0


def _cmd_validate(ns: argparse.Namespace, argv: list[str]) -> int:
    from ppbench.config import ConfigError
    from ppbench.plan.files import ScheduleFileError, read_schedule
    from ppbench.sim.validate import validate_schedule

    try:
        schedule = read_schedule(ns.file)
    except ScheduleFileError as exc:
        raise ConfigError("schedule file", str(exc)) from None
    check = validate_schedule(schedule)
    if ns.json:
        print(json.dumps({"file": ns.file, "valid": check.valid, "ranks": schedule.p,
                          "microbatches": schedule.microbatches, "placement": schedule.placement.to_dict(),
                          "problems": [str(p) for p in check.problems], "runs_under": check.runs_under,
                          "deadlocks": check.deadlocks, "peak_in_flight": check.peak_in_flight,
                          "bubble_unit_cost": check.bubble}))
        return 0 if check.valid else 2
    print(f"{ns.file}: {schedule.p} ranks, {schedule.placement.num_stages} stages ({schedule.placement.name} "
          f"placement {list(schedule.placement.stage_ranks)}), {schedule.microbatches} microbatches, "
          + ("with" if schedule.has_communication else "without") + " sends and receives")
    for problem in check.problems:
        print(f"  problem: {problem}")
    for transport, grid in check.deadlocks.items():
        print(f"  deadlocks with the {transport} transport: " + grid.replace("\n", "\n    "))
    if check.valid:
        blocked = [t for t in ("blocking", "nonblocking") if t not in check.runs_under]
        print(f"  valid: runs with the {' and '.join(check.runs_under)} transport"
              + (f"; deadlocks with the {blocked[0]} one" if blocked else "")
              + f"; peak in-flight per rank {check.peak_in_flight}; bubble at unit cost (F = 1, B = 2, "
              f"I = W = 1) {check.bubble:.4f}")
    return 0 if check.valid else 2


def _simulate_file(ns: argparse.Namespace) -> int:
    from ppbench.config import ConfigError
    from ppbench.measure.metrics import step_metrics
    from ppbench.plan.comm import add_communication
    from ppbench.plan.files import ScheduleFileError, read_schedule
    from ppbench.sim.costs import Costs
    from ppbench.sim.simulator import DeadlockError, simulate, simulated_events

    try:
        schedule = read_schedule(ns.schedule_file)
    except ScheduleFileError as exc:
        raise ConfigError("schedule_file", str(exc)) from None
    wgrad = ns.t_bwd / 2 if ns.t_wgrad is None else ns.t_wgrad
    try:
        costs = Costs(ns.t_fwd, ns.t_bwd, wgrad, ns.t_comm + ns.t_byte * ns.message_bytes, ns.overhead)
    except ValueError:
        raise ConfigError("costs", "--t-fwd, --t-bwd, --t-comm, --t-byte, --message-bytes, --t-wgrad and --overhead "
                          "must be >= 0, and --t-wgrad <= --t-bwd") from None
    transport = "nonblocking" if ns.transport == "auto" else ns.transport
    ranks = [list(acts) for acts in schedule.ranks]
    if not schedule.has_communication:
        ranks = [add_communication(acts, schedule.placement) for acts in ranks]
    try:
        result = simulate(ranks, costs, transport, schedule.placement)
    except (DeadlockError, ValueError) as exc:
        raise ConfigError("schedule_file", f"{ns.schedule_file}: {exc} (`ppbench validate` explains)") from None
    metrics = step_metrics(simulated_events(result, schedule.placement, schedule.microbatches), start=0.0)
    metrics = {k: metrics[k] for k in ("step_time", "bubble_mean", "bubble_max", "utilization", "overlap")}
    if ns.json:
        print(json.dumps({"schedule_file": ns.schedule_file, **metrics}))
    else:
        print(f"simulated {ns.schedule_file}: p={schedule.p} m={schedule.microbatches} ({transport})")
        print(f"  step time {metrics['step_time']:g}   bubble mean {metrics['bubble_mean']:.4f} "
              f"max {metrics['bubble_max']:.4f}   utilization {metrics['utilization']:.4f}   "
              f"overlap {metrics['overlap']:.3f}")
    return 0


def _simulate_runs(paths: list[str], samples: int, as_json: bool) -> int:
    from pathlib import Path

    from ppbench.measure.results import ResultFileError, load_runs, read_run
    from ppbench.report.text import comparison_text
    from ppbench.sim.calibrate import compare_with_simulation

    runs, skipped = [], []
    for path in paths:
        if Path(path).is_dir():
            found, bad = load_runs(path)
            runs += found
            skipped += bad
        else:
            try:
                runs.append(read_run(path))
            except (ResultFileError, OSError) as exc:
                skipped.append(f"{path}: {exc}")
    for line in skipped:
        print(f"ppbench simulate: skipped {line}", file=sys.stderr)
    if not runs:
        return error("no readable result files in " + ", ".join(paths))
    order = sorted(runs, key=lambda r: (r.config["schedule"], r.config["pp"], r.config["microbatches"]))
    rows = [compare_with_simulation(run, samples) for run in order]
    print(json.dumps(rows) if as_json else comparison_text(rows, samples))
    return 0
