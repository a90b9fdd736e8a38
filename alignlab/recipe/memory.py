"""Memory per GPU of a training setup, computed from the model's shape, by component.

:func:`estimate_memory` counts a DPO-style run (weights, reference, gradients, optimizer, activations,
overhead) under each engine (:data:`ENGINES`: DDP, DeepSpeed ZeRO-2/3, FSDP) and adapter (full fine-tuning,
LoRA, QLoRA); :func:`estimate_sampling_memory` adds what online RL holds (the reward model, the sampled answers'
KV cache). :func:`lab_memory_estimate` is the lab's own run, for the Train tab's cost line. Rough by design (a
few GiB either way): they are there to choose an engine, a GPU count and LoRA/QLoRA before renting the GPUs,
not to replace a first short run.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from alignlab.recipe.targets import RecipeError
from alignlab.registry.model_shapes import ModelShape

if TYPE_CHECKING:
    from alignlab.registry.settings import TrainingSettings

GIB = 1024**3


@dataclass(frozen=True)
class Engine:
    """How a launcher spreads training over GPUs, and what that does to each GPU's memory."""

    name: str
    title: str
    accelerate_config: str
    """TRL's own launcher config (``trl/accelerate_configs/<name>``) that the recipe starts from."""
    shards_weights: bool
    shards_gradients: bool
    shards_optimizer: bool
    full_weight_bytes: float
    """Bytes per parameter of the trained weights as this engine keeps them (full fine-tuning)."""
    full_gradient_bytes: float
    full_optimizer_bytes: float
    """AdamW's two moments, plus an fp32 master copy where the engine keeps one."""
    load_dtype: str
    """``dtype`` the script loads the model in for full fine-tuning."""
    note: str


#: The engines a recipe can target. Bytes per parameter for full fine-tuning with bf16 compute:
#: DDP keeps fp32 weights under bf16 autocast (pure-bf16 AdamW would round away updates as small as
#: DPO's 5e-7 learning rate makes them); DeepSpeed keeps bf16 weights and gradients with an fp32
#: master copy and moments in the optimizer (12 bytes); accelerate's FSDP with bf16 mixed precision
#: upcasts the sharded weights to fp32.
ENGINES: dict[str, Engine] = {
    e.name: e
    for e in (
        Engine("ddp", "DDP (accelerate multi-GPU)", "multi_gpu.yaml", False, False, False, 4, 4, 8, "float32",
               "every GPU holds the whole model, its gradients and optimizer states"),
        Engine("zero2", "DeepSpeed ZeRO-2", "zero2.yaml", False, True, True, 2, 2, 12, "bfloat16",
               "gradients and optimizer states are split across GPUs; weights are replicated"),
        Engine("zero3", "DeepSpeed ZeRO-3", "zero3.yaml", True, True, True, 2, 2, 12, "bfloat16",
               "weights, gradients and optimizer states are all split across GPUs"),
        Engine("fsdp", "FSDP (accelerate, FSDP2)", "fsdp2.yaml", True, True, True, 4, 4, 8, "bfloat16",
               "weights, gradients and optimizer states are all split across GPUs (fp32 shards)"),
    )
}  # fmt: skip


class Adapter(StrEnum):
    """What a recipe trains: every weight, a LoRA adapter, or a LoRA adapter on a 4-bit base."""

    FULL = "none"
    LORA = "lora"
    QLORA = "qlora"


ADAPTERS = tuple(Adapter)
#: Bytes per 4-bit NF4 weight with nested quantisation (bitsandbytes): 0.5 + ~0.127 bits of scales.
QLORA_WEIGHT_BYTES = 0.5 + 0.127 / 8
#: CUDA context, NCCL buffers and allocator slack per GPU: a rule of thumb, not a measurement.
OVERHEAD_BYTES = 2 * GIB


@dataclass
class MemoryEstimate:
    """Memory per GPU for one training setup, by component, in bytes (see :func:`estimate_memory`)."""

    model: str
    parameters: int
    trainable_parameters: int
    engine: str
    gpus: int
    adapter: str
    per_device_batch: int
    max_length: int
    gradient_checkpointing: bool
    components: dict[str, float] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return sum(self.components.values())

    def fits(self, gpu_memory_gib: float) -> bool:
        return self.total <= gpu_memory_gib * GIB

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "parameters": self.parameters,
            "trainable_parameters": self.trainable_parameters,
            "engine": self.engine,
            "gpus": self.gpus,
            "adapter": self.adapter,
            "per_device_batch": self.per_device_batch,
            "max_length": self.max_length,
            "gradient_checkpointing": self.gradient_checkpointing,
            "components_gib": {k: round(v / GIB, 3) for k, v in self.components.items()},
            "total_gib": round(self.total / GIB, 3),
        }


