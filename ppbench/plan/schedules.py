"""Pipeline schedules as pure data: one ordered action list per rank, no MPI, no torch.

A schedule function returns the *compute* order of one rank (F/B/W actions). The pass
:func:`add_communication` then inserts the matching sends and receives, so every schedule
shares one definition of who talks to whom. Virtual stage ``s = chunk * p + rank`` holds
the s-th contiguous piece of the model (``v`` pieces per rank, ``v = 1`` unless interleaved).
"""

from __future__ import annotations

from typing import Callable

from ppbench.plan.actions import COMPUTE_OPS, Action

__all__ = ["SCHEDULES", "CHUNKED", "NEEDS_NONBLOCKING", "schedule_problem", "compute_order", "add_communication",
           "build_schedule", "warmup_forwards", "peak_in_flight"]


def naive(p: int, m: int, rank: int, v: int = 1) -> list[Action]:
    """The chapter's simple pipeline: microbatch i goes forward through every stage and back
    before microbatch i + 1 starts, so only one stage ever works."""
    return [a for i in range(m) for a in (Action("F", i), Action("B", i))]


def gpipe(p: int, m: int, rank: int, v: int = 1) -> list[Action]:
    """GPipe (Huang et al., 2019): all m forwards, then all m backwards, then flush."""
    return [Action("F", i) for i in range(m)] + [Action("B", i) for i in range(m)]


def warmup_forwards(p: int, m: int, rank: int) -> int:
    """Forwards a 1F1B rank runs before its first backward: min(p - rank - 1, m)."""
    return min(p - rank - 1, m)


def one_f_one_b(p: int, m: int, rank: int, v: int = 1) -> list[Action]:
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


def interleaved_1f1b(p: int, m: int, rank: int, v: int = 2) -> list[Action]:
    """Interleaved 1F1B (Narayanan et al., 2021, Megatron-LM): each rank holds v model chunks
    (virtual stages r, p + r, ..., (v-1)p + r) and cycles through them in groups of p microbatches.

    Forward number k runs chunk (k // p) mod v on microbatch (k // pv) p + k mod p; backward
    number k runs the chunks in reverse order. Warm-up: 2(p - r - 1) + (v - 1)p forwards (all of
    them when m = p), then one forward one backward, then the remaining backwards.
    Needs m to be a multiple of p (Megatron-LM's constraint).
    """
    total = m * v

    def nth(k: int, backward: bool) -> Action:
        chunk = (k // p) % v
        mb = (k // (p * v)) * p + k % p
        return Action("B", mb, v - 1 - chunk) if backward else Action("F", mb, chunk)

    warmup = total if m == p else min(2 * (p - rank - 1) + (v - 1) * p, total)
    order = [nth(k, False) for k in range(warmup)]
    for k in range(total - warmup):
        order += [nth(warmup + k, False), nth(k, True)]
    order += [nth(k, True) for k in range(total - warmup, total)]
    return order


def zero_bubble_h1(p: int, m: int, rank: int, v: int = 1) -> list[Action]:
    """ZB-H1 (Qi et al., 2023): the backward is split into B (gradients for the stage input, on
    the critical path) and W (weight gradients, off it); W's fill the time 1F1B spends waiting.

    The order is derived by list-scheduling all ranks at unit cost (F = B = W = 1): a free rank
    runs, in this priority, a W if more than p - 1 of its W's are pending, a ready B, a ready F
    if fewer than min(p - r, m) microbatches await their B (1F1B's activation count), any pending
    W. For m >= p this reaches ZB-H1's step time, m(F + B + W) + (p - 1)(F + B - W).
    """
    from ppbench.plan.zero_bubble import zb_h1_arrays

    op, mb = zb_h1_arrays(p, m)
    mine = slice(rank * 3 * m, (rank + 1) * 3 * m)
    return [Action(COMPUTE_OPS[o], int(i)) for o, i in zip(op[mine], mb[mine])]


ScheduleFn = Callable[..., list[Action]]

#: name -> compute-order function (p, m, rank, v) -> [Action]
SCHEDULES: dict[str, ScheduleFn] = {"naive": naive, "gpipe": gpipe, "1f1b": one_f_one_b,
                                    "interleaved": interleaved_1f1b, "zb-h1": zero_bubble_h1}
#: schedules that place v > 1 model chunks on each rank
CHUNKED = ("interleaved",)
#: schedules that deadlock when every transfer must complete before the next computation: a
#: send's matching receive can sit after the receiver's next computation (tests show one case)
NEEDS_NONBLOCKING = ("interleaved", "zb-h1")


def schedule_problem(name: str, p: int, m: int, v: int = 1) -> str | None:
    """Why (name, p, m, v) is not a valid schedule, or None."""
    if name not in SCHEDULES:
        return f"unknown schedule {name!r}; allowed: {', '.join(SCHEDULES)}"
    if p < 1 or m < 1 or v < 1:
        return f"need p >= 1, m >= 1 and v >= 1; got p={p}, m={m}, v={v}"
    if name in CHUNKED and p < 2:
        return f"{name} needs at least 2 stages to interleave chunks across, got p={p}"
    if name in CHUNKED and m % p:
        return f"{name} needs microbatches to be a multiple of the stages: m={m}, p={p}; allowed: m in {p}, {2 * p}, ..."
    if name not in CHUNKED and v != 1:
        return f"{name} places one model chunk per rank; chunks must be 1, got {v} (use 'interleaved' for v > 1)"
    return None


def compute_order(name: str, p: int, m: int, rank: int, v: int = 1) -> list[Action]:
    """Compute actions of ``rank`` for schedule ``name`` (validated)."""
    problem = schedule_problem(name, p, m, v)
    if problem:
        raise ValueError(problem)
    if not 0 <= rank < p:
        raise ValueError(f"need 0 <= rank < p; got p={p}, rank={rank}")
    return SCHEDULES[name](p, m, rank, v)


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


def build_schedule(name: str, p: int, m: int, v: int = 1) -> list[list[Action]]:
    """Full action lists (compute and communication) for every rank of the pipeline."""
    return [add_communication(compute_order(name, p, m, r, v), p, r, v) for r in range(p)]


def peak_in_flight(actions: list[Action]) -> int:
    """Largest number of (microbatch, chunk) pairs whose F ran but whose B has not (with a split
    backward, B releases most activations in ZB-H1's memory model; W's inputs are counted in the
    measured saved bytes instead)."""
    live = peak = 0
    for action in actions:
        if action.op == "F":
            live += 1
            peak = max(peak, live)
        elif action.op == "B":
            live -= 1
    return peak
