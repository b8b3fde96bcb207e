"""Runs one rank's action list against its stage modules: the only code that executes a schedule."""

from __future__ import annotations

from typing import Callable

import torch
from mpi4py import MPI
from torch import nn

from .actions import Action
from .config import InjectedFault
from .simulator import peer_rank
from .transport import Transport

__all__ = ["Executor", "ActionError", "message_tag"]


class ActionError(RuntimeError):
    """An action failed; the message names rank, stage, action and microbatch."""

    def __init__(self, where: str, stage: int, action: Action, cause: BaseException):
        self.stage, self.action = stage, action
        super().__init__(f"{where}, stage {stage}, failed in action {action} "
                         f"[{action.describe()}]: {type(cause).__name__}: {cause}")


def message_tag(direction: str, mb: int, boundary: int, num_stages: int) -> int:
    """Tag of the message crossing ``boundary`` (between virtual stages b and b + 1)."""
    return (mb * num_stages + boundary) * 2 + (direction == "B")


class Executor:
    """Executes per-rank action lists step after step.

    ``modules[c]`` is this rank's piece of model chunk c (virtual stage ``c * p + rank``).
    ``transport='blocking'`` completes every transfer before the next compute action (no compute
    overlaps communication); ``'nonblocking'`` pre-posts the receives of the next compute action
    and leaves sends in flight until the end of the step.
    """

    def __init__(self, *, rank: int, p: int, modules: dict[int, nn.Module], actions: list[Action],
                 transport: Transport, mode: str, loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 activation_shape: tuple[int, ...], dtype: torch.dtype, num_microbatches: int,
                 fault: str | None = None, where: str = ""):
        self.rank, self.p, self.v = rank, p, len(modules)
        self.modules, self.actions, self.transport = modules, actions, transport
        self.blocking = mode == "blocking"
        self.loss, self.shape, self.dtype = loss, activation_shape, dtype
        self.m = num_microbatches
        self.fault = fault   # str(action) at which to raise InjectedFault (testing aid)
        self.where = where or f"pipeline rank {rank}"   # names this process in error messages
        self.last = p * self.v - 1
        highest = message_tag("B", num_microbatches - 1, self.last, self.last + 1)
        tag_ub = transport.comm.Get_attr(MPI.TAG_UB)
        if tag_ub is not None and highest > tag_ub:
            raise ValueError(f"{num_microbatches} microbatches x {self.last + 1} stages need MPI tags up to "
                             f"{highest}, above this MPI's limit {tag_ub}")
        # next_recvs[i]: receives to pre-post before compute action i (those of the next compute)
        self.next_recvs = self._lookahead(actions)

    def run(self, inputs: list[torch.Tensor], targets: list[torch.Tensor]) -> torch.Tensor:
        """One step: every action once. Returns this rank's summed (1/m-scaled) loss (0 off the last stage)."""
        self.saved: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}
        self.input_grads: dict[tuple[int, int], torch.Tensor] = {}
        self.inputs, self.targets = inputs, targets
        self.loss_sum = torch.zeros((), dtype=self.dtype)
        for index, action in enumerate(self.actions):
            try:
                self._execute(index, action)
            except ActionError:
                raise
            except Exception as exc:
                raise ActionError(self.where, self._stage(action), action, exc) from exc
        self.transport.finish()
        if self.saved or self.input_grads:
            raise RuntimeError(f"rank {self.rank}: state left after the step: {sorted(self.saved)} {sorted(self.input_grads)}")
        return self.loss_sum

    def _execute(self, index: int, action: Action) -> None:
        op, key = action.op, (action.mb, action.chunk)
        if self.fault == str(action):
            raise InjectedFault(f"fault injected at {action}")
        if op == "RECV_F" or op == "RECV_B":
            self._post_recv(action)
        elif op == "SEND_F":
            self._send(action, self.saved[key][1])
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
                raise NotImplementedError(f"action {op} is not supported by this executor yet")

    def _stage(self, action: Action) -> int:
        return action.chunk * self.p + self.rank

    def _forward(self, action: Action) -> None:
        stage = self._stage(action)
        if stage == 0:
            x = self.inputs[action.mb]
        else:
            x = self.transport.take(("F", action.mb, action.chunk)).requires_grad_(True)
        y = self.modules[action.chunk](x)
        if stage == self.last:
            y = self.loss(y, self.targets[action.mb]) / self.m
            self.loss_sum += y.detach()
        self.saved[(action.mb, action.chunk)] = (x, y)

    def _backward(self, action: Action) -> None:
        stage = self._stage(action)
        x, y = self.saved.pop((action.mb, action.chunk))
        if stage == self.last:
            torch.autograd.backward(y)
        else:
            torch.autograd.backward(y, self.transport.take(("B", action.mb, action.chunk)))
        if stage > 0:
            self.input_grads[(action.mb, action.chunk)] = x.grad

    def _boundary(self, action: Action) -> int:
        """Index b of the stage boundary (b, b + 1) that this send or receive crosses."""
        stage = self._stage(action)
        downstream = action.op in ("SEND_F", "RECV_B")
        return stage if downstream else stage - 1

    def _send(self, action: Action, tensor: torch.Tensor) -> None:
        peer, _ = peer_rank(action, self.rank, self.p, self.v)
        tag = message_tag(action.direction, action.mb, self._boundary(action), self.last + 1)
        self.transport.send(tensor, peer, tag)

    def _post_recv(self, action: Action) -> None:
        peer, _ = peer_rank(action, self.rank, self.p, self.v)
        tag = message_tag(action.direction, action.mb, self._boundary(action), self.last + 1)
        self.transport.post_recv((action.direction, action.mb, action.chunk), self.shape, self.dtype, peer, tag)

    def _lookahead(self, actions: list[Action]) -> list[list[Action]]:
        """For each compute action, the receives between the next compute action and the one after."""
        ahead: list[list[Action]] = [[] for _ in actions]
        if self.blocking:
            return ahead
        compute = [i for i, a in enumerate(actions) if a.is_compute]
        for here, nxt in zip(compute, compute[1:]):
            # receives that precede compute action `nxt` (after `here`) can be posted before `here` runs
            ahead[here] = [a for a in actions[here + 1:nxt] if a.is_recv]
        return ahead
