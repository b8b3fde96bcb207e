"""Contiguous stages of a layer list that minimise the heaviest stage (by parameters, or by time)."""

from __future__ import annotations

__all__ = ["balanced_split"]


def balanced_split(weights: list[int], parts: int) -> list[range]:
    """Contiguous, non-empty ranges of ``weights`` (ints or floats) that minimise the heaviest range.

    Exact dynamic programme, O(parts * n^2); ties go to the split that puts fewer layers first.
    """
    n = len(weights)
    if not 1 <= parts <= n:
        raise ValueError(f"cannot split {n} layers into {parts} non-empty stages (need 1 <= stages <= {n})")
    prefix = [0]
    for w in weights:
        prefix.append(prefix[-1] + w)
    inf = float("inf")
    # best[k][i]: the least possible heaviest stage when the first i layers form k stages
    best = [[inf] * (n + 1) for _ in range(parts + 1)]
    cut = [[0] * (n + 1) for _ in range(parts + 1)]
    best[0][0] = 0
    for k in range(1, parts + 1):
        for i in range(k, n - (parts - k) + 1):
            for j in range(k - 1, i):
                cost = max(best[k - 1][j], prefix[i] - prefix[j])
                if cost < best[k][i]:
                    best[k][i], cut[k][i] = cost, j
    bounds, i = [], n
    for k in range(parts, 0, -1):
        bounds.append(range(cut[k][i], i))
        i = cut[k][i]
    return bounds[::-1]
