"""Who talks to whom: the pass that inserts sends and receives around compute actions, and the
identity (peer rank, MPI tag) of every message, all derived from the placement.

F on stage s receives its input from stage s - 1 and sends its output to s + 1; a backward (I or
B) on stage s receives the output gradient from s + 1 and sends the input gradient to s - 1.
W talks to nobody. A SEND/RECV action carries the stage on *this* rank that sends or receives
(PyTorch's convention: ``2SEND_B0`` is stage 2 sending its input gradient of microbatch 0).
"""

from __future__ import annotations

from ppbench.plan.actions import Action, Op
from ppbench.plan.placement import Placement

__all__ = ["add_communication", "peer_stage", "peer_rank", "message_tag", "message_key", "highest_tag"]


def add_communication(order: list[Action], placement: Placement) -> list[Action]:
    """Insert the receives each compute action needs just before it, and the sends it owes just after."""
    last = placement.num_stages - 1
    out: list[Action] = []
    for action in order:
        s, mb = action.stage, action.mb
        if action.op is Op.F:
            if s > 0:
                out.append(Action(s, Op.RECV_F, mb))
            out.append(action)
            if s < last:
                out.append(Action(s, Op.SEND_F, mb))
        elif action.op.is_backward:
            if s < last:
                out.append(Action(s, Op.RECV_B, mb))
            out.append(action)
            if s > 0:
                out.append(Action(s, Op.SEND_B, mb))
        else:
            out.append(action)
    return out


def peer_stage(action: Action, num_stages: int) -> int:
    """The stage at the other end of a SEND/RECV."""
    downstream = action.op in (Op.SEND_F, Op.RECV_B)
    other = action.stage + 1 if downstream else action.stage - 1
    if not 0 <= other < num_stages:
        raise ValueError(f"{action} has no peer: stage {other} is outside 0..{num_stages - 1}")
    return other


def peer_rank(action: Action, placement: Placement) -> int:
    """The rank at the other end of a SEND/RECV."""
    return placement.rank_of(peer_stage(action, placement.num_stages))


def message_tag(action: Action, num_stages: int, m: int) -> int:
    """MPI tag of a SEND/RECV: unique within a step for each (direction, microbatch, stage
    boundary), and the same on the sending and the receiving end."""
    boundary = action.stage if action.op in (Op.SEND_F, Op.RECV_B) else action.stage - 1
    return (action.mb * num_stages + boundary) * 2 + (action.direction == "B")


def highest_tag(num_stages: int, m: int) -> int:
    """The largest tag :func:`message_tag` gives in a step (to check against MPI's TAG_UB)."""
    return 2 * m * num_stages - 1


def message_key(action: Action, num_stages: int) -> tuple[str, int, int, int]:
    """(direction, microbatch, sending stage, receiving stage): the same on both ends of a message."""
    other = peer_stage(action, num_stages)
    sender, receiver = (action.stage, other) if action.is_send else (other, action.stage)
    return action.direction, action.mb, sender, receiver
