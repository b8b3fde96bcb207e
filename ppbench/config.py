"""Run configuration and its validation: every bad value is rejected before any work starts."""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import asdict, dataclass, field, fields

from ppbench.model_configs import DIMENSIONS, PRESETS, GPTConfig, model_config
from ppbench.plan.comm import highest_tag
from ppbench.plan.schedules import SCHEDULES, schedule_problem

__all__ = ["RunConfig", "ConfigError", "InjectedFault", "DTYPES", "OPTIMIZERS", "TRANSPORTS", "WORKLOADS"]

DTYPES = ("float32", "float64")   # names of torch dtypes (torch is imported only when a run needs it)
OPTIMIZERS = ("sgd", "adam")
TRANSPORTS = ("auto", "blocking", "nonblocking")
WORKLOADS = ("model", "synthetic")
FAULT_KINDS = ("raise", "nan", "kill", "hang")
#: the largest tag any MPI may allow (a C int); the library's own MPI_TAG_UB is checked at start-up
MAX_TAG = 2**31 - 1


class ConfigError(ValueError):
    """A configuration value is not allowed; ``field`` names it."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"invalid {field}: {message}")


class InjectedFault(RuntimeError):
    """Raised on purpose by ``RunConfig.fault`` to test failure handling."""


def _field(default, help: str, group: str = "run", short: str | None = None, sweep: bool = False,
           limits: tuple[float, float] | None = None):
    """A RunConfig field with what the command line needs to offer it: ``group`` 'run' (check and
    run), 'measure' (run only); ``sweep``: also an option of ``ppbench sweep`` (one value for the grid);
    ``limits``: the allowed (low, high) of a number, both included (docs/limits.md lists them)."""
    return field(default=default, metadata={"help": help, "group": group, "short": short, "sweep": sweep,
                                            "limits": limits})


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run. The command-line options of check, run and sweep, and the
    options that reproduce a configuration (:func:`ppbench.run.sweep.config_args`), come from these fields."""

    schedule: str = _field("1f1b", "schedule: " + ", ".join(SCHEDULES))
    schedule_file: str = _field("", "a schedule file to run instead of --schedule: PyTorch's CSV format or "
                                "ppbench's JSON (see `ppbench validate`); its ranks and microbatches must match "
                                "--pp and --microbatches")
    pp: int = _field(2, "pipeline stages p", limits=(1, 4096))
    dp: int = _field(1, "data-parallel replicas d; world size = pp x dp", sweep=True, limits=(1, 4096))
    microbatches: int = _field(4, "microbatches m per replica per step", short="-m", limits=(1, 65536))
    chunks: int = _field(0, "stages v per rank (0: the schedule's own, 2 for " +
                         ", ".join(n for n, s in SCHEDULES.items() if s.default_chunks > 1) + ", else 1)",
                         short="-v", limits=(1, 64))
    global_batch: int = _field(0, "samples per step over all replicas (0: 2 x microbatches x dp)",
                               limits=(0, 2**31 - 1))
    model: str = _field("mlp", "model family: " + ", ".join(PRESETS) + ", or package.module:factory for your own "
                        "(see docs/models.md)")
    size: str = _field("tiny", "model preset: tiny, small, medium")
    layers: int = _field(0, "model: MLP Linear layers or GPT blocks (0: the preset's)", limits=(0, 100_000))
    width: int = _field(0, "model: MLP width (0: the preset's)", limits=(0, 2**20))
    heads: int = _field(0, "model: GPT attention heads (0: the preset's)", limits=(0, 4096))
    embd: int = _field(0, "model: GPT embedding channels, a multiple of the heads (0: the preset's)",
                       limits=(0, 2**20))
    context: int = _field(0, "model: GPT context length in tokens (0: the preset's)", limits=(0, 2**20))
    vocab: int = _field(0, "model: GPT vocabulary size (0: the preset's)", limits=(0, 2**24))
    split: str = _field("", "layers per stage in stage order, comma-separated (e.g. 3,5; what `ppbench advise` "
                        "chose from profiled times); empty: balanced by parameter count")
    dtype: str = _field("float64", "float32 or float64", sweep=True)
    seed: int = _field(0, "weights and data are a function of the seed alone", limits=(0, 2**31 - 1))
    steps: int = _field(0, "optimizer steps (0: compare the gradients of one step)", limits=(0, 100_000))
    optimizer: str = _field("sgd", "sgd (momentum 0.9) or adam")
    lr: float = _field(0.01, "learning rate", limits=(1e-12, 1e6))
    transport: str = _field("auto", "blocking, nonblocking, or auto (naive: blocking; others: nonblocking)",
                            sweep=True)
    fault: str = _field("", "testing aid: RANK:ACTION[:KIND] injects a fault on that world rank at that action, "
                        "KIND raise (default), nan, kill or hang (e.g. 1:B2:nan, 1:2SEND_B0)")
    step_timeout: float = _field(0.0, "seconds a training step may take before the job is ended (0: no limit)",
                                 limits=(0, 86400))
    stall_timeout: float = _field(300.0, "seconds a rank may go without starting an action before every rank says "
                                  "what it waits for and the job is ended (0: never)", limits=(0, 86400))
    device: str = _field("auto", "auto (a CUDA device per local rank when available), cpu or cuda")
    impl: str = _field("ppbench", "ppbench (this package's executor) or torch (torch.distributed.pipelining; " +
                       ", ".join(n for n, s in SCHEDULES.items() if s.torch_class) + ")")
    threads: int = _field(0, "torch intra-op threads per rank (0: this host's cores divided by the ranks on it, "
                          "at least 1), the same however the run was launched", sweep=True, limits=(0, 4096))
    workload: str = _field("model", "model (real torch layers) or synthetic (timed sleeps, fixed message size)",
                           group="measure")
    t_fwd: float = _field(0.002, "synthetic: seconds of F per rank and microbatch (split over its chunks)",
                          group="measure", sweep=True, limits=(0, 3600))
    t_bwd: float = _field(0.004, "synthetic: seconds of B per rank and microbatch (I and W halves when split)",
                          group="measure", sweep=True, limits=(0, 3600))
    message_bytes: int = _field(65536, "synthetic: bytes per activation or gradient message", group="measure",
                                sweep=True, limits=(4, 2**31 - 1))
    warmup: int = _field(1, "steps run before measuring", group="measure", sweep=True, limits=(0, 10_000))
    repeats: int = _field(5, "measured steps", group="measure", sweep=True, limits=(1, 10_000))
    serial_steps: int = _field(0, "also measure the serial baseline in the same job, over this many steps (0: no): "
                               "the whole model on one rank, gradient accumulation over the same microbatches and "
                               "threads; gives the limit for p stages and the efficiency", group="measure",
                               sweep=True, limits=(0, 10_000))

    @property
    def batch(self) -> int:
        return self.global_batch or 2 * self.microbatches * self.dp

    @property
    def microbatch_size(self) -> int:
        return self.batch // (self.microbatches * self.dp)

    @property
    def fault_target(self):
        """(world rank, (stage or None, Op, microbatch), kind) of the injected fault, if any."""
        if not self.fault:
            return None
        rank, action, *kind = self.fault.split(":")
        return int(rank), fault_action(action), (kind[0] if kind else "raise")

    @property
    def torch_dtype(self):
        import torch

        return getattr(torch, self.dtype)

    @property
    def resolved_transport(self) -> str:
        if self.transport != "auto":
            return self.transport
        return "blocking" if self.schedule == "naive" and not self.schedule_file else "nonblocking"

    def model_config(self):
        """The preset, with the dimensions given on the command line in place of its own."""
        if ":" in self.model:                 # package.module:factory, a user's model
            from ppbench.user_models import UserModelError, load_user_model

            try:
                return load_user_model(self.model)
            except UserModelError as exc:
                raise ConfigError("model", str(exc)) from None
        return model_config(self.model, self.size, self.dimensions())

    def dimensions(self) -> dict[str, int]:
        """The model dimensions set on the command line (fields left at 0 are the preset's)."""
        return {name: getattr(self, name) for name in DIMENSIONS if getattr(self, name)}

    @property
    def model_name(self) -> str:
        """family/preset, then any dimension set on the command line (``mlp/small layers=4``); a user's
        model by its factory."""
        if ":" in self.model:
            return self.model
        return " ".join([f"{self.model}/{self.size}", *(f"{k}={v}" for k, v in self.dimensions().items())])

    def __post_init__(self) -> None:
        if self.chunks == 0:        # the schedule's own number of stages per rank
            spec = SCHEDULES.get(self.schedule) if not self.schedule_file else None
            object.__setattr__(self, "chunks", spec.default_chunks if spec else 1)

    def validate(self, world_size: int | None = None) -> RunConfig:
        """Raise ConfigError naming the first bad field; return self when all is well.

        Depends only on the configuration and the world size, so every rank decides alike.
        """
        for f in fields(self):
            value, expected = getattr(self, f.name), type(f.default)
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                continue
            if type(value) is not expected:
                raise ConfigError(f.name, f"expected {expected.__name__}, got {type(value).__name__} {value!r}")
        _choice("schedule", self.schedule, list(SCHEDULES))
        if ":" not in self.model:
            _choice("model", self.model, list(PRESETS) + ["package.module:factory (your own model)"])
            _choice("size", self.size, list(PRESETS[self.model]))
        for name in self.dimensions():
            if self.model not in DIMENSIONS[name]:
                raise ConfigError(name, f"--{name} sets a dimension of {' and '.join(DIMENSIONS[name])} models, "
                                  f"not of {self.model}")
        _choice("dtype", self.dtype, list(DTYPES))
        _choice("optimizer", self.optimizer, list(OPTIMIZERS))
        _choice("transport", self.transport, list(TRANSPORTS))
        _choice("workload", self.workload, list(WORKLOADS))
        _choice("device", self.device, ["auto", "cpu", "cuda"])
        _choice("impl", self.impl, ["ppbench", "torch"])
        if self.impl == "torch":
            self._validate_torch_impl()
        for f in fields(self):
            if f.metadata["limits"]:
                _in_range(f.name, getattr(self, f.name), *f.metadata["limits"])
        model = self.model_config()
        if isinstance(model, GPTConfig) and model.n_embd % model.n_head:
            raise ConfigError("embd", f"{model.n_embd} channels do not split over {model.n_head} heads; allowed: "
                              f"multiples of {model.n_head}")
        if self.device == "cuda" and not _cuda_available():
            raise ConfigError("device", "'cuda' requested but torch sees no CUDA device; allowed here: auto, cpu")
        _fault("fault", self.fault, self.pp * self.dp)
        if self.batch % (self.microbatches * self.dp):
            raise ConfigError("global_batch", f"{self.batch} does not split into microbatches x dp = "
                              f"{self.microbatches} x {self.dp} = {self.microbatches * self.dp} equal microbatches; "
                              f"allowed: multiples of {self.microbatches * self.dp}")
        if self.schedule_file:
            self._validate_schedule_file()
        else:
            problem = schedule_problem(self.schedule, self.pp, self.microbatches, self.chunks)
            if problem:
                field = "chunks" if "chunk" in problem else "microbatches"
                raise ConfigError(field, problem)
        highest = highest_tag(self.pp * self.chunks, self.microbatches)
        if highest > MAX_TAG:
            raise ConfigError("microbatches", f"{self.microbatches} microbatches x {self.pp * self.chunks} stages need "
                              f"MPI tags up to {highest}, above {MAX_TAG}; allowed: microbatches x stages up to "
                              f"{(MAX_TAG + 1) // 2}")
        if not self.schedule_file and SCHEDULES[self.schedule].needs_nonblocking and self.transport == "blocking":
            raise ConfigError("transport", f"{self.schedule} deadlocks with the blocking transport (a send's matching "
                              "receive can come after the receiver's next computation); allowed: auto, nonblocking")
        layers = self.model_config().num_layers
        stages = self.plan()[1].num_stages if self.schedule_file else self.pp * self.chunks
        if self.schedule_file and stages > layers:
            raise ConfigError("schedule_file", f"{stages} stages but model {self.model_name} has only "
                              f"{layers} layers; allowed: up to {layers} stages")
        if self.split:
            _split("split", self.split, stages, layers)
        if self.pp * self.chunks > layers:
            what = f"{self.pp} stages" + (f" x {self.chunks} chunks" if self.chunks > 1 else "")
            allowed = f"pp x chunks in 1..{layers}" if self.chunks > 1 else f"1..{layers}"
            raise ConfigError("pp", f"{what} but model {self.model_name} has only {layers} layers; "
                              f"allowed: {allowed}")
        if world_size is not None and self.pp * self.dp != world_size:
            raise ConfigError("pp x dp", f"pp={self.pp} x dp={self.dp} = {self.pp * self.dp} must equal the MPI "
                              f"world size {world_size}")
        return self

    def stage_split(self, stages: int) -> list[range]:
        """Layer index ranges of each of ``stages`` stages: ``--split``, else balanced by parameter count."""
        if not self.split:
            from ppbench.plan.split import balanced_split

            return balanced_split(self.model_config().layer_parameters(), stages)
        counts = [int(c) for c in self.split.split(",")]
        bounds = [0, *itertools.accumulate(counts)]
        return [range(a, b) for a, b in zip(bounds, bounds[1:])]

    @property
    def recompute(self) -> bool:
        """Whether stages recompute their forward before the backward (1f1b-recompute)."""
        return not self.schedule_file and SCHEDULES[self.schedule].recompute

    def plan(self):
        """(each rank's compute actions, the placement): from the schedule file, or the built-in schedule."""
        from ppbench.plan.schedules import compute_order, placement_for

        if self.schedule_file:
            schedule = _read_schedule_file(self.schedule_file)
            return [[a for a in acts if a.is_compute] for acts in schedule.ranks], schedule.placement
        ranks = [compute_order(self.schedule, self.pp, self.microbatches, r, self.chunks) for r in range(self.pp)]
        return ranks, placement_for(self.schedule, self.pp, self.chunks)

    def schedule_record(self) -> dict | None:
        """What a result keeps of the schedule file (:func:`ppbench.plan.files.schedule_record`), or None."""
        from ppbench.plan.files import schedule_record

        return schedule_record(_read_schedule_file(self.schedule_file)) if self.schedule_file else None

    def _validate_schedule_file(self) -> None:
        from ppbench.plan.files import ScheduleFileError

        try:
            schedule = _read_schedule_file(self.schedule_file)
        except ScheduleFileError as exc:
            raise ConfigError("schedule_file", str(exc)) from None
        if schedule.p != self.pp or schedule.microbatches != self.microbatches:
            raise ConfigError("schedule_file", f"{self.schedule_file} has {schedule.p} ranks and "
                              f"{schedule.microbatches} microbatches; --pp {self.pp} and --microbatches "
                              f"{self.microbatches} must match it")
        if self.impl != "ppbench":
            raise ConfigError("schedule_file", "schedule files run with ppbench's executor (--impl ppbench)")
        # what it computes, in what order, and whether it deadlocks: ppbench.sim.validate.require_runnable

    def _validate_torch_impl(self) -> None:
        allowed = [name for name, spec in SCHEDULES.items() if spec.torch_class]
        if self.schedule not in allowed:
            raise ConfigError("schedule", f"{self.schedule!r} has no torch.distributed.pipelining counterpart; "
                              f"allowed with --impl torch: {', '.join(allowed)}")
        if self.schedule != "gpipe" and self.microbatches < self.pp:
            raise ConfigError("microbatches", f"torch's {self.schedule} needs microbatches >= stages: m="
                              f"{self.microbatches}, p={self.pp}; allowed: m >= {self.pp}")
        if self.workload != "model" or self.device == "cuda" or self.fault:
            raise ConfigError("impl", "--impl torch runs the model workload on CPU without fault injection")

    def to_dict(self) -> dict:
        return asdict(self)


