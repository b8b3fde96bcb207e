"""What the executor must do with a plan, derived here from its documented rules
(ppbench/run/executor.py), independently of its code. Shared by the in-process and MPI tests."""

from ppbench.plan.actions import Action, Op


def executor_sequence(actions: list[Action], mode: str, last_stage: int) -> list[tuple[str, Action | None]]:
    """(kind, action) in execution order, kind one of 'post' (a receive posted), 'send', 'wait all',
    'take' (a receive's data awaited), 'compute'.

    A RECV posts its receive unless already posted; a SEND posts its send; before a compute action,
    non-blocking mode posts the receives the *next* compute action needs and blocking mode waits
    for everything; then the action waits for its own input (if it receives one) and computes.
    The step ends by completing every send."""
    out, posted = [], set()
    compute = [i for i, a in enumerate(actions) if a.is_compute]
    following = dict(zip(compute, compute[1:]))
    for i, a in enumerate(actions):
        if a.is_recv:
            if a not in posted:
                posted.add(a)
                out.append(("post", a))
        elif a.is_send:
            out.append(("send", a))
        else:
            if mode == "nonblocking" and i in following:
                for b in actions[i + 1:following[i]]:
                    if b.is_recv and b not in posted:
                        posted.add(b)
                        out.append(("post", b))
            if mode == "blocking":
                out.append(("wait all", None))
            if a.op is Op.F and a.stage > 0:
                out.append(("take", Action(a.stage, Op.RECV_F, a.mb)))
            if a.op.is_backward and a.stage < last_stage:
                out.append(("take", Action(a.stage, Op.RECV_B, a.mb)))
            out.append(("compute", a))
    return out + [("wait all", None)]


def posted_order(actions: list[Action], mode: str, last_stage: int) -> list[str]:
    """The order in which a rank starts its actions: receives and sends by their post, computations
    by their start (what a measured run's events show when sorted by start time)."""
    return [str(a) for kind, a in executor_sequence(actions, mode, last_stage) if kind in ("post", "send", "compute")]


def chunk_samples(name: str) -> tuple[int, ...]:
    """The stages per rank the tests try for a built-in: 2 and 3 where any v works (looped), else its own."""
    from ppbench.plan.schedules import SCHEDULES

    spec = SCHEDULES[name]
    return (2, 3) if spec.chunked else (spec.default_chunks,)
