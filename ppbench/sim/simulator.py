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
from ppbench.plan.comm import message_key, message_tag, peer_rank
from ppbench.plan.placement import Placement, infer_placement
from ppbench.sim.costs import Costs

__all__ = ["Costs", "SimEvent", "SimResult", "DeadlockError", "simulate", "simulated_events", "infer_placement"]


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


def simulate(ranks: list[list[Action]], costs: Costs = Costs(), mode: str = "blocking",
             placement: Placement | None = None) -> SimResult:
    """Run every rank's list to completion in simulated time; raise DeadlockError if impossible.
    ``placement`` defaults to the one the lists imply (:func:`infer_placement`)."""
    if mode not in ("blocking", "nonblocking"):
        raise ValueError(f"mode must be 'blocking' or 'nonblocking', got {mode!r}")
    p = len(ranks)
    placement = placement or infer_placement(ranks)
    stages = placement.num_stages
    keys = [[message_key(a, stages) if not a.is_compute else None for a in acts] for acts in ranks]
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
                mine = (a.direction, a.mb)
                needed = [key for key in outstanding[r] if key[3] == a.stage and key[:2] == mine]
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
            key = message_key(e.action, stages)
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


def simulated_events(result: SimResult, placement: Placement, m: int):
    """The simulation as an events table shaped like a measured run's (for ppbench.measure.metrics)."""
    import pandas as pd

    from ppbench.measure.events import EVENT_COLUMNS

    rows = []
    for e in result.events:
        a = e.action
        peer = tag = -1
        if not a.is_compute:
            peer, tag = peer_rank(a, placement), message_tag(a, placement.num_stages, m)
        rows.append((e.rank, a.op.value, a.stage, a.mb, e.start, e.end, peer, tag, 0))
    return pd.DataFrame(rows, columns=list(EVENT_COLUMNS))
