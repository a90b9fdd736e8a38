"""What every tab shares: the session store, how much model work runs at once, table helpers."""

from __future__ import annotations

import atexit
import math
import os
from typing import Any

import gradio as gr
import pandas as pd

from alignlab.models import EMBEDDED_DEFAULT, KNOWN_MODELS
from alignlab.presets import MAX_EVAL_PROMPTS, MAX_TEXT_CHARS, PreferencePair
from alignlab.ui.state import Session, SessionStore

#: Every user's session, keyed by Gradio's session hash (see state.py).
STORE = SessionStore(ttl=float(os.environ.get("ALIGNLAB_SESSION_TTL", 2 * 3600)))
atexit.register(STORE.close_all)

#: How many pieces of model work (load, generate, train, evaluate) run at once, whichever door they
#: come through; everyone else waits in ``runs.GATE`` and is shown their place in line.
HEAVY_LIMIT = int(os.environ.get("ALIGNLAB_CONCURRENCY", "1"))

PAIR_COLUMNS = ["prompt", "chosen", "rejected"]
MAX_EVAL_TEXT = MAX_EVAL_PROMPTS * (MAX_TEXT_CHARS + 1)


def default_model() -> str:
    """The model preselected in the picker (``ALIGNLAB_DEFAULT_MODEL`` overrides, e.g. in tests)."""
    return os.environ.get("ALIGNLAB_DEFAULT_MODEL", "").strip() or EMBEDDED_DEFAULT


def model_choices() -> list[str]:
    choices = list(KNOWN_MODELS)
    if default_model() not in choices:
        choices.insert(0, default_model())
    return choices


def session_of(request: gr.Request | None) -> Session:
    return STORE.get(getattr(request, "session_hash", None))


def close_session(request: gr.Request) -> None:
    """``demo.unload``: the tab is gone; stop its run and delete its files."""
    STORE.close(getattr(request, "session_hash", None))


def fail(message: str, title: str = "Not yet") -> gr.Error:
    return gr.Error(message, title=title)


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


def problems_markdown(problems: list[str], limit: int = 8) -> str:
    shown = "\n".join(f"- {p}" for p in problems[:limit])
    more = f"\n- … and {len(problems) - limit} more." if len(problems) > limit else ""
    return shown + more


def api_doc(fn: Any) -> str:
    """The endpoint description for the API page: the docstring's summary, each input and the result.

    Gradio shows only a handler's summary line; the ranges in its ``Args:`` section matter to a
    script author as much as to a person reading the UI, so they go into the description too.
    """
    from gradio.utils import get_function_description

    from alignlab.methods import beta_ranges
    from alignlab.training import KNOBS

    summary, params, returns = get_function_description(fn)
    lines = [summary.strip()]

    def described(name: str, text: str) -> str:
        text = text.strip()
        if name == "beta":  # β's range is the method's own
            text = text.rstrip(".") + f" ({beta_ranges()})."
        elif name in KNOBS:  # the range from the settings' metadata
            text = text.rstrip(".") + f" ({KNOBS[name].range_text(' to ')})."
        return f"{name} — {text}"

    if params:
        lines.append("Inputs: " + "; ".join(described(name, text) for name, text in params.items()))
    if returns:
        lines.append("Returns: " + " ".join(r.strip() for r in returns))
    return "\n".join(lines)
