"""One click, several methods: the presenter's comparison (Train tab) and the ``/run_comparison`` endpoint.

Each method of the comparison is an ordinary run of the session: the run service trains it
(:func:`alignlab.ui.service.train`, streaming its curves, sharing identical runs with the room), compares it
(:func:`alignlab.ui.service.compare`), and it joins the session's work. So a comparison is nothing but Start
and Compare pressed once per method, with each method's own defaults; its table is the runs' evidence rows side
by side.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import gradio as gr

from alignlab.data.pairs import DatasetError, TrainingData, thumbs_from_dicts
from alignlab.data.presets import list_presets, load_preset
from alignlab.pipeline.comparison import (
    DEFAULT_METHODS,
    comparison_settings,
    drain,
    in_turn,
    method_names,
    parse_methods,
)
from alignlab.pipeline.plots import OVERLAY_AXES
from alignlab.registry.methods import METHODS
from alignlab.registry.settings import GENERATION_KNOBS, KNOBS, GenerationSettings, SettingsError, TrainingSettings
from alignlab.serving.sharing import work_key
from alignlab.training.trl_rows import trained_on
from alignlab.ui import runs_panel, service, work
from alignlab.ui.common import api_doc, default_model, fail, session_of
from alignlab.ui.inputs import GREEDY, generation_settings, pairs_from_table, prompts_from_text, typed_values
from alignlab.ui.state import Session
from alignlab.ui.views import finished_view, report_views, train_view
from alignlab.verdict.readings import settings_text
from alignlab.verdict.runs_table import run_label

DEFAULTS = TrainingSettings()
INTRO = (
    "### Compare methods on the same pairs\n"
    "Tick methods at the top of this tab and press **Compare methods**: each trains with its own defaults on the "
    "pairs, one after another, and is compared with the same baseline. Their curves overlay below; the table fills "
    "in as each finishes, and the **Compare** tab shows every run's answers side by side."
)


def _settings(methods: Any, steps: Any, batch_size: Any, seed: Any) -> list[TrainingSettings]:
    """Every run's settings, checked before any model work; a bad input raises a gr.Error naming it."""
    try:
        names = parse_methods(methods)
        return comparison_settings(names, **typed_values({"steps": steps, "batch_size": batch_size, "seed": seed}))
    except SettingsError as exc:
        raise fail(str(exc), "Methods") from exc


def _live_title(session: Session, settings: TrainingSettings) -> str:
    return f"{run_label(session.runs_started + 1)} · {settings.method_label} (training)"


def status_line(done: int, total: int, current: str | None, stage: str = "") -> str:
    if current is None:
        return f"**Comparison finished:** {done} of {total} runs trained and compared."
    return f"**Run {done + 1} of {total}: {current}** — {stage}"


class _ComparisonView:
    """What the comparison shows as it goes: the Train tab's outputs as the current run last drew them, the
    Compare tab's as the last compare left them, and the runs this comparison made (the session's newest)."""

    def __init__(self, session: Session, request: gr.Request, axis: str) -> None:
        self.session, self.request, self.axis = session, request, axis
        self.first = session.runs_started
        self.shown: dict[str, tuple] = {"train": train_view("", []), "compare": (gr.skip(),) * 6}

    def frame(self, status: str, live: tuple | None = None) -> tuple[Any, ...]:
        """Everything the comparison shows. While a run trains (``live``), only its curves move: the runs' table,
        the map and the answers side by side change when a run ends, so those frames skip them (rebuilt and sent
        at every step, they took a share of the two cores the training needs)."""
        session, shown = self.session, self.shown
        overlay = runs_panel.overlay_plot(session, self.axis, live)
        if live is not None:
            return (
                status,
                overlay,
                gr.skip(),
                gr.skip(),
                *shown["train"],
                gr.skip(),
                gr.skip(),
                *(gr.skip(),) * len(shown["compare"]),
            )
        made = session.runs_started - self.first
        mine = session.runs[len(session.runs) - made :] if made else []
        return (
            status,
            overlay,
            runs_panel.runs_frame(mine),
            runs_panel.map_markdown(session),
            *shown["train"],
            *runs_panel.runs_views_ui(self.request)[:2],
            *shown["compare"],
        )


