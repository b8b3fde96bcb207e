"""Point-to-point tensor transfers of one rank: the interface the executor talks to, over MPI or
in one process.

Every transfer is non-blocking (post, then test or wait), so no pair of ranks can deadlock on the
order of two sends. Between tests a wait follows a :class:`~ppbench.run.waiting.WaitPolicy`: spin,
then yield, then sleep (no spin when ranks share cores: a spinning receive steals the core from
working ranks). Each transfer is traced
from its post to the moment its completion is observed; time spent blocked is traced as WAIT.

- :class:`MpiTransport`: mpi4py's buffer API (Isend/Irecv; never pickle) on a communicator.
- :class:`LocalTransport`: ranks as threads of one process, meeting in a :class:`LocalHub`.
  A message completes when both its ends are posted (MPI's rendezvous protocol, the strictest
  behaviour MPI allows), so a schedule that deadlocks under MPI deadlocks here too; instead of
  hanging, a wait longer than ``wait_limit`` (default 300 s, as --stall-timeout) raises naming what it waited for.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass

import torch

from ppbench.plan.actions import Action, Op
from ppbench.run.tracer import Tracer
from ppbench.run.waiting import WaitPolicy

__all__ = ["Transport", "MpiTransport", "LocalHub", "LocalTransport", "TransferTimeout"]

_VERB = {Op.SEND_F: "activation to", Op.SEND_B: "gradient to", Op.RECV_F: "activation from",
         Op.RECV_B: "gradient from"}


class TransferTimeout(RuntimeError):
    """An in-process wait lasted longer than its limit (the schedule deadlocks, or a rank died)."""


@dataclass(eq=False)   # identity: two completed requests may compare equal
class _Transfer:
    request: object     # has Test() -> bool
    buf: torch.Tensor
    action: Action      # the SEND/RECV action
    peer: int
    tag: int
    posted: float
    done: float | None = None


class Transport:
    """Outstanding sends and receives of one rank. Subclasses provide ``_isend``/``_irecv``
    (returning a request with ``Test()``) and ``tag_limit``; everything else is shared."""

    tag_limit: int | None = None          # largest tag allowed (None: no limit)

    def __init__(self, tracer: Tracer | None = None, wait_policy: WaitPolicy | None = None,
                 peer_names: list[int] | None = None, device: torch.device = torch.device("cpu"),
                 staging: bool = False, wait_limit: float | None = None):
        self.device = device
        self.staging = staging            # device tensors travel through host buffers
        self.tracer = tracer or Tracer(enabled=False)
        self.wait_policy = wait_policy or WaitPolicy()
        self.peer_names = peer_names      # world rank of each pipe rank, for traces and messages
        self.wait_limit = wait_limit
        self._sends: list[_Transfer] = []
        self._recvs: dict[Action, _Transfer] = {}
        self.polls, self.poll_time = 0, 0.0
        self._waiting: list[_Transfer] = []

    def _isend(self, buf: torch.Tensor, peer: int, tag: int):
        raise NotImplementedError

    def _irecv(self, buf: torch.Tensor, peer: int, tag: int):
        raise NotImplementedError

    def _cancelled(self) -> str | None:
        """Why waiting is pointless now (another rank failed), or None."""
        return None

    def _name(self, peer: int) -> int:
        return self.peer_names[peer] if self.peer_names else peer

    def waiting_for(self) -> str:
        """The transfers this rank is blocked on right now ('' when it is not waiting)."""
        return ", ".join(f"{t.action} ({_VERB[t.action.op]} rank {self._name(t.peer)})"
                         for t in self._waiting if t.done is None)

    def send(self, tensor: torch.Tensor, action: Action, peer: int, tag: int) -> None:
        """Start sending ``tensor`` for SEND action ``action``; it is kept alive until the send completes."""
        buf = tensor.detach().contiguous()
        if self.staging:
            buf = buf.to("cpu")            # synchronous copy: the data is final before MPI reads it
        now = self.tracer.now()
        self._sends.append(_Transfer(self._isend(buf, peer, tag), buf, action, peer, tag, now))

    def post_recv(self, action: Action, shape: tuple[int, ...], dtype: torch.dtype, peer: int, tag: int) -> None:
        """Post RECV action ``action`` into a fresh buffer (once; posting it again does nothing)."""
        if action not in self._recvs:
            buf = torch.empty(shape, dtype=dtype, device="cpu" if self.staging else self.device)
            now = self.tracer.now()
            self._recvs[action] = _Transfer(self._irecv(buf, peer, tag), buf, action, peer, tag, now)

    def take(self, action: Action) -> torch.Tensor:
        """Wait for the receive posted as ``action`` and hand over its buffer."""
        transfer = self._recvs.pop(action)
        self._wait([transfer])
        self._trace(transfer)
        return transfer.buf.to(self.device) if self.staging else transfer.buf

    def wait_all(self) -> None:
        """Complete every outstanding send and receive (receives stay available to take)."""
        self._wait(self._sends + list(self._recvs.values()))
        self._retire_sends()

    def progress(self) -> None:
        """Let outstanding transfers move forward without waiting; note completions. Calls and the
        time spent inside them are counted (``polls``, ``poll_time``) for the polling overhead."""
        self.polls += 1
        if self._sends or self._recvs:
            start = time.perf_counter()
            self._test(self._sends + list(self._recvs.values()))
            self._retire_sends()
            self.poll_time += time.perf_counter() - start

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
        begun = time.monotonic()
        everything = transfers + [t for t in self._sends + list(self._recvs.values()) if t not in transfers]
        self._waiting = transfers
        while True:
            self.wait_policy.pause(time.monotonic() - begun)
            self._test(everything)
            if all(t.done is not None for t in transfers):
                break
            if self.wait_limit is not None and time.monotonic() - begun > self.wait_limit:
                raise TransferTimeout(f"waited {self.wait_limit:g} s for {self.waiting_for()}")
            cancelled = self._cancelled()
            if cancelled:
                raise TransferTimeout(f"stopped waiting for {self.waiting_for()}: {cancelled}")
        self._waiting = []
        self.tracer.record("WAIT", -1, -1, start, self.tracer.now())

    def _retire_sends(self) -> None:
        for t in self._sends:
            if t.done is not None:
                self._trace(t)
        self._sends = [t for t in self._sends if t.done is None]

    def _trace(self, t: _Transfer) -> None:
        a = t.action
        self.tracer.record(a.op, a.stage, a.mb, t.posted, t.done, self._name(t.peer), t.tag,
                           t.buf.numel() * t.buf.element_size())


class MpiTransport(Transport):
    """Transfers over an MPI communicator (this rank's pipeline communicator)."""

    def __init__(self, comm, **kwargs):
        from mpi4py import MPI

        super().__init__(**kwargs)
        self.comm = comm
        self.tag_limit = comm.Get_attr(MPI.TAG_UB)

    def _isend(self, buf, peer, tag):
        return self.comm.Isend(buf, peer, tag)

    def _irecv(self, buf, peer, tag):
        return self.comm.Irecv(buf, peer, tag)


class _LocalRequest:
    __slots__ = ("buf", "done")

    def __init__(self, buf: torch.Tensor):
        self.buf, self.done = buf, False

    def Test(self) -> bool:  # noqa: N802 - the MPI request's name
        return self.done


class LocalHub:
    """Where the ranks of one in-process pipeline meet: posted sends and receives, matched in
    order per (source, destination, tag), as MPI matches them."""

    def __init__(self):
        self.failed: str | None = None    # set when a rank fails: the others stop waiting
        self._lock = threading.Lock()
        self._sends: dict[tuple, deque] = defaultdict(deque)
        self._recvs: dict[tuple, deque] = defaultdict(deque)

    def post(self, kind: str, key: tuple, buf: torch.Tensor) -> _LocalRequest:
        request = _LocalRequest(buf)
        mine, theirs = (self._sends, self._recvs) if kind == "send" else (self._recvs, self._sends)
        with self._lock:
            if theirs[key]:
                other = theirs[key].popleft()
                send, recv = (request, other) if kind == "send" else (other, request)
                if send.buf.shape != recv.buf.shape or send.buf.dtype != recv.buf.dtype:
                    raise RuntimeError(f"message {key}: sent {tuple(send.buf.shape)} {send.buf.dtype}, receive "
                                       f"posted for {tuple(recv.buf.shape)} {recv.buf.dtype}")
                recv.buf.copy_(send.buf)
                send.done = recv.done = True
            else:
                mine[key].append(request)
        return request


class LocalTransport(Transport):
    """Rank ``rank`` of an in-process pipeline whose ranks share ``hub``."""

    def __init__(self, hub: LocalHub, rank: int, wait_limit: float | None = 300.0, **kwargs):
        super().__init__(wait_limit=wait_limit, **kwargs)
        self.hub, self.rank = hub, rank

    def _cancelled(self) -> str | None:
        return self.hub.failed

    def _isend(self, buf, peer, tag):
        return self.hub.post("send", (self.rank, peer, tag), buf)

    def _irecv(self, buf, peer, tag):
        return self.hub.post("recv", (peer, self.rank, tag), buf)
