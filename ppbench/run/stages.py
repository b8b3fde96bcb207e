"""What one virtual stage computes for F and B: real autograd, or a synthetic workload.

The executor decides *when*; a stage decides *what*. Both kinds call ``progress()`` between
pieces of work so non-blocking transfers move while the rank computes (MPICH makes progress
only inside MPI calls).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn

from ppbench.run.weight_grad import DeferWeightGrads, WeightGradStore

#: seconds of computation between two polls of a stage's transfers, at least
POLL_EVERY = 50e-6

__all__ = ["TorchStage", "SyntheticStage", "SavedBytes", "polling_hook_cost"]


class SavedBytes:
    """Bytes of activations autograd saves for backward, per microbatch (saved-tensor hooks).

    Each saved tensor counts its own bytes (a microbatch that is a view into the global batch
    counts the view, not the whole batch's storage); the same memory saved twice (a layer's output
    kept by its activation and by the next layer) counts once. Parameters saved by autograd
    (weights kept for the backward of a matmul) are not activations and are not counted.
    """

    def __init__(self, module: nn.Module):
        self._params = {p.untyped_storage().data_ptr() for p in module.parameters()}
        self._seen: set[tuple[int, int]] = set()
        self.current = 0

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        nbytes = tensor.numel() * tensor.element_size()
        key = (tensor.data_ptr(), nbytes)
        if tensor.untyped_storage().data_ptr() not in self._params and key not in self._seen:
            self._seen.add(key)
            self.current += nbytes
        return tensor

    def measure(self, fn: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, int]:
        """Run ``fn`` and return (its result, bytes it saved for backward)."""
        self._seen.clear()
        self.current = 0
        with torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t):
            out = fn()
        return out, self.current


class TorchStage:
    """A chunk of real torch layers trained with autograd."""

    def __init__(self, module: nn.Module, is_first: bool, is_last: bool,
                 loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], num_microbatches: int,
                 progress: Callable[[], None] | None = None, recompute: bool = False, split: bool = False):
        self.module, self.is_first, self.is_last = module, is_first, is_last
        self.loss, self.m = loss, num_microbatches
        self.recompute = recompute      # F keeps only the stage input; B runs the forward again, then backward
        self.split = split              # backward split into I and W: linear layers' weight GEMMs wait for W
        self.weight_grads = WeightGradStore()
        self.saved_bytes = SavedBytes(module)
        self._saved_by_shape: dict[tuple, int] = {}
        self.progress = progress        # polled between layers, forward and backward

    def _poll_grad(self, grad: torch.Tensor) -> None:
        self.progress()

    def _run(self, x: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        """The layers one by one (the module's own order), polling transfers between them: directly in
        the forward, from a hook on a layer's output in the backward. Polls are at least POLL_EVERY
        seconds of computation apart (tiny layers would otherwise pay more for polling than they
        compute); the backward's hooks go where at least half that much forward time has passed,
        the backward costing about twice the forward."""
        if self.progress is None:
            for layer in self.module:
                x = layer(x)
        else:
            polled = hooked = time.perf_counter()
            self.progress()
            for layer in self.module:
                now = time.perf_counter()
                if now - polled >= POLL_EVERY:
                    self.progress()
                    polled = now
                x = layer(x)
                if x.requires_grad and time.perf_counter() - hooked >= POLL_EVERY / 2:
                    x.register_hook(self._poll_grad)
                    hooked = time.perf_counter()
        return self.loss(x, target) / self.m if self.is_last else x

    def _measured(self, x: torch.Tensor, target: torch.Tensor | None) -> tuple[torch.Tensor, int]:
        """(output, activation bytes saved for backward): counted with saved-tensor hooks on the first
        microbatch of each input shape, then reused (the same layers save the same tensors for the
        same shapes, and the hooks would cost every microbatch their Python calls)."""
        key = (tuple(x.shape), x.dtype, x.requires_grad, None if target is None else tuple(target.shape))
        if key not in self._saved_by_shape:
            y, self._saved_by_shape[key] = self.saved_bytes.measure(lambda: self._run(x, target))
            return y, self._saved_by_shape[key]
        return self._run(x, target), self._saved_by_shape[key]

    def forward(self, x: torch.Tensor, target: torch.Tensor | None):
        """Returns (tensor to send downstream or the scaled loss, context for backward, saved bytes)."""
        if self.recompute:                 # nothing for autograd to keep but the stage input (and the target)
            with torch.no_grad():
                y = self._run(x, target)
            self._synchronize(y)
            kept = x.numel() * x.element_size() + (target.numel() * target.element_size() if self.is_last else 0)
            return y, (x, target), kept
        if not self.is_first:
            x.requires_grad_(True)
        if self.split:
            with DeferWeightGrads(self.weight_grads):
                y, nbytes = self._measured(x, target)
        else:
            y, nbytes = self._measured(x, target)
        self._synchronize(y)
        return y, (x, y), nbytes

    def backward(self, ctx, grad_output: torch.Tensor | None, key: object = None) -> torch.Tensor | None:
        """B: the whole backward (in a split stage, I and then at once W, under ``key``)."""
        if self.split:
            grad_x = self.backward_input(ctx, grad_output, key)
            self.backward_weight(ctx, grad_output, key)
            return grad_x
        if self.recompute:
            x, target = ctx
            if not self.is_first:
                x.requires_grad_(True)
            y = self._run(x, target)             # the forward again, this time keeping what backward needs
        else:
            x, y = ctx
        torch.autograd.backward(y, grad_output)   # grad_output is None on the last stage (y is the loss)
        self._synchronize(y)
        return None if self.is_first else x.grad

    def backward_input(self, ctx, grad_output: torch.Tensor | None, key: object = None) -> torch.Tensor | None:
        """I of a split backward: the whole backward except the linear layers' weight GEMMs, which
        wait in the store under ``key`` for W (the stage's forward deferred them)."""
        x, y = ctx
        self.weight_grads.collecting = key
        try:
            torch.autograd.backward(y, grad_output)
        finally:
            self.weight_grads.collecting = None
        self._synchronize(y)
        return None if self.is_first else x.grad

    def backward_weight(self, ctx, grad_output: torch.Tensor | None, key: object = None) -> None:
        """W of a split backward: the weight gradients I left in the store under ``key``."""
        self.weight_grads.compute(key)
        self._synchronize(next(self.module.parameters(), torch.empty(0)))

    @staticmethod
    def _synchronize(tensor: torch.Tensor) -> None:
        """On a GPU, let queued kernels finish: the action's time is then its GPU time, and its
        output is complete before MPI (or a host copy) reads it."""
        if tensor.is_cuda:
            torch.cuda.synchronize(tensor.device)


def polling_hook_cost(samples: int = 300) -> float:
    """Seconds one backward poll's gradient hook costs on this machine (registering it in the forward,
    calling it in the backward), with nothing to poll. A forward poll is a direct call and costs less;
    the transport times what happens inside a poll itself. So polls x this is an upper bound of
    what polling adds to a step besides the transfers' Tests."""
    def run(hook: bool) -> float:
        x = torch.zeros(1, requires_grad=True)
        start = time.perf_counter()
        for _ in range(samples):
            y = x * 1.0
            if hook:
                y.register_hook(lambda grad: None)
            y.backward()
        return time.perf_counter() - start

    run(True)                                   # warm up; then the fastest of 5 alternations each
    hooked, bare = (min(times) for times in zip(*((run(True), run(False)) for _ in range(5))))
    return max(hooked - bare, 0.0) / samples


class SyntheticStage:
    """F and B that take a configured time (slept, so more ranks than cores stay faithful) and
    exchange a configured number of bytes."""

    def __init__(self, t_fwd: float, t_bwd: float, message_bytes: int, is_first: bool, is_last: bool,
                 progress: Callable[[], None] | None = None, slices: int = 20, recompute: bool = False):
        # with recomputation the backward runs the forward again first
        self.t_fwd, self.t_bwd, self.is_first, self.is_last = t_fwd, t_bwd + (t_fwd if recompute else 0.0), \
            is_first, is_last
        self.progress, self.slices = progress, slices
        self.out = torch.zeros(max(message_bytes // 4, 1), dtype=torch.float32)

    def _work(self, seconds: float) -> None:
        """Sleep ``seconds`` in slices, polling transfers between them (like layers)."""
        end = time.perf_counter() + seconds
        for k in range(self.slices):
            remaining = end - time.perf_counter()
            if remaining <= 0:
                break
            time.sleep(remaining / (self.slices - k))
            if self.progress is not None:
                self.progress()

    def forward(self, x, target):
        self._work(self.t_fwd)
        loss = torch.zeros(()) if self.is_last else self.out
        return loss, None, 0

    def backward(self, ctx, grad_output, key=None):
        self._work(self.t_bwd)
        return None if self.is_first else self.out

    def backward_input(self, ctx, grad_output, key=None):
        """Half of the backward time: the split schedules' B."""
        self._work(self.t_bwd / 2)
        return None if self.is_first else self.out

    def backward_weight(self, ctx, grad_output, key=None) -> None:
        """The other half: the split schedules' W."""
        self._work(self.t_bwd / 2)
