"""The simulator at scale: the same semantics as :func:`ppbench.sim.simulator.simulate`, on the
array form of a schedule (:mod:`ppbench.plan.arrays`), compiled by numba.

Communication is implicit, placed as :func:`ppbench.plan.comm.add_communication` places it:
the receive of a compute action sits just before it, its send just after. With that placement
the rules of ``simulator.py`` become, for compute action k of a rank (``arrive`` = end of action
k - 1, or 0; costs ``h`` overhead per action, ``c`` per message):

* non-blocking: its receive was posted on arriving at action k - 1 (or at 0 for k <= 1); the
  message completes ``c`` after the later of that post and the producer's end;
  start = max(arrive + h, completion).
* blocking: its receive and the send of action k - 1 are posted on arriving at k; a message
  completes ``c`` after the later of its two posts; start = max(arrive + h, both completions).

A rank that cannot go on waits; it is looked at again when a neighbour (the only ranks it
talks to) advances. p = 1024, m = 4096 (8.4 million compute actions) takes about a second.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ppbench.plan import jit
from ppbench.plan.arrays import OP_B, OP_F, OP_I, OP_W, ScheduleArrays
from ppbench.sim.costs import Costs
from ppbench.sim.simulator import DeadlockError

__all__ = ["ArraySimulation", "simulate_arrays", "array_metrics"]


@dataclass
class ArraySimulation:
    """Times of every compute action and of the message each one receives (NaN: none)."""

    schedule: ScheduleArrays
    start: np.ndarray
    end: np.ndarray
    producer: np.ndarray      # index of the action whose output this one receives, or -1
    recv_post: np.ndarray     # when this action's receive was posted
    arrival: np.ndarray       # when that message completed

    @property
    def makespan(self) -> float:
        return float(self.end.max()) if self.end.size else 0.0


def _link(offsets, op, mb, stage, stage_rank, m, producer, consumer, table):
    """Fill producer[i] / consumer[i]: the action on the neighbouring stage whose output action i
    receives, and the one that receives its output (-1: none). F links to F; a backward (I or B)
    to the next stage's backward, found in table row OP_I (B is filed there too). Returns 0, or
    1 if a (stage, op, microbatch) appears twice or on a rank that does not hold the stage, 2 if
    an action's peer is missing."""
    num_stages = stage_rank.size
    for r in range(offsets.size - 1):
        for i in range(offsets[r], offsets[r + 1]):
            row = OP_I if op[i] == OP_B else op[i]        # I and B of a stage are the same message's end
            slot = (row * num_stages + stage[i]) * m + mb[i]
            if table[slot] >= 0 or stage_rank[stage[i]] != r:
                return 1
            table[slot] = i
    last = num_stages - 1
    for i in range(op.size):
        if op[i] == OP_W:
            continue
        row = OP_F if op[i] == OP_F else OP_I
        s = stage[i]
        up, down = (s - 1, s + 1) if row == OP_F else (s + 1, s - 1)
        if 0 <= up <= last:
            producer[i] = table[(row * num_stages + up) * m + mb[i]]
            if producer[i] < 0:
                return 2
        if 0 <= down <= last:
            consumer[i] = table[(row * num_stages + down) * m + mb[i]]
            if consumer[i] < 0:
                return 2
    return 0


def _links(s: ScheduleArrays) -> tuple[np.ndarray, np.ndarray]:
    n = s.op.size
    producer, consumer = np.full(n, -1, dtype=np.int64), np.full(n, -1, dtype=np.int64)
    stages = s.placement.num_stages
    table = np.full(3 * stages * s.m, -1, dtype=np.int64)
    stage_rank = np.asarray(s.placement.stage_ranks, dtype=np.int64)
    # widen first: int8 arithmetic on NumPy scalars would overflow in plain Python
    op, mb, stage = (a.astype(np.int64) for a in (s.op, s.mb, s.stage))
    code = jit.for_size(_link, n)(s.offsets, op, mb, stage, stage_rank, s.m, producer, consumer, table)
    if code:
        raise ValueError("a (stage, op, microbatch) appears twice in the schedule, or on a rank that does not hold "
                         "its stage" if code == 1 else "an action's peer on the neighbouring stage is missing")
    return producer, consumer


def _run(offsets, dur, producer, consumer, nb_offsets, nb_ranks, overhead, comm, blocking, start, end, recv_post,
         arrival):
    """The event loop over compute actions (``overhead[i]``: before action i; ``comm[i]``: latency of
    the message action i receives; rank r talks to ``nb_ranks[nb_offsets[r]:nb_offsets[r + 1]]``);
    returns the number of ranks left unfinished."""
    n = dur.size
    p = offsets.size - 1
    rank_of = np.empty(n, dtype=np.int64)
    for r in range(p):
        for i in range(offsets[r], offsets[r + 1]):
            rank_of[i] = r
    done = np.zeros(n, dtype=np.bool_)
    nxt = offsets[:-1].copy()
    stack = np.arange(p)
    queued = np.ones(p, dtype=np.bool_)
    top = p
    while top > 0:
        top -= 1
        r = stack[top]
        queued[r] = False
        first, stop = offsets[r], offsets[r + 1]
        advanced = False
        while nxt[r] < stop:
            i = nxt[r]
            arrive = end[i - 1] if i > first else 0.0
            t = arrive + overhead[i]
            j = producer[i]
            if j >= 0:
                if not done[j]:
                    break
                if blocking:
                    post = arrive
                else:
                    post = end[i - 2] if i - 2 >= first else 0.0
                recv_post[i] = post
                arrival[i] = max(end[j], post) + comm[i]
                t = max(t, arrival[i])
            if blocking and i > first:
                q = consumer[i - 1]
                if q >= 0:
                    q_first = offsets[rank_of[q]]
                    if q > q_first and not done[q - 1]:
                        break                        # the consumer has not posted its receive yet
                    q_arrive = end[q - 1] if q > q_first else 0.0
                    t = max(t, max(end[i - 1], q_arrive) + comm[q])
            start[i] = t
            end[i] = t + dur[i]
            done[i] = True
            nxt[r] = i + 1
            advanced = True
        if advanced:
            for k in range(nb_offsets[r], nb_offsets[r + 1]):
                nb = nb_ranks[k]
                if not queued[nb] and nxt[nb] < offsets[nb + 1]:
                    queued[nb] = True
                    stack[top] = nb
                    top += 1
    unfinished = 0
    for r in range(p):
        if nxt[r] < offsets[r + 1]:
            unfinished += 1
            start[nxt[r]] = -1.0          # marks where the rank is stuck
    return unfinished


