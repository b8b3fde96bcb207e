"""One rank of a pipeline x data-parallel job: its stage, its executor, its optimizer."""

from __future__ import annotations

import torch
from torch import nn

from ppbench.config import RunConfig
from ppbench.plan.actions import split_stages
from ppbench.plan.comm import add_communication
from ppbench.run import models
from ppbench.run.device import cuda_aware_mpi, select_device
from ppbench.run.environment import local_ranks, usable_cores
from ppbench.run.executor import Executor, Fault, StepStats
from ppbench.run.grid import Grid
from ppbench.run.rank import RankBase, build_own_layers
from ppbench.run.stages import SyntheticStage, TorchStage
from ppbench.run.tracer import Tracer
from ppbench.run.training import average_gradients, global_loss, make_optimizer, replica_microbatches
from ppbench.run.transport import MpiTransport
from ppbench.run.waiting import WaitPolicy
from ppbench.run.watchdog import StepWatchdog

__all__ = ["PipelineRank", "make_rank"]


def make_rank(cfg: RunConfig, grid: Grid, tracer: Tracer | None = None):
    """This rank's pipeline, run by ppbench's executor or by torch.distributed.pipelining."""
    if cfg.impl == "torch":
        from ppbench.run.torch_impl import TorchPipelineRank

        return TorchPipelineRank(cfg, grid, tracer)
    return PipelineRank(cfg, grid, tracer)


class PipelineRank(RankBase):
    """Builds this rank's share of the work and runs training steps with the configured schedule."""

    def __init__(self, cfg: RunConfig, grid: Grid, tracer: Tracer | None = None):
        self.cfg, self.grid = cfg, grid
        self.tracer = tracer or Tracer(enabled=False)
        self.synthetic = cfg.workload == "synthetic"
        self.model_cfg = cfg.model_config()
        world_of_stage = grid.pipe.allgather(grid.world.Get_rank())   # once at set-up, for traces
        self.device = select_device(grid.world, cfg.device)
        self.cuda_aware, self.cuda_aware_how = cuda_aware_mpi() if self.device.type == "cuda" else (False, "cpu")
        self.wait_policy = WaitPolicy.choose(local_ranks(grid.world) * torch.get_num_threads() > usable_cores())
        self.transport = MpiTransport(grid.pipe, tracer=self.tracer, wait_policy=self.wait_policy,
                                      peer_names=world_of_stage, device=self.device,
                                      staging=self.device.type == "cuda" and not self.cuda_aware)
        nonblocking = cfg.resolved_transport == "nonblocking"
        progress = self.transport.progress if nonblocking else None
        r = grid.stage
        orders, self.placement = cfg.plan()
        last = self.placement.num_stages - 1
        stages: dict = {}
        if self.synthetic:
            self.layer_ids, self.layers, self.split = [], [], []
            for s in self.placement.stages_of(r):
                # a rank's work is split over its v stages, so every schedule does the same total work
                stages[s] = SyntheticStage(cfg.t_fwd / len(self.placement.stages_of(r)),
                                           cfg.t_bwd / len(self.placement.stages_of(r)), cfg.message_bytes, s == 0,
                                           s == last, progress, recompute=cfg.recompute)
            shape, dtype = next(iter(stages.values())).out.shape, next(iter(stages.values())).out.dtype
        else:
            self.split, mine, self.layer_ids, layers = build_own_layers(cfg, self.placement, r)
            self.layers = [layer.to(self.device) for layer in layers]
            by_index = dict(zip(self.layer_ids, self.layers))
            split = split_stages(orders[r])
            for s, ids in mine.items():
                stages[s] = TorchStage(nn.Sequential(*(by_index[i] for i in ids)), s == 0, s == last,
                                       lambda out, tgt: models.loss_fn(self.model_cfg, out, tgt), cfg.microbatches,
                                       progress, recompute=cfg.recompute, split=s in split)
            shape, dtype = models.activation_shape(self.model_cfg, cfg.microbatch_size), cfg.torch_dtype
        self.module = nn.Sequential(*self.layers)
        self.actions = add_communication(orders[r], self.placement)
        self.executor = Executor(
            rank=r, placement=self.placement, stages=stages, actions=self.actions, transport=self.transport,
            mode=cfg.resolved_transport, activation_shape=tuple(shape), dtype=dtype,
            num_microbatches=cfg.microbatches, tracer=self.tracer, fault=self._my_fault(),
            where=f"rank {grid.world.Get_rank()} (replica {grid.replica})")
        self.optimizer = make_optimizer(cfg, list(self.module.parameters())) if self.layers else None
        self.watchdog = StepWatchdog(cfg.step_timeout, self.executor.describe, lambda: grid.world.Abort(3),
                                     stall=cfg.stall_timeout, last_progress=lambda: self.executor.progress_at)

    def _my_fault(self) -> Fault | None:
        target = self.cfg.fault_target
        if not target or target[0] != self.grid.world.Get_rank():
            return None
        _, (stage, op, mb), kind = target
        return Fault(op, mb, stage, kind)

    def prepare(self, step: int) -> None:
        """What a training loop has ready before its step begins (the runner calls it outside the
        timed region): this replica's microbatches of ``step`` on the device, gradients cleared
        (set to None: the first backward writes them instead of adding to zeros)."""
        if self.synthetic:
            self._prepared = step, [torch.zeros(1)] * self.cfg.microbatches, [torch.zeros(1)] * self.cfg.microbatches
            return
        x, y = models.make_batch(self.model_cfg, self.cfg.batch, self.cfg.seed, step, self.cfg.torch_dtype)
        self._prepared = (step, replica_microbatches(self.cfg, x.to(self.device), self.grid.replica),
                          replica_microbatches(self.cfg, y.to(self.device), self.grid.replica))
        if self.optimizer is not None:
            self.optimizer.zero_grad(set_to_none=True)

    def forward_backward(self, step: int) -> tuple[float, StepStats]:
        """Gradients of the mean loss over the global batch of ``step``: (that loss on every rank, stats)."""
        inputs, targets = self._data(step)
        with self.watchdog.step():
            if self.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(self.device)
            stats = self.executor.run(inputs, targets, step)
            self._average_gradients()
            if self.device.type == "cuda":
                stats.peak_device_bytes = torch.cuda.max_memory_allocated(self.device)
        return self._global_loss(stats.loss), stats

    def _average_gradients(self) -> None:
        if self.cfg.dp == 1 or not self.layers:
            return
        start = self.tracer.now()
        nbytes = average_gradients(list(self.module.parameters()), self.grid.data, self.cfg.dp, self.transport.staging)
        self.tracer.record("ALLREDUCE", -1, -1, start, self.tracer.now(), nbytes=nbytes)

    def _global_loss(self, local: float) -> float:
        return global_loss(local, self.grid.data, self.grid.pipe, self.cfg.dp,
                           root=self.placement.rank_of(self.placement.num_stages - 1))
