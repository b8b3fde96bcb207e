"""Where a rank computes: CPU, or ``cuda:(local rank mod device count)`` when CUDA is available.

MPI gets GPU tensors directly only if the library is CUDA-aware; otherwise the transport stages
them through host memory. Detection, in order: $PPBENCH_CUDA_AWARE (1 or 0), Open MPI's
``MPIX_Query_cuda_support``, MPICH's ``MPIX_GPU_query_support``; unknown means staging.
"""

from __future__ import annotations

import ctypes
import os

import torch
from mpi4py import MPI

__all__ = ["select_device", "cuda_aware_mpi"]


def select_device(comm: MPI.Comm, prefer: str = "auto") -> torch.device:
    """CPU, or the CUDA device of this rank's position among the ranks of its host."""
    if prefer == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    local = comm.Split_type(MPI.COMM_TYPE_SHARED)
    local_rank = local.Get_rank()
    local.Free()
    device = torch.device(f"cuda:{local_rank % torch.cuda.device_count()}")
    torch.cuda.set_device(device)
    return device


def cuda_aware_mpi() -> tuple[bool, str]:
    """(whether MPI takes CUDA buffers, how that was decided)."""
    forced = os.environ.get("PPBENCH_CUDA_AWARE")
    if forced in ("0", "1"):
        return forced == "1", "PPBENCH_CUDA_AWARE"
    try:
        lib = ctypes.CDLL(None)
    except OSError:
        return False, "unknown (no symbol lookup)"
    if hasattr(lib, "MPIX_Query_cuda_support"):
        return bool(lib.MPIX_Query_cuda_support()), "MPIX_Query_cuda_support"
    if hasattr(lib, "MPIX_GPU_query_support"):
        supported = ctypes.c_int(0)
        lib.MPIX_GPU_query_support(ctypes.c_int(0), ctypes.byref(supported))   # 0: MPIX_GPU_SUPPORT_CUDA
        return bool(supported.value), "MPIX_GPU_query_support"
    return False, "unknown (assumed not CUDA-aware)"
