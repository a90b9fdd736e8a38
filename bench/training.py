"""Seconds per DPO step: AlignLab vs a plain ``DPOTrainer`` script vs a bare PyTorch loop.

All three train the same model on the seed lab's pairs, with the same batch size and data order;
the first step of each is a warm-up and is left out, and on a GPU an untimed pass over the same
batches runs before all three, so that the first to run does not pay alone for each new shape.
A step's time is the full period from one step's end to the next (forward, backward, optimiser,
logging), so the three are comparable:
- AlignLab: :func:`alignlab.training.run.train_policy` with ``TrainingSettings()`` (only ``steps`` changed),
  timed from the streamed events' timestamps;
- plain TRL: ``DPOTrainer`` with ``DPOConfig`` defaults (bf16, gradient checkpointing, explicit
  reference model: a copy of the loaded model, as a script would load it twice). Changed only:
  ``use_cpu`` off a GPU, ``per_device_train_batch_size`` (to AlignLab's), ``max_steps``,
  ``report_to='none'`` and ``disable_tqdm``; timed by a callback at each step's end;
- bare: :mod:`bench.bare_dpo` with AlignLab's learning rate, beta, seed, length and precision.

The bare loop's losses are then compared with AlignLab's (TRL's) step by step: the same data
order and optimiser give the same numbers up to float rounding.
"""

from __future__ import annotations

import copy
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback

from alignlab.data.pairs import PreferencePair, TrainingData
from alignlab.models.loading import LoadedModel, copy_for_training
from alignlab.registry.settings import TrainingSettings
from alignlab.training.run import train_policy
from alignlab.training.trl_rows import stage_dataset
from bench.bare_dpo import encode_pairs, train_bare_as
from bench.common import Figure, cuda_peak_mib, figure_text, ratio, reset_cuda_peak, sync


class StepClock(TrainerCallback):
    """Wall time between consecutive step ends (the first one from the start of training).

    With ``budget_s``, training stops once that many seconds have passed and at least
    ``min_steps`` steps are done: on a CPU without native bf16, TRL's defaults (bf16 autocast)
    take minutes per step, and the bench must still finish.
    """

    def __init__(self, device: torch.device, budget_s: float | None = None, min_steps: int = 3):
        self.device = device
        self.budget_s, self.min_steps = budget_s, min_steps
        self.ends: list[float] = []
        self.started = 0.0

    def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001 - TrainerCallback API
        sync(self.device)
        self.started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
        sync(self.device)
        self.ends.append(time.perf_counter())
        over = self.budget_s is not None and self.ends[-1] - self.started > self.budget_s
        if over and len(self.ends) >= self.min_steps:
            control.should_training_stop = True
        return control

    @property
    def step_seconds(self) -> list[float]:
        marks = [self.started] + self.ends
        return [b - a for a, b in zip(marks, marks[1:])]


def alignlab_steps(loaded: LoadedModel, pairs: list[PreferencePair], settings: TrainingSettings) -> dict[str, Any]:
    """Per-step seconds and log rows of AlignLab's own ``train_policy``."""
    marks: list[float] = []

    def on_event(event) -> None:  # noqa: ANN001
        if event.kind == "log":
            sync(loaded.device)
            marks.append(event.elapsed)

    reset_cuda_peak()
    result = train_policy(loaded, pairs, settings, on_event=on_event)
    steps = [b - a for a, b in zip([0.0] + marks, marks)]
    return {
        "step_seconds": steps,
        "rows": result.step_rows,
        "seconds": result.seconds,
        "cuda_peak_mib": cuda_peak_mib(),
    }


def trl_default_steps(
    loaded: LoadedModel, pairs: list[PreferencePair], settings: TrainingSettings, budget_s: float | None = None
) -> dict[str, Any]:
    """Per-step seconds of a plain TRL script: ``DPOConfig`` defaults, reference passed in.

    Only the batch size and the number of steps are the settings'; the rows are the lab's (the same tokens).
    ``budget_s`` stops it early (after at least 1 warm-up + 2 timed steps) when it runs long.
    """
    from trl import DPOConfig, DPOTrainer

    device = loaded.device
    policy = copy_for_training(loaded)
    reference = copy.deepcopy(loaded.model)  # what `from_pretrained` twice gives a plain script
    clock = StepClock(device, budget_s=budget_s, min_steps=min(3, settings.steps))
    reset_cuda_peak()
    with tempfile.TemporaryDirectory(prefix="bench-trl-") as scratch:
        args = DPOConfig(
            output_dir=scratch,
            use_cpu=device.type != "cuda",
            per_device_train_batch_size=settings.batch_size,
            max_steps=settings.steps,
            report_to="none",
            disable_tqdm=True,
        )
        trainer = DPOTrainer(
            model=policy,
            ref_model=reference,
            args=args,
            train_dataset=stage_dataset(loaded, TrainingData(pairs), settings),
            processing_class=loaded.tokenizer,
            callbacks=[clock],
        )
        trainer.remove_callback(PrinterCallback)  # prints the log rows; no part of the step
        tokenized = [
            (list(r["prompt_ids"]), list(r["chosen_ids"]), list(r["rejected_ids"])) for r in trainer.train_dataset
        ]
        trainer.train()
    loaded.tokenizer.padding_side = "left"
    config = {
        "bf16": args.bf16,
        "gradient_checkpointing": args.gradient_checkpointing,
        "learning_rate": args.learning_rate,
    }
    del trainer, policy, reference
    return {
        "step_seconds": clock.step_seconds,
        "tokenized": tokenized,
        "config": config,
        "cuda_peak_mib": cuda_peak_mib(),
    }


