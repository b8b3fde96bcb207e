"""The serial baseline of a run, measured in the same job: the whole model on one rank, training
one replica's batch by gradient accumulation over the same m microbatches, with the same torch
threads per rank. From it, the limit a p-stage pipeline can reach and the run's efficiency.

The limit of an iteration with schedule S on p stages: the serial forward-backward time spread
over p stages and stretched by S's theoretical bubble, plus the serial optimizer time over p:

    limit = T_fb / (p (1 - bubble_theory)) + T_opt / p

(for GPipe and 1F1B that is T_fb (m + p - 1) / (m p) + T_opt / p). Efficiency = limit / measured
iteration time: 1 means the pipeline lost nothing but its theoretical bubble.
"""

from __future__ import annotations

import math
import statistics
import time

import torch
from torch import nn

from ppbench.config import RunConfig
from ppbench.run import models
from ppbench.run.stages import SyntheticStage
from ppbench.run.training import make_optimizer, replica_microbatches

__all__ = ["measure_serial", "serial_limits", "polite_barrier"]


def polite_barrier(comm, pause: float = 1e-3) -> None:
    """A barrier that sleeps while it waits (MPICH's Barrier spins and would take the core a
    lone measuring rank may need)."""
    request = comm.Ibarrier()
    while not request.Test():
        time.sleep(pause)


def measure_serial(cfg: RunConfig, device: torch.device, steps: int) -> dict:
    """Median seconds of the forward-backward (accumulated over m microbatches) and of the
    optimizer step, over ``steps`` steps after one warm-up step."""
    fb, opt = [], []
    if cfg.workload == "synthetic":
        # one stage doing the work of all p ranks: m F of p x t_fwd and m B of p x t_bwd
        stage = SyntheticStage(cfg.pp * cfg.t_fwd, cfg.pp * cfg.t_bwd, 4, True, True, recompute=cfg.recompute)
        for _ in range(steps + 1):
            start = time.perf_counter()
            for _ in range(cfg.microbatches):
                stage.forward(None, None)
            for _ in range(cfg.microbatches):
                stage.backward(None, None)
            fb.append(time.perf_counter() - start)
            opt.append(0.0)
    else:
        model_cfg = cfg.model_config()
        model = nn.Sequential(*models.build_layers(model_cfg, cfg.seed, cfg.torch_dtype)).to(device)
        optimizer = make_optimizer(cfg, list(model.parameters()))
        for step in range(steps + 1):
            x, y = models.make_batch(model_cfg, cfg.batch, cfg.seed, step, cfg.torch_dtype)
            inputs = replica_microbatches(cfg, x.to(device), 0)
            targets = replica_microbatches(cfg, y.to(device), 0)
            optimizer.zero_grad(set_to_none=True)
            _synchronize(device)
            start = time.perf_counter()
            for xb, yb in zip(inputs, targets):
                (models.loss_fn(model_cfg, model(xb), yb) / cfg.microbatches).backward()
            _synchronize(device)
            middle = time.perf_counter()
            optimizer.step()
            _synchronize(device)
            fb.append(middle - start)
            opt.append(time.perf_counter() - middle)
    return {"serial_fb_time": statistics.median(fb[1:]), "serial_optimizer_time": statistics.median(opt[1:]),
            "serial_steps": steps}


def serial_limits(serial: dict, p: int, bubble_theory: float, iteration_time: float) -> dict:
    """The limit for p stages and the efficiency of a measured iteration time (see the module's text).
    A schedule without a closed-form bubble (a schedule file) is held to the bubble-free limit."""
    bubble = bubble_theory if math.isfinite(bubble_theory) else 0.0
    limit = serial["serial_fb_time"] / (p * (1 - bubble)) + serial["serial_optimizer_time"] / p
    serial_iteration = serial["serial_fb_time"] + serial["serial_optimizer_time"]
    return {**serial, "serial_iteration_time": serial_iteration, "limit_iteration_time": limit,
            "efficiency": limit / iteration_time, "speedup": serial_iteration / iteration_time}


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
