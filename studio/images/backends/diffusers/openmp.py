"""The OpenMP worker threads that torch's CPU kernels run on, handed back after a render.

torch and llama.cpp (the embedded LLM, built with OpenMP) share one OpenMP runtime (libgomp) in a
process. Every thread that runs OpenMP work keeps a pool of workers, and once the process holds
more of them than it has cores, libgomp lets a thread that waits at a barrier spin only briefly
before it sleeps. llama.cpp meets its threads at a barrier after every operation of every token:
on 2 cores, after torch had computed in the main thread, the embedded LLM generated 7-14 tokens/s
instead of 24, and renders ran 30-40% slower while the LLM was loaded (docs/benchmarks.md).

`release_openmp_threads` hands the calling thread's pool back (OpenMP 5.0's
`omp_pause_resource_all`, a hard pause): the renderer calls it after each render on the CPU, so
the LLM's next call finds the cores as it left them. The next render starts a new pool, which
costs microseconds. Where the runtime is not GNU's libgomp, or is not loaded, it does nothing.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable
from functools import cache

LIBGOMP = "libgomp.so.1"  # GNU's OpenMP runtime, which Linux builds of torch and llama.cpp use
OMP_PAUSE_HARD = 2  # omp_pause_resource_t: the threads and their memory are freed


@cache
def _pause_all() -> Callable[[int], int] | None:
    """libgomp's `omp_pause_resource_all`, when the process has libgomp loaded already."""
    try:  # RTLD_NOLOAD: the runtime torch loaded, never a second one
        runtime = ctypes.CDLL(LIBGOMP, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
    except (OSError, AttributeError):  # not loaded, or no such flag (not Linux)
        return None
    function = getattr(runtime, "omp_pause_resource_all", None)
    if function is None:  # a libgomp older than OpenMP 5.0 (GCC 9)
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int
    return function


def release_openmp_threads() -> bool:
    """Hand back the OpenMP worker threads the calling thread holds; True when they were (or it
    held none), False where this runtime cannot (see the module's docstring)."""
    pause = _pause_all()
    return pause is not None and pause(OMP_PAUSE_HARD) == 0
