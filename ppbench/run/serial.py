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

__all__ = ["SerialBaseline", "serial_limits", "polite_barrier"]


def polite_barrier(comm, pause: float = 1e-3) -> None:
    """A barrier that sleeps while it waits (MPICH's Barrier spins and would take the core a
    lone measuring rank may need)."""
    request = comm.Ibarrier()
    while not request.Test():
        time.sleep(pause)


class SerialBaseline:
    """The whole model on one rank (rank 0 of the job), stepped one training step at a time, so the
    runner can interleave its steps with the pipeline's: both then see the same machine (a noisy
    host drifts by tens of percent within a minute)."""

    def __init__(self, cfg: RunConfig, device: torch.device):
        self.cfg, self.device = cfg, device
        self.fb: list[float] = []
        self.opt: list[float] = []
        if cfg.workload == "synthetic":
            # one stage doing the work of all p ranks: m F of p x t_fwd and m B of p x t_bwd
            self.stage = SyntheticStage(cfg.pp * cfg.t_fwd, cfg.pp * cfg.t_bwd, 4, True, True, recompute=cfg.recompute)
        else:
            self.model_cfg = cfg.model_config()
            layers = models.build_layers(self.model_cfg, cfg.seed, cfg.torch_dtype)
            self.model = nn.Sequential(*layers).to(device)
            self.optimizer = make_optimizer(cfg, list(self.model.parameters()))
        self.step(0, record=False)          # warm-up

    def step(self, step: int, record: bool = True) -> None:
        """One training step on the batch of ``step`` (data made and gradients cleared before timing)."""
        cfg = self.cfg
        if cfg.workload == "synthetic":
            start = time.perf_counter()
            for _ in range(cfg.microbatches):
                self.stage.forward(None, None)
            for _ in range(cfg.microbatches):
                self.stage.backward(None, None)
            fb, opt = time.perf_counter() - start, 0.0
        else:
            x, y = models.make_batch(self.model_cfg, cfg.batch, cfg.seed, step, cfg.torch_dtype)
            inputs = replica_microbatches(cfg, x.to(self.device), 0)
            targets = replica_microbatches(cfg, y.to(self.device), 0)
            self.optimizer.zero_grad(set_to_none=True)
            _synchronize(self.device)
            start = time.perf_counter()
            for xb, yb in zip(inputs, targets):
                (models.loss_fn(self.model_cfg, self.model(xb), yb) / cfg.microbatches).backward()
            _synchronize(self.device)
            middle = time.perf_counter()
            self.optimizer.step()
            _synchronize(self.device)
            fb, opt = middle - start, time.perf_counter() - middle
        if record:
            self.fb.append(fb)
            self.opt.append(opt)

    def result(self) -> dict:
        """Median forward-backward (accumulated over m microbatches) and optimizer seconds."""
        return {"serial_fb_time": statistics.median(self.fb), "serial_optimizer_time": statistics.median(self.opt),
                "serial_steps": len(self.fb)}


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
