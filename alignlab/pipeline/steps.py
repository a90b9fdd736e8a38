"""The lab's steps, the one pipeline: record the baseline -> train -> evaluate -> report.

Each step takes and returns plain data (strings, lists, dicts and the small records here, each with ``to_dict`` and
``from_dict``), the form a ZeroGPU worker's arguments and results must take: :mod:`alignlab.ui.jobs` wraps each in
the GPU decorator, the app's run service (:mod:`alignlab.ui.service`) calls them through those jobs, and the CLI,
the bench and a comparison of methods (:mod:`alignlab.pipeline.comparison`) call them in this process through
:func:`run_lab` and :func:`train_and_compare`. A step names its model by spec and loads it through the process's
cache. The one thing that is not plain data, the trained policy, stays in the process that trained it
(:attr:`Trained.policy`); a job that crosses a process saves it and hands on its folder (:attr:`Trained.policy_dir`).

:func:`build_report` assembles the report JSON whose fields are the public contract (``docs/architecture.md``).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

from alignlab.data.pairs import DatasetError
from alignlab.data.presets import Preset, capability_probe, heldout_unavailable, validate_preset
from alignlab.data.question_set import MAX_NEW_TOKENS, question_set
from alignlab.evidence.evaluation import Evidence, count_changed, finish_evidence, gather_evidence
from alignlab.evidence.judges import reward_model_check, win_rate
from alignlab.evidence.probes import PreferenceProbe
from alignlab.evidence.questions import check_answers
from alignlab.evidence.reward_judges import AGREEMENT, LAB_REWARD_MODEL, judge_source, pick_judge
from alignlab.models.generation import generate, generate_baseline, generate_scored
from alignlab.models.loading import LoadedModel, load_model
from alignlab.registry.settings import GenerationSettings, TrainingSettings
from alignlab.serving import model_checks
from alignlab.takehome.tracking import RunTracker
from alignlab.training.run import CancelToken, TrainingEvent, TrainingResult, stream_training
from alignlab.training.trainer import load_policy
from alignlab.verdict.health import read_run


def outputs_table(prompts: list[str], texts: list[str]) -> list[dict[str, str]]:
    return [{"prompt": p, "text": t} for p, t in zip(prompts, texts)]


def json_ready(value: Any) -> Any:
    """JSON has no NaN: undefined figures (e.g. no held-out pairs) become null, in dicts and lists too."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_ready(v) for v in value]
    return value


def compare(
    loaded: LoadedModel,
    result: TrainingResult,
    preset: Preset,
    generation: GenerationSettings,
    probe: PreferenceProbe | None = None,
    baseline: list[str] | None = None,
    judge: str | None = None,
) -> tuple[list[str], Evidence]:
    """Step 4: the trained policy's answers on the same prompts, and the numeric evidence.

    ``probe``: the one that drew the run's live curve (see :func:`run_probe`), reused when given.
    ``baseline``: the original model's answers, for the original model's surprise at both.
    ``judge``: who judges the win rate (:func:`alignlab.evidence.reward_judges.pick_judge`; default: the agreement
    judge).
    """
    answers = generate_scored(loaded, preset.eval_prompts, generation, model=result.policy)
    aligned = answers.texts
    capability, source = capability_probe(preset)
    questions = question_set(preset.checked_questions)
    asked, written = policy_answers(loaded, result.policy, questions, preset.heldout_pairs, generation.max_new_tokens)
    checked = check_answers(loaded, result.policy, questions, after=asked)
    judged = None
    if preset.heldout_pairs:
        settings = result.settings
        chosen, note = pick_judge(
            loaded,
            judge,
            preset.heldout_pairs,
            preset.contrast_pairs,
            list(preset.pairs),
            settings.seed,
            settings.method_entry.judged_by_reward_model,
        )
        evals = (list(preset.eval_prompts), list(baseline), aligned) if baseline is not None else None
        training = {p.prompt for p in preset.pairs} | {row.prompt for row in preset.unpaired}
        tokens = generation.max_new_tokens
        judged = win_rate(loaded, result.policy, preset.heldout_pairs, tokens, chosen, evals, training, written=written)
        if judged is not None and note:
            judged.check.note = note
    evidence = gather_evidence(
        result.policy,
        loaded,
        preset.heldout_pairs,
        preset.eval_prompts,
        aligned,
        result.settings.beta,
        contrast_pairs=preset.contrast_pairs,
        capability_pairs=capability,
        capability_source=source,
        probe=probe,
        reuse_step=result.steps_done if probe is not None else None,
        scorer=result.settings.method_entry.scorer,
        scored_answers=answers,
        baseline_outputs=baseline,
        checked=checked,
        judged=judged,
        reward_model=result.reward_model,
    )
    return aligned, evidence


