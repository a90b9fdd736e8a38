"""Step 4, Compare: before vs after on the same prompts, and the evidence that the change is real."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import gradio as gr

from alignlab.ui import runs_panel, service
from alignlab.ui.common import api_doc, session_of, take_home_panel
from alignlab.ui.views import report_views

INTRO = (
    "**Step 4 — Compare.** The same prompts, before and after. The **alignment tax** is what training cost "
    "elsewhere: drift from the original model (KL) and worse fluency on unrelated text (perplexity)."
)


# --------------------------------------------------------------------------- handlers


def compare_ui(request: gr.Request) -> tuple[Any, ...]:
    """Answer the baseline's prompts with the trained model and gather the evidence; needs /train first.

    Returns:
        (summary, before/after HTML, evidence, health verdict, report file, report JSON).
    """
    report, path = service.compare(session_of(request), gr.Progress())
    return report_views(report, path)


def export_model_ui(repo_id: str = "", token: str = "", request: gr.Request = None) -> tuple[Any, ...]:
    """Save the compared run's model (weights, tokenizer, generation config, a model card with its evidence) as a
    zip; with a repo id and a token, push it to the Hub too (private). Needs /compare first.

    Args:
        repo_id: owner/name of a Hub model repo to push to; empty: only the zip.
        token: a Hugging Face token with write access, used for this push alone (a local app may use $HF_TOKEN).
    Returns:
        (the zip file, what was saved and pushed).
    """
    return service.export_model(session_of(request), repo_id, token)


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
    home = take_home_panel(
        "Take it home: save the model, push it to the Hub", "model", "your-name/smollm2-dpo", "export", "Save the model"
    )
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
        home=home,
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
    tab.home.run.click(
        export_model_ui,
        [tab.home.repo_id, tab.home.token],
        [tab.home.file, tab.home.status],
        api_name="export_model",
        api_description=api_doc(export_model_ui),
        concurrency_limit=2,
    )
    return event


def show_runs_ui(request: gr.Request) -> tuple[Any, ...]:
    """The runs side by side (evidence rows, every run's answers), after a compare."""
    return runs_panel.runs_views_ui(request)[:2]
