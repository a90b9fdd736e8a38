"""Step 2, Dataset: the preference pairs to train on, held-out pairs to test on, import and export."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gradio as gr
import pandas as pd

from alignlab.presets import (
    MAX_PAIRS,
    DatasetError,
    PreferencePair,
    Preset,
    export_jsonl,
    load_dataset_file,
    load_preset,
    preset_ids,
    validate_preset,
)
from alignlab.ui.common import (
    PAIR_COLUMNS,
    api_doc,
    fail,
    pairs_from_table,
    problems_markdown,
    session_of,
    table_from_pairs,
)

INTRO = (
    "**Step 2 — Dataset.** Each row says: for this *prompt*, prefer the *chosen* answer over the *rejected* one. "
    "DPO learns from these pairs directly — no reward model and no RL loop, unlike PPO."
)
DEFAULT_PRESET = "seed-lab"


# --------------------------------------------------------------------------- handlers


def describe(preset: Preset) -> str:
    return f"**{preset.title}** — {preset.description}"


def probes_of(preset: Preset) -> dict[str, Any]:
    """The probe sets a run on this preset is judged with (kept in the page's state, see train_tab)."""
    return {
        "preset": preset.id,
        "contrast_pairs": [asdict(p) for p in preset.contrast_pairs],
        "capability_pairs": [asdict(p) for p in preset.capability_pairs],
    }


def probes_note(probes: dict[str, Any]) -> str:
    contrast, capability = len(probes.get("contrast_pairs") or []), len(probes.get("capability_pairs") or [])
    if contrast:
        head = (
            f"**{contrast} contrast pairs** put the training answers' surface cue on the *worse* answer: a model "
            "that learnt only the cue ranks them wrong (the Compare tab's *shortcut* check)."
        )
    else:
        head = (
            "**No contrast pairs** in this dataset, so the Compare tab cannot tell cue-following from the preference."
        )
    if capability:
        tail = f" **{capability} capability pairs** (unrelated facts, right vs wrong) measure the alignment tax."
    else:
        tail = " Capability is measured on AlignLab's built-in set of unrelated facts and arithmetic."
    return head + tail


def load_preset_ui(preset_id: str) -> tuple[Any, ...]:
    """Fill the tables, the eval prompts and the probe sets from a preset."""
    try:
        preset = load_preset(preset_id)
    except DatasetError as exc:
        raise gr.Error(str(exc), title="Unknown preset") from exc
    probes = probes_of(preset)
    return (
        describe(preset),
        table_from_pairs(preset.pairs),
        table_from_pairs(preset.heldout_pairs),
        "\n".join(preset.eval_prompts),
        validation_message(preset.pairs, preset.heldout_pairs),
        probes,
        probes_note(probes),
        table_from_pairs(preset.contrast_pairs),
        table_from_pairs(preset.capability_pairs),
    )


def validation_message(pairs: list, heldout: list) -> str:
    problems = validate_preset(Preset("check", "", "", [], pairs, heldout))
    if problems:
        return f"**{len(problems)} problem(s) to fix before training:**\n" + problems_markdown(problems)
    return f"**Ready:** {len(pairs)} training pairs, {len(heldout)} held-out pairs."


def validate_dataset(pairs: pd.DataFrame, heldout_pairs: pd.DataFrame) -> str:
    """Check the pairs and held-out pairs; every problem names its table, row and field.

    Args:
        pairs: training pairs, a table with the columns prompt, chosen, rejected (at most 1000 rows).
        heldout_pairs: pairs never trained on, used to test generalisation; same columns.
    Returns:
        'Ready: ...' with the counts, or the list of problems to fix.
    """
    return validation_message(pairs_from_table(pairs), pairs_from_table(heldout_pairs))


def import_file_ui(file: str | None) -> tuple[Any, ...]:
    """Read an uploaded JSON/JSONL/CSV file: TRL standard or conversational, HH-RLHF, UltraFeedback."""
    if not file:
        raise fail("Choose a .jsonl, .json or .csv file first.", "No file")
    name = Path(file).name
    try:
        preset = load_dataset_file(file)
    except DatasetError as exc:
        raise gr.Error(f"{name} could not be imported. {exc}", title="Import failed") from exc
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise gr.Error(f"{name} could not be read as a dataset ({exc}).", title="Import failed") from exc
    note = (
        f"**Imported {name}:** {len(preset.pairs)} training pairs, {len(preset.heldout_pairs)} held-out pairs "
        f"and {len(preset.eval_prompts)} eval prompts (Baseline tab). {preset.description}"
    )
    probes = probes_of(preset)
    probes["preset"] = "custom"
    return (
        table_from_pairs(preset.pairs),
        table_from_pairs(preset.heldout_pairs),
        "\n".join(preset.eval_prompts),
        note,
        probes,
        probes_note(probes),
        table_from_pairs(preset.contrast_pairs),
        table_from_pairs(preset.capability_pairs),
    )


def export_ui(pairs: pd.DataFrame, request: gr.Request) -> str:
    """Download the training pairs as JSONL in TRL's standard format (prompt, chosen, rejected).

    Args:
        pairs: the training pairs table (columns prompt, chosen, rejected).
    Returns:
        The path of the .jsonl file.
    """
    rows = pairs_from_table(pairs)
    if not rows:
        raise fail("There are no pairs to export: add at least one row.", "Nothing to export")
    if len(rows) > MAX_PAIRS:
        raise fail(f"{len(rows)} rows is too many to export; keep at most {MAX_PAIRS}.", "Too many rows")
    return str(export_jsonl(rows, session_of(request).path("pairs.jsonl")))


# --------------------------------------------------------------------------- layout and events


def _pair_table(pairs: list[PreferencePair], label: str, elem_id: str, max_height: int) -> gr.Dataframe:
    """An editable prompt/chosen/rejected table (training and held-out pairs look alike)."""
    return gr.Dataframe(
        table_from_pairs(pairs),
        headers=PAIR_COLUMNS,
        column_count=3,
        interactive=True,
        wrap=True,
        label=label,
        elem_id=elem_id,
        column_widths=["30%", "45%", "25%"],
        max_height=max_height,
        show_row_numbers=True,
    )


def build(preset: Preset) -> SimpleNamespace:
    gr.Markdown(INTRO, elem_classes="al-intro")
    with gr.Row():
        preset_id = gr.Dropdown(preset_ids(), value=preset.id, label="Preset", scale=1, elem_id="preset-picker")
        description = gr.Markdown(describe(preset), elem_id="preset-description")
    validation = gr.Markdown(
        validation_message(preset.pairs, preset.heldout_pairs), label="validation", elem_id="dataset-validation"
    )
    pairs = _pair_table(
        preset.pairs,
        "Training pairs (click a cell to edit; add or delete rows from the row menu)",
        "pairs-table",
        max_height=420,
    )
    heldout = _pair_table(
        preset.heldout_pairs,
        "Held-out pairs (never trained on: they test whether the preference generalises)",
        "heldout-table",
        max_height=300,
    )
    with gr.Row():
        upload = gr.File(
            label="Import pairs (JSONL, JSON or CSV: TRL, HH-RLHF, UltraFeedback)",
            file_types=[".jsonl", ".json", ".csv"],
            type="filepath",
            scale=2,
        )
        with gr.Column(scale=1):
            export = gr.Button("Export pairs as JSONL")
            exported = gr.File(label="exported pairs", interactive=False)
    import_status = gr.Markdown(elem_id="import-status")
    probes = gr.State(probes_of(preset))
    with gr.Accordion("Probe sets: how the Compare tab tells real alignment from a shortcut", open=False):
        probes_text = gr.Markdown(probes_note(probes_of(preset)), elem_id="probes-note")
        contrast = gr.Dataframe(
            table_from_pairs(preset.contrast_pairs),
            headers=PAIR_COLUMNS,
            interactive=False,
            wrap=True,
            label="Contrast pairs (the cue sits on the rejected side)",
            elem_id="contrast-table",
            max_height=260,
        )
        capability = gr.Dataframe(
            table_from_pairs(preset.capability_pairs),
            headers=PAIR_COLUMNS,
            interactive=False,
            wrap=True,
            label="Capability pairs (chosen = the correct answer)",
            elem_id="capability-table",
            max_height=260,
        )
    return SimpleNamespace(
        preset_id=preset_id,
        description=description,
        validation=validation,
        pairs=pairs,
        heldout=heldout,
        upload=upload,
        import_status=import_status,
        export=export,
        exported=exported,
        probes=probes,
        probes_text=probes_text,
        contrast=contrast,
        capability=capability,
    )


def probe_outputs(tab: SimpleNamespace) -> list[Any]:
    return [tab.probes, tab.probes_text, tab.contrast, tab.capability]


def wire(tab: SimpleNamespace, eval_prompts: gr.Textbox) -> None:
    tab.preset_id.input(
        load_preset_ui,
        tab.preset_id,
        [tab.description, tab.pairs, tab.heldout, eval_prompts, tab.validation, *probe_outputs(tab)],
        api_visibility="private",
        concurrency_limit=None,
    )
    # Live validation on every edit; the first listener is also the public /validate_dataset.
    for table, api in (
        (tab.pairs, {"api_name": "validate_dataset", "api_description": api_doc(validate_dataset)}),
        (tab.heldout, {"api_visibility": "private"}),
    ):
        table.input(
            validate_dataset,
            [tab.pairs, tab.heldout],
            tab.validation,
            concurrency_limit=None,
            show_progress="hidden",
            **api,
        )
    tab.upload.upload(
        import_file_ui,
        tab.upload,
        [tab.pairs, tab.heldout, eval_prompts, tab.import_status, *probe_outputs(tab)],
        api_visibility="private",
        concurrency_limit=None,
    ).success(validate_dataset, [tab.pairs, tab.heldout], tab.validation, api_visibility="private")
    tab.export.click(
        export_ui,
        tab.pairs,
        tab.exported,
        api_name="export",
        api_description=api_doc(export_ui),
        concurrency_limit=None,
    )
