"""Step 2, Dataset: the preference pairs to train on, held-out pairs to test on, import and export.

Imported thumbs-up/down rows (TRL's unpaired format) are kept beside the pairs table in a state, and the
thumbs view shows the whole training set as thumbs rows. What the rows mean, how they are counted and
how they are written out is :mod:`alignlab.data.presets`' business; the handlers here only adapt it.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gradio as gr
import pandas as pd

from alignlab.data.importers import EXPORT_FORMATS, export_jsonl, load_dataset_file
from alignlab.data.pairs import (
    MAX_PAIRS,
    THUMBS_COLUMNS,
    DatasetError,
    PreferencePair,
    TrainingData,
    UnpairedRow,
    describe_training_data,
    thumbs_from_dicts,
    thumbs_to_dicts,
    thumbs_view,
    validate_unpaired,
)
from alignlab.data.presets import Preset, load_preset, preset_ids, validate_preset
from alignlab.ui import service
from alignlab.ui.common import api_doc, fail, problems_markdown, session_of, take_home_panel
from alignlab.ui.inputs import PAIR_COLUMNS, pairs_from_table, table_from_pairs
from alignlab.ui.service import probes_of

INTRO = (
    "**Step 2 — Dataset.** Each row says: for this *prompt*, prefer the *chosen* answer over the *rejected* one. "
    "DPO learns from these pairs directly — no reward model and no RL loop, unlike PPO."
)
#: The preset the app opens on, the one *Run the whole lab* runs: a behaviour the embedded instruct model does not
#: have yet (warmth with a next step), so that its run at the defaults shows a real win over the original answers
#: (docs/calibration.md). seed-lab asks for politeness the model already has: its win rate reads no_win.
DEFAULT_PRESET = "warm-tone"


# --------------------------------------------------------------------------- handlers


def describe(preset: Preset) -> str:
    return f"**{preset.title}** — {preset.description}"


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
        validation_message(preset.pairs, preset.heldout_pairs, preset.unpaired),
        probes,
        probes_note(probes),
        table_from_pairs(preset.contrast_pairs),
        table_from_pairs(preset.capability_pairs),
        *thumbs_outputs(preset.pairs, preset.unpaired),
    )


def unpaired_from_state(rows: list[dict[str, Any]] | None) -> list[UnpairedRow]:
    """The thumbs rows kept in the page's state (plain dicts, as ``UnpairedRow.to_dict`` wrote them)."""
    return thumbs_from_dicts(rows or [])


def thumbs_outputs(pairs: list[PreferencePair], unpaired: list[UnpairedRow]) -> tuple[Any, ...]:
    """The thumbs state, the thumbs view and its counts for these pairs and thumbs rows."""
    rows = thumbs_to_dicts(unpaired)
    return (rows, *thumbs_view_ui(pairs, rows))


def thumbs_view_ui(pairs: Any, unpaired: list[dict[str, Any]] | None) -> tuple[pd.DataFrame, str]:
    """The training set as thumbs rows (pairs' chosen 👍, rejected 👎, then the imported thumbs rows), and counts."""
    pairs = pairs if isinstance(pairs, list) else pairs_from_table(pairs)
    data = TrainingData(pairs, unpaired_from_state(unpaired))
    note = "**Thumbs view.** " + describe_training_data(data)
    return pd.DataFrame(thumbs_view(data), columns=THUMBS_COLUMNS), note


def validation_message(pairs: list, heldout: list, unpaired: list[UnpairedRow] | None = None) -> str:
    unpaired = unpaired or []
    problems = validate_preset(Preset("check", "", "", [], pairs, heldout, unpaired=unpaired))
    if problems:
        return f"**{len(problems)} problem(s) to fix before training:**\n" + problems_markdown(problems)
    thumbs = f" and {len(unpaired)} thumbs rows" if unpaired else ""
    return f"**Ready:** {len(pairs)} training pairs{thumbs}, {len(heldout)} held-out pairs."


def validate_dataset(
    pairs: pd.DataFrame, heldout_pairs: pd.DataFrame, unpaired: list[dict[str, Any]] | None = None
) -> str:
    """Check the pairs and held-out pairs; every problem names its table, row and field.

    Args:
        pairs: training pairs, a table with the columns prompt, chosen, rejected (at most 1000 rows).
        heldout_pairs: pairs never trained on, used to test generalisation; same columns.
    Returns:
        'Ready: ...' with the counts, or the list of problems to fix.
    """
    return validation_message(pairs_from_table(pairs), pairs_from_table(heldout_pairs), unpaired_from_state(unpaired))


