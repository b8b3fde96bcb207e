"""Runs one rank's action list against its stages: the only code that executes a schedule."""

from __future__ import annotations

import os
import signal
import time

import torch
from mpi4py import MPI

from ppbench.plan.actions import Action
from ppbench.config import InjectedFault
from ppbench.sim.simulator import message_tag, peer_rank
from ppbench.run.tracer import Tracer
from ppbench.run.transport import Transport

__all__ = ["Executor", "ActionError", "StepStats"]


class ActionError(RuntimeError):
    """An action failed; the message names rank, stage, action and microbatch."""

    def __init__(self, where: str, stage: int, action: Action, cause: BaseException):
        self.stage, self.action = stage, action
        super().__init__(f"{where}, stage {stage}, failed in action {action} "
                         f"[{action.describe()}]: {type(cause).__name__}: {cause}")


class StepStats:
    """What one step left behind on this rank besides its events."""

    def __init__(self):
        self.loss = 0.0               # sum of 1/m-scaled microbatch losses (last stage only)
        self.peak_in_flight = 0       # microbatches forwarded but not yet backwarded, at most
        self.peak_saved_bytes = 0     # activation bytes saved for backward, at most
        self.peak_device_bytes = 0    # CUDA allocator peak during the step (0 on CPU)


class Executor:
    """Executes a rank's action list, step after step.

    ``stages[c]`` computes F/B of model chunk c (virtual stage ``c * p + rank``).
    ``mode='blocking'`` completes every transfer before the next compute action (no compute
    overlaps communication); ``'nonblocking'`` pre-posts the receives of the next compute action
    before the current one runs and leaves sends in flight until the end of the step.
    """

    def __init__(self, *, rank: int, p: int, stages: dict, actions: list[Action], transport: Transport,
                 mode: str, activation_shape: tuple[int, ...], dtype: torch.dtype, num_microbatches: int,
                 tracer: Tracer | None = None, fault: tuple[str, str] | None = None, where: str = ""):
        self.rank, self.p, self.v = rank, p, len(stages)
        self.stages, self.actions, self.transport = stages, actions, transport
        self.blocking = mode == "blocking"
        self.shape, self.dtype = activation_shape, dtype
        self.m = num_microbatches
        self.last = p * self.v - 1
        self.tracer = tracer or Tracer(enabled=False)
        self.fault = fault   # (str(action), kind) at which to inject a fault (testing aid)
        self.current: Action | None = None
        self.where = where or f"pipeline rank {rank}"   # names this process in error messages
        highest = 2 * num_microbatches * (self.last + 1) - 1     # largest message_tag of a step
        tag_ub = transport.comm.Get_attr(MPI.TAG_UB)
        if tag_ub is not None and highest > tag_ub:
            raise ValueError(f"{num_microbatches} microbatches x {self.last + 1} stages need MPI tags up to "
                             f"{highest}, above this MPI's limit {tag_ub}")
        self.next_recvs = self._lookahead(actions)
        self.split_backward = any(a.op == "W" for a in actions)   # B then W, or one full B

    def run(self, inputs: list, targets: list) -> StepStats:
        """One step: every action once."""
        self.saved: dict[tuple[int, int], tuple] = {}
        self.outputs: dict[tuple[int, int], torch.Tensor] = {}
        self.input_grads: dict[tuple[int, int], torch.Tensor] = {}
        self.pending_w: dict[tuple[int, int], torch.Tensor | None] = {}   # output gradient kept for W
        self.inputs, self.targets = inputs, targets
        self.stats = StepStats()
        self.nan_outputs = False
        self.in_flight = 0
        self._live_bytes: dict[tuple[int, int], int] = {}
        loss = torch.zeros((), dtype=torch.float64)
        self._loss_parts: list[torch.Tensor] = []
        for index, action in enumerate(self.actions):
            try:
                self._execute(index, action)
            except ActionError:
                raise
            except Exception as exc:
                raise ActionError(self.where, self._stage(action), action, exc) from exc
        self.transport.finish()
        if self.saved or self.input_grads:
            raise RuntimeError(f"{self.where}: state left after the step: {sorted(self.saved)} {sorted(self.input_grads)}")
        for part in self._loss_parts:
            loss += part.double()
        self.stats.loss = float(loss)
        return self.stats

    def _execute(self, index: int, action: Action) -> None:
        op, key = action.op, (action.mb, action.chunk)
        self.current = action
        if self.fault and self.fault[0] == str(action):
            self._inject(self.fault[1], action)
        if op == "RECV_F" or op == "RECV_B":
            self._post_recv(action)
        elif op == "SEND_F":
            self._send(action, self.outputs.pop(key))
        elif op == "SEND_B":
            self._send(action, self.input_grads.pop(key))
        else:
            for later in self.next_recvs[index]:
                self._post_recv(later)
            if self.blocking:
                self.transport.wait_all()
            if op == "F":
                self._forward(action)
            elif op == "B":
                self._backward(action)
            else:
                self._weight_grad(action)

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
        doing = f"in action {self.current} [{self.current.describe()}]" if self.current else "between steps"
        waiting = self.transport.waiting_for()
        return f"{self.where}, stage {self._stage(self.current) if self.current else '?'}, {doing}" + (
            f", waiting for {waiting}" if waiting else "")

    def _stage(self, action: Action) -> int:
        return action.chunk * self.p + self.rank

    def _forward(self, action: Action) -> None:
        stage, key = self._stage(action), (action.mb, action.chunk)
        x = self.inputs[action.mb] if stage == 0 else self.transport.take(("F",) + key)
        target = self.targets[action.mb] if stage == self.last else None
        start = self.tracer.now()
        y, ctx, nbytes = self.stages[action.chunk].forward(x, target)
        if self.nan_outputs:
            y = y * float("nan")
        self.tracer.record("F", action.mb, action.chunk, start, self.tracer.now())
        if stage == self.last and not torch.isfinite(y).all():
            raise FloatingPointError(f"loss of microbatch {action.mb} is {float(y)}")
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
        stage, key = self._stage(action), (action.mb, action.chunk)
        grad = None if stage == self.last else self.transport.take(("B",) + key)
        self.in_flight -= 1
        start = self.tracer.now()
        if self.split_backward:
            ctx = self.saved[key]
            grad_in = self.stages[action.chunk].backward_input(ctx, grad)
            self.pending_w[key] = grad
        else:
            ctx = self.saved.pop(key)
            grad_in = self.stages[action.chunk].backward(ctx, grad)
            self._live_bytes.pop(key)
        self.tracer.record("B", action.mb, action.chunk, start, self.tracer.now())
        if stage > 0:
            self.input_grads[key] = grad_in

    def _weight_grad(self, action: Action) -> None:
        key = (action.mb, action.chunk)
        ctx, grad = self.saved.pop(key), self.pending_w.pop(key)
        start = self.tracer.now()
        self.stages[action.chunk].backward_weight(ctx, grad)
        self.tracer.record("W", action.mb, action.chunk, start, self.tracer.now())
        self._live_bytes.pop(key)

    def _message(self, action: Action) -> tuple[int, int]:
        peer, _ = peer_rank(action, self.rank, self.p, self.v)
        return peer, message_tag(action, self.rank, self.p, self.v, self.m)

    def _send(self, action: Action, tensor: torch.Tensor) -> None:
        peer, tag = self._message(action)
        self.transport.send(tensor, peer, tag, action.op, action.mb, action.chunk)

    def _post_recv(self, action: Action) -> None:
        peer, tag = self._message(action)
        self.transport.post_recv((action.direction, action.mb, action.chunk), self.shape, self.dtype, peer, tag,
                                 action.op, action.mb, action.chunk)

    def _lookahead(self, actions: list[Action]) -> list[list[Action]]:
        """For each compute action, the receives that the next compute action needs."""
        ahead: list[list[Action]] = [[] for _ in actions]
        if self.blocking:
            return ahead
        compute = [i for i, a in enumerate(actions) if a.is_compute]
        for here, nxt in zip(compute, compute[1:]):
            ahead[here] = [a for a in actions[here + 1:nxt] if a.is_recv]
        return ahead
