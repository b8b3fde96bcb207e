"""Runs one rank's action list against its stages: the only code that executes a schedule.

It talks to other ranks only through a :class:`~ppbench.run.transport.Transport` (MPI, or in one
process), so the order in which it executes a plan can be tested without MPI.

Execution rules (the simulator models the same ones, see :mod:`ppbench.sim.simulator`):

- RECV actions post their receive (unless posted early, below); SEND actions post their send.
- Before each compute action, ``nonblocking`` mode posts the receives that the *next* compute
  action needs, so they arrive while this one computes; ``blocking`` mode instead completes every
  outstanding transfer, so no computation overlaps a transfer.
- A compute action that needs a received tensor waits for that receive (``take``), then computes.
- At the end of the step every send must have completed and no receive may be left over.
"""

from __future__ import annotations

import os
import signal
import time

import torch

from ppbench.config import ConfigError, InjectedFault
from ppbench.plan.actions import Action, Op
from ppbench.plan.comm import highest_tag, message_tag, peer_rank
from ppbench.plan.placement import Placement
from ppbench.run.tracer import Tracer
from ppbench.run.transport import Transport

__all__ = ["Executor", "ActionError", "NonFiniteLoss", "StepStats", "Fault"]


class ActionError(RuntimeError):
    """An action failed; the message names rank, stage, action, microbatch and step."""

    def __init__(self, where: str, action: Action, cause: BaseException, step: int | None = None):
        self.stage, self.action = action.stage, action
        when = f" of step {step}" if step is not None else ""
        super().__init__(f"{where}, stage {action.stage}, failed in action {action.describe()}{when}: "
                         f"{type(cause).__name__}: {cause}")


class NonFiniteLoss(FloatingPointError):
    """A microbatch's loss is NaN or infinite: the training diverged (or a fault was injected)."""


class StepStats:
    """What one step left behind on this rank besides its events."""

    def __init__(self):
        self.loss = 0.0               # sum of 1/m-scaled microbatch losses (last stage only)
        self.peak_in_flight = 0       # microbatches forwarded but not yet backwarded (I or B), at most
        self.peak_saved_bytes = 0     # activation bytes saved for backward, at most
        self.peak_device_bytes = 0    # CUDA allocator peak during the step (0 on CPU)


class Fault:
    """Testing aid: do ``kind`` (raise, nan, kill, hang) when reaching an action that matches
    ``op``, ``mb`` and, if given, ``stage``."""

    def __init__(self, op: Op, mb: int, stage: int | None, kind: str):
        self.op, self.mb, self.stage, self.kind = op, mb, stage, kind

    def matches(self, action: Action) -> bool:
        return action.op is self.op and action.mb == self.mb and self.stage in (None, action.stage)


