"""The ``ppbench`` command line."""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from typing import Callable

from ppbench.config import DTYPES, OPTIMIZERS, TRANSPORTS, ConfigError, RunConfig
from ppbench.run.launch import in_mpi_job, run_mpi
from ppbench.model_configs import PRESETS
from ppbench.plan.schedules import CHUNKED, NEEDS_NONBLOCKING, SCHEDULES, add_communication, compute_order, schedule_problem

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    ns = parser.parse_args(argv)
    if not hasattr(ns, "handler"):
        parser.print_help()
        return 2
    return ns.handler(ns, argv)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ppbench", description="Pipeline-parallel schedules over MPI: "
                                     "reference implementations, gradient equivalence, measurements.")
    sub = parser.add_subparsers(metavar="COMMAND")

    sched = sub.add_parser("schedule", help="print a schedule's per-rank action lists")
    sched.add_argument("name", choices=list(SCHEDULES))
    sched.add_argument("--stages", "-p", type=int, required=True, help="pipeline stages p")
    sched.add_argument("--microbatches", "-m", type=int, required=True, help="microbatches m")
    sched.add_argument("--chunks", "-v", type=int, default=None, help="model chunks per rank (interleaved: default 2)")
    sched.add_argument("--comm", action="store_true", help="include send/recv actions")
    sched.add_argument("--json", action="store_true", help="print JSON instead of a table")
    sched.set_defaults(handler=_cmd_schedule)

    check = sub.add_parser("check", help="compare a pipeline's gradients with single-process training")
    _add_run_options(check)
    check.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    check.add_argument("--timeout", type=float, default=900.0, help="seconds before the MPI job is killed")
    check.set_defaults(handler=_cmd_check)

    run = sub.add_parser("run", help="measure a configuration and record its result file")
    _add_run_options(run)
    _add_measure_options(run)
    run.add_argument("--results", default="results", help="directory for the result file (default results/)")
    run.add_argument("--no-save", action="store_true", help="print the metrics, write no file")
    run.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    run.add_argument("--quiet", action="store_true", help="print nothing (sweeps)")
    run.add_argument("--timeout", type=float, default=1800.0, help="seconds before the MPI job is killed")
    run.set_defaults(handler=_cmd_run)

    sweep = sub.add_parser("sweep", help="run a grid of configurations, skipping those already recorded")
    sweep.add_argument("--schedules", default="naive,gpipe,1f1b", help="comma-separated (default all)")
    sweep.add_argument("--world-sizes", default="1,2,4", help="ranks per run, comma-separated (default 1,2,4)")
    sweep.add_argument("--microbatches", default="1,4,16", help="comma-separated (default 1,4,16)")
    sweep.add_argument("--models", default="mlp", help="comma-separated families (default mlp)")
    sweep.add_argument("--sizes", default="tiny", help="comma-separated presets (default tiny)")
    sweep.add_argument("--workloads", default="model,synthetic", help="comma-separated (default model,synthetic)")
    sweep.add_argument("--dp", type=int, default=1, help="data-parallel replicas in every run (default 1)")
    for name, kind in (("--dtype", str), ("--t-fwd", float), ("--t-bwd", float), ("--message-bytes", int),
                       ("--warmup", int), ("--repeats", int), ("--transport", str)):
        sweep.add_argument(name, type=kind, default=getattr(RunConfig(), name[2:].replace("-", "_")))
    sweep.add_argument("--results", default="results", help="result directory (default results/)")
    sweep.add_argument("--redo", action="store_true", help="rerun configurations already recorded")
    sweep.add_argument("--dry-run", action="store_true", help="list the configurations and stop")
    sweep.add_argument("--timeout", type=float, default=900.0, help="seconds per run before it is killed")
    sweep.set_defaults(handler=_cmd_sweep)

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
    report.set_defaults(handler=_cmd_report)

    sim = sub.add_parser("simulate", help="simulate a schedule's metrics (no MPI; thousands of ranks in seconds), "
                         "or measured runs with their own measured costs (--from-run)")
    sim.add_argument("--schedule", choices=list(SCHEDULES))
    sim.add_argument("--stages", "-p", type=int)
    sim.add_argument("--microbatches", "-m", type=int)
    sim.add_argument("--t-fwd", type=float, default=1.0, help="time of one F (default 1)")
    sim.add_argument("--t-bwd", type=float, default=2.0, help="time of one B (default 2)")
    sim.add_argument("--t-comm", type=float, default=0.0, help="time of one message, from the later of its two "
                     "posts to completion, whatever its size (default 0)")
    sim.add_argument("--t-byte", type=float, default=0.0,
                     help="time per byte of a message, added to --t-comm (default 0; 1e-10 is 10 GB/s)")
    sim.add_argument("--message-bytes", type=int, default=0, help="bytes of every message, for --t-byte (default 0)")
    sim.add_argument("--t-wgrad", type=float, default=None,
                     help="time of one W, for split-backward schedules (default: half of --t-bwd)")
    sim.add_argument("--overhead", type=float, default=0.0,
                     help="host time a rank spends before each compute action (default 0)")
    sim.add_argument("--chunks", "-v", type=int, default=None, help="model chunks per rank (interleaved: default 2)")
    sim.add_argument("--transport", choices=["auto", "blocking", "nonblocking"], default="auto",
                     help="auto: blocking for naive, non-blocking otherwise (as ppbench run)")
    sim.add_argument("--from-run", nargs="+", metavar="PATH",
                     help="result files or directories: simulate each run with the F, B, W, message latency and "
                          "per-action overhead measured in it, and print measured beside simulated")
    sim.add_argument("--samples", type=int, default=30,
                     help="with --from-run: simulations per run, each action's costs drawn from the run's measured "
                          "ones; the median is shown (default 30; 0: one simulation with the mean costs)")
    sim.add_argument("--json", action="store_true")
    sim.set_defaults(handler=_cmd_simulate)
    return parser


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    d = RunConfig()
    parser.add_argument("--schedule", default=d.schedule, help=f"one of {', '.join(SCHEDULES)} (default {d.schedule})")
    parser.add_argument("--pp", type=int, default=d.pp, help=f"pipeline stages (default {d.pp})")
    parser.add_argument("--dp", type=int, default=d.dp, help=f"data-parallel replicas (default {d.dp})")
    parser.add_argument("--microbatches", "-m", type=int, default=d.microbatches,
                        help=f"microbatches per step (default {d.microbatches})")
    parser.add_argument("--chunks", "-v", type=int, default=d.chunks,
                        help="model chunks per rank, for the interleaved schedule (default 1)")
    parser.add_argument("--global-batch", type=int, default=d.global_batch,
                        help="samples per step over all replicas (default 2 x microbatches x dp)")
    parser.add_argument("--model", default=d.model, help=f"one of {', '.join(PRESETS)} (default {d.model})")
    parser.add_argument("--size", default=d.size, help=f"model preset: tiny, small, medium (default {d.size})")
    parser.add_argument("--dtype", default=d.dtype, help=f"one of {', '.join(DTYPES)} (default {d.dtype})")
    parser.add_argument("--seed", type=int, default=d.seed, help=f"weights and data seed (default {d.seed})")
    parser.add_argument("--steps", type=int, default=d.steps,
                        help="optimizer steps; 0 compares the gradients of one step (default 0)")
    parser.add_argument("--optimizer", default=d.optimizer, help=f"one of {', '.join(OPTIMIZERS)} (default {d.optimizer})")
    parser.add_argument("--lr", type=float, default=d.lr, help=f"learning rate (default {d.lr})")
    parser.add_argument("--transport", default=d.transport, help=f"one of {', '.join(TRANSPORTS)} (default auto)")
    parser.add_argument("--fault", default="", help="testing aid: RANK:ACTION[:KIND] injects a fault on that world "
                        "rank at that action, KIND raise (default), nan, kill or hang (e.g. 1:B2:nan)")
    parser.add_argument("--impl", default=d.impl, help="ppbench (default) or torch (torch.distributed.pipelining; "
                        "schedules gpipe, 1f1b, interleaved)")
    parser.add_argument("--device", default=d.device, help="auto (a CUDA device per local rank when available), "
                        "cpu or cuda (default auto)")
    parser.add_argument("--step-timeout", type=float, default=0.0,
                        help="seconds a training step may take before the job is ended (default 0: no limit)")


