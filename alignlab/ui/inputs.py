"""Values from widgets and API arguments, checked: each bad one a clear message naming the field and its range.

Every handler reads its inputs through here before any model work or any place in line, so that a wrong value
is answered at once. Tables come as pandas frames from the page, as ``{"headers", "data"}`` dicts from an API
client, or as lists of rows; numbers as floats from a widget or anything from a script. A setting's widget and
its check are its field's (:class:`alignlab.registry.settings.Knob`): values are keyed by field name, given the field's
type here and checked by the settings themselves.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import gradio as gr
import pandas as pd

from alignlab.data.pairs import MAX_TEXT_CHARS, PreferencePair
from alignlab.data.presets import MAX_EVAL_PROMPTS
from alignlab.registry.methods import DEFAULT_METHOD
from alignlab.registry.settings import (
    GENERATION_KNOBS,
    KNOBS,
    GenerationSettings,
    GenerationSettingsError,
    Knob,
    SettingsError,
    TrainingSettings,
    method_sets,
)
from alignlab.training.trainer import qlora_unavailable
from alignlab.ui.common import fail

PAIR_COLUMNS = ["prompt", "chosen", "rejected"]
#: The Train tab's settings that /train and /export_recipe both take first after their data, in the API's order
#: (each a field of the training settings and a widget of the tab).
TAB_SETTINGS = ("beta", "learning_rate", "steps", "batch_size", "loss_type", "seed", "use_lora", "lora_rank")
MAX_EVAL_TEXT = MAX_EVAL_PROMPTS * (MAX_TEXT_CHARS + 1)
GREEDY, SAMPLING = "greedy (repeatable)", "sampling (seeded)"


# --------------------------------------------------------------------------- tables and text


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return value if isinstance(value, str) else str(value)


def table_rows(table: Any) -> list[list[str]]:
    """A Dataframe value (pandas, dict from the API, or list of lists) -> rows of 3 strings."""
    if table is None:
        return []
    if isinstance(table, pd.DataFrame):
        rows = table.values.tolist()
    elif isinstance(table, dict):
        rows = table.get("data") or []
    elif isinstance(table, list):
        rows = table
    else:
        raise fail("The pairs must be a table with the columns prompt, chosen and rejected.", "Bad table")
    out = []
    for i, row in enumerate(rows, start=1):
        if isinstance(row, dict):
            row = [row.get(c) for c in PAIR_COLUMNS]
        if not isinstance(row, (list, tuple)) or len(row) < 3:
            raise fail(f"Row {i} needs three cells: prompt, chosen and rejected.", "Bad table")
        out.append([_cell(v) for v in row[:3]])
    while out and not any(c.strip() for c in out[-1]):  # a blank row added at the end is not a pair
        out.pop()
    return out


def pairs_from_table(table: Any) -> list[PreferencePair]:
    return [PreferencePair(*row) for row in table_rows(table)]


def table_from_pairs(pairs: list[PreferencePair]) -> pd.DataFrame:
    return pd.DataFrame([[p.prompt, p.chosen, p.rejected] for p in pairs], columns=PAIR_COLUMNS)


def prompts_from_text(text: str | None) -> list[str]:
    """Eval prompts: one per line, blank lines ignored."""
    if text is not None and not isinstance(text, str):
        raise fail("The eval prompts must be text, one prompt per line.", "Bad prompts")
    if text and len(text) > MAX_EVAL_TEXT:
        raise fail(
            f"The eval prompts are {len(text):,} characters long; keep them under {MAX_EVAL_TEXT:,}.", "Too long"
        )
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


# --------------------------------------------------------------------------- numbers and settings


def whole_number(value: Any, name: str, low: int, high: int) -> int:
    """A whole number from a widget or the API that is no setting's (a recipe's GPUs), or a clear error naming it."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise fail(f"{name} must be a whole number from {low} to {high} (got {value!r}).", "Out of range") from None
    if not math.isfinite(number) or number != int(number) or not low <= number <= high:
        raise fail(f"{name} must be a whole number from {low} to {high} (got {value!r}).", "Out of range")
    return int(number)


def real_number(value: Any, name: str, low: float, high: float) -> float:
    """A number from a widget or the API that is no setting's (a recipe's GiB per GPU), or a clear error naming it."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise fail(f"{name} must be a number from {low:g} to {high:g} (got {value!r}).", "Out of range") from None
    if not math.isfinite(number) or not low <= number <= high:
        raise fail(f"{name} must be a number from {low:g} to {high:g} (got {value!r}).", "Out of range")
    return number


def setting_widget(knob: Knob, **kwargs: Any) -> gr.Number:
    """A number box for a setting: its default, label and help line (range, then meaning) from its field."""
    return gr.Number(knob.default, label=knob.label, info=knob.info(), **kwargs)


def _typed(knob: Knob, value: Any) -> Any:
    """A widget's or an API client's value as the field's type: a whole float (6.0) as an int, a number's text as
    the number, an empty box as None. Anything else stays as it came, for the settings' check to name."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not knob.number:
        return bool(value) if knob.switch else value
    if isinstance(value, bool):
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        return value
    return int(number) if knob.whole and number.is_integer() else number


def typed_values(values: Mapping[str, Any], knobs: Mapping[str, Knob] = KNOBS) -> dict[str, Any]:
    """Values keyed by field name, each as its field's type; a setting left empty that no method sets (batch size,
    seed) is refused here by its own check, since the settings would fill it with their default."""
    out = {}
    for name, value in values.items():
        knob = knobs[name]
        out[name] = _typed(knob, value)
        if out[name] is None and not method_sets(name) and (problem := knob.problem(None)):
            raise fail(problem, "Training settings")
    return out


def settings_from_values(values: Mapping[str, Any]) -> TrainingSettings:
    """TrainingSettings from values keyed by field name (the widgets' or an API client's), checked by the settings
    themselves: each bad field a clear message. A setting a method sets (β, learning rate, steps, SFT weight)
    left empty takes the chosen method's own default."""
    chosen = typed_values(values)
    method = chosen.pop("method", None) or DEFAULT_METHOD
    try:
        return TrainingSettings.for_method(method, **chosen)
    except SettingsError as exc:
        raise gr.Error(str(exc), title="Training settings") from exc


def train_settings(values: Mapping[str, Any]) -> TrainingSettings:
    """The Train tab's settings: LoRA's rank read only with an adapter on, and QLoRA (which turns LoRA on) refused
    with the reason where it cannot run."""
    chosen = dict(values)
    if chosen.get("use_qlora"):
        if reason := qlora_unavailable():
            raise fail(reason, "QLoRA not available here")
        chosen["use_lora"] = True
    if not chosen.get("use_lora"):
        chosen.pop("lora_rank", None)
    return settings_from_values(chosen)


def generation_settings(max_new_tokens: Any, decoding: str, seed: Any) -> dict[str, Any]:
    """Plain generation settings from the widgets, checked by :class:`GenerationSettings` (each range its field's)."""
    if decoding not in (GREEDY, SAMPLING):
        raise fail(f"decoding must be '{GREEDY}' or '{SAMPLING}' (got {decoding!r}).", "Out of range")
    plain = {
        "max_new_tokens": _typed(GENERATION_KNOBS["max_new_tokens"], max_new_tokens),
        "do_sample": decoding == SAMPLING,
        "seed": _typed(GENERATION_KNOBS["seed"], seed),
        "temperature": GENERATION_KNOBS["temperature"].default,
    }
    try:
        GenerationSettings(**plain)
    except GenerationSettingsError as exc:
        raise fail(str(exc), "Out of range") from exc
    return plain
