"""Whether other processes used this host's cores while a run measured: the host's busy CPU time
(/proc/stat) minus the job's own CPU time on that host, as a share of the host's CPU capacity."""

from __future__ import annotations

import os
import time

from mpi4py import MPI

from ppbench.run.environment import usable_cores

__all__ = ["CoreSharing", "host_busy_seconds"]

#: a run is marked ``shared_cores`` when others took more than this share of the host's CPU time
SHARED_ABOVE = 0.05


def host_busy_seconds() -> float | None:
    """CPU seconds this host has spent busy since boot (all cores; idle and I/O wait excluded), or None."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(x) for x in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class CoreSharing:
    """``start()`` before the measured steps and ``stop()`` after, on every rank of ``comm``."""

    def __init__(self, comm: MPI.Comm):
        self.comm = comm
        self.local = comm.Split_type(MPI.COMM_TYPE_SHARED)
        self.cores = usable_cores()

    def start(self) -> None:
        self._cpu, self._wall = time.process_time(), time.monotonic()
        self._busy = host_busy_seconds() if self.local.Get_rank() == 0 else None

    def stop(self) -> dict:
        """{'foreign_cpu_share', 'shared_cores'} as seen by world rank 0's host (NaN where /proc/stat is missing)."""
        ours = self.local.allreduce(time.process_time() - self._cpu)
        wall = time.monotonic() - self._wall
        share = float("nan")
        if self.local.Get_rank() == 0 and self._busy is not None:
            busy = host_busy_seconds()
            if busy is not None and wall > 0:
                share = max(0.0, (busy - self._busy) - ours) / (wall * self.cores)
        share = self.comm.bcast(share, root=0)
        self.local.Free()
        return {"foreign_cpu_share": share, "shared_cores": bool(share > SHARED_ABOVE)}
