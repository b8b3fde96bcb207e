"""Pipeline schedules as pure data: one ordered action list per rank, no MPI, no torch.

A schedule function returns the *compute* order of one rank (F/B/W actions). The pass
:func:`add_communication` then inserts the matching sends and receives, so every schedule
shares one definition of who talks to whom. Virtual stage ``s = chunk * p + rank`` holds
the s-th contiguous piece of the model (``v`` pieces per rank, ``v = 1`` unless interleaved).
"""

from __future__ import annotations

from typing import Callable

from .actions import Action

__all__ = ["SCHEDULES", "schedule_names", "compute_order", "add_communication", "build_schedule",
           "warmup_forwards", "peak_in_flight"]


def naive(p: int, m: int, rank: int) -> list[Action]:
    """The chapter's simple pipeline: microbatch i goes forward through every stage and back
    before microbatch i + 1 starts, so only one stage ever works."""
    return [a for i in range(m) for a in (Action("F", i), Action("B", i))]


def gpipe(p: int, m: int, rank: int) -> list[Action]:
    """GPipe (Huang et al., 2019): all m forwards, then all m backwards, then flush."""
    return [Action("F", i) for i in range(m)] + [Action("B", i) for i in range(m)]


def warmup_forwards(p: int, m: int, rank: int) -> int:
    """Forwards a 1F1B rank runs before its first backward: min(p - rank - 1, m)."""
    return min(p - rank - 1, m)


def one_f_one_b(p: int, m: int, rank: int) -> list[Action]:
    """1F1B (PipeDream-Flush, Megatron-LM non-interleaved).

    Warm-up: min(p - r - 1, m) forwards. Steady state: one forward, one backward, until every
    microbatch has been forwarded. Cool-down: the remaining backwards.
    """
    warmup = warmup_forwards(p, m, rank)
    order = [Action("F", i) for i in range(warmup)]
    for i in range(m - warmup):                      # steady: F(warmup + i), B(i)
        order += [Action("F", warmup + i), Action("B", i)]
    order += [Action("B", i) for i in range(m - warmup, m)]  # cool-down
    return order


ScheduleFn = Callable[[int, int, int], list[Action]]

#: name -> compute-order function (p, m, rank) -> [Action]
SCHEDULES: dict[str, ScheduleFn] = {"naive": naive, "gpipe": gpipe, "1f1b": one_f_one_b}


def schedule_names() -> list[str]:
    return list(SCHEDULES)


def compute_order(name: str, p: int, m: int, rank: int) -> list[Action]:
    """Compute actions of ``rank`` for schedule ``name`` (validated)."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; allowed: {', '.join(SCHEDULES)}")
    if p < 1 or m < 1 or not 0 <= rank < p:
        raise ValueError(f"need p >= 1, m >= 1 and 0 <= rank < p; got p={p}, m={m}, rank={rank}")
    return SCHEDULES[name](p, m, rank)


def add_communication(order: list[Action], p: int, rank: int, v: int = 1) -> list[Action]:
    """Insert the receives each compute action needs before it, and the sends it owes after it.

    F on virtual stage s receives its input from s - 1 and sends its output to s + 1;
    B receives the output gradient from s + 1 and sends the input gradient to s - 1.
    W (weight gradients) talks to nobody.
    """
    last = p * v - 1
    out: list[Action] = []
    for action in order:
        stage = action.chunk * p + rank
        if action.op == "F":
            if stage > 0:
                out.append(Action("RECV_F", action.mb, action.chunk))
            out.append(action)
            if stage < last:
                out.append(Action("SEND_F", action.mb, action.chunk))
        elif action.op == "B":
            if stage < last:
                out.append(Action("RECV_B", action.mb, action.chunk))
            out.append(action)
            if stage > 0:
                out.append(Action("SEND_B", action.mb, action.chunk))
        else:
            out.append(action)
    return out


def build_schedule(name: str, p: int, m: int) -> list[list[Action]]:
    """Full action lists (compute and communication) for every rank of the pipeline."""
    return [add_communication(compute_order(name, p, m, r), p, r) for r in range(p)]


def peak_in_flight(actions: list[Action]) -> int:
    """Largest number of microbatches whose forward ran but whose backward has not yet."""
    live = peak = 0
    for action in actions:
        if action.op == "F":
            live += 1
            peak = max(peak, live)
        elif action.op == "B":
            live -= 1
    return peak
