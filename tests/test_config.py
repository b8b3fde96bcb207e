"""Bad configurations are rejected before any work, with the field and allowed values named."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ppbench.config import ConfigError, RunConfig


@pytest.mark.parametrize("changes,world,message", [
    ({"microbatches": 0}, None, "invalid microbatches: must be an integer in 1..65536, got 0"),
    ({"microbatches": 1_000_000_000}, None, "invalid microbatches: must be an integer in 1..65536, got 1000000000"),
    ({"pp": 0}, None, "invalid pp: must be an integer in 1..4096, got 0"),
    ({"dp": -1}, None, "invalid dp: must be an integer in 1..4096, got -1"),
    ({"message_bytes": 10**10}, None, "invalid message_bytes: must be an integer in 4..2147483647, got 10000000000"),
    ({"lr": float("inf")}, None, "invalid lr: must be a finite number in 1e-12..1e+06, got inf"),
    ({"lr": float("nan")}, None, "invalid lr: must be a finite number in 1e-12..1e+06, got nan"),
    ({"step_timeout": -1.0}, None, "invalid step_timeout: must be a finite number in 0..86400, got -1.0"),
    ({"pp": 2, "dp": 2}, 2, "invalid pp x dp: pp=2 x dp=2 = 4 must equal the MPI world size 2"),
    ({"global_batch": 10, "microbatches": 4, "dp": 1}, None,
     "invalid global_batch: 10 does not split into microbatches x dp = 4 x 1 = 4 equal microbatches; "
     "allowed: multiples of 4"),
    ({"global_batch": 14, "microbatches": 3, "dp": 2}, None, "14 does not split into microbatches x dp = 3 x 2 = 6"),
    ({"pp": 9}, None, "invalid pp: 9 stages but model mlp/tiny has only 8 layers; allowed: 1..8"),
    ({"pp": 7, "model": "gpt"}, None, "invalid pp: 7 stages but model gpt/tiny has only 6 layers; allowed: 1..6"),
    ({"schedule": "zb"}, None, "invalid schedule: 'zb' is not one of: naive, gpipe, 1f1b"),
    ({"model": "bert"}, None, "invalid model: 'bert' is not one of: mlp, gpt"),
    ({"size": "huge"}, None, "invalid size: 'huge' is not one of: tiny, small, medium"),
    ({"dtype": "float16"}, None, "invalid dtype: 'float16' is not one of: float32, float64"),
    ({"optimizer": "lamb"}, None, "invalid optimizer: 'lamb' is not one of: sgd, adam"),
    ({"transport": "rdma"}, None, "invalid transport: 'rdma' is not one of: auto, blocking, nonblocking"),
    ({"lr": 0.0}, None, "invalid lr: must be a finite number in 1e-12..1e+06, got 0.0"),
    ({"steps": -2}, None, "invalid steps: must be an integer in 0..100000, got -2"),
    ({"microbatches": "4"}, None, "invalid microbatches: expected int, got str '4'"),
    ({"fault": "9:F0"}, None, "invalid fault: '9:F0' is not RANK:ACTION[:KIND] with 0 <= RANK < 2"),
    ({"fault": "0:X"}, None, "invalid fault: '0:X' is not RANK:ACTION"),
])
def test_bad_configuration_names_field_and_allowed_values(changes, world, message):
    with pytest.raises(ConfigError) as info:
        RunConfig(**changes).validate(world_size=world)
    assert message in str(info.value)


def test_defaults_are_valid_and_batch_is_derived():
    cfg = RunConfig(microbatches=3, dp=2).validate()
    assert cfg.batch == 12 and cfg.microbatch_size == 2


def test_transport_auto_is_blocking_only_for_naive():
    assert RunConfig(schedule="naive").resolved_transport == "blocking"
    assert RunConfig(schedule="1f1b").resolved_transport == "nonblocking"


values = st.one_of(st.integers(-5, 50), st.text(max_size=6), st.floats(allow_nan=True), st.none(), st.booleans())


@settings(max_examples=300, deadline=None)
@given(pp=values, dp=values, microbatches=values, global_batch=values, schedule=values, model=values,
       dtype=values, steps=values, world=st.one_of(st.none(), st.integers(1, 16)))
def test_any_input_is_accepted_or_rejected_with_config_error(pp, dp, microbatches, global_batch, schedule, model,
                                                             dtype, steps, world):
    cfg = RunConfig(pp=pp, dp=dp, microbatches=microbatches, global_batch=global_batch, schedule=schedule,
                    model=model, dtype=dtype, steps=steps)
    try:
        cfg.validate(world_size=world)
    except ConfigError as exc:
        assert str(exc).startswith(f"invalid {exc.field}: ")
    else:
        assert cfg.batch % (cfg.microbatches * cfg.dp) == 0 and 1 <= cfg.pp <= cfg.model_config().num_layers
