"""The profile file ``ppbench profile`` writes and ``ppbench advise`` reads (JSON, versioned).

A profile holds what one machine measured for one model, nothing about schedules:

- per layer and microbatch size: forward (F), full backward (B), input-gradient (I) and
  weight-gradient (W) seconds, the activation bytes the forward saves for backward and the
  bytes a split backward keeps from I until W; per layer its parameter count and bytes and the
  optimizer's seconds per step;
- the bytes one sample's activation takes between two layers (a message is that x microbatch size);
- the machine, calibrated by running the workload as a pipeline: per-action overhead of
  ppbench's executor and message latency (each a line in the message bytes), for each of F, I,
  W, B a scale on a stage's profiled time plus an offset per layer (per action for the synthetic
  workload, whose stage is one sleep) giving its time in a pipeline (ranks computing side by
  side), the optimizer's scale, and gradient averaging's latency and seconds per byte per ring hop.

:func:`read_profile` refuses a file that is not this format, of another version, or missing a
field, with one line naming what is wrong (:class:`ProfileError`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["FORMAT", "VERSION", "MAX_PROFILE_BYTES", "ProfileError", "Profile", "read_profile", "write_profile",
           "profile_problem"]

FORMAT = "ppbench-profile"
VERSION = 1
MAX_PROFILE_BYTES = 64 * 2**20          # a profile larger than this is refused unread
MAX_LAYERS = 100_000
MAX_SIZES = 64

#: per-layer series (one value per microbatch size) and scalars, with what they hold
LAYER_SERIES = ("fwd", "bwd", "inp", "wgrad", "saved_bytes", "wgrad_bytes")
LAYER_SCALARS = ("params", "param_bytes", "optimizer")
MACHINE_FIELDS = ("overhead", "overhead_per_byte", "latency", "seconds_per_byte", "allreduce_latency",
                  "allreduce_seconds_per_byte", "optimizer_scale", "replica_skew")
#: per compute op: profiled stage time t -> time in a pipeline, offset + scale x t
MACHINE_LINES = ("compute_offset", "compute_scale")
OPS = ("F", "I", "W", "B")
TOP_FIELDS = {"format": str, "version": int, "model": dict, "workload": str, "dtype": str, "optimizer": str,
              "microbatch_sizes": list, "message_bytes_per_sample": int, "layers": list, "machine": dict,
              "environment": dict}


class ProfileError(ValueError):
    """A profile file that cannot be used; the message is one line naming the file and the problem."""


@dataclass
class Profile:
    """A read profile: per-layer arrays indexed [layer, size index]."""

    path: str
    record: dict
    sizes: np.ndarray            # microbatch sizes, increasing
    series: dict[str, np.ndarray]
    params: np.ndarray
    param_bytes: np.ndarray
    optimizer: np.ndarray
    machine: dict

    @property
    def num_layers(self) -> int:
        return int(self.params.size)

    @property
    def workload(self) -> str:
        return self.record["workload"]

    @property
    def model(self) -> dict:
        """The run options that rebuild the profiled model (model, size, dimensions; synthetic: none)."""
        return self.record["model"]

    @property
    def message_bytes_per_sample(self) -> int:
        return int(self.record["message_bytes_per_sample"])

    def covers(self, size: int) -> bool:
        return bool(self.sizes[0] <= size <= self.sizes[-1])

    def at(self, size: float) -> dict[str, np.ndarray]:
        """Every per-layer series at microbatch ``size``: linear between the two profiled sizes
        around it (compute and activations grow about linearly in the samples of a microbatch)."""
        if not self.covers(int(size)):
            raise ValueError(f"microbatch size {size} is outside the profiled sizes "
                             f"{int(self.sizes[0])}..{int(self.sizes[-1])}")
        return {k: np.array([np.interp(size, self.sizes, row) for row in v]) for k, v in self.series.items()}


def profile_problem(record: object) -> str | None:
    """What makes ``record`` (a parsed JSON value) not a usable profile, or None."""
    if not isinstance(record, dict):
        return "not a JSON object"
    if record.get("format") != FORMAT:
        return f"not a ppbench profile (format {record.get('format')!r}, expected {FORMAT!r})"
    if record.get("version") != VERSION:
        return f"profile version {record.get('version')!r} is not supported; this ppbench reads version {VERSION} " \
               "(run `ppbench profile` again)"
    for name, kind in TOP_FIELDS.items():
        if name not in record:
            return f"missing field {name!r}"
        if not isinstance(record[name], kind) or isinstance(record[name], bool):
            return f"field {name!r} must be a JSON {kind.__name__.replace('str', 'string').replace('dict', 'object')}"
    sizes = record["microbatch_sizes"]
    if not 1 <= len(sizes) <= MAX_SIZES or not all(_count(s) and s >= 1 for s in sizes) or sorted(set(sizes)) != sizes:
        return f"microbatch_sizes must be 1..{MAX_SIZES} increasing integers >= 1, got {sizes[:8]!r}"
    layers = record["layers"]
    if not 1 <= len(layers) <= MAX_LAYERS:
        return f"layers must hold 1..{MAX_LAYERS} entries, got {len(layers)}"
    for i, layer in enumerate(layers):
        if not isinstance(layer, dict):
            return f"layers[{i}] must be a JSON object"
        for name in LAYER_SERIES:
            values = layer.get(name)
            if values is None:
                return f"layers[{i}] is missing field {name!r}"
            if not isinstance(values, list) or len(values) != len(sizes) or not all(_number(x) for x in values):
                return f"layers[{i}].{name} must be {len(sizes)} finite numbers >= 0 (one per microbatch size)"
        for name in LAYER_SCALARS:
            if name not in layer:
                return f"layers[{i}] is missing field {name!r}"
            if not _number(layer[name]):
                return f"layers[{i}].{name} must be a finite number >= 0"
        if any(w > b * (1 + 1e-9) + 1e-12 for w, b in zip(layer["wgrad"], layer["bwd"])):
            return f"layers[{i}]: W takes longer than the whole backward B"
    machine = record["machine"]
    for name in MACHINE_FIELDS:
        if name not in machine:
            return f"machine is missing field {name!r}"
        if not _number(machine[name]):
            return f"machine.{name} must be a finite number >= 0"
    for name in MACHINE_LINES:
        line = machine.get(name)
        check = _finite if name == "compute_offset" else _number
        if not isinstance(line, dict) or not all(check(line.get(op)) for op in OPS):
            what = "a finite number" + ("" if name == "compute_offset" else " >= 0")
            return f"machine.{name} must map each of {', '.join(OPS)} to {what}"
    if machine.get("compute_offset_per") not in ("layer", "action"):
        return "machine.compute_offset_per must be 'layer' or 'action'"
    if record["workload"] not in ("model", "synthetic"):
        return f"workload must be 'model' or 'synthetic', got {record['workload']!r}"
    return None


def read_profile(path: str | Path) -> Profile:
    """Read and check a profile file; ProfileError (one line) if it cannot be used."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_PROFILE_BYTES:
            raise ProfileError(f"{path}: {size} bytes, above the {MAX_PROFILE_BYTES} a profile may have")
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise ProfileError(f"{path}: no such file (make one with `ppbench profile`)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    except json.JSONDecodeError as exc:
        raise ProfileError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from None
    problem = profile_problem(record)
    if problem:
        raise ProfileError(f"{path}: {problem}")
    layers = record["layers"]
    return Profile(str(path), record, np.array(record["microbatch_sizes"], dtype=np.float64),
                   {k: np.array([layer[k] for layer in layers], dtype=np.float64) for k in LAYER_SERIES},
                   np.array([layer["params"] for layer in layers], dtype=np.float64),
                   np.array([layer["param_bytes"] for layer in layers], dtype=np.float64),
                   np.array([layer["optimizer"] for layer in layers], dtype=np.float64),
                   {**{k: float(record["machine"][k]) for k in MACHINE_FIELDS},
                    **{k: {op: float(record["machine"][k][op]) for op in OPS} for k in MACHINE_LINES},
                    "compute_offset_per": record["machine"]["compute_offset_per"]})


def write_profile(path: str | Path, record: dict) -> Path:
    """Write ``record`` (checked first) as the profile file ``path``, atomically."""
    from ppbench.measure.results import atomic_write

    record = {"format": FORMAT, "version": VERSION, **record}
    problem = profile_problem(record)
    if problem:
        raise ProfileError(f"refusing to write an unusable profile: {problem}")
    return atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=1) + "\n"))


def _finite(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _number(x: object) -> bool:
    return _finite(x) and x >= 0  # type: ignore[operator]


def _count(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)
