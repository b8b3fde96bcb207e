"""Compiling plain-Python kernels with numba, once per process (and cached on disk, so later
processes only load them). Callers keep the plain function for small inputs."""

from __future__ import annotations

from functools import lru_cache

__all__ = ["compiled"]


@lru_cache(maxsize=None)
def compiled(kernel):
    """``kernel`` compiled by numba."""
    import numba

    return numba.njit(cache=True)(kernel)
