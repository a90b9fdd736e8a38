"""One run of the lab as a session keeps it, a comparison lists it and a table shows it.

A :class:`RunRecord` holds what a run produced without its weights: the training summary
(:meth:`alignlab.training.run.TrainingResult.summary`: settings, log history, live held-out curve, time,
memory) and, once it has been compared, its report (``docs/architecture.md``). :func:`evidence_row` reads a
report into one row of the runs-side-by-side table, the same for the Compare tab, the API's
``/run_comparison`` and the CLI's ``compare``.

Nothing here imports torch or gradio.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from alignlab.evidence.stats import Proportion
from alignlab.registry.methods import method_title

#: Runs a session keeps, the oldest going first: enough to set four methods side by side and change one.
MAX_RUNS = 6

#: Columns of the runs-side-by-side table, in order (key -> header).
EVIDENCE_COLUMNS: dict[str, str] = {
    "run": "run",
    "method": "method",
    "steps": "steps",
    "heldout_accuracy": "held-out acc",
    "contrast_accuracy": "contrast acc",
    "capability": "capability before → after",
    "win_rate": "win rate vs original",
    "kl_to_reference": "KL to original",
    "perplexity": "perplexity before → after",
    "changed": "answers changed",
    "verdict": "verdict",
    "seconds_per_step": "s / step",
    "peak_memory": "peak memory",
}


def run_label(number: int) -> str:
    """A, B, ..., Z, then A2, B2, ...: short enough for a plot legend and a table column."""
    letter = chr(ord("A") + (number - 1) % 26)
    lap = (number - 1) // 26
    return letter if lap == 0 else f"{letter}{lap + 1}"


def method_label(settings: dict[str, Any]) -> str:
    """'DPO', 'IPO', 'DPO (hinge loss)', 'KTO', ... from a settings dict."""
    return method_title(
        settings.get("method", "dpo"), settings.get("loss_type", "sigmoid"), settings.get("sft_weight") or 0
    )


@dataclass
class RunRecord:
    """A finished (or stopped) training run of a session, and its report once compared."""

    label: str
    preset: str
    training: dict[str, Any]
    report: dict[str, Any] | None = None

    @property
    def settings(self) -> dict[str, Any]:
        return self.training["settings"]

    @property
    def method(self) -> str:
        return self.settings.get("method", "dpo")

    @property
    def title(self) -> str:
        return f"{self.label} · {method_label(self.settings)}"

    @property
    def step_rows(self) -> list[dict[str, Any]]:
        """The run's per-step log rows, with the live held-out figures merged in (as the Train tab drew them)."""
        curve = {p["step"]: p for p in self.training.get("heldout_curve") or []}
        rows = []
        for row in self.training.get("log_history") or []:
            if "loss" not in row or "step" not in row:
                continue
            point = curve.get(row["step"], {})
            rows.append({**row, **{f"heldout/{k}": v for k, v in point.items() if k != "step"}})
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "preset": self.preset, "training": self.training, "report": self.report}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        return cls(data["label"], data["preset"], data["training"], data.get("report"))

    def evidence_row(self) -> dict[str, Any]:
        """This run's row of the side-by-side table: from its report, or its training alone before Compare."""
        if self.report is not None:
            return evidence_row(self.report)
        row = {key: None for key in EVIDENCE_COLUMNS}
        row.update(
            run=self.label,
            method=method_label(self.settings),
            steps=self.training.get("steps_done"),
            verdict="not compared yet",
            **_cost(self.training),
        )
        return row


def _cost(cost: dict[str, Any]) -> dict[str, Any]:
    """Seconds per step and peak memory from a report's ``cost`` or, before the compare, a training summary."""
    steps, seconds = cost.get("steps_done") or cost.get("steps"), cost.get("seconds")
    per_step = cost.get("seconds_per_step") or (seconds / steps if steps and seconds else None)
    return {
        "seconds_per_step": round(per_step, 2) if per_step else None,
        "peak_memory": {"bytes": cost.get("peak_memory_bytes"), "kind": cost.get("peak_memory_kind")}
        if cost.get("peak_memory_bytes")
        else None,
    }


def evidence_row(report: dict[str, Any]) -> dict[str, Any]:
    """One report as a row of figures (numbers, not text): what :data:`EVIDENCE_COLUMNS` names."""
    ev = report.get("eval") or {}
    settings = report["settings"]
    run = report.get("run") or {}
    return {
        "run": run.get("label", ""),
        "method": method_label(settings["training"]),
        "steps": settings.get("steps_done"),
        "heldout_accuracy": ev.get("heldout_reward_accuracy"),
        "contrast_accuracy": ev.get("contrast_accuracy"),
        "capability": [ev.get("capability_accuracy_before"), ev.get("capability_accuracy_after")],
        "win_rate": ev.get("win_rate") if (ev.get("judge") or {}).get("usable") else None,
        "counts": {name: ev.get(f"{name}_count") for name in ("heldout", "contrast", "capability", "win")},
        "kl_to_reference": ev.get("kl_to_reference"),
        "perplexity": [ev.get("perplexity_before"), ev.get("perplexity_after")],
        "changed": report.get("changed"),
        "verdict": report["health"]["verdict"],
        **_cost(report.get("cost") or {}),
    }


def _number(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _memory(value: dict[str, Any] | None) -> str:
    if not value or not value.get("bytes"):
        return "—"
    gib = value["bytes"] / 2**30
    where = "GPU" if value.get("kind") == "cuda_allocated" else "process"
    return f"{gib:.1f} GiB ({where})"


def _ranked(value: Any, count: Any) -> str:
    """'5/5 (57–100%)' where the count is known, else the share as a number."""
    ranking = Proportion.of(value, count)
    return ranking.text() if ranking is not None else _number(value)


def display_row(row: dict[str, Any]) -> list[str]:
    """An :func:`evidence_row` as the strings a table shows, in :data:`EVIDENCE_COLUMNS` order; accuracies with
    their count and 95% interval."""
    out = []
    counts = row.get("counts") or {}
    for key in EVIDENCE_COLUMNS:
        value = row.get(key)
        if key in ("heldout_accuracy", "contrast_accuracy"):
            out.append(_ranked(value, counts.get(key.removesuffix("_accuracy"))))
        elif key == "capability":
            before, after = value or (None, None)
            count = counts.get("capability")
            out.append(f"{_ranked(before, count)} → {_ranked(after, count)}" if before is not None else "—")
        elif key == "perplexity":
            before, after = value or (None, None)
            out.append(f"{_number(before)} → {_number(after)}" if before is not None or after is not None else "—")
        elif key == "win_rate":
            count = counts.get("win")
            out.append(f"{value:.0%} of {count}" if value is not None and count else "—")
        elif key == "peak_memory":
            out.append(_memory(value))
        elif key == "kl_to_reference":
            out.append(_number(value, 3))
        else:
            out.append(_number(value))
    return out


def display_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """(headers, rows of strings) for a table of runs."""
    return list(EVIDENCE_COLUMNS.values()), [display_row(row) for row in rows]


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The runs side by side as a Markdown table (CLI, README)."""
    headers, body = display_table(rows)
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines)
