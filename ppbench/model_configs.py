"""Model sizes as plain data (no torch): what the configuration needs to validate a run, so
commands that never build a model (simulate, report, schedule) start without importing torch."""

from __future__ import annotations

from dataclasses import dataclass, replace

__all__ = ["MLPConfig", "GPTConfig", "PRESETS", "DIMENSIONS", "model_config"]


@dataclass(frozen=True)
class MLPConfig:
    n_layers: int = 8    # Linear layers; tanh after every one but the last
    width: int = 16      # features in, hidden and out

    family = "mlp"

    @property
    def num_layers(self) -> int:
        return self.n_layers

    def layer_parameters(self) -> list[int]:
        """Parameters of each layer (weight and bias of a width x width Linear)."""
        return [self.width * self.width + self.width] * self.n_layers

    def activation_elements(self, batch: int) -> int:
        """Elements of the tensor passed between stages for ``batch`` samples."""
        return batch * self.width

    def saved_elements(self, batch: int, layers: int) -> int:
        """Elements autograd keeps for backward over ``layers`` layers (each Linear's input and tanh's output
        are one tensor: about one activation per layer, plus the loss's target)."""
        return batch * self.width * (layers + 1)


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int = 64   # tokens
    block_size: int = 16   # context length T
    n_layer: int = 2       # transformer blocks
    n_head: int = 2        # attention heads; n_embd % n_head == 0
    n_embd: int = 32       # channels C

    family = "gpt"

    @property
    def num_layers(self) -> int:
        return self.n_layer + 2  # embedding, blocks, head

    def layer_parameters(self) -> list[int]:
        """Parameters of each layer: embedding, blocks (LayerNorms, q/k/v/proj with no key bias, 4x MLP), head."""
        c = self.n_embd
        block = 12 * c * c + 12 * c
        return [(self.vocab_size + self.block_size) * c, *[block] * self.n_layer, 2 * c + c * self.vocab_size]

    def activation_elements(self, batch: int) -> int:
        return batch * self.block_size * self.n_embd

    def saved_elements(self, batch: int, layers: int) -> int:
        """An upper estimate of what autograd keeps over ``layers`` layers: per block about 20 activations of
        (B, T, C) and 3 of the attention's (B, nh, T, T); the head's logits and their softmax (B, T, vocab)."""
        bt = batch * self.block_size
        block = 20 * bt * self.n_embd + 3 * batch * self.n_head * self.block_size ** 2
        return layers * block + 3 * bt * self.vocab_size


#: (family, size) -> configuration. "tiny" keeps the test suite fast on 2 cores.
PRESETS: dict[str, dict[str, MLPConfig | GPTConfig]] = {
    "mlp": {
        "tiny": MLPConfig(n_layers=8, width=16),
        "small": MLPConfig(n_layers=8, width=256),
        "medium": MLPConfig(n_layers=16, width=1024),
    },
    "gpt": {
        "tiny": GPTConfig(vocab_size=64, block_size=16, n_layer=4, n_head=2, n_embd=32),
        "small": GPTConfig(vocab_size=256, block_size=64, n_layer=6, n_head=4, n_embd=128),
        "medium": GPTConfig(vocab_size=1024, block_size=128, n_layer=8, n_head=8, n_embd=256),
    },
}


#: command-line dimension -> {family: field of that family's configuration}
DIMENSIONS: dict[str, dict[str, str]] = {
    "layers": {"mlp": "n_layers", "gpt": "n_layer"},
    "width": {"mlp": "width"},
    "heads": {"gpt": "n_head"},
    "embd": {"gpt": "n_embd"},
    "context": {"gpt": "block_size"},
    "vocab": {"gpt": "vocab_size"},
}


def model_config(family: str, size: str, dimensions: dict[str, int] | None = None) -> MLPConfig | GPTConfig:
    """The preset ``family``/``size`` with ``dimensions`` (names of :data:`DIMENSIONS`) in place of its own."""
    preset = PRESETS[family][size]
    return replace(preset, **{DIMENSIONS[k][family]: v for k, v in (dimensions or {}).items()})
