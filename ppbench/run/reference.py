"""Single-process training of the same model on the whole global batch: the ground truth."""

from __future__ import annotations

import torch
from torch import nn

from ppbench.config import RunConfig
from ppbench.run import models
from ppbench.run.training import make_optimizer

__all__ = ["Reference"]


class Reference:
    def __init__(self, cfg: RunConfig, device: torch.device = torch.device("cpu")):
        self.cfg, self.device = cfg, device
        self.model_cfg = cfg.model_config()
        self.layers = [layer.to(device) for layer in models.build_layers(self.model_cfg, cfg.seed, cfg.torch_dtype)]
        self.model = nn.Sequential(*self.layers)
        self.optimizer = make_optimizer(cfg, list(self.model.parameters()))

    def forward_backward(self, step: int) -> float:
        x, y = models.make_batch(self.model_cfg, self.cfg.batch, self.cfg.seed, step, self.cfg.torch_dtype)
        x, y = x.to(self.device), y.to(self.device)
        self.optimizer.zero_grad(set_to_none=False)
        loss = models.loss_fn(self.model_cfg, self.model(x), y)
        loss.backward()
        return loss.item()

    def optimizer_step(self) -> None:
        self.optimizer.step()

    def parameter(self, layer: int, name: str) -> nn.Parameter:
        return self.layers[layer].get_parameter(name)
