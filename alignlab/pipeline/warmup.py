"""A warm-up at start-up: the lab's work once, small, before the first user clicks.

A process's first training pays for work done once: on a GPU, TRL compiles its Triton kernels, CUDA loads its
modules and cuBLAS picks its kernels; on a CPU too, the optimizer's state and the gradients are touched for the
first time and oneDNN and TRL make their first calls. A server that runs the same work on the same model once
at start-up (one generation, one DPO step on two pairs, and the original model's scores of the opening preset's
probe pairs, which every run on that preset needs) pays that before its first user does; on a GPU the compiled
kernels also land in the persistent cache (:func:`alignlab.models.loading.use_persistent_kernel_cache`) for the next
process. It is done on the model the app serves, because Triton specialises its kernels on the vocabulary's
shape. What it saves is in ``docs/performance.md``.

On ZeroGPU the main process has no GPU (each call runs in a forked worker), so there the persistent cache is
the lever and this warm-up is skipped. What needs no model is done everywhere at start-up by :func:`preload`
(a forked worker inherits it): importing TRL and hashing Triton's sources.
"""

from __future__ import annotations

import importlib.util
import time

import torch

from alignlab.data.pairs import PreferencePair
from alignlab.data.presets import Preset
from alignlab.models.generation import generate
from alignlab.models.loading import load_model, pick_device, use_persistent_kernel_cache
from alignlab.pipeline.steps import run_probe
from alignlab.registry.methods import get_method, resolve
from alignlab.registry.settings import GenerationSettings, TrainingSettings
from alignlab.training.memory import keep_freed_memory
from alignlab.training.openmp import release_pool
from alignlab.training.run import train_policy

WARMUP_PAIRS = [
    PreferencePair("Say hello.", "Hello! How can I help you today?", "No."),
    PreferencePair("Name a colour.", "Blue is a calm, friendly colour.", "Whatever."),
]


def preload(method: str = "dpo") -> dict[str, float]:
    """Start-up work that needs no GPU, done before the first click instead of inside it; seconds per part.

    - TRL itself and the method's trainer and config classes (the registry names them; the first
      import of ``trl`` scans every installed distribution);
    - Triton's key, a hash of its own sources that the first kernel compiled in a process computes
      (cached with it after that), where Triton is installed (CUDA builds of torch);
    - freed memory kept for reuse (:func:`alignlab.training.memory.keep_freed_memory`): a CPU run's large tensors
      then skip a page fault per page.

    The calling thread then hands back its OpenMP workers (:func:`alignlab.training.openmp.release_pool`): the
    server's work runs in other threads, whose own pools then spin at full speed.
    """
    seconds = {}
    started = time.perf_counter()
    keep_freed_memory()
    for stage in get_method(method).stages:
        resolve(stage.trainer)
        resolve(stage.config)
    seconds["trainers"] = time.perf_counter() - started
    if importlib.util.find_spec("triton") is not None:
        mark = time.perf_counter()
        try:
            from triton.runtime.cache import triton_key
        except ImportError:  # another Triton layout: its first kernel pays, as before
            triton_key = None
        if triton_key is not None:
            triton_key()
        seconds["triton_key"] = time.perf_counter() - mark
    release_pool()
    seconds["total"] = time.perf_counter() - started
    return seconds


def warm_up(spec: str, device: str | torch.device | None = None, preset: Preset | None = None) -> dict[str, float]:
    """Load ``spec`` and run generation and one DPO step on it (on the GPU if there is one); seconds per part.

    With ``preset`` (the one the app opens on), the original model also scores its probe pairs (held-out,
    contrast, capability) into the process's reference scores (:data:`alignlab.evidence.evaluation.REFERENCE_SCORES`),
    which a run on that preset would otherwise compute first. The cached model is left as it was (the step
    trains a copy). The calling thread (app.py's main thread, which serves no click) then
    hands back its OpenMP workers (:mod:`alignlab.training.openmp`).
    """
    device = torch.device(device) if device is not None else pick_device()
    if device.type == "cuda":
        use_persistent_kernel_cache()
    started = time.perf_counter()
    loaded = load_model(spec, device=device)
    seconds = {"load": time.perf_counter() - started}
    mark = time.perf_counter()
    generate(loaded, [WARMUP_PAIRS[0].prompt], GenerationSettings(max_new_tokens=4))
    seconds["generate"] = time.perf_counter() - mark
    mark = time.perf_counter()
    result = train_policy(loaded, WARMUP_PAIRS, TrainingSettings(steps=1, batch_size=2))
    seconds["train"] = time.perf_counter() - mark
    mark = time.perf_counter()
    generate(loaded, [WARMUP_PAIRS[1].prompt], GenerationSettings(max_new_tokens=4), model=result.policy)
    seconds["generate_trained"] = time.perf_counter() - mark
    del result
    if preset is not None:
        mark = time.perf_counter()
        run_probe(loaded, preset, TrainingSettings())
        seconds["probe_reference"] = time.perf_counter() - mark
    if device.type == "cuda":
        torch.cuda.empty_cache()
    release_pool()
    seconds["total"] = time.perf_counter() - started
    return seconds
