"""A user's own model: ``--model package.module:factory``.

The factory takes no arguments and returns an object (or a dict) with:

- ``layers``: the model as a list of modules, or an ``nn.Sequential`` (its children), applied
  one after the other; ppbench cuts it into stages between layers;
- ``loss(output, target)``: the mean loss of a batch (a scalar tensor);
- ``batch(size, generator)``: ``(inputs, targets)`` of ``size`` samples drawn with ``generator``
  (a seeded ``torch.Generator``), first dimension the sample.

Every tensor passed between two layers must have one shape (for a given microbatch size) and be
floating point: the executor posts its receives with that shape and the run's dtype.

Each rank builds only its own layers when it can: ppbench calls the factory on the meta device
(no memory), then materialises a layer, seeds the generator with (seed, layer index) and calls
``reset_parameters()`` on each of its modules. That needs every module that holds parameters
to have ``reset_parameters`` and no module to hold buffers; otherwise every process calls the
factory on the CPU (seeded once) and keeps its own layers, and ``memory`` says so.
"""

from __future__ import annotations

import copy
import functools
import importlib
import os
import sys
from dataclasses import dataclass

__all__ = ["UserModel", "UserModelError", "load_user_model", "build_user_layers"]


class UserModelError(ValueError):
    """The factory cannot be used; the message says why."""


@dataclass(frozen=True)
class UserModel:
    """What ppbench knows of a user's model before building it (found on the meta device)."""

    spec: str
    num_layers: int
    parameters: tuple[int, ...]
    per_layer: bool                   # each layer can be built alone (see the module's text)

    family = "user"

    def layer_parameters(self) -> list[int]:
        return list(self.parameters)

    def parts(self):
        """(layers on the meta device, loss, batch): the loss and batch makers, without building weights."""
        return _factory_parts(self.spec, device="meta")

    def activation_elements(self, batch: int) -> int:
        shape = self.activation_shape(batch)
        return _numel(shape)

    def saved_elements(self, batch: int, layers: int) -> int:
        """An upper estimate: ``layers`` of the largest layer's activations saved for backward."""
        return layers * max(_probe(self.spec, batch)[1])

    def activation_shape(self, batch: int) -> tuple[int, ...]:
        return _probe(self.spec, batch)[0]


def load_user_model(spec: str) -> UserModel:
    """Import and check ``package.module:factory`` (one-line UserModelError when it cannot be used)."""
    return _load(spec)


@functools.lru_cache(maxsize=8)
def _load(spec: str) -> UserModel:
    layers, _, _ = _factory_parts(spec, device="meta")
    counts = tuple(sum(p.numel() for p in layer.parameters()) for layer in layers)
    per_layer = all(_resettable(layer) for layer in layers)
    model = UserModel(spec, len(layers), counts, per_layer)
    _probe(spec, 2)                     # shapes must chain; checked before anything runs
    return model


def _holds_parameters(module) -> bool:
    return next(module.parameters(recurse=False), None) is not None


def _resettable(layer) -> bool:
    if next(layer.buffers(), None) is not None:
        return False
    return all(hasattr(module, "reset_parameters") for module in layer.modules() if _holds_parameters(module))


@functools.lru_cache(maxsize=16)
def _factory_parts(spec: str, device: str = "cpu"):
    """(layers, loss, batch) from the factory, built on ``device``."""
    import torch
    from torch import nn

    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise UserModelError(f"{spec!r} is not package.module:factory")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())       # the console script does not put the working directory there
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserModelError(f"cannot import {module_name!r} for --model {spec}: {exc}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise UserModelError(f"{module_name} has no callable {attr!r} (--model {spec})")
    try:
        with torch.device(device):
            made = factory()
    except Exception as exc:
        raise UserModelError(f"--model {spec}: the factory failed: {type(exc).__name__}: {exc}") from None
    get = made.get if isinstance(made, dict) else lambda k: getattr(made, k, None)
    layers, loss, batch = get("layers"), get("loss"), get("batch")
    if isinstance(layers, nn.Sequential):
        layers = list(layers.children())
    if not isinstance(layers, (list, tuple)) or not layers or not all(isinstance(x, nn.Module) for x in layers):
        raise UserModelError(f"--model {spec}: the factory's 'layers' must be a non-empty list of modules or an "
                             "nn.Sequential")
    if not callable(loss) or not callable(batch):
        raise UserModelError(f"--model {spec}: the factory must also return callables 'loss(output, target)' and "
                             "'batch(size, generator)'")
    return list(layers), loss, batch


@functools.lru_cache(maxsize=16)
def _probe(spec: str, batch: int) -> tuple[tuple[int, ...], list[int]]:
    """(shape passed between layers, elements each layer saves for backward) for ``batch`` samples,
    found by running the layers on meta tensors."""
    import torch

    layers, _, make = _factory_parts(spec, device="meta")
    try:
        x, _ = make(batch, torch.Generator().manual_seed(0))
    except Exception as exc:
        raise UserModelError(f"--model {spec}: batch({batch}, generator) failed: {type(exc).__name__}: {exc}") from None
    x = x.to("meta")
    shapes, saved = [], []
    for i, layer in enumerate(layers):
        if i > 0:
            x.requires_grad_(True)
        try:
            x, nbytes = _saved_while(layer, x)
        except Exception as exc:
            raise UserModelError(f"--model {spec}: layer {i} ({type(layer).__name__}) failed on the output of the "
                                 f"layer before: {type(exc).__name__}: {exc}") from None
        shapes.append(tuple(x.shape))
        saved.append(nbytes // max(x.element_size(), 1))
        if i < len(layers) - 1 and not x.is_floating_point():
            raise UserModelError(f"--model {spec}: layer {i} outputs {x.dtype}; tensors passed between layers must "
                                 "be floating point (they carry gradients back)")
    inner = set(shapes[:-1])
    if len(inner) > 1:
        raise UserModelError(f"--model {spec}: layers pass tensors of different shapes {sorted(inner)} for a batch "
                             f"of {batch}; ppbench needs one shape between every two layers")
    return (shapes[0] if len(shapes) > 1 else shapes[-1]), saved


def _saved_while(layer, x):
    """(layer(x), bytes autograd saves for backward meanwhile, parameters excluded; an upper
    estimate: a tensor saved twice counts twice)."""
    import torch

    params = {id(p) for p in layer.parameters()}
    saved = [0]

    def pack(tensor):
        if id(tensor) not in params:
            saved[0] += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = layer(x)
    return out, saved[0]


def build_user_layers(model: UserModel, seed: int, dtype, only) -> list:
    """Layers ``only`` of the user's model, equal in every process for the same seed."""
    import torch

    if not model.per_layer:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            layers, _, _ = _factory_parts.__wrapped__(model.spec)     # a fresh build, not the cached one
        return [layers[i].to(dtype) for i in only]
    meta, _, _ = _factory_parts(model.spec, device="meta")
    built = []
    with torch.random.fork_rng(devices=[]):
        for i in only:
            layer = copy.deepcopy(meta[i]).to_empty(device="cpu")
            torch.manual_seed(seed * 1_000_003 + i)
            for module in layer.modules():
                if _holds_parameters(module):
                    module.reset_parameters()
            built.append(layer.to(dtype))
    return built


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
