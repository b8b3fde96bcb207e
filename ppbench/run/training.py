"""What a pipeline rank and the single-process reference share: data slicing and optimizers."""

from __future__ import annotations

import numpy as np
import torch
from mpi4py import MPI

from ppbench.config import RunConfig

__all__ = ["make_optimizer", "replica_microbatches", "average_gradients", "global_loss"]


def make_optimizer(cfg: RunConfig, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9)
    return torch.optim.Adam(params, lr=cfg.lr)


def replica_microbatches(cfg: RunConfig, tensor: torch.Tensor, replica: int) -> list[torch.Tensor]:
    """Rows of ``tensor`` (the global batch) for ``replica``, cut into cfg.microbatches equal pieces."""
    per_replica = cfg.batch // cfg.dp
    mine = tensor[replica * per_replica:(replica + 1) * per_replica]
    return list(mine.split(cfg.microbatch_size))


def average_gradients(params: list[torch.nn.Parameter], data: MPI.Comm, dp: int, staging: bool) -> int:
    """Mean of each gradient over the data-parallel replicas, in one flat Allreduce; returns its bytes.

    ``staging``: GPU gradients go through host memory (MPI not CUDA-aware).
    """
    for p in params:               # a parameter no microbatch reached (gradients were set to None)
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    grads = [p.grad for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    wire = flat.cpu() if staging else flat
    data.Allreduce(MPI.IN_PLACE, wire, op=MPI.SUM)
    flat.copy_(wire)
    flat /= dp
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()
    return flat.numel() * flat.element_size()


def global_loss(local: float, data: MPI.Comm, pipe: MPI.Comm, dp: int, root: int) -> float:
    """The last stage's loss averaged over replicas, then shared with every stage from ``root``,
    the pipeline rank that holds the last stage (p - 1 when looped, 0 with the V placement)."""
    buf = np.array([local], dtype=np.float64)   # a host scalar: no device staging needed
    data.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
    pipe.Bcast(buf, root=root)
    return float(buf[0]) / dp
