"""Values from widgets and API arguments, checked: each bad one a clear message naming the field and its range.

Every handler reads its inputs through here before any model work or any place in line, so that a wrong value
is answered at once. Tables come as pandas frames from the page, as ``{"headers", "data"}`` dicts from an API
client, or as lists of rows; numbers as floats from a widget or anything from a script.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import gradio as gr
import pandas as pd

from alignlab.methods import DEFAULT_METHOD, LOSS_TYPES, UnknownMethodError, get_method
from alignlab.pairs import MAX_TEXT_CHARS, PreferencePair
from alignlab.presets import MAX_EVAL_PROMPTS
from alignlab.settings import KNOBS, MAX_NEW_TOKENS_LIMIT, SettingsError, TrainingSettings
from alignlab.trainer import qlora_unavailable
from alignlab.ui.common import fail

PAIR_COLUMNS = ["prompt", "chosen", "rejected"]
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
    """A whole number from a slider or the API, or a clear error naming the field and range."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise fail(f"{name} must be a whole number from {low} to {high} (got {value!r}).", "Out of range") from None
    if not math.isfinite(number) or number != int(number) or not low <= number <= high:
        raise fail(f"{name} must be a whole number from {low} to {high} (got {value!r}).", "Out of range")
    return int(number)


def real_number(value: Any, name: str, low: float, high: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise fail(f"{name} must be a number from {low:g} to {high:g} (got {value!r}).", "Out of range") from None
    if not math.isfinite(number) or not low <= number <= high:
        raise fail(f"{name} must be a number from {low:g} to {high:g} (got {value!r}).", "Out of range")
    return number


def knob_value(name: str, value: Any) -> Any:
    """A widget's (or API argument's) value for the setting ``name``, checked against its range in :data:`KNOBS`."""
    knob = KNOBS[name]
    if knob.whole:
        return whole_number(value, knob.noun, int(knob.low), int(knob.high))
    return real_number(value, knob.noun, knob.low, knob.high)


def settings_from_inputs(
    beta: Any,
    learning_rate: Any,
    steps: Any,
    batch_size: Any,
    loss_type: Any,
    seed: Any,
    method: Any = DEFAULT_METHOD,
    sft_weight: Any = None,
) -> TrainingSettings:
    """TrainingSettings from the widgets (or API values), each field checked with a clear message.

    ``beta``, ``learning_rate``, ``steps`` and ``sft_weight`` left empty (None) take the method's own defaults.
    """
    try:
        entry = get_method(method)
    except UnknownMethodError as exc:
        raise fail(str(exc), "Unknown method") from None
    if loss_type not in LOSS_TYPES:
        raise fail(f"loss type must be one of {', '.join(LOSS_TYPES)} (got {loss_type!r}).", "Out of range")
    low, high = entry.beta_range
    try:
        return TrainingSettings.for_method(
            method,
            beta=real_number(beta, KNOBS["beta"].noun, low, high) if beta is not None else None,
            learning_rate=knob_value("learning_rate", learning_rate) if learning_rate is not None else None,
            steps=knob_value("steps", steps) if steps is not None else None,
            batch_size=knob_value("batch_size", batch_size),
            loss_type=loss_type,
            seed=knob_value("seed", seed),
            sft_weight=knob_value("sft_weight", sft_weight) if sft_weight is not None else None,
        )
    except SettingsError as exc:
        raise gr.Error(str(exc), title="Training settings") from exc


def with_adapter(settings: TrainingSettings, use_lora: Any, lora_rank: Any, use_qlora: Any) -> TrainingSettings:
    """The settings with the LoRA/QLoRA switches; QLoRA where it cannot run is refused with the reason."""
    if not use_lora and not use_qlora:
        return settings
    rank = knob_value("lora_rank", lora_rank)
    if use_qlora and (reason := qlora_unavailable()):
        raise fail(reason, "QLoRA not available here")
    return replace(settings, use_lora=True, lora_rank=rank, use_qlora=bool(use_qlora))


def generation_settings(max_new_tokens: Any, decoding: str, seed: Any) -> dict[str, Any]:
    """Plain generation settings from the widgets, each checked with a message naming its range."""
    if decoding not in (GREEDY, SAMPLING):
        raise fail(f"decoding must be '{GREEDY}' or '{SAMPLING}' (got {decoding!r}).", "Out of range")
    return {
        "max_new_tokens": whole_number(max_new_tokens, "max new tokens", 1, MAX_NEW_TOKENS_LIMIT),
        "do_sample": decoding == SAMPLING,
        "seed": whole_number(seed, "seed", 0, 2**31 - 1),
        "temperature": real_number(0.7, "temperature", 0.05, 2.0),
    }
