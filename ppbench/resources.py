"""What a run or a simulation will need, estimated before anything is allocated or launched, and
refused with the numbers when the host cannot hold it (docs/limits.md states the rules).

Estimates are deliberately on the high side; they count, per rank: the process itself (Python,
torch, MPI: about 300 MiB), its own stages' parameters, gradients and optimizer state (a rank
builds only its own layers), the global batch (every rank generates it), the saved activations of
the microbatches in flight, and the message buffers; with a serial baseline, rank 0 also holds
the whole model, its gradients and optimizer state.
"""

from __future__ import annotations

import os

from ppbench.config import ConfigError, RunConfig
from ppbench.plan import theory
from ppbench.plan.schedules import SCHEDULES

__all__ = ["PROCESS_BYTES", "SHARE_OF_AVAILABLE", "MAX_LISTED_ACTIONS", "run_memory", "simulation_memory",
           "available_memory", "ranks_on_this_host", "check_run_fits", "check_simulation_fits", "check_listing_fits",
           "gib"]

PROCESS_BYTES = 300 * 2**20        # one rank's Python, torch and MPI, measured on this project's machines
SHARE_OF_AVAILABLE = 0.8           # of the host's available memory a run or simulation may plan to use
MAX_LISTED_ACTIONS = 100_000       # actions `ppbench schedule` prints (beyond: use `ppbench simulate`)
_BYTES_PER_SIMULATED_ACTION = 120  # array simulator: op, mb, stage, links, four times, sort keys
_BYTES_PER_LISTED_ACTION = 300     # the same, built from Action lists (schedules without an array twin:
                                   # zb-v at p = 512, m = 2048 peaked at 1.3 GB for 6.3 million actions)
_DTYPE_BYTES = {"float32": 4, "float64": 8}


def gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.0f} MiB"


def run_memory(cfg: RunConfig, reference: bool = False) -> dict[str, int]:
    """Bytes the busiest rank of ``cfg`` needs, by part (the sum is the estimate); ``reference``: the
    check's single-process reference too (the whole model, its gradients and optimizer state)."""
    b = _DTYPE_BYTES[cfg.dtype]
    m, p, v = cfg.microbatches, cfg.pp, cfg.chunks
    model = cfg.model_config()
    params = model.layer_parameters()
    stages = p * v
    per_stage = -(-sum(params) // stages) + max(params)          # balanced split: at most average + one layer
    states = {"sgd": 1, "adam": 2}[cfg.optimizer]
    in_flight = max(theory.peak_in_flight(cfg.schedule, p, m, r, v) for r in range(p)) \
        if cfg.schedule in SCHEDULES else m
    layers_per_stage = -(-len(params) // stages) + 1
    parts = {"process": PROCESS_BYTES}
    if cfg.workload == "synthetic":
        parts["messages"] = cfg.message_bytes * (1 + 2 * m * v)     # one output buffer, receives and sends in flight
        return parts
    mb = cfg.microbatch_size
    parts["model"] = per_stage * v * b * (2 + states)
    if reference or cfg.serial_steps:
        parts["whole model"] = sum(params) * b * (2 + states)
    # the global batch is generated in float64 (token ids in int64), then cast: inputs and targets
    elements = cfg.batch * (model.block_size + 1) if model.family == "gpt" else model.activation_elements(cfg.batch)
    parts["batch"] = elements * (16 + 2 * b)
    parts["activations"] = in_flight * model.saved_elements(mb, layers_per_stage) * b
    parts["messages"] = 2 * in_flight * model.activation_elements(mb) * b
    return parts


def simulation_memory(p: int, m: int, v: int, listed: bool = False) -> int:
    """Bytes the array simulator needs for p ranks, m microbatches, v stages per rank (3 compute actions
    per stage and microbatch at most); ``listed``: the schedule is built from Action lists first."""
    actions = 3 * p * v * m
    per_action = _BYTES_PER_LISTED_ACTION if listed else _BYTES_PER_SIMULATED_ACTION
    return actions * per_action + 3 * p * v * m * 8 + 2 * p * m * 8


def available_memory() -> int | None:
    """This host's available memory (Linux MemAvailable), or None where it cannot be read."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def ranks_on_this_host(default: int) -> int:
    """Ranks of this MPI job on this host, from the launcher's environment, else ``default``."""
    for var in ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE"):
        value = os.environ.get(var, "").split("(")[0]
        if value.isdigit():
            return int(value)
    return default


def check_run_fits(cfg: RunConfig, ranks_here: int, reference: bool = False, available: int | None = None) -> None:
    """Raise ConfigError('memory', ...) when ``ranks_here`` ranks of ``cfg`` would not fit this host."""
    available = available_memory() if available is None else available
    if available is None:
        return
    parts = run_memory(cfg, reference)
    need = sum(parts.values()) * ranks_here
    if need > SHARE_OF_AVAILABLE * available:
        detail = ", ".join(f"{k} {gib(v)}" for k, v in parts.items())
        raise ConfigError("memory", f"this run needs about {gib(need)} ({ranks_here} ranks x {gib(need / ranks_here)}: "
                          f"{detail}) but the host has {gib(available)} available; allowed: up to "
                          f"{gib(SHARE_OF_AVAILABLE * available)}; reduce --global-batch, --microbatches, "
                          "--message-bytes or the model size")


def check_simulation_fits(p: int, m: int, v: int, available: int | None = None, listed: bool = False) -> None:
    available = available_memory() if available is None else available
    if available is None:
        return
    need = simulation_memory(p, m, v, listed)
    per_action = _BYTES_PER_LISTED_ACTION if listed else _BYTES_PER_SIMULATED_ACTION
    if need > SHARE_OF_AVAILABLE * available:
        raise ConfigError("stages x microbatches", f"simulating p={p} x m={m}" + (f" x v={v}" if v > 1 else "")
                          + f" needs about {gib(need)} ({per_action} bytes per action) but the host "
                          f"has {gib(available)} available; allowed: up to {gib(SHARE_OF_AVAILABLE * available)}")


def check_listing_fits(p: int, m: int, v: int) -> None:
    actions = 3 * p * v * m
    if actions > MAX_LISTED_ACTIONS:
        raise ConfigError("stages x microbatches", f"ppbench schedule prints every action: p={p} x m={m}"
                          + (f" x v={v}" if v > 1 else "") + f" makes up to {actions:,}, more than "
                          f"{MAX_LISTED_ACTIONS:,}; allowed: p x m x v up to {MAX_LISTED_ACTIONS // 3:,}; "
                          "use `ppbench simulate` for large pipelines")
