"""Step 1, Baseline: pick a model, write eval prompts, record the model's answers before training."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import gradio as gr
import pandas as pd

from alignlab.registry.settings import GENERATION_KNOBS
from alignlab.ui import service
from alignlab.ui.common import api_doc, default_model, model_choices, session_of
from alignlab.ui.inputs import GREEDY, SAMPLING, generation_settings, prompts_from_text, setting_widget

INTRO = (
    "**Step 1 — Baseline.** Record how the model answers *before* training. "
    "Greedy decoding makes this “before” exactly repeatable, so any change later is caused by training."
)


# --------------------------------------------------------------------------- handlers


def load_model_ui(model: str, request: gr.Request) -> str:
    """Load a model for this session (weights are cached, so reloading is fast).

    Args:
        model: a listed name (smollm2-135m-instruct, gpt2, ...), a Hub id ('owner/name') or a local model path.
    Returns:
        One line describing the loaded model (size, chat or base).
    """
    return service.load(session_of(request), model, gr.Progress())


def baseline_ui(
    model: str, eval_prompts: str, max_new_tokens: float, decoding: str, seed: float, request: gr.Request
) -> tuple[pd.DataFrame, str]:
    """Load the model and record its answers to every eval prompt in one batched call.

    Args:
        model: model spec, as for /load_model.
        eval_prompts: the prompts to answer, one per line (at most 32).
        decoding: 'greedy (repeatable)' or 'sampling (seeded)'.
    Returns:
        A table of (prompt, answer) rows, and a status line. While it waits for the model, progress
        updates say the place in line and the estimated wait.
    """
    session = session_of(request)
    prompts = prompts_from_text(eval_prompts)
    service.check_prompts(prompts)
    generation = generation_settings(max_new_tokens, decoding, seed)
    outputs, seconds = service.record_baseline(session, model, prompts, generation, gr.Progress())
    table = pd.DataFrame({"prompt": prompts, "answer before training": outputs})
    status = (
        f"**Recorded {len(outputs)} answers** from `{session.baseline.model_spec}` in {seconds:.1f} s. "
        "Next: check the preference pairs on the **Dataset** tab, then **Train**."
    )
    return table, status


# --------------------------------------------------------------------------- layout and events


def build(eval_prompts: list[str]) -> SimpleNamespace:
    gr.Markdown(INTRO, elem_classes="al-intro")
    with gr.Row():
        model = gr.Dropdown(
            model_choices(),
            value=default_model(),
            allow_custom_value=True,
            label="Model",
            info="The embedded SmolLM2-135M runs offline. Or type a Hub id (owner/name) or a local path.",
            scale=3,
        )
        record = gr.Button("Load model and record answers", variant="primary", scale=1, elem_id="baseline-button")
    model_status = gr.Markdown(label="model", elem_id="model-status")
    prompts = gr.Textbox(
        "\n".join(eval_prompts),
        lines=6,
        max_lines=14,
        label="Eval prompts (one per line)",
        info="The same prompts are answered again after training. They come from the preset on the Dataset tab.",
        elem_id="eval-prompts",
    )
    with gr.Row():
        max_new_tokens = setting_widget(GENERATION_KNOBS["max_new_tokens"])
        decoding = gr.Radio([GREEDY, SAMPLING], value=GREEDY, label="Decoding")
        seed = setting_widget(GENERATION_KNOBS["seed"])
    status = gr.Markdown(label="status", elem_id="baseline-status")
    outputs = gr.Dataframe(
        headers=["prompt", "answer before training"],
        column_count=2,
        interactive=False,
        wrap=True,
        label="answers before training",
        elem_id="baseline-table",
    )
    return SimpleNamespace(
        model=model,
        record=record,
        model_status=model_status,
        prompts=prompts,
        max_new_tokens=max_new_tokens,
        decoding=decoding,
        seed=seed,
        status=status,
        outputs=outputs,
    )


def loading_note(model: str) -> str:
    return f"Loading `{(model or '').strip()}` and answering the prompts…"


def load_failed() -> str:
    return "Nothing recorded: the model could not be loaded (see the message above)."


def wire(tab: SimpleNamespace) -> tuple[Any, Any]:
    """Record = load (``/load_model``) then answer (``/baseline``); returns both events."""
    note = tab.record.click(loading_note, tab.model, tab.status, api_visibility="private", queue=False)
    load = note.then(
        load_model_ui,
        tab.model,
        tab.model_status,
        api_name="load_model",
        api_description=api_doc(load_model_ui),
        concurrency_limit=None,  # checks answer at once; the model work waits in runs.LINE
    )
    load.failure(load_failed, None, tab.status, api_visibility="private", queue=False)
    record = load.success(
        baseline_ui,
        [tab.model, tab.prompts, tab.max_new_tokens, tab.decoding, tab.seed],
        [tab.outputs, tab.status],
        api_name="baseline",
        api_description=api_doc(baseline_ui, GENERATION_KNOBS),
        concurrency_limit=None,
    )
    return load, record
