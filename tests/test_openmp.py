"""OpenMP worker threads handed back when a thread's model work is done (alignlab.training.openmp).

Each check runs in a fresh process, where no other thread comes or goes, and counts the process's
threads: a thread that ran a parallel op with two torch threads holds one OpenMP worker until it hands
its pool back. A process whose model work runs in several threads keeps at most one such pool, or every
op wakes its workers through the kernel (the module's docstring has the figures).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts threads in /proc")

PRELUDE = """
import os, sys, threading, torch
from alignlab.training.openmp import release_pool
torch.set_num_threads(2)  # a team of two, a pool with one worker, on any machine
tasks = lambda: len(os.listdir("/proc/self/task"))
big = torch.ones(1 << 23)  # itself a parallel op
release_pool()  # each check starts with no pool in the main thread
def parallel_op():
    (big + 1).sum()  # far above torch's grain size: an OpenMP parallel region
def settled():
    # the process's thread count once no thread is starting or ending (a finished run's threads wind down)
    import time
    counts = [tasks()]
    while len(counts) < 4 or len(set(counts[-4:])) > 1:
        time.sleep(0.05)
        counts.append(tasks())
    return counts[-1]
def holds_pool():
    # True when this thread still has a pool: handing it back ends one of the process's threads (within a second)
    import time
    before = settled()
    release_pool()
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        if tasks() < before:
            return True
        time.sleep(0.02)
    return False
"""


def run(body: str, *args: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", PRELUDE + body, *args], capture_output=True, text=True, check=False, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.split()


def test_release_pool_hands_back_the_calling_threads_workers_only():
    body = """
results = {}
def worker():
    parallel_op()
    results["worker_pool"] = tasks()
    results["released"] = release_pool()
    results["after"] = settled()  # the handed-back worker has ended
base = tasks()
parallel_op()
main_pool = tasks()
thread = threading.Thread(target=worker)
thread.start(); thread.join()
print(base, main_pool, results["worker_pool"], results["released"], results["after"], holds_pool(), holds_pool())
"""
    base, main_pool, worker_pool, released, after, main_held, again = run(body)
    assert int(main_pool) == int(base) + 1  # the main thread's one worker
    assert int(worker_pool) == int(main_pool) + 2  # the thread itself and its own worker
    assert released == "True"
    assert int(after) == int(worker_pool) - 1  # its worker ended; the main thread's stayed
    assert main_held == "True" and again == "False"  # the main thread's pool, handed back once


def test_warm_up_leaves_its_thread_without_a_pool(tiny_chat_dir):
    body = """
from alignlab.pipeline.warmup import preload, warm_up
parallel_op()
preload()
preload_left = holds_pool()
parallel_op()
warm_up(sys.argv[1], device="cpu")
print(preload_left, holds_pool())
"""
    preload_left, warm_up_left = run(body, str(tiny_chat_dir))
    assert preload_left == "False"
    assert warm_up_left == "False"  # app.py's main thread serves no click: it keeps no workers


def test_a_thread_that_hands_its_training_to_another_hands_back_its_pool_first(tiny_chat_dir):
    body = """
from alignlab.models.loading import load_model
from alignlab.data.pairs import PreferencePair
from alignlab.registry.settings import TrainingSettings
from alignlab.training.run import stream_training
loaded = load_model(sys.argv[1], device="cpu")
pairs = [PreferencePair("Say hi.", "Hello there, friend!", "No."), PreferencePair("Name a fruit.", "An apple.", "Meh.")]
parallel_op()
kinds = [event.kind for event in stream_training(loaded, pairs, TrainingSettings(steps=2, batch_size=2))]
print(kinds[-1], holds_pool())  # nothing in this thread made or freed a pool since it handed the training over
"""
    last, held = run(body, str(tiny_chat_dir))
    assert last == "end"
    assert held == "False"
