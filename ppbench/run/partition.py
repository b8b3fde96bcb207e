"""Split a layer list into contiguous stages balanced by parameter count."""

from __future__ import annotations

from torch import nn

from ppbench.plan.split import balanced_split

__all__ = ["balanced_split", "partition_layers", "describe_split"]


def partition_layers(layers: list[nn.Module], parts: int) -> list[range]:
    """Layer index ranges of each stage, balanced by parameter count."""
    return balanced_split([sum(p.numel() for p in layer.parameters()) for layer in layers], parts)


def describe_split(layers: list[nn.Module], split: list[range]) -> str:
    """One line per stage: its layer indices and parameter count."""
    lines = []
    for s, r in enumerate(split):
        count = sum(p.numel() for i in r for p in layers[i].parameters())
        lines.append(f"stage {s}: layers {r.start}..{r.stop - 1} ({len(r)} layers, {count:,} parameters)")
    return "\n".join(lines)