def comparison_ui(
    methods: Any,
    steps: Any,
    axis: str,
    pairs: Any,
    heldout_pairs: Any,
    probes: dict[str, Any] | None,
    batch_size: Any,
    seed: Any,
    model: str,
    prompts: str,
    max_new_tokens: Any,
    decoding: str,
    generation_seed: Any,
    unpaired: list[dict[str, Any]] | None,
    request: gr.Request,
) -> Iterator[tuple[Any, ...]]:
    """Train and compare each method in turn, streaming the Train tab, the overlay and the table."""
    session = session_of(request)
    settings = _settings(methods, steps, batch_size, seed)
    data = TrainingData(pairs_from_table(pairs), thumbs_from_dicts(unpaired or []))
    heldout = pairs_from_table(heldout_pairs)
    for run_settings in settings:  # a paired method on thumbs rows that form no pair: refused before any run
        try:
            trained_on(data, run_settings)
        except DatasetError as exc:
            raise fail(str(exc), "Dataset") from exc
    if session.training_now:
        raise fail("A training run is already in progress in this session: wait for it or press Stop.")
    view = _ComparisonView(session, request, axis or "loss")
    baseline = None  # what the baseline will be recorded from, where the session has none yet
    if session.baseline is None:
        eval_prompts = prompts_from_text(prompts)
        service.check_prompts(eval_prompts)
        baseline = (
            model or default_model(),
            eval_prompts,
            generation_settings(max_new_tokens, decoding, generation_seed),
        )
    recorded = session.baseline.to_dict() if session.baseline is not None else None
    key = work_key(
        "comparison", baseline=baseline or recorded, data=data, heldout=heldout, probes=probes, settings=settings
    )
    steps = _compare_methods(view, settings, data, heldout, probes, baseline)
    # One request in the share of the line, from this click until its last comparison starts.
    yield from work.as_one_request(session, "a comparison of methods", key, len(settings), steps)


def _compare_methods(
    view: _ComparisonView,
    settings: list[TrainingSettings],
    data: TrainingData,
    heldout: list[Any],
    probes: dict[str, Any] | None,
    baseline: tuple[str, list[str], dict[str, Any]] | None,
) -> Iterator[tuple[Any, ...]]:
    """The page's comparison: the baseline first where one is to be recorded (model, prompts, generation), then each
    method in turn."""
    session = view.session
    if baseline is not None:
        first = settings[0].method_label
        yield view.frame(status_line(0, len(settings), first, "recording the baseline answers first"))
        service.record_baseline(session, *baseline, gr.Progress())
    yield from _runs_in_turn(view, session, settings, data, heldout, probes)


def _runs_in_turn(
    view: _ComparisonView,
    session: Session,
    settings: list[TrainingSettings],
    data: TrainingData,
    heldout: list[Any],
    probes: dict[str, Any] | None,
    finished: Callable[[], str] | None = None,
) -> Iterator[tuple[Any, ...]]:
    """Train and compare each of ``settings`` in turn on ``data`` (:func:`alignlab.pipeline.comparison.in_turn`),
    streaming
    the frames of ``view``; ``finished`` words the last status (default: the comparison's)."""
    frame, shown, total = view.frame, view.shown, len(settings)

    def run_one(index: int, run_settings: TrainingSettings) -> Iterator[tuple[Any, ...]]:
        label = run_settings.method_label
        live_title = _live_title(session, run_settings)
        training = service.train(session, run_settings, data.pairs, heldout, probes, data.unpaired)
        try:
            for update in training:
                if update.finished:
                    shown["train"] = finished_view(session)
                else:
                    shown["train"] = train_view(update.status, update.rows, method=run_settings.method)
                live = (live_title, list(session.log_rows), run_settings.method)
                yield frame(status_line(index, total, label, "training"), live)
        finally:
            training.close()
        if session.trained is None or session.trained.policy_dir is None:
            yield frame(f"**Stopped** during run {index + 1} ({label}) before its first step ended.")
            return None
        yield frame(status_line(index, total, label, "comparing its answers with the baseline"))
        report, path = service.compare(session, gr.Progress())
        shown["compare"] = report_views(report, path)
        if index + 1 < total:
            yield frame(status_line(index + 1, total, "…"))
        else:
            yield frame(finished() if finished is not None else status_line(total, total, None))
        return report

    yield from in_turn(settings, run_one)


