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


def compare_ui(judge: str = "", request: gr.Request = None) -> tuple[Any, ...]:
    """Answer the baseline's prompts with the trained model and gather the evidence; needs /train first.

    Args:
        judge: who judges the win rate against the original model: empty or "agreement" (the default: closeness
            to each held-out pair's chosen answer, by the frozen original model), "lab_reward_model" (a reward
            model trained on the run's pairs, once per data) or a reward model's Hub id or local folder (a
            one-output sequence classifier, e.g. Skywork/Skywork-Reward-V2-Qwen3-0.6B). Kept for this session's
            later comparisons.
    Returns:
        (summary, before/after HTML, evidence, health verdict, report file, report JSON).
    """
    session = session_of(request)
    service.choose_judge(session, judge)
    report, path = service.compare(session, gr.Progress())
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
    with gr.Row(elem_id="compare-run-row"):
        run = gr.Button("Compare before and after", variant="primary", elem_id="compare-button", scale=1)
        judge = gr.Textbox(
            "",
            label="Judge of the win rate",
            placeholder="empty: agreement with the data · lab_reward_model · a reward model's Hub id or folder",
            elem_id="compare-judge",
            scale=2,
        )
    summary = gr.Markdown(label="summary", elem_id="compare-summary")
    health = gr.Markdown(label="health", elem_id="compare-health")
    with gr.Row(elem_id="remedy-row"):
        remedy = gr.Button("Try the remedy", elem_id="remedy-button", scale=0, min_width=180)
        remedy_status = gr.Markdown(elem_id="remedy-status")
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
        judge=judge,
        remedy=remedy,
        remedy_status=remedy_status,
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
        [tab.judge],
        outputs(tab),
        api_name="compare",
        api_description=api_doc(compare_ui),
        concurrency_limit=None,  # checks answer at once; the model work waits in runs.LINE
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
