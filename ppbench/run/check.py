"""Gradient equivalence: a pipeline run against the single-process reference, parameter by parameter.

Error of one tensor: max |pipe - ref| / max(max |ref|, tiny) (the largest deviation relative to
the tensor's own scale); the reported error is the largest over every parameter, every step
and every rank.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from mpi4py import MPI

from ppbench.config import ConfigError, RunConfig
from ppbench.run.environment import set_threads
from ppbench.run.grid import Grid
from ppbench.run.pipeline import make_rank
from ppbench.run.reference import Reference

__all__ = ["run_check", "check_in_process", "TOLERANCE", "relative_error"]

#: largest relative error accepted per dtype (DESIGN.md)
TOLERANCE = {"float64": 1e-10, "float32": 1e-5}
#: a loss this many times the first step's (or not finite) means training diverged: comparing is meaningless
DIVERGED_GROWTH = 1e4
_TINY = 1e-30


def relative_error(got: torch.Tensor, want: torch.Tensor) -> tuple[float, float]:
    """(max abs error, that error relative to max |want|)."""
    abs_err = float((got - want).abs().max()) if got.numel() else 0.0
    scale = float(want.abs().max()) if want.numel() else 0.0
    return abs_err, abs_err / max(scale, _TINY)


def run_check(cfg: RunConfig, comm: MPI.Comm, reference: Callable[..., Reference] = Reference) -> dict:
    """Run cfg on ``comm`` (size pp x dp) and compare with ``reference(cfg, device)`` (the
    single-process ground truth); the same result on every rank."""
    cfg.validate(world_size=comm.Get_size())
    set_threads(cfg.threads, comm)
    _need_model(cfg)
    with Grid(comm, cfg.pp, cfg.dp) as grid:
        pipe = make_rank(cfg, grid)
        worst, losses = _compare_steps(cfg, pipe, reference(cfg, pipe.device))
        split = [(r.start, r.stop - 1) for r in pipe.split]
    comm.Allreduce(MPI.IN_PLACE, worst, op=MPI.MAX)
    return _verdict(cfg, worst, losses, split, comm.Get_size())     # losses are the same on every rank


def check_in_process(cfg: RunConfig, reference: Callable[..., Reference] = Reference) -> dict:
    """The same check with every rank of one pipeline as a thread of this process (no MPI; dp = 1)."""
    from ppbench.run.local import LocalPipeline
    from ppbench.sim.validate import require_runnable

    cfg.validate(world_size=cfg.pp)
    require_runnable(cfg)
    _need_model(cfg)
    pipe = LocalPipeline(cfg)
    worst, losses = _compare_steps(cfg, pipe, reference(cfg, torch.device("cpu")))
    return {**_verdict(cfg, worst, losses, [(r.start, r.stop - 1) for r in pipe.split], 1), "in_process": True}


def _need_model(cfg: RunConfig) -> None:
    if cfg.workload != "model":
        raise ConfigError("workload", f"{cfg.workload!r}: check compares gradients, so it needs the model workload")


def _compare_steps(cfg: RunConfig, pipe, ref: Reference) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Train both for max(steps, 1) steps; the worst (grad abs, grad rel, param abs, param rel,
    loss rel) errors of this process's parameters, and each step's (pipeline, reference) loss."""
    worst = np.zeros(5)
    losses = []
    for step in range(max(cfg.steps, 1)):
        loss = pipe.forward_backward(step)[0]
        ref_loss = ref.forward_backward(step)
        losses.append((loss, ref_loss))
        if _diverged(losses):              # decided from the losses, which every rank shares: all stop alike
            break
        worst[4] = max(worst[4], abs(loss - ref_loss) / max(abs(ref_loss), _TINY))
        worst[0:2] = np.maximum(worst[0:2], _compare(pipe, ref, lambda p: p.grad))
        if cfg.steps:
            pipe.optimizer_step()
            ref.optimizer_step()
    if cfg.steps:
        worst[2:4] = _compare(pipe, ref, lambda p: p.detach())
    return worst, losses


def _diverged(losses: list[tuple[float, float]]) -> bool:
    first = max(abs(losses[0][1]), _TINY)
    return not all(np.isfinite(x) and abs(x) <= DIVERGED_GROWTH * first for pair in losses for x in pair)


def _verdict(cfg: RunConfig, worst: np.ndarray, losses: list[tuple[float, float]], split: list, world: int) -> dict:
    tolerance = TOLERANCE[cfg.dtype]
    max_rel = float(max(worst[1], worst[3], worst[4]))
    diverged = _diverged(losses) or not np.isfinite(worst).all()
    return {
        **cfg.to_dict(),
        "model_name": cfg.model_name,
        "global_batch": cfg.batch,
        "world_size": world,
        "stage_layers": split,
        "loss": losses[-1][0],
        "ref_loss": losses[-1][1],
        "grad_max_abs_err": float(worst[0]),
        "grad_max_rel_err": float(worst[1]),
        "param_max_abs_err": float(worst[2]),
        "param_max_rel_err": float(worst[3]),
        "loss_rel_err": float(worst[4]),
        "max_abs_err": float(max(worst[0], worst[2])),
        "max_rel_err": max_rel,
        "tolerance": tolerance,
        "first_loss": losses[0][1],
        "steps_run": len(losses),
        "diverged": bool(diverged),
        "diverged_step": len(losses) - 1 if diverged else None,
        "passed": bool(max_rel <= tolerance and not diverged),
    }


def _compare(pipe, ref: Reference, value) -> np.ndarray:
    worst = np.zeros(2)
    for (layer, name), param in pipe.named_parameters():
        errors = relative_error(value(param), value(ref.parameter(layer, name)))
        worst = np.maximum(worst, errors)
    return worst