def estimate_memory(
    shape: ModelShape,
    *,
    engine: str = "ddp",
    gpus: int = 1,
    adapter: str = "none",
    lora_rank: int = 16,
    per_device_batch: int = 1,
    max_length: int = 1024,
    gradient_checkpointing: bool = True,
    reference: bool = True,
    rows_per_example: int = 2,
) -> MemoryEstimate:
    """Peak memory per GPU of a DPO-style run, computed from the model's shape, in bytes per component.

    - **weights**: full fine-tuning as the engine keeps them (:data:`ENGINES`), divided by the GPU
      count where it shards them; with LoRA the frozen base in bf16 (2 bytes), with QLoRA its
      linear layers in 4-bit NF4 (:data:`QLORA_WEIGHT_BYTES`) and the rest in bf16;
    - **reference**: the frozen copy DPO compares against, in bf16 (sharded under ZeRO-3/FSDP);
      none with an adapter, whose reference is the same weights with the adapter switched off;
    - **gradients** and **optimizer** (AdamW): per trained parameter; an adapter's own weights
      are fp32 (4 + 4 + 8 bytes each);
    - **activations**: chosen and rejected rows of ``per_device_batch`` pairs at ``max_length``
      tokens (``rows_per_example=1``: one row per example, e.g. an answer sampled in online RL),
      16-bit: with checkpointing one hidden state per layer plus one layer recomputed
      (~34 x hidden bytes per token, Korthikanti et al. 2022, without the attention-score term that
      SDPA/flash attention never store), without checkpointing that for every layer;
    - **overhead**: :data:`OVERHEAD_BYTES`.

    Rough by design (a few GiB either way): it is there to choose an engine, a GPU count and
    LoRA/QLoRA before renting the GPUs, not to replace a first short run.
    """
    _check_setup(engine, adapter, gpus)
    params = shape.parameters()
    trainable = params if adapter == Adapter.FULL else shape.lora_parameters(lora_rank)
    components: dict[str, float] = {}
    notes: dict[str, str] = {}
    if adapter == Adapter.FULL:
        _full_fine_tuning(ENGINES[engine], gpus, params, reference, components, notes)
    else:
        _adapter_states(shape, ENGINES[engine], gpus, adapter, lora_rank, components, notes)
    components["activations"], notes["activations"] = _activations(
        shape, per_device_batch, rows_per_example, max_length, gradient_checkpointing
    )
    components["overhead"] = float(OVERHEAD_BYTES)
    notes["overhead"] = "CUDA context, NCCL buffers, allocator slack"
    return MemoryEstimate(
        model=shape.name,
        parameters=params,
        trainable_parameters=trainable,
        engine=engine,
        gpus=gpus,
        adapter=adapter,
        per_device_batch=per_device_batch,
        max_length=max_length,
        gradient_checkpointing=gradient_checkpointing,
        components=components,
        notes=notes,
    )


def _check_setup(engine: str, adapter: str, gpus: Any) -> None:
    """A known engine and adapter, and at least one GPU."""
    if engine not in ENGINES:
        raise RecipeError(f"engine must be one of {', '.join(ENGINES)} (got {engine!r}).")
    if adapter not in ADAPTERS:
        raise RecipeError(f"adapter must be one of {', '.join(ADAPTERS)} (got {adapter!r}).")
    if not isinstance(gpus, int) or gpus < 1:
        raise RecipeError(f"gpus must be a whole number of at least 1 (got {gpus!r}).")


def _activations(
    shape: ModelShape, per_device_batch: int, rows_per_example: int, max_length: int, gradient_checkpointing: bool
) -> tuple[float, str]:
    """(bytes, note) of the activations kept for the backward pass (see :func:`estimate_memory`)."""
    tokens = per_device_batch * rows_per_example * max_length  # a pair: chosen and rejected rows
    per_layer = 34 * shape.hidden * tokens
    rows = f"{per_device_batch} pair(s) x 2" if rows_per_example == 2 else f"{per_device_batch} row(s)"
    if gradient_checkpointing:
        return 2 * shape.hidden * tokens * shape.layers + per_layer, f"{rows} x {max_length} tokens, checkpointed"
    return per_layer * shape.layers, f"{rows} x {max_length} tokens, no checkpointing"


def _split(value: float, gpus: int, sharded: bool) -> float:
    return value / gpus if sharded else value


