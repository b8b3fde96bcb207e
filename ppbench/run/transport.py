"""Point-to-point tensor transfers through mpi4py's buffer API (Isend/Irecv; never pickle).

Every transfer is non-blocking at the MPI level, so no pair of ranks can deadlock on the order
of two sends. Waiting is polite: test, then a short sleep, because a spinning receive steals
the core from working ranks when there are more ranks than cores. Each transfer is traced from
its post to the moment its completion is observed; time spent blocked is traced as WAIT.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from mpi4py import MPI

from ppbench.run.tracer import Tracer

__all__ = ["Transport"]


@dataclass(eq=False)   # identity: two completed requests are both REQUEST_NULL and would compare equal
class _Transfer:
    request: MPI.Request
    buf: torch.Tensor
    op: str            # SEND_F, RECV_F, SEND_B, RECV_B
    mb: int
    chunk: int
    peer: int
    tag: int
    posted: float
    done: float | None = None


class Transport:
    """Outstanding sends and receives of one rank on its pipeline communicator."""

    def __init__(self, comm: MPI.Comm, tracer: Tracer | None = None, poll_interval: float = 1e-4,
                 peer_names: list[int] | None = None, device: torch.device = torch.device("cpu"),
                 cuda_aware: bool = False):
        self.comm = comm
        self.device = device
        # GPU tensors go through host buffers unless the MPI library reads device memory itself
        self.staging = device.type == "cuda" and not cuda_aware
        self.tracer = tracer or Tracer(enabled=False)
        self.poll_interval = poll_interval
        self.peer_names = peer_names     # world rank of each pipe rank, for traces
        self._sends: list[_Transfer] = []
        self._recvs: dict[object, _Transfer] = {}
        self._waiting: list[_Transfer] = []

    def waiting_for(self) -> str:
        """The transfers this rank is blocked on right now ('' when it is not waiting)."""
        verb = {"SEND_F": "activation to", "SEND_B": "gradient to", "RECV_F": "activation from",
                "RECV_B": "gradient from"}
        names = self.peer_names or list(range(self.comm.Get_size()))
        return ", ".join(f"{t.op}{t.mb} ({verb[t.op]} rank {names[t.peer]})" for t in self._waiting if t.done is None)

    def send(self, tensor: torch.Tensor, dest: int, tag: int, op: str = "SEND_F", mb: int = -1, chunk: int = 0) -> None:
        """Start sending ``tensor``; it is kept alive until the send completes."""
        buf = tensor.detach().contiguous()
        if self.staging:
            buf = buf.to("cpu")            # synchronous copy: the data is final before MPI reads it
        now = self.tracer.now()
        self._sends.append(_Transfer(self.comm.Isend(buf, dest, tag), buf, op, mb, chunk, dest, tag, now))

    def post_recv(self, key: object, shape: tuple[int, ...], dtype: torch.dtype, source: int, tag: int,
                  op: str = "RECV_F", mb: int = -1, chunk: int = 0) -> None:
        """Post a receive into a fresh buffer, once per key."""
        if key not in self._recvs:
            buf = torch.empty(shape, dtype=dtype, device="cpu" if self.staging else self.device)
            now = self.tracer.now()
            self._recvs[key] = _Transfer(self.comm.Irecv(buf, source, tag), buf, op, mb, chunk, source, tag, now)

    def take(self, key: object) -> torch.Tensor:
        """Wait for the receive posted under ``key`` and hand over its buffer."""
        transfer = self._recvs.pop(key)
        self._wait([transfer])
        self._trace(transfer)
        return transfer.buf.to(self.device) if self.staging else transfer.buf

    def wait_all(self) -> None:
        """Complete every outstanding send and receive (receives stay available to take)."""
        self._wait(self._sends + list(self._recvs.values()))
        self._retire_sends()

    def progress(self) -> None:
        """Let MPI move outstanding transfers forward without waiting; note completions."""
        if self._sends or self._recvs:
            self._test(self._sends + list(self._recvs.values()))
            self._retire_sends()

    def finish(self) -> None:
        """End of step: every send completed; no receive may be left over."""
        if self._recvs:
            raise RuntimeError(f"receives posted but never used: {sorted(map(str, self._recvs))}")
        self.wait_all()

    def _test(self, transfers: list[_Transfer]) -> bool:
        pending = [t for t in transfers if t.done is None]
        for t in pending:
            if t.request.Test():
                t.done = self.tracer.now()
        return all(t.done is not None for t in pending)

    def _wait(self, transfers: list[_Transfer]) -> None:
        """Block until ``transfers`` complete, testing every outstanding transfer meanwhile (so
        other completions are observed when they happen, not later)."""
        if self._test(transfers):
            return
        start = self.tracer.now()
        everything = transfers + [t for t in self._sends + list(self._recvs.values()) if t not in transfers]
        self._waiting = transfers
        while True:
            time.sleep(self.poll_interval)
            self._test(everything)
            if all(t.done is not None for t in transfers):
                break
        self._waiting = []
        self.tracer.record("WAIT", -1, 0, start, self.tracer.now())

    def _retire_sends(self) -> None:
        for t in self._sends:
            if t.done is not None:
                self._trace(t)
        self._sends = [t for t in self._sends if t.done is None]

    def _trace(self, t: _Transfer) -> None:
        peer = self.peer_names[t.peer] if self.peer_names else t.peer
        self.tracer.record(t.op, t.mb, t.chunk, t.posted, t.done, peer, t.tag, t.buf.numel() * t.buf.element_size())
