"""What each action costs in the simulators: the same numbers for every schedule."""

from __future__ import annotations

from dataclasses import dataclass

from ppbench.plan.actions import Op

__all__ = ["Costs"]


@dataclass(frozen=True)
class Costs:
    """Durations in any time unit (seconds for the synthetic workload and calibrated runs).

    A split backward costs what the full one does: I = ``bwd - wgrad``, W = ``wgrad``. So one
    Costs compares 1F1B (B = bwd) with a zero-bubble schedule (I + W = bwd) fairly.
    """

    fwd: float = 1.0       # one F on one stage
    bwd: float = 2.0       # one full backward B on one stage
    wgrad: float = 1.0     # the W part of bwd (split-backward schedules); I gets the rest
    comm: float = 0.0      # one message, from the later of its two posts to completion
    overhead: float = 0.0  # host time a rank spends before each compute action (posting, bookkeeping)

    def __post_init__(self) -> None:
        values = (self.fwd, self.bwd, self.wgrad, self.comm, self.overhead)
        if not all(v >= 0 for v in values) or self.wgrad > self.bwd:
            raise ValueError(f"costs must be >= 0 with wgrad <= bwd, got {self}")

    def compute(self, op: Op) -> float:
        """Duration of one compute action."""
        return (self.fwd, self.bwd - self.wgrad, self.wgrad, self.bwd)[op.code]

    def by_code(self) -> list[float]:
        """Durations indexed by :attr:`Op.code` (F, I, W, B), for the array simulator."""
        return [self.compute(op) for op in (Op.F, Op.I, Op.W, Op.B)]
