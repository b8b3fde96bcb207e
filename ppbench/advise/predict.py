"""``ppbench advise``: every candidate simulated with the profiled costs, ranked by predicted
iteration time.

For one candidate (schedule, p, d, m, v; microbatch size b = B / (d m)):

1. layers split into p v stages minimising the slowest stage's F + B at size b (profiled times);
2. each stage's F, I, W, B = the sums over its layers (with recomputation B also runs F again),
   through the profile's calibration of that op (scale x the profiled time + an offset per layer:
   what a stage takes when the ranks of a pipeline compute side by side);
3. the array simulator runs the schedule with those durations, the calibrated per-action overhead
   and message latency at the candidate's message size (blocking transport for naive, else
   non-blocking, as ``ppbench run``'s auto does);
4. after its schedule each rank averages gradients over the d replicas (a ring Allreduce of its
   parameter bytes, after waiting for the slowest replica: the calibrated share of the step time),
   waits for the loss from the last stage, and steps its optimizer: the iteration ends when the
   last rank's optimizer does;
5. memory per rank: parameters, gradients and optimizer state, plus the peak of saved activations
   (:func:`ppbench.advise.candidates.rank_memory`); above ``--memory-per-rank`` the candidate is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ppbench.advise.candidates import (
    Candidate,
    candidate_arrays,
    enumerate_candidates,
    partition,
    rank_memory,
    stage_table,
)
from ppbench.advise.profile_file import Profile
from ppbench.plan.arrays import OP_B, OP_F, OP_I, OP_W
from ppbench.plan.schedules import SCHEDULES
from ppbench.sim.array_simulator import array_metrics, simulate_arrays
from ppbench.sim.simulator import DeadlockError

__all__ = ["Prediction", "predict", "advise", "split_text"]


@dataclass
class Prediction:
    candidate: Candidate
    step_time: float
    iteration_time: float
    bubble: float
    peak_memory: float            # bytes, the busiest rank
    memory_per_rank: list[float]
    allreduce_time: float
    optimizer_time: float
    stage_compute: dict[str, list[float]] = field(default_factory=dict)   # op -> seconds of one action per stage

    def row(self, batch: int) -> dict:
        c = self.candidate
        return {"schedule": c.label, "p": c.p, "d": c.d, "m": c.m, "v": c.v, "microbatch_size": c.microbatch_size,
                "split": split_text(c.split), "step_time": self.step_time, "iteration_time": self.iteration_time,
                "throughput": batch / self.iteration_time if self.iteration_time > 0 else float("nan"),
                "bubble": self.bubble, "peak_memory_bytes": self.peak_memory, "allreduce_time": self.allreduce_time,
                "optimizer_time": self.optimizer_time}


def split_text(split: list[range]) -> str:
    """Layers per stage as ``ppbench run --split`` takes them."""
    return ",".join(str(len(r)) for r in split)


def predict(profile: Profile, c: Candidate, memory_cap: float | None = None, files: dict | None = None,
            cache: dict | None = None, stage_compute: dict[str, list[float]] | None = None) -> Prediction | None:
    """The prediction for ``c``, or None with ``c.excluded`` set to why it was dropped.

    ``stage_compute`` (op -> seconds per stage, NaN where unknown) replaces the profiled compute of
    those stages and ops: with a run's measured compute, what is left between prediction and
    measurement is the schedule model's (overhead, latency, waiting), not the compute profile's."""
    cache = {} if cache is None else cache
    stages = c.p * c.v
    synthetic = profile.workload == "synthetic"
    if not profile.covers(c.microbatch_size):
        c.excluded = (f"microbatch size {c.microbatch_size} outside the profiled sizes "
                      f"{int(profile.sizes[0])}..{int(profile.sizes[-1])}")
        return None
    if synthetic and profile.num_layers % stages:
        c.excluded = (f"synthetic stages are equal: {stages} stages do not divide the profile's "
                      f"{profile.num_layers} layers")
        return None
    if c.microbatch_size not in cache:
        cache[c.microbatch_size] = profile.at(c.microbatch_size)
    at = cache[c.microbatch_size]
    c.split = partition(at["fwd"] + at["bwd"], stages)
    table = stage_table(at, c.split)
    recompute = not c.schedule_file and SCHEDULES[c.schedule].recompute
    if recompute:
        table["bwd"] = table["bwd"] + table["fwd"]
        table["inp"] = table["inp"] + table["fwd"]
    arrays = candidate_arrays(c, files or {})
    memory = rank_memory(profile, c, c.split, arrays, table, recompute)
    if memory_cap is not None and memory.max() > memory_cap:
        worst = int(memory.argmax())
        c.excluded = (f"needs {memory.max() / 2**30:.3g} GiB on rank {worst}, above the cap of "
                      f"{memory_cap / 2**30:.3g} GiB")
        return None
    machine = profile.machine
    units = np.ones(stages) if machine["compute_offset_per"] == "action" else np.array([len(r) for r in c.split])
    by_op = np.zeros((stages, 4))
    for code, key, op in ((OP_F, "fwd", "F"), (OP_I, "inp", "I"), (OP_W, "wgrad", "W"), (OP_B, "bwd", "B")):
        line = machine["compute_offset"][op] * units + machine["compute_scale"][op] * table[key]
        by_op[:, code] = np.maximum(line, 0.0)
        given = np.asarray((stage_compute or {}).get(op, [np.nan] * stages), dtype=float)
        by_op[:, code] = np.where(np.isfinite(given), given, by_op[:, code])
    dur = by_op[arrays.stage, arrays.op]
    n = dur.size
    message = profile.message_bytes_per_sample * c.microbatch_size
    comm = machine["latency"] + message * machine["seconds_per_byte"]
    overhead = machine["overhead"] + message * machine["overhead_per_byte"]
    mode = "blocking" if c.schedule == "naive" and not c.schedule_file else "nonblocking"
    try:
        sim = simulate_arrays(arrays, mode=mode, durations=(dur, np.full(n, overhead), np.full(n, comm)))
    except DeadlockError as exc:
        c.excluded = f"deadlocks: {str(exc).splitlines()[0]}"
        return None
    metrics = array_metrics(sim)
    placement = arrays.placement
    ends = np.array([sim.end[arrays.offsets[r + 1] - 1] if arrays.offsets[r + 1] > arrays.offsets[r] else 0.0
                     for r in range(c.p)])
    param_bytes = np.array([sum(profile.param_bytes[c.split[s].start:c.split[s].stop].sum()
                                for s in placement.stages_of(r)) for r in range(c.p)])
    optimizer = machine["optimizer_scale"] * np.array([sum(profile.optimizer[c.split[s].start:c.split[s].stop].sum()
                                                           for s in placement.stages_of(r)) for r in range(c.p)])
    allreduce = np.zeros(c.p)
    if c.d > 1:
        # the ring Allreduce, after waiting for the slowest replica (calibrated share of the step)
        allreduce = 2 * (c.d - 1) * (machine["allreduce_latency"]
                                     + param_bytes / c.d * machine["allreduce_seconds_per_byte"]) \
            + machine["replica_skew"] * metrics["step_time"]
    last = placement.rank_of(stages - 1)
    synced = np.maximum(ends + allreduce, ends[last] + allreduce[last])   # the loss comes from the last stage
    iteration = float((synced + optimizer).max())
    return Prediction(c, metrics["step_time"], iteration, metrics["bubble_mean"], float(memory.max()),
                      [float(x) for x in memory], float(allreduce.max()), float(optimizer.max()),
                      {op: [float(x) for x in by_op[:, code]] for op, code in (("F", OP_F), ("I", OP_I), ("W", OP_W),
                                                                                 ("B", OP_B))})


def advise(profile: Profile, world: int, batch: int, schedules: list[str], memory_cap: float | None = None,
           max_chunks: int = 4, files: dict | None = None, stage_counts: list[int] | None = None,
           ) -> tuple[list[Prediction], list[Candidate]]:
    """(predictions ranked by iteration time, fastest first; every excluded candidate with its reason).
    ``files``: path -> read schedule file, tried too; ``stage_counts``: only these p."""
    by_name = files or {}
    candidates = enumerate_candidates(world, batch, profile.num_layers, schedules, max_chunks, files=by_name)
    if stage_counts is not None:
        candidates = [c for c in candidates if c.p in stage_counts]
    ranked, excluded, cache = [], [], {}
    for c in candidates:
        result = None if c.excluded else predict(profile, c, memory_cap, by_name, cache)
        if result is None:
            excluded.append(c)
        else:
            ranked.append(result)
    ranked.sort(key=lambda r: (r.iteration_time, r.candidate.key()))
    return ranked, excluded
