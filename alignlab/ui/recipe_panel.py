"""From the lab to a real run: the Train tab's recipe export (``/export_recipe``).

The pairs and the settings on the page become a folder (a zip) for a cluster: the pairs in TRL's format, a
config for TRL's own script of the chosen method scaled for the target model, launcher configs, ``run.sh`` and a
README with the memory estimate (:mod:`alignlab.recipe`). It loads no model, so it runs outside the line.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import gradio as gr

from alignlab.data.pairs import thumbs_from_dicts
from alignlab.data.presets import Preset, validate_preset
from alignlab.models.loading import ModelLoadError
from alignlab.recipe import (
    ADAPTERS,
    DEFAULT_TARGET,
    ENGINES,
    KNOWN_TARGETS,
    PUBLIC_DATASETS,
    RecipeError,
    build_recipe,
    recipe_methods,
    recipe_zip,
)
from alignlab.registry.methods import METHODS
from alignlab.registry.settings import KNOBS
from alignlab.serving.model_checks import check_source
from alignlab.ui.common import api_doc, fail, problems_markdown, session_of
from alignlab.ui.inputs import TAB_SETTINGS, pairs_from_table, real_number, settings_from_values, whole_number

# --------------------------------------------------------------------------- handler


#: /export_recipe's inputs after the pairs, in the API's order: the Train tab's settings (by field name) and the
#: recipe's own.
RECIPE_INPUTS = (
    *TAB_SETTINGS,
    "target_model",
    "gpus",
    "engine",
    "adapter",
    "gpu_memory",
    "mix",
    "method",
    "sft_weight",
)


def export_recipe_ui(
    pairs: Any,
    heldout_pairs: Any,
    unpaired: list[dict[str, Any]] | None,
    request: gr.Request,
    *,
    target_model: str,
    gpus: float,
    engine: str,
    adapter: str,
    gpu_memory: float,
    mix: list[str] | None,
    **values: Any,
) -> tuple[str, str]:
    """Export a recipe for a real run: the pairs, TRL's own script's config, launcher configs, run.sh, a README.

    Args:
        pairs: training pairs, a table with the columns prompt, chosen, rejected.
        heldout_pairs: held-out pairs (same columns), the recipe's eval.jsonl.
        unpaired: thumbs rows (prompt, completion, label) imported on the Dataset tab; a KTO recipe trains on them.
        learning_rate: The lab's: a real run uses the method's usual rate.
        steps: The lab's: the recipe makes as many passes over the pairs.
        use_lora: Used when adapter is 'lab'.
        target_model: the model to train for real: a known name (llama-3.1-8b-instruct), a Hub id, or a config's folder.
        gpus: GPUs the run is sized for, 1-1024.
        engine: ddp, zero2, zero3 or fsdp (DeepSpeed ZeRO-2/3, FSDP).
        adapter: lab (as in the lab), none (full fine-tuning), lora or qlora.
        gpu_memory: GiB per GPU, 8-4096 (80 for an H100).
        mix: public preference sets to train on too: ultrafeedback, hh-rlhf.
        method: The method to run for real, on TRL's own script for it (rlhf: reward, then rloo).
    Returns:
        (the recipe as a .zip file, a summary with the memory estimate).
    """
    settings = settings_from_values(values)
    if adapter not in ("lab", *ADAPTERS):
        raise fail(f"adapter must be lab, {', '.join(ADAPTERS)} (got {adapter!r}).", "Out of range")
    try:
        check_source(target_model or "", "recipe target")
    except ModelLoadError as exc:
        raise gr.Error(str(exc), title="Recipe") from exc
    session = session_of(request)
    preset = _checked_data(session.trained.lab.id if session.trained else "", pairs, heldout_pairs, unpaired)
    try:
        recipe = build_recipe(
            preset,
            settings,
            target=target_model,
            gpus=whole_number(gpus, "GPUs", 1, 1024),
            engine=engine,
            adapter=None if adapter == "lab" else adapter,
            mix=list(mix or []),
            gpu_memory_gib=real_number(gpu_memory, "GPU memory (GiB)", 8, 4096),
        )
    except RecipeError as exc:
        raise gr.Error(str(exc), title="Recipe") from exc
    return str(recipe_zip(recipe, session.path("alignlab-recipe.zip"))), _summary(recipe)


def _summary(recipe: Any) -> str:
    """The recipe's summary with the memory estimate, and how to try it small, then run it."""
    return (
        recipe.summary().replace("\n", "  \n")
        + "  \nUnzip, then `alignlab-recipe/run.sh --cpu --processes 2 --model <a small model> --max-steps 3` "
        "tries it anywhere; `alignlab-recipe/run.sh` runs it on the GPUs. Its README says what runs and why."
    )


