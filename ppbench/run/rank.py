"""What every pipeline rank offers the check and the runner, whoever executes the schedule
(ppbench's executor or torch.distributed.pipelining), and the one rule for which layers it holds."""

from __future__ import annotations

from ppbench.plan.placement import Placement

__all__ = ["RankBase", "rank_layers"]


def rank_layers(split: list[range], placement: Placement, rank: int) -> dict[int, range]:
    """Stage -> layer indices for the stages ``placement`` gives ``rank`` (``split[s]``: layers of stage s)."""
    return {s: split[s] for s in placement.stages_of(rank)}


class RankBase:
    """Subclasses set ``tracer``, ``optimizer`` (None without parameters), ``layer_ids`` and ``layers``."""

    def optimizer_step(self) -> None:
        if self.optimizer is not None:
            start = self.tracer.now()
            self.optimizer.step()
            self.tracer.record("OPTIMIZER", -1, -1, start, self.tracer.now())

    def named_parameters(self):
        """((global layer index, parameter name), parameter) for this rank's layers."""
        for index, layer in zip(self.layer_ids, self.layers):
            for name, param in layer.named_parameters():
                yield (index, name), param