#: The policy's answers to the checked questions and the held-out prompts are generated in batches of up to this many.
ANSWER_BATCH = 64


def policy_answers(
    loaded: LoadedModel, policy: Any, questions: list[Any], heldout: list[Any], max_new_tokens: int
) -> tuple[list[str] | None, list[str] | None]:
    """The policy's greedy answers to the checked questions and to the held-out prompts, in one generation where
    both take the same length (one batch costs far less than two on a CPU; greedy answers do not depend on it);
    (None, None) where they do not, and each is asked on its own."""
    if not heldout or max_new_tokens != MAX_NEW_TOKENS:
        return None, None
    prompts = [q.question for q in questions] + [p.prompt for p in heldout]
    settings = GenerationSettings(max_new_tokens=max_new_tokens, batch_size=max(1, min(len(prompts), ANSWER_BATCH)))
    answers = generate(loaded, prompts, settings, model=policy)
    return answers[: len(questions)], answers[len(questions) :]


def run_probe(loaded: LoadedModel, preset: Preset, settings: TrainingSettings) -> PreferenceProbe:
    """The probe of a whole-lab run: every probe set of ``preset``, its reference scored once, before training."""
    capability, _ = capability_probe(preset)
    return PreferenceProbe(
        loaded,
        settings.beta,
        preset.heldout_pairs,
        preset.contrast_pairs,
        capability,
        scorer=settings.method_entry.scorer,
    )