def _over(gpus: int, sharded: bool) -> str:
    return f", split over {gpus}" if sharded else ""


def _full_fine_tuning(
    e: Engine, gpus: int, params: int, reference: bool, components: dict[str, float], notes: dict[str, str]
) -> None:
    """Every weight trained: weights, gradients and AdamW as the engine keeps them, and the frozen reference."""
    components["weights"] = _split(e.full_weight_bytes * params, gpus, e.shards_weights)
    notes["weights"] = f"{e.full_weight_bytes:g} B/param" + _over(gpus, e.shards_weights)
    components["gradients"] = _split(e.full_gradient_bytes * params, gpus, e.shards_gradients)
    notes["gradients"] = f"{e.full_gradient_bytes:g} B/param" + _over(gpus, e.shards_gradients)
    components["optimizer"] = _split(e.full_optimizer_bytes * params, gpus, e.shards_optimizer)
    notes["optimizer"] = f"AdamW, {e.full_optimizer_bytes:g} B/param" + _over(gpus, e.shards_optimizer)
    if reference:
        components["reference"] = _split(2 * params, gpus, e.shards_weights)
        notes["reference"] = "frozen bf16 copy" + _over(gpus, e.shards_weights)


def _adapter_states(
    shape: ModelShape,
    e: Engine,
    gpus: int,
    adapter: str,
    lora_rank: int,
    components: dict[str, float],
    notes: dict[str, str],
) -> None:
    """A LoRA adapter trained on a frozen base (4-bit under QLoRA): the adapter's own weights and states in fp32."""
    trainable = shape.lora_parameters(lora_rank)
    if adapter == Adapter.QLORA:
        notes["weights"] = "frozen base: linear layers 4-bit NF4, the rest bf16"
    else:
        notes["weights"] = "frozen base in bf16"
    components["weights"] = _split(_policy_weight_bytes(shape, e, adapter), gpus, e.shards_weights) + 4 * trainable
    components["gradients"] = 4.0 * trainable
    components["optimizer"] = 8.0 * trainable
    notes["gradients"] = notes["optimizer"] = f"LoRA r={lora_rank} only ({trainable / 1e6:.1f} M params, fp32)"
    components["reference"] = 0.0
    notes["reference"] = "none: the base with the adapter switched off"


def _policy_weight_bytes(shape: ModelShape, e: Engine, adapter: str) -> float:
    """The policy's whole weights: the frozen base under an adapter (4-bit linear layers under QLoRA, else bf16),
    or every weight as the engine keeps it for full fine-tuning."""
    if adapter == Adapter.QLORA:
        return QLORA_WEIGHT_BYTES * shape.linear_parameters() + 2 * (shape.parameters() - shape.linear_parameters())
    if adapter == Adapter.LORA:
        return 2.0 * shape.parameters()
    return e.full_weight_bytes * shape.parameters()


def reward_model_shape(shape: ModelShape) -> ModelShape:
    """The reward model that TRL's reward script trains on ``shape``: the same backbone under a one-output score head
    (``AutoModelForSequenceClassification``, ``num_labels=1``). It has no LM head, so its embeddings count once, as a
    tied model's do; the score head (``hidden`` weights) is too small to count."""
    return replace(shape, name=f"{shape.name} (reward model)", tied_embeddings=True)


def load_dtype(engine: str, adapter: str) -> str:
    """The ``dtype`` a recipe's scripts load the models in: bf16 under an adapter, else the engine's own."""
    return "bfloat16" if adapter != Adapter.FULL else ENGINES[engine].load_dtype