def remedy_ui(axis: str, request: gr.Request) -> Iterator[tuple[Any, ...]]:
    """*Try the remedy*: the compared run's remedy (its report's ``health.remedy``) trained on the same data and
    compared, beside it in the runs side by side, its curves overlaid on the first run's."""
    session = session_of(request)
    report = session.report
    if report is None:
        raise fail("Compare a run first: the remedy is read from its verdict.", "No verdict yet")
    found = (report.get("health") or {}).get("remedy")
    if not found:
        raise fail(
            f"This run's verdict ({report['health']['verdict']}) names no remedy: none of its findings has a cure "
            "in the settings (a healthy run, or one whose data must change).",
            "No remedy",
        )
    if session.training_now:
        raise fail("A training run is already in progress in this session: wait for it or press Stop.")
    try:
        settings = TrainingSettings.from_dict(dict(found["settings"]))
    except SettingsError as exc:
        raise fail(f"The remedy's settings are not usable: {exc}", "Remedy") from exc
    probes = service.probes_of(service.session_preset(session))
    lab = session.trained.lab
    data = TrainingData(list(lab.pairs), list(lab.unpaired))
    view = _ComparisonView(session, request, axis or "loss")
    changes = settings_text(found.get("changes") or {})

    def finished() -> str:
        return (
            f"**Remedy tried:** run {run_label(session.runs_started)} trained with {changes} and compared; it sits "
            "beside the first in the runs side by side below."
        )

    yield from _runs_in_turn(view, session, [settings], data, list(lab.heldout_pairs), probes, finished)


def run_comparison(
    methods: str = ",".join(DEFAULT_METHODS),
    model: str = "",
    preset: str = "seed-lab",
    steps: int | None = None,
    batch_size: int = DEFAULTS.batch_size,
    seed: int = DEFAULTS.seed,
    max_new_tokens: int = GenerationSettings().max_new_tokens,
    request: gr.Request = None,
) -> dict:
    """Several methods on one preset, one after another, each with its own defaults. Returns the comparison JSON.

    Args:
        methods: comma-separated method names, up to 6, a DPO loss variant meaning DPO with that loss.
        model: model spec (a listed name, a Hub id or a local path); empty means the app's default model.
        preset: preset id.
        steps: For every run.
        seed: The same for every run.
        max_new_tokens: For the eval prompts.
    Returns:
        {"runs": [report, ...], "table": [row, ...]}: one report per method, in order (each names its run:
        report["run"] = {"label", "index", "of"}), and each run's evidence row (held-out, contrast and capability
        accuracy, KL, perplexity, answers changed, verdict, seconds per step, peak memory).
    """
    try:
        lab = load_preset(preset)
    except DatasetError as exc:
        raise gr.Error(str(exc), title="Unknown preset") from exc
    settings = _settings(methods, steps, batch_size, seed)
    generation = generation_settings(max_new_tokens, GREEDY, 0)
    session = session_of(request)
    if session.training_now:
        raise fail("A training run is already in progress in this session: wait for it or press Stop.")

    spec, identity = work.check_model(model or default_model())

    def run_one(index: int, run_settings: TrainingSettings) -> dict[str, Any]:
        what = f"Run {index + 1} ({run_settings.method_label})"
        report = copy.deepcopy(service.train_then_compare(session, lab, run_settings, what))
        report["run"] = {**report.get("run", {}), "index": index + 1, "of": len(settings)}
        return report

    key = work_key("comparison", model=identity, lab=lab.to_dict(), settings=settings, generation=generation)
    with work.one_request(
        session, "a comparison of methods", key, comparisons=len(settings)
    ):  # one request in the share of the line
        service.record_baseline(session, spec, list(lab.eval_prompts), generation, gr.Progress())
        return drain(in_turn(settings, run_one))


# --------------------------------------------------------------------------- layout and events


