"""The numbers of a recipe's config: the lab's settings mapped and scaled for the target, with a reason each."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from alignlab.recipe.memory import ENGINES, Adapter, MemoryEstimate, load_dtype
from alignlab.recipe.stages import RecipeStage
from alignlab.recipe.targets import RecipeError
from alignlab.registry.model_shapes import ModelShape
from alignlab.registry.settings import TrainingSettings


@dataclass
class RunPlan:
    """The numbers a recipe's ``config.yaml`` is made of, with the reason for each."""

    learning_rate: float
    lr_scheduler_type: str
    warmup_ratio: float
    max_steps: int
    num_train_epochs: float
    global_batch: int
    per_device_batch: int
    gradient_accumulation: int
    max_length: int
    gradient_checkpointing: bool
    bf16: bool
    dtype: str
    reasons: dict[str, str] = field(default_factory=dict)
    max_completion_length: int | None = None
    """Tokens of each sampled answer, for a stage that samples them (online RL); None otherwise."""
    prompt_tokens: int = 0
    """At most this many tokens per prompt (its UTF-8 bytes): the sampled sequences' memory counts them."""
    per_device_eval_batch: int | None = None
    """The per-GPU eval batch where it is not the training batch (RLOO: one prompt's group of answers, so that the
    eval batch on any number of processes holds whole groups)."""
    batch_multiple: int = 1
    """The global batch is a multiple of this (RLOO: ``num_generations``, whole groups of one prompt's answers)."""


PER_DEVICE_CHOICES = (8, 4, 2, 1)
GLOBAL_BATCH_MIXED = 64


def plan_run(
    settings: TrainingSettings,
    stage: RecipeStage,
    shape: ModelShape,
    *,
    n_train: int,
    gpus: int,
    engine: str,
    adapter: str,
    mixed: bool,
    scale: str = "target",
    gpu_memory_gib: float = 80.0,
    learning_rate: float | None = None,
    prompt_tokens: int = 0,
) -> RunPlan:
    """Map the lab's settings onto the target, for one stage of a method.

    ``scale='target'`` (the default) makes it a real run: the method's usual learning rate for full
    fine-tuning or an adapter, a cosine schedule with 10% warm-up, gradient checkpointing, bf16,
    the largest per-GPU batch that fits the memory estimate, and gradient accumulation making up
    the global batch: the lab's batch on the user's pairs alone (for the same number of passes
    over them as the lab made), 64 pairs for one epoch over a public mixture.
    ``scale='lab'`` repeats the lab's run exactly (its learning rate, constant schedule, steps,
    batch, fp32 weights): the way to check the recipe against the lab, as the tests do.

    ``n_train`` counts what the stage draws its batch from: pairs, or for online RL the distinct prompts. A stage
    that samples answers (RLOO) counts its batch in answers, a multiple of ``num_generations``, and samples them
    ``max_completion_length`` tokens long: the lab's at ``scale='lab'``, whole answers on a real run.
    """
    if scale == "lab":
        return _as_in_lab(settings, stage, gpus=gpus, learning_rate=learning_rate, prompt_tokens=prompt_tokens)
    if scale != "target":
        raise RecipeError(f"scale must be 'target' or 'lab' (got {scale!r}).")
    return _as_target(
        settings,
        stage,
        shape,
        n_train=n_train,
        gpus=gpus,
        engine=engine,
        adapter=adapter,
        mixed=mixed,
        gpu_memory_gib=gpu_memory_gib,
        learning_rate=learning_rate,
        prompt_tokens=prompt_tokens,
    )


def _as_target(
    settings: TrainingSettings,
    stage: RecipeStage,
    shape: ModelShape,
    *,
    n_train: int,
    gpus: int,
    engine: str,
    adapter: str,
    mixed: bool,
    gpu_memory_gib: float,
    learning_rate: float | None,
    prompt_tokens: int,
) -> RunPlan:
    """A real run on the target (``scale='target'``, see :func:`plan_run`), with the reason for each number."""
    multiple = stage.batch_multiple(settings)
    reasons: dict[str, str] = {
        "learning_rate": "given"
        if learning_rate
        else f"the usual rate for {'an adapter' if adapter != 'none' else 'full fine-tuning'} "
        f"on a real run; the lab's {stage.lab_learning_rate(settings):g} is for a few steps on a small model"
    }
    global_batch, epochs, max_length, completion = _target_length(settings, stage, n_train, gpus, mixed, reasons)
    estimate = partial(
        stage.estimate,
        shape,
        engine=engine,
        gpus=gpus,
        adapter=adapter,
        lora_rank=settings.lora_rank,
        max_length=max_length,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion,
    )
    per_device, accumulation = _fitting_batch(estimate, global_batch, gpus, multiple, gpu_memory_gib, reasons)
    dtype = load_dtype(engine, adapter)
    reasons["dtype"] = _dtype_reason(engine, adapter, dtype)
    return RunPlan(
        learning_rate=learning_rate or stage.target_learning_rate(adapter),
        lr_scheduler_type="cosine",
        warmup_ratio=0.1,
        max_steps=-1,
        num_train_epochs=epochs,
        global_batch=per_device * gpus * accumulation,
        per_device_batch=per_device,
        gradient_accumulation=accumulation,
        max_length=max_length,
        gradient_checkpointing=True,
        bf16=True,
        dtype=dtype,
        reasons=reasons,
        max_completion_length=completion,
        prompt_tokens=prompt_tokens,
        per_device_eval_batch=multiple if multiple > 1 else None,
        batch_multiple=multiple,
    )


