"""Closed forms for uniform stages and free communication (DESIGN.md), one place only.

Bubble fraction = share of step time a rank is idle. Megatron-LM's form, bubble time over
ideal time, is (p - 1) / m (interleaved: (p - 1) / (v m)); :func:`megatron_bubble_ratio` gives it.
"""

from __future__ import annotations

from ppbench.plan.schedules import interleaved_warmup, zero_bubble_limits

__all__ = ["bubble_fraction", "megatron_bubble_ratio", "peak_in_flight", "closed_form_holds"]

#: zero-bubble schedules with more than one stage per rank: only the first p - 1 chunk forwards of
#: the last rank wait, the least any flushed schedule can wait (F = I = W, free transfers)
_MULTI_STAGE_ZERO_BUBBLE = ("zb-interleaved", "zb-v", "dualpipev")


def closed_form_holds(schedule: str, p: int, m: int, v: int = 1) -> bool:
    """Whether :func:`bubble_fraction` and :func:`peak_in_flight` are exact for (p, m): ZB-H1 and
    ZB-H2 need m >= p, ZB-V m >= 2p - 1 (with fewer they never do worse than 1F1B)."""
    if schedule in ("zb-h1", "zb-h2"):
        return m >= p
    if schedule == "zb-v":
        return m >= 2 * p - 1
    return True


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
    if schedule in ("zb-h1", "zb-h2"):
        # backward split into I and W of equal cost T: the bubble shrinks from (p-1)(F+I+W) to
        # (p-1)(F+I-W) = (p-1)T when F = I = W = T, for m >= p (Qi et al., 2023, ZB-H1). With free
        # transfers that is already the least a flushed step allows, so ZB-H2 ties with ZB-H1.
        return (p - 1) / (3 * m + p - 1)
    if schedule in _MULTI_STAGE_ZERO_BUBBLE:   # (p - 1) chunk forwards of T / v idle on each rank
        return (p - 1) / (3 * v * m + p - 1)
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
    if schedule in ("zb-h2", "zb-interleaved"):   # the in-flight limit each is scheduled under:
        return zero_bubble_limits(schedule, p, m, v)[rank]   # 2(p - r) - 1 and vp - r, at most all
    if schedule == "zb-v":         # 2p half-size stages: 1F1B's rank-0 memory, on every rank
        return 2 * p
    if schedule == "dualpipev":    # one more than ZB-V: its steady phase forwards before it backwards
        return 2 * p + 1
    raise ValueError(f"no closed form for schedule {schedule!r}")
