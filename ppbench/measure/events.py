"""The events table: what a rank did in a step, measured or simulated, one row per event.

Columns: ``step`` (measured runs only), ``rank``, ``op`` (text, one of
:data:`ppbench.plan.actions.EVENT_OPS`), ``stage``, ``mb``, ``start``, ``end`` (seconds), ``peer``
(the other rank of a transfer, else -1), ``tag`` (its MPI tag, else -1), ``nbytes``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ppbench.plan.actions import EVENT_OPS, Op

__all__ = ["EVENT_COLUMNS", "EVENT_FIELDS", "COMPUTE", "TRANSFER", "events_frame"]

#: what a rank records per event (the tracer's tuple)
EVENT_FIELDS = ("op", "stage", "mb", "start", "end", "peer", "tag", "nbytes")
#: an events table without the step column (a simulation, or one step)
EVENT_COLUMNS = ("rank",) + EVENT_FIELDS
#: op names of the compute and transfer events, for filtering tables
COMPUTE: tuple[str, ...] = tuple(op.value for op in Op if op.is_compute)
TRANSFER: tuple[str, ...] = tuple(op.value for op in Op if not op.is_compute)


def events_frame(rows: np.ndarray, columns: tuple[str, ...]) -> pd.DataFrame:
    """Turn gathered float rows (``op`` as an index into EVENT_OPS) into a typed events table."""
    frame = pd.DataFrame(rows, columns=list(columns))
    for col in frame.columns:
        if col not in ("start", "end"):
            frame[col] = frame[col].astype("int64")
    frame["op"] = pd.Categorical.from_codes(frame["op"], categories=list(EVENT_OPS)).astype(str)
    return frame
