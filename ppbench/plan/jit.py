"""Compiling plain-Python kernels with numba, once per process (and cached on disk, so later
processes only load them). Small inputs run the plain function: compiling costs about a second."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import TypeVar

__all__ = ["COMPILE_ABOVE", "compiled", "for_size"]

#: actions beyond which a kernel runs compiled (below, plain Python is faster than compiling)
COMPILE_ABOVE = 20_000

K = TypeVar("K", bound=Callable)


@cache
def compiled(kernel: K) -> K:
    """``kernel`` compiled by numba."""
    import numba

    return numba.njit(cache=True)(kernel)  # type: ignore[return-value]  # a Dispatcher is called like the kernel


def for_size(kernel: K, actions: int) -> K:
    """``kernel`` compiled when it will handle more than :data:`COMPILE_ABOVE` actions, else as is."""
    return compiled(kernel) if actions > COMPILE_ABOVE else kernel
