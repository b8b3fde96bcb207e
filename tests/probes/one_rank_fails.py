"""Probe for the conftest abort hook (run explicitly by test_cli.py, never collected by default):
rank 1 fails while rank 0 waits in a Barrier that rank 1 never reaches."""

import pytest


@pytest.mark.mpi(min_size=2)
def test_fails_on_rank_1_while_rank_0_waits():
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    assert comm.Get_rank() != 1, "deliberate failure on rank 1"
    comm.Barrier()
