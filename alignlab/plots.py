"""DataFrames for the Train tab's live plots and log table, built from TRL's log rows.

Each function takes the per-step rows that :func:`alignlab.training.training_rows` (or the
streamed :class:`~alignlab.training.TrainingEvent` rows) give and returns a tidy pandas DataFrame
that a line plot reads directly: one row per (step, series). Nothing here touches a trainer, so
the same frames can be drawn from a live run, a finished run or a saved report.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

#: Columns of :func:`log_table`, in display order (header -> TRL log key).
LOG_COLUMNS: dict[str, str] = {
    "step": "step",
    "loss": "loss",
    "margin": "rewards/margins",
    "chosen reward": "rewards/chosen",
    "rejected reward": "rewards/rejected",
    "accuracy": "rewards/accuracies",
    "grad norm": "grad_norm",
    "held-out acc": "heldout/accuracy",
    "held-out margin": "heldout/margin",
    "contrast acc": "heldout/contrast_accuracy",
}

#: The live held-out curve's series (row key -> legend label).
HELDOUT_SERIES: dict[str, str] = {
    "heldout/accuracy": "held-out pairs",
    "heldout/contrast_accuracy": "contrast pairs (cue on the wrong side)",
}


def _value(row: dict[str, Any], key: str) -> float | None:
    value = row.get(key)
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _steps(rows: list[dict[str, Any]]) -> list[int]:
    return [int(row.get("step", i + 1)) for i, row in enumerate(rows)]


def _typed(data: list[tuple], columns: list[str]) -> pd.DataFrame:
    """A frame whose numeric columns stay numeric even when empty (an empty plot keeps its axes)."""
    frame = pd.DataFrame(data, columns=columns)
    return frame.astype({c: ("int64" if c == "step" else "float64") for c in columns if c != "answer"})


def loss_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """DPO loss per step: columns ``step``, ``loss``."""
    data = [(s, _value(r, "loss")) for s, r in zip(_steps(rows), rows)]
    return _typed([d for d in data if d[1] is not None], ["step", "loss"])


def margin_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Mean reward margin (chosen minus rejected) per step: columns ``step``, ``margin``."""
    data = [(s, _value(r, "rewards/margins")) for s, r in zip(_steps(rows), rows)]
    return _typed([d for d in data if d[1] is not None], ["step", "margin"])


def rewards_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Implicit rewards of chosen and rejected answers: columns ``step``, ``reward``, ``answer``."""
    data = []
    for step, row in zip(_steps(rows), rows):
        for answer in ("chosen", "rejected"):
            value = _value(row, f"rewards/{answer}")
            if value is not None:
                data.append((step, value, answer))
    return _typed(data, ["step", "reward", "answer"])


def running_accuracy(rows: list[dict[str, Any]]) -> list[float]:
    """Running mean of ``rewards/accuracies`` (one step alone is 0 or 1 at batch size 1)."""
    out, total, count = [], 0.0, 0
    for row in rows:
        value = _value(row, "rewards/accuracies")
        if value is not None:
            total += value
            count += 1
        out.append(total / count if count else float("nan"))
    return out


def accuracy_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Running-mean reward accuracy per step: columns ``step``, ``accuracy``."""
    data = [(s, a) for s, a in zip(_steps(rows), running_accuracy(rows)) if math.isfinite(a)]
    return _typed(data, ["step", "accuracy"])


def heldout_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Held-out (and contrast) preference accuracy after each step: columns ``step``, ``accuracy``, ``pairs``.

    The rows carry these figures when the run had a probe (``heldout/*`` keys, see training.py).
    """
    data = []
    for step, row in zip(_steps(rows), rows):
        for key, label in HELDOUT_SERIES.items():
            value = _value(row, key)
            if value is not None:
                data.append((step, value, label))
    frame = pd.DataFrame(data, columns=["step", "accuracy", "pairs"])
    return frame.astype({"step": "int64", "accuracy": "float64"})


def curve_rows(curve: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A report's ``eval.heldout_curve`` as log-row keys, to draw a saved run like a live one."""
    return [{"step": p["step"], **{f"heldout/{k}": v for k, v in p.items() if k != "step"}} for p in curve]


def log_table(rows: list[dict[str, Any]], digits: int = 4) -> pd.DataFrame:
    """One row per logged step with the figures a person reads (accuracy as a running mean)."""
    running = running_accuracy(rows)
    data = []
    for i, (step, row) in enumerate(zip(_steps(rows), rows)):
        line: list[Any] = [step]
        for header, key in list(LOG_COLUMNS.items())[1:]:
            value = running[i] if header == "accuracy" else _value(row, key)
            line.append(None if value is None or not math.isfinite(value) else round(value, digits))
        data.append(line)
    return pd.DataFrame(data, columns=list(LOG_COLUMNS))


def all_frames(rows: list[dict[str, Any]]) -> tuple[pd.DataFrame, ...]:
    """(loss, margin, rewards, accuracy, held-out, log table): everything the Train tab draws."""
    return (
        loss_frame(rows),
        margin_frame(rows),
        rewards_frame(rows),
        accuracy_frame(rows),
        heldout_frame(rows),
        log_table(rows),
    )