def _add_measure_options(parser: argparse.ArgumentParser) -> None:
    d = RunConfig()
    parser.add_argument("--workload", default=d.workload, help="model (real layers) or synthetic (timed sleeps)")
    parser.add_argument("--t-fwd", type=float, default=d.t_fwd, help=f"synthetic F seconds (default {d.t_fwd})")
    parser.add_argument("--t-bwd", type=float, default=d.t_bwd, help=f"synthetic B seconds (default {d.t_bwd})")
    parser.add_argument("--message-bytes", type=int, default=d.message_bytes,
                        help=f"synthetic bytes per message (default {d.message_bytes})")
    parser.add_argument("--warmup", type=int, default=d.warmup, help=f"unmeasured steps first (default {d.warmup})")
    parser.add_argument("--repeats", type=int, default=d.repeats, help=f"measured steps (default {d.repeats})")


def _config(ns: argparse.Namespace) -> RunConfig:
    extra = {k: getattr(ns, k) for k in ("workload", "t_fwd", "t_bwd", "message_bytes", "warmup", "repeats")
             if hasattr(ns, k)}
    return RunConfig(**extra, schedule=ns.schedule, pp=ns.pp, dp=ns.dp, microbatches=ns.microbatches, chunks=ns.chunks,
                     global_batch=ns.global_batch, model=ns.model, size=ns.size, dtype=ns.dtype, seed=ns.seed,
                     steps=ns.steps, optimizer=ns.optimizer, lr=ns.lr, transport=ns.transport,
                     fault=ns.fault, step_timeout=ns.step_timeout, device=ns.device, impl=ns.impl)


