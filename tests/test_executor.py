"""The executor in one process (every rank a thread over LocalTransport): the exact sequence it
executes on each rank, receives' posts and completions included, against the plan; gradients
against single-process training; deadlocks that end instead of hanging.

Like torchgpipe's lockstep tests: one case written out literally, then every schedule checked
against the executor's documented rules (ppbench/run/executor.py), derived here independently.
"""

import functools

import pytest
from plans import executor_sequence

from ppbench.config import ConfigError, RunConfig
from ppbench.plan.schedules import NEEDS_NONBLOCKING, SCHEDULES, build_schedule, schedule_problem
from ppbench.run.check import TOLERANCE, check_in_process
from ppbench.run.executor import ActionError
from ppbench.run.local import LocalPipeline
from ppbench.run.transport import LocalTransport


class RecordingTransport(LocalTransport):
    """Logs what the executor asks of it: 'post X' (a receive posted), 'take X' (a receive's data
    awaited and handed over), 'send X', 'wait all' (blocking mode's barrier before computing)."""

    def __init__(self, hub, rank, log: list, **kwargs):
        super().__init__(hub, rank, **kwargs)
        self.log = log

    def post_recv(self, action, *args):
        if action not in self._recvs:
            self.log.append(f"post {action}")
        super().post_recv(action, *args)

    def take(self, action):
        self.log.append(f"take {action}")
        return super().take(action)

    def send(self, tensor, action, *args):
        self.log.append(f"send {action}")
        super().send(tensor, action, *args)

    def wait_all(self):
        self.log.append("wait all")
        super().wait_all()


class RecordingStage:
    """Passes every call to the real stage and logs the compute action it is."""

    def __init__(self, stage, number: int, log: list):
        self.stage, self.number, self.log = stage, number, log
        self.mb = {"F": 0, "I": 0, "W": 0, "B": 0}

    def _note(self, op: str) -> None:
        self.log.append(f"{self.number}{op}*")          # microbatch unknown to a stage: '*'

    def forward(self, *args):
        self._note("F")
        return self.stage.forward(*args)

    def backward(self, *args):
        self._note("B")
        return self.stage.backward(*args)

    def backward_input(self, *args):
        self._note("I")
        return self.stage.backward_input(*args)

    def backward_weight(self, *args):
        self._note("W")
        return self.stage.backward_weight(*args)


def executed(cfg: RunConfig) -> list[list[str]]:
    """Run one step in process and return each rank's log."""
    logs = [[] for _ in range(cfg.pp)]
    pipe = LocalPipeline(cfg, transport_cls=lambda hub, r: RecordingTransport(hub, r, logs[r], wait_limit=20),
                         stage_hook=lambda r, s, stage: RecordingStage(stage, s, logs[r]))
    pipe.forward_backward(0)
    return logs


def expected(actions, mode: str, last_stage: int) -> list[str]:
    """The log the executor's rules give for one rank's plan (see plans.executor_sequence)."""
    return [f"{a.stage}{a.op.value}*" if kind == "compute" else kind if a is None else f"{kind} {a}"
            for kind, a in executor_sequence(actions, mode, last_stage)]


def test_1f1b_two_ranks_two_microbatches_written_out():
    logs = executed(RunConfig(schedule="1f1b", pp=2, microbatches=2, transport="nonblocking"))
    assert logs[0] == ["0F*", "send 0SEND_F0", "post 0RECV_B0",       # F1's turn: B0's gradient posted early
                       "0F*", "send 0SEND_F1", "post 0RECV_B1",
                       "take 0RECV_B0", "0B*",
                       "take 0RECV_B1", "0B*",
                       "wait all"]                                       # end of step: every send completes
    assert logs[1] == ["post 1RECV_F0", "take 1RECV_F0", "1F*",
                       "post 1RECV_F1", "1B*", "send 1SEND_B0",         # F1's input posted before B0 runs
                       "take 1RECV_F1", "1F*",
                       "1B*", "send 1SEND_B1",
                       "wait all"]


