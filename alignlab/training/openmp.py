"""OpenMP's worker threads, handed back by a thread whose model work is done.

torch runs its CPU ops on OpenMP (GNU libgomp in the PyPI wheels). Every thread that runs a parallel op
gets a pool of worker threads of its own, kept until that thread exits. Between two ops the workers
spin for a moment (about 3 ms) before they sleep, so the next op starts at once; but libgomp spins only
100 times, a few microseconds, whenever it manages more threads than the process has CPUs. A server
crosses that line at once: the main thread's start-up warm-up leaves a pool, and the thread that serves
a click makes a second. From then on every op (thousands per generated answer) wakes its workers
through the kernel, and a CPU generation in a server thread ran about a third slower than in a thread
whose pools were handed back (``docs/performance.md``).

:func:`release_pool` hands the calling thread's pool back (OpenMP 5's ``omp_pause_resource_all``, soft):
the warm-up and the preload call it at their end, and a thread that hands a training to another
thread calls it first. Threads that end hand theirs back by themselves.
"""

from __future__ import annotations

import ctypes
import os
import sys
from functools import cache

#: ``omp_pause_soft`` (omp.h): the runtime frees its threads and keeps what a restart needs.
_OMP_PAUSE_SOFT = 1
#: The OpenMP runtimes torch is built against: GNU's (Linux wheels), LLVM's, Intel's.
_RUNTIMES = ("libgomp", "libomp", "libiomp5")


@cache
def _runtime() -> ctypes.CDLL | None:
    """The OpenMP runtime this process has loaded (torch's own first, where another is loaded too), or None."""
    import torch  # loads the runtime torch uses

    if not sys.platform.startswith("linux"):
        return None
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            paths = {line.split()[-1] for line in maps if line.rstrip().endswith(".so") or ".so." in line}
    except OSError:
        return None
    torch_dir = os.path.dirname(torch.__file__)
    for path in sorted(paths, key=lambda p: (not p.startswith(torch_dir), p)):
        name = path.rsplit("/", 1)[-1]
        if name.startswith(_RUNTIMES):
            library = ctypes.CDLL(path)  # already loaded: the same handle
            if hasattr(library, "omp_pause_resource_all"):
                return library
    return None


def release_pool() -> bool:
    """Hand back the calling thread's OpenMP worker threads; whether it did (False: nothing to call).

    Cheap when the thread has no pool; the next parallel op in this thread makes a new one.
    """
    runtime = _runtime()
    if runtime is None:
        return False
    return runtime.omp_pause_resource_all(_OMP_PAUSE_SOFT) == 0
