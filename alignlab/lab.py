"""The four steps of the lab in one place: baseline -> dataset -> train -> compare.

The CLI and the app's "run the whole lab" button both call :func:`run_lab`; the app's tabs call
the same step functions one at a time. :func:`build_report` assembles the report JSON whose
fields are the public contract (``docs/architecture.md``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from alignlab import model_checks, tracking
from alignlab.degeneration import degeneration_report
from alignlab.evaluation import Evidence, count_changed, gather_evidence
from alignlab.findings import RunFacts, training_accuracy
from alignlab.generation import generate, generate_baseline, generate_scored
from alignlab.health import read_health
from alignlab.judges import reward_model_check, win_rate
from alignlab.models import LoadedModel, load_model
from alignlab.pairs import DatasetError
from alignlab.presets import Preset, capability_probe, heldout_unavailable, validate_preset
from alignlab.probes import PreferenceProbe
from alignlab.questions import MAX_NEW_TOKENS, check_answers, question_set
from alignlab.remedies import remedy
from alignlab.reward_judges import check_judge_spec, pick_judge
from alignlab.settings import GenerationSettings, TrainingSettings
from alignlab.tracking import RunTracker
from alignlab.training import CancelToken, TrainingEvent, TrainingResult, train_policy

STAGES = ("load_model", "baseline", "train", "evaluate")


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
    ``judge``: who judges the win rate (:func:`alignlab.reward_judges.pick_judge`; default: the agreement judge).
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
    surprise = evidence.answer_surprise
    degeneration = degeneration_report(
        baseline_outputs, aligned_outputs, surprise.get("before"), surprise.get("after")
    ).to_dict()
    training = training_accuracy(result.step_rows, settings.method_entry.name, settings.batch_size)
    evaluation = {
        **evidence.to_dict(),
        "training_accuracy": training.value if training else None,
        "training_accuracy_count": training.n if training else 0,
        "training_accuracy_interval": list(training.interval) if training else None,
        "heldout_curve": list(result.heldout_curve),
        "degeneration": degeneration,
        "heldout_unavailable": heldout_unavailable(preset),  # why held-out accuracy is null, when it is
    }
    health = read_health(
        RunFacts(
            log_rows=result.step_rows,
            beta=settings.beta,
            method=settings.method_entry.name,
            evidence=evaluation,
            degeneration=degeneration,
            heldout_curve=list(result.heldout_curve),
            changed=changed,
            answers=len(aligned_outputs),
        )
    )
    found = remedy(health, settings, evaluation)
    health.remedy = found.to_dict() if found is not None else None
    report = {
        "model": {
            "spec": loaded.spec,
            "source": loaded.source,
            "parameters": loaded.num_parameters,
            "chat_template": loaded.is_chat,
            "device": str(loaded.device),
        },
        "settings": {
            "preset": preset.id,
            "training": settings.to_dict(),
            "method_info": settings.method_entry.describe(),
            "generation": generation.to_dict(),
            "train_pairs": len(preset.pairs),
            "train_unpaired": len(preset.unpaired),
            "trained_on": dict(result.trained_on),
            "heldout_pairs": len(preset.heldout_pairs),
            "contrast_pairs": len(preset.contrast_pairs),
            "capability_pairs": evidence.capability_pairs,
            "steps_done": result.steps_done,
            "stopped_early": result.stopped_early,
        },
        "baseline_outputs": outputs_table(preset.eval_prompts, baseline_outputs),
        "aligned_outputs": outputs_table(preset.eval_prompts, aligned_outputs),
        "changed": changed,
        "log_history": result.log_history,
        "health": health.to_dict(),
        "eval": evaluation,
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "cost": {
            "seconds": round(result.seconds, 3),
            "steps": result.steps_done,
            "seconds_per_step": round(result.seconds_per_step, 3) if result.seconds_per_step else None,
            "trainable_parameters": result.trainable_parameters or None,
            "peak_memory_bytes": result.peak_memory_bytes,
            "peak_memory_kind": result.peak_memory_kind,
            "device": result.device or str(loaded.device),
        },
        "run": run or {"label": "A", "index": 1, "of": 1},
    }
    return json_ready(report)


def train_and_compare(
    loaded: LoadedModel,
    preset: Preset,
    settings: TrainingSettings,
    generation: GenerationSettings,
    baseline: list[str],
    timings: dict[str, float],
    on_stage: Callable[[str], None] | None = None,
    on_event: Callable[[TrainingEvent], None] | None = None,
    cancel: CancelToken | None = None,
    run: dict[str, Any] | None = None,
    tracker: RunTracker | None = None,
    judge: str | None = None,
) -> tuple[dict[str, Any], TrainingResult]:
    """Steps 3 and 4 on a loaded model whose baseline is recorded: train ``settings``, compare, report.

    With a ``tracker`` the run's steps, then its evidence and verdict, go to trackio (see :mod:`alignlab.tracking`).
    ``judge``: see :func:`compare`.
    """
    timings = dict(timings)
    started = _stage(on_stage, "train")
    probe = run_probe(loaded, preset, settings)
    live = probe.curve_point if preset.heldout_pairs or preset.contrast_pairs else None
    events = _tracked(on_event, tracker)
    check = partial(reward_model_check, loaded, preset.heldout_pairs, preset.contrast_pairs)
    result = train_policy(
        loaded, preset.training_data, settings, on_event=events, cancel=cancel, probe=live, reward_check=check
    )
    timings["train"] = time.perf_counter() - started
    if tracker is not None:
        tracker.end_training(result.steps_done, result.seconds, result.stopped_early)

    started = _stage(on_stage, "evaluate")
    aligned, evidence = compare(loaded, result, preset, generation, probe=probe, baseline=baseline, judge=judge)
    timings["evaluate"] = time.perf_counter() - started
    timings["total"] = sum(v for k, v in timings.items() if k != "total")
    report = build_report(loaded, preset, settings, generation, baseline, aligned, result, evidence, timings, run)
    if tracker is not None:
        tracker.log_report(report)
        report["tracking"] = tracker.summary()
    return report, result


def _tracked(
    on_event: Callable[[TrainingEvent], None] | None, tracker: RunTracker | None
) -> Callable[[TrainingEvent], None] | None:
    """``on_event``, with each logged step also sent to ``tracker``."""
    if tracker is None:
        return on_event

    def both(event: TrainingEvent) -> None:
        if event.kind == "log":
            tracker.log_row(event.row)
        if on_event is not None:
            on_event(event)

    return both


def start_tracking(
    preset: Preset, settings: TrainingSettings, model_spec: str, project: str | None = None, label: str = ""
) -> RunTracker | None:
    """A trackio run for a lab run of ``settings`` on ``preset`` (None when tracking is off)."""
    name = tracking.run_name(preset.id, label, settings.method)
    config = tracking.run_config(label or settings.method_label, settings.to_dict(), preset=preset.id, model=model_spec)
    return tracking.start(name, settings.method, config, project)


def _stage(on_stage: Callable[[str], None] | None, name: str) -> float:
    if on_stage is not None:
        on_stage(name)
    return time.perf_counter()


def load_and_baseline(
    model_spec: str,
    preset: Preset,
    generation: GenerationSettings,
    on_stage: Callable[[str], None] | None = None,
) -> tuple[LoadedModel, list[str], dict[str, float]]:
    """Steps 1 and 2: check the data, load the model, record its answers; returns their timings too."""
    problems = validate_preset(preset)
    if problems:
        raise DatasetError(problems)
    timings: dict[str, float] = {}
    started = _stage(on_stage, "load_model")
    model_checks.check(model_spec)  # its size, architecture and memory need, before any weight is fetched
    loaded = load_model(model_spec)
    timings["load_model"] = time.perf_counter() - started
    started = _stage(on_stage, "baseline")
    baseline = generate_baseline(loaded, preset.eval_prompts, generation)
    timings["baseline"] = time.perf_counter() - started
    return loaded, baseline, timings


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
) -> tuple[dict[str, Any], TrainingResult]:
    """Run the whole lab headless; returns (report, training result). ``tracker``, ``judge``: see
    :func:`train_and_compare`; a named judge is checked before any work."""
    settings = settings or TrainingSettings()
    generation = generation or GenerationSettings()
    check_judge_spec(judge)
    loaded, baseline, timings = load_and_baseline(model_spec, preset, generation, on_stage)
    return train_and_compare(
        loaded,
        preset,
        settings,
        generation,
        baseline,
        timings,
        on_stage,
        on_event,
        cancel,
        tracker=tracker,
        judge=judge,
    )
