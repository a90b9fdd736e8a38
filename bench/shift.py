"""Time to a measurable shift: the first step at which held-out preference accuracy reaches 0.75.

One run of AlignLab's default training (through :mod:`bench.probe`) scores the held-out pairs
after every step; the step count is deterministic for a seed, so one run fixes it. Its seconds
are training time up to that step (setup and reference log-probs included, the probe's own
scoring left out), and, when the lab section ran, the same step's elapsed time in each lab run.
"""

from __future__ import annotations

from typing import Any

from alignlab.data.presets import Preset
from alignlab.models.loading import LoadedModel
from alignlab.registry.settings import TrainingSettings
from bench.common import Figure, figure_text
from bench.probe import SHIFT_ACCURACY, probe_run


def run(loaded: LoadedModel, preset: Preset, settings: TrainingSettings | None = None) -> dict[str, Any]:
    settings = settings or TrainingSettings()
    probe = probe_run(loaded, preset.pairs, preset.heldout_pairs, settings)
    return {
        "threshold": SHIFT_ACCURACY,
        "heldout_pairs": len(preset.heldout_pairs),
        "steps_run": len(probe["step_seconds"]),
        "shift_step": probe["shift_step"],
        "shift_train_seconds": probe["shift_train_seconds"],
        "heldout_accuracy_per_step": probe["heldout_accuracy"],
        "heldout_margin_per_step": probe["heldout_margin"],
        "losses": probe["losses"],
        "setup_seconds": probe["setup_seconds"],
        "step_seconds": Figure(probe["step_seconds"][1:]).to_dict(),
        "kl_heldout_chosen": probe.get("kl_heldout_chosen"),
        "perplexity_before": probe.get("perplexity_before"),
        "perplexity_after": probe.get("perplexity_after"),
    }


def seconds_in_lab_runs(step: int | None, step_elapsed: list[list[float]]) -> Figure:
    """Elapsed training seconds at ``step`` in each lab run (from its streamed events)."""
    figure = Figure()
    if step:
        for marks in step_elapsed:
            if len(marks) >= step:
                figure.add(marks[step - 1])
    return figure


def table_rows(sh: dict[str, Any]) -> list[tuple[str, str]]:
    """The bench table's rows: the step of the shift, and held-out accuracy per step."""
    rows: list[tuple[str, str]] = []
    step = sh["shift_step"]
    if step:
        what = f"step {step} of {sh['steps_run']}, {sh['shift_train_seconds']:.1f} s of training (probe run)"
    else:
        what = f"not reached in {sh['steps_run']} steps (best {max(sh['heldout_accuracy_per_step'] or [0]):.2f})"
    rows.append((f"shift: held-out accuracy >= {sh['threshold']} ({sh['heldout_pairs']} pairs)", what))
    if sh.get("seconds_in_lab_runs", {}).get("median") is not None:
        rows.append(("shift: training seconds to that step in the lab runs", figure_text(sh["seconds_in_lab_runs"])))
    rows.append(("shift: held-out accuracy per step", " ".join(f"{a:.2f}" for a in sh["heldout_accuracy_per_step"])))
    return rows