def _error(message: str) -> int:
    print(f"ppbench: error: {message}", file=sys.stderr, flush=True)
    return 2


def _cmd_schedule(ns: argparse.Namespace, argv: list[str]) -> int:
    from ppbench.sim.simulator import simulate

    p, m, v = ns.stages, ns.microbatches, _chunks(ns.name, ns.chunks)
    problem = schedule_problem(ns.name, p, m, v)
    if problem:
        return _error(problem)
    compute = [compute_order(ns.name, p, m, r, v) for r in range(p)]
    full = [add_communication(acts, p, r, v) for r, acts in enumerate(compute)]
    shown = full if ns.comm else compute
    if ns.json:
        print(json.dumps({"schedule": ns.name, "stages": p, "microbatches": m, "chunks": v,
                          "ranks": [[a.to_dict() for a in acts] for acts in shown]}))
        return 0
    print(f"{ns.name}: p={p} stages, m={m} microbatches" + (f", v={v} chunks per rank" if v > 1 else "")
          + "; action order per rank")
    for r, acts in enumerate(shown):
        print(f"  rank {r}: " + " ".join(map(str, acts)))
    costs = unit_costs(ns.name, 1.0, 2.0)
    print(f"\ntimeline (simulated: F = {costs.fwd:g}, B = {costs.bwd:g}" + (f", W = {costs.wgrad:g}" if costs.wgrad else "")
          + " units, free communication; '.' = idle)")
    print(timeline_text(simulate(full, costs, RunConfig(schedule=ns.name).resolved_transport, v=v), p))
    return 0


def _chunks(name: str, given: int | None) -> int:
    return given if given is not None else (2 if name in CHUNKED else 1)


def unit_costs(name: str, fwd: float, bwd: float, wgrad: float | None = None, comm: float = 0.0,
               overhead: float = 0.0):
    """Costs for a schedule; split-backward schedules divide ``bwd`` into B and W (half each
    unless ``wgrad`` is given), as the synthetic workload does."""
    from ppbench.sim.simulator import Costs

    if any(a.op == "W" for a in compute_order(name, 2, 2, 0, _chunks(name, None))):
        w = bwd / 2 if wgrad is None else wgrad
        return Costs(fwd, bwd - w, w, comm, overhead)
    return Costs(fwd, bwd, 0.0, comm, overhead)


def timeline_text(result, p: int) -> str:
    """The classic pipeline diagram as text: one row per rank, one cell per time unit
    (``F3`` = forward of microbatch 3 for one unit, ``F3c1`` the same on chunk 1, ``..`` = idle)."""
    width = int(round(result.makespan))
    cell = max((len(str(e.action)) for e in result.events if e.action.is_compute), default=2)
    rows = []
    for r in range(p):
        cells = ["." * cell] * width
        for e in result.by_rank(r):
            if e.action.is_compute:
                for t in range(int(round(e.start)), int(round(e.end))):
                    cells[t] = str(e.action).ljust(cell)
        rows.append(f"  rank {r} |" + "".join(cells) + "|")
    return "\n".join(rows)


