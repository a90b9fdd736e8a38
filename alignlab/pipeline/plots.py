"""DataFrames for the Train tab's live plots and log table, built from TRL's log rows.

Each function takes the per-step rows that :func:`alignlab.training.run.training_rows` (or the
streamed :class:`~alignlab.training.run.TrainingEvent` rows) give and returns a tidy pandas DataFrame
that a line plot reads directly: one row per (step, series). Nothing here touches a trainer, so
the same frames can be drawn from a live run, a finished run or a saved report.

Each method logs under its own keys; the frames read them through the method's common axes
(:mod:`alignlab.registry.methods`), so a margin plot is DPO's ``rewards/margins`` and KTO's alike, and an
axis a method does not log is an empty frame. The log table adds each method's own figures (KTO's
KL estimate, ORPO's log-odds ratio, the SFT term of ORPO and SimPO, RLHF's reward and KL). A method of
several stages (RLHF) logs each stage under its own keys, so each axis reads the stage that logs it: the
margin and accuracy are its reward model's, the reward and KL its RL stage's.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from alignlab.evidence.stats import finite
from alignlab.registry.methods import DEFAULT_METHOD, METHODS, RELATIVE_SCORERS, Method

#: Columns of :func:`log_table`, in display order (header -> TRL log key), as DPO logs them; other
#: methods read the same headers through their axes, and add :data:`OWN_COLUMNS`.
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

#: Axis behind each :data:`LOG_COLUMNS` header that a method maps (the rest are the same for every method).
_COLUMN_AXES = {"margin": "margin", "chosen reward": "chosen", "rejected reward": "rejected", "accuracy": "accuracy"}

#: A method's own logged figures, shown in the log table when it logs them (header -> TRL log key).
OWN_COLUMNS: dict[str, str] = {
    "RL reward": "reward",
    "KL estimate": "kl",
    "SFT loss": "nll_loss",
    "log-odds ratio": "log_odds_ratio",
}


def _entry(method: str | None) -> Method:
    return METHODS.get(method or DEFAULT_METHOD) or METHODS[DEFAULT_METHOD]


def _axis_key(method: str | None, axis: str) -> str | None:
    return _entry(method).key(axis)


#: The live held-out curve's series (row key -> legend label).
HELDOUT_SERIES: dict[str, str] = {
    "heldout/accuracy": "held-out pairs",
    "heldout/contrast_accuracy": "contrast pairs (cue on the wrong side)",
}


def _value(row: dict[str, Any], key: str) -> float | None:
    return finite(row.get(key))


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


def margin_frame(rows: list[dict[str, Any]], method: str | None = None) -> pd.DataFrame:
    """Mean reward margin (chosen minus rejected) per step: columns ``step``, ``margin``."""
    key = _axis_key(method, "margin")
    data = [(s, _value(r, key)) for s, r in zip(_steps(rows), rows)] if key else []
    return _typed([d for d in data if d[1] is not None], ["step", "margin"])


#: Series of :func:`rewards_frame` (axis -> legend label). Online RL's reward is drawn with its KL estimate.
REWARD_SERIES: dict[str, str] = {
    "chosen": "chosen",
    "rejected": "rejected",
    "reward": "sampled answers (reward model)",
}
RL_KL_LABEL = "KL to the reference (nats/token)"


def rewards_frame(rows: list[dict[str, Any]], method: str | None = None) -> pd.DataFrame:
    """Rewards of chosen and rejected answers, or of the answers online RL sampled (with its KL estimate, the
    leash that reward pays for): columns ``step``, ``reward``, ``answer`` (the series)."""
    data = []
    keys = {label: _axis_key(method, axis) for axis, label in REWARD_SERIES.items()}
    if _axis_key(method, "reward") is not None:
        keys[RL_KL_LABEL] = _axis_key(method, "kl")
    for step, row in zip(_steps(rows), rows):
        for answer, key in keys.items():
            value = _value(row, key) if key else None
            if value is not None:
                data.append((step, value, answer))
    return _typed(data, ["step", "reward", "answer"])


def running_accuracy(rows: list[dict[str, Any]], method: str | None = None) -> list[float]:
    """Running mean of the reward accuracy (one step alone is 0 or 1 at batch size 1); NaN on rows that do not
    log it (all of KTO's; RLHF's RL steps, after its reward model's)."""
    key = _axis_key(method, "accuracy")
    out, total, count = [], 0.0, 0
    for row in rows:
        value = _value(row, key) if key else None
        if value is not None:
            total += value
            count += 1
        out.append(total / count if count and value is not None else float("nan"))
    return out


def accuracy_frame(rows: list[dict[str, Any]], method: str | None = None) -> pd.DataFrame:
    """Running-mean reward accuracy per step: columns ``step``, ``accuracy``."""
    data = [(s, a) for s, a in zip(_steps(rows), running_accuracy(rows, method)) if math.isfinite(a)]
    return _typed(data, ["step", "accuracy"])


def heldout_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Held-out (and contrast) preference accuracy at each step the live curve scored: columns ``step``,
    ``accuracy``, ``pairs``.

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


#: The live curve's separation series: (legend label, mean-margin key, interval key) per probe set.
SEPARATION_SERIES: tuple[tuple[str, str, str], ...] = (
    ("held-out pairs", "heldout/margin", "heldout/margin_interval"),
    ("contrast pairs", "heldout/contrast_margin", "heldout/contrast_margin_interval"),
)
#: The interval's bounds are drawn as series of their own, each named after its set.
INTERVAL_SUFFIXES = (" (95% low)", " (95% high)")
#: Each set's mean in a strong colour, its interval's bounds in a pale one of the same hue.
SEPARATION_COLORS: dict[str, str] = {
    "held-out pairs": "#1f6fb4",
    **{"held-out pairs" + suffix: "#9ecae1" for suffix in INTERVAL_SUFFIXES},
    "contrast pairs": "#e6730e",
    **{"contrast pairs" + suffix: "#fdc897" for suffix in INTERVAL_SUFFIXES},
}


def separation_frame(rows: list[dict[str, Any]], method: str | None = None) -> pd.DataFrame:
    """How far apart the live curve holds held-out and contrast pairs: the mean margin (chosen minus rejected,
    under the method's held-out score) at each scored step, with its 95% interval as two more series; columns
    ``step``, ``margin``, ``pairs``.

    Under a score relative to the original model every margin starts at 0, so such a curve starts at step 0 from
    0: a presenter sees it rise, level off and, when over-trained, fall.
    """
    data = []
    scored = [(step, row) for step, row in zip(_steps(rows), rows) if _value(row, "heldout/margin") is not None]
    if scored and _entry(method).scorer in RELATIVE_SCORERS:
        data += [(0, 0.0, label) for label, key, _ in SEPARATION_SERIES if _value(scored[0][1], key) is not None]
    for step, row in scored:
        for label, key, interval_key in SEPARATION_SERIES:
            value = _value(row, key)
            if value is None:
                continue
            data.append((step, value, label))
            interval = row.get(interval_key)
            if isinstance(interval, (list, tuple)) and len(interval) == 2:
                data += [
                    (step, bound, label + suffix)
                    for bound, suffix in zip(interval, INTERVAL_SUFFIXES)
                    if finite(bound) is not None
                ]
    frame = pd.DataFrame(data, columns=["step", "margin", "pairs"])
    return frame.astype({"step": "int64", "margin": "float64"})


def log_columns(method: str | None = None) -> dict[str, str | None]:
    """The log table's columns for a method (header -> its TRL log key; None where it logs no such figure)."""
    entry = _entry(method)
    columns: dict[str, str | None] = {
        header: (entry.key(_COLUMN_AXES[header]) if header in _COLUMN_AXES else key)
        for header, key in LOG_COLUMNS.items()
    }
    columns.update({header: key for header, key in OWN_COLUMNS.items() if key in entry.logged})
    return columns


def log_table(rows: list[dict[str, Any]], digits: int = 4, method: str | None = None) -> pd.DataFrame:
    """One row per logged step with the figures a person reads (accuracy as a running mean)."""
    columns = log_columns(method)
    running = running_accuracy(rows, method)
    data = []
    for i, (step, row) in enumerate(zip(_steps(rows), rows)):
        line: list[Any] = [step]
        for header, key in list(columns.items())[1:]:
            value = running[i] if header == "accuracy" else (_value(row, key) if key else None)
            line.append(None if value is None or not math.isfinite(value) else round(value, digits))
        data.append(line)
    return pd.DataFrame(data, columns=list(columns))


def all_frames(rows: list[dict[str, Any]], method: str | None = None) -> tuple[pd.DataFrame, ...]:
    """(loss, margin, rewards, accuracy, held-out, log table, separation): everything the Train tab draws, in
    the order of its outputs (the separation plot came last, so the API's earlier outputs keep their places)."""
    return (
        loss_frame(rows),
        margin_frame(rows, method),
        rewards_frame(rows, method),
        accuracy_frame(rows, method),
        heldout_frame(rows),
        log_table(rows, method=method),
        separation_frame(rows, method),
    )


#: What the runs of a session can be overlaid on (label -> ``axis:<common axis>``, read through each method's
#: registry entry, or ``key:<log key>``, a figure logged under the same name by whichever method logs it).
OVERLAY_AXES: dict[str, str] = {
    "loss": "axis:loss",
    "reward margin": "axis:margin",
    "held-out accuracy": "key:heldout/accuracy",
    "contrast accuracy": "key:heldout/contrast_accuracy",
    "reward (RLHF: the reward model's score of sampled answers)": "axis:reward",
    "KL estimate (KTO, RLHF)": "axis:kl",
    "log-odds ratio (ORPO)": "key:log_odds_ratio",
    "SFT loss (ORPO, SimPO)": "key:nll_loss",
}


def overlay_frame(runs: list[tuple[str, list[dict[str, Any]], str | None]], axis: str = "loss") -> pd.DataFrame:
    """Several runs' curves on one axis: columns ``step``, ``value``, ``run`` (one series per run).

    ``runs``: (legend title, per-step rows, method) each. A method that does not log the axis adds no series
    (KTO logs no accuracy; the margin of a reference-free method is on its own scale, which its title says).
    """
    kind, _, name = OVERLAY_AXES.get(axis, f"axis:{axis}").partition(":")
    data = []
    for title, rows, method in runs:
        key = name if kind == "key" else _axis_key(method, name)
        if key is None:
            continue
        for step, row in zip(_steps(rows), rows):
            value = _value(row, key)
            if value is not None:
                data.append((step, value, title))
    frame = pd.DataFrame(data, columns=["step", "value", "run"])
    return frame.astype({"step": "int64", "value": "float64"})
