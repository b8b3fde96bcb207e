"""One pipeline in one process: every rank is a thread running ppbench's executor over a
:class:`~ppbench.run.transport.LocalTransport`. The same executor, stages and schedules as under
MPI, so tests can check execution order and gradients without launching MPI (one replica: dp = 1).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import torch
from torch import nn

from ppbench.config import RunConfig
from ppbench.plan.actions import split_stages
from ppbench.plan.comm import add_communication
from ppbench.run import models
from ppbench.run.executor import Executor, StepStats
from ppbench.run.rank import rank_layers
from ppbench.run.stages import TorchStage
from ppbench.run.training import make_optimizer, replica_microbatches
from ppbench.run.transport import LocalHub, LocalTransport

__all__ = ["run_ranks", "LocalPipeline"]


def run_ranks(executors: list[Executor], hub: LocalHub, inputs: list, targets: list,
              timeout: float = 120.0, step: int | None = None) -> list[StepStats]:
    """One step of every rank's executor, each in its own thread. The first failure is raised (the
    other ranks stop waiting as soon as one fails); a step longer than ``timeout`` raises too."""
    stats: list[StepStats | None] = [None] * len(executors)
    failures: list[BaseException] = []

    def work(rank: int) -> None:
        try:
            stats[rank] = executors[rank].run(inputs, targets, step)
        except BaseException as exc:  # noqa: BLE001 - reported by the caller's thread
            failures.append(exc)
            hub.failed = hub.failed or f"rank {rank} failed"

    threads = [threading.Thread(target=work, args=(r,), daemon=True, name=f"rank-{r}") for r in range(len(executors))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    if failures:
        raise failures[0]
    if any(t.is_alive() for t in threads):
        hub.failed = "step timed out"
        raise TimeoutError(f"in-process step did not end within {timeout:g} s: "
                           + "; ".join(e.describe() for e, t in zip(executors, threads) if t.is_alive()))
    return [s for s in stats if s is not None]


class LocalPipeline:
    """``cfg``'s pipeline (model workload, dp = 1) with every rank a thread of this process.

    Offers what :class:`~ppbench.run.rank.RankBase` offers the check (``forward_backward``,
    ``optimizer_step``, ``named_parameters``) for all ranks at once. ``stage_hook(rank, stage, stage_obj)``
    may wrap each stage (tests record calls with it); ``transport_cls`` replaces LocalTransport.
    """

    def __init__(self, cfg: RunConfig, transport_cls: type[LocalTransport] = LocalTransport,
                 stage_hook: Callable | None = None):
        if cfg.dp != 1 or cfg.workload != "model" or cfg.impl != "ppbench":
            raise ValueError("an in-process pipeline runs one replica (dp = 1) of the model workload with "
                             "ppbench's executor")
        self.cfg = cfg
        self.model_cfg = cfg.model_config()
        p, m = cfg.pp, cfg.microbatches
        orders, self.placement = cfg.plan()
        last = self.placement.num_stages - 1
        self.layers = models.build_layers(self.model_cfg, cfg.seed, cfg.torch_dtype)
        self.split = cfg.stage_split(self.placement.num_stages)
        self.hub = LocalHub()
        nonblocking = cfg.resolved_transport == "nonblocking"
        self.transports, self.executors = [], []
        for r in range(p):
            transport = transport_cls(self.hub, r)
            stages = {}
            split = split_stages(orders[r])
            for s, ids in rank_layers(self.split, self.placement, r).items():
                stage = TorchStage(nn.Sequential(*(self.layers[i] for i in ids)), s == 0, s == last,
                                   lambda out, tgt: models.loss_fn(self.model_cfg, out, tgt), m,
                                   transport.progress if nonblocking else None, recompute=cfg.recompute,
                                   split=s in split)
                stages[s] = stage_hook(r, s, stage) if stage_hook else stage
            actions = add_communication(orders[r], self.placement)
            self.transports.append(transport)
            self.executors.append(Executor(
                rank=r, placement=self.placement, stages=stages, actions=actions, transport=transport,
                mode=cfg.resolved_transport, dtype=cfg.torch_dtype,
                activation_shape=models.activation_shape(self.model_cfg, cfg.microbatch_size), num_microbatches=m,
                where=f"rank {r}"))
        self.layer_ids = list(range(len(self.layers)))
        self.optimizer = make_optimizer(cfg, [q for layer in self.layers for q in layer.parameters()])

    def forward_backward(self, step: int) -> tuple[float, list[StepStats]]:
        """Gradients of the mean loss over the global batch of ``step``: (that loss, each rank's stats)."""
        x, y = models.make_batch(self.model_cfg, self.cfg.batch, self.cfg.seed, step, self.cfg.torch_dtype)
        inputs, targets = replica_microbatches(self.cfg, x, 0), replica_microbatches(self.cfg, y, 0)
        self.optimizer.zero_grad(set_to_none=False)
        stats = run_ranks(self.executors, self.hub, inputs, targets, step=step)
        return sum(s.loss for s in stats), stats

    def optimizer_step(self) -> None:
        self.optimizer.step()

    def named_parameters(self):
        """((global layer index, parameter name), parameter) for every layer."""
        for index, layer in enumerate(self.layers):
            for name, param in layer.named_parameters():
                yield (index, name), param

    def gradients(self) -> dict[tuple[int, str], torch.Tensor]:
        return {key: param.grad.clone() for key, param in self.named_parameters()}