def build_controls() -> SimpleNamespace:
    """The methods to compare, the steps per run and *Compare methods*: beside the Train tab's *Start training*."""
    methods = gr.CheckboxGroup(
        [(entry.title, name) for name, entry in METHODS.items()],
        value=list(DEFAULT_METHODS),
        label="Compare methods on the same pairs",
        info="Each runs with its own β, learning rate and steps, one after another (see the map below).",
        elem_id="comparison-methods",
    )
    with gr.Row(elem_id="comparison-run-row"):
        steps = gr.Number(
            None,
            label="Steps per run",
            info="Empty = each method's own.",
            elem_id="comparison-steps",
            scale=1,
            min_width=160,
        )
        run = gr.Button("Compare methods", variant="primary", elem_id="comparison-button", scale=1, min_width=160)
    return SimpleNamespace(methods=methods, steps=steps, run=run)


def build(controls: SimpleNamespace) -> SimpleNamespace:
    """The comparison's results under the Train tab's plots: its progress, the runs' curves overlaid, their table
    and the map of methods; ``controls`` are the widgets :func:`build_controls` put at the top of the tab."""
    with gr.Accordion("Compare methods side by side", open=True, elem_id="comparison-panel"):
        gr.Markdown(INTRO)
        status = gr.Markdown(elem_id="comparison-status")
        axis = gr.Radio(list(OVERLAY_AXES), value="loss", label="Curves of every run on", elem_id="comparison-axis")
        overlay = gr.LinePlot(
            x="step",
            y="value",
            color="run",
            height=300,
            show_label=False,
            title="This session's work, overlaid",
            elem_id="plot-overlay",
        )
        table = runs_panel.runs_table("runs of this comparison", "comparison-table")
        with gr.Accordion("The map of methods", open=False, elem_id="map-panel"):
            method_map = gr.Markdown(runs_panel.map_markdown(), elem_id="method-map")
    return SimpleNamespace(**vars(controls), status=status, axis=axis, overlay=overlay, table=table, map=method_map)


def wire(
    panel: SimpleNamespace,
    train: SimpleNamespace,
    dataset: SimpleNamespace,
    baseline: Any,
    train_outputs: list[Any],
    compare_outputs: list[Any],
    remedy_button: Any,
    remedy_status: Any,
) -> tuple[Any, Any]:
    """The button (private: the API has ``/run_comparison``), the axis picker and the Compare tab's *Try the
    remedy* (``remedy_button``, its progress in ``remedy_status``); returns both events for Stop.

    ``train_outputs``: the Train tab's outputs; ``compare_outputs``: the Compare tab's runs table and answers, then
    its report outputs (the app passes them in, so that no tab's module reaches into another's)."""
    panel.axis.change(runs_panel.overlay_ui, panel.axis, panel.overlay, api_visibility="private", queue=False)
    gr.api(run_comparison, api_name="run_comparison", api_description=_doc(), concurrency_limit=None)
    remedy = remedy_button.click(
        remedy_ui,
        [panel.axis],
        [remedy_status, panel.overlay, panel.table, panel.map, *train_outputs, *compare_outputs],
        api_visibility="private",
        concurrency_limit=None,
        show_progress="minimal",
    )
    comparison = panel.run.click(
        comparison_ui,
        [
            panel.methods,
            panel.steps,
            panel.axis,
            dataset.pairs,
            dataset.heldout,
            dataset.probes,
            train.batch_size,
            train.seed,
            baseline.model,
            baseline.prompts,
            baseline.max_new_tokens,
            baseline.decoding,
            baseline.seed,
            dataset.unpaired,
        ],
        [
            panel.status,
            panel.overlay,
            panel.table,
            panel.map,
            *train_outputs,
            *compare_outputs,
        ],
        api_visibility="private",
        concurrency_limit=None,
        show_progress="minimal",
    )
    return comparison, remedy


def _doc() -> str:
    """/run_comparison's description: its settings from their fields, the method names and presets those known."""
    knobs = {**KNOBS, "max_new_tokens": GENERATION_KNOBS["max_new_tokens"]}
    choices = {"methods": method_names(), "preset": [p.id for p in list_presets()]}
    return api_doc(run_comparison, knobs, choices=choices)
