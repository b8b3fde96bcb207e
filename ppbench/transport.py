"""Point-to-point tensor transfers through mpi4py's buffer API (Isend/Irecv; never pickle).

Every transfer is non-blocking at the MPI level, so no pair of ranks can deadlock on the order
of two sends. Waiting is polite: ``Testall`` then a short sleep, because a spinning receive
steals the core from working ranks when there are more ranks than cores.
"""

from __future__ import annotations

import time

import torch
from mpi4py import MPI

__all__ = ["Transport"]


class Transport:
    """Outstanding sends and receives of one rank on its pipeline communicator."""

    def __init__(self, comm: MPI.Comm, poll_interval: float = 1e-4):
        self.comm = comm
        self.poll_interval = poll_interval
        self._sends: list[tuple[MPI.Request, torch.Tensor]] = []
        self._recvs: dict[object, tuple[MPI.Request, torch.Tensor]] = {}

    def send(self, tensor: torch.Tensor, dest: int, tag: int) -> None:
        """Start sending ``tensor``; it is kept alive until the send completes."""
        buf = tensor.detach().contiguous()
        self._sends.append((self.comm.Isend(buf, dest, tag), buf))

    def post_recv(self, key: object, shape: tuple[int, ...], dtype: torch.dtype, source: int, tag: int) -> None:
        """Post a receive into a fresh buffer, once per key."""
        if key not in self._recvs:
            buf = torch.empty(shape, dtype=dtype)
            self._recvs[key] = (self.comm.Irecv(buf, source, tag), buf)

    def is_posted(self, key: object) -> bool:
        return key in self._recvs

    def take(self, key: object) -> torch.Tensor:
        """Wait for the receive posted under ``key`` and hand over its buffer."""
        request, buf = self._recvs.pop(key)
        self._wait([request])
        return buf

    def wait_all(self) -> None:
        """Complete every outstanding send and receive (receives stay available to take)."""
        self._wait([r for r, _ in self._sends] + [r for r, _ in self._recvs.values()])
        self._sends.clear()

    def progress(self) -> None:
        """Let MPI move outstanding transfers forward without waiting (call between computations)."""
        if self._sends or self._recvs:
            MPI.Request.Testall([r for r, _ in self._sends] + [r for r, _ in self._recvs.values()])

    def finish(self) -> None:
        """End of step: every send completed; no receive may be left over."""
        if self._recvs:
            raise RuntimeError(f"receives posted but never used: {sorted(map(str, self._recvs))}")
        self.wait_all()

    def _wait(self, requests: list[MPI.Request]) -> None:
        while not MPI.Request.Testall(requests):
            time.sleep(self.poll_interval)
