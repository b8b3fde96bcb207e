"""``ppbench profile`` and ``ppbench advise``: their options and what they print."""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from pathlib import Path

from ppbench.config import ConfigError, RunConfig
from ppbench.plan.schedules import SCHEDULES
from ppbench.run.jobs import error

__all__ = ["add_profile_command", "add_advise_command", "parse_bytes", "parse_sizes"]

MAX_PROFILE_SIZE = 1 << 16       # a profiled microbatch size
MAX_TOP = 10_000
MAX_VERIFY = 32
_UNITS = {"": 1, "b": 1, "k": 2**10, "kib": 2**10, "m": 2**20, "mib": 2**20, "g": 2**30, "gib": 2**30,
          "t": 2**40, "tib": 2**40, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}


def parse_bytes(text: str) -> int:
    """A byte count: ``17179869184``, ``16GiB``, ``512MiB``, ``8GB`` (argparse type)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _UNITS or not 0 < float(match.group(1)) * _UNITS[unit] <= 2**60:
        raise argparse.ArgumentTypeError(f"must be bytes (e.g. 17179869184, 16GiB, 512MiB), got {text!r}")
    return int(float(match.group(1)) * _UNITS[unit])


def parse_sizes(text: str) -> list[int]:
    """Microbatch sizes: comma-separated integers in 1..65536, increasing once sorted (argparse type)."""
    try:
        sizes = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        sizes = []
    if not sizes or not 1 <= sizes[0] <= sizes[-1] <= MAX_PROFILE_SIZE or len(sizes) > 64:
        raise argparse.ArgumentTypeError(f"must be 1 to 64 comma-separated sizes in 1..{MAX_PROFILE_SIZE}, "
                                         f"got {text!r}")
    return sizes


def _count(low: int, high: int):
    def parse(text: str) -> int:
        if not text.strip().isdigit() or not low <= int(text) <= high:
            raise argparse.ArgumentTypeError(f"must be an integer in {low}..{high}, got {text!r}")
        return int(text)
    return parse


def _seconds_per_sample(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and 0 <= value <= 3600):
        raise argparse.ArgumentTypeError(f"must be seconds in 0..3600, got {text!r}")
    return value


# ---------------------------------------------------------------------------------------------- profile

def add_profile_command(sub, add_config_options) -> None:
    prof = sub.add_parser("profile", help="measure a model's per-layer F, I, W, B times and saved bytes, and this "
                          "machine's message and Allreduce costs, into a profile file for `ppbench advise`")
    add_config_options(prof, names=("model", "size", "layers", "width", "heads", "embd", "context", "vocab", "dtype",
                                    "seed", "optimizer", "device", "threads"))
    prof.add_argument("--microbatch-sizes", type=parse_sizes, default=parse_sizes("1,2,4,8,16,32"),
                      help="microbatch sizes to profile (default 1,2,4,8,16,32); advise considers those in between")
    prof.add_argument("--repeats", type=_count(1, 1000), default=7, help="timed repetitions per measurement (median)")
    prof.add_argument("--ranks", type=_count(2, 4096), default=2,
                      help="ranks measuring at once, and over which messages and the Allreduce are timed (default 2)")
    prof.add_argument("--output", "-o", required=True, help="the profile file to write (JSON)")
    prof.add_argument("--force", action="store_true", help="replace --output if it exists")
    prof.add_argument("--timeout", type=float, default=1800.0, help="seconds before the MPI job is ended")
    syn = prof.add_argument_group("synthetic workload (instead of a model)")
    syn.add_argument("--workload", choices=["model", "synthetic"], default="model")
    syn.add_argument("--fwd-per-sample", type=_seconds_per_sample, default=0.0005,
                     help="synthetic: seconds of the whole model's forward per sample (default 0.0005)")
    syn.add_argument("--bwd-per-sample", type=_seconds_per_sample, default=0.001,
                     help="synthetic: seconds of its backward per sample (default 0.001)")
    syn.add_argument("--bytes-per-sample", type=_count(4, 2**30), default=16384,
                     help="synthetic: activation bytes per sample between stages (default 16384)")
    prof.set_defaults(handler=_cmd_profile)


def _cmd_profile(ns: argparse.Namespace, argv: list[str]) -> int:
    from ppbench.run.jobs import on_every_rank
    from ppbench.run.launch import in_mpi_job, run_mpi

    output = Path(ns.output)
    synthetic = ns.workload == "synthetic"
    layers = ns.layers or 16
    cfg = RunConfig(**{k: getattr(ns, k) for k in ("model", "size", "layers", "width", "heads", "embd", "context",
                                                   "vocab", "dtype", "seed", "optimizer", "device", "threads")},
                    pp=1, microbatches=1)
    try:
        if synthetic:
            cfg = RunConfig(pp=1, microbatches=1, threads=ns.threads, dtype=ns.dtype, optimizer=ns.optimizer)
            if layers > 100_000:
                raise ConfigError("layers", f"must be 1..100000 for the synthetic profile, got {layers}")
        cfg.validate()
        if output.exists() and not ns.force:
            raise ConfigError("output", f"{output} exists; pass --force to replace it (nothing is overwritten unasked)")
        if output.exists() and output.is_dir():
            raise ConfigError("output", f"{output} is a directory; allowed: a file path")
        if not output.parent.exists():
            output.parent.mkdir(parents=True, exist_ok=True)
    except ConfigError as exc:
        return error(str(exc))
    except OSError as exc:
        return error(f"invalid output: cannot create {output.parent}: {exc.strerror or exc}")
    if not in_mpi_job():
        return run_mpi(ns.ranks, [sys.executable, "-m", "ppbench", *argv], ns.timeout)
    spec = {"layers": layers, "t_fwd": ns.fwd_per_sample, "t_bwd": ns.bwd_per_sample,
            "message_bytes": ns.bytes_per_sample} if synthetic else None

    def work(comm) -> int:
        from ppbench.advise.profile_file import write_profile
        from ppbench.advise.profiler import run_profile

        start = time.monotonic()
        record = run_profile(cfg, comm, ns.microbatch_sizes, ns.repeats, spec)
        if record is not None:
            write_profile(output, record)
            m = record["machine"]
            print(f"ppbench profile: {record['model_name']} {record['dtype']}, {len(record['layers'])} layers x "
                  f"{len(record['microbatch_sizes'])} microbatch sizes on {comm.Get_size()} ranks "
                  f"({time.monotonic() - start:.1f} s)\n"
                  f"  per action {m['overhead'] * 1e6:.1f} us; message {m['latency'] * 1e6:.1f} us + "
                  f"{m['seconds_per_byte'] * 1e9:.3f} ns/B; allreduce {m['allreduce_latency'] * 1e6:.1f} us + "
                  f"{m['allreduce_seconds_per_byte'] * 1e9:.3f} ns/B per hop\n  wrote {output}", flush=True)
        return 0

    return on_every_rank(work)


# ---------------------------------------------------------------------------------------------- advise

def add_advise_command(sub) -> None:
    adv = sub.add_parser("advise", help="which schedule, stages, replicas and microbatches for a profiled model on N "
                         "ranks: predicted by simulation with the profile's costs, optionally proven by runs")
    adv.add_argument("--profile", required=True, help="a file written by `ppbench profile`")
    adv.add_argument("--world-size", "-n", type=_count(1, 1 << 20), required=True, help="ranks N = p x d")
    adv.add_argument("--global-batch", type=_count(1, 2**31 - 1), default=0,
                     help="samples per iteration over all replicas (default: N x the largest profiled microbatch size)")
    adv.add_argument("--memory-per-rank", type=parse_bytes, default=None,
                     help="drop candidates whose busiest rank needs more (bytes, or e.g. 16GiB; default: no cap)")
    adv.add_argument("--schedules", default=",".join(SCHEDULES),
                     help="comma-separated schedules to consider (default: all built-in)")
    adv.add_argument("--schedule-file", action="append", default=[],
                     help="your schedule file too (PyTorch CSV or ppbench JSON; repeatable)")
    adv.add_argument("--pp", default="", help="only these pipeline stage counts p (comma-separated; default: every "
                     "divisor of N)")
    adv.add_argument("--max-chunks", type=_count(2, 64), default=4, help="largest v tried for interleaved schedules")
    adv.add_argument("--top", type=_count(1, MAX_TOP), default=10, help="rows to print (default 10)")
    adv.add_argument("--output", "-o", default="",
                     help="file stem for the table (.csv and .json; default results/advice/advice-<time>)")
    adv.add_argument("--json", action="store_true", help="print the result as JSON")
    adv.add_argument("--verify", type=_count(0, MAX_VERIFY), default=0,
                     help="run the top K (and 1F1B with m = 4p) with `ppbench run` and print predicted vs measured")
    adv.add_argument("--repeats", type=_count(1, 10_000), default=7, help="--verify: measured steps per run")
    adv.add_argument("--rounds", type=_count(1, 100), default=3,
                     help="--verify: runs of each candidate, in alternation; the median is compared (default 3)")
    adv.add_argument("--timeout", type=float, default=900.0, help="--verify: seconds per run before it is ended")
    adv.set_defaults(handler=_cmd_advise)


def _cmd_advise(ns: argparse.Namespace, argv: list[str]) -> int:
    from ppbench.advise.profile_file import ProfileError, read_profile
    from ppbench.advise.report import advice_record, advice_text, write_advice

    start = time.perf_counter()
    try:
        profile = read_profile(ns.profile)
        schedules = [s.strip() for s in ns.schedules.split(",") if s.strip()]
        unknown = [s for s in schedules if s not in SCHEDULES]
        if unknown or not schedules:
            raise ConfigError("schedules", f"{unknown or ns.schedules!r} not known; allowed: {', '.join(SCHEDULES)}")
        files = _schedule_files(ns.schedule_file)
        stages = _stage_counts(ns.pp, ns.world_size)
        batch = ns.global_batch or ns.world_size * int(profile.sizes[-1])
        if ns.verify and profile.workload == "model" and ns.world_size > 64:
            raise ConfigError("verify", f"runs {ns.world_size} ranks on this host; allowed: --world-size up to 64")
        from ppbench.resources import check_simulation_fits

        check_simulation_fits(ns.world_size, min(batch, 4096), ns.max_chunks)
    except ProfileError as exc:
        return error(f"invalid profile: {exc}")
    except ConfigError as exc:
        return error(str(exc))
    from ppbench.advise.predict import advise

    ranked, excluded = advise(profile, ns.world_size, batch, schedules, ns.memory_per_rank, ns.max_chunks, files,
                              stages)
    elapsed = time.perf_counter() - start
    record = advice_record(profile, ns.world_size, batch, ns.memory_per_rank, ranked, excluded, elapsed)
    if ns.verify and ranked:
        from ppbench.advise.verify import verify

        stem = _stem(ns.output)
        record["verified"] = verify(profile, ranked, ns.verify, batch, str(stem) + "-runs", ns.repeats, ns.timeout,
                                    ns.rounds)
    stem = write_advice(_stem(ns.output), record)
    print(json.dumps(record) if ns.json else advice_text(record, ns.top) + f"\n\nwrote {stem}.csv and {stem}.json")
    return 0 if ranked else 1


def _stem(output: str) -> Path:
    return Path(output) if output else Path("results") / "advice" / f"advice-{time.strftime('%Y%m%d-%H%M%S')}"


def _stage_counts(text: str, world: int) -> list[int] | None:
    if not text:
        return None
    try:
        counts = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        counts = []
    if not counts or any(c < 1 or world % c for c in counts):
        raise ConfigError("pp", f"{text!r} must be comma-separated divisors of the world size {world}")
    return counts


def _schedule_files(paths: list[str]) -> dict:
    from ppbench.plan.files import ScheduleFileError, read_schedule

    out = {}
    for path in paths:
        try:
            out[path] = read_schedule(path)
        except ScheduleFileError as exc:
            raise ConfigError("schedule_file", str(exc)) from None
    return out
