"""A split backward without recomputation: the weight GEMMs of linear layers, deferred to W.

While a split stage runs its forward inside :class:`DeferWeightGrads`, every ``F.linear`` on a
parameter (``nn.Linear`` and anything else that calls it) goes through an autograd function
whose backward computes only the input gradient and leaves ``(input, output gradient)`` in a
:class:`WeightGradStore` under the microbatch being backwarded. I is then an ordinary backward of
the stage (input gradients, and the gradients of parameters outside linear layers, such as a
LayerNorm's or an embedding's); W computes each deferred ``dW = dY^T X`` and ``db = sum dY`` from
the store and adds them to the parameters' gradients. Nothing is walked twice, and between I
and W a microbatch keeps only each linear layer's input and output gradient.

The zero-bubble and DualPipe reference implementations defer the same GEMMs (a weight-gradient
store around their linear layers); PyTorch's pipelining instead captures gradients where weight
paths join the activation path. This module is written for ppbench.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

__all__ = ["WeightGradStore", "DeferWeightGrads"]


class WeightGradStore:
    """Deferred weight-gradient work of one stage, per microbatch key."""

    def __init__(self):
        self.collecting: object | None = None      # the key whose backward (I) runs now
        self._pending: dict[object, list[tuple]] = {}

    def defer(self, weight: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor, grad_y: torch.Tensor) -> None:
        if self.collecting is None:
            raise RuntimeError("a deferred linear layer ran its backward outside a split backward (I)")
        self._pending.setdefault(self.collecting, []).append((weight, bias, x.detach(), grad_y.detach()))

    def compute(self, key: object) -> None:
        """W of microbatch ``key``: every deferred weight (and bias) gradient, added to ``.grad``."""
        with torch.no_grad():
            self._compute(self._pending.pop(key, []))

    @staticmethod
    def _compute(deferred: list[tuple]) -> None:
        for weight, bias, x, grad_y in deferred:
            gy, x2 = grad_y.reshape(-1, grad_y.shape[-1]), x.reshape(-1, x.shape[-1])
            if weight.grad is None:
                weight.grad = gy.t() @ x2
            else:
                weight.grad.addmm_(gy.t(), x2)        # in place: no temporary of the weight's size
            if bias is not None:
                if bias.grad is None:
                    bias.grad = gy.sum(0)
                else:
                    bias.grad += gy.sum(0)

    def pending_bytes(self, key: object) -> int:
        """Bytes held for ``key``'s W: each deferred layer's input and output gradient."""
        return sum(x.numel() * x.element_size() + gy.numel() * gy.element_size()
                   for _, _, x, gy in self._pending.get(key, []))

    def pending(self) -> list:
        """Keys whose W has not run yet."""
        return sorted(self._pending, key=str)


class _DeferredLinear(torch.autograd.Function):
    """``F.linear`` whose backward returns the input gradient only and defers the weight's."""

    @staticmethod
    def forward(ctx, x, weight, bias, store):
        ctx.save_for_backward(x)
        # the parameters themselves (a saved tensor unpacks as another object, whose .grad is not theirs)
        ctx.weight, ctx.bias, ctx.store = weight, bias, store
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_y):
        (x,) = ctx.saved_tensors
        ctx.store.defer(ctx.weight, ctx.bias, x, grad_y)
        grad_x = grad_y @ ctx.weight if ctx.needs_input_grad[0] else None
        return grad_x, None, None, None


class DeferWeightGrads(TorchFunctionMode):
    """Inside this mode, ``F.linear`` with a trainable weight defers its weight gradient to ``store``."""

    def __init__(self, store: WeightGradStore):
        super().__init__()
        self.store = store

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear and torch.is_grad_enabled():
            given = {**dict(zip(("input", "weight", "bias"), args)), **kwargs}
            x, weight, bias = given["input"], given["weight"], given.get("bias")
            if isinstance(weight, torch.nn.Parameter) and weight.requires_grad and \
                    (bias is None or bias.requires_grad):
                return _DeferredLinear.apply(x, weight, bias, self.store)
        return func(*args, **kwargs)
