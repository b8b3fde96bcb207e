"""Where a run ran: recorded in every result file."""

from __future__ import annotations

import os
import socket
import time

__all__ = ["environment"]


def environment(comm) -> dict:
    """Where a run ran: versions, host, cores, MPI library, device, oversubscription."""
    import mpi4py
    import numpy
    import pandas as pd
    import torch
    from mpi4py import MPI

    from ppbench import __version__

    local = comm.Split_type(MPI.COMM_TYPE_SHARED)
    ranks_here = local.Get_size()
    local.Free()
    hosts = sorted(set(comm.allgather(socket.gethostname())))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "ppbench": __version__, "torch": torch.__version__, "mpi4py": mpi4py.__version__,
        "numpy": numpy.__version__, "pandas": pd.__version__, "python": os.sys.version.split()[0],
        "mpi_library": MPI.Get_library_version().splitlines()[0].strip(),
        "hosts": hosts, "host": hosts[0] if len(hosts) == 1 else f"{len(hosts)} hosts",
        "cores": cores, "world_size": comm.Get_size(), "ranks_per_host": ranks_here,
        "oversubscribed": ranks_here > (cores or 1),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
