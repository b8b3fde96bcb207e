"""Schedules as flat integer arrays, for simulating thousands of ranks in seconds.

:mod:`ppbench.plan.schedules` is the readable reference (one list of :class:`Action` per rank,
what the executor runs). This module builds the same compute orders for every rank at once as
numpy arrays, without creating an object per action; the tests check that both agree on every
schedule for p <= 8, m <= 16. Communication is implicit: it is placed exactly as
:func:`ppbench.plan.comm.add_communication` places it (receive just before, send just after).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ppbench.plan.actions import COMPUTE_OPS, Action
from ppbench.plan.placement import Placement
from ppbench.plan.schedules import interleaved_warmup, placement_for, schedule_problem, warmup_forwards

__all__ = ["OP_F", "OP_I", "OP_W", "OP_B", "ScheduleArrays", "schedule_arrays", "has_array_twin", "from_actions"]

OP_F, OP_I, OP_W, OP_B = (op.code for op in COMPUTE_OPS)


@dataclass
class ScheduleArrays:
    """Compute actions of all ranks, rank after rank: rank r owns ``offsets[r]:offsets[r + 1]``."""

    placement: Placement
    m: int
    op: np.ndarray       # int8: OP_F, OP_I, OP_W or OP_B
    mb: np.ndarray       # int32 microbatch
    stage: np.ndarray    # int32 virtual stage
    offsets: np.ndarray  # int64, p + 1 entries

    @property
    def p(self) -> int:
        return self.placement.p

    @cached_property
    def rank(self) -> np.ndarray:
        """Rank of every action."""
        return np.repeat(np.arange(self.p, dtype=np.int32), np.diff(self.offsets))

    def actions(self, rank: int) -> list[Action]:
        """One rank's compute order as Actions (for comparison with :mod:`ppbench.plan.schedules`)."""
        lo, hi = self.offsets[rank], self.offsets[rank + 1]
        return [Action(int(s), COMPUTE_OPS[o], int(b)) for o, b, s in zip(self.op[lo:hi], self.mb[lo:hi],
                                                                          self.stage[lo:hi])]


def from_actions(ranks: list[list[Action]], placement: Placement, m: int) -> ScheduleArrays:
    """The array form of any per-rank compute lists (communication actions are dropped)."""
    compute = [[a for a in acts if a.is_compute] for acts in ranks]
    flat = [a for acts in compute for a in acts]
    offsets = np.concatenate([[0], np.cumsum([len(acts) for acts in compute])]).astype(np.int64)
    return ScheduleArrays(placement, m, np.array([a.op.code for a in flat], dtype=np.int8),
                          np.array([a.mb for a in flat], dtype=np.int32),
                          np.array([a.stage for a in flat], dtype=np.int32), offsets)


def _one_f_one_b_order(total: int, warmup: int) -> tuple[np.ndarray, np.ndarray]:
    """(is_backward, index) of 1F1B's order over ``total`` forwards and backwards: ``warmup``
    forwards, then alternate forward and backward, then the remaining backwards."""
    k = np.arange(total)
    f_pos = np.where(k < warmup, k, 2 * k - warmup)
    b_pos = np.where(k < total - warmup, warmup + 2 * k + 1, total + k)
    backward = np.empty(2 * total, dtype=bool)
    index = np.empty(2 * total, dtype=np.int64)
    backward[f_pos], index[f_pos] = False, k
    backward[b_pos], index[b_pos] = True, k
    return backward, index


def _rank_order(name: str, p: int, m: int, rank: int, v: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(op, mb, stage) of one rank."""
    here = np.full(2 * m, rank, dtype=np.int64)
    if name == "naive":
        return np.tile([OP_F, OP_B], m), np.repeat(np.arange(m), 2), here
    if name == "gpipe":
        return np.repeat([OP_F, OP_B], m), np.tile(np.arange(m), 2), here
    if name in ("1f1b", "1f1b-recompute"):
        backward, index = _one_f_one_b_order(m, warmup_forwards(p, m, rank))
        return np.where(backward, OP_B, OP_F), index, here
    if name == "interleaved":
        backward, k = _one_f_one_b_order(m * v, interleaved_warmup(p, m, rank, v))
        chunk = np.where(backward, v - 1 - (k // p) % v, (k // p) % v)
        return np.where(backward, OP_B, OP_F), (k // (p * v)) * p + k % p, chunk * p + rank
    raise ValueError(f"no array form for schedule {name!r}")


_ARRAY_TWINS = ("naive", "gpipe", "1f1b", "1f1b-recompute", "interleaved", "zb-h1", "zb-h2")


def has_array_twin(name: str) -> bool:
    """Whether ``name``'s arrays are computed directly (else built from its Action lists: slower, more memory)."""
    return name in _ARRAY_TWINS


def schedule_arrays(name: str, p: int, m: int, v: int = 1) -> ScheduleArrays:
    """Every rank's compute order for schedule ``name`` (validated like ``compute_order``)."""
    problem = schedule_problem(name, p, m, v)
    if problem:
        raise ValueError(problem)
    placement = placement_for(name, p, v)
    if name in ("zb-h1", "zb-h2"):
        from ppbench.plan.schedules import zero_bubble_limits
        from ppbench.plan.zero_bubble import zb_arrays

        op, mb = zb_arrays(p, m, zero_bubble_limits(name, p, m))
        stage = np.repeat(np.arange(p, dtype=np.int32), 3 * m)
        offsets = np.arange(p + 1, dtype=np.int64) * 3 * m
        return ScheduleArrays(placement, m, op.astype(np.int8), mb.astype(np.int32), stage, offsets)
    if name not in _ARRAY_TWINS:              # no array twin: built from the readable lists (fine up to ~10^6 actions)
        from ppbench.plan.schedules import compute_order

        return from_actions([compute_order(name, p, m, r, v) for r in range(p)], placement, m)
    parts = [_rank_order(name, p, m, r, v) for r in range(p)]
    offsets = np.concatenate([[0], np.cumsum([len(part[0]) for part in parts])]).astype(np.int64)
    op, mb, stage = (np.concatenate([part[i] for part in parts]) for i in range(3))
    return ScheduleArrays(placement, m, op.astype(np.int8), mb.astype(np.int32), stage.astype(np.int32), offsets)