def _choice(name: str, value: object, allowed: list[str]) -> None:
    if value not in allowed:
        raise ConfigError(name, f"{value!r} is not one of: {', '.join(allowed)}")


def _in_range(name: str, value: float, low: float, high: float) -> None:
    kind = "an integer" if isinstance(value, int) else "a finite number"
    if not (math.isfinite(value) and low <= value <= high):
        bounds = f"{low}..{high}" if isinstance(value, int) else f"{low:g}..{high:g}"
        raise ConfigError(name, f"must be {kind} in {bounds}, got {value!r}")


def _split(name: str, value: str, stages: int, layers: int) -> None:
    counts = value.split(",")
    if not all(c.strip().isdigit() and int(c) >= 1 for c in counts) or len(counts) != stages \
            or sum(map(int, counts)) != layers:
        raise ConfigError(name, f"{value!r} is not {stages} layer counts (one per stage, each >= 1) adding up to the "
                          f"model's {layers} layers, e.g. {','.join(map(str, _even(layers, stages)))}")


def _even(layers: int, stages: int) -> list[int]:
    return [layers // stages + (s < layers % stages) for s in range(stages)]


def _fault(name: str, value: str, world: int) -> None:
    if not value:
        return
    rank, _, rest = value.partition(":")
    action, _, kind = rest.partition(":")
    try:
        fault_action(action)
        ok = rank.isdigit() and int(rank) < world and kind in ("", *FAULT_KINDS)
    except ValueError:
        ok = False
    if not ok:
        raise ConfigError(name, f"{value!r} is not RANK:ACTION[:KIND] with 0 <= RANK < {world}, ACTION an action of "
                          f"that rank (1B0, 0SEND_F2) or, on any of its stages, an op and microbatch (F0, B2, SEND_F1, "
                          f"RECV_B3), and KIND one of {', '.join(FAULT_KINDS)}")


def fault_action(text: str):
    """(stage or None, Op, microbatch) of a fault's ACTION: PyTorch's action text (``1B0``) or an
    op and microbatch on whichever stage of the rank runs it (``B0``)."""
    import re

    from ppbench.plan.actions import Op, parse_action

    short = re.match(r"^([A-Z_]+?)(\d+)$", text)
    if short and short.group(1) in {op.value for op in Op}:
        return None, Op(short.group(1)), int(short.group(2))
    action = parse_action(text)
    return action.stage, action.op, action.mb


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


@functools.lru_cache(maxsize=8)
def _read_schedule_file(path: str):
    from ppbench.plan.files import read_schedule

    return read_schedule(path)
