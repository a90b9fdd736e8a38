"""The session's runs side by side: overlaid curves (Train tab), the evidence table and every run's
answers beside the baseline (Compare tab), and the map of methods filled in with what they measured.

Views only: the figures come from :mod:`alignlab.verdict.runs_table` and :mod:`alignlab.pipeline.plots`, the runs from
the session (:class:`alignlab.ui.state.Session`).
"""

from __future__ import annotations

from typing import Any

import gradio as gr
import pandas as pd

from alignlab.pipeline import plots
from alignlab.registry.methods import METHODS, Data, Method
from alignlab.ui.common import session_of
from alignlab.ui.diff import runs_html
from alignlab.ui.state import Session
from alignlab.verdict.runs_table import EVIDENCE_COLUMNS, RunRecord, display_table, method_label

RUNS_INTRO = (
    "### Runs side by side\n"
    "Every run of this session (up to six), on the same baseline: one evidence row each, then every prompt's "
    "answers. Train again (another method, β or learning rate) and compare, or press **Compare methods** on the "
    "Train tab to run several methods one after another."
)


def overlay_runs(session: Session, live: tuple[str, list[dict[str, Any]], str] | None = None) -> list[tuple]:
    """(title, rows, method) of every kept run, plus the run in progress when ``live`` is given."""
    series = [(record.title, record.step_rows, record.method) for record in session.runs]
    if live is not None and live[1]:
        series.append(live)
    return series


def overlay_plot(session: Session, axis: str, live: tuple[str, list[dict[str, Any]], str] | None = None) -> Any:
    frame = plots.overlay_frame(overlay_runs(session, live), axis)
    # The legend's entries, named each time: the browser's plot keeps the series it first saw otherwise
    # (a run added later, or the live run renamed when it ends, drew its curve without a legend entry).
    titles = list(dict.fromkeys(frame["run"]))
    return gr.LinePlot(value=frame, y_title=axis, colors_in_legend=titles or None)


def overlay_ui(axis: str, request: gr.Request) -> Any:
    """The Train tab's overlaid curves of this session's runs on one axis."""
    return overlay_plot(session_of(request), axis or "loss")


def runs_table(label: str, elem_id: str) -> gr.Dataframe:
    """An empty runs-side-by-side table (filled by :func:`runs_frame`)."""
    return gr.Dataframe(
        headers=list(EVIDENCE_COLUMNS.values()), interactive=False, label=label, elem_id=elem_id, wrap=True
    )


def runs_frame(records: list[RunRecord]) -> pd.DataFrame:
    headers, rows = display_table([record.evidence_row() for record in records])
    return pd.DataFrame(rows, columns=headers)


def answers_html(session: Session) -> str:
    """Baseline | run A | run B | ... for the runs that have been compared."""
    compared = [r for r in session.runs if r.report is not None]
    if not compared or session.baseline is None:
        return ""
    columns = [(r.title, [row["text"] for row in r.report["aligned_outputs"]]) for r in compared]
    return runs_html(session.baseline.eval_prompts, session.baseline.outputs, columns)


def runs_views_ui(request: gr.Request) -> tuple[Any, ...]:
    """The Compare tab's runs-side-by-side section: (evidence table, answers table, the map)."""
    session = session_of(request)
    return runs_frame(session.runs), answers_html(session), map_markdown(session)


# --------------------------------------------------------------------------- the map


def needs(method: Method) -> dict[str, str]:
    """What a method needs, read from its registry entry's stages (data, reference, reward model, rollouts)."""
    words = {
        Data.PAIRED: "pairs",
        Data.UNPAIRED: "thumbs up/down (or pairs, split)",
        Data.PROMPTS: "prompts (it samples its own answers)",
    }
    kinds = dict.fromkeys(stage.data for stage in method.stages)
    return {
        "data": ", then ".join(words[kind] for kind in kinds),
        "reference": "frozen copy" if method.has_reference else "none",
        "reward model": "trained first" if any(s.trains_reward_model for s in method.stages) else "none",
        "rollouts": "the policy generates while it trains"
        if any(s.samples_answers for s in method.stages)
        else "none (offline data)",
    }


def map_rows(session: Session | None = None) -> list[dict[str, str]]:
    """One row per method: what it needs, and what its latest run in this session cost and did."""
    latest: dict[str, RunRecord] = {}
    for record in session.runs if session is not None else []:
        latest[method_label(record.settings)] = record
    rows = []
    for method in METHODS.values():
        record = latest.get(method.title)
        row = {"method": method.title, **needs(method)}
        if record is None:
            row.update({k: "" for k in ("s / step", "peak memory", "held-out acc", "verdict")})
        else:
            headers, cells = display_table([record.evidence_row()])
            shown = dict(zip(headers, cells[0]))
            row.update({k: shown[EVIDENCE_COLUMNS[key]] for k, key in _MEASURED.items()})
            row["method"] = f"{method.title} (run {record.label})"
        rows.append(row)
    return rows


_MEASURED = {
    "s / step": "seconds_per_step",
    "peak memory": "peak_memory",
    "held-out acc": "heldout_accuracy",
    "verdict": "verdict",
}


def map_ui(request: gr.Request) -> str:
    """The map with this session's measurements."""
    return map_markdown(session_of(request))


def map_markdown(session: Session | None = None) -> str:
    rows = map_rows(session)
    headers = list(rows[0])
    lines = [
        "### The map: what each method needs, and what it did here",
        "Measured columns fill in as this session runs each method (its latest run).",
        "",
        "| " + " | ".join(headers) + " |",
        "|" + "---|" * len(headers),
    ]
    lines += ["| " + " | ".join(row[h] or "—" for h in headers) + " |" for row in rows]
    return "\n".join(lines)
