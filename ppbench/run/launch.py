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
import time
from pathlib import Path

__all__ = ["in_mpi_job", "mpiexec_command", "run_mpi", "Interrupted", "LauncherError", "STOP_SIGNALS", "main"]

# Set by mpiexec/srun in every rank: MPICH/Hydra (PMI_*), Open MPI, PMIx launchers, Intel MPI.
_LAUNCHER_VARS = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS")


def in_mpi_job() -> bool:
    """True when this process was started by an MPI launcher (so it must not launch again)."""
    return any(var in os.environ for var in _LAUNCHER_VARS)


def mpiexec_command(nprocs: int, argv: list[str]) -> list[str]:
    exe = os.environ.get("PPBENCH_MPIEXEC")
    if exe:
        found = shutil.which(exe)
        if not found:
            raise LauncherError(f"PPBENCH_MPIEXEC={exe!r} is not an executable program")
        exe = found
    else:
        beside = Path(sys.executable).parent / "mpiexec"
        exe = str(beside) if beside.exists() else shutil.which("mpiexec")
    if not exe:
        raise LauncherError("no mpiexec found: install the 'mpich' wheel (pip install mpich) or a system MPI, "
                            "or set PPBENCH_MPIEXEC")
    extra = shlex.split(os.environ.get("PPBENCH_MPIEXEC_ARGS", ""))
    return [exe, *extra, "-n", str(nprocs), *argv]


class Interrupted(Exception):
    """ppbench received a signal; the MPI job it started has been ended. ``status`` is 128 + signal number."""

    def __init__(self, signum: int, ranks: int):
        self.signum, self.status = signum, 128 + signum
        super().__init__(f"stopped by {signal.Signals(signum).name}: ended the MPI job ({ranks} ranks)")


class LauncherError(RuntimeError):
    """The MPI launcher could not be started (missing, not executable)."""


#: signals that end ppbench, and with it the MPI job it started
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def run_mpi(nprocs: int, argv: list[str], timeout: float | None, stdout=None) -> int:
    """Run ``argv`` on ``nprocs`` ranks and return the job's exit status. The job is ended (its whole
    process group) after ``timeout`` seconds (status 124) or when ppbench receives SIGTERM, SIGINT or
    SIGHUP (raises :class:`Interrupted` once the job is gone, so no rank outlives ppbench).
    ``stdout``: an open file for the job's standard output (default: ppbench's)."""
    cmd = mpiexec_command(nprocs, argv)
    received: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: received.append(signum)) for s in STOP_SIGNALS}
    try:
        try:
            proc = subprocess.Popen(cmd, start_new_session=True, stdout=stdout)
        except OSError as exc:
            raise LauncherError(f"cannot start the MPI launcher {cmd[0]!r}: {exc.strerror or exc}; install the "
                                "'mpich' wheel or a system MPI, or point PPBENCH_MPIEXEC at mpiexec") from None
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                code = proc.wait(timeout=0.1)
                break
            except subprocess.TimeoutExpired:
                pass
            if received:
                _kill_group(proc)
                raise Interrupted(received[0], nprocs)
            if deadline is not None and time.monotonic() > deadline:
                _kill_group(proc)
                print(f"ppbench: MPI job exceeded its {timeout:g} s limit and was ended: {shlex.join(cmd)}",
                      file=sys.stderr, flush=True)
                return 124
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if code != 0 and not received:
        print(f"ppbench: the MPI job exited with status {code}: {shlex.join(cmd)}", file=sys.stderr, flush=True)
    return code


def _kill_group(proc: subprocess.Popen) -> None:
    """End the job's whole process group: SIGTERM, then SIGKILL after 5 s; return once it is gone."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=5)
            break
        except subprocess.TimeoutExpired:
            continue
    proc.wait()
    try:                       # ranks that left the launcher's group die with the group leader's session too
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


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
    try:
        return run_mpi(ns.nprocs, command, ns.timeout)
    except Interrupted as exc:
        print(f"ppbench: {exc}", file=sys.stderr, flush=True)
        return exc.status


if __name__ == "__main__":
    sys.exit(main())
