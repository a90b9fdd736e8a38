"""The heavy work, each piece a function that may run in a ZeroGPU worker.

On ZeroGPU these functions run in a forked process: their arguments, return values and every
yielded value are pickled, nothing they change flows back, and only a ``gr.Error`` reaches the
user with its message (any other exception becomes a generic worker error). So they take and
return plain data (strings, lists, dicts), the trained policy is *saved to the session's
directory* rather than returned, and every expected failure is turned into a ``gr.Error``.
Locally (no ZeroGPU) the decorator is a no-op and they are ordinary functions.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import gradio as gr
import torch

from alignlab import gpu
from alignlab.generation import generate_baseline
from alignlab.judges import reward_model_check
from alignlab.lab import build_report, compare, run_probe
from alignlab.models import LoadedModel, ModelLoadError, load_model
from alignlab.pairs import DatasetError, TrainingData, pairs_from_dicts, thumbs_from_dicts
from alignlab.presets import Preset
from alignlab.probes import live_probe
from alignlab.settings import GenerationSettings, GenerationSettingsError, SettingsError, TrainingSettings
from alignlab.trainer import is_quantized, load_policy, save_policy
from alignlab.training import CancelToken, TrainingResult, stream_training
from alignlab.ui.state import RUN_TOKENS

_EXPECTED = (ModelLoadError, DatasetError, SettingsError, GenerationSettingsError)


def _load(spec: str) -> LoadedModel:
    try:
        return load_model(spec)
    except ModelLoadError as exc:
        raise gr.Error(str(exc), title="Model not loaded") from exc


@gpu.gpu(duration=gpu.baseline_duration)
def baseline_job(spec: str, prompts: list[str], generation: dict[str, Any]) -> list[str]:
    """Load ``spec`` and answer every prompt in one batched call."""
    loaded = _load(spec)
    try:
        return generate_baseline(loaded, prompts, GenerationSettings(**generation))
    except GenerationSettingsError as exc:
        raise gr.Error(str(exc), title="Generation settings") from exc


def save_trained_policy(policy: torch.nn.Module, tokenizer: Any, directory: str | Path) -> str:
    """Save the policy as a complete model (a LoRA adapter is merged first) and return the path."""
    directory = Path(directory)
    shutil.rmtree(directory, ignore_errors=True)
    if hasattr(policy, "merge_and_unload") and not is_quantized(policy):  # PEFT: one self-contained model
        policy = policy.merge_and_unload()  # (a QLoRA adapter is saved alone: see training.load_policy)
    save_policy(policy, tokenizer, directory)
    return str(directory)


@gpu.gpu(duration=gpu.train_duration)
def train_job(
    spec: str,
    pairs: list[dict[str, str]],
    settings: dict[str, Any],
    policy_dir: str,
    run_id: str,
    heldout: list[dict[str, str]] | None = None,
    contrast: list[dict[str, str]] | None = None,
    unpaired: list[dict[str, Any]] | None = None,
) -> Iterator[dict[str, Any]]:
    """Stream a run of ``settings``' method as plain dicts: one ``log`` per step, then ``end`` (policy saved to disk).

    ``heldout`` and ``contrast`` pairs are scored after every step (the live held-out curve). ``unpaired``:
    thumbs rows trained on beside the pairs (see :class:`alignlab.presets.TrainingData`).
    Closing this generator stops the run at the end of the current step.
    """
    loaded = _load(spec)
    try:
        training = TrainingSettings.from_dict(settings)
    except (SettingsError, TypeError) as exc:
        raise gr.Error(str(exc), title="Training settings") from exc
    cancel = RUN_TOKENS.get(run_id) or CancelToken()
    try:
        data = TrainingData(pairs_from_dicts(pairs), thumbs_from_dicts(unpaired or []))
        heldout_pairs = pairs_from_dicts(heldout or [], "held-out pairs")
        contrast_pairs = pairs_from_dicts(contrast or [], "contrast pairs")
        probe = live_probe(loaded, training.beta, heldout_pairs, contrast_pairs, scorer=training.method_entry.scorer)
    except DatasetError as exc:
        raise gr.Error(str(exc), title="Training data") from exc
    check = partial(reward_model_check, loaded, heldout_pairs, contrast_pairs)
    events = stream_training(
        loaded,
        data,
        training,
        cancel,
        probe=probe.curve_point if probe is not None else None,
        reward_check=check,
    )
    try:
        for event in events:
            if event.kind == "log":
                yield {
                    "kind": "log",
                    "step": event.step,
                    "total_steps": event.total_steps,
                    "elapsed": event.elapsed,
                    "row": dict(event.row),
                }
                continue
            result = event.result
            saved = None
            if result is not None and result.steps_done > 0:
                saved = save_trained_policy(result.policy, loaded.tokenizer, policy_dir)
            yield {
                "kind": "end",
                "step": event.step,
                "total_steps": event.total_steps,
                "elapsed": event.elapsed,
                "steps_done": 0,
                "stopped_early": True,
                "seconds": event.elapsed,
                "log_history": [],
                "heldout_curve": [],
                "device": str(loaded.device),
                **(result.summary() if result is not None else {}),
                "live_scores": probe.last_scores() if probe is not None and saved else None,
                "policy_dir": saved,
            }
            return
    except _EXPECTED as exc:
        raise gr.Error(str(exc), title="Training") from exc
    except (RuntimeError, ValueError) as exc:  # e.g. a model TRL cannot train; say what happened
        raise gr.Error(f"Training failed: {exc}", title="Training failed") from exc
    finally:
        cancel.cancel()
        events.close()


@gpu.gpu(duration=gpu.compare_duration)
def compare_job(
    spec: str,
    policy_dir: str,
    preset: dict[str, Any],
    baseline_outputs: list[str],
    generation: dict[str, Any],
    training: dict[str, Any],
    timings: dict[str, float],
    judge: str = "",
) -> dict[str, Any]:
    """Answer the eval prompts with the trained policy, gather the evidence, return the report; ``judge``: who
    judges the win rate (:func:`alignlab.reward_judges.pick_judge`)."""
    loaded = _load(spec)
    started = time.perf_counter()
    policy = load_policy(policy_dir, loaded)
    try:
        lab_preset = Preset.from_dict(preset)
        generation_settings = GenerationSettings(**generation)
        settings = TrainingSettings.from_dict(training["settings"])
    except _EXPECTED as exc:
        raise gr.Error(str(exc)) from exc
    result = TrainingResult.from_summary({**training, "settings": settings.to_dict()}, policy)
    probe = run_probe(loaded, lab_preset, settings)
    probe.reuse_scores(training.get("live_scores"))  # the live curve's last point scored this very policy
    aligned, evidence = compare(
        loaded, result, lab_preset, generation_settings, probe=probe, baseline=baseline_outputs, judge=judge
    )
    timings = {**timings, "evaluate": time.perf_counter() - started}
    timings["total"] = sum(v for k, v in timings.items() if k != "total")
    return build_report(
        loaded, lab_preset, settings, generation_settings, baseline_outputs, aligned, result, evidence, timings
    )
