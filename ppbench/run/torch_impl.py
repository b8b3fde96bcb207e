"""PyTorch's own ``torch.distributed.pipelining`` behind ppbench's harness (``--impl torch``).

Same models, data, reference and result records; gloo process groups are set up from the MPI
job (no other launcher). Its compute is timed by wrapping each ``PipelineStage``'s own
``forward_one_chunk``, ``backward_one_chunk`` and ``backward_weight_one_chunk``: an F, a B (or
I when PyTorch splits the backward) and a W event cover the whole work of the stage for that
microbatch, so its bubble comes from the same metrics code as ppbench's. (The loss, which
PyTorch computes outside ``forward_one_chunk``, is not part of the last stage's F.) Its
transfers happen inside PyTorch and are not observed (overlap NaN).
"""

from __future__ import annotations

import socket

import torch
import torch.distributed as dist
from torch import nn

from ppbench.config import RunConfig
from ppbench.plan.schedules import SCHEDULES, placement_for
from ppbench.run import models
from ppbench.run.executor import StepStats
from ppbench.run.grid import Grid
from ppbench.run.rank import RankBase, build_own_layers
from ppbench.run.tracer import Tracer
from ppbench.run.training import average_gradients, global_loss, make_optimizer, replica_microbatches

__all__ = ["TorchPipelineRank"]


def _init_gloo(grid: Grid) -> None:
    """One gloo process group over the MPI world (rank 0's host and a free port, sent over MPI)."""
    if dist.is_initialized():
        return
    world = grid.world
    one_host = len(set(world.allgather(socket.gethostname()))) == 1
    address = None
    if world.Get_rank() == 0:
        with socket.socket() as s:
            s.bind(("", 0))
            address = ("127.0.0.1" if one_host else socket.gethostname(), s.getsockname()[1])
    host, port = world.bcast(address, root=0)
    dist.init_process_group("gloo", init_method=f"tcp://{host}:{port}", rank=world.Get_rank(),
                            world_size=world.Get_size())


_GROUPS: dict[tuple[int, int], list] = {}


def _pipeline_groups(pp: int, dp: int) -> list:
    """One gloo group per replica's pipeline, made once per process and layout: every rank makes
    every group, in the same order. (Each new group keeps gloo threads alive; making them afresh
    for every check slowed a long test session of many checks down to minutes per check.)"""
    if (pp, dp) not in _GROUPS:
        _GROUPS[(pp, dp)] = [dist.new_group([j * pp + s for s in range(pp)]) for j in range(dp)]
    return _GROUPS[(pp, dp)]


class TorchPipelineRank(RankBase):
    """This rank's stages under a torch.distributed.pipelining schedule; PipelineRank's interface."""

    def __init__(self, cfg: RunConfig, grid: Grid, tracer: Tracer | None = None):
        from torch.distributed import pipelining

        self.cfg, self.grid = cfg, grid
        self.tracer = tracer or Tracer(enabled=False)
        self.model_cfg = cfg.model_config()
        self.device = torch.device("cpu")
        self.cuda_aware, self.cuda_aware_how = False, "torch impl: gloo"
        _init_gloo(grid)
        groups = _pipeline_groups(cfg.pp, cfg.dp)
        p, v, r = cfg.pp, cfg.chunks, grid.stage
        placement = placement_for(cfg.schedule, p, v)
        self.split, mine, self.layer_ids, self.layers = build_own_layers(cfg, placement, r)
        layers = dict(zip(self.layer_ids, self.layers))
        self.module = nn.Sequential(*self.layers)
        self.stages, self.chunk_modules = [], []
        for s, ids in mine.items():
            chunk = nn.Sequential(*(layers[i] for i in ids))
            self.chunk_modules.append(chunk)
            stage = pipelining.PipelineStage(chunk, s, placement.num_stages, self.device, group=groups[grid.replica])
            self._time(stage, s)
            self.stages.append(stage)
        schedule_cls = getattr(pipelining, SCHEDULES[cfg.schedule].torch_class)
        stages = self.stages if SCHEDULES[cfg.schedule].default_chunks > 1 else self.stages[0]
        self.schedule = schedule_cls(stages, n_microbatches=cfg.microbatches, scale_grads=True,
                                     loss_fn=lambda out, tgt: models.loss_fn(self.model_cfg, out, tgt))
        self.optimizer = make_optimizer(cfg, list(self.module.parameters()))
        self.holds_input = placement.rank_of(0) == r               # V placement: rank 0 holds both ends
        self.loss_rank = placement.rank_of(placement.num_stages - 1)
        self.holds_target = self.loss_rank == r

    def _time(self, stage, index: int) -> None:
        """Trace F, B, I and W of ``stage`` (virtual stage ``index``) around PyTorch's own calls."""
        tracer = self.tracer

        def timed(method, op_of):
            def call(chunk_id, *args, **kwargs):
                start = tracer.now()
                out = method(chunk_id, *args, **kwargs)
                tracer.record(op_of(kwargs), index, chunk_id, start, tracer.now())
                return out
            return call

        stage.forward_one_chunk = timed(stage.forward_one_chunk, lambda kw: "F")
        stage.backward_one_chunk = timed(stage.backward_one_chunk,
                                         lambda kw: "B" if kw.get("full_backward", True) else "I")
        stage.backward_weight_one_chunk = timed(stage.backward_weight_one_chunk, lambda kw: "W")

    def prepare(self, step: int) -> None:
        """This replica's batch of ``step`` (PyTorch splits it into microbatches itself) and cleared
        gradients, outside the timed step."""
        x, y = models.make_batch(self.model_cfg, self.cfg.batch, self.cfg.seed, step, self.cfg.torch_dtype)
        self._prepared = (step, torch.cat(replica_microbatches(self.cfg, x, self.grid.replica)),
                          torch.cat(replica_microbatches(self.cfg, y, self.grid.replica)))
        self.optimizer.zero_grad(set_to_none=True)

    def forward_backward(self, step: int) -> tuple[float, StepStats]:
        x, y = self._data(step)
        losses: list[torch.Tensor] = []
        args = (x,) if self.holds_input else ()
        kwargs = {"target": y, "losses": losses} if self.holds_target else {}
        self.schedule.step(*args, **kwargs)
        if self.cfg.dp > 1:
            average_gradients(list(self.module.parameters()), self.grid.data, self.cfg.dp, staging=False)
        local = float(sum(float(l.detach()) for l in losses) / self.cfg.microbatches) if losses else 0.0
        stats = StepStats()
        stats.peak_in_flight = -1       # not observable inside torch's schedules
        return global_loss(local, self.grid.data, self.grid.pipe, self.cfg.dp, root=self.loss_rank), stats
