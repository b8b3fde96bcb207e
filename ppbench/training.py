"""What a pipeline rank and the single-process reference share: data slicing and optimizers."""

from __future__ import annotations

import torch

from .config import RunConfig

__all__ = ["make_optimizer", "replica_microbatches"]


def make_optimizer(cfg: RunConfig, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9)
    return torch.optim.Adam(params, lr=cfg.lr)


def replica_microbatches(cfg: RunConfig, tensor: torch.Tensor, replica: int) -> list[torch.Tensor]:
    """Rows of ``tensor`` (the global batch) for ``replica``, cut into cfg.microbatches equal pieces."""
    per_replica = cfg.batch // cfg.dp
    mine = tensor[replica * per_replica:(replica + 1) * per_replica]
    return list(mine.split(cfg.microbatch_size))
