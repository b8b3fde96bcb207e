"""Closed forms for uniform stages and free communication (DESIGN.md), one place only.

Bubble fraction = share of step time a rank is idle. Megatron-LM's form, bubble time over
ideal time, is (p - 1) / m (interleaved: (p - 1) / (v m)); :func:`megatron_bubble_ratio` gives it.
"""

from __future__ import annotations

from ppbench.plan.schedules import interleaved_warmup

__all__ = ["bubble_fraction", "megatron_bubble_ratio", "peak_in_flight"]


def bubble_fraction(schedule: str, p: int, m: int, v: int = 1) -> float:
    """Idle share of the step on every rank, for uniform stages and free communication."""
    if schedule == "naive":
        return (p - 1) / p
    if schedule in ("gpipe", "1f1b", "1f1b-recompute"):   # recompute: B costs F + B, the form holds
        return (p - 1) / (m + p - 1)
    if schedule == "interleaved":
        return (p - 1) / (v * m + p - 1)
    if schedule == "looped-bfs":
        # a rank's next stage waits for its first input to cross all p ranks: when m < p it idles;
        # step = (F + B)((v - 1) max(m, p) + m + p - 1), busy = v m (F + B)
        return 1 - v * m / ((v - 1) * max(m, p) + m + p - 1)
    if schedule == "zb-h1":
        # backward split into I and W of equal cost T: the bubble shrinks from (p-1)(F+I+W) to
        # (p-1)(F+I-W) = (p-1)T when F = I = W = T, for m >= p (Qi et al., 2023, ZB-H1)
        return (p - 1) / (3 * m + p - 1)
    raise ValueError(f"no closed form for schedule {schedule!r}")


def megatron_bubble_ratio(schedule: str, p: int, m: int, v: int = 1) -> float:
    """Bubble time over ideal (busy) time: f / (1 - f) of :func:`bubble_fraction`."""
    f = bubble_fraction(schedule, p, m, v)
    return f / (1 - f)


def peak_in_flight(schedule: str, p: int, m: int, rank: int, v: int = 1) -> int:
    """(Microbatch, chunk) pairs whose activations a rank holds at once, at most."""
    if schedule == "naive":
        return 1
    if schedule == "gpipe":
        return m
    # zb-h1 holds a microbatch from F until I, as 1F1B until B (W's inputs are counted in bytes)
    if schedule in ("1f1b", "1f1b-recompute", "zb-h1"):
        return min(m, p - rank)
    if schedule == "interleaved":  # warm-up forwards plus the first steady-state one
        return min(interleaved_warmup(p, m, rank, v) + 1, m * v)
    if schedule == "looped-bfs":   # every forward of every stage before the first backward
        return m * v
    raise ValueError(f"no closed form for schedule {schedule!r}")
