"""Your own model and sizes: dimensions from the command line, ``--model package.module:factory``,
and each rank building only its own layers."""

import pytest
import torch

from ppbench.config import ConfigError, RunConfig
from ppbench.model_configs import GPTConfig, MLPConfig
from ppbench.run import models
from ppbench.run.check import TOLERANCE, check_in_process


def test_dimensions_from_the_command_line_replace_the_presets():
    assert RunConfig(model="mlp", size="small", layers=4, width=32).model_config() == MLPConfig(n_layers=4, width=32)
    gpt = RunConfig(model="gpt", layers=3, heads=4, embd=48, context=8, vocab=50).model_config()
    assert gpt == GPTConfig(vocab_size=50, block_size=8, n_layer=3, n_head=4, n_embd=48)
    assert RunConfig(model="mlp", layers=4, width=32).model_name == "mlp/tiny layers=4 width=32"


@pytest.mark.parametrize("given, message", [
    ({"model": "gpt", "width": 8}, "invalid width: --width sets a dimension of mlp models, not of gpt"),
    ({"model": "mlp", "heads": 2}, "invalid heads: --heads sets a dimension of gpt models, not of mlp"),
    ({"model": "gpt", "embd": 30, "heads": 4}, "invalid embd: 30 channels do not split over 4 heads"),
    ({"model": "mlp", "layers": 1, "pp": 2}, "invalid pp: 2 stages but model mlp/tiny layers=1 has only 1 layers"),
])
def test_bad_dimensions_are_refused_naming_the_option(given, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig(**given).validate()


@pytest.mark.parametrize("model", ["mlp", "gpt", "user_models:classifier", "user_models:with_buffer"])
def test_a_rank_building_only_its_layers_gets_the_same_values_as_the_whole_model(model):
    cfg = RunConfig(model=model).validate().model_config()
    whole = models.build_layers(cfg, 7, torch.float64)
    mine = models.build_layers(cfg, 7, torch.float64, only=[2, 3])
    for a, b in zip(whole[2:4], mine):
        for p, q in zip(a.state_dict().values(), b.state_dict().values()):
            assert torch.equal(p, q)
    assert [sum(p.numel() for p in layer.parameters()) for layer in whole] == cfg.layer_parameters()


def test_a_factory_whose_layers_can_be_reset_is_built_layer_by_layer_others_whole():
    assert RunConfig(model="user_models:classifier").model_config().per_layer
    assert not RunConfig(model="user_models:with_buffer").model_config().per_layer


@pytest.mark.parametrize("schedule", ["1f1b", "zb-h1"])
def test_a_user_model_is_checked_like_the_presets(schedule):
    result = check_in_process(RunConfig(model="user_models:classifier", schedule=schedule, pp=2, microbatches=4,
                                        steps=2))
    assert result["passed"] and result["max_rel_err"] <= TOLERANCE["float64"]
    assert result["stage_layers"] == [(0, 1), (2, 4)]


@pytest.mark.parametrize("spec, message", [
    ("user_models:shapes_differ", r"layers pass tensors of different shapes \[\(2, 6\), \(2, 8\)\]"),
    ("user_models:no_loss", "must also return callables 'loss"),
    ("user_models:fails", "the factory failed: RuntimeError: out of coffee"),
    ("user_models:missing", "user_models has no callable 'missing'"),
    ("no_such_module:f", "cannot import 'no_such_module'"),
])
def test_a_bad_factory_gets_a_one_line_error_before_anything_runs(spec, message):
    with pytest.raises(ConfigError, match=message) as info:
        RunConfig(model=spec).validate()
    assert "\n" not in str(info.value)
