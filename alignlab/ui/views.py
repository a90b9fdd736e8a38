"""What the Train and Compare tabs show, from a session's data: plain functions of rows, runs and reports.

The Train tab, the presenter's chain and the comparison panel all draw a run's progress and its end through
:func:`train_view` and :func:`finished_view`, and a report through :func:`report_views`; the words come from
:mod:`alignlab.verdict.readings`.
"""

from __future__ import annotations

from typing import Any

from alignlab.pipeline import plots
from alignlab.recipe import RecipeError, bytes_text, lab_memory_estimate, resolve_target
from alignlab.registry.methods import DEFAULT_METHOD, entry_for
from alignlab.registry.model_shapes import count_text
from alignlab.registry.settings import TrainingSettings
from alignlab.training.run import training_rows
from alignlab.ui.diff import comparison_html
from alignlab.ui.state import Session
from alignlab.verdict.health import read_training_health
from alignlab.verdict.readings import evidence_markdown, health_markdown


def progress_line(step: int, total: int, elapsed: float) -> str:
    left = max(0, total - step)
    return f"**Step {step} of {total}** · {elapsed:.1f} s elapsed · {left} step{'' if left == 1 else 's'} left"


def train_view(status: str, rows: list[dict[str, Any]], health: str = "", method: str | None = None) -> tuple:
    """The Train tab's outputs: status, five plots, the log table, the health reading, the separation plot."""
    *frames, separation = plots.all_frames(rows, method)
    return (status, *frames, health, separation)


def finished_view(session: Session) -> tuple:
    """The Train tab after a run: final figures, where it stopped, and the health reading."""
    trained = session.trained
    training = trained.summary if trained is not None else None
    if training is None:
        return train_view("No training run has finished in this session yet.", session.log_rows)
    done, total = training["steps_done"], training["total_steps"]
    if training["stopped_early"]:
        status = f"**Stopped after {done} of {total} steps** ({training['seconds']:.1f} s)."
    else:
        status = f"**Finished {done} of {total} steps** in {training['seconds']:.1f} s."
    if trained.policy_dir is not None:
        status += " Next: the **Compare** tab shows what changed."
    else:
        status += " No step finished, so there is nothing to compare: press Start again."
    status += "\n\n" + run_cost(training, session.baseline.model_spec if session.baseline is not None else None)
    settings = training["settings"]
    method = entry_for(settings.get("method", DEFAULT_METHOD), settings.get("loss_type", "sigmoid")).name
    health = read_training_health(
        training_rows(training["log_history"]),
        beta=settings["beta"],
        heldout_curve=training.get("heldout_curve"),
        method=method,
    )
    note = "\n\n*The full verdict, with the answers checked for collapse, loops and templates, is on the Compare tab.*"
    return train_view(status, session.log_rows, health_markdown(health.to_dict()) + note, method)


def run_cost(training: dict[str, Any], model_spec: str | None) -> str:
    """Time and memory of a finished run, and how much of the model it trained (the run's cost)."""
    settings = training["settings"]
    trainable = training.get("trainable_parameters")
    if settings.get("use_qlora"):
        what = f"QLoRA r={settings['lora_rank']} (4-bit base)"
    elif settings.get("use_lora"):
        what = f"LoRA r={settings['lora_rank']}"
    else:
        what = "Full fine-tuning"
    parts = [what]
    total = None
    try:
        shape = resolve_target(model_spec or "")
        total = shape.parameters()
    except RecipeError:
        shape = None
    if trainable:
        share = f" of {count_text(total)} ({trainable / total:.1%})" if total else ""
        parts.append(f"{count_text(trainable)} weights trained{share}")
    parts.append(f"{training['seconds']:.1f} s")
    peak = training.get("peak_memory_bytes")
    gpu_peak = bool(peak) and training.get("peak_memory_kind", "cuda_allocated") == "cuda_allocated"
    if gpu_peak:
        parts.append(f"peak GPU memory {bytes_text(peak)} (measured)")
    elif peak:
        parts.append(f"peak process memory {bytes_text(peak)} (measured: the whole server process)")
    if shape is not None and not gpu_peak:
        on_gpu = str(training.get("device") or "").startswith("cuda")
        estimate = lab_memory_estimate(shape, TrainingSettings.from_dict(settings), on_gpu=on_gpu)
        parts.append(f"memory ~{bytes_text(estimate)} (estimated: weights, copy, gradients, AdamW, activations)")
    return "**This run:** " + " · ".join(parts)


def report_views(report: dict[str, Any], report_path: str | None) -> tuple:
    """The Compare tab's outputs from a report: summary, before/after, evidence, verdict, report file and JSON."""
    prompts = [row["prompt"] for row in report["baseline_outputs"]]
    before = [row["text"] for row in report["baseline_outputs"]]
    after = [row["text"] for row in report["aligned_outputs"]]
    stopped = " (training was stopped early)" if report["settings"].get("stopped_early") else ""
    summary = f"## {report['changed']} of {len(prompts)} answers changed{stopped}"
    tracked = report.get("tracking")
    if tracked:
        summary += f"\n{tracked['dashboard']}"
        if tracked.get("failed"):
            summary += f" (trackio stopped recording it: {tracked['failed']}; the run itself went on.)"
    return (
        summary,
        comparison_html(prompts, before, after),
        evidence_markdown(report["eval"]),
        health_markdown(report["health"], "Health verdict"),
        report_path,
        report,
    )
