"""``ppbench run`` under MPI: the file it writes holds every action of every measured step.

Structure only (counts, theory values, the blocking transport's zero overlap); timing belongs
in the benchmarks.
"""

import math

import pytest
from conftest import world_size
from plans import posted_order

from ppbench.config import ConfigError, RunConfig
from ppbench.measure.events import COMPUTE, TRANSFER
from ppbench.measure.results import read_run
from ppbench.plan import theory
from ppbench.plan.actions import Action
from ppbench.plan.schedules import CHUNKED, SCHEDULES, build_schedule

WORLD = world_size()


def run(tmp_path, **changes):
    from mpi4py import MPI

    from ppbench.run.runner import run_benchmark

    directory = MPI.COMM_WORLD.bcast(str(tmp_path), root=0)   # one directory for all ranks
    cfg = RunConfig(pp=WORLD, **changes)
    return cfg, run_benchmark(cfg, MPI.COMM_WORLD, directory)


def synthetic(schedule, transport):
    return dict(schedule=schedule, microbatches=2 * WORLD, chunks=2 if schedule in CHUNKED else 1,
                workload="synthetic", t_fwd=0.001, t_bwd=0.002, message_bytes=4096, warmup=1, repeats=2,
                transport=transport)


def runnable(**kwargs) -> bool:
    try:
        RunConfig(pp=WORLD, **kwargs).validate(world_size=WORLD)
        return True
    except ConfigError:
        return False


@pytest.mark.mpi
@pytest.mark.parametrize("schedule,transport", [(s, t) for s in SCHEDULES for t in ("blocking", "nonblocking")
                                                if runnable(**synthetic(s, t))])
def test_synthetic_run_records_every_action(tmp_path, schedule, transport):
    cfg, summary = run(tmp_path, **synthetic(schedule, transport))
    if summary is None:          # ranks other than 0
        return
    events = read_run(summary["path"]).events
    assert sorted(events["step"].unique()) == [1, 2]                       # warm-up step 0 not recorded
    plan = build_schedule(schedule, cfg.pp, cfg.microbatches, cfg.chunks)
    for step in (1, 2):
        for r in range(cfg.pp):
            mine = events[(events["rank"] == r) & (events["step"] == step) & events["op"].isin(COMPUTE + TRANSFER)]
            mine = mine.sort_values("start", kind="stable")          # posts and compute starts, in order
            started = [str(Action(stage, op, mb)) for op, stage, mb in zip(mine["op"], mine["stage"], mine["mb"])]
            assert started == posted_order(plan[r], cfg.resolved_transport, cfg.pp * cfg.chunks - 1), (step, r)
    assert summary["peak_in_flight"] == summary["peak_in_flight_theory"]
    assert summary["bubble_theory"] == theory.bubble_fraction(schedule, cfg.pp, cfg.microbatches, cfg.chunks)
    assert 0 <= summary["bubble_mean_median"] <= 1
    assert 0 <= summary["bubble_simulated"] <= 1          # the schedule re-simulated with this run's costs
    if all(a.is_compute for acts in plan for a in acts):  # one rank, one stage (V: two stages, a message to self)
        assert math.isnan(summary["overlap_median"])
    elif transport == "blocking":
        assert summary["overlap_median"] == 0.0
    elif schedule == "naive":           # one microbatch in the pipeline: both ends of every message idle
        assert summary["overlap_median"] < 0.1
    else:
        assert summary["overlap_median"] > 0.0


@pytest.mark.mpi
def test_model_run_records_loss_memory_and_environment(tmp_path):
    cfg, summary = run(tmp_path, schedule="gpipe", microbatches=2, model="gpt", repeats=2, serial_steps=1)
    if summary is None:
        return
    meta = read_run(summary["path"]).meta
    assert meta["config"] == cfg.to_dict()
    assert meta["environment"]["wait_policy"].endswith(" us)") and "sleep 100 us" in meta["environment"]["wait_policy"]
    # the serial baseline and what follows from it, as docs/metrics.md defines them
    fb, opt, bubble = summary["serial_fb_time"], summary["serial_optimizer_time"], summary["bubble_theory"]
    assert summary["serial_steps"] == 1 and fb > 0
    assert summary["limit_iteration_time"] == pytest.approx(fb / (WORLD * (1 - bubble)) + opt / WORLD, rel=1e-12)
    assert summary["efficiency"] == pytest.approx(summary["limit_iteration_time"] / summary["iteration_time_median"],
                                                  rel=1e-12)
    times = summary["compute_time_per_stage"]
    assert all(len(v) == WORLD for v in times.values())
    assert all(t > 0 for op in ("F", "B") for t in times[op]) and all(math.isnan(t) for op in "IW" for t in times[op])
    assert meta["environment"]["world_size"] == WORLD and meta["environment"]["mpi_library"].startswith("MPICH")
    assert len(meta["steps"]) == 2 and all(math.isfinite(s["loss"]) for s in meta["steps"])
    assert all(b > 0 for b in summary["peak_saved_bytes"])       # GPT stages save activations
