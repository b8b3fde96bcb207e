"""What every pipeline rank offers the check and the runner, whoever executes the schedule
(ppbench's executor or torch.distributed.pipelining), and the one rule for which layers it holds."""

from __future__ import annotations

from ppbench.config import RunConfig
from ppbench.plan.placement import Placement
from ppbench.run import models

__all__ = ["RankBase", "rank_layers", "build_own_layers"]


def rank_layers(split: list[range], placement: Placement, rank: int) -> dict[int, range]:
    """Stage -> layer indices for the stages ``placement`` gives ``rank`` (``split[s]``: layers of stage s)."""
    return {s: split[s] for s in placement.stages_of(rank)}


def build_own_layers(cfg: RunConfig, placement: Placement, rank: int):
    """(every stage's layer range, this rank's stage -> layer range, its layer indices, its layers):
    only this rank's layers are built."""
    split = cfg.stage_split(placement.num_stages)
    mine = rank_layers(split, placement, rank)
    layer_ids = [i for s in mine for i in mine[s]]
    return split, mine, layer_ids, models.build_layers(cfg.model_config(), cfg.seed, cfg.torch_dtype, only=layer_ids)


class RankBase:
    """Subclasses set ``tracer``, ``optimizer`` (None without parameters), ``layer_ids`` and ``layers``,
    and define ``prepare(step)``, which sets ``_prepared`` to (step, inputs, targets)."""

    _prepared: tuple = (None, None, None)

    def _data(self, step: int) -> tuple:
        """(inputs, targets) of ``step``, as ``prepare`` made them (it runs here if the runner did not call it)."""
        if self._prepared[0] != step:
            self.prepare(step)
        return self._prepared[1:]

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
