"""Zero-bubble orders found by list scheduling every rank at unit cost, one clock tick at a time.

The zero-bubble papers (Qi et al., 2023, "Zero Bubble Pipeline Parallelism"; Qi et al., 2024,
"Pipeline Parallelism with Controllable Memory") split the backward of a stage into I (the
gradient for the stage's input, on the critical path) and W (its weight gradients, which nothing
waits for), then fill idle time with W's under a memory limit. This module does exactly that for
any placement: at every tick each free rank runs, in this priority,

1. a W, if more than ``w_backlog`` of its W's are pending (W's hold inputs alive, so they are capped);
2. a ready I, on its highest ready stage (the longest chain of I's still to come);
3. a ready F, on its highest ready stage, if fewer than ``in_flight[rank]`` of its (stage,
   microbatch) pairs have run F but not I (the activation memory limit);
4. its oldest pending W;

else it idles. Each stage takes microbatches in order. A schedule may instead fix the order in
which a rank takes its F's and its I's (``sequences``, as interleaved 1F1B's rounds of p
microbatches do); then only *when* each runs, and where the W's go, is left to the rules.
F = I = W = 1 tick, transfers are free.
The same rules give ZB-H1 (1F1B's memory), ZB-H2 (about twice that) and interleaved zero bubble
(looped placement, F's and I's in interleaved 1F1B's order); the parameters are each schedule's
memory budget, stated with the schedule.
"""

from __future__ import annotations

from collections import deque

from ppbench.plan.actions import Action, Op
from ppbench.plan.placement import Placement

__all__ = ["list_schedule", "Sequences"]

#: per rank, (stage, microbatch) pairs in the order the rank takes them
Sequences = tuple[tuple[tuple[int, int], ...], ...]


def list_schedule(placement: Placement, m: int, in_flight: tuple[int, ...], w_backlog: int,
                  sequences: tuple[Sequences, Sequences] | None = None) -> tuple[tuple[Action, ...], ...]:
    """Every rank's compute order (F, I, W) for ``m`` microbatches on ``placement``.

    ``sequences``, when given, is (F order, I order): for each rank, its (stage, microbatch) pairs
    in the order that rank must run their F's, and their I's.
    """
    last = placement.num_stages - 1
    p = placement.p
    if len(in_flight) != p or min(in_flight) < 1:
        raise ValueError(f"need an in-flight limit >= 1 for each of the {p} ranks, got {in_flight}")
    finished: dict[tuple[int, Op, int], int] = {}       # (stage, op, microbatch) -> tick it ends
    next_f = [0] * (last + 1)                            # next microbatch to forward, per stage
    next_i = [0] * (last + 1)
    pending_w: list[deque[tuple[int, int]]] = [deque() for _ in range(p)]
    live = [0] * p                                       # pairs between F and I, per rank
    orders: list[list[Action]] = [[] for _ in range(p)]
    taken = [{Op.F: 0, Op.I: 0} for _ in range(p)]      # how far each rank is along its sequences
    left = 3 * m * (last + 1)
    tick = 0

    def ended(key: tuple[int, Op, int]) -> bool:
        return finished.get(key, tick + 1) <= tick

    while left:
        ran = False
        for r, stages in enumerate(placement.rank_stages):
            ready_i = [s for s in stages if next_i[s] < next_f[s]
                       and ended((s, Op.F, next_i[s]) if s == last else (s + 1, Op.I, next_i[s]))]
            ready_f = [s for s in stages if next_f[s] < m and (s == 0 or ended((s - 1, Op.F, next_f[s])))]
            if sequences is not None:        # only the rank's next pair in its fixed order may run
                ready_f = _next_in(sequences[0][r], taken[r][Op.F], ready_f, next_f)
                ready_i = _next_in(sequences[1][r], taken[r][Op.I], ready_i, next_i)
            if len(pending_w[r]) > w_backlog or (pending_w[r] and not ready_i
                                                 and not (ready_f and live[r] < in_flight[r])):
                stage, mb = pending_w[r].popleft()
                action = Action(stage, Op.W, mb)
            elif ready_i:
                stage = max(ready_i)
                action = Action(stage, Op.I, next_i[stage])
                next_i[stage] += 1
                taken[r][Op.I] += 1
                live[r] -= 1
                pending_w[r].append((stage, action.mb))
            elif ready_f and live[r] < in_flight[r]:
                stage = max(ready_f)
                action = Action(stage, Op.F, next_f[stage])
                next_f[stage] += 1
                taken[r][Op.F] += 1
                live[r] += 1
            else:
                continue                                 # idle this tick
            orders[r].append(action)
            finished[(action.stage, action.op, action.mb)] = tick + 1
            left -= 1
            ran = True
        if not ran:  # at unit cost nothing else is running: the limits admit no next action
            raise ValueError(f"in-flight limits {in_flight} leave every rank waiting at tick {tick}")
        tick += 1
    return tuple(tuple(o) for o in orders)


def _next_in(sequence: tuple[tuple[int, int], ...], position: int, ready: list[int], next_mb: list[int]) -> list[int]:
    """The ready stages that hold the next pair of ``sequence`` (at most one)."""
    if position >= len(sequence):
        return []
    stage, mb = sequence[position]
    if next_mb[stage] != mb:
        raise ValueError(f"sequence takes stage {stage} microbatch {mb} before microbatch {next_mb[stage]}")
    return [stage] if stage in ready else []