def padding_share(encoded: list, batch_size: int, shuffles: int = 200, seed: int = 0) -> dict[str, float]:
    """Share of padded positions in a training batch, and the least any batching could leave.

    TRL pads every chosen and rejected sequence of a batch to the batch's longest one. The mean is
    over ``shuffles`` random data orders; the floor pads each pair only to its own longer answer,
    which is what perfect grouping by length would leave (chosen and rejected share one forward).
    """
    import random

    lengths = [(len(e.prompt_ids) + len(e.chosen_ids), len(e.prompt_ids) + len(e.rejected_ids)) for e in encoded]
    real = padded = 0
    rng = random.Random(seed)
    for _ in range(shuffles):
        order = rng.sample(lengths, len(lengths))
        for start in range(0, len(order), batch_size):
            rows = [n for pair in order[start : start + batch_size] for n in pair]
            real += sum(rows)
            padded += max(rows) * len(rows)
    floor_real = sum(c + r for c, r in lengths)
    floor_padded = sum(2 * max(c, r) for c, r in lengths)
    return {"mean": 1 - real / padded, "floor": 1 - floor_real / floor_padded, "batch_size": batch_size}


def loss_agreement(rows: list[dict[str, Any]], bare) -> dict[str, Any]:  # noqa: ANN001 - BareRun
    """AlignLab's (TRL's) logged values vs the bare loop's, step by step."""
    trl_losses = [float(r["loss"]) for r in rows]
    n = min(len(trl_losses), len(bare.losses))
    diffs = [abs(a - b) for a, b in zip(trl_losses[:n], bare.losses[:n])]
    first_chosen = float(rows[0].get("logps/chosen", float("nan"))) if rows else float("nan")
    first_rejected = float(rows[0].get("logps/rejected", float("nan"))) if rows else float("nan")
    return {
        "first_step_loss_trl": trl_losses[0] if trl_losses else None,
        "first_step_loss_bare": bare.losses[0] if bare.losses else None,
        "first_step_loss_diff": diffs[0] if diffs else None,
        "first_step_logps_chosen_trl": first_chosen,
        "first_step_logps_chosen_bare": bare.chosen_logps[0] if bare.chosen_logps else None,
        "first_step_logps_rejected_trl": first_rejected,
        "first_step_logps_rejected_bare": bare.rejected_logps[0] if bare.rejected_logps else None,
        "losses_trl": trl_losses[:n],
        "losses_bare": bare.losses[:n],
        "max_loss_diff": max(diffs) if diffs else None,
        "note": (
            "Step 1 starts from policy == reference, so both losses are ln 2 by construction; the later "
            "steps and the step-1 log-probs are what test tokens, data order, gradients and optimiser."
        ),
    }


