"""Peak memory of one run, measured: CUDA's allocator on a GPU, the process's resident memory on a CPU.

On a GPU, :func:`torch.cuda.max_memory_allocated` since a reset is exact and per run. A CPU has no
such counter, so a thread samples the process's resident set size (RSS) while the run works; the
peak is what the process held at its fullest, the model and everything else in it included (a
server's other sessions too). The reading says which of the two it is, so a table never mixes them.

It also keeps the process's freed memory for reuse (:func:`keep_freed_memory`), a setting to make before
any thread starts: so this module imports torch (which starts one) only when a measurement needs it.
"""

from __future__ import annotations

import ctypes
import sys
import threading
from types import TracebackType
from typing import TYPE_CHECKING, Any

import psutil  # accelerate's own dependency

if TYPE_CHECKING:
    import torch

#: glibc's ``mallopt`` parameters (malloc.h) and the free memory at the heap's top that is given back to the system.
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
TRIM_THRESHOLD_BYTES = 1 << 30
_kept: bool | None = None


def keep_freed_memory() -> bool:
    """Let the process reuse the memory it frees instead of returning it to the system at once (glibc, Linux).

    glibc serves every allocation over 32 MB with a fresh ``mmap`` and unmaps it when freed, so each such tensor
    pays a page fault per 4 KB page before its first use. On a CPU the lab makes such tensors all the time:
    TRL's chunked log-probabilities work in (tokens x 32768) float tiles, the evidence in (positions x vocabulary)
    chunks, and the optimizer's and gradients' buffers are re-made every step: an op on fresh pages runs several
    times slower than on reused ones, and a whole lab about a tenth slower (``docs/performance.md``). Freed memory
    is kept in the heap (given back once more than :data:`TRIM_THRESHOLD_BYTES` is free at its top). A
    process-wide setting: the entry points (the app, the CLI, the bench's workers) call it at start-up, a library
    import does not. Returns whether it applied (False where there is no glibc).

    Every thread allocates from the one main heap. By default glibc gives each new thread an arena of its
    own, made of 64 MB heaps, which maps every larger block afresh whatever the settings above, so the
    server, which runs all model work in worker threads, would fault its pages in afresh all the same (a lab
    in a worker thread made over three times the main thread's page faults; ``docs/performance.md``).
    """
    global _kept
    if _kept is None:
        _kept = False
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL("libc.so.6")
                no_mmap = libc.mallopt(_M_MMAP_MAX, 0)
                one_heap = libc.mallopt(_M_ARENA_MAX, 1)
                _kept = bool(no_mmap and one_heap) and bool(libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
            except (OSError, AttributeError):  # another C library (musl): its own allocator, as it is
                pass
    return _kept


#: How often the CPU sampler reads the RSS. Allocations of a training step last far longer than this.
SAMPLE_SECONDS = 0.05


class PeakMemory:
    """``with PeakMemory(device) as peak: ...`` then ``peak.bytes`` and ``peak.kind``."""

    def __init__(self, device: torch.device | str) -> None:
        import torch

        self.device = torch.device(device)
        self.bytes: int | None = None
        self.kind = "cuda_allocated" if self.device.type == "cuda" else "process_rss"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._process = psutil.Process()

    def _sample(self) -> None:
        while True:
            try:
                rss = self._process.memory_info().rss
            except psutil.Error:  # pragma: no cover - the process reading itself
                return
            self.bytes = max(self.bytes or 0, rss)
            if self._stop.wait(SAMPLE_SECONDS):
                return

    def __enter__(self) -> PeakMemory:
        if self.kind == "cuda_allocated":
            import torch

            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._thread = threading.Thread(target=self._sample, name="alignlab-peak-memory", daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self.kind == "cuda_allocated":
            import torch

            self.bytes = int(torch.cuda.max_memory_allocated(self.device))
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        rss = self._process.memory_info().rss
        self.bytes = max(self.bytes or 0, rss)

    def to_dict(self) -> dict[str, Any]:
        return {"peak_memory_bytes": self.bytes, "peak_memory_kind": self.kind}
