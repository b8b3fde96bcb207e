"""Gradient equivalence: a pipeline run against the single-process reference, parameter by parameter.

Error of one tensor: max |pipe - ref| / max(max |ref|, tiny) (the largest deviation relative to
the tensor's own scale); the reported error is the largest over every parameter, every step
and every rank.
"""

from __future__ import annotations

import numpy as np
import torch
from mpi4py import MPI

from ppbench.config import ConfigError, RunConfig
from ppbench.run.grid import Grid
from ppbench.run.pipeline import make_rank
from ppbench.run.reference import Reference

__all__ = ["run_check", "TOLERANCE", "relative_error"]

#: largest relative error accepted per dtype (DESIGN.md)
TOLERANCE = {"float64": 1e-10, "float32": 1e-5}
_TINY = 1e-30


def relative_error(got: torch.Tensor, want: torch.Tensor) -> tuple[float, float]:
    """(max abs error, that error relative to max |want|)."""
    abs_err = float((got - want).abs().max()) if got.numel() else 0.0
    scale = float(want.abs().max()) if want.numel() else 0.0
    return abs_err, abs_err / max(scale, _TINY)


def run_check(cfg: RunConfig, comm: MPI.Comm) -> dict:
    """Run cfg on ``comm`` (size pp x dp) and compare with the reference; same result on every rank."""
    cfg.validate(world_size=comm.Get_size())
    if cfg.workload != "model":
        raise ConfigError("workload", f"{cfg.workload!r}: check compares gradients, so it needs the model workload")
    worst = np.zeros(5)   # grad abs, grad rel, param abs, param rel, loss rel
    with Grid(comm, cfg.pp, cfg.dp) as grid:
        pipe = make_rank(cfg, grid)
        ref = Reference(cfg, pipe.device)
        losses = []
        for step in range(max(cfg.steps, 1)):
            loss, _ = pipe.forward_backward(step)
            ref_loss = ref.forward_backward(step)
            losses.append((loss, ref_loss))
            worst[4] = max(worst[4], abs(loss - ref_loss) / max(abs(ref_loss), _TINY))
            worst[0:2] = np.maximum(worst[0:2], _compare(pipe, ref, lambda p: p.grad))
            if cfg.steps:
                pipe.optimizer_step()
                ref.optimizer_step()
        if cfg.steps:
            worst[2:4] = _compare(pipe, ref, lambda p: p.detach())
        split = [(r.start, r.stop - 1) for r in pipe.split]
    comm.Allreduce(MPI.IN_PLACE, worst, op=MPI.MAX)
    tolerance = TOLERANCE[cfg.dtype]
    max_rel = float(max(worst[1], worst[3], worst[4]))
    return {
        **cfg.to_dict(),
        "global_batch": cfg.batch,
        "world_size": comm.Get_size(),
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
        "passed": bool(max_rel <= tolerance),
    }


def _compare(pipe, ref: Reference, value) -> np.ndarray:
    worst = np.zeros(2)
    for (layer, name), param in pipe.named_parameters():
        errors = relative_error(value(param), value(ref.parameter(layer, name)))
        worst = np.maximum(worst, errors)
    return worst