def host_syncs(work: Callable[[], Any]) -> int:
    """How many times ``work`` made the CPU wait for the GPU (``torch.cuda.set_sync_debug_mode``).

    On a small model a GPU step is short enough that the CPU's kernel launches set the pace; every
    ``.item()`` between them (TRL logs about a dozen metrics a step) stops the queue from running
    ahead. Counted in an untimed run, since the debug mode slows every call it watches.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            work()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def syncs_per_step(loaded: LoadedModel, pairs: list[PreferencePair], settings: TrainingSettings) -> dict[str, float]:
    """Host-device syncs per DPO step, AlignLab vs the bare loop: (3 steps - 1 step) / 2, so set-up cancels out."""

    def alignlab(steps: int) -> Callable[[], Any]:
        return lambda: train_policy(loaded, pairs, replace(settings, steps=steps))

    def bare(steps: int) -> Callable[[], Any]:
        return lambda: train_bare_as(loaded, pairs, settings, steps)

    return {
        "alignlab": (host_syncs(alignlab(3)) - host_syncs(alignlab(1))) / 2,
        "bare": (host_syncs(bare(3)) - host_syncs(bare(1))) / 2,
    }


def run(
    loaded: LoadedModel,
    pairs: list[PreferencePair],
    timed_steps: int,
    precision: str = "auto",
    trl_budget_s: float | None = 60.0,
) -> dict[str, Any]:
    """All three trainers, ``timed_steps`` measured steps each after one warm-up step.

    The plain TRL script may stop earlier (``trl_budget_s``); ratios pair the steps both ran.
    """
    steps = timed_steps + 1
    settings = TrainingSettings(steps=steps, precision=precision)
    device = loaded.device
    bf16 = settings.use_bf16(device)

    if device.type == "cuda":
        # Every batch has its own sequence length, and on a GPU the first forward and backward at a new shape
        # pays for picking (and for some attention backends building) its kernels, which would fall on whichever
        # trainer runs first. One untimed pass over the same batches first, so that no trainer pays for the others.
        train_bare_as(loaded, pairs, settings)
    ours = alignlab_steps(loaded, pairs, settings)
    plain = trl_default_steps(loaded, pairs, settings, trl_budget_s)
    reset_cuda_peak()
    bare = train_bare_as(loaded, pairs, settings)
    bare_cuda = cuda_peak_mib()

    figures = {
        "alignlab": Figure(ours["step_seconds"][1:]),
        "trl_default": Figure(plain["step_seconds"][1:]),
        "bare": Figure(bare.step_seconds[1:]),
    }
    encoded = encode_pairs(loaded, pairs)
    ours_tokens = [(e.prompt_ids, e.chosen_ids, e.rejected_ids) for e in encoded]
    return {
        "settings": settings.to_dict() | {"bf16": bf16},
        "trl_default_config": plain["config"] | {"time_box_s": trl_budget_s, "steps_run": len(plain["step_seconds"])},
        "warmup_step_seconds": {
            "alignlab": ours["step_seconds"][0],
            "trl_default": plain["step_seconds"][0],
            "bare": bare.step_seconds[0],
        },
        "step_seconds": {k: v.to_dict() for k, v in figures.items()},
        "ratio_alignlab_vs_trl_default": ratio(figures["alignlab"], figures["trl_default"]).to_dict(),
        "ratio_alignlab_vs_bare": ratio(figures["alignlab"], figures["bare"]).to_dict(),
        "tokens_match_trl": ours_tokens == plain["tokenized"],
        "max_sequence_tokens": bare.max_tokens,
        "padding_share": padding_share(encoded, settings.batch_size),
        "loss_agreement": loss_agreement(ours["rows"], bare),
        "cuda_peak_mib": {"alignlab": ours["cuda_peak_mib"], "trl_default": plain["cuda_peak_mib"], "bare": bare_cuda},
        "host_syncs_per_step": syncs_per_step(loaded, pairs, settings) if device.type == "cuda" else None,
    }


def table_rows(tr: dict[str, Any]) -> list[tuple[str, str]]:
    """The bench table's rows: each trainer's seconds per step, the ratios, the loss check, the padding."""
    rows: list[tuple[str, str]] = []
    s = tr["settings"]
    steps = tr["step_seconds"]
    cfg = tr["trl_default_config"]
    rows += [
        (
            f"train s/step: AlignLab (batch {s['batch_size']}, {'bf16' if s['bf16'] else 'fp32'}, "
            f"{'pre-computed ref' if s['precompute_ref_log_probs'] else 'shared ref model'})",
            figure_text(steps["alignlab"]),
        ),
        (
            f"train s/step: plain DPOTrainer (bf16={cfg['bf16']}, grad ckpt={cfg['gradient_checkpointing']}, ref copy)",
            figure_text(steps["trl_default"]),
        ),
        ("train s/step: bare PyTorch loop (policy + frozen ref)", figure_text(steps["bare"])),
        ("train ratio: AlignLab / plain DPOTrainer", figure_text(tr["ratio_alignlab_vs_trl_default"])),
        ("train ratio: AlignLab / bare loop", figure_text(tr["ratio_alignlab_vs_bare"])),
    ]
    syncs = tr.get("host_syncs_per_step")
    if syncs:
        rows.append(
            (
                "train: host-device syncs per step, AlignLab (TRL) vs bare loop",
                f"{syncs['alignlab']:.0f} vs {syncs['bare']:.0f}",
            )
        )
    la = tr["loss_agreement"]
    rows.append(
        (
            "loss check: step-1 loss TRL vs bare (diff)",
            f"{la['first_step_loss_trl']:.6f} vs {la['first_step_loss_bare']:.6f} "
            f"({la['first_step_loss_diff']:.2e}); max diff over {len(la['losses_trl'])} steps "
            f"{la['max_loss_diff']:.2e}; tokens match TRL: {tr['tokens_match_trl']}",
        )
    )
    rows.append(
        (
            "loss check: step-1 logps chosen/rejected TRL vs bare",
            f"{la['first_step_logps_chosen_trl']:.4f}/{la['first_step_logps_rejected_trl']:.4f} vs "
            f"{la['first_step_logps_chosen_bare']:.4f}/{la['first_step_logps_rejected_bare']:.4f}",
        )
    )
    pad = tr["padding_share"]
    rows.append(
        (
            f"train: padded positions per batch of {pad['batch_size']} (floor: perfect length grouping)",
            f"{pad['mean']:.0%} (floor {pad['floor']:.0%})",
        )
    )
    return rows
