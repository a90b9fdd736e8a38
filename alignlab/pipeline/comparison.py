"""Several methods on the same data, one after another, with the same evidence: the map, measured.

``python -m alignlab compare --methods dpo,ipo,kto,orpo --preset seed-lab`` and the API's
``/run_comparison`` both read a list of method names with :func:`parse_methods` (a registry method,
or one of DPO's loss variants: ``hinge`` means DPO with the hinge loss) and write
``{"runs": [report, ...], "table": [row, ...]}``: one report per run, in order, and
the runs side by side (:func:`alignlab.verdict.runs_table.evidence_row`). The model is loaded and its baseline
answers are recorded once; every run starts from the same original weights.

:func:`in_turn` runs the methods one after another for the CLI (:func:`run_comparison`), the API's
``/run_comparison`` and the app's *Compare methods* and *Try the remedy*, each passing how one run is done.
"""

from __future__ import annotations

import gc
import re
import time
from collections.abc import Callable, Generator, Iterable
from typing import Any, TypeVar

from alignlab.data.presets import Preset
from alignlab.pipeline.steps import load_and_baseline, train_and_compare
from alignlab.registry.methods import LOSS_TYPES, METHODS
from alignlab.registry.settings import GenerationSettings, SettingsError, TrainingSettings
from alignlab.takehome.tracking import start_run
from alignlab.training.run import CancelToken, TrainingEvent
from alignlab.verdict.runs_table import evidence_row, run_label

T = TypeVar("T")

#: What a presenter's comparison runs when nobody picks: DPO, two of its siblings and a reference-free method.
DEFAULT_METHODS = ("dpo", "ipo", "kto", "orpo")
#: At most this many runs in one comparison (a room's queue is shared; a session keeps 6 runs).
MAX_METHODS = 6


def method_names() -> list[str]:
    """Every name a comparison accepts: the registry's methods, then DPO's other loss variants."""
    return [*METHODS, *(loss for loss in LOSS_TYPES if loss not in METHODS and loss != "sigmoid")]


def parse_methods(value: str | Iterable[str] | None) -> list[str]:
    """The method names in ``value`` ('dpo,ipo kto' or a list), checked; a bad list raises SettingsError."""
    if value is None:
        names: list[str] = []
    elif isinstance(value, str):
        names = [n for n in re.split(r"[\s,]+", value.strip().lower()) if n]
    else:
        names = [str(n).strip().lower() for n in value if str(n).strip()]
    if not names:
        raise SettingsError(f"Name at least one method to compare (e.g. {','.join(DEFAULT_METHODS)}).")
    known = method_names()
    unknown = [n for n in names if n not in known and n != "sigmoid"]
    if unknown:
        raise SettingsError(
            f"Unknown method(s): {', '.join(unknown)}. Known: {', '.join(known)} "
            "(a DPO loss variant means DPO with that loss)."
        )
    names = ["dpo" if n == "sigmoid" else n for n in names]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise SettingsError(f"Each method once: {', '.join(repeated)} is listed more than once.")
    if len(names) > MAX_METHODS:
        raise SettingsError(f"At most {MAX_METHODS} methods in one comparison (got {len(names)}).")
    return names


def settings_for(name: str, **overrides: Any) -> TrainingSettings:
    """A comparison's settings for one method name: the method's own defaults, then ``overrides``.

    A loss-variant name that is not a registry method (``hinge``) is DPO with that loss.
    """
    if name in METHODS:
        return TrainingSettings.for_method(name, **overrides)
    return TrainingSettings.for_method("dpo", **{**overrides, "loss_type": name})


def comparison_settings(names: Iterable[str], **overrides: Any) -> list[TrainingSettings]:
    """Every method's settings, all checked before any model work (a bad value names the method)."""
    out = []
    for name in names:
        try:
            out.append(settings_for(name, **overrides))
        except SettingsError as exc:
            raise SettingsError(f"{name}: {exc}") from None
    return out


def in_turn(
    settings: list[TrainingSettings], run_one: Callable[[int, TrainingSettings], Any]
) -> Generator[Any, None, dict[str, Any]]:
    """Each of ``settings`` run in turn, in order; returns ``{"runs": [report, ...], "table": [row, ...]}``.

    ``run_one(index, settings)`` returns the run's report (None: the comparison stops there), or a generator that
    yields the run's progress, passed on here, and returns its report.
    """
    reports: list[dict[str, Any]] = []
    for index, run_settings in enumerate(settings):
        outcome = run_one(index, run_settings)
        report = (yield from outcome) if isinstance(outcome, Generator) else outcome
        if report is None:
            break
        reports.append(report)
    return {"runs": reports, "table": [evidence_row(r) for r in reports]}


def drain(steps: Generator[Any, None, T]) -> T:
    """What ``steps`` returns, its progress read and left unshown (a caller that draws none)."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def run_comparison(
    model_spec: str,
    preset: Preset,
    settings: list[TrainingSettings],
    generation: GenerationSettings | None = None,
    on_run: Callable[[int, TrainingSettings], None] | None = None,
    on_stage: Callable[[str], None] | None = None,
    on_event: Callable[[TrainingEvent], None] | None = None,
    cancel: CancelToken | None = None,
    track: bool = False,
    project: str | None = None,
) -> dict[str, Any]:
    """Load the model and record its baseline once, then train and compare each settings in turn.

    With ``track`` each run is a trackio run (under ``project``; see :mod:`alignlab.takehome.tracking`).

    Returns ``{"runs": [report, ...], "table": [evidence row, ...], "timings": {...}}``. A cancelled
    comparison returns the runs finished so far (and the stopped one, if it made a step).
    """
    generation = generation or GenerationSettings()
    started = time.perf_counter()
    baseline = load_and_baseline(model_spec, preset, generation, on_stage)

    def run_one(index: int, run_settings: TrainingSettings) -> dict[str, Any] | None:
        if cancel is not None and cancel.cancelled:
            return None
        if on_run is not None:
            on_run(index, run_settings)
        run = {"label": run_label(index + 1), "index": index + 1, "of": len(settings)}
        tracker = start_run(run_settings, preset.id, model_spec, run["label"], project=project) if track else None
        report, trained = train_and_compare(baseline, preset, run_settings, on_stage, on_event, cancel, run, tracker)
        del trained  # each run's policy is a full copy of the model: free it before the next one
        gc.collect()
        return report

    result = drain(in_turn(settings, run_one))
    timings = {k: round(v, 3) for k, v in baseline.timings.items()}
    return {**result, "timings": {**timings, "total": round(time.perf_counter() - started, 3)}}
