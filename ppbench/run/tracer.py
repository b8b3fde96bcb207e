"""Per-rank event recording on a clock shared by all ranks, and gathering events to rank 0.

An event is (op, stage, mb, start, end, peer, tag, nbytes) (:mod:`ppbench.measure.events`).
Compute events span the F/I/W/B call. A transfer event spans from its post (Isend/Irecv) to the moment
this rank observed its
completion (a Test or Wait that returned true). WAIT events span the time a rank was blocked
waiting for transfers. Times are seconds on rank 0's clock (see :func:`clock_offset`).
"""

from __future__ import annotations

import time

import numpy as np
from mpi4py import MPI

from ppbench.measure.events import EVENT_FIELDS
from ppbench.plan.actions import EVENT_OPS

__all__ = ["Tracer", "clock_offset", "offset_from_ping", "gather_rows"]

_OP_CODE = {op: i for i, op in enumerate(EVENT_OPS)}


class Tracer:
    """Collects this rank's events of the current step (cheap: one tuple append per event)."""

    def __init__(self, offset: float = 0.0, enabled: bool = True):
        self.offset = offset      # add to perf_counter() to get rank 0's clock
        self.enabled = enabled
        self.events: list[tuple] = []

    def now(self) -> float:
        return time.perf_counter() + self.offset

    def record(self, op: str, stage: int, mb: int, start: float, end: float, peer: int = -1, tag: int = -1,
               nbytes: int = 0) -> None:
        """One event; ``op`` is an :class:`~ppbench.plan.actions.Op` or WAIT, ALLREDUCE, OPTIMIZER
        (``stage`` and ``mb`` -1 for those)."""
        if self.enabled:
            self.events.append((_OP_CODE[op], stage, mb, start, end, peer, tag, nbytes))

    def take(self) -> np.ndarray:
        """This step's events as an (n, 8) float64 array, and forget them."""
        rows = np.array(self.events, dtype=np.float64).reshape(-1, len(EVENT_FIELDS))
        self.events = []
        return rows


def offset_from_ping(sent: float, remote: float, received: float) -> float:
    """What to add to this clock to read rank 0's: rank 0 read ``remote`` on its clock between our
    ``sent`` and ``received``, so at the midpoint of the round trip its clock showed ``remote``."""
    return remote - (sent + received) / 2


def clock_offset(comm: MPI.Comm, rounds: int = 20) -> tuple[float, float]:
    """(offset, uncertainty) of this rank's perf_counter relative to rank 0's (Cristian's method).

    Each rank pings rank 0 ``rounds`` times and keeps the round with the shortest round trip;
    the offset is exact to within half that round trip, returned as the uncertainty.
    """
    rank, size = comm.Get_rank(), comm.Get_size()
    buf = np.zeros(1)
    best = (0.0, 0.0)
    for peer in range(1, size):
        comm.Barrier()
        if rank == 0:
            for _ in range(rounds):
                comm.Recv(buf, source=peer, tag=77)
                buf[0] = time.perf_counter()
                comm.Send(buf, dest=peer, tag=78)
        elif rank == peer:
            shortest = float("inf")
            for _ in range(rounds):
                t0 = time.perf_counter()
                comm.Send(buf, dest=0, tag=77)
                comm.Recv(buf, source=0, tag=78)
                t1 = time.perf_counter()
                if t1 - t0 < shortest:
                    shortest = t1 - t0
                    best = (offset_from_ping(t0, float(buf[0]), t1), shortest / 2)
    return best


def gather_rows(comm: MPI.Comm, rows: np.ndarray, root: int = 0) -> np.ndarray | None:
    """Concatenate every rank's (n_r, k) float64 rows on ``root`` (buffer API, no pickle)."""
    rows = np.ascontiguousarray(rows, dtype=np.float64)
    width = rows.shape[1]
    counts = np.zeros(comm.Get_size(), dtype=np.int64)
    comm.Gather(np.array([rows.size], dtype=np.int64), counts, root=root)
    if comm.Get_rank() == root:
        out = np.empty(int(counts.sum()), dtype=np.float64)
        comm.Gatherv(rows.reshape(-1), (out, counts), root=root)
        return out.reshape(-1, width)
    comm.Gatherv(rows.reshape(-1), None, root=root)
    return None
