"""Is a schedule runnable, and if not, where exactly not: the checks every schedule from outside
passes before anything runs it (``ppbench validate FILE``).

1. Placement: each action sits on the rank that holds its stage.
2. Counts: every stage forwards every microbatch once and backwards it once (B, or I then W).
3. Order on each rank: F before its backward, I before its W.
4. Communication: in a file with sends and receives, each one matched by the other end and placed
   before (receive) or after (send) the computation that needs it; a compute-only file gets them
   inserted as ppbench's own schedules do.
5. Deadlock: simulated at unit cost under both transports; a deadlock is shown as the grid of
   every rank's actions with the one it is stuck on marked.

Then the peak in-flight microbatches of each rank and the unit-cost bubble.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ppbench.plan.actions import Action, Op
from ppbench.plan.comm import add_communication, message_key
from ppbench.plan.files import ScheduleFile
from ppbench.plan.schedules import peak_in_flight
from ppbench.sim.costs import Costs
from ppbench.sim.simulator import DeadlockError, simulate

__all__ = ["Problem", "Validation", "validate_schedule", "require_runnable", "TRANSPORTS"]

TRANSPORTS = ("blocking", "nonblocking")


@dataclass(frozen=True)
class Problem:
    """One thing wrong, where it is: rank and position in that rank's list (None: the schedule as a whole)."""

    message: str
    rank: int | None = None
    position: int | None = None
    action: str | None = None

    def __str__(self) -> str:
        where = []
        if self.rank is not None:
            where.append(f"rank {self.rank}")
        if self.position is not None:
            where.append(f"position {self.position}")
        if self.action is not None:
            where.append(self.action)
        return (", ".join(where) + ": " if where else "") + self.message


@dataclass
class Validation:
    problems: list[Problem] = field(default_factory=list)
    deadlocks: dict[str, str] = field(default_factory=dict)     # transport -> the stuck grid
    runs_under: list[str] = field(default_factory=list)          # transports that complete
    peak_in_flight: list[int] = field(default_factory=list)
    bubble: float | None = None      # unit cost, non-blocking transfers (blocking if only those run)

    @property
    def valid(self) -> bool:
        return not self.problems and bool(self.runs_under)


def validate_schedule(schedule: ScheduleFile, costs: Costs = Costs(1.0, 2.0, 1.0)) -> Validation:
    result = Validation()
    ranks = [list(acts) for acts in schedule.ranks]
    placement, m = schedule.placement, schedule.microbatches
    result.problems += _placement_problems(ranks, placement)
    if result.problems:
        return result
    compute = [[a for a in acts if a.is_compute] for acts in ranks]
    result.problems += _count_problems(compute, placement, m) + _order_problems(compute)
    if schedule.has_communication:
        result.problems += _communication_problems(ranks, placement.num_stages)
        full = ranks
    else:
        full = [add_communication(acts, placement) for acts in compute]
    if result.problems:
        return result
    result.peak_in_flight = [peak_in_flight(acts) for acts in compute]
    for transport in reversed(TRANSPORTS):   # non-blocking first: its bubble is the one reported
        try:
            sim = simulate(full, costs, transport, placement)
        except DeadlockError as exc:
            result.deadlocks[transport] = str(exc)
            continue
        result.runs_under.insert(0, transport)
        if result.bubble is None and sim.makespan > 0:
            busy = [sum(e.end - e.start for e in sim.by_rank(r) if e.action.is_compute) for r in range(len(full))]
            result.bubble = 1 - sum(busy) / len(busy) / sim.makespan
    return result


def _placement_problems(ranks: list[list[Action]], placement) -> list[Problem]:
    out = []
    for r, acts in enumerate(ranks):
        for k, a in enumerate(acts):
            if a.stage >= placement.num_stages:
                out.append(Problem(f"stage {a.stage} does not exist (stages 0..{placement.num_stages - 1})", r, k,
                                   str(a)))
            elif placement.rank_of(a.stage) != r:
                out.append(Problem(f"stage {a.stage} is held by rank {placement.rank_of(a.stage)}, not this one", r,
                                   k, str(a)))
    return out