def _neighbours(s: ScheduleArrays) -> tuple[np.ndarray, np.ndarray]:
    """The ranks each rank exchanges messages with (holders of the stages next to its own), as CSR."""
    placement = s.placement
    lists = []
    for r in range(placement.p):
        near = {placement.rank_of(t) for st in placement.stages_of(r) for t in (st - 1, st + 1)
                if 0 <= t < placement.num_stages} - {r}
        lists.append(sorted(near))
    offsets = np.concatenate([[0], np.cumsum([len(x) for x in lists])]).astype(np.int64)
    return offsets, np.array([x for near in lists for x in near], dtype=np.int64)


def simulate_arrays(s: ScheduleArrays, costs: Costs = Costs(), mode: str = "blocking",
                    durations: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> ArraySimulation:
    """Simulate ``s``; raise DeadlockError (naming the stuck actions) if it cannot finish.

    ``durations``, if given, is (compute time, overhead before, latency of the received message)
    for every action, replacing ``costs`` (to simulate sampled, unequal costs). Large schedules
    run compiled (:data:`ppbench.plan.jit.COMPILE_ABOVE`)."""
    if mode not in ("blocking", "nonblocking"):
        raise ValueError(f"mode must be 'blocking' or 'nonblocking', got {mode!r}")
    n = s.op.size
    producer, consumer = _links(s)
    if durations is None:
        dur = np.asarray(costs.by_code(), dtype=np.float64)[s.op.astype(np.int64)]
        overhead, comm = np.full(n, float(costs.overhead)), np.full(n, float(costs.comm))
    else:
        dur, overhead, comm = (np.ascontiguousarray(a, dtype=np.float64) for a in durations)
    start, end = np.zeros(n), np.zeros(n)
    recv_post, arrival = np.full(n, np.nan), np.full(n, np.nan)
    stuck = jit.for_size(_run, n)(s.offsets, dur, producer, consumer, *_neighbours(s), overhead, comm,
                                  mode == "blocking", start, end, recv_post, arrival)
    if stuck:
        where = {}
        for r in range(s.p):
            lo, hi = s.offsets[r], s.offsets[r + 1]
            at = lo + np.flatnonzero(start[lo:hi] < 0)
            if at.size:
                where[r] = str(s.actions(r)[at[0] - lo])
        raise DeadlockError(where, f"({len(where)} of {s.p} ranks stuck; `ppbench schedule` prints the orders)")
    return ArraySimulation(s, start, end, producer, recv_post, arrival)


def array_metrics(sim: ArraySimulation) -> dict:
    """Step time, bubble (mean, max), utilization and overlap of a simulation, by the
    definitions of :mod:`ppbench.metrics` (which the tests check against its events form)."""
    s = sim.schedule
    step = sim.makespan
    busy = np.bincount(s.rank, weights=sim.end - sim.start, minlength=s.p)
    bubble = 1 - busy / step if step > 0 else np.full(s.p, np.nan)
    return {"step_time": step, "busy_time_mean": float(busy.mean()), "bubble_mean": float(bubble.mean()),
            "bubble_max": float(bubble.max()), "utilization": float(1 - bubble.mean()),
            "overlap": _overlap(sim)}


def _covered(offsets, rank_of, start, end, producer, recv_post, arrival, out):
    """out[0]: transfer-interval time (both ends of every message, each from the later post to
    completion); out[1]: the part of it during which the same rank computed. The receiving end
    scans its own actions backwards from the consumer, the sending end forwards from the producer."""
    for i in range(producer.size):
        j = producer[i]
        if j < 0:
            continue
        begin = max(recv_post[i], end[j])
        finish = arrival[i]
        if finish <= begin:
            continue
        out[0] += 2 * (finish - begin)
        k = i - 1
        while k >= offsets[rank_of[i]] and end[k] > begin:
            out[1] += max(0.0, min(end[k], finish) - max(start[k], begin))
            k -= 1
        k = j + 1
        while k < offsets[rank_of[j] + 1] and start[k] < finish:
            out[1] += max(0.0, min(end[k], finish) - max(start[k], begin))
            k += 1


def _overlap(sim: ArraySimulation) -> float:
    """Share of transfer-interval time during which the same rank computed (the definition of
    :func:`ppbench.metrics.overlap`, on simulated messages)."""
    out = np.zeros(2)
    s = sim.schedule
    jit.for_size(_covered, s.op.size)(s.offsets, s.rank, sim.start, sim.end, sim.producer,
                                                    sim.recv_post, sim.arrival, out)
    return float(out[1] / out[0]) if out[0] > 0 else float("nan")
