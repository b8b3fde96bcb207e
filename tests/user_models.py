"""Factories for the tests of ``--model package.module:factory`` (importable as user_models from tests/)."""

import torch
from torch import nn


def _batch(n, gen):
    return torch.randn(n, 12, generator=gen), torch.randint(3, (n,), generator=gen)


def classifier():
    """Five layers passing (B, 24): Linear/ReLU, Linear/Tanh, LayerNorm, Linear/Tanh, Linear to 3 classes."""
    return {"layers": [nn.Sequential(nn.Linear(12, 24), nn.ReLU()), nn.Sequential(nn.Linear(24, 24), nn.Tanh()),
                       nn.LayerNorm(24), nn.Sequential(nn.Linear(24, 24), nn.Tanh()), nn.Linear(24, 3)],
            "loss": nn.functional.cross_entropy, "batch": _batch}


class Scale(nn.Module):
    """A layer with a buffer: it cannot be built alone from the meta device."""

    def __init__(self):
        super().__init__()
        self.register_buffer("factor", torch.full((24,), 0.5))

    def forward(self, x):
        return x * self.factor


def with_buffer():
    return {"layers": nn.Sequential(nn.Linear(12, 24), Scale(), nn.Linear(24, 24), nn.Linear(24, 3)),
            "loss": nn.functional.cross_entropy, "batch": _batch}


def shapes_differ():
    return {"layers": [nn.Linear(12, 8), nn.Linear(8, 6), nn.Linear(6, 3)], "loss": nn.functional.cross_entropy,
            "batch": _batch}


def no_loss():
    return {"layers": [nn.Linear(12, 3)], "batch": _batch}


def fails():
    raise RuntimeError("out of coffee")
