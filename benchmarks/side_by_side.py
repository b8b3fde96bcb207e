"""ppbench against PyTorch used directly, side by side in one run, launches alternated.

For each schedule, each round launches, one after the other: ``ppbench run`` (its executor, with
the serial baseline), ``ppbench run --impl torch`` (PyTorch's schedule inside ppbench's harness)
and ``benchmarks/torch_direct.py`` (PyTorch's schedule in a plain training loop); with
``--before DIR`` also ppbench from another checkout (e.g. a git worktree of an older commit).
Each launch reports the median iteration time of its measured steps; the table gives, per
variant, the median over rounds with min and max, the ratio to PyTorch-direct (median of the
per-round ratios) and ppbench's efficiency against the serial limit.

    python benchmarks/side_by_side.py --model mlp --size medium --global-batch 256 -m 8 \\
        --schedules gpipe,1f1b --rounds 5 --repeats 7
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _json_line(text: str) -> dict:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"no JSON in output:\n{text[-2000:]}")


def _run(cmd: list[str], cwd: str | None = None) -> dict:
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=1800,
                          env={**os.environ, "PYTHONPATH": cwd} if cwd else None)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return _json_line(proc.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", default="gpipe,1f1b")
    parser.add_argument("--pp", type=int, default=2)
    parser.add_argument("-m", "--microbatches", type=int, default=8)
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--size", default="medium")
    parser.add_argument("--global-batch", type=int, default=256)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--serial-steps", type=int, default=5)
    parser.add_argument("--before", help="another ppbench checkout to launch too (its directory; it runs from "
                                         "there, so `python -m ppbench` imports that checkout)")
    parser.add_argument("--no-torch", action="store_true", help="skip --impl torch and PyTorch-direct")
    parser.add_argument("--json", help="also write every launch's numbers to this file")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))     # this checkout's ppbench (asv imports this file too: nothing at import time)
    from ppbench.plan.schedules import SCHEDULES

    common = ["--pp", str(args.pp), "-m", str(args.microbatches), "--model", args.model, "--size", args.size,
              "--global-batch", str(args.global_batch), "--dtype", args.dtype, "--repeats", str(args.repeats)]
    python = sys.executable
    launches: list[dict] = []
    for schedule in args.schedules.split(","):
        variants = {
            "ppbench": ([python, "-m", "ppbench", "run", "--schedule", schedule, *common, "--no-save", "--json",
                         "--serial-steps", str(args.serial_steps)], None),   # (command, working directory)
        }
        if args.before:
            variants["ppbench before"] = ([python, "-m", "ppbench", "run", "--schedule", schedule, *common,
                                           "--no-save", "--json"], str(Path(args.before).resolve()))
        if not args.no_torch and SCHEDULES[schedule].torch_class:      # PyTorch has this schedule
            variants["--impl torch"] = ([python, "-m", "ppbench", "run", "--schedule", schedule, "--impl", "torch",
                                         *common, "--no-save", "--json"], None)
            mpiexec = str(Path(python).parent / "mpiexec")
            direct = str(ROOT / "benchmarks/torch_direct.py")
            variants["PyTorch direct"] = ([mpiexec, "-n", str(args.pp), python, direct,
                                           "--schedule", schedule, "-m", str(args.microbatches), "--model", args.model,
                                           "--size", args.size, "--global-batch", str(args.global_batch),
                                           "--dtype", args.dtype, "--repeats", str(args.repeats)], None)
        for rnd in range(args.rounds):
            for name, (cmd, cwd) in variants.items():
                out = _run(cmd, cwd)
                launches.append({"schedule": schedule, "round": rnd, "variant": name,
                                 "iteration_time": out["iteration_time_median"],
                                 "efficiency": out.get("efficiency"), "limit": out.get("limit_iteration_time"),
                                 "compute": out.get("compute_time_per_stage")})
                print(f"  {schedule} round {rnd} {name}: {out['iteration_time_median'] * 1e3:.1f} ms", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(launches, indent=1))
    _table(launches, args)


def _table(launches: list[dict], args) -> None:
    print(f"{args.model}/{args.size} {args.dtype}, batch {args.global_batch}, p={args.pp}, m={args.microbatches}: "
          f"iteration time, median of {args.rounds} alternated launches (min..max), each the median of "
          f"{args.repeats} steps")
    print(f"{'schedule':<10}{'variant':<16}{'ms':>8}{'min':>8}{'max':>8}{'/direct':>9}{'efficiency':>11}")
    for schedule in dict.fromkeys(x["schedule"] for x in launches):
        mine = [x for x in launches if x["schedule"] == schedule]
        direct = {x["round"]: x["iteration_time"] for x in mine if x["variant"] == "PyTorch direct"}
        for variant in dict.fromkeys(x["variant"] for x in mine):
            rows = [x for x in mine if x["variant"] == variant]
            times = [x["iteration_time"] for x in rows]
            ratio = (statistics.median(x["iteration_time"] / direct[x["round"]] for x in rows) if direct
                     else float("nan"))
            eff = [x["efficiency"] for x in rows if x["efficiency"] is not None]
            print(f"{schedule:<10}{variant:<16}{statistics.median(times) * 1e3:>8.1f}{min(times) * 1e3:>8.1f}"
                  f"{max(times) * 1e3:>8.1f}{ratio:>9.3f}"
                  + (f"{statistics.median(eff):>11.3f}" if eff else f"{'':>11}"))


if __name__ == "__main__":
    main()
