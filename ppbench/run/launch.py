"""Starting MPI jobs: detect a running one, or re-launch a command under ``mpiexec`` with a timeout.

The launcher is chosen as: $PPBENCH_MPIEXEC, else the ``mpiexec`` next to this Python (the
``mpich`` wheel installs one there), else ``mpiexec`` on PATH. Extra launcher flags come from
$PPBENCH_MPIEXEC_ARGS (e.g. ``--oversubscribe`` for Open MPI).
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

__all__ = ["in_mpi_job", "mpiexec_command", "run_mpi", "main"]

# Set by mpiexec/srun in every rank: MPICH/Hydra (PMI_*), Open MPI, PMIx launchers, Intel MPI.
_LAUNCHER_VARS = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS")


def in_mpi_job() -> bool:
    """True when this process was started by an MPI launcher (so it must not launch again)."""
    return any(var in os.environ for var in _LAUNCHER_VARS)


def mpiexec_command(nprocs: int, argv: list[str]) -> list[str]:
    exe = os.environ.get("PPBENCH_MPIEXEC")
    if not exe:
        beside = Path(sys.executable).parent / "mpiexec"
        exe = str(beside) if beside.exists() else shutil.which("mpiexec")
    if not exe:
        raise FileNotFoundError("no mpiexec found: install the 'mpich' wheel (pip install mpich) or a system MPI, "
                                "or set PPBENCH_MPIEXEC")
    extra = shlex.split(os.environ.get("PPBENCH_MPIEXEC_ARGS", ""))
    return [exe, *extra, "-n", str(nprocs), *argv]


def run_mpi(nprocs: int, argv: list[str], timeout: float | None) -> int:
    """Run ``argv`` on ``nprocs`` ranks; kill the whole job after ``timeout`` seconds (exit 124)."""
    cmd = mpiexec_command(nprocs, argv)
    proc = subprocess.Popen(cmd, start_new_session=True)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"ppbench: MPI job exceeded its {timeout:g} s limit and was killed: {shlex.join(cmd)}",
              file=sys.stderr, flush=True)
        _kill_group(proc)
        return 124
    except KeyboardInterrupt:
        _kill_group(proc)
        raise


def _kill_group(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=5)
            return
        except subprocess.TimeoutExpired:
            continue


def main(args: list[str] | None = None) -> int:
    """``python -m ppbench.run.launch -n N [--timeout S] -- COMMAND...``: used by nox and the tests."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m ppbench.run.launch", description=main.__doc__)
    parser.add_argument("-n", "--nprocs", type=int, required=True, help="number of MPI ranks")
    parser.add_argument("--timeout", type=float, default=None, help="seconds before the whole job is killed")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="command to run on every rank (after --)")
    ns = parser.parse_args(args)
    command = ns.command[1:] if ns.command[:1] == ["--"] else ns.command
    if not command or ns.nprocs < 1:
        parser.error("need -n N >= 1 and a command after --")
    return run_mpi(ns.nprocs, command, ns.timeout)


if __name__ == "__main__":
    sys.exit(main())