def _launch_or_run(ns: argparse.Namespace, argv: list[str], on_rank: Callable[[RunConfig, object], int]) -> int:
    """Validate; outside an MPI job re-launch this command on pp x dp ranks, inside it run ``on_rank``."""
    try:
        cfg = _config(ns).validate()
    except ConfigError as exc:
        return _error(str(exc))
    if cfg.pp * cfg.dp > 1 and not in_mpi_job():
        return run_mpi(cfg.pp * cfg.dp, [sys.executable, "-m", "ppbench", *argv], ns.timeout)
    return on_every_rank(lambda comm: on_rank(cfg, comm))


def _cmd_check(ns: argparse.Namespace, argv: list[str]) -> int:
    return _launch_or_run(ns, argv, lambda cfg, comm: _check_on_rank(cfg, ns, comm))


def _check_on_rank(cfg: RunConfig, ns: argparse.Namespace, comm) -> int:
    from ppbench.run.check import run_check

    result = run_check(cfg, comm)
    if comm.Get_rank() == 0:
        print(json.dumps(result) if ns.json else _check_text(result), flush=True)
    return 0 if result["passed"] else 1


def _check_text(r: dict) -> str:
    stages = " ".join(f"[{a}..{b}]" for a, b in r["stage_layers"])
    lines = [
        f"ppbench check: {r['schedule']}  pp={r['pp']} dp={r['dp']} microbatches={r['microbatches']}  "
        f"model={r['model']}/{r['size']} {r['dtype']}  global batch={r['global_batch']}  steps={r['steps']}"
        + (f" ({r['optimizer']}, lr={r['lr']})" if r["steps"] else ""),
        f"  stage layers: {stages}",
        f"  loss {r['loss']:.12g}  (reference {r['ref_loss']:.12g}, rel err {r['loss_rel_err']:.2e})",
        f"  gradients:  max abs err {r['grad_max_abs_err']:.2e}  max rel err {r['grad_max_rel_err']:.2e}",
    ]
    if r["steps"]:
        lines.append(f"  parameters after {r['steps']} steps: max abs err {r['param_max_abs_err']:.2e}  "
                     f"max rel err {r['param_max_rel_err']:.2e}")
    verdict = "EQUIVALENT" if r["passed"] else "NOT EQUIVALENT"
    lines.append(f"  {verdict}: max rel err {r['max_rel_err']:.2e} vs tolerance {r['tolerance']:.0e}")
    return "\n".join(lines)


def _cmd_run(ns: argparse.Namespace, argv: list[str]) -> int:
    return _launch_or_run(ns, argv, lambda cfg, comm: _run_on_rank(cfg, ns, comm))


def _run_on_rank(cfg: RunConfig, ns: argparse.Namespace, comm) -> int:
    from ppbench.run.runner import run_benchmark

    summary = run_benchmark(cfg, comm, None if ns.no_save else ns.results)
    if summary is not None and not ns.quiet:
        print(json.dumps(summary) if ns.json else run_text(cfg, summary), flush=True)
    return 0


def run_text(cfg: RunConfig, s: dict) -> str:
    env = s["environment"]
    work = (f"synthetic F={cfg.t_fwd * 1e3:g} ms B={cfg.t_bwd * 1e3:g} ms, {cfg.message_bytes} B/message"
            if cfg.workload == "synthetic" else f"model {cfg.model}/{cfg.size} {cfg.dtype}")
    over = " OVERSUBSCRIBED" if env["oversubscribed"] else ""
    return "\n".join([
        f"ppbench run: {cfg.schedule} ({cfg.resolved_transport})  pp={cfg.pp} dp={cfg.dp} m={cfg.microbatches}  "
        f"{work}  batch={cfg.batch}",
        f"  on {env['host']}: {env['world_size']} ranks, {env['cores']} cores{over}, {env['device']}, "
        f"{env['mpi_library']}",
        f"  step time   median {s['step_time_median'] * 1e3:.3f} ms  (min {s['step_time_min'] * 1e3:.3f}, "
        f"max {s['step_time_max'] * 1e3:.3f}; {s['steps']} steps)",
        f"  throughput  {s['throughput_median']:.1f} samples/s (iteration {s['iteration_time_median'] * 1e3:.3f} ms "
        f"incl. allreduce {s['allreduce_time_median'] * 1e3:.3f} ms, optimizer {s['optimizer_time_median'] * 1e3:.3f} ms)",
        f"  bubble      mean {s['bubble_mean_median']:.3f}  max {s['bubble_max_median']:.3f}  "
        f"(theory {s['bubble_theory']:.3f}, simulated with this run's costs {s['bubble_simulated']:.3f})   "
        f"utilization {s['utilization_median']:.3f}",
        f"  overlap     {s['overlap_median']:.3f}   exposed communication {s['exposed_comm_median'] * 1e3:.3f} ms/rank",
        f"  in flight   {s['peak_in_flight']} (theory {s['peak_in_flight_theory']})   "
        f"saved activations {[round(b / 1024, 1) for b in s['peak_saved_bytes']]} KiB per stage",
        f"  clock skew  <= {s['clock_skew_max'] * 1e6:.1f} us   tracing overhead ~{s['trace_overhead'] * 100:.2f}% "
        f"of step time",
        f"  saved to    {s['path']}" if s["path"] else "  not saved (--no-save)",
    ])