def _count_problems(compute: list[list[Action]], placement, m: int) -> list[Problem]:
    seen = Counter((a.stage, a.op, a.mb) for acts in compute for a in acts)
    out = []
    for stage in range(placement.num_stages):
        rank = placement.rank_of(stage)
        for mb in range(m):
            f, b, i, w = (seen[(stage, op, mb)] for op in (Op.F, Op.B, Op.I, Op.W))
            if f != 1:
                out.append(Problem(f"stage {stage} runs F of microbatch {mb} {f} times; expected once", rank))
            if not ((b == 1 and i == w == 0) or (b == 0 and i == w == 1)):
                out.append(Problem(f"stage {stage}, microbatch {mb} has B x{b}, I x{i}, W x{w}; expected one B, or "
                                   "one I and one W", rank))
    return out


def _order_problems(compute: list[list[Action]]) -> list[Problem]:
    out = []
    for r, acts in enumerate(compute):
        where = {(a.stage, a.op, a.mb): k for k, a in enumerate(acts)}
        for k, a in enumerate(acts):
            before = {Op.I: Op.F, Op.B: Op.F, Op.W: Op.I}.get(a.op)
            earlier = where.get((a.stage, before, a.mb)) if before else None
            if earlier is not None and earlier > k:
                out.append(Problem(f"runs before {Action(a.stage, before, a.mb)}, which it needs", r, k, str(a)))
    return out


def _communication_problems(ranks: list[list[Action]], stages: int) -> list[Problem]:
    out = []
    sends = Counter(message_key(a, stages) for acts in ranks for a in acts if a.is_send)
    recvs = Counter(message_key(a, stages) for acts in ranks for a in acts if a.is_recv)
    for r, acts in enumerate(ranks):
        for k, a in enumerate(acts):
            if a.is_compute or (a.is_send and recvs[message_key(a, stages)]) or \
                    (a.is_recv and sends[message_key(a, stages)]):
                continue
            other = "receive" if a.is_send else "send"
            out.append(Problem(f"no matching {other} on the other end", r, k, str(a)))
        position = {a: k for k, a in enumerate(acts)}
        for k, a in enumerate(acts):
            if not a.is_compute:
                continue
            needs = []
            if a.op is Op.F and a.stage > 0:
                needs.append((Action(a.stage, Op.RECV_F, a.mb), "before"))
            if a.op is Op.F and a.stage < stages - 1:
                needs.append((Action(a.stage, Op.SEND_F, a.mb), "after"))
            if a.op.is_backward and a.stage < stages - 1:
                needs.append((Action(a.stage, Op.RECV_B, a.mb), "before"))
            if a.op.is_backward and a.stage > 0:
                needs.append((Action(a.stage, Op.SEND_B, a.mb), "after"))
            for need, side in needs:
                at = position.get(need)
                if at is None or (at > k if side == "before" else at < k):
                    out.append(Problem(f"needs {need} {side} it on this rank", r, k, str(a)))
    return out


def require_runnable(cfg) -> None:
    """Raise ConfigError unless ``cfg``'s schedule file validates and runs under its transport
    (built-in schedules are valid by construction and by their tests)."""
    from ppbench.config import ConfigError, _read_schedule_file

    if not cfg.schedule_file:
        return
    check = validate_schedule(_read_schedule_file(cfg.schedule_file))
    if check.problems:
        raise ConfigError("schedule_file", f"{cfg.schedule_file}: {check.problems[0]} (`ppbench validate` lists "
                          f"all {len(check.problems)} problems)")
    if cfg.resolved_transport not in check.runs_under:
        raise ConfigError("schedule_file", f"{cfg.schedule_file} deadlocks with the {cfg.resolved_transport} "
                          f"transport; allowed: {', '.join(check.runs_under) or 'none (it deadlocks under both)'}")
