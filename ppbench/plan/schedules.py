"""Pipeline schedules as pure data: one ordered action list per rank, no MPI, no torch.

A schedule function returns the *compute* order of one rank (F, B or I/W actions on the stages
its placement gives that rank). The pass :func:`ppbench.plan.comm.add_communication` then
inserts the matching sends and receives, so every schedule shares one definition of who talks
to whom. Adding a schedule means adding one function and one :class:`Schedule` entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from ppbench.plan.actions import Action, Op
from ppbench.plan.list_schedule import list_schedule
from ppbench.plan.placement import Placement
from ppbench.plan.v_schedules import dualpipe_v, zero_bubble_v

__all__ = ["Schedule", "SCHEDULES", "CHUNKED", "NEEDS_NONBLOCKING", "schedule_problem", "compute_order",
           "build_schedule", "placement_for", "warmup_forwards", "interleaved_warmup", "peak_in_flight"]


def naive(p: int, m: int, rank: int, v: int = 1) -> list[Action]:
    """The chapter's simple pipeline: microbatch i goes forward through every stage and back
    before microbatch i + 1 starts, so only one stage ever works."""
    return [a for i in range(m) for a in (Action(rank, Op.F, i), Action(rank, Op.B, i))]


def gpipe(p: int, m: int, rank: int, v: int = 1) -> list[Action]:
    """GPipe (Huang et al., 2019): all m forwards, then all m backwards, then flush."""
    return [Action(rank, Op.F, i) for i in range(m)] + [Action(rank, Op.B, i) for i in range(m)]


def warmup_forwards(p: int, m: int, rank: int) -> int:
    """Forwards a 1F1B rank runs before its first backward: min(p - rank - 1, m)."""
    return min(p - rank - 1, m)


def one_f_one_b(p: int, m: int, rank: int, v: int = 1) -> list[Action]:
    """1F1B (PipeDream-Flush, Megatron-LM non-interleaved).

    Warm-up: min(p - r - 1, m) forwards. Steady state: one forward, one backward, until every
    microbatch has been forwarded. Cool-down: the remaining backwards.
    """
    warmup = warmup_forwards(p, m, rank)
    order = [Action(rank, Op.F, i) for i in range(warmup)]
    for i in range(m - warmup):                      # steady: F(warmup + i), B(i)
        order += [Action(rank, Op.F, warmup + i), Action(rank, Op.B, i)]
    order += [Action(rank, Op.B, i) for i in range(m - warmup, m)]  # cool-down
    return order


def interleaved_warmup(p: int, m: int, rank: int, v: int) -> int:
    """Forwards an interleaved-1F1B rank runs before its first backward: 2(p - r - 1) + (v - 1)p,
    or all m v of them when m = p (Megatron-LM)."""
    total = m * v
    return total if m == p else min(2 * (p - rank - 1) + (v - 1) * p, total)


def interleaved_1f1b(p: int, m: int, rank: int, v: int = 2) -> list[Action]:
    """Interleaved 1F1B (Narayanan et al., 2021, Megatron-LM): each rank holds v model chunks
    (looped placement: stages r, p + r, ..., (v-1)p + r) and cycles through them in groups of p
    microbatches.

    Forward number k runs chunk (k // p) mod v on microbatch (k // pv) p + k mod p; backward
    number k runs the chunks in reverse order. Warm-up: :func:`interleaved_warmup`, then one
    forward one backward, then the remaining backwards. Needs m to be a multiple of p.
    """
    total = m * v

    def nth(k: int, backward: bool) -> Action:
        stage, mb = _interleaved_nth(p, rank, v, k, backward)
        return Action(stage, Op.B if backward else Op.F, mb)

    warmup = interleaved_warmup(p, m, rank, v)
    order = [nth(k, False) for k in range(warmup)]
    for k in range(total - warmup):
        order += [nth(warmup + k, False), nth(k, True)]
    order += [nth(k, True) for k in range(total - warmup, total)]
    return order


def _interleaved_nth(p: int, rank: int, v: int, k: int, backward: bool) -> tuple[int, int]:
    """(stage, microbatch) of ``rank``'s k-th forward (or backward) in interleaved 1F1B's order."""
    chunk = (k // p) % v
    mb = (k // (p * v)) * p + k % p
    return ((v - 1 - chunk) if backward else chunk) * p + rank, mb


def looped_bfs(p: int, m: int, rank: int, v: int = 2) -> list[Action]:
    """Looped BFS (Lamy-Poirier, 2023, "Breadth-First Pipeline Parallelism"; PyTorch's
    ScheduleLoopedBFS): v stages per rank (looped placement). A rank forwards every microbatch
    through its first stage, then its next, and so on; then backwards its last stage for every
    microbatch (last microbatch first), then the one before. All v m activations are alive at once
    (GPipe's memory, times v) in exchange for the interleaved bubble."""
    stages = [c * p + rank for c in range(v)]
    forwards = [Action(s, Op.F, i) for s in stages for i in range(m)]
    return forwards + [Action(s, Op.B, i) for s in reversed(stages) for i in reversed(range(m))]


def zero_bubble_h1(p: int, m: int, rank: int, v: int = 1) -> list[Action]:
    """ZB-H1 (Qi et al., 2023): the backward is split into I (gradients for the stage input, on
    the critical path) and W (weight gradients, off it); W's fill the time 1F1B spends waiting.

    Found by :func:`ppbench.plan.list_schedule.list_schedule` with 1F1B's activation memory:
    rank r holds at most min(p - r, m) microbatches between F and I, and defers at most p - 1 W's.
    For m >= p this reaches ZB-H1's step time, m(F + I + W) + (p - 1)(F + I - W).
    (:mod:`ppbench.plan.zero_bubble` computes the same orders as arrays, for thousands of ranks;
    a test keeps the two equal.)
    """
    return list(_list_scheduled("zb-h1", p, m, 1)[rank])


def zero_bubble_h2(p: int, m: int, rank: int, v: int = 1) -> list[Action]:
    """ZB-H2 (Qi et al., 2023): ZB-H1 with a longer warm-up. Rank r may hold up to
    min(2(p - r) - 1, m) microbatches between F and I (rank 0: 2p - 1, about twice 1F1B's memory),
    so it keeps forwarding while the first backwards travel, and W's fill what is left.

    At unit cost and free transfers ZB-H1 already reaches the lower bound of a flushed step,
    3m + p - 1 ticks, so the two tie there; the longer warm-up pays when transfers take time
    (docs/schedules.md has the numbers). The paper's "zero" bubble also drops the step's final
    synchronisation, which a flushed step (ppbench's, PyTorch's) keeps.
    """
    return list(_list_scheduled("zb-h2", p, m, 1)[rank])


def zero_bubble_interleaved(p: int, m: int, rank: int, v: int = 2) -> list[Action]:
    """Interleaved zero bubble (ZB1P-style, Qi et al., 2023; PyTorch's
    ScheduleInterleavedZeroBubble): looped placement, v stages per rank. Each rank takes its F's
    and its I's in interleaved 1F1B's order (rounds of p microbatches per chunk), holds at most
    min((v - 1) p + p - r, m v) (stage, microbatch) pairs between F and I, and fills its idle
    ticks with W's (at most p - 1 deferred). Needs m to be a multiple of p."""
    return list(_list_scheduled("zb-interleaved", p, m, v)[rank])


def zero_bubble_limits(name: str, p: int, m: int, v: int = 1) -> tuple[int, ...]:
    """Each rank's in-flight limit ((stage, microbatch) pairs between F and I) in the list-scheduled
    zero-bubble schedules; the peak they reach (:func:`ppbench.plan.theory.peak_in_flight`)."""
    if name == "zb-h1":                 # 1F1B's activation memory
        return tuple(min(p - r, m) for r in range(p))
    if name == "zb-h2":                 # about twice that
        return tuple(min(2 * (p - r) - 1, m) for r in range(p))
    if name == "zb-interleaved":
        return tuple(min(v * p - r, v * m) for r in range(p))
    raise ValueError(f"{name!r} is not list-scheduled")


@lru_cache(maxsize=32)
def _list_scheduled(name: str, p: int, m: int, v: int) -> tuple[tuple[Action, ...], ...]:
    """Every rank's order at once, W's deferred at most p - 1 at a time; zb-interleaved takes its
    F's and I's in interleaved 1F1B's order."""
    limits = zero_bubble_limits(name, p, m, v)
    if name != "zb-interleaved":
        return list_schedule(Placement.looped(p), m, limits, p - 1)
    forwards = tuple(tuple(_interleaved_nth(p, r, v, k, backward=False) for k in range(m * v)) for r in range(p))
    inputs = tuple(tuple(_interleaved_nth(p, r, v, k, backward=True) for k in range(m * v)) for r in range(p))
    return list_schedule(Placement.looped(p, v), m, limits, p - 1, (forwards, inputs))


ScheduleFn = Callable[[int, int, int, int], list[Action]]


@dataclass(frozen=True)
class Schedule:
    """A built-in schedule: its order function and the facts every consumer needs about it."""

    name: str
    order: ScheduleFn                # (p, m, rank, v) -> that rank's compute actions
    placement: str = "looped"        # how its stages sit on ranks (see ppbench.plan.placement)
    default_chunks: int = 1          # v when the user gives none
    chunked: bool = False            # accepts v > 1
    needs_nonblocking: bool = False  # deadlocks when every transfer completes before the next computation
    m_multiple_of_p: bool = False
    m_at_least_stages: bool = False  # needs m >= the number of virtual stages
    torch_class: str | None = None   # torch.distributed.pipelining's class of the same design (--impl torch)
    recompute: bool = False          # stages keep only their input after F and run F again before B


#: name -> schedule; the order of this table is the order users see
SCHEDULES: dict[str, Schedule] = {s.name: s for s in (
    Schedule("naive", naive),
    Schedule("gpipe", gpipe, torch_class="ScheduleGPipe"),
    Schedule("1f1b", one_f_one_b, torch_class="Schedule1F1B"),
    Schedule("interleaved", interleaved_1f1b, default_chunks=2, chunked=True, needs_nonblocking=True,
             m_multiple_of_p=True, torch_class="ScheduleInterleaved1F1B"),
    Schedule("zb-h1", zero_bubble_h1, needs_nonblocking=True),
    Schedule("1f1b-recompute", one_f_one_b, recompute=True),
    Schedule("looped-bfs", looped_bfs, default_chunks=2, chunked=True, needs_nonblocking=True,
             torch_class="ScheduleLoopedBFS"),
    Schedule("zb-h2", zero_bubble_h2, needs_nonblocking=True),
    Schedule("zb-interleaved", zero_bubble_interleaved, default_chunks=2, chunked=True, needs_nonblocking=True,
             m_multiple_of_p=True, torch_class="ScheduleInterleavedZeroBubble"),
    Schedule("zb-v", zero_bubble_v, placement="v", default_chunks=2, needs_nonblocking=True,
             torch_class="ScheduleZBVZeroBubble"),
    Schedule("dualpipev", dualpipe_v, placement="v", default_chunks=2, needs_nonblocking=True,
             m_at_least_stages=True, torch_class="ScheduleDualPipeV"),
)}
#: schedules that place more than one stage on each rank (looped with v > 1, or V)
CHUNKED = tuple(s.name for s in SCHEDULES.values() if s.default_chunks > 1)
#: schedules that deadlock when every transfer must complete before the next computation (a
#: send's matching receive can sit after the receiver's next computation)
NEEDS_NONBLOCKING = tuple(s.name for s in SCHEDULES.values() if s.needs_nonblocking)


def schedule_problem(name: str, p: int, m: int, v: int | None = None) -> str | None:
    """Why (name, p, m, v) is not a valid schedule, or None (``v`` None: the schedule's own)."""
    if name not in SCHEDULES:
        return f"unknown schedule {name!r}; allowed: {', '.join(SCHEDULES)}"
    spec = SCHEDULES[name]
    v = spec.default_chunks if v is None else v
    if p < 1 or m < 1 or v < 1:
        return f"need p >= 1, m >= 1 and v >= 1; got p={p}, m={m}, v={v}"
    if spec.chunked and p < 2:
        return f"{name} needs at least 2 stages to interleave chunks across, got p={p}"
    if spec.m_multiple_of_p and m % p:
        return (f"{name} needs microbatches to be a multiple of the stages: m={m}, p={p}; "
                f"allowed: m in {p}, {2 * p}, ...")
    if spec.placement == "v" and v != 2:
        return f"{name} uses the V placement, two stages per rank; chunks must be 2, got {v}"
    if spec.placement != "v" and not spec.chunked and v != 1:
        return f"{name} places one model chunk per rank; chunks must be 1, got {v} (use 'interleaved' for v > 1)"
    if spec.m_at_least_stages and m < p * v:
        return (f"{name} needs at least as many microbatches as stages: m={m}, {p * v} stages; "
                f"allowed: m >= {p * v}")
    return None


def placement_for(name: str, p: int, v: int | None = None) -> Placement:
    """The placement schedule ``name`` runs on (``v`` stages per rank; None: the schedule's own)."""
    return Placement.named(SCHEDULES[name].placement, p, SCHEDULES[name].default_chunks if v is None else v)


def compute_order(name: str, p: int, m: int, rank: int, v: int | None = None) -> list[Action]:
    """Compute actions of ``rank`` for schedule ``name`` (validated; ``v`` None: the schedule's own)."""
    problem = schedule_problem(name, p, m, v)
    if problem:
        raise ValueError(problem)
    v = SCHEDULES[name].default_chunks if v is None else v
    if not 0 <= rank < p:
        raise ValueError(f"need 0 <= rank < p; got p={p}, rank={rank}")
    return SCHEDULES[name].order(p, m, rank, v)


def build_schedule(name: str, p: int, m: int, v: int | None = None) -> list[list[Action]]:
    """Full action lists (compute and communication) for every rank of the pipeline."""
    from ppbench.plan.comm import add_communication

    placement = placement_for(name, p, v)
    return [add_communication(compute_order(name, p, m, r, v), placement) for r in range(p)]


def peak_in_flight(actions: list[Action]) -> int:
    """Largest number of (stage, microbatch) pairs whose F ran but whose backward (I or B) has
    not (with a split backward, I releases most activations in ZB-H1's memory model; W's inputs
    are counted in the measured saved bytes instead)."""
    live = peak = 0
    for action in actions:
        if action.op is Op.F:
            live += 1
            peak = max(peak, live)
        elif action.op.is_backward:
            live -= 1
    return peak
