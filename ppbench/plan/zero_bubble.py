"""ZB-H1's and ZB-H2's orders as integer arrays, for thousands of ranks: the array twin of
:func:`ppbench.plan.list_schedule.list_schedule` on one stage per rank (same rules; a test keeps
both equal for every p <= 8, m <= 16). Large pipelines run it compiled by numba, so p = 1024, m = 4096 takes well
under a second instead of minutes.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ppbench.plan import jit

__all__ = ["zb_arrays"]

def _list_schedule(p: int, m: int, limits: np.ndarray, op: np.ndarray, mb: np.ndarray) -> None:
    """Fill op[r, k], mb[r, k] (Op codes: 0 = F, 1 = I, 2 = W) with rank r's k-th action; rank r
    holds at most limits[r] microbatches between F and I."""
    f_end = np.full((p, m), -1, dtype=np.int64)   # unit-time finish of F(i) on rank r; -1: not yet
    b_end = np.full((p, m), -1, dtype=np.int64)
    nf = np.zeros(p, dtype=np.int64)
    nb = np.zeros(p, dtype=np.int64)
    nw = np.zeros(p, dtype=np.int64)
    busy_until = np.zeros(p, dtype=np.int64)
    finished = 0
    t = 0
    while finished < p:
        for r in range(p):
            if busy_until[r] > t or nw[r] == m:
                continue
            b_dep = -1
            if nb[r] < nf[r]:
                b_dep = f_end[r, nb[r]] if r == p - 1 else b_end[r + 1, nb[r]]
            f_dep = -1
            if nf[r] < m:
                f_dep = 0 if r == 0 else f_end[r - 1, nf[r]]
            if nb[r] - nw[r] > p - 1:
                kind = 2
            elif 0 <= b_dep <= t:
                kind = 1
            elif 0 <= f_dep <= t and nf[r] - nb[r] < limits[r]:
                kind = 0
            elif nw[r] < nb[r]:
                kind = 2
            else:
                continue
            k = nf[r] + nb[r] + nw[r]
            op[r, k] = kind
            if kind == 0:
                mb[r, k] = nf[r]
                f_end[r, nf[r]] = t + 1
                nf[r] += 1
            elif kind == 1:
                mb[r, k] = nb[r]
                b_end[r, nb[r]] = t + 1
                nb[r] += 1
            else:
                mb[r, k] = nw[r]
                nw[r] += 1
                if nw[r] == m:
                    finished += 1
            busy_until[r] = t + 1
        t += 1


@lru_cache(maxsize=16)
def zb_arrays(p: int, m: int, limits: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(op, mb) of every rank, flattened rank after rank (3m actions each): Op codes 0 = F, 1 = I, 2 = W.
    ``limits[r]``: the most microbatches rank r holds between F and I (ZB-H1: min(p - r, m))."""
    op = np.empty((p, 3 * m), dtype=np.int64)
    mb = np.empty((p, 3 * m), dtype=np.int64)
    jit.for_size(_list_schedule, 3 * p * m)(p, m, np.array(limits, dtype=np.int64), op, mb)
    op.flags.writeable = mb.flags.writeable = False
    return op.reshape(-1), mb.reshape(-1)
