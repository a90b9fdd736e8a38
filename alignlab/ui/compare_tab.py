"""Step 4, Compare: before vs after on the same prompts, and the evidence that the change is real."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import gradio as gr

from alignlab.health import (
    capability_reading,
    contrast_reading,
    curve_reading,
    degeneration_readings,
    heldout_reading,
    kl_reading,
    perplexity_reading,
)
from alignlab.presets import Preset
from alignlab.training import TrainingSettings
from alignlab.ui import jobs, runs, runs_panel
from alignlab.ui.common import api_doc, fail, session_of, table_from_pairs
from alignlab.ui.dataset_tab import probes_of
from alignlab.ui.diff import comparison_html
from alignlab.ui.train_tab import health_markdown, train_with

INTRO = (
    "**Step 4 — Compare.** The same prompts, before and after. The **alignment tax** is what training cost "
    "elsewhere: drift from the original model (KL) and worse fluency on unrelated text (perplexity)."
)


# --------------------------------------------------------------------------- readings


def evidence_markdown(evaluation: dict[str, Any]) -> str:
    """Each figure with what it means, in the words the verdict uses (alignlab.health)."""
    curve = evaluation.get("heldout_curve") or []
    lines = [
        "### Evidence",
        "- "
        + heldout_reading(evaluation.get("heldout_reward_accuracy"), evaluation.get("heldout_mean_margin"), evaluation),
        "- " + contrast_reading(evaluation.get("contrast_accuracy")),
        "- "
        + capability_reading(
            evaluation.get("capability_accuracy_before"),
            evaluation.get("capability_accuracy_after"),
            evaluation.get("capability_source", "preset"),
        ),
        "- " + kl_reading(evaluation.get("kl_to_reference")),
        "- " + perplexity_reading(evaluation.get("perplexity_before"), evaluation.get("perplexity_after")),
    ]
    if curve:
        lines.append("- " + curve_reading(curve))
    return "\n".join(lines)


def degeneration_markdown(degeneration: dict[str, Any]) -> str:
    """The output-level checks as a before/after table with a reading per row."""
    rows = degeneration_readings(degeneration)
    if not rows:
        return ""
    table = ["| answers | before | after | reading |", "|---|---|---|---|"]
    table += [f"| {name} | {before} | {after} | {reading} |" for name, before, after, reading in rows]
    return "### The answers themselves\n" + "\n".join(table)


def report_views(report: dict[str, Any], report_path: str | None) -> tuple[Any, ...]:
    """The Compare tab's outputs from a report dict."""
    prompts = [row["prompt"] for row in report["baseline_outputs"]]
    before = [row["text"] for row in report["baseline_outputs"]]
    after = [row["text"] for row in report["aligned_outputs"]]
    stopped = " (training was stopped early)" if report["settings"].get("stopped_early") else ""
    summary = f"## {report['changed']} of {len(prompts)} answers changed{stopped}"
    evaluation = report["eval"]
    return (
        summary,
        comparison_html(prompts, before, after),
        evidence_markdown(evaluation) + "\n\n" + degeneration_markdown(evaluation.get("degeneration") or {}),
        health_markdown(report["health"], "Health verdict"),
        report_path,
        report,
    )


# --------------------------------------------------------------------------- handlers