def test_1f1b_blocking_written_out():
    logs = executed(RunConfig(schedule="1f1b", pp=2, microbatches=2, transport="blocking"))
    assert logs[1] == ["post 1RECV_F0", "wait all", "take 1RECV_F0", "1F*",
                       "wait all", "1B*", "send 1SEND_B0",
                       "post 1RECV_F1", "wait all", "take 1RECV_F1", "1F*",
                       "wait all", "1B*", "send 1SEND_B1",
                       "wait all"]


ORDER_CASES = [(name, p, m, mode) for name in SCHEDULES for p in (1, 2, 3, 4) for m in (1, 2, 4, 5, 8)
               for mode in ("blocking", "nonblocking")
               if not (mode == "blocking" and name in NEEDS_NONBLOCKING)
               and schedule_problem(name, p, m, SCHEDULES[name].default_chunks) is None]


@pytest.mark.parametrize("name,p,m,mode", ORDER_CASES, ids=[f"{n}-p{p}-m{m}-{t}" for n, p, m, t in ORDER_CASES])
def test_every_rank_executes_its_plan_in_exact_order(name, p, m, mode):
    v = SCHEDULES[name].default_chunks
    cfg = RunConfig(schedule=name, pp=p, microbatches=m, chunks=v, transport=mode)
    plan = build_schedule(name, p, m, v)
    for rank, log in enumerate(executed(cfg)):
        assert log == expected(plan[rank], mode, p * v - 1), f"rank {rank}"


def in_process_cases():
    out = []
    for name in SCHEDULES:
        v = SCHEDULES[name].default_chunks
        for model, p in (("mlp", 1), ("mlp", 2), ("mlp", 4), ("gpt", 3)):
            for m in (1, 3, 4, 8):
                try:
                    RunConfig(schedule=name, pp=p, microbatches=m, chunks=v, model=model).validate(world_size=p)
                except ConfigError:
                    continue
                out.append(pytest.param(name, p, m, v, model, id=f"{name}-{model}-p{p}-m{m}"))
    return out


@pytest.mark.parametrize("name,p,m,v,model", in_process_cases())
def test_in_process_gradients_and_steps_match_single_process_training(name, p, m, v, model):
    result = check_in_process(RunConfig(schedule=name, pp=p, microbatches=m, chunks=v, model=model, steps=2))
    assert result["grad_max_rel_err"] <= TOLERANCE["float64"], result
    assert result["param_max_rel_err"] <= TOLERANCE["float64"], result
    assert result["loss_rel_err"] <= TOLERANCE["float64"], result


def test_a_wrong_reference_is_not_equivalent():
    """The check can fail: a reference built from another seed must not pass."""
    from ppbench.run.reference import Reference

    other_seed = functools.partial(lambda cfg, device: Reference(RunConfig(**{**cfg.to_dict(), "seed": 1}), device))
    result = check_in_process(RunConfig(pp=2, microbatches=2), reference=other_seed)
    assert not result["passed"] and result["grad_max_rel_err"] > 1e-3


def test_a_deadlocking_plan_ends_naming_where_it_is_stuck():
    """Interleaved 1F1B under the blocking transport deadlocks (the simulator says rank 0 at 0F3,
    rank 1 at 1F2); in process it must end with that, not hang."""
    cfg = RunConfig(schedule="interleaved", pp=2, microbatches=4, chunks=2, transport="blocking")
    pipe = LocalPipeline(cfg, transport_cls=lambda hub, r: LocalTransport(hub, r, wait_limit=1.0))
    with pytest.raises(ActionError) as info:
        pipe.forward_backward(0)
    message = str(info.value)
    assert ("rank 0, stage 0, failed in action 0F3" in message) or ("rank 1, stage 1, failed in action 1F2" in message)
    assert "TransferTimeout: waited 1 s for" in message
