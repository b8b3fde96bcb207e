"""Discrete-event simulation of per-rank action lists: timings, and deadlock detection.

Communication semantics are the executor's (see ``transport.py``):

Every compute action starts ``overhead`` after the rank arrives at it, at the earliest (the
executor's own work between actions); posts happen on arrival.

* ``blocking``: sends and receives are posted when a rank reaches them; before each compute
  action the rank waits until *every* request it has posted so far has completed. A transfer
  completes ``comm`` after both ends are posted. No compute overlaps a transfer.
* ``nonblocking``: before each compute action the rank also pre-posts the receives its *next*
  compute action needs, so they arrive while it computes; it then waits only for the
  receives of the current action. Sends
  complete in the background and are waited for at the end of the step.

A schedule that cannot finish under these rules raises :class:`DeadlockError` with a grid of
what each rank was waiting for.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from ppbench.plan.actions import Action

__all__ = ["Costs", "SimEvent", "SimResult", "DeadlockError", "simulate", "peer_rank", "message_tag",
           "simulated_events"]


@dataclass(frozen=True)
class Costs:
    """Duration of each kind of action, in any time unit (seconds for the synthetic workload)."""

    fwd: float = 1.0     # one F on one virtual stage
    bwd: float = 2.0     # one B (the full backward when the schedule has no W actions)
    wgrad: float = 0.0   # one W (weight gradients only)
    comm: float = 0.0    # one message, from the later of its two posts to completion
    overhead: float = 0.0  # host time a rank spends before each compute action (posting, bookkeeping)

    def compute(self, op: str) -> float:
        return {"F": self.fwd, "B": self.bwd, "W": self.wgrad}[op]


@dataclass(frozen=True)
class SimEvent:
    rank: int
    action: Action
    start: float
    end: float


@dataclass
class SimResult:
    events: list[SimEvent] = field(default_factory=list)

    @property
    def makespan(self) -> float:
        return max((e.end for e in self.events), default=0.0)

    def by_rank(self, rank: int) -> list[SimEvent]:
        return [e for e in self.events if e.rank == rank]


class DeadlockError(RuntimeError):
    """The action lists cannot all complete; ``stuck`` maps rank -> the action it waits in."""

    def __init__(self, stuck: dict[int, str], grid: str):
        self.stuck = stuck
        lines = ", ".join(f"rank {r} at {a}" for r, a in stuck.items())
        super().__init__(f"schedule deadlocks: {lines}\n{grid}")


def peer_rank(action: Action, rank: int, p: int, v: int = 1) -> tuple[int, int]:
    """(peer rank, peer chunk) that a SEND/RECV on ``rank`` talks to."""
    stage = action.chunk * p + rank
    downstream = action.op in ("SEND_F", "RECV_B")
    other = stage + 1 if downstream else stage - 1
    if not 0 <= other < p * v:
        raise ValueError(f"{action} on rank {rank} has no peer: virtual stage {other} outside 0..{p * v - 1}")
    return other % p, other // p


def message_tag(action: Action, rank: int, p: int, v: int, m: int) -> int:
    """MPI tag of a SEND/RECV: unique per step for each (direction, microbatch, stage boundary),
    and the same on the sending and the receiving rank."""
    stage = action.chunk * p + rank
    boundary = stage if action.op in ("SEND_F", "RECV_B") else stage - 1
    return (action.mb * p * v + boundary) * 2 + (action.direction == "B")


def _message_key(action: Action, rank: int, p: int, v: int) -> tuple:
    """Identify a message the same way on its sending and its receiving rank."""
    peer, peer_chunk = peer_rank(action, rank, p, v)
    if action.is_send:
        return (action.direction, action.mb, rank, action.chunk, peer, peer_chunk)
    return (action.direction, action.mb, peer, peer_chunk, rank, action.chunk)


def simulate(ranks: list[list[Action]], costs: Costs = Costs(), mode: str = "blocking", v: int = 1) -> SimResult:
    """Run every rank's list to completion in simulated time; raise DeadlockError if impossible."""
    if mode not in ("blocking", "nonblocking"):
        raise ValueError(f"mode must be 'blocking' or 'nonblocking', got {mode!r}")
    p = len(ranks)
    keys = [[_message_key(a, r, p, v) if not a.is_compute else None for a in acts] for r, acts in enumerate(ranks)]
    posted: dict[tuple, dict[str, float]] = {}       # key -> {"send": t, "recv": t}
    waiting: dict[tuple, list[int]] = {}              # key -> ranks blocked on it
    index = [0] * p
    clock = [0.0] * p
    outstanding: list[list[tuple]] = [[] for _ in range(p)]   # posted, not yet waited for
    preposted: list[set[int]] = [set() for _ in range(p)]     # indices of receives posted early
    result = SimResult()

    def post(r: int, i: int, t: float) -> None:
        a, key = ranks[r][i], keys[r][i]
        side = "send" if a.is_send else "recv"
        posted.setdefault(key, {})[side] = t
        for w in waiting.pop(key, []):
            runnable.append(w)

    def done_at(key: tuple) -> float | None:
        ends = posted.get(key, {})
        if len(ends) < 2:
            return None
        return max(ends.values()) + costs.comm

    runnable = deque(range(p))
    while runnable:
        r = runnable.popleft()
        acts = ranks[r]
        while index[r] < len(acts):
            i, a = index[r], acts[index[r]]
            if not a.is_compute:
                if i not in preposted[r]:
                    post(r, i, clock[r])
                    outstanding[r].append(keys[r][i])
                result.events.append(SimEvent(r, a, clock[r], clock[r]))   # completion fixed up below
                index[r] += 1
                continue
            if mode == "nonblocking":
                for k in range(i + 1, len(acts)):   # receives of the next compute action
                    if acts[k].is_compute:
                        break
                    if acts[k].is_recv and k not in preposted[r]:
                        preposted[r].add(k)
                        post(r, k, clock[r])
                        outstanding[r].append(keys[r][k])
                needed = [key for key in outstanding[r] if key[4:] == (r, a.chunk) and key[0] == a.op[0] and key[1] == a.mb]
            else:
                needed = list(outstanding[r])
            finish = [done_at(key) for key in needed]
            if any(t is None for t in finish):
                blocked_on = needed[finish.index(None)]
                waiting.setdefault(blocked_on, []).append(r)
                break
            start = max([clock[r] + costs.overhead, *finish])
            clock[r] = start + costs.compute(a.op)
            result.events.append(SimEvent(r, a, start, clock[r]))
            outstanding[r] = [key for key in outstanding[r] if key not in needed]
            index[r] += 1
    unfinished = {r: str(ranks[r][index[r]]) for r in range(p) if index[r] < len(ranks[r])}
    unmatched = [key for key, ends in posted.items() if len(ends) < 2]
    if unfinished or unmatched:
        if not unfinished:
            unfinished = {-1: f"unmatched messages {unmatched[:4]}"}
        raise DeadlockError(unfinished, _grid(ranks, index))
    # A comm event lasts from its post to its completion.
    fixed = []
    for e in result.events:
        if e.action.is_compute:
            fixed.append(e)
        else:
            key = _message_key(e.action, e.rank, p, v)
            side = "send" if e.action.is_send else "recv"
            fixed.append(SimEvent(e.rank, e.action, posted[key][side], done_at(key)))
    result.events = fixed
    return result


def _grid(ranks: list[list[Action]], index: list[int]) -> str:
    """Each rank's actions with the one it is stuck on in brackets."""
    rows = []
    for r, acts in enumerate(ranks):
        cells = [f"[{a}]" if k == index[r] else str(a) for k, a in enumerate(acts)]
        rows.append(f"rank {r}: " + " ".join(cells))
    return "\n".join(rows)


def simulated_events(result: SimResult, p: int, m: int, v: int = 1):
    """The simulation as an events table shaped like a measured run's (for ppbench.metrics)."""
    import pandas as pd

    rows = []
    for e in result.events:
        a = e.action
        peer = tag = -1
        if not a.is_compute:
            peer, tag = peer_rank(a, e.rank, p, v)[0], message_tag(a, e.rank, p, v, m)
        rows.append((e.rank, a.op, a.mb, a.chunk, e.start, e.end, peer, tag, 0))
    return pd.DataFrame(rows, columns=["rank", "op", "mb", "chunk", "start", "end", "peer", "tag", "nbytes"])
