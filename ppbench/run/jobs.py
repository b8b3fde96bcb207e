"""How a command runs on MPI ranks: launched under mpiexec when started alone, and the failure
policy inside the job (a user's configuration error exits 2 once; any other failure aborts the
whole job so that no rank waits forever)."""

from __future__ import annotations

import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from ppbench.config import ConfigError, InjectedFault, RunConfig
from ppbench.run.launch import in_mpi_job, run_mpi

__all__ = ["error", "launch_or_run", "on_every_rank", "output_directory"]


def error(message: str) -> int:
    """Print a user's mistake as one line; the exit status for it."""
    print(f"ppbench: error: {message}", file=sys.stderr, flush=True)
    return 2


def output_directory(path: str, option: str) -> Path:
    """``path`` as a directory ppbench can write into, created if missing; ConfigError naming ``--option`` if not."""
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise ConfigError(option, f"{path} exists and is not a directory; allowed: a directory (created if missing)")
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(option, f"cannot create directory {path}: {exc.strerror or exc}") from None
    if not os.access(target, os.W_OK | os.X_OK):
        raise ConfigError(option, f"directory {path} is not writable")
    return target


def launch_or_run(cfg: RunConfig, argv: list[str], timeout: float, on_rank: Callable[[RunConfig, object], int],
                  reference: bool = False) -> int:
    """Validate (fields, then whether the host can hold the run: ``reference`` counts the check's
    single-process model too); outside an MPI job re-launch this command (``argv``) on pp x dp
    ranks, inside it run ``on_rank``."""
    from ppbench.resources import check_run_fits, ranks_on_this_host
    from ppbench.sim.validate import require_runnable

    launching = cfg.pp * cfg.dp > 1 and not in_mpi_job()
    try:
        cfg = cfg.validate()
        require_runnable(cfg)
        if launching:
            check_run_fits(cfg, cfg.pp * cfg.dp, reference)
    except ConfigError as exc:
        return error(str(exc))
    if launching:
        return run_mpi(cfg.pp * cfg.dp, [sys.executable, "-m", "ppbench", *argv], timeout)

    def checked(comm) -> int:
        problem = None
        if comm.Get_rank() == 0:             # one rank reads the host's memory; every rank gets its verdict
            try:
                check_run_fits(cfg, ranks_on_this_host(comm.Get_size()), reference)
            except ConfigError as exc:
                problem = (exc.field, str(exc).partition(": ")[2])
        problem = comm.bcast(problem, root=0)
        if problem:
            raise ConfigError(*problem)
        return on_rank(cfg, comm)

    return on_every_rank(checked)


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
            error(str(exc))
        return 2
    except Exception as exc:  # noqa: BLE001 - any failure must end the job
        # a diverging loss or an injected fault is the user's: one line; anything else is a bug: the traceback
        users = isinstance(exc.__cause__, (FloatingPointError, InjectedFault))
        tb = "" if users and os.environ.get("PPBENCH_DEBUG") != "1" else "\n" + traceback.format_exc()
        print(f"ppbench: rank {comm.Get_rank()} of {comm.Get_size()} failed: {exc}{tb}", file=sys.stderr, flush=True)
        if comm.Get_size() > 1:
            time.sleep(0.5)      # let the launcher forward this message before MPI_Abort tears the job down
            comm.Abort(1)
        return 1