def compare_ui(request: gr.Request) -> tuple[Any, ...]:
    """Answer the baseline's prompts with the trained model and gather the evidence; needs /train first.

    Returns:
        (summary, before/after HTML, evidence, health verdict, report file, report JSON).
    """
    session = session_of(request)
    if not session.baseline_outputs or not session.model_spec:
        raise fail("Record the baseline first (Baseline tab), then train (Train tab), then compare.")
    if session.training_now:
        raise fail("Training is still running: wait for it to finish (or press Stop), then compare.")
    if session.training is None or session.policy_dir is None or not session.policy_dir.is_dir():
        raise fail("Train first (Train tab): there is no trained model to compare with yet.")
    preset = {
        "id": session.preset_id or "custom",
        "eval_prompts": session.eval_prompts,
        "pairs": jobs.pairs_to_dicts(session.pairs),
        "heldout_pairs": jobs.pairs_to_dicts(session.heldout_pairs),
        "contrast_pairs": jobs.pairs_to_dicts(session.contrast_pairs),
        "capability_pairs": jobs.pairs_to_dicts(session.capability_pairs),
        "unpaired": jobs.unpaired_to_dicts(session.unpaired),
    }
    report = runs.compare(session, preset, gr.Progress())  # waits its turn; shared with identical sessions
    runs.end_lab(session)
    record = session.latest_run
    if record is not None and record.training is session.training:  # the run this report describes
        report = {**report, "run": {"label": record.label, "index": session.runs_started, "of": session.runs_started}}
        record.report = report
    session.report = report
    path = session.path("alignlab-report.json")
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    return report_views(report, str(path))


def train_then_compare(lab: Preset, settings: TrainingSettings, request: gr.Request, what: str) -> dict[str, Any]:
    """Train ``settings`` on a preset's pairs in this session, unwatched, then compare: the report.

    The whole-lab endpoint and each run of a comparison go through here; ``what`` names the run in the
    message when it stopped before its first step.
    """
    session = session_of(request)
    training = train_with(
        settings, table_from_pairs(lab.pairs), table_from_pairs(lab.heldout_pairs), probes_of(lab), request
    )
    with runs.unpaced_replay():  # nobody watches the curves here
        for _ in training:
            pass
    if session.policy_dir is None:
        raise fail(f"{what} stopped before its first step ended, so there is nothing to compare.", "Stopped")
    session.preset_id = lab.id
    compare_ui(request)
    return session.report


# --------------------------------------------------------------------------- layout and events


def build() -> SimpleNamespace:
    gr.Markdown(INTRO, elem_classes="al-intro")
    run = gr.Button("Compare before and after", variant="primary", elem_id="compare-button")
    summary = gr.Markdown(label="summary", elem_id="compare-summary")
    health = gr.Markdown(label="health", elem_id="compare-health")
    evidence = gr.Markdown(label="evidence", elem_id="compare-evidence")
    table = gr.HTML(label="before and after", elem_id="compare-table")
    report_file = gr.File(label="report file", interactive=False, elem_id="report-file")
    with gr.Accordion("Report JSON", open=False):
        report_json = gr.JSON(label="report", elem_id="report-json")
    gr.Markdown(runs_panel.RUNS_INTRO)
    runs_table = runs_panel.runs_table("every run of this session", "runs-table")
    runs_answers = gr.HTML(label="answers of every run", elem_id="runs-answers")
    return SimpleNamespace(
        runs_table=runs_table,
        runs_answers=runs_answers,
        run=run,
        summary=summary,
        table=table,
        evidence=evidence,
        health=health,
        report_file=report_file,
        report_json=report_json,
    )


def outputs(tab: SimpleNamespace) -> list[Any]:
    return [tab.summary, tab.table, tab.evidence, tab.health, tab.report_file, tab.report_json]


def runs_outputs(tab: SimpleNamespace) -> list[Any]:
    return [tab.runs_table, tab.runs_answers]


def wire(tab: SimpleNamespace) -> Any:
    event = tab.run.click(
        compare_ui,
        None,
        outputs(tab),
        api_name="compare",
        api_description=api_doc(compare_ui),
        concurrency_limit=None,  # checks answer at once; the model work waits in runs.GATE
    )
    event.success(show_runs_ui, None, runs_outputs(tab), api_visibility="private", queue=False)
    return event


def show_runs_ui(request: gr.Request) -> tuple[Any, ...]:
    """The runs side by side (evidence rows, every run's answers), after a compare."""
    return runs_panel.runs_views_ui(request)[:2]