class Executor:
    """Executes a rank's action list, step after step.

    ``stages[s]`` computes F/I/W/B of virtual stage s (one entry per stage ``placement`` gives this rank).
    """

    def __init__(self, *, rank: int, placement: Placement, stages: dict, actions: list[Action],
                 transport: Transport, mode: str, activation_shape: tuple[int, ...], dtype: torch.dtype,
                 num_microbatches: int, tracer: Tracer | None = None, fault: Fault | None = None, where: str = ""):
        if set(stages) != set(placement.stages_of(rank)):
            raise ValueError(f"rank {rank} holds stages {placement.stages_of(rank)}, given {sorted(stages)}")
        self.rank, self.placement = rank, placement
        self.stages, self.actions, self.transport = stages, actions, transport
        self.blocking = mode == "blocking"
        self.shape, self.dtype = activation_shape, dtype
        self.m = num_microbatches
        self.last = placement.num_stages - 1
        self.tracer = tracer or Tracer(enabled=False)
        self.fault = fault
        self.current: Action | None = None
        self.progress_at = time.monotonic()       # when this rank last started an action (for the stall guard)
        self.where = where or f"pipeline rank {rank}"   # names this process in error messages
        highest = highest_tag(placement.num_stages, num_microbatches)
        if transport.tag_limit is not None and highest > transport.tag_limit:   # the same verdict on every rank
            raise ConfigError("microbatches", f"{num_microbatches} microbatches x {placement.num_stages} stages need "
                              f"MPI tags up to {highest}, above this MPI's limit {transport.tag_limit}")
        self.next_recvs = self._lookahead(actions)

    def run(self, inputs: list, targets: list, step: int | None = None) -> StepStats:
        """One step (numbered ``step`` in error messages): every action once."""
        self.saved: dict[tuple[int, int], tuple] = {}
        self.outputs: dict[tuple[int, int], torch.Tensor] = {}
        self.input_grads: dict[tuple[int, int], torch.Tensor] = {}
        self.pending_w: dict[tuple[int, int], torch.Tensor | None] = {}   # output gradient kept for W
        self.inputs, self.targets = inputs, targets
        self.stats = StepStats()
        self.progress_at = time.monotonic()
        self.nan_outputs = False
        self.in_flight = 0
        self._live_bytes: dict[tuple[int, int], int] = {}
        self._loss_parts: list[torch.Tensor] = []
        for index, action in enumerate(self.actions):
            try:
                self._execute(index, action)
            except ActionError:
                raise
            except Exception as exc:
                raise ActionError(self.where, action, exc, step) from exc
        self.transport.finish()
        if self.saved or self.input_grads:
            raise RuntimeError(f"{self.where}: state left after the step: {sorted(self.saved)} "
                               f"{sorted(self.input_grads)}")
        self.stats.loss = float(sum(part.double() for part in self._loss_parts)) if self._loss_parts else 0.0
        return self.stats

    def _execute(self, index: int, action: Action) -> None:
        op, key = action.op, (action.stage, action.mb)
        self.current = action
        self.progress_at = time.monotonic()
        if self.fault and self.fault.matches(action):
            self._inject(self.fault.kind, action)
        if op.is_recv:
            self._post_recv(action)
        elif op is Op.SEND_F:
            self._send(action, self.outputs.pop(key))
        elif op is Op.SEND_B:
            self._send(action, self.input_grads.pop(key))
        else:
            for later in self.next_recvs[index]:
                self._post_recv(later)
            if self.blocking:
                self.transport.wait_all()
            if op is Op.F:
                self._forward(action)
            elif op is Op.W:
                self._weight_grad(action)
            else:
                self._backward(action)

    def _inject(self, kind: str, action: Action) -> None:
        if kind == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif kind == "hang":
            time.sleep(86400)
        elif kind == "nan":
            self.nan_outputs = True   # this rank's forward outputs are NaN from here on
        else:
            raise InjectedFault(f"fault injected at {action}")

    def describe(self) -> str:
        """What this rank is doing now (for time-limit reports)."""
        a = self.current
        doing = f"stage {a.stage}, in action {a.describe()}" if a else "stage ?, between steps"
        waiting = self.transport.waiting_for()
        return f"{self.where}, {doing}" + (f", waiting for {waiting}" if waiting else "")

    def _forward(self, action: Action) -> None:
        stage, key = action.stage, (action.stage, action.mb)
        x = self.inputs[action.mb] if stage == 0 else self.transport.take(Action(stage, Op.RECV_F, action.mb))
        target = self.targets[action.mb] if stage == self.last else None
        start = self.tracer.now()
        y, ctx, nbytes = self.stages[stage].forward(x, target)
        if self.nan_outputs:
            y = y * float("nan")
        self.tracer.record(Op.F, stage, action.mb, start, self.tracer.now())
        if stage == self.last and not torch.isfinite(y).all():
            raise NonFiniteLoss(f"loss of microbatch {action.mb} is {float(y.detach())}")
        self.saved[key] = ctx
        if stage == self.last:
            self._loss_parts.append(y.detach())
        else:
            self.outputs[key] = y
        self._live_bytes[key] = nbytes
        self.in_flight += 1
        self.stats.peak_in_flight = max(self.stats.peak_in_flight, self.in_flight)
        self.stats.peak_saved_bytes = max(self.stats.peak_saved_bytes, sum(self._live_bytes.values()))

    def _backward(self, action: Action) -> None:
        """B (full backward) or I (input gradient; the weight gradient waits for W)."""
        stage, key = action.stage, (action.stage, action.mb)
        grad = None if stage == self.last else self.transport.take(Action(stage, Op.RECV_B, action.mb))
        self.in_flight -= 1
        start = self.tracer.now()
        if action.op is Op.I:
            grad_in = self.stages[stage].backward_input(self.saved[key], grad, key)
            self.pending_w[key] = grad
        else:
            grad_in = self.stages[stage].backward(self.saved.pop(key), grad, key)
            self._live_bytes.pop(key)
        self.tracer.record(action.op, stage, action.mb, start, self.tracer.now())
        if stage > 0:
            self.input_grads[key] = grad_in

    def _weight_grad(self, action: Action) -> None:
        key = (action.stage, action.mb)
        ctx, grad = self.saved.pop(key), self.pending_w.pop(key)
        start = self.tracer.now()
        self.stages[action.stage].backward_weight(ctx, grad, key)
        self.tracer.record(Op.W, action.stage, action.mb, start, self.tracer.now())
        self._live_bytes.pop(key)

    def _send(self, action: Action, tensor: torch.Tensor) -> None:
        self.transport.send(tensor, action, peer_rank(action, self.placement),
                            message_tag(action, self.placement.num_stages, self.m))

    def _post_recv(self, action: Action) -> None:
        self.transport.post_recv(action, self.shape, self.dtype, peer_rank(action, self.placement),
                                 message_tag(action, self.placement.num_stages, self.m))

    def _lookahead(self, actions: list[Action]) -> list[list[Action]]:
        """For each compute action, the receives that the next compute action needs."""
        ahead: list[list[Action]] = [[] for _ in actions]
        if self.blocking:
            return ahead
        compute = [i for i, a in enumerate(actions) if a.is_compute]
        for here, nxt in zip(compute, compute[1:]):
            ahead[here] = [a for a in actions[here + 1:nxt] if a.is_recv]
        return ahead
