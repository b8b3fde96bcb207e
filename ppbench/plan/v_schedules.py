"""The two V-placement schedules, ZB-V and DualPipeV, each written as a table of phases.

V placement: rank r holds chunk 0 = stage r (the way in) and chunk 1 = stage 2p - 1 - r (the way
out); a microbatch enters chunk 0 on rank 0, crosses the ranks, turns on rank p - 1 and comes back
through chunk 1 to the loss on rank 0. Both schedules split the backward (I, then W) where it fills
a bubble.

A table lists phases; a phase repeats its pattern ``count`` times. Tokens: ``F0``/``F1`` forward
chunk 0/1, ``B0``/``B1`` full backward, ``I0``/``I1`` input-gradient half, ``W`` the oldest pending
weight-gradient half, ``W0``/``W1`` the oldest pending one of that chunk; each chunk takes its
microbatches in order. A rank's W's still pending after the last phase close its step: oldest
first (DualPipeV), or chunk 1's before chunk 0's (ZB-V). Phase counts follow the papers' figures
(and PyTorch's ScheduleZBVZeroBubble and ScheduleDualPipeV, which ``ppbench audit torch`` and a
test compare with these action by action).
"""

from __future__ import annotations

from collections import deque
from functools import lru_cache

from ppbench.plan.actions import Action, Op

__all__ = ["zero_bubble_v", "dualpipe_v", "run_phases"]

def zero_bubble_v(p: int, m: int, rank: int, v: int = 2) -> list[Action]:
    """ZB-V (Qi et al., 2024, "Pipeline Parallelism with Controllable Memory"): 1F1B's peak
    activation memory on every rank (2p half-size stage activations), and for m >= 2p - 1 a
    bubble of (p - 1) chunk forwards only, because the loss sits on rank 0 beside the input.

    ======  ======================  =========================
    phase   count                   pattern
    ======  ======================  =========================
    1       2(p - r) - 1            F0
    2       r                       F1 F0
    3       p - r                   F1 I1 W1
    4       n - 2p + r + 1          F0 I0 W0 F1 I1 W1
    5       p - r - 1               I0 W0 F1 I1 W1
    6       r                       I0 I1
    7       p - r                   I0 W0
    ======  ======================  =========================

    The table is for n = max(m, 2p - 1) microbatches; with fewer, the actions on microbatches m
    and above are left out (the pipeline then never fills, as with any schedule at m < p).
    """
    n = max(m, 2 * p - 1)
    r = rank
    table = [(2 * (p - r) - 1, "F0"), (r, "F1 F0"), (p - r, "F1 I1 W1"), (n - 2 * p + r + 1, "F0 I0 W0 F1 I1 W1"),
             (p - r - 1, "I0 W0 F1 I1 W1"), (r, "I0 I1"), (p - r, "I0 W0")]
    return [a for a in run_phases(p, r, tuple(table), chunk_by_chunk=True) if a.mb < m]


def dualpipe_v(p: int, m: int, rank: int, v: int = 2) -> list[Action]:
    """DualPipeV (DeepSeek-AI, 2025, "DualPipe", the V-shaped single-copy variant of DeepSeek-V3's
    DualPipe). In the steady phase it pairs the forward of one chunk with the backward of the
    other (``F0 B1`` and ``F1 B0``), meant to run at once so one computes while the other
    communicates; on a CPU a pair runs one after the other, as ppbench does. Needs m >= 2p.

    ======  ======================  ==============================================
    phase   count                   pattern
    ======  ======================  ==============================================
    1       2(p - r - 1)            F0
    2       r + 1                   F0 F1
    3       p - r - 1               I1 W F1
    4       m - 2p + r + 1          F0 B1 F1 B0       (two overlapped pairs)
    5       p - r - 1               B1 F1 B0          (F1 B0 overlapped)
    6       r + 1                   B1 B0, split into I's from repeat (r + 1) // 2 on
    7       p - r - 1               W I0
    ======  ======================  ==============================================

    In phase 6 the split starts with the B1 of repeat (r + 1) // 2 on odd ranks and with its B0
    on even ranks, so neighbouring ranks begin their weight-gradient tails at staggered times.
    """
    if m < 2 * p:
        raise ValueError(f"dualpipev needs at least as many microbatches as stages (2p = {2 * p}), got m={m}")
    r = rank
    half = (r + 1) // 2
    tail = " ".join(("I1" if i > half or (i == half and r % 2) else "B1") + " " + ("I0" if i >= half else "B0")
                    for i in range(r + 1))
    table = [(2 * (p - r - 1), "F0"), (r + 1, "F0 F1"), (p - r - 1, "I1 W F1"), (m - 2 * p + r + 1, "F0 B1 F1 B0"),
             (p - r - 1, "B1 F1 B0"), (1, tail), (p - r - 1, "W I0")]
    return list(run_phases(p, r, tuple(table)))


@lru_cache(maxsize=512)
def run_phases(p: int, rank: int, table: tuple[tuple[int, str], ...],
               chunk_by_chunk: bool = False) -> tuple[Action, ...]:
    """Rank ``rank``'s actions for a phase table (see the module's docstring); the W's left at the
    end run oldest first, or chunk 1's before chunk 0's when ``chunk_by_chunk``."""
    stage = {"0": rank, "1": 2 * p - 1 - rank}
    taken = {(s, op): 0 for s in stage.values() for op in (Op.F, Op.I)}
    weights: deque[tuple[int, int]] = deque()          # (stage, microbatch) whose W is pending
    order: list[Action] = []

    def weight(chunk: str | None) -> Action:
        pick = next(w for w in weights if chunk is None or w[0] == stage[chunk])
        weights.remove(pick)
        return Action(pick[0], Op.W, pick[1])

    for count, pattern in table:
        for _ in range(count):
            for token in pattern.split():
                if token[0] == "W":
                    order.append(weight(token[1:] or None))
                    continue
                op, s = Op(token[0]), stage[token[1]]
                kind = Op.F if op is Op.F else Op.I          # B and I share a microbatch counter
                mb = taken[(s, kind)]
                taken[(s, kind)] += 1
                order.append(Action(s, op, mb))
                if op is Op.I:
                    weights.append((s, mb))
    if chunk_by_chunk:
        order += [weight("1") for _ in range(sum(s == stage["1"] for s, _ in weights))]
    order += [weight(None) for _ in range(len(weights))]
    return tuple(order)
