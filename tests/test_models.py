"""Models and the partitioner: determinism, composition, balanced contiguous splits."""

import itertools

import pytest
import torch

from ppbench.run import models
from ppbench.run.partition import balanced_split, describe_split, partition_layers


@pytest.mark.parametrize("family", ["mlp", "gpt"])
def test_same_seed_same_weights_different_seed_different(family):
    cfg = models.model_config(family, "tiny")
    a, b, c = (models.build_layers(cfg, seed, torch.float64) for seed in (3, 3, 4))
    pa, pb, pc = ([p for layer in ls for p in layer.parameters()] for ls in (a, b, c))
    assert all(torch.equal(x, y) for x, y in zip(pa, pb))
    assert not all(torch.equal(x, y) for x, y in zip(pa, pc))


def test_building_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    models.build_layers(models.model_config("gpt", "tiny"), 0, torch.float32)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("family", ["mlp", "gpt"])
@pytest.mark.parametrize("stages", [1, 2, 3, 4])
def test_stages_compose_to_the_full_model(family, stages):
    cfg = models.model_config(family, "tiny")
    layers = models.build_layers(cfg, 0, torch.float64)
    x, y = models.make_batch(cfg, 4, 0, 0, torch.float64)
    full = torch.nn.Sequential(*layers)(x)
    out = x
    for r in partition_layers(layers, stages):
        assert out.shape[1:] == models.activation_shape(cfg, 4)[1:] or r.start == 0
        out = torch.nn.Sequential(*(layers[i] for i in r))(out)
    assert torch.equal(out, full)
    assert models.loss_fn(cfg, out, y).ndim == 0


@pytest.mark.parametrize("weights,parts", [([5, 1, 1, 1, 1, 5], 3), ([1] * 7, 3), ([9, 1, 1, 1], 2), ([3, 3], 2),
                                           ([4, 1, 2, 8, 1, 1, 3], 4)])
def test_balanced_split_is_optimal_and_contiguous(weights, parts):
    split = balanced_split(weights, parts)
    assert [r.start for r in split][0] == 0 and split[-1].stop == len(weights)
    assert all(a.stop == b.start and len(a) > 0 for a, b in zip(split, split[1:]))
    heaviest = max(sum(weights[i] for i in r) for r in split)
    brute = min(max(sum(weights[a:b]) for a, b in zip((0, *cuts), (*cuts, len(weights))))
                for cuts in itertools.combinations(range(1, len(weights)), parts - 1))
    assert heaviest == brute


def test_split_needs_enough_layers():
    with pytest.raises(ValueError, match="cannot split 3 layers into 4 non-empty stages"):
        balanced_split([1, 1, 1], 4)


def test_split_report_names_layers_and_parameters():
    layers = models.build_layers(models.model_config("mlp", "tiny"), 0, torch.float32)
    text = describe_split(layers, partition_layers(layers, 2))
    assert text.splitlines() == ["stage 0: layers 0..3 (4 layers, 1,088 parameters)",
                                 "stage 1: layers 4..7 (4 layers, 1,088 parameters)"]


def test_saved_activation_bytes_are_counted_to_the_byte():
    """Two tanh MLP layers of width 16, batch 2, float64 (256 bytes per activation): autograd keeps
    each Linear's input (the first is the stage input; the second's is the first tanh's output,
    the same storage, counted once) and each tanh's output; weights are parameters, not counted.
    So 3 x 256 = 768 bytes."""
    import torch

    from ppbench.run.stages import SavedBytes

    layers = torch.nn.Sequential(*models.build_layers(models.model_config("mlp", "tiny"), 0, torch.float64)[:2])
    x = torch.randn(2, 16, dtype=torch.float64, requires_grad=True)
    _, nbytes = SavedBytes(layers).measure(lambda: layers(x))
    assert nbytes == 3 * 2 * 16 * 8


def test_the_executor_holds_peak_in_flight_times_the_bytes_of_one_microbatch():
    """GPipe on one stage of 8 such layers: all m microbatches' activations are alive at once."""
    from ppbench.config import RunConfig
    from ppbench.run.local import LocalPipeline

    m, batch = 3, 6                              # 2 samples per microbatch
    _, stats = LocalPipeline(RunConfig(schedule="gpipe", pp=1, microbatches=m, global_batch=batch)).forward_backward(0)
    # the microbatch input and the 7 tanh outputs (each also the next Linear's input), the last
    # Linear's output and the target (both kept by the MSE loss): 10 tensors of 2 x 16 float64.
    # Input and target are views into the global batch: their own 256 bytes count, not the batch's.
    per_microbatch = 10 * 2 * 16 * 8
    assert stats[0].peak_in_flight == m and stats[0].peak_saved_bytes == m * per_microbatch


@pytest.mark.parametrize("family", ["mlp", "gpt"])
@pytest.mark.parametrize("size", ["tiny", "small", "medium"])
def test_parameter_counts_known_before_building_equal_the_built_model(family, size):
    import torch

    cfg = models.model_config(family, size)
    built = models.build_layers(cfg, 0, torch.float32)
    assert [sum(p.numel() for p in layer.parameters()) for layer in built] == cfg.layer_parameters()


def test_recomputation_keeps_only_each_stage_input_and_gives_the_same_gradients():
    """1F1B with recomputation: F keeps the stage input only (the last stage also its target); B runs
    F again. Rank 0 of 2 holds min(p, m) = 2 microbatches, each 2 x 16 float64 = 256 bytes."""
    from ppbench.config import RunConfig
    from ppbench.run.check import check_in_process
    from ppbench.run.local import LocalPipeline

    cfg = RunConfig(schedule="1f1b-recompute", pp=2, microbatches=4)
    _, stats = LocalPipeline(cfg).forward_backward(0)
    assert [s.peak_in_flight for s in stats] == [2, 1]
    assert [s.peak_saved_bytes for s in stats] == [2 * 256, 256 + 256]        # rank 1: its input and the target
    _, plain = LocalPipeline(RunConfig(schedule="1f1b", pp=2, microbatches=4)).forward_backward(0)
    assert [s.peak_saved_bytes for s in plain] == [2 * 5 * 256, 6 * 256]      # 4 layers' activations (+ target)
    assert check_in_process(RunConfig(schedule="1f1b-recompute", pp=2, microbatches=4, steps=2))["passed"]