def import_file_ui(file: str | None) -> tuple[Any, ...]:
    """Read an uploaded JSON/JSONL/CSV file: TRL standard or conversational, HH-RLHF, UltraFeedback, and
    thumbs rows in TRL's unpaired format (``prompt``, ``completion``, ``label``), alone or mixed with pairs."""
    if not file:
        raise fail("Choose a .jsonl, .json or .csv file first.", "No file")
    name = Path(file).name
    try:
        preset = load_dataset_file(file)
    except DatasetError as exc:
        raise gr.Error(f"{name} could not be imported. {exc}", title="Import failed") from exc
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise gr.Error(f"{name} could not be read as a dataset ({exc}).", title="Import failed") from exc
    thumbs = f", {len(preset.unpaired)} training thumbs rows" if preset.unpaired else ""
    note = (
        f"**Imported {name}:** {len(preset.pairs)} training pairs{thumbs}, {len(preset.heldout_pairs)} held-out "
        f"pairs and {len(preset.eval_prompts)} eval prompts (Baseline tab). {preset.description}"
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
        *thumbs_outputs(preset.pairs, preset.unpaired),
    )


def export_ui(
    pairs: pd.DataFrame, request: gr.Request, unpaired: list[dict[str, Any]] | None = None, export_as: str = "pairs"
) -> str:
    """Download the training data as JSONL in TRL's formats.

    Args:
        pairs: the training pairs table (columns prompt, chosen, rejected).
        export_as: 'pairs' (default): TRL's preference format (prompt, chosen, rejected), any imported thumbs rows
            after them in TRL's unpaired format; 'thumbs': every row in TRL's unpaired format (prompt, completion,
            label), each pair as its chosen answer (label true) and its rejected answer (label false).
    Returns:
        The path of the .jsonl file.
    """
    if export_as not in EXPORT_FORMATS:
        raise fail(f"export_as must be {' or '.join(map(repr, EXPORT_FORMATS))} (got {export_as!r}).", "Bad format")
    rows, thumbs = pairs_from_table(pairs), unpaired_from_state(unpaired)
    if not rows and not thumbs:
        raise fail("There are no pairs to export: add at least one row.", "Nothing to export")
    if len(rows) > MAX_PAIRS:
        raise fail(f"{len(rows)} rows is too many to export; keep at most {MAX_PAIRS}.", "Too many rows")
    problems = validate_unpaired(thumbs)
    if problems:
        raise fail("The thumbs rows cannot be exported:\n" + problems_markdown(problems), "Bad thumbs rows")
    name = "thumbs.jsonl" if export_as == "thumbs" else "pairs.jsonl"
    return str(export_jsonl(TrainingData(rows, thumbs), session_of(request).path(name), export_as))


def export_dataset_ui(
    pairs: pd.DataFrame,
    heldout_pairs: pd.DataFrame,
    repo_id: str = "",
    token: str = "",
    unpaired: list[dict[str, Any]] | None = None,
    export_as: str = "pairs",
    preset_id: str = "",
    request: gr.Request = None,
) -> tuple[str, str]:
    """Save the training and held-out pairs as a Hub dataset folder with a dataset card (zipped); with a repo id and
    a token, push it to the Hub too (private).

    Args:
        pairs: the training pairs table (columns prompt, chosen, rejected).
        heldout_pairs: the held-out pairs table (the dataset's test split).
        repo_id: owner/name of a Hub dataset repo to push to; empty: only the zip.
        token: a Hugging Face token with write access, used for this push alone (a local app may use $HF_TOKEN).
        export_as: 'pairs' or 'thumbs', as /export.
        preset_id: the preset the pairs came from (its license goes on the card while the pairs are unchanged).
    Returns:
        (the zip file, what was saved and pushed).
    """
    rows, thumbs = pairs_from_table(pairs), unpaired_from_state(unpaired)
    if not rows and not thumbs:
        raise fail("There are no pairs to save: add at least one row.", "Nothing to save")
    if export_as not in EXPORT_FORMATS:
        raise fail(f"export_as must be {' or '.join(map(repr, EXPORT_FORMATS))} (got {export_as!r}).", "Bad format")
    source = preset_id if preset_id in preset_ids() and load_preset(preset_id).pairs == rows else ""
    data = TrainingData(rows, thumbs)
    return service.export_dataset(
        session_of(request), data, pairs_from_table(heldout_pairs), export_as, source, repo_id, token
    )


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
        validation_message(preset.pairs, preset.heldout_pairs, preset.unpaired),
        label="validation",
        elem_id="dataset-validation",
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
            label="Import pairs or thumbs rows (JSONL, JSON or CSV: TRL, HH-RLHF, UltraFeedback)",
            file_types=[".jsonl", ".json", ".csv"],
            type="filepath",
            scale=2,
        )
        with gr.Column(scale=1):
            export_as = gr.Radio(
                [("pairs (prompt, chosen, rejected)", "pairs"), ("thumbs (prompt, completion, label)", "thumbs")],
                value="pairs",
                label="Export as (TRL's preference or unpaired format)",
                elem_id="export-format",
            )
            export = gr.Button("Export as JSONL")
            exported = gr.File(label="exported pairs", interactive=False)
    home = take_home_panel(
        "Save as a dataset with its card, push it to the Hub",
        "dataset",
        "your-name/my-pairs",
        "dataset",
        "Save the dataset",
    )
    import_status = gr.Markdown(elem_id="import-status")
    unpaired = gr.State(thumbs_to_dicts(preset.unpaired))
    thumbs_table, thumbs_text = thumbs_view_ui(preset.pairs, unpaired.value)
    with gr.Accordion("Thumbs view: the training data as thumbs up/down (what KTO trains on)", open=False):
        thumbs_note = gr.Markdown(thumbs_text, elem_id="thumbs-note")
        thumbs = gr.Dataframe(
            thumbs_table,
            headers=THUMBS_COLUMNS,
            interactive=False,
            wrap=True,
            label="Thumbs rows: each pair's chosen answer up and rejected answer down, then imported thumbs rows",
            elem_id="thumbs-table",
            column_widths=["30%", "48%", "10%", "12%"],
            max_height=360,
        )
    probe_sets = _build_probe_sets(preset)
    return SimpleNamespace(
        preset_id=preset_id,
        home=home,
        description=description,
        validation=validation,
        pairs=pairs,
        heldout=heldout,
        upload=upload,
        import_status=import_status,
        export=export,
        export_as=export_as,
        exported=exported,
        unpaired=unpaired,
        thumbs=thumbs,
        thumbs_note=thumbs_note,
        **vars(probe_sets),
    )


