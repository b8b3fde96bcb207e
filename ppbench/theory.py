"""Closed forms for uniform stages and free communication (DESIGN.md), one place only.

Bubble fraction = share of step time a rank is idle. Megatron-LM's form, bubble time over
ideal time, is (p - 1) / m (interleaved: (p - 1) / (v m)); :func:`megatron_bubble_ratio` gives it.
"""

from __future__ import annotations

__all__ = ["bubble_fraction", "megatron_bubble_ratio", "peak_in_flight"]


def bubble_fraction(schedule: str, p: int, m: int, v: int = 1) -> float:
    """Idle share of the step on every rank, for uniform stages and free communication."""
    if schedule == "naive":
        return (p - 1) / p
    if schedule in ("gpipe", "1f1b"):
        return (p - 1) / (m + p - 1)
    if schedule == "interleaved":
        return (p - 1) / (v * m + p - 1)
    raise ValueError(f"no closed form for schedule {schedule!r}")


def megatron_bubble_ratio(schedule: str, p: int, m: int, v: int = 1) -> float:
    """Bubble time over ideal (busy) time: f / (1 - f) of :func:`bubble_fraction`."""
    f = bubble_fraction(schedule, p, m, v)
    return f / (1 - f)


def peak_in_flight(schedule: str, p: int, m: int, rank: int) -> int:
    """Microbatches whose activations a rank holds at once, at most."""
    if schedule == "naive":
        return 1
    if schedule == "gpipe":
        return m
    if schedule == "1f1b":
        return min(m, p - rank)
    raise ValueError(f"no closed form for schedule {schedule!r}")
