"""Step 3, Train: the method and its hyperparameters, Start and Stop, live plots, a log table and a health reading.

The handlers read the widgets (:mod:`alignlab.ui.inputs`), hand the settings and the pairs to the run service
(:func:`alignlab.ui.service.train`) and draw each update it streams (:mod:`alignlab.ui.views`). The recipe
export below the plots is :mod:`alignlab.ui.recipe_panel`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import gradio as gr

from alignlab.data.pairs import thumbs_from_dicts
from alignlab.pipeline import plots
from alignlab.pipeline.plots import SEPARATION_COLORS
from alignlab.registry.methods import DEFAULT_METHOD, LOSS_TYPES, METHODS, method_choices
from alignlab.registry.settings import KNOBS
from alignlab.training.trainer import qlora_unavailable
from alignlab.ui import recipe_panel, service
from alignlab.ui.common import api_doc, session_of
from alignlab.ui.inputs import TAB_SETTINGS, pairs_from_table, setting_widget, train_settings
from alignlab.ui.views import finished_view, train_view

INTRO = (
    "**Step 3 — Train.** DPO raises the likelihood of each *chosen* answer relative to the *rejected* one; "
    "**β is the leash** that holds the model near the original. Train one method, or tick several and compare them "
    "on the same pairs: IPO, KTO (thumbs up/down), ORPO and SimPO (no reference model), RLHF (a reward model, then "
    "online RL)."
)
#: Above the live curve's two plots, whose titles stay short enough for a phone.
CURVE_CAPTION = (
    "**The live held-out curve**: pairs never trained on (held-out, and contrast pairs with the cue on the wrong "
    "side), scored every few steps. The share ranked right should rise and stay up; the mean margin between "
    "chosen and rejected, with its 95% interval, should rise and level off. RLHF's rewards are its sampled "
    "answers' reward and KL."
)


# --------------------------------------------------------------------------- handlers


def method_defaults_ui(method: str) -> tuple[Any, ...]:
    """A new method picked: its own β, learning rate, steps and SFT weight in the widgets, and DPO's loss variants and
    SFT term only for DPO (and IPO, DPO with the IPO loss).

    Picking ``ipo`` selects DPO's IPO loss; picking a method that is not DPO sets the loss back to sigmoid
    (it takes no loss variant) and locks the dropdown.
    """
    entry = METHODS.get(method) or METHODS[DEFAULT_METHOD]
    low, high = entry.beta_range
    return (
        gr.Number(value=entry.defaults["beta"], info=f"{low:g}-{high:g}: {entry.beta_means}."),
        gr.Number(value=entry.defaults["learning_rate"]),
        gr.Number(value=entry.defaults["steps"]),
        gr.Dropdown(value=entry.loss_type or "sigmoid", interactive=entry.loss_variants and entry.loss_type is None),
        gr.Number(value=entry.defaults.get("sft_weight", 0.0), interactive=entry.loss_variants),
    )


def train_ui(
    pairs: Any,
    heldout_pairs: Any,
    probes: dict[str, Any] | None,
    unpaired: list[dict[str, Any]] | None,
    request: gr.Request,
    **values: Any,
) -> Iterator[tuple[Any, ...]]:
    """Run a preference method (DPO by default) on the pairs, streaming each logged step; needs /baseline first.

    Args:
        pairs: training pairs, a table with the columns prompt, chosen, rejected.
        heldout_pairs: held-out pairs (same columns), scored after every step (the live held-out curve) and on Compare.
        probes: the preset's probe sets (contrast and capability pairs), kept by the Dataset tab.
        unpaired: thumbs rows (prompt, completion, label) imported on the Dataset tab.
        use_qlora: Needs a CUDA GPU and bitsandbytes.
        method: Methods other than DPO and IPO take loss_type sigmoid and no SFT weight.
    Returns:
        Streams (status, loss plot, margin plot, rewards plot, accuracy plot, held-out plot, log table, health).
        While the run waits for the model, the status (and the API's progress updates) say the place
        in line and the estimated wait. An identical run already in progress or finished is joined
        (its steps replayed), not run twice.
    """
    settings = train_settings(values)
    session = session_of(request)
    updates = service.train(
        session,
        settings,
        pairs_from_table(pairs),
        pairs_from_table(heldout_pairs),
        probes,
        thumbs_from_dicts(unpaired or []),
    )
    try:
        for update in updates:
            if update.finished:
                yield finished_view(session)
            else:
                yield train_view(update.status, update.rows, method=settings.method)
    finally:
        updates.close()  # a closed stream (Stop, a closed tab, a client's cancel) ends the run at its next step


def stop_ui(request: gr.Request) -> tuple[Any, ...]:
    """Stop this session's training run at the end of the current step (other users are unaffected).

    Returns:
        The Train tab's final state: status, plots, log table, health.
    """
    session = session_of(request)
    handle = session.training_handle
    others = handle.member.others if handle is not None and handle.member is not None else 0
    outcome = service.stop(session)
    if outcome == "idle":
        gr.Info("Nothing is training in this session.")
    elif outcome == "left":
        return train_view(
            f"**Stopped following the shared run** — it goes on for the {others} other visitor"
            f"{'' if others == 1 else 's'} who started the same run. Press Start to join it again.",
            session.log_rows,
        )
    return finished_view(session)


def adapter_note() -> str:
    """Under the LoRA switches: what LoRA and QLoRA are, and whether QLoRA can run here."""
    reason = qlora_unavailable()
    qlora = "QLoRA is available here." if reason is None else f"QLoRA is off here: {reason}"
    return (
        "**LoRA** trains a small adapter (a few % of the weights) and keeps the base frozen: less memory for "
        "gradients and optimizer, and the reference is the base with the adapter switched off. **QLoRA** also loads "
        f"the frozen base in 4-bit, a quarter of its bf16 memory. {qlora}"
    )


# --------------------------------------------------------------------------- layout and events


def build(beside: Callable[[], SimpleNamespace]) -> tuple[SimpleNamespace, SimpleNamespace]:
    """The tab's widgets, and what ``beside`` builds next to the method and *Start training* (the comparison's
    controls), so that a presenter finds both buttons in the first screen of the tab."""
    gr.Markdown(INTRO, elem_classes="al-intro")
    with gr.Row(elem_id="train-top"):
        with gr.Column(scale=3, min_width=300):
            method = gr.Dropdown(
                method_choices(),
                value=KNOBS["method"].default,
                label=KNOBS["method"].label,
                info="Each on TRL's own trainer; picking one sets its own β, learning rate and steps.",
                allow_custom_value=True,  # an API client's unknown name gets the list of known ones
                elem_id="train-method",
            )
            with gr.Row():
                start = gr.Button("Start training", variant="primary", elem_id="train-start", min_width=140)
                stop = gr.Button("Stop", variant="stop", elem_id="train-stop", min_width=100)
        with gr.Column(scale=2, min_width=300, elem_id="train-beside"):
            side = beside()
    status = gr.Markdown(
        "Press **Start training** once the baseline is recorded.", label="status", elem_id="train-status"
    )
    with gr.Accordion("Settings: β, learning rate, steps, batch, loss, seed, LoRA", open=True, elem_id="settings"):
        with gr.Row():
            beta = setting_widget(KNOBS["beta"])
            learning_rate = setting_widget(KNOBS["learning_rate"])
            steps = setting_widget(KNOBS["steps"])
            batch_size = setting_widget(KNOBS["batch_size"])
        with gr.Row():
            loss_type = gr.Dropdown(
                [(f"{name} — {text}", name) for name, text in LOSS_TYPES.items()],
                value=KNOBS["loss_type"].default,
                label=KNOBS["loss_type"].label,
                info="sigmoid is the original DPO.",
                scale=3,
            )
            sft_weight = setting_widget(KNOBS["sft_weight"], scale=1)
            seed = setting_widget(KNOBS["seed"], scale=1)
        with gr.Accordion("LoRA and QLoRA adapters", open=False, elem_id="adapter-panel"):
            adapter = build_adapter_controls()
    curves = _build_plots()
    health = gr.Markdown(label="health", elem_id="train-health")
    with gr.Accordion("The log: every step's figures", open=False, elem_id="log-panel"):
        log_table = gr.Dataframe(
            headers=list(plots.LOG_COLUMNS),
            interactive=False,
            label="log",
            elem_id="train-log",
            max_height=300,
        )
    recipe = recipe_panel.build()
    tab = SimpleNamespace(
        **vars(adapter),
        **vars(recipe),
        method=method,
        beta=beta,
        learning_rate=learning_rate,
        steps=steps,
        batch_size=batch_size,
        loss_type=loss_type,
        sft_weight=sft_weight,
        seed=seed,
        start=start,
        stop=stop,
        status=status,
        **vars(curves),
        log_table=log_table,
        health=health,
    )
    return tab, side


def _build_plots() -> SimpleNamespace:
    """The six live plots: loss, margin, rewards, running accuracy, and the held-out curve's share ranked right
    and separation."""
    plot = {"x": "step", "height": 260, "show_label": False}
    with gr.Row():
        loss_plot = gr.LinePlot(
            y="loss", label="loss plot", title="Training loss (should fall)", elem_id="plot-loss", **plot
        )
        margin_plot = gr.LinePlot(
            y="margin",
            label="margin plot",
            title="Reward margin (should rise)",
            elem_id="plot-margin",
            **plot,
        )
    with gr.Row():
        rewards_plot = gr.LinePlot(
            y="reward",
            color="answer",
            label="rewards plot",
            title="Rewards: chosen vs rejected",
            elem_id="plot-rewards",
            **plot,
        )
        accuracy_plot = gr.LinePlot(
            y="accuracy",
            label="accuracy plot",
            title="Reward accuracy so far",
            y_lim=[0, 1],
            elem_id="plot-accuracy",
            **plot,
        )
    gr.Markdown(CURVE_CAPTION, elem_classes="al-caption")
    with gr.Row():
        heldout_plot = gr.LinePlot(
            y="accuracy",
            color="pairs",
            label="held-out plot",
            title="Held-out pairs ranked right",
            y_lim=[0, 1],
            elem_id="plot-heldout",
            **plot,
        )
        separation_plot = gr.LinePlot(
            y="margin",
            color="pairs",
            color_map=SEPARATION_COLORS,
            label="separation plot",
            title="Held-out margin, 95% interval",
            elem_id="plot-separation",
            **plot,
        )
    return SimpleNamespace(
        loss_plot=loss_plot,
        margin_plot=margin_plot,
        rewards_plot=rewards_plot,
        accuracy_plot=accuracy_plot,
        heldout_plot=heldout_plot,
        separation_plot=separation_plot,
    )


def build_adapter_controls() -> SimpleNamespace:
    """The LoRA switch, its rank, and QLoRA (offered only where CUDA and bitsandbytes are)."""
    with gr.Row():
        use_lora = gr.Checkbox(KNOBS["use_lora"].default, label=KNOBS["use_lora"].label, elem_id="train-lora", scale=1)
        lora_rank = setting_widget(KNOBS["lora_rank"], scale=1)
        use_qlora = gr.Checkbox(
            KNOBS["use_qlora"].default,
            label=KNOBS["use_qlora"].label,
            interactive=qlora_unavailable() is None,
            elem_id="train-qlora",
            scale=1,
        )
        gr.Markdown(adapter_note(), elem_id="adapter-note")
    return SimpleNamespace(use_lora=use_lora, lora_rank=lora_rank, use_qlora=use_qlora)


#: The settings /train takes after the pairs, in the API's order: each a field of the settings and a widget of the tab.
TRAIN_SETTINGS = (
    *TAB_SETTINGS,
    "use_qlora",
    "method",  # after the others, so that clients that pass them by position keep working
    "sft_weight",
)


def setting_widgets(tab: SimpleNamespace, names: tuple[str, ...] = TRAIN_SETTINGS) -> dict[str, Any]:
    """The tab's widgets of the settings ``names``, keyed by field name: an event's ``inputs_kwargs``, so that its
    handler gets the values by name (and builds one settings object from them)."""
    return {name: getattr(tab, name) for name in names}


def inputs(tab: SimpleNamespace, dataset: SimpleNamespace) -> dict[str, Any]:
    """The event arguments of /train: the pairs and the Dataset tab's states by position, the settings by name."""
    return {
        "inputs": [dataset.pairs, dataset.heldout, dataset.probes, dataset.unpaired],
        "inputs_kwargs": setting_widgets(tab),
    }


def outputs(tab: SimpleNamespace) -> list[Any]:
    return [
        tab.status,
        tab.loss_plot,
        tab.margin_plot,
        tab.rewards_plot,
        tab.accuracy_plot,
        tab.heldout_plot,
        tab.log_table,
        tab.health,
        tab.separation_plot,
    ]


def wire(tab: SimpleNamespace, dataset: SimpleNamespace) -> Any:
    """Start streams ``/train``; returns that event so that Stop (wired in blocks.py) can cancel it."""
    recipe_panel.wire(tab, dataset)
    tab.method.change(
        method_defaults_ui,
        tab.method,
        [tab.beta, tab.learning_rate, tab.steps, tab.loss_type, tab.sft_weight],
        api_visibility="private",
        queue=False,
    )
    return tab.start.click(
        train_ui,
        outputs=outputs(tab),
        **inputs(tab, dataset),
        api_name="train",
        api_description=api_doc(train_ui, KNOBS, TRAIN_SETTINGS),
        concurrency_limit=None,  # checks answer at once; the model work waits in runs.LINE
        show_progress="minimal",
    )