def estimate_sampling_memory(
    shape: ModelShape,
    *,
    engine: str = "ddp",
    gpus: int = 1,
    adapter: str = "none",
    lora_rank: int = 16,
    per_device_batch: int = 8,
    accumulation: int = 1,
    prompt_tokens: int = 64,
    completion_tokens: int = 256,
    gradient_checkpointing: bool = True,
    reference: bool = True,
) -> MemoryEstimate:
    """Peak memory per GPU of an online-RL run (TRL's RLOO) against a reward model, by component, in bytes.

    The policy's own components are :func:`estimate_memory`'s for ``per_device_batch`` sampled answers (one row
    each) of ``prompt_tokens + completion_tokens``; its reference is the frozen copy RLOO keeps for the KL penalty
    (none with an adapter, whose reference is the adapter switched off). Beside them:

    - **reward model**: the reward stage's sequence classifier (:func:`reward_model_shape`), frozen, in the dtype the
      script loads it in (:func:`load_dtype`: 4 bytes a parameter for DDP's fp32, else 2), with the adapter's own
      weights where the reward model was trained with one; split over the GPUs where the engine splits weights;
    - **generation**: the KV cache of the answers each process samples at once (TRL samples the answers of a whole
      optimizer step, ``per_device_batch x accumulation`` per process, before its first micro-batch), in the same
      dtype; under ZeRO-3, also the policy's weights gathered whole for sampling (TRL's
      ``ds3_gather_for_generation``, on by default).
    """
    tokens = prompt_tokens + completion_tokens
    estimate = estimate_memory(
        shape,
        engine=engine,
        gpus=gpus,
        adapter=adapter,
        lora_rank=lora_rank,
        per_device_batch=per_device_batch,
        max_length=tokens,
        gradient_checkpointing=gradient_checkpointing,
        reference=reference,
        rows_per_example=1,
    )
    e = ENGINES[engine]
    frozen_bytes = 4 if load_dtype(engine, adapter) == "float32" else 2
    scorer = reward_model_shape(shape).parameters()
    adapter_weights = shape.lora_parameters(lora_rank) if adapter != Adapter.FULL else 0
    reward = frozen_bytes * scorer / (gpus if e.shards_weights else 1) + frozen_bytes * adapter_weights
    reward_note = f"frozen sequence classifier, {frozen_bytes} B/param" + _over(gpus, e.shards_weights)
    generation = _generation(shape, e, gpus, adapter, frozen_bytes, tokens, per_device_batch * accumulation)
    _add_before_overhead(estimate, {"reward model": (reward, reward_note), "generation": generation})
    return estimate


def _generation(
    shape: ModelShape, e: Engine, gpus: int, adapter: str, frozen_bytes: int, tokens: int, sequences: int
) -> tuple[float, str]:
    """(bytes, note) of sampling: the KV cache of ``sequences`` answers of ``tokens`` tokens, and under ZeRO-3 the
    policy's weights gathered whole on each GPU while it samples (TRL's ``ds3_gather_for_generation``)."""
    head_dim = shape.head_dim or shape.hidden // shape.heads
    kv_cache = 2 * shape.layers * shape.kv_heads * head_dim * frozen_bytes * tokens * sequences  # keys and values
    note = f"KV cache of {sequences} answer(s) x {tokens} tokens"
    gathered = 0.0
    if e.name == "zero3" and gpus > 1:
        gathered = _policy_weight_bytes(shape, e, adapter) * (gpus - 1) / gpus
        note += ", plus the policy's weights gathered whole for sampling"
    return kv_cache + gathered, note


def _add_before_overhead(estimate: MemoryEstimate, components: dict[str, tuple[float, str]]) -> None:
    """Add ``components`` (name -> (bytes, note)) to ``estimate``, the per-GPU overhead staying its last line."""
    overhead = estimate.components.pop("overhead")
    overhead_note = estimate.notes.pop("overhead")
    for name, (value, note) in components.items():
        estimate.components[name], estimate.notes[name] = value, note
    estimate.components["overhead"], estimate.notes["overhead"] = overhead, overhead_note


def lab_memory_estimate(shape: ModelShape, settings: TrainingSettings, on_gpu: bool) -> float:
    """Bytes the lab's own run holds: the cached fp32 model, the policy copy, gradients, AdamW, activations.

    The lab keeps fp32 weights (bf16 only as autocast on a GPU), shares the cached model as the
    reference (:func:`alignlab.models.loading.reference_view`) and trains a private fp32 copy; QLoRA trains
    on a 4-bit base TRL loads from disk instead of the copy (the cached model stays for the rest).
    """
    params = shape.parameters()
    trainable = shape.lora_parameters(settings.lora_rank) if settings.use_lora else params
    if settings.use_qlora:
        linear = shape.linear_parameters()
        policy = QLORA_WEIGHT_BYTES * linear + 2 * (params - linear)
    else:
        policy = 4 * params
    weights = 4 * params + policy + (4 * trainable if settings.use_lora else 0)  # cached model + policy (+ adapter)
    states = 12 * trainable  # gradients (4) + AdamW moments (8)
    activation_bytes = 2 if on_gpu else 4
    tokens = settings.batch_size * 2 * settings.max_length
    activations = 34 * shape.hidden * tokens * shape.layers * activation_bytes / 2
    return weights + states + activations


def bytes_text(n: float) -> str:
    """Memory as GiB, or MiB below 1 GiB."""
    return f"{n / GIB:.2f} GiB" if n >= GIB else f"{n / 2**20:.0f} MiB"
