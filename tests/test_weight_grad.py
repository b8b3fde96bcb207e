"""The split backward without recomputation: I leaves the linear layers' weight GEMMs to W, W does
only those, and the two together give the full backward's gradients."""

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from ppbench.run import models
from ppbench.run.stages import TorchStage
from ppbench.run.weight_grad import DeferWeightGrads, WeightGradStore

_MATMULS = {torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.addmm_.default,
            torch.ops.aten.bmm.default}


class CountMatmuls(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += func in _MATMULS
        return func(*args, **(kwargs or {}))


def _stage(split: bool, first: bool, layers=None):
    cfg = models.model_config("mlp", "tiny")
    layers = layers or models.build_layers(cfg, 0, torch.float64)[4:]
    return TorchStage(nn.Sequential(*layers), first, True, lambda out, tgt: models.loss_fn(cfg, out, tgt), 2,
                      split=split), layers


def _inputs():
    gen = torch.Generator().manual_seed(1)
    return (torch.randn(3, 16, generator=gen, dtype=torch.float64),
            torch.randn(3, 16, generator=gen, dtype=torch.float64))


@pytest.mark.parametrize("first", [False, True])
def test_i_computes_no_weight_gemm_and_w_exactly_one_per_linear_layer(first):
    stage, layers = _stage(split=True, first=first)
    x, target = _inputs()
    _, ctx, _ = stage.forward(x, target)
    with CountMatmuls() as during_i:
        stage.backward_input(ctx, None, key=(1, 0))
    assert all(p.grad is None for layer in layers for p in layer.parameters())   # weights and biases wait for W
    with CountMatmuls() as during_w:
        stage.backward_weight(ctx, None, key=(1, 0))
    # 4 Linear layers: I multiplies by each weight for the input gradient, except the first
    # layer's of the first stage (no input gradient wanted); W does one GEMM per weight
    assert (during_i.count, during_w.count) == (3 if first else 4, 4)
    assert stage.weight_grads.pending() == []


def test_i_then_w_give_the_full_backwards_gradients_and_input_gradient():
    x, target = _inputs()
    full, full_layers = _stage(split=False, first=False)
    _, ctx, _ = full.forward(x.clone(), target)
    want_x = full.backward(ctx, None)
    split, split_layers = _stage(split=True, first=False)
    for mb in range(2):                           # two microbatches' W accumulate into the same .grad
        _, ctx, _ = split.forward(x.clone(), target)
        got_x = split.backward_input(ctx, None, key=(1, mb))
    split.backward_weight(None, None, key=(1, 0))
    split.backward_weight(None, None, key=(1, 1))
    torch.testing.assert_close(got_x, want_x, rtol=0, atol=1e-15)
    for a, b in zip(full_layers, split_layers):
        for (name, p), q in zip(a.named_parameters(), b.parameters()):
            torch.testing.assert_close(q.grad, 2 * p.grad, rtol=1e-14, atol=0, msg=name)


def test_a_deferred_linear_backwarded_outside_i_is_an_error_not_a_lost_gradient():
    store = WeightGradStore()
    layer = nn.Linear(4, 4)
    with DeferWeightGrads(store):
        y = layer(torch.randn(2, 4))
    with pytest.raises(RuntimeError, match="outside a split backward"):
        y.sum().backward()


def test_only_trainable_parameters_are_deferred():
    store = WeightGradStore()
    frozen = nn.Linear(4, 4).requires_grad_(False)
    x = torch.randn(2, 4, requires_grad=True)
    with DeferWeightGrads(store):
        y = frozen(x) + torch.nn.functional.linear(x, torch.ones(4, 4))    # neither is a trainable parameter
    store.collecting = "mb"
    y.sum().backward()
    assert store.pending() == [] and x.grad is not None
