"""What ``ppbench advise`` considers: every schedule x stages p x replicas d (p d = N) x microbatches
m x chunks v, each with its layers partitioned by profiled time and its memory per rank.

Pure: no torch, no MPI. A candidate that cannot run, or does not fit, is kept with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ppbench.advise.profile_file import Profile
from ppbench.plan.arrays import OP_F, OP_I, OP_W, ScheduleArrays, from_actions, schedule_arrays
from ppbench.plan.schedules import SCHEDULES, schedule_problem
from ppbench.plan.split import balanced_split

__all__ = ["Candidate", "divisors", "chunk_options", "enumerate_candidates", "partition",
           "stage_table", "rank_memory", "candidate_arrays", "OPTIMIZER_STATES"]

#: optimizer state per parameter, in parameter sizes (SGD momentum; Adam's two moments)
OPTIMIZER_STATES = {"sgd": 1, "adam": 2}


@dataclass
class Candidate:
    """One configuration to predict; ``excluded`` says why it was dropped ('' while it stands)."""

    schedule: str
    p: int
    d: int
    m: int
    v: int
    microbatch_size: int
    schedule_file: str = ""
    excluded: str = ""
    split: list[range] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.schedule_file or self.schedule

    def key(self) -> tuple:
        return (self.label, self.p, self.d, self.m, self.v)


def divisors(n: int) -> list[int]:
    small = [k for k in range(1, int(n ** 0.5) + 1) if n % k == 0]
    return sorted(set(small + [n // k for k in small]))


def chunk_options(name: str, max_chunks: int) -> list[int]:
    """Stages per rank a schedule is tried with: its own for the V placement and fixed ones; 2, 4, ...
    up to ``max_chunks`` for interleaved ones."""
    spec = SCHEDULES[name]
    if not spec.chunked:
        return [spec.default_chunks]
    return [v for v in (2, 4, 8, 16, 32, 64) if v <= max(max_chunks, 2)]


def enumerate_candidates(world: int, batch: int, layers: int, schedules: list[str], max_chunks: int = 4,
                         max_microbatches: int = 4096, files: dict | None = None) -> list[Candidate]:
    """Every (schedule, p, d, m, v) with p d = ``world`` and m dividing the per-replica batch; those a
    schedule forbids or the model cannot hold carry their reason in ``excluded``. ``files``: read
    schedule files (:class:`ppbench.plan.files.ScheduleFile`), tried where their ranks and
    microbatches fit, by path."""
    out = []
    for p in divisors(world):
        d = world // p
        if batch % d:
            out.append(Candidate("*", p, d, 0, 1, 0, excluded=f"global batch {batch} does not split over {d} replicas"))
            continue
        for m in divisors(batch // d):
            if m > max_microbatches:
                continue
            b = batch // (d * m)
            for name in schedules:
                for v in chunk_options(name, max_chunks):
                    c = Candidate(name, p, d, m, v, b)
                    c.excluded = schedule_problem(name, p, m, v) or ""
                    if not c.excluded and p * v > layers:
                        c.excluded = f"{p * v} stages but the model has {layers} layers"
                    out.append(c)
    for path, schedule in (files or {}).items():
        p, m, stages = schedule.p, schedule.microbatches, schedule.placement.num_stages
        if world % p or batch % (world // p * m):
            continue
        d = world // p
        c = Candidate("file", p, d, m, stages // p, batch // (d * m), schedule_file=path)
        if stages > layers:
            c.excluded = f"{stages} stages but the model has {layers} layers"
        out.append(c)
    return out


def partition(profile_costs: np.ndarray, stages: int) -> list[range]:
    """Contiguous layer ranges of ``stages`` stages that minimise the slowest stage's time
    (``profile_costs``: each layer's F + B seconds at the candidate's microbatch size)."""
    return balanced_split([float(c) for c in profile_costs], stages)


def stage_table(at: dict[str, np.ndarray], split: list[range]) -> dict[str, np.ndarray]:
    """Per-stage sums of the per-layer series ``at`` (:meth:`Profile.at`)."""
    return {k: np.array([v[r.start:r.stop].sum() for r in split]) for k, v in at.items()}


def rank_memory(profile: Profile, candidate: Candidate, split: list[range], arrays: ScheduleArrays,
                stages: dict[str, np.ndarray], recompute: bool) -> np.ndarray:
    """Peak bytes of each rank: its parameters, gradients and optimizer state, plus the largest sum of
    saved activations its order keeps at once (F adds a stage's saved bytes; I releases them but
    keeps what W needs; W and B release the rest). With recomputation a stage keeps only its input."""
    states = OPTIMIZER_STATES.get(profile.record["optimizer"], 2)
    message = profile.message_bytes_per_sample * candidate.microbatch_size
    saved = np.full(len(split), float(message)) if recompute else stages["saved_bytes"]
    held = stages["wgrad_bytes"]
    stage, op = arrays.stage, arrays.op
    delta = np.select([op == OP_F, op == OP_I, op == OP_W], [saved[stage], held[stage] - saved[stage], -held[stage]],
                      -saved[stage])
    running = np.cumsum(delta)
    out = np.zeros(candidate.p)
    placement = arrays.placement
    for r in range(candidate.p):
        lo, hi = arrays.offsets[r], arrays.offsets[r + 1]
        base = running[lo - 1] if lo else 0.0
        peak = max(0.0, float((running[lo:hi] - base).max())) if hi > lo else 0.0
        param_bytes = sum(profile.param_bytes[split[s].start:split[s].stop].sum() for s in placement.stages_of(r))
        out[r] = param_bytes * (2 + states) + peak
    return out


def candidate_arrays(c: Candidate, files: dict) -> ScheduleArrays:
    """The array form of candidate ``c``'s schedule."""
    if c.schedule_file:
        sched = files[c.schedule_file]
        return from_actions([list(acts) for acts in sched.ranks], sched.placement, sched.microbatches)
    return schedule_arrays(c.schedule, c.p, c.m, c.v)
