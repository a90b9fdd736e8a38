"""Peak memory of one run, measured: CUDA's allocator on a GPU, the process's resident memory on a CPU.

On a GPU, :func:`torch.cuda.max_memory_allocated` since a reset is exact and per run. A CPU has no
such counter, so a thread samples the process's resident set size (RSS) while the run works; the
peak is what the process held at its fullest, the model and everything else in it included (a
server's other sessions too). The reading says which of the two it is, so a table never mixes them.
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any

import psutil  # accelerate's own dependency
import torch

#: How often the CPU sampler reads the RSS. Allocations of a training step last far longer than this.
SAMPLE_SECONDS = 0.05


class PeakMemory:
    """``with PeakMemory(device) as peak: ...`` then ``peak.bytes`` and ``peak.kind``."""

    def __init__(self, device: torch.device | str) -> None:
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
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._thread = threading.Thread(target=self._sample, name="alignlab-peak-memory", daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self.kind == "cuda_allocated":
            self.bytes = int(torch.cuda.max_memory_allocated(self.device))
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        rss = self._process.memory_info().rss
        self.bytes = max(self.bytes or 0, rss)

    def to_dict(self) -> dict[str, Any]:
        return {"peak_memory_bytes": self.bytes, "peak_memory_kind": self.kind}


MEMORY_KINDS = {
    "cuda_allocated": "peak GPU memory allocated by the run",
    "process_rss": "peak memory of the whole process while the run trained (model, reference and server included)",
}
