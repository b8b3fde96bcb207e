"""The process grid: COMM_WORLD split into pipeline and data-parallel communicators."""

from __future__ import annotations

from mpi4py import MPI

__all__ = ["Grid"]


class Grid:
    """World rank w is stage ``w % pp`` of replica ``w // pp``.

    ``pipe`` holds the pp stages of this rank's replica (ranked by stage); ``data`` holds the
    dp ranks that share this rank's stage (ranked by replica). Every rank is in one of each,
    as in the chapter's figure of pipeline x data parallelism.
    """

    def __init__(self, comm: MPI.Comm, pp: int, dp: int):
        if pp * dp != comm.Get_size():
            raise ValueError(f"pp x dp = {pp} x {dp} must equal the communicator size {comm.Get_size()}")
        self.world = comm
        self.pp, self.dp = pp, dp
        self.stage, self.replica = comm.Get_rank() % pp, comm.Get_rank() // pp
        self.pipe = comm.Split(color=self.replica, key=self.stage)
        self.data = comm.Split(color=self.stage, key=self.replica)

    def free(self) -> None:
        for comm in (self.pipe, self.data):
            if comm != MPI.COMM_NULL:
                comm.Free()

    def __enter__(self) -> Grid:
        return self

    def __exit__(self, *exc) -> None:
        self.free()

    def __repr__(self) -> str:
        return f"Grid(rank={self.world.Get_rank()}, stage={self.stage}/{self.pp}, replica={self.replica}/{self.dp})"
