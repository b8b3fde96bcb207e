"""Gradient equivalence under MPI: every schedule against single-process training.

Run with ``mpiexec -n W python -m pytest --with-mpi``; the grids (pp, dp) with pp x dp = W are
generated for that W (nox runs W = 1, 2 and 4). Every comparison is reduced over all ranks
inside ``run_check``, so every rank reaches the same verdict.
"""

import itertools

import pytest
from conftest import world_size

from ppbench.config import ConfigError, RunConfig
from ppbench.plan.schedules import CHUNKED, NEEDS_NONBLOCKING, SCHEDULES
from ppbench.run.check import TOLERANCE, run_check

WORLD = world_size()
GRIDS = [g for g in [(1, 1), (2, 1), (1, 2), (4, 1), (2, 2)] if g[0] * g[1] == WORLD]
MICROBATCHES = [1, 2, 3, 4, 8]   # m < p, m not a multiple of p, m > p
grid_ids = [f"pp{p}dp{d}" for p, d in GRIDS]


def check(**kwargs) -> dict:
    from mpi4py import MPI

    return run_check(RunConfig(**kwargs), MPI.COMM_WORLD)


def valid(**kwargs) -> bool:
    """Whether the configuration is one this world size can run (interleaved gets v = 2)."""
    try:
        RunConfig(chunks=2 if kwargs["schedule"] in CHUNKED else 1, **kwargs).validate(world_size=WORLD)
        return True
    except ConfigError:
        return False


def cases(fixed=None, **axes):
    """Every combination of the axes that is valid here (with the ``fixed`` settings), as pytest
    params with readable ids."""
    names = list(axes)
    params = []
    for values in itertools.product(*axes.values()):
        kw = dict(zip(names, values))
        grid = kw.pop("grid")
        if valid(pp=grid[0], dp=grid[1], **(fixed or {}), **{k: v for k, v in kw.items() if k != "optimizer"}):
            params.append(pytest.param(grid, *kw.values(), id="-".join([f"pp{grid[0]}dp{grid[1]}",
                                                                       *map(str, kw.values())])))
    return params


@pytest.mark.mpi
@pytest.mark.parametrize("grid,schedule,microbatches,model,dtype",
                         cases(grid=GRIDS, schedule=list(SCHEDULES), microbatches=MICROBATCHES, model=["mlp", "gpt"],
                               dtype=["float64", "float32"]))
def test_gradients_match_single_process_training(grid, schedule, microbatches, model, dtype):
    pp, dp = grid
    result = check(schedule=schedule, pp=pp, dp=dp, microbatches=microbatches, model=model, dtype=dtype,
                   chunks=2 if schedule in CHUNKED else 1)
    assert result["grad_max_rel_err"] <= TOLERANCE[dtype], result
    assert result["loss_rel_err"] <= TOLERANCE[dtype], result
    assert result["passed"]


# Adam divides every element by its own gradient magnitude, which turns float32 rounding in
# near-zero gradient elements into visible parameter differences; its trajectory is therefore
# checked in float64, SGD's in both.
@pytest.mark.mpi
@pytest.mark.parametrize("grid,schedule,model,optimizer,dtype",
                         [p for p in cases(grid=GRIDS, schedule=list(SCHEDULES), model=["mlp", "gpt"],
                                           optimizer=["sgd", "adam"], dtype=["float64", "float32"],
                                           fixed={"microbatches": 4})
                          if not ("adam" in p.id and "float32" in p.id)])
def test_parameters_match_after_three_optimizer_steps(grid, schedule, model, optimizer, dtype, microbatches=4):
    pp, dp = grid
    result = check(schedule=schedule, pp=pp, dp=dp, microbatches=microbatches, model=model, dtype=dtype, steps=3,
                   optimizer=optimizer, lr=0.01 if optimizer == "sgd" else 1e-3, chunks=2 if schedule in CHUNKED else 1)
    assert result["param_max_rel_err"] <= TOLERANCE[dtype], result
    assert result["passed"], result


@pytest.mark.mpi
@pytest.mark.parametrize("grid,schedule,microbatches,model",
                         cases(grid=GRIDS, schedule=[n for n, s in SCHEDULES.items() if s.torch_class],
                               microbatches=[4],
                               model=["mlp", "gpt"], fixed={"impl": "torch"}))
def test_torch_pipelining_matches_single_process_training(grid, schedule, microbatches, model):
    """PyTorch's own schedules, same models and reference (the harness is implementation-neutral)."""
    pp, dp = grid
    result = check(schedule=schedule, pp=pp, dp=dp, microbatches=microbatches, model=model, impl="torch",
                   chunks=2 if schedule in CHUNKED else 1, steps=2)
    assert result["max_rel_err"] <= TOLERANCE["float64"], result


@pytest.mark.mpi
@pytest.mark.parametrize("transport", ["blocking", "nonblocking"])
@pytest.mark.parametrize("schedule", [s for s in SCHEDULES if s not in NEEDS_NONBLOCKING])
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
    """The comparison can fail: a reference built from another seed must not pass."""
    from mpi4py import MPI

    from ppbench.run.reference import Reference

    pp, dp = GRIDS[0]
    result = run_check(RunConfig(pp=pp, dp=dp, microbatches=2), MPI.COMM_WORLD,
                       reference=lambda c, device: Reference(RunConfig(**{**c.to_dict(), "seed": c.seed + 1}), device))
    assert not result["passed"] and result["grad_max_rel_err"] > 1e-3
