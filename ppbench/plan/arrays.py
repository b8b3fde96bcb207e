"""Schedules as flat integer arrays, for simulating thousands of ranks in seconds.

:mod:`ppbench.schedules` is the readable reference (one list of :class:`Action` per rank,
what the executor runs). This module builds the same compute orders for every rank at once as
numpy arrays, without creating an object per action; the tests check that both agree on every
schedule for p <= 8, m <= 16. Communication is implicit: it is placed exactly as
:func:`ppbench.schedules.add_communication` places it (receive before, send after).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ppbench.plan.actions import Action, COMPUTE_OPS
from ppbench.plan.schedules import schedule_problem

__all__ = ["OP_F", "OP_B", "OP_W", "ScheduleArrays", "schedule_arrays"]

OP_F, OP_B, OP_W = 0, 1, 2


@dataclass
class ScheduleArrays:
    """Compute actions of all ranks, rank after rank: rank r owns ``offsets[r]:offsets[r + 1]``."""

    p: int
    m: int
    v: int
    op: np.ndarray       # int8: OP_F, OP_B or OP_W
    mb: np.ndarray       # int32 microbatch
    chunk: np.ndarray    # int32 model chunk (virtual stage = chunk * p + rank)
    offsets: np.ndarray  # int64, p + 1 entries

    @cached_property
    def rank(self) -> np.ndarray:
        """Rank of every action."""
        return np.repeat(np.arange(self.p, dtype=np.int32), np.diff(self.offsets))

    def actions(self, rank: int) -> list[Action]:
        """One rank's compute order as Actions (for comparison with :mod:`ppbench.schedules`)."""
        lo, hi = self.offsets[rank], self.offsets[rank + 1]
        return [Action(COMPUTE_OPS[o], int(b), int(c)) for o, b, c in zip(self.op[lo:hi], self.mb[lo:hi],
                                                                           self.chunk[lo:hi])]


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
    if name == "naive":
        return np.tile([OP_F, OP_B], m), np.repeat(np.arange(m), 2), np.zeros(2 * m, dtype=np.int64)
    if name == "gpipe":
        return np.repeat([OP_F, OP_B], m), np.tile(np.arange(m), 2), np.zeros(2 * m, dtype=np.int64)
    if name == "1f1b":
        backward, index = _one_f_one_b_order(m, min(p - rank - 1, m))
        return np.where(backward, OP_B, OP_F), index, np.zeros(2 * m, dtype=np.int64)
    if name == "interleaved":
        total = m * v
        warmup = total if m == p else min(2 * (p - rank - 1) + (v - 1) * p, total)
        backward, k = _one_f_one_b_order(total, warmup)
        chunk = (k // p) % v
        return (np.where(backward, OP_B, OP_F), (k // (p * v)) * p + k % p,
                np.where(backward, v - 1 - chunk, chunk))
    raise ValueError(f"no array form for schedule {name!r}")


def schedule_arrays(name: str, p: int, m: int, v: int = 1) -> ScheduleArrays:
    """Every rank's compute order for schedule ``name`` (validated like ``compute_order``)."""
    problem = schedule_problem(name, p, m, v)
    if problem:
        raise ValueError(problem)
    if name == "zb-h1":
        from ppbench.plan.zero_bubble import zb_h1_arrays

        op, mb = zb_h1_arrays(p, m)
        chunk = np.zeros(op.size, dtype=np.int32)
        offsets = np.arange(p + 1, dtype=np.int64) * 3 * m
        return ScheduleArrays(p, m, v, op.astype(np.int8), mb.astype(np.int32), chunk, offsets)
    parts = [_rank_order(name, p, m, r, v) for r in range(p)]
    sizes = [len(part[0]) for part in parts]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    op, mb, chunk = (np.concatenate([part[i] for part in parts]) for i in range(3))
    return ScheduleArrays(p, m, v, op.astype(np.int8), mb.astype(np.int32), chunk.astype(np.int32), offsets)