def _lab_completion(settings: TrainingSettings, stage: RecipeStage) -> int | None:
    """The length of the answers the lab's stage samples (None for a stage that reads given answers)."""
    return stage.lab_fields(settings).get("max_completion_length") if stage.samples else None


def _as_in_lab(
    settings: TrainingSettings, stage: RecipeStage, *, gpus: int, learning_rate: float | None, prompt_tokens: int
) -> RunPlan:
    """The lab's own run: its learning rate, constant schedule, steps, batch and fp32 weights."""
    lab_batch = stage.lab_batch(settings)  # in the script's rows (KTO: 2 per pair; RLOO: answers)
    if lab_batch % gpus:
        raise RecipeError(
            f"The lab's batch of {lab_batch} {stage.unit} cannot be split evenly over {gpus} GPUs; "
            "choose a GPU count that divides it, or scale the recipe for the target."
        )
    multiple = stage.batch_multiple(settings)
    return RunPlan(
        learning_rate=learning_rate or stage.lab_learning_rate(settings),
        lr_scheduler_type="constant",
        warmup_ratio=0.0,
        max_steps=settings.steps if settings.steps is not None else -1,
        num_train_epochs=float(settings.epochs) if settings.epochs is not None else 1.0,
        global_batch=lab_batch,
        per_device_batch=lab_batch // gpus,
        gradient_accumulation=1,
        max_length=settings.max_length,
        gradient_checkpointing=False,
        bf16=True,
        dtype="float32",
        reasons={"everything": "as in the lab (scale='lab'): the same run, to check the recipe against the lab"},
        max_completion_length=_lab_completion(settings, stage),
        prompt_tokens=prompt_tokens,
        per_device_eval_batch=multiple if multiple > 1 else None,
        batch_multiple=multiple,
    )


def _target_length(
    settings: TrainingSettings, stage: RecipeStage, n_train: int, gpus: int, mixed: bool, reasons: dict[str, str]
) -> tuple[int, float, int, int | None]:
    """(global batch, epochs, max length, sampled answers' length) of a real run, with their reasons: 64 rows for
    one pass over a public mixture; on the user's pairs alone, the lab's batch for as many passes as the lab's run
    made; whole answers for a stage that samples them."""
    if mixed:
        global_batch, epochs, max_length = GLOBAL_BATCH_MIXED, 1.0, max(settings.max_length, 1024)
        reasons["global_batch"] = f"64 {stage.unit} per step, one pass over the mixture (the usual DPO run)"
        reasons["max_length"] = "public sets have long answers: at least 1024 tokens"
    else:
        multiple = stage.batch_multiple(settings)
        lab_items = settings.stage_steps(n_train) * settings.batch_size
        global_batch, max_length = max(stage.lab_batch(settings), 1), settings.max_length
        epochs = round(max(lab_items / max(n_train, 1), 0.1), 2)
        reasons["global_batch"] = "the lab's batch, on the lab's pairs"
        if stage.rows_per_pair > 1:
            reasons["global_batch"] += f" ({stage.rows_per_pair} rows per pair)"
        if multiple > 1:
            reasons["global_batch"] = (
                f"the lab's batch: {settings.batch_size} prompts x {multiple} sampled answers (num_generations)"
            )
        what = "prompts" if stage.samples else "pairs"
        reasons["epochs"] = f"{epochs:g} passes over the {what}, as many as the lab's run made"
        reasons["max_length"] = "the lab's"
    if global_batch < gpus:
        global_batch = gpus
        reasons["global_batch"] += f" (raised to {gpus}: one row per GPU at least)"
    if not stage.samples:
        return global_batch, epochs, max_length, None
    reasons["max_completion_length"] = (
        f"whole answers, up to the lab's max_length (the length the reward model learnt to score); the lab samples "
        f"{_lab_completion(settings, stage)} tokens to keep a CPU step short"
    )
    return global_batch, epochs, max_length, max_length


def _dtype_reason(engine: str, adapter: str, dtype: str) -> str:
    if adapter != Adapter.FULL:
        return "frozen base in bf16"
    if dtype == "bfloat16":
        return f"{ENGINES[engine].title} keeps its own master weights"
    return "fp32 weights under bf16 autocast: pure-bf16 AdamW would round away updates this small"


def _fitting_batch(
    estimate: Callable[..., MemoryEstimate],
    global_batch: int,
    gpus: int,
    multiple: int,
    gpu_memory_gib: float,
    reasons: dict[str, str],
) -> tuple[int, int]:
    """(per-GPU batch, gradient accumulation): the largest of :data:`PER_DEVICE_CHOICES` whose memory estimate fits
    90% of a GPU, and the accumulation making up the global batch, rounded up to whole groups of answers (RLOO);
    their reasons go into ``reasons``."""

    def accumulation_for(per_device: int) -> int:
        accumulation = max(1, math.ceil(global_batch / (per_device * gpus)))
        while (per_device * gpus * accumulation) % multiple:
            accumulation += 1
        return accumulation

    per_device = 1  # when none fits: the smallest batch, for the estimate to say how far it is over
    for candidate in PER_DEVICE_CHOICES:
        if candidate * gpus > global_batch:
            continue
        total = candidate * gpus * accumulation_for(candidate)
        if estimate(per_device_batch=candidate, global_batch=total).fits(gpu_memory_gib * 0.9):
            per_device = candidate
            break
    accumulation = accumulation_for(per_device)
    reasons["per_device_batch"] = (
        f"the largest of {', '.join(map(str, PER_DEVICE_CHOICES))} whose estimate fits 90% of {gpu_memory_gib:g} GiB"
    )
    reasons["gradient_accumulation"] = (
        f"{per_device} x {gpus} GPUs x {accumulation} = {per_device * gpus * accumulation}"
    )
    return per_device, accumulation
