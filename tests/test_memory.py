import subprocess
import sys

import pytest

from alignlab.training.memory import keep_freed_memory

PAGES = (64 << 20) // 4096  # 4 KB pages of a 64 MB tensor

#: Minor page faults of five 64 MB tensors made and freed in turn, in a fresh process (a test process's heap
#: holds whatever earlier tests left at its top): the fewest of three such rounds. A small allocation can
#: still land in a freed block while the heap settles, and the next 64 MB then takes fresh pages once
#: (seen once in a full `make test`: exactly 16384 faults); without the setting every round pays 5 x 16384.
#: With ``thread`` the tensors are made in a second thread, as the server makes them (glibc gave each thread an
#: arena of its own, which maps every block over 64 MB afresh whatever the process's settings).
MEASURE = """
import resource, sys, threading
from alignlab.training.memory import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
import torch
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
rounds = []
def measure():
    for _ in range(8):  # the heap settles (its first few blocks of this size do not fit the next one's alignment)
        torch.empty(64 << 20, dtype=torch.uint8).fill_(1)
    for _ in range(3):
        before = faults()
        for _ in range(5):
            torch.empty(64 << 20, dtype=torch.uint8).fill_(1)
        rounds.append(faults() - before)
if sys.argv[2] == "thread":
    worker = threading.Thread(target=measure)
    worker.start()
    worker.join()
else:
    measure()
print(kept, min(rounds))
"""


def faults(mode: str, where: str = "main") -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", MEASURE, mode, where], capture_output=True, text=True, check=True)
    kept, count = out.stdout.split()
    return kept, int(count)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator setting")
def test_freed_memory_is_reused_without_a_page_fault_per_page():
    """glibc maps each large tensor afresh (a fault per 4 KB page, 16384 for 64 MB, every time); after
    keep_freed_memory the process reuses pages it already has."""
    assert keep_freed_memory() is True  # conftest applied it, as the app and the CLI do
    kept, with_keep = faults("keep")
    _, without = faults("default")
    assert kept == "True"
    assert without >= 4 * PAGES  # measured: 81925
    assert with_keep < PAGES  # measured: 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator setting")
def test_freed_memory_is_reused_in_a_worker_thread_too():
    """The server runs model work in worker threads: the setting holds there (one heap for every thread)."""
    kept, with_keep = faults("keep", "thread")
    _, without = faults("default", "thread")
    assert kept == "True"
    assert without >= 4 * PAGES  # measured: 81925
    assert with_keep < PAGES  # measured: 0 (81925 with the setting but each thread on its own heap, as before)
