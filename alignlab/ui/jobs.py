"""The lab's steps (:mod:`alignlab.pipeline.steps`) as GPU jobs: each may run in a ZeroGPU worker.

On ZeroGPU these functions run in a forked process: their arguments, return values and every
yielded value are pickled, nothing they change flows back, and only a ``gr.Error`` reaches the
user with its message (any other exception becomes a generic worker error). So each wraps one step
in the GPU decorator (with its duration, :mod:`alignlab.serving.gpu`), hands its plain data on, saves the trained
policy *to the session's directory* rather than returning it, and turns every expected failure into a
``gr.Error``. Locally (no ZeroGPU) the decorator is a no-op and they are ordinary functions.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr
import torch

from alignlab.data.pairs import DatasetError
from alignlab.models.loading import ModelLoadError, load_model
from alignlab.pipeline.steps import Baseline, Trained, evaluate, record_baseline, report, train
from alignlab.registry.settings import GenerationSettingsError, SettingsError
from alignlab.serving import gpu
from alignlab.training.run import CancelToken
from alignlab.training.trainer import is_quantized, save_policy
from alignlab.ui.state import RUN_TOKENS

_EXPECTED = (ModelLoadError, DatasetError, SettingsError, GenerationSettingsError)


@gpu.gpu(duration=gpu.baseline_duration)
def baseline_job(spec: str, prompts: list[str], generation: dict[str, Any]) -> dict[str, Any]:
    """Load ``spec`` and answer every prompt in one batched call: :func:`alignlab.pipeline.steps.record_baseline`'s
    record."""
    try:
        return record_baseline(spec, prompts, generation).to_dict()
    except ModelLoadError as exc:
        raise gr.Error(str(exc), title="Model not loaded") from exc
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
    capability: list[dict[str, str]] | None = None,
) -> Iterator[dict[str, Any]]:
    """Stream :func:`alignlab.pipeline.steps.train` as plain dicts: one ``log`` per step, then ``end`` (policy saved to
    disk).

    ``heldout`` and ``contrast`` pairs are scored after every step (the live held-out curve); ``capability``: the
    run's capability pairs, whose reference scores the probe takes before training. ``unpaired``: thumbs rows
    trained on beside the pairs (see :class:`alignlab.data.pairs.TrainingData`). Closing this generator stops the run at
    the end of the current step.
    """
    sets = {"heldout_pairs": heldout, "contrast_pairs": contrast, "capability_pairs": capability}
    lab = {"id": "train", "eval_prompts": [], "pairs": pairs, "unpaired": unpaired or [], **sets}
    cancel = RUN_TOKENS.get(run_id) or CancelToken()
    try:
        events = train(spec, lab, settings, cancel)
    except ModelLoadError as exc:
        raise gr.Error(str(exc), title="Model not loaded") from exc
    except (SettingsError, TypeError) as exc:
        raise gr.Error(str(exc), title="Training settings") from exc
    except DatasetError as exc:
        raise gr.Error(str(exc), title="Training data") from exc
    try:
        for event in events:
            yield _saved(spec, event, policy_dir) if event["kind"] == "end" else event
    except _EXPECTED as exc:
        raise gr.Error(str(exc), title="Training") from exc
    except (RuntimeError, ValueError) as exc:  # e.g. a model TRL cannot train; say what happened
        raise gr.Error(f"Training failed: {exc}", title="Training failed") from exc
    finally:
        cancel.cancel()
        events.close()


def _saved(spec: str, end: dict[str, Any], policy_dir: str) -> dict[str, Any]:
    """The end event as plain data: a policy that made a step saved to ``policy_dir``, which it names instead."""
    end = dict(end)
    policy = end.pop("policy")
    if end["steps_done"] > 0:
        end["policy_dir"] = save_trained_policy(policy, load_model(spec).tokenizer, policy_dir)
    return end


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
    """:func:`alignlab.pipeline.steps.evaluate` and :func:`alignlab.pipeline.steps.report` on the policy saved in
    ``policy_dir``: the report.

    ``training``: the run's summary (its end event); ``timings``: the steps' seconds so far; ``judge``: who judges
    the win rate (:func:`alignlab.evidence.reward_judges.pick_judge`)."""
    baseline = Baseline(spec, {}, list(preset.get("eval_prompts") or []), generation, baseline_outputs)
    trained = Trained(training, policy_dir)
    try:
        evaluation = evaluate(spec, preset, baseline, trained, judge)
        return report(spec, preset, baseline, trained, evaluation, timings)
    except _EXPECTED as exc:
        raise gr.Error(str(exc)) from exc
