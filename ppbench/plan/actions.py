"""The action vocabulary: the op kinds (one enum for every module) and one small immutable value
per thing a rank does in a step, with PyTorch pipelining's text form (``0F3``, ``1I2``, ``2SEND_B0``).

Op kinds, as in ``torch.distributed.pipelining`` (``_ComputationType``):

====== =====================================================================================
F      forward of one microbatch on one stage
B      full backward (input and weight gradients together)
I      input gradient only: the first half of a split backward (what ppbench v1 called B in
       its zero-bubble schedule)
W      weight gradient only: the second half (I + W = B)
SEND_F / RECV_F   the stage's output activation to the next stage / its input from the previous
SEND_B / RECV_B   the stage's input gradient to the previous stage / its output gradient from the next
====== =====================================================================================
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

__all__ = ["Op", "Action", "parse_action", "split_stages", "COMPUTE_OPS", "SEND_OPS", "RECV_OPS", "COMM_OPS",
           "EVENT_OPS"]


class Op(str, Enum):
    """What an action does. Compares equal to its text (``Op.F == "F"``)."""

    F = "F"
    I = "I"  # noqa: E741 - PyTorch's name for the input-gradient half of a backward
    W = "W"
    B = "B"
    SEND_F = "SEND_F"
    RECV_F = "RECV_F"
    SEND_B = "SEND_B"
    RECV_B = "RECV_B"

    def __str__(self) -> str:
        return self.value

    @property
    def is_compute(self) -> bool:
        return self in _COMPUTE

    @property
    def is_send(self) -> bool:
        return self in (Op.SEND_F, Op.SEND_B)

    @property
    def is_recv(self) -> bool:
        return self in (Op.RECV_F, Op.RECV_B)

    @property
    def is_backward(self) -> bool:
        """I or B: the computations that consume the output gradient and produce the input gradient."""
        return self in (Op.I, Op.B)

    @property
    def direction(self) -> str:
        """'F' for activations travelling downstream (F, SEND_F, RECV_F), 'B' for gradients
        travelling upstream (I, B, SEND_B, RECV_B); W moves nothing and answers 'W'."""
        if self in (Op.F, Op.SEND_F, Op.RECV_F):
            return "F"
        return "W" if self is Op.W else "B"

    @property
    def code(self) -> int:
        """Small integer for arrays (F 0, I 1, W 2, B 3, then the transfers)."""
        return _CODE[self]

    @property
    def meaning(self) -> str:
        return _MEANING[self]


_COMPUTE = frozenset((Op.F, Op.I, Op.W, Op.B))
_CODE = {op: i for i, op in enumerate(Op)}
_MEANING = {Op.F: "forward", Op.I: "input gradient", Op.W: "weight gradient", Op.B: "full backward",
            Op.SEND_F: "send activation", Op.RECV_F: "receive activation", Op.SEND_B: "send gradient",
            Op.RECV_B: "receive gradient"}

#: the compute ops in code order: ``COMPUTE_OPS[code]`` is the op of an array entry
COMPUTE_OPS: tuple[Op, ...] = (Op.F, Op.I, Op.W, Op.B)
SEND_OPS: tuple[Op, ...] = (Op.SEND_F, Op.SEND_B)
RECV_OPS: tuple[Op, ...] = (Op.RECV_F, Op.RECV_B)
COMM_OPS: tuple[Op, ...] = SEND_OPS + RECV_OPS
#: every kind of event a rank records: the schedule's actions, then what the step adds around them
EVENT_OPS: tuple[str, ...] = tuple(op.value for op in Op) + ("WAIT", "ALLREDUCE", "OPTIMIZER")

_OP_NAMES = "|".join(sorted((op.value for op in Op), key=len, reverse=True))
_TORCH_FORM = re.compile(rf"^(\d+)({_OP_NAMES})(\d+)$")
_TORCH_FSDP = re.compile(r"^(\d+)(UNSHARD|RESHARD|REDUCE_GRAD)(\d*)$")


@dataclass(frozen=True, slots=True, order=True)
class Action:
    """``op`` on microbatch ``mb`` of virtual stage ``stage`` (the global stage index; which rank
    holds it is the placement's business). ``str(action)`` is PyTorch's text: ``0F3``, ``2SEND_B0``."""

    stage: int
    op: Op
    mb: int

    def __post_init__(self) -> None:
        if not isinstance(self.op, Op):
            try:
                object.__setattr__(self, "op", Op(self.op))
            except ValueError:
                raise ValueError(f"unknown action op {self.op!r}; allowed: {', '.join(o.value for o in Op)}") from None
        if self.stage < 0 or self.mb < 0:
            raise ValueError(f"stage and microbatch must be >= 0, got stage={self.stage} mb={self.mb}")

    @property
    def is_compute(self) -> bool:
        return self.op.is_compute

    @property
    def is_send(self) -> bool:
        return self.op.is_send

    @property
    def is_recv(self) -> bool:
        return self.op.is_recv

    @property
    def direction(self) -> str:
        return self.op.direction

    def __str__(self) -> str:
        return f"{self.stage}{self.op.value}{self.mb}"

    def describe(self) -> str:
        """Human form for error messages: '0F3 [forward of microbatch 3 on stage 0]'."""
        return f"{self} [{self.op.meaning} of microbatch {self.mb} on stage {self.stage}]"

    def to_dict(self, chunk: int | None = None) -> dict:
        """JSON form: ``op``, ``mb``, ``stage`` and, given the placement's answer, the rank-local ``chunk``."""
        out: dict = {"op": self.op.value, "mb": self.mb, "stage": self.stage}
        if chunk is not None:
            out["chunk"] = chunk
        return out


def parse_action(text: str) -> Action:
    """Inverse of ``str(action)``: PyTorch's action text ``<stage><op><microbatch>``."""
    cleaned = text.strip()
    match = _TORCH_FORM.match(cleaned)
    if match:
        stage, op, mb = match.groups()
        return Action(int(stage), Op(op), int(mb))
    if _TORCH_FSDP.match(cleaned):
        raise ValueError(f"action {text!r} is one of PyTorch's FSDP actions (UNSHARD, RESHARD, REDUCE_GRAD), which "
                         "ppbench does not run; drop it from the schedule")
    raise ValueError(f"cannot parse action {text!r}; expected <stage><op><microbatch> with op one of "
                     f"{', '.join(o.value for o in Op)}, e.g. '0F3', '1I2', '2SEND_B0'")


def split_stages(actions: list[Action]) -> set[int]:
    """Stages whose backward ``actions`` split into I and W (at least one I)."""
    return {a.stage for a in actions if a.op is Op.I}
