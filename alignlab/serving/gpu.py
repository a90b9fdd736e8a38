"""ZeroGPU glue: ``spaces.GPU`` where it exists, a no-op elsewhere, and duration estimates.

On a ZeroGPU Space the heavy functions (baseline generation, training, evaluation) run in a
forked worker that holds a GPU for a *duration* we must declare up front; asking for too little
kills the run, asking for too much costs the user's quota and queue position. The estimates here
are computed from the request itself (how many steps, how big the model, how many prompts), so
a 3-step run on a 135M model asks for far less than 200 steps on a 0.5B one.

Everything else in this module is plain Python: no gradio, no torch at import time, so that it
can be imported first (``spaces`` wants to be imported before torch initialises CUDA).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from alignlab.data.question_set import MAX_NEW_TOKENS as QUESTION_TOKENS
from alignlab.data.question_set import builtin_questions
from alignlab.registry.methods import DEFAULT_METHOD, METHODS  # torch-free, like this module and the two below
from alignlab.registry.model_shapes import ModelShape, ShapeError, known_shape
from alignlab.registry.settings import LIVE_PROBE_PAIRS, GenerationSettings

try:  # the package is a no-op outside a ZeroGPU Space, but it may not be installed at all
    import spaces
except ImportError:  # pragma: no cover - exercised only where spaces is absent
    spaces = None

F = TypeVar("F", bound=Callable[..., Any])

#: Shortest and longest GPU lease we ask for, in seconds.
MIN_DURATION = 20
MAX_DURATION = int(os.environ.get("ALIGNLAB_MAX_GPU_SECONDS", "300"))

UNKNOWN_PARAMETERS = 1_000_000_000  # an unknown hub model: assume a large one rather than run out

# Costs on a ZeroGPU slice (H200 MIG), from the bench's GPU runs with a margin (docs/performance.md):
# one DPO step on 8 pairs of a 135M model ~0.22 s, TRL warm-up 2-4 s, batched generation fast.
_REFERENCE_PARAMETERS = 135_000_000
_STEP_SECONDS_PER_PAIR = 0.06  # at the reference size, with a 2x margin
_TOKEN_SECONDS = 0.03  # one decoding step of a batch at the reference size, with margin
_LOAD_SECONDS = 8.0  # weights from disk to the GPU, plus the worker's start
_TRAIN_OVERHEAD_SECONDS = 12.0  # TRL set-up and first-step warm-up, saving the policy
_PROBE_SECONDS_PER_PAIR = 0.01  # forward-only scoring of a held-out/contrast pair (chosen + rejected), with margin
_MAX_NEW_TOKENS = GenerationSettings().max_new_tokens


def on_zero_gpu() -> bool:
    """True inside a ZeroGPU Space (``SPACES_ZERO_GPU`` set by the platform)."""
    return spaces is not None and os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "t", "true")


def gpu(duration: Callable[..., float] | float) -> Callable[[F], F]:
    """Decorate a heavy function with ``spaces.GPU(duration=...)``; unchanged outside ZeroGPU.

    ``duration`` may be a callable taking the same arguments as the function.
    """

    def decorate(fn: F) -> F:
        if spaces is None:
            return fn
        return spaces.GPU(duration=duration)(fn)  # returns ``fn`` itself outside ZeroGPU

    return decorate


# --------------------------------------------------------------------------- estimates


def estimate_parameters(spec: str) -> int:
    """A model's parameter count without loading it: a known name or Hub id, a local config (each counted from
    its shape: :mod:`alignlab.registry.model_shapes`), or the size in the name."""
    spec = (spec or "").strip()
    shape = known_shape(spec)
    if shape is not None:
        return shape.parameters()
    directory = Path(spec).expanduser()
    if (directory / "config.json").is_file():
        try:
            return ModelShape.from_directory(directory).parameters()
        except ShapeError:
            return UNKNOWN_PARAMETERS
    match = re.search(r"(\d+(?:\.\d+)?)\s*([mb])\b", spec.lower().replace("-", " ").replace("_", " "))
    if match:
        return int(float(match.group(1)) * (1e6 if match.group(2) == "m" else 1e9))
    return UNKNOWN_PARAMETERS


def _scale(spec: str) -> float:
    return max(0.05, estimate_parameters(spec) / _REFERENCE_PARAMETERS)


def _clamp(seconds: float) -> int:
    return int(min(MAX_DURATION, max(MIN_DURATION, math.ceil(seconds))))


def generation_seconds(spec: str, n_prompts: int, max_new_tokens: int) -> float:
    batches = max(1, math.ceil(n_prompts / 16))
    return batches * max_new_tokens * _TOKEN_SECONDS * max(1.0, _scale(spec) ** 0.5)


def baseline_duration(spec: str, prompts: list[str], generation: dict[str, Any], *args: Any, **kwargs: Any) -> int:
    """GPU seconds for loading ``spec`` and answering ``prompts`` once."""
    tokens = int(generation.get("max_new_tokens", _MAX_NEW_TOKENS))
    return _clamp(_LOAD_SECONDS * _scale(spec) ** 0.5 + generation_seconds(spec, len(prompts), tokens))


def train_duration(
    spec: str,
    pairs: list[dict[str, str]],
    settings: dict[str, Any],
    policy_dir: str = "",
    run_id: str = "",
    heldout: list[dict[str, str]] | None = None,
    contrast: list[dict[str, str]] | None = None,
    *args: Any,
    **kwargs: Any,
) -> int:
    """GPU seconds for a run: steps x (pairs per step x the method's cost + the live probe) x model size, plus set-up.

    The method's cost is its registry entry's ``step_cost``, relative to a DPO step (KTO scores each answer
    twice for its KL term; ORPO and SimPO run no reference model).
    """
    method = METHODS.get(str(settings.get("method") or DEFAULT_METHOD))
    cost = method.step_cost if method is not None else max(m.step_cost for m in METHODS.values())
    batch = int(settings.get("batch_size", 4))
    steps = settings.get("steps")
    if steps is None:  # epochs instead of steps
        steps = math.ceil(max(1, len(pairs)) / batch * float(settings.get("epochs") or 1))
    probed = min(len(heldout or []), LIVE_PROBE_PAIRS) + min(len(contrast or []), LIVE_PROBE_PAIRS)
    per_step = (_STEP_SECONDS_PER_PAIR * batch * cost + _PROBE_SECONDS_PER_PAIR * probed) * _scale(spec)
    reference_pass = _PROBE_SECONDS_PER_PAIR * probed * _scale(spec)  # the reference scores the probe once
    return _clamp(
        _LOAD_SECONDS + _TRAIN_OVERHEAD_SECONDS * _scale(spec) ** 0.5 + reference_pass + int(steps) * per_step
    )


def compare_duration(
    spec: str,
    policy_dir: str,
    preset: dict[str, Any],
    baseline_outputs: list[str],
    generation: dict[str, Any],
    training: Any = None,
    timings: Any = None,
    judge: str = "",
) -> int:
    """GPU seconds for the after-answers and the evidence (held-out scoring, KL, perplexity, the checked questions and
    the held-out prompts answered by the policy and, once per model, by the original model)."""
    n_prompts = len(preset.get("eval_prompts", []))
    paired = sum(len(preset.get(k) or []) for k in ("heldout_pairs", "contrast_pairs"))
    capability = len(preset.get("capability_pairs") or []) or 10  # imported data: the built-in set
    n_scored = paired + capability
    tokens = int(generation.get("max_new_tokens", _MAX_NEW_TOKENS))
    scoring = (n_scored * 4 + n_prompts * 2) * 0.05 * _scale(spec)
    asked = len(builtin_questions()) + len(preset.get("checked_questions") or [])
    checked = 2 * generation_seconds(spec, asked, QUESTION_TOKENS)
    judged = 2 * generation_seconds(spec, len(preset.get("heldout_pairs") or []), tokens)  # both sides' answers
    if judge not in ("", "agreement"):  # a reward model scores every answer; the lab's is trained first (once)
        judged += (n_scored + 2 * n_prompts) * 0.05 * _scale(spec) + _LOAD_SECONDS
        if judge in ("lab", "lab_reward_model"):
            judged += 6 * 2.0 * _scale(spec)
    return _clamp(2 * _LOAD_SECONDS + generation_seconds(spec, n_prompts, tokens) + scoring + checked + judged)
