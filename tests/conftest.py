"""Shared test set-up. Under MPI, a test failing on one rank aborts the whole job.

pytest-mpi runs the whole session on every rank; if one rank fails an assertion while the
others wait in a collective, the job would hang forever. So a failing MPI test writes its
report to stderr and to .mpi-test-logs/rank-N.txt, then calls MPI_Abort: the job ends at once
with a non-zero status, whichever rank failed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

LOG_DIR = Path(__file__).resolve().parent.parent / ".mpi-test-logs"


def world_size() -> int:
    """Ranks in COMM_WORLD (1 outside mpiexec)."""
    from mpi4py import MPI

    return MPI.COMM_WORLD.Get_size()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not report.failed or item.get_closest_marker("mpi") is None:
        return
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    if comm.Get_size() == 1:
        return
    rank = comm.Get_rank()
    try:
        text = f"\n=== MPI test failed on rank {rank} of {comm.Get_size()}: {item.nodeid} ({report.when})\n" \
               f"{report.longreprtext}\n"
        sys.stderr.write(text)
        sys.stderr.flush()
        LOG_DIR.mkdir(exist_ok=True)
        (LOG_DIR / f"rank-{rank}.txt").write_text(text)
    finally:
        comm.Abort(1)