def build_report(
    loaded: LoadedModel,
    preset: Preset,
    settings: TrainingSettings,
    generation: GenerationSettings,
    baseline_outputs: list[str],
    aligned_outputs: list[str],
    result: TrainingResult,
    evidence: Evidence,
    timings: dict[str, float],
    run: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The report JSON (its fields: ``docs/architecture.md``), with NaN written as null.

    ``run``: which run of a session or a comparison it describes (``{"label": "B", "index": 2, "of": 4}``).
    """
    changed = count_changed(baseline_outputs, aligned_outputs)
    unavailable = heldout_unavailable(preset)  # why held-out accuracy is null, when it is
    evidence = finish_evidence(evidence, result, settings, baseline_outputs, aligned_outputs, unavailable)
    health = read_run(evidence, result.step_rows, settings, changed, len(aligned_outputs))
    evaluation = evidence.to_dict()
    report = {
        "model": _model_block(loaded),
        "settings": _settings_block(preset, settings, generation, result, evidence),
        "baseline_outputs": outputs_table(preset.eval_prompts, baseline_outputs),
        "aligned_outputs": outputs_table(preset.eval_prompts, aligned_outputs),
        "changed": changed,
        "log_history": result.log_history,
        "health": health.to_dict(),
        "eval": evaluation,
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "cost": _cost_block(result, loaded),
        "run": run or {"label": "A", "index": 1, "of": 1},
    }
    return json_ready(report)


def _model_block(loaded: LoadedModel) -> dict[str, Any]:
    """The report's ``model``: which model, from where, its size and device."""
    return {**model_info(loaded), "device": str(loaded.device)}


def _settings_block(
    preset: Preset,
    settings: TrainingSettings,
    generation: GenerationSettings,
    result: TrainingResult,
    evidence: Evidence,
) -> dict[str, Any]:
    """The report's ``settings``: the run's settings, its data's sizes and how far it went."""
    return {
        "preset": preset.id,
        "training": settings.to_dict(),
        "method_info": settings.method_entry.describe(),
        "generation": generation.to_dict(),
        "train_pairs": len(preset.pairs),
        "train_unpaired": len(preset.unpaired),
        "trained_on": dict(result.trained_on),
        "heldout_pairs": len(preset.heldout_pairs),
        "contrast_pairs": len(preset.contrast_pairs),
        "capability_pairs": evidence.capability.pairs,
        "steps_done": result.steps_done,
        "stopped_early": result.stopped_early,
    }


def _cost_block(result: TrainingResult, loaded: LoadedModel) -> dict[str, Any]:
    """The report's ``cost``: the training's seconds, steps, trainable parameters and peak memory."""
    return {
        "seconds": round(result.seconds, 3),
        "steps": result.steps_done,
        "seconds_per_step": round(result.seconds_per_step, 3) if result.seconds_per_step else None,
        "trainable_parameters": result.trainable_parameters or None,
        "peak_memory_bytes": result.peak_memory_bytes,
        "peak_memory_kind": result.peak_memory_kind,
        "device": result.device or str(loaded.device),
    }


# --------------------------------------------------------------------------- the steps


def model_info(loaded: LoadedModel) -> dict[str, Any]:
    """What the page shows of a loaded model: its spec, size, whether it has a chat template, where it came from."""
    return {
        "spec": loaded.spec,
        "source": loaded.source,
        "parameters": loaded.num_parameters,
        "chat_template": loaded.is_chat,
    }


@dataclass
class Baseline:
    """The first step's record: the model and its answers before training, which every run on it is compared with."""

    model_spec: str
    model_info: dict[str, Any]
    eval_prompts: list[str]
    generation: dict[str, Any]
    """The generation settings the answers were written with (``GenerationSettings``' fields)."""
    outputs: list[str]
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds of the steps so far (``load_model`` where it was timed apart, ``baseline``)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Baseline:
        return cls(**copy.deepcopy(data))


#: Keys of a training step's end event that describe the event, not the run (the rest is its training summary).
_EVENT_ONLY = ("kind", "step", "elapsed", "policy_dir", "policy")


@dataclass
class Trained:
    """The training step's record: a finished run as plain data, and where its policy is.

    ``summary``: :meth:`TrainingResult.summary` and the live curve's last scores (``live_scores``), which the
    evaluation reuses for the very same policy.
    """

    summary: dict[str, Any]
    policy_dir: str | None = None
    """The folder the policy was saved to, by a job that hands it to another process; None: not saved."""
    policy: Any = field(default=None, repr=False, compare=False)
    """The trained model itself, in the process that trained it (never sent across one: see :func:`train`)."""

    @classmethod
    def from_event(cls, event: dict[str, Any]) -> Trained:
        """The record of a training step's ``end`` event."""
        summary = {key: value for key, value in event.items() if key not in _EVENT_ONLY}
        return cls(summary, event.get("policy_dir"), event.get("policy"))

    def to_dict(self) -> dict[str, Any]:
        return {**copy.deepcopy(self.summary), "policy_dir": self.policy_dir}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Trained:
        return cls.from_event(data)

    def result(self, policy: Any = None) -> TrainingResult:
        """The run as a :class:`TrainingResult` on ``policy`` (default: the one in memory, if any)."""
        return TrainingResult.from_summary(self.summary, policy if policy is not None else self.policy)


@dataclass
class Evaluation:
    """The evaluation step's record: the policy's answers to the eval prompts, the evidence, the seconds it took."""

    aligned: list[str]
    evidence: Evidence
    seconds: float


def record_baseline(spec: str, prompts: list[str], generation: dict[str, Any]) -> Baseline:
    """Step 1: the model's answers to ``prompts`` before training, in one batched call (the model is loaded once
    per process)."""
    started = time.perf_counter()
    loaded = load_model(spec)
    outputs = generate_baseline(loaded, prompts, GenerationSettings(**generation))
    seconds = time.perf_counter() - started
    return Baseline(spec, model_info(loaded), list(prompts), dict(generation), outputs, {"baseline": seconds})


def train(
    spec: str, lab: dict[str, Any], settings: dict[str, Any], cancel: CancelToken | None = None
) -> Iterator[dict[str, Any]]:
    """Step 2: train ``settings`` (:meth:`TrainingSettings.to_dict`) on the lab dataset ``lab``
    (:meth:`Preset.to_dict`: its pairs and thumbs rows, and the probe sets its live held-out curve scores).

    The inputs are read at once (a bad one raises here); the run then streams as it iterates: one ``{"kind":
    "log", "step", "total_steps", "elapsed", "row"}`` per logged step, then one ``end`` event with the same keys
    but ``row``, the training summary (:meth:`TrainingResult.summary`), the live curve's last scores
    (``live_scores``), ``policy_dir`` (None) and ``policy``, the trained model itself, which never leaves this
    process (:class:`Trained`). Closing the stream (or ``cancel``) stops the run at the end of its step.
    """
    loaded = load_model(spec)
    preset = Preset.from_dict(lab, "lab dataset")
    return _train_events(loaded, preset, TrainingSettings.from_dict(settings), cancel)


def _train_events(
    loaded: LoadedModel, preset: Preset, settings: TrainingSettings, cancel: CancelToken | None
) -> Iterator[dict[str, Any]]:
    probe = run_probe(loaded, preset, settings)  # the reference scores every probe set once, before training
    live = probe.curve_point if preset.heldout_pairs or preset.contrast_pairs else None
    check = partial(reward_model_check, loaded, preset.heldout_pairs, preset.contrast_pairs)
    events = stream_training(loaded, preset.training_data, settings, cancel, probe=live, reward_check=check)
    try:
        for event in events:
            if event.kind == "log":
                yield event.to_dict()
                continue
            result = event.result
            summary = {**result.summary(), "live_scores": probe.last_scores()}
            yield {**event.to_dict(), **summary, "policy_dir": None, "policy": result.policy}
    finally:
        events.close()


def evaluate(
    spec: str, lab: dict[str, Any], baseline: Baseline, trained: Trained, judge: str | None = None
) -> Evaluation:
    """Step 3: the trained policy's answers to the baseline's prompts and the evidence, the win rate judged by
    ``judge`` (:func:`compare`). The policy is the one in memory, else loaded from its folder."""
    started = time.perf_counter()
    loaded = load_model(spec)
    preset = Preset.from_dict(lab, "lab dataset")
    policy = trained.policy if trained.policy is not None else load_policy(trained.policy_dir, loaded)
    result = trained.result(policy)
    probe = run_probe(loaded, preset, result.settings)
    probe.reuse_scores(trained.summary.get("live_scores"))  # the live curve's last point scored this very policy
    generation = GenerationSettings(**baseline.generation)
    aligned, evidence = compare(loaded, result, preset, generation, probe=probe, baseline=baseline.outputs, judge=judge)
    return Evaluation(aligned, evidence, time.perf_counter() - started)


def report(
    spec: str,
    lab: dict[str, Any],
    baseline: Baseline,
    trained: Trained,
    evaluation: Evaluation,
    timings: dict[str, float],
    run: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Step 4: the run's report (:func:`build_report`). ``timings``: the seconds of the steps before the
    evaluation, whose own seconds and the total are added here; ``run``: see :func:`build_report`."""
    timings = {**timings, "evaluate": evaluation.seconds}
    timings["total"] = sum(timings.values())
    result = trained.result()
    generation = GenerationSettings(**baseline.generation)
    preset = Preset.from_dict(lab, "lab dataset")
    loaded = load_model(spec)
    aligned, evidence = evaluation.aligned, evaluation.evidence
    return build_report(
        loaded, preset, result.settings, generation, baseline.outputs, aligned, result, evidence, timings, run
    )


# --------------------------------------------------------------------------- the steps in this process


def _stage(on_stage: Callable[[str], None] | None, name: str) -> float:
    if on_stage is not None:
        on_stage(name)
    return time.perf_counter()


def load_and_baseline(
    model_spec: str,
    preset: Preset,
    generation: GenerationSettings,
    on_stage: Callable[[str], None] | None = None,
) -> Baseline:
    """Check the data and the model, load it, then step 1; the baseline's timings hold the load's too."""
    problems = validate_preset(preset)
    if problems:
        raise DatasetError(problems)
    started = _stage(on_stage, "load_model")
    model_checks.check(model_spec)  # its size, architecture and memory need, before any weight is fetched
    load_model(model_spec)
    loaded = time.perf_counter() - started
    _stage(on_stage, "baseline")
    baseline = record_baseline(model_spec, list(preset.eval_prompts), generation.to_dict())
    baseline.timings = {"load_model": loaded, **baseline.timings}
    return baseline


def train_and_compare(
    baseline: Baseline,
    preset: Preset,
    settings: TrainingSettings,
    on_stage: Callable[[str], None] | None = None,
    on_event: Callable[[TrainingEvent], None] | None = None,
    cancel: CancelToken | None = None,
    run: dict[str, Any] | None = None,
    tracker: RunTracker | None = None,
    judge: str | None = None,
) -> tuple[dict[str, Any], Trained]:
    """Steps 2 to 4 on a recorded baseline: train ``settings`` on ``preset``, evaluate, report.

    With a ``tracker`` the run's steps, then its evidence and verdict, go to trackio (see
    :mod:`alignlab.takehome.tracking`).
    ``judge``: see :func:`compare`; ``run``: see :func:`build_report`.
    """
    lab, spec = preset.to_dict(), baseline.model_spec
    started = _stage(on_stage, "train")
    trained = None
    for event in train(spec, lab, settings.to_dict(), cancel):
        if tracker is not None:
            tracker.follow(event)
        if on_event is not None:
            on_event(TrainingEvent.from_dict(event))
        if event["kind"] == "end":
            trained = Trained.from_event(event)
    timings = {**baseline.timings, "train": time.perf_counter() - started}
    _stage(on_stage, "evaluate")
    evaluation = evaluate(spec, lab, baseline, trained, judge)
    result = report(spec, lab, baseline, trained, evaluation, timings, run)
    if tracker is not None:
        tracker.log_report(result)
        result["tracking"] = tracker.summary()
    return result, trained


def check_judge_spec(spec: str | None) -> str:
    """The judge asked for, checked before any work (the CLI, the API, the Compare tab and :func:`run_lab` all call
    this): a named model passes :func:`alignlab.serving.model_checks.check_judge` (where it may come from, that it is a
    one-output reward model, that it fits). Returns its source name; raises :class:`ModelLoadError` with what is
    wrong."""
    source = judge_source(spec)
    if source not in (AGREEMENT, LAB_REWARD_MODEL):
        model_checks.check_judge(source)
    return source


def run_lab(
    model_spec: str,
    preset: Preset,
    settings: TrainingSettings | None = None,
    generation: GenerationSettings | None = None,
    on_stage: Callable[[str], None] | None = None,
    on_event: Callable[[TrainingEvent], None] | None = None,
    cancel: CancelToken | None = None,
    tracker: RunTracker | None = None,
    judge: str | None = None,
) -> tuple[dict[str, Any], Trained]:
    """The whole lab headless: the judge checked before any work, then :func:`load_and_baseline` and
    :func:`train_and_compare`; returns (report, the trained run, its policy in memory)."""
    check_judge_spec(judge)
    baseline = load_and_baseline(model_spec, preset, generation or GenerationSettings(), on_stage)
    settings = settings or TrainingSettings()
    return train_and_compare(baseline, preset, settings, on_stage, on_event, cancel, tracker=tracker, judge=judge)