def _cmd_sweep(ns: argparse.Namespace, argv: list[str]) -> int:
    from ppbench.run.sweep import run_sweep, sweep_configs

    def items(text: str, kind=str) -> list:
        try:
            return [kind(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise SystemExit(_error(f"cannot read {text!r} as a comma-separated list of {kind.__name__}"))

    try:
        RunConfig(dtype=ns.dtype, transport=ns.transport, t_fwd=ns.t_fwd, t_bwd=ns.t_bwd,
                  message_bytes=ns.message_bytes, warmup=ns.warmup, repeats=ns.repeats, dp=ns.dp).validate()
    except ConfigError as exc:
        return _error(str(exc))
    configs, notes = sweep_configs(items(ns.schedules), items(ns.world_sizes, int), items(ns.microbatches, int),
                                   items(ns.models), items(ns.sizes), items(ns.workloads), dp=ns.dp,
                                   dtype=ns.dtype, transport=ns.transport, t_fwd=ns.t_fwd, t_bwd=ns.t_bwd,
                                   message_bytes=ns.message_bytes, warmup=ns.warmup, repeats=ns.repeats)
    for note in notes:
        print(f"ppbench sweep: left out {note}")
    if not configs:
        return _error("the sweep grid holds no valid configuration")
    if ns.dry_run:
        for cfg in configs:
            print(f"{cfg.schedule} pp={cfg.pp} dp={cfg.dp} m={cfg.microbatches} {cfg.workload} {cfg.model}/{cfg.size}")
        return 0
    return 1 if run_sweep(configs, ns.results, ns.redo, ns.timeout) else 0


def _cmd_report(ns: argparse.Namespace, argv: list[str]) -> int:
    from pathlib import Path

    from ppbench.report.summary import run_report

    if not Path(ns.directory).is_dir():
        return _error(f"{ns.directory} is not a directory")
    code, text, warnings = run_report(ns.directory, ns.format, ns.out, ns.schedule, ns.model, ns.workload,
                                      ns.baseline, write=not ns.no_files)
    for warning in warnings:
        print(f"ppbench report: {warning}", file=sys.stderr)
    if text:
        print(text)
    return code


def _cmd_simulate(ns: argparse.Namespace, argv: list[str]) -> int:
    if ns.from_run:
        if ns.samples < 0:
            return _error(f"--samples must be >= 0, got {ns.samples}")
        return _simulate_runs(ns.from_run, ns.samples, ns.json)
    from ppbench.plan import theory
    from ppbench.sim.array_simulator import array_metrics, simulate_arrays
    from ppbench.plan.arrays import schedule_arrays

    missing = [flag for flag, value in (("--schedule", ns.schedule), ("--stages", ns.stages),
                                        ("--microbatches", ns.microbatches)) if value is None]
    if missing:
        return _error(f"simulate needs {', '.join(missing)} (or --from-run FILE)")
    p, m, v = ns.stages, ns.microbatches, _chunks(ns.schedule, ns.chunks)
    problem = schedule_problem(ns.schedule, p, m, v)
    if problem:
        return _error(problem)
    times = (ns.t_fwd, ns.t_bwd, ns.t_comm, ns.t_wgrad or 0.0, ns.overhead, ns.t_byte, ns.message_bytes)
    if min(times) < 0 or (ns.t_wgrad or 0.0) > ns.t_bwd:
        return _error("--t-fwd, --t-bwd, --t-comm, --t-byte, --message-bytes, --t-wgrad and --overhead must be >= 0, "
                      "and --t-wgrad <= --t-bwd")
    comm = ns.t_comm + ns.t_byte * ns.message_bytes
    costs = unit_costs(ns.schedule, ns.t_fwd, ns.t_bwd, ns.t_wgrad, comm, ns.overhead)
    transport = RunConfig(schedule=ns.schedule, transport=ns.transport).resolved_transport
    if transport == "blocking" and ns.schedule in NEEDS_NONBLOCKING:
        return _error(f"{ns.schedule} deadlocks with the blocking transport; use --transport nonblocking or auto")
    started = time.perf_counter()
    metrics = array_metrics(simulate_arrays(schedule_arrays(ns.schedule, p, m, v), costs, transport))
    metrics.update(schedule=ns.schedule, stages=p, microbatches=m, chunks=v,
                   bubble_theory=theory.bubble_fraction(ns.schedule, p, m, v),
                   seconds=time.perf_counter() - started)
    if ns.json:
        print(json.dumps(metrics))
    else:
        print(f"simulated {ns.schedule}: p={p} m={m}" + (f" v={v}" if v > 1 else "") + f" F={costs.fwd:g} "
              f"B={costs.bwd:g}" + (f" W={costs.wgrad:g}" if costs.wgrad else "") + f" comm={comm:g}"
              + (f" overhead={ns.overhead:g}" if ns.overhead else "") + f" ({transport}; {metrics['seconds']:.2f} s)")
        print(f"  step time {metrics['step_time']:g}   bubble mean {metrics['bubble_mean']:.4f} "
              f"max {metrics['bubble_max']:.4f} (theory {metrics['bubble_theory']:.4f})   "
              f"utilization {metrics['utilization']:.4f}   overlap {metrics['overlap']:.3f}")
    return 0


def _simulate_runs(paths: list[str], samples: int, as_json: bool) -> int:
    from pathlib import Path

    from ppbench.sim.calibrate import compare_with_simulation
    from ppbench.measure.results import ResultFileError, load_runs, read_run

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
        return _error("no readable result files in " + ", ".join(paths))
    rows = [compare_with_simulation(run, samples) for run in sorted(runs, key=lambda r: (r.config["schedule"], r.config["pp"],
                                                                                r.config["microbatches"]))]
    if as_json:
        print(json.dumps(rows))
        return 0
    how = (f"median of {samples} simulations drawing every action's costs from the run's measured ones" if samples
           else "one simulation with the run's mean costs")
    print(f"measured vs simulated ({how}); mean costs in ms: F, B, W, message latency, overhead per action")
    print(f"{'schedule':<12}{'p':>3}{'m':>4} {'transport':<12}{'F':>6}{'B':>6}{'W':>6}{'comm':>6}{'ovh':>6}"
          f"{'step meas':>10}{'step sim':>10}{'bubble meas':>12}{'bubble sim':>11}{'diff':>7}{'ovl meas':>9}{'ovl sim':>8}")
    for row in rows:
        c, me, si = row["costs"], row["measured"], row["simulated"]
        print(f"{row['schedule']:<12}{row['pp']:>3}{row['microbatches']:>4} {row['transport']:<12}"
              + "".join(f"{1e3 * c[k]:>6.2f}" for k in ("fwd", "bwd", "wgrad", "comm", "overhead"))
              + f"{1e3 * me['step_time']:>10.2f}{1e3 * si['step_time']:>10.2f}{me['bubble_mean']:>12.3f}"
              f"{si['bubble_mean']:>11.3f}{row['bubble_difference']:>+7.3f}{me['overlap']:>9.3f}{si['overlap']:>8.3f}")
    return 0


def on_every_rank(work: Callable[[object], int]) -> int:
    """Run ``work(COMM_WORLD)`` on this rank. A ConfigError (raised alike on every rank) exits 2
    with one message; any other exception is printed with this rank's number and aborts the
    whole job, so no rank is left waiting."""
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    try:
        return work(comm)
    except ConfigError as exc:
        if comm.Get_rank() == 0:
            _error(str(exc))
        return 2
    except Exception as exc:  # noqa: BLE001 - any failure must end the job
        tb = traceback.format_exc()
        print(f"ppbench: rank {comm.Get_rank()} of {comm.Get_size()} failed: {exc}\n{tb}", file=sys.stderr, flush=True)
        if comm.Get_size() > 1:
            time.sleep(0.5)      # let the launcher forward this message before MPI_Abort tears the job down
            comm.Abort(1)
        return 1
