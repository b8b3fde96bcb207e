"""The action vocabulary: one small immutable value per thing a rank does in a step."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Action", "COMPUTE_OPS", "COMM_OPS", "RECV_OPS", "SEND_OPS", "parse_action"]

#: F: forward; B: backward (input gradients, plus weight gradients unless a W follows);
#: W: weight gradients only (zero-bubble schedules).
COMPUTE_OPS = ("F", "B", "W")
#: SEND_F/RECV_F move activations downstream; SEND_B/RECV_B move gradients upstream.
SEND_OPS = ("SEND_F", "SEND_B")
RECV_OPS = ("RECV_F", "RECV_B")
COMM_OPS = SEND_OPS + RECV_OPS

_PATTERN = re.compile(r"^(SEND_F|SEND_B|RECV_F|RECV_B|F|B|W)(\d+)(?:c(\d+))?$")


@dataclass(frozen=True, slots=True)
class Action:
    """One action of one rank: ``op`` on microbatch ``mb`` of model chunk ``chunk``.

    The string form round-trips: ``F3`` is the forward of microbatch 3 on chunk 0,
    ``SEND_B2c1`` sends the input gradient of microbatch 2 of chunk 1 upstream.
    """

    op: str
    mb: int
    chunk: int = 0

    def __post_init__(self) -> None:
        if self.op not in COMPUTE_OPS + COMM_OPS:
            raise ValueError(f"unknown action op {self.op!r}; allowed: {', '.join(COMPUTE_OPS + COMM_OPS)}")
        if self.mb < 0 or self.chunk < 0:
            raise ValueError(f"microbatch and chunk must be >= 0, got mb={self.mb} chunk={self.chunk}")

    @property
    def is_compute(self) -> bool:
        return self.op in COMPUTE_OPS

    @property
    def is_send(self) -> bool:
        return self.op in SEND_OPS

    @property
    def is_recv(self) -> bool:
        return self.op in RECV_OPS

    @property
    def direction(self) -> str:
        """'F' for activations travelling downstream, 'B' for gradients travelling upstream."""
        return self.op[-1] if self.op in COMM_OPS else self.op

    def __str__(self) -> str:
        return f"{self.op}{self.mb}" + (f"c{self.chunk}" if self.chunk else "")

    def describe(self) -> str:
        """Human form used in error messages: 'B (backward) of microbatch 3, chunk 0'."""
        names = {
            "F": "forward", "B": "backward", "W": "weight-gradient",
            "SEND_F": "send activation", "RECV_F": "receive activation",
            "SEND_B": "send gradient", "RECV_B": "receive gradient",
        }
        return f"{self.op} ({names[self.op]}) of microbatch {self.mb}, chunk {self.chunk}"

    def to_dict(self) -> dict:
        return {"op": self.op, "mb": self.mb, "chunk": self.chunk}


def parse_action(text: str) -> Action:
    """Inverse of ``str(action)``."""
    match = _PATTERN.match(text.strip())
    if not match:
        raise ValueError(f"cannot parse action {text!r}; expected e.g. 'F3', 'B0c1', 'SEND_F2'")
    op, mb, chunk = match.groups()
    return Action(op, int(mb), int(chunk or 0))

