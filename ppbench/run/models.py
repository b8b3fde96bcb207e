"""The two model families, as flat layer lists a partitioner can slice: an MLP stack and a
small GPT-style transformer (after nanoGPT's model.py; input and output embeddings untied so
no weight lives on two stages)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ppbench.model_configs import PRESETS, GPTConfig, MLPConfig, model_config
from ppbench.user_models import UserModel, build_user_layers

__all__ = ["MLPConfig", "GPTConfig", "PRESETS", "model_config", "build_layers", "make_batch", "loss_fn",
           "activation_shape"]


class MLPLayer(nn.Module):
    def __init__(self, width: int, activation: bool):
        super().__init__()
        self.linear = nn.Linear(width, width)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, W) -> (B, W)
        y = self.linear(x)
        return torch.tanh(y) if self.activation else y


class Embedding(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:  # (B, T) int64 -> (B, T, C)
        pos = torch.arange(idx.shape[1], device=idx.device)
        return self.wte(idx) + self.wpe(pos)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.query = nn.Linear(cfg.n_embd, cfg.n_embd)
        # No key bias: it adds the same q.b to every logit of a softmax row, so its gradient is
        # exactly zero and only rounding noise would reach the optimizer (Adam amplifies noise).
        self.key = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)
        self.value = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.query(x), self.key(x), self.value(x)                                      # (B, T, C)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(k.shape[-1])                                  # (B, nh, T, T)
        mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)                                            # (B, T, C)
        return self.proj(y)


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd)
        self.mlp = nn.Sequential(nn.Linear(cfg.n_embd, 4 * cfg.n_embd), nn.GELU(),
                                 nn.Linear(4 * cfg.n_embd, cfg.n_embd))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C) -> (B, T, C)
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Head(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C) -> (B, T, vocab)
        return self.lm_head(self.ln_f(x))


Model = MLPConfig | GPTConfig | UserModel


def build_layers(cfg: Model, seed: int, dtype: torch.dtype,
                 only: list[int] | range | None = None) -> list[nn.Module]:
    """The model as a list of layers, identical in every process for the same seed: layer i is
    initialised from (seed, i) alone, so a rank can build just its own layers (``only``: these
    indices, in order) and they equal the same layers of the whole model.

    The global RNG state is left as it was.
    """
    indices = range(cfg.num_layers) if only is None else only
    if cfg.family == "user":
        return build_user_layers(cfg, seed, dtype, indices)
    layers = []
    with torch.random.fork_rng(devices=[]):
        for i in indices:
            torch.manual_seed(seed * 1_000_003 + i)
            layers.append(_layer(cfg, i).to(dtype))
    return layers


def _layer(cfg: MLPConfig | GPTConfig, i: int) -> nn.Module:
    if isinstance(cfg, MLPConfig):
        return MLPLayer(cfg.width, activation=i < cfg.n_layers - 1)
    if i == 0:
        return Embedding(cfg)
    return Block(cfg) if i <= cfg.n_layer else Head(cfg)


def make_batch(cfg: Model, batch: int, seed: int, step: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The global batch of training step ``step``: (inputs, targets), same on every process."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step + 1)
    if isinstance(cfg, UserModel):
        x, y = cfg.parts()[2](batch, gen)
        return tuple(t.to(dtype) if t.is_floating_point() else t for t in (x, y))
    if isinstance(cfg, MLPConfig):
        x = torch.randn(batch, cfg.width, generator=gen, dtype=torch.float64).to(dtype)  # (B, W)
        y = torch.randn(batch, cfg.width, generator=gen, dtype=torch.float64).to(dtype)  # (B, W)
        return x, y
    tokens = torch.randint(cfg.vocab_size, (batch, cfg.block_size + 1), generator=gen)  # (B, T+1)
    return tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()


def loss_fn(cfg: Model, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean loss over every sample (and token) of ``output``."""
    if isinstance(cfg, UserModel):
        return cfg.parts()[1](output, target)
    if isinstance(cfg, MLPConfig):
        return F.mse_loss(output, target)
    return F.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1))


def activation_shape(cfg: Model, batch: int) -> tuple[int, ...]:
    """Shape of every tensor passed between two stages (all layers keep it)."""
    if isinstance(cfg, UserModel):
        return cfg.activation_shape(batch)
    if isinstance(cfg, MLPConfig):
        return (batch, cfg.width)
    return (batch, cfg.block_size, cfg.n_embd)