def _probe_table(pairs: list, label: str, name: str) -> gr.Dataframe:
    """A probe set's pairs, read-only."""
    return gr.Dataframe(
        table_from_pairs(pairs),
        headers=PAIR_COLUMNS,
        interactive=False,
        wrap=True,
        label=label,
        elem_id=f"{name}-table",
        max_height=260,
    )


def _build_probe_sets(preset: Preset) -> SimpleNamespace:
    """The probe sets (contrast and capability pairs) the Compare tab reads, shown read-only, and their state."""
    probes = gr.State(probes_of(preset))
    with gr.Accordion("Probe sets: how the Compare tab tells real alignment from a shortcut", open=False):
        probes_text = gr.Markdown(probes_note(probes_of(preset)), elem_id="probes-note")
        contrast = _probe_table(preset.contrast_pairs, "Contrast pairs (the cue sits on the rejected side)", "contrast")
        capability = _probe_table(
            preset.capability_pairs, "Capability pairs (chosen = the correct answer)", "capability"
        )
    return SimpleNamespace(probes=probes, probes_text=probes_text, contrast=contrast, capability=capability)


def probe_outputs(tab: SimpleNamespace) -> list[Any]:
    """What loading a dataset sets beside its tables: the probe sets, then the thumbs rows and their view."""
    return [tab.probes, tab.probes_text, tab.contrast, tab.capability, tab.unpaired, tab.thumbs, tab.thumbs_note]


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
            [tab.pairs, tab.heldout, tab.unpaired],
            tab.validation,
            concurrency_limit=None,
            show_progress="hidden",
            **api,
        )
    tab.pairs.input(
        thumbs_view_ui,
        [tab.pairs, tab.unpaired],
        [tab.thumbs, tab.thumbs_note],
        api_visibility="private",
        concurrency_limit=None,
        show_progress="hidden",
    )
    tab.upload.upload(
        import_file_ui,
        tab.upload,
        [tab.pairs, tab.heldout, eval_prompts, tab.import_status, *probe_outputs(tab)],
        api_visibility="private",
        concurrency_limit=None,
    ).success(validate_dataset, [tab.pairs, tab.heldout, tab.unpaired], tab.validation, api_visibility="private")
    tab.home.run.click(
        export_dataset_ui,
        [tab.pairs, tab.heldout, tab.home.repo_id, tab.home.token, tab.unpaired, tab.export_as, tab.preset_id],
        [tab.home.file, tab.home.status],
        api_name="export_dataset",
        api_description=api_doc(export_dataset_ui),
        concurrency_limit=2,
    )
    tab.export.click(
        export_ui,
        [tab.pairs, tab.unpaired, tab.export_as],
        tab.exported,
        api_name="export",
        api_description=api_doc(export_ui),
        concurrency_limit=None,
    )
