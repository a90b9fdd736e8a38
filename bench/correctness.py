"""AlignLab's (TRL's) DPO against a bare PyTorch loop on the tiny test model, in fp32, step by step.

The same pairs, data order, optimiser and learning rate give the same losses up to float rounding
(see :mod:`bench.bare_dpo`); on a GPU this checks that TRL's Triton log-prob kernels and the lab's
plain-model path compute what the textbook loop does.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from alignlab.data.pairs import PreferencePair
from alignlab.models.loading import load_model
from alignlab.models.tiny import build_tiny_model
from alignlab.registry.settings import TrainingSettings
from bench.bare_dpo import train_bare_as
from bench.training import alignlab_steps, loss_agreement


def run(device: torch.device, pairs: list[PreferencePair], steps: int = 6) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-tiny-") as scratch:
        loaded = load_model(str(build_tiny_model(Path(scratch) / "tiny", chat=True)), device=device)
        settings = TrainingSettings(steps=steps, precision="fp32")
        ours = alignlab_steps(loaded, pairs, settings)
        bare = train_bare_as(loaded, pairs, settings)  # fp32 settings: no bf16
    return {"steps": steps, "device": str(device), "loss_agreement": loss_agreement(ours["rows"], bare)}


def table_rows(co: dict[str, Any]) -> list[tuple[str, str]]:
    """The bench table's row: the losses of AlignLab (TRL) and the bare loop."""
    la = co["loss_agreement"]
    return [
        (
            f"correctness: tiny model fp32 on {co['device']}, AlignLab (TRL) vs bare loop",
            f"step-1 loss {la['first_step_loss_trl']:.6f} vs {la['first_step_loss_bare']:.6f}; max diff over "
            f"{len(la['losses_trl'])} steps {la['max_loss_diff']:.2e}",
        )
    ]
