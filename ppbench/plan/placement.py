"""Which rank holds which virtual stage: an explicit mapping, never a formula hidden elsewhere.

The model is cut into ``S`` contiguous pieces, the virtual stages 0..S-1 (stage 0 holds the input
layers, stage S-1 the loss). A placement assigns each stage to one of ``p`` ranks; a rank's stages,
in increasing order, are its *chunks* 0..v-1. Two placements are built in:

- looped: stage s on rank s mod p (v stages per rank: r, p + r, 2p + r, ...); interleaved 1F1B.
- V: rank r holds stages r and 2p - 1 - r (v = 2), so the first and last stages share rank 0;
  ZB-V and DualPipeV use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ppbench.plan.actions import Action

__all__ = ["Placement", "PLACEMENTS", "infer_placement"]

PLACEMENTS = ("looped", "v")


@dataclass(frozen=True)
class Placement:
    """``stage_ranks[s]`` is the rank that holds virtual stage s; ``name`` says how it was made."""

    stage_ranks: tuple[int, ...]
    name: str = "custom"

    def __post_init__(self) -> None:
        ranks = self.stage_ranks
        if not ranks:
            raise ValueError("a placement needs at least one stage")
        p = max(ranks) + 1
        empty = sorted(set(range(p)) - set(ranks))
        if min(ranks) < 0 or empty:
            raise ValueError(f"placement {list(ranks)} must give every rank 0..{p - 1} at least one stage; "
                             f"rank(s) {empty} hold none")

    @classmethod
    def looped(cls, p: int, v: int = 1) -> Placement:
        """Stage s on rank s mod p, v stages per rank."""
        if p < 1 or v < 1:
            raise ValueError(f"looped placement needs p >= 1 and v >= 1, got p={p}, v={v}")
        return cls(tuple(s % p for s in range(p * v)), "looped")

    @classmethod
    def vshape(cls, p: int) -> Placement:
        """Rank r holds stages r and 2p - 1 - r."""
        if p < 1:
            raise ValueError(f"V placement needs p >= 1, got p={p}")
        return cls(tuple(s if s < p else 2 * p - 1 - s for s in range(2 * p)), "v")

    @classmethod
    def named(cls, name: str, p: int, v: int = 1) -> Placement:
        if name == "looped":
            return cls.looped(p, v)
        if name == "v":
            if v != 2:
                raise ValueError(f"the V placement holds exactly 2 stages per rank, got v={v}")
            return cls.vshape(p)
        raise ValueError(f"unknown placement {name!r}; allowed: {', '.join(PLACEMENTS)}")

    @property
    def num_stages(self) -> int:
        return len(self.stage_ranks)

    @property
    def p(self) -> int:
        """Ranks in the pipeline."""
        return max(self.stage_ranks) + 1

    @property
    def v(self) -> int:
        """Stages per rank, at most (equal on every rank for the built-in placements)."""
        return max(len(s) for s in self.rank_stages)

    @cached_property
    def rank_stages(self) -> tuple[tuple[int, ...], ...]:
        """The stages of every rank, in increasing order (index = chunk)."""
        out: list[list[int]] = [[] for _ in range(self.p)]
        for stage, rank in enumerate(self.stage_ranks):
            out[rank].append(stage)
        return tuple(tuple(s) for s in out)

    def rank_of(self, stage: int) -> int:
        return self.stage_ranks[stage]

    def stages_of(self, rank: int) -> tuple[int, ...]:
        return self.rank_stages[rank]

    def chunk_of(self, stage: int) -> int:
        """Position of ``stage`` among its rank's stages."""
        return self.rank_stages[self.stage_ranks[stage]].index(stage)

    def to_dict(self) -> dict:
        return {"name": self.name, "stage_ranks": list(self.stage_ranks)}


def infer_placement(ranks: list[list[Action]]) -> Placement:
    """The placement a set of per-rank lists implies: stage s belongs to the rank that computes it."""
    owner: dict[int, int] = {}
    for r, acts in enumerate(ranks):
        for a in acts:
            if a.is_compute and owner.setdefault(a.stage, r) != r:
                raise ValueError(f"stage {a.stage} is computed on ranks {owner[a.stage]} and {r}; "
                                 "a stage lives on one rank")
    missing = sorted(set(range(max(owner, default=-1) + 1)) - set(owner))
    if missing or not owner:
        raise ValueError(f"no rank computes stage(s) {missing}" if missing else "the schedule computes nothing")
    stage_ranks = tuple(owner[s] for s in range(len(owner)))
    p = max(stage_ranks) + 1
    if len(stage_ranks) % p == 0 and stage_ranks == Placement.looped(p, len(stage_ranks) // p).stage_ranks:
        return Placement.looped(p, len(stage_ranks) // p)
    if stage_ranks == Placement.vshape(p).stage_ranks:
        return Placement.vshape(p)
    return Placement(stage_ranks)
