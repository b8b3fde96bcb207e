"""Where a run ran: recorded in every result file."""

from __future__ import annotations

import os
import socket
import time

__all__ = ["environment", "set_threads", "local_ranks", "usable_cores"]


def local_ranks(comm) -> int:
    """Ranks of ``comm`` on this host (its shared-memory group; the launcher's word is not needed)."""
    from mpi4py import MPI

    local = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        return local.Get_size()
    finally:
        local.Free()


def usable_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def set_threads(requested: int, comm) -> int:
    """Set torch's intra-op threads for this rank: ``requested``, or (0) this host's cores divided by
    the ranks on it, at least 1. The same whether mpiexec started the rank or not (a lone process
    would otherwise use every core, a rank under mpiexec one). Returns the number set."""
    import torch

    threads = requested or max(1, usable_cores() // local_ranks(comm))
    torch.set_num_threads(threads)
    return threads


def environment(comm) -> dict:
    """Where a run ran: versions, host, cores, MPI library, device, torch threads per rank, and
    oversubscription (ranks x threads per rank above the cores of a host)."""
    import mpi4py
    import numpy
    import pandas as pd
    import torch
    from mpi4py import MPI

    from ppbench import __version__

    ranks_here = local_ranks(comm)
    hosts = sorted(set(comm.allgather(socket.gethostname())))
    cores = usable_cores()
    threads = torch.get_num_threads()
    return {
        "ppbench": __version__, "torch": torch.__version__, "mpi4py": mpi4py.__version__,
        "numpy": numpy.__version__, "pandas": pd.__version__, "python": os.sys.version.split()[0],
        "mpi_library": MPI.Get_library_version().splitlines()[0].strip(),
        "hosts": hosts, "host": hosts[0] if len(hosts) == 1 else f"{len(hosts)} hosts",
        "cores": cores, "world_size": comm.Get_size(), "ranks_per_host": ranks_here,
        "threads_per_rank": threads, "oversubscribed": ranks_here * threads > cores,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
