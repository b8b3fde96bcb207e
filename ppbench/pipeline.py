"""One rank of a pipeline x data-parallel job: its stage, its executor, its optimizer."""

from __future__ import annotations

import numpy as np
import torch
from mpi4py import MPI
from torch import nn

from . import models
from .config import RunConfig
from .executor import Executor
from .grid import Grid
from .partition import partition_layers
from .schedules import add_communication, compute_order
from .training import make_optimizer, replica_microbatches
from .transport import Transport

__all__ = ["PipelineRank"]


class PipelineRank:
    """Builds this rank's share of the model and trains it with the configured schedule."""

    def __init__(self, cfg: RunConfig, grid: Grid):
        self.cfg, self.grid = cfg, grid
        self.model_cfg = cfg.model_config()
        layers = models.build_layers(self.model_cfg, cfg.seed, cfg.torch_dtype)
        self.split = partition_layers(layers, cfg.pp)
        self.layer_ids = list(self.split[grid.stage])
        self.layers = [layers[i] for i in self.layer_ids]       # the rest are dropped
        self.module = nn.Sequential(*self.layers)
        self.actions = add_communication(compute_order(cfg.schedule, cfg.pp, cfg.microbatches, grid.stage),
                                         cfg.pp, grid.stage)
        self.transport = Transport(grid.pipe)
        self.executor = Executor(
            rank=grid.stage, p=cfg.pp, modules={0: self.module}, actions=self.actions, transport=self.transport,
            mode=cfg.resolved_transport, loss=lambda out, tgt: models.loss_fn(self.model_cfg, out, tgt),
            activation_shape=models.activation_shape(self.model_cfg, cfg.microbatch_size),
            dtype=cfg.torch_dtype, num_microbatches=cfg.microbatches, fault=self._my_fault(),
            where=f"rank {grid.world.Get_rank()} (replica {grid.replica})")
        self.optimizer = make_optimizer(cfg, list(self.module.parameters()))

    def _my_fault(self) -> str | None:
        target = self.cfg.fault_target
        return target[1] if target and target[0] == self.grid.world.Get_rank() else None

    def forward_backward(self, step: int) -> float:
        """Gradients of the mean loss over the global batch of ``step``; returns that loss on every rank."""
        x, y = models.make_batch(self.model_cfg, self.cfg.batch, self.cfg.seed, step, self.cfg.torch_dtype)
        inputs = replica_microbatches(self.cfg, x, self.grid.replica)
        targets = replica_microbatches(self.cfg, y, self.grid.replica)
        self.optimizer.zero_grad(set_to_none=False)
        loss = self.executor.run(inputs, targets)
        self._average_gradients()
        return self._global_loss(loss)

    def optimizer_step(self) -> None:
        self.optimizer.step()

    def named_parameters(self):
        """((global layer index, parameter name), parameter) for this rank's layers."""
        for index, layer in zip(self.layer_ids, self.layers):
            for name, param in layer.named_parameters():
                yield (index, name), param

    def _average_gradients(self) -> None:
        """Mean of each gradient over the data-parallel replicas (one flat Allreduce)."""
        if self.cfg.dp == 1:
            return
        grads = [p.grad for p in self.module.parameters()]
        flat = torch.cat([g.reshape(-1) for g in grads])
        self.grid.data.Allreduce(MPI.IN_PLACE, flat, op=MPI.SUM)
        flat /= self.cfg.dp
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def _global_loss(self, local: torch.Tensor) -> float:
        """Last stage's loss averaged over replicas, then shared with every stage."""
        buf = np.array([float(local)], dtype=np.float64)
        self.grid.data.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        self.grid.pipe.Bcast(buf, root=self.cfg.pp - 1)
        return float(buf[0]) / self.cfg.dp