def _checked_data(preset_id: str, pairs: Any, heldout_pairs: Any, unpaired: list[dict[str, Any]] | None) -> Preset:
    """The page's pairs, held-out pairs and thumbs rows as the recipe's data, checked; every problem named."""
    train_pairs, heldout = pairs_from_table(pairs), pairs_from_table(heldout_pairs)
    thumbs = thumbs_from_dicts(unpaired or [])
    problems = validate_preset(Preset("recipe", "", "", [], train_pairs, heldout, unpaired=thumbs))
    if problems:
        raise gr.Error("Fix the dataset first (Dataset tab):\n" + problems_markdown(problems), title="Dataset")
    return Preset(preset_id or "custom", "AlignLab pairs", "", [], train_pairs, heldout, unpaired=thumbs)


# --------------------------------------------------------------------------- layout and events


def _no_recipe_text() -> str:
    """Which methods have no recipe, and why (TRL ships no script for them)."""
    titles = [m.title for m in METHODS.values() if not m.has_recipe]
    return f"{', '.join(titles)}: no recipe (TRL 1.16 ships no script for them)." if titles else ""


def build() -> SimpleNamespace:
    """'From the lab to a real run': export the settings and pairs as a recipe for TRL's own script."""
    with gr.Accordion("From the lab to a real run: export a recipe", open=False, elem_id="recipe-panel"):
        gr.Markdown(
            "Take these pairs and settings to a cluster: a folder (zip) with the pairs in TRL's format, a config for "
            "TRL's own script of the method above (`dpo` for DPO and IPO, `kto` for KTO, with the thumbs rows; for "
            "RLHF `reward`, then `rloo` on the reward model it trained) scaled for the target model, launcher "
            "configs (DDP, DeepSpeed ZeRO-2/3, FSDP), `run.sh`, and a README with the "
            "memory estimate and how to mix in public preference data. "
            f"{_no_recipe_text()}"
        )
        with gr.Row():
            target_model = gr.Dropdown(
                list(KNOWN_TARGETS),
                value=DEFAULT_TARGET,
                allow_custom_value=True,
                label="Target model",
                info="Or a local directory with the model's config.json.",
                scale=2,
            )
            gpus = gr.Number(1, label="GPUs", info="1-1024", scale=1)
            gpu_memory = gr.Number(80, label="GiB per GPU", info="80 = H100", scale=1)
        with gr.Row():
            engine = gr.Dropdown([(e.title, name) for name, e in ENGINES.items()], value="ddp", label="Engine", scale=1)
            recipe_adapter = gr.Radio(
                [("As in the lab", "lab"), ("Full", "none"), ("LoRA", "lora"), ("QLoRA", "qlora")],
                value="lora",
                label="Weights trained",
                info="LoRA fits an 8B model on one 80 GiB GPU; full fine-tuning needs ZeRO-3/FSDP on several.",
                scale=2,
            )
            mix = gr.CheckboxGroup(
                [(d.hub_id, name) for name, d in PUBLIC_DATASETS.items()],
                label="Mix in public preference data",
                scale=2,
            )
        export = gr.Button("Export recipe (.zip)", elem_id="recipe-export")
        recipe_summary = gr.Markdown(elem_id="recipe-summary")
        recipe_file = gr.File(label="recipe", interactive=False, elem_id="recipe-file")
    return SimpleNamespace(
        target_model=target_model,
        gpus=gpus,
        gpu_memory=gpu_memory,
        engine=engine,
        recipe_adapter=recipe_adapter,
        mix=mix,
        export=export,
        recipe_summary=recipe_summary,
        recipe_file=recipe_file,
    )


def wire(tab: SimpleNamespace, dataset: SimpleNamespace) -> None:
    """Export streams nothing and loads no model: it runs outside the model-work queue (``/export_recipe``).

    ``tab``: the Train tab, whose settings widgets (by field name) and this panel's the handler takes by name."""
    widgets = {name: getattr(tab, "recipe_adapter" if name == "adapter" else name) for name in RECIPE_INPUTS}
    tab.export.click(
        export_recipe_ui,
        [dataset.pairs, dataset.heldout, dataset.unpaired],  # unpaired: a state, not an API parameter
        [tab.recipe_file, tab.recipe_summary],
        inputs_kwargs=widgets,
        api_name="export_recipe",
        api_description=api_doc(export_recipe_ui, KNOBS, RECIPE_INPUTS, {"method": recipe_methods()}),
        concurrency_limit=None,
    )
