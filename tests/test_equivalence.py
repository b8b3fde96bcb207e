"""Gradient equivalence under MPI: every schedule against single-process training.

Run with ``mpiexec -n W python -m pytest --with-mpi``; the grids (pp, dp) with pp x dp = W are
generated for that W (nox runs W = 1, 2 and 4). Every comparison is reduced over all ranks
inside ``run_check``, so every rank reaches the same verdict.
"""

import pytest

from conftest import world_size
from ppbench.check import TOLERANCE, run_check
from ppbench.config import ConfigError, RunConfig
from ppbench.schedules import SCHEDULES

WORLD = world_size()
GRIDS = [g for g in [(1, 1), (2, 1), (1, 2), (4, 1), (2, 2)] if g[0] * g[1] == WORLD]
MICROBATCHES = [1, 2, 3, 4, 8]   # m < p, m not a multiple of p, m > p
grid_ids = [f"pp{p}dp{d}" for p, d in GRIDS]


def check(**kwargs) -> dict:
    from mpi4py import MPI

    return run_check(RunConfig(**kwargs), MPI.COMM_WORLD)


@pytest.mark.mpi
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("model", ["mlp", "gpt"])
@pytest.mark.parametrize("m", MICROBATCHES)
@pytest.mark.parametrize("grid", GRIDS, ids=grid_ids)
@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_gradients_match_single_process_training(schedule, grid, m, model, dtype):
    pp, dp = grid
    result = check(schedule=schedule, pp=pp, dp=dp, microbatches=m, model=model, dtype=dtype)
    assert result["grad_max_rel_err"] <= TOLERANCE[dtype], result
    assert result["loss_rel_err"] <= TOLERANCE[dtype], result
    assert result["passed"]


# Adam divides every element by its own gradient magnitude, which turns float32 rounding in
# near-zero gradient elements into visible parameter differences; its trajectory is therefore
# checked in float64, SGD's in both.
@pytest.mark.mpi
@pytest.mark.parametrize("optimizer,dtype", [("sgd", "float64"), ("adam", "float64"), ("sgd", "float32")])
@pytest.mark.parametrize("model", ["mlp", "gpt"])
@pytest.mark.parametrize("grid", GRIDS, ids=grid_ids)
@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_parameters_match_after_three_optimizer_steps(schedule, grid, model, optimizer, dtype):
    pp, dp = grid
    result = check(schedule=schedule, pp=pp, dp=dp, microbatches=3, model=model, dtype=dtype, steps=3,
                   optimizer=optimizer, lr=0.01 if optimizer == "sgd" else 1e-3)
    assert result["param_max_rel_err"] <= TOLERANCE[dtype], result
    assert result["passed"], result


@pytest.mark.mpi
@pytest.mark.parametrize("transport", ["blocking", "nonblocking"])
@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_both_transports_are_equivalent(schedule, transport):
    pp, dp = GRIDS[0]
    result = check(schedule=schedule, pp=pp, dp=dp, microbatches=4, model="gpt", transport=transport)
    assert result["passed"], result


@pytest.mark.mpi
def test_wrong_world_size_is_rejected_on_every_rank_before_any_work():
    with pytest.raises(ConfigError, match=f"pp=1 x dp={WORLD + 1} = {WORLD + 1} must equal the MPI world size {WORLD}"):
        check(pp=1, dp=WORLD + 1)


@pytest.mark.mpi
def test_a_broken_pipeline_is_detected():
    """The comparison can fail: a different seed for the reference must not pass."""
    from mpi4py import MPI

    from ppbench import check as check_module

    pp, dp = GRIDS[0]
    cfg = RunConfig(pp=pp, dp=dp, microbatches=2)
    original = check_module.Reference
    check_module.Reference = lambda c, device: original(RunConfig(**{**c.to_dict(), "seed": c.seed + 1}), device)
    try:
        result = check_module.run_check(cfg, MPI.COMM_WORLD)
    finally:
        check_module.Reference = original
    assert not result["passed"] and result["grad_max_rel_err"] > 1e-3
