"""The classic pipeline diagram as text, drawn from a simulation."""

from __future__ import annotations

from ppbench.sim.simulator import SimResult

__all__ = ["timeline_text"]


def timeline_text(result: SimResult, p: int, show_stage: bool = False) -> str:
    """One row per rank, one cell per time unit: ``F3`` = forward of microbatch 3 for one unit
    (``1F3``, PyTorch's text, when ``show_stage``: ranks holding several stages), ``..`` = idle."""
    def label(action) -> str:
        return str(action) if show_stage else f"{action.op.value}{action.mb}"

    width = int(round(result.makespan))
    cell = max((len(label(e.action)) for e in result.events if e.action.is_compute), default=2)
    rows = []
    for r in range(p):
        cells = ["." * cell] * width
        for e in result.by_rank(r):
            if e.action.is_compute:
                for t in range(int(round(e.start)), int(round(e.end))):
                    cells[t] = label(e.action).ljust(cell)
        rows.append(f"  rank {r} |" + "".join(cells) + "|")
    return "\n".join(rows)
