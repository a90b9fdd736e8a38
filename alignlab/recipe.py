"""From the lab to a real run: a folder that launches TRL's own training script on a cluster.

The lab trains a 135M model for six steps; a real run trains a 7-8B model on tens of thousands
of pairs on several GPUs. :func:`build_recipe` turns what the learner settled on in the lab (the
method, beta, the loss variant, LoRA, their pairs) into that run, written by :func:`write_recipe`:

- ``train.jsonl``, ``eval.jsonl``: the pairs in TRL's format for the target model (conversational
  for a chat model, plain text for a base model, as the lab trains them);
- ``config.yaml``: the arguments of TRL's own script for the method (``trl.scripts.dpo`` for DPO),
  the lab's settings mapped and scaled for the target (see :func:`plan_run`);
- ``accelerate/*.yaml``: TRL's own launcher configs (DDP, DeepSpeed ZeRO-2/3, FSDP) for N GPUs;
- ``run.sh``: launches it (``--cpu`` tries the same recipe over gloo on N CPU processes);
- ``README.md``: what runs, the memory estimate (:func:`estimate_memory`) and the dataset mixing;
  its YAML header is also the dataset card that tells ``datasets`` which file is which split.

A method is one row of :data:`METHODS`: the TRL script it runs, the rows it trains on and the
keys it adds to ``config.yaml``; nothing else here branches on the method's name. A method of
several stages (RLHF) is a row per stage, each one TRL script with its own config file, data and
output folder, run in order by ``run.sh``: ``trl.scripts.reward`` trains a reward model on the pairs
(``config.reward.yaml`` -> ``output/reward_model``), then ``trl.scripts.rloo`` trains the policy on
the pairs' prompts against it (``config.yaml``; its memory: :func:`estimate_sampling_memory`).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
import stat
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from alignlab.methods import Method, Stage, UnknownMethodError, get_method, resolve
from alignlab.models import KNOWN_MODELS, PLAIN_PROMPT_TEMPLATE
from alignlab.presets import PreferencePair, Preset, UnpairedRow
from alignlab.training import TrainingSettings, preference_row, thumbs_row

GIB = 1024**3


class RecipeError(ValueError):
    """A recipe cannot be built as asked; the message says what to change."""


# --------------------------------------------------------------------------- target models


@dataclass(frozen=True)
class ModelShape:
    """A decoder's dimensions: enough to count its parameters and estimate its training memory."""

    name: str
    hub_id: str
    hidden: int
    layers: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    tied_embeddings: bool
    chat: bool
    family: str = "llama"
    """'llama' (gated MLP, RMSNorm, rotary: Llama, Mistral, Qwen, SmolLM) or 'gpt2'."""
    head_dim: int | None = None
    qkv_bias: bool = False
    positions: int = 0
    """Learned position embeddings (GPT-2); rotary models have none."""

    @property
    def _head_dim(self) -> int:
        return self.head_dim or self.hidden // self.heads

    def linear_shapes(self) -> list[tuple[int, int]]:
        """(in, out) of each linear layer in one decoder block: what LoRA adapts and QLoRA quantises."""
        h, i = self.hidden, self.intermediate
        if self.family == "gpt2":
            return [(h, 3 * h), (h, h), (h, i), (i, h)]
        q, kv = self.heads * self._head_dim, self.kv_heads * self._head_dim
        return [(h, q), (h, kv), (h, kv), (q, h), (h, i), (h, i), (i, h)]

    def linear_parameters(self) -> int:
        """Weights of the decoder blocks' linear layers (no embeddings, norms or biases)."""
        return self.layers * sum(a * b for a, b in self.linear_shapes())

    def parameters(self) -> int:
        """Every parameter, as ``sum(p.numel() for p in model.parameters())`` counts them."""
        h = self.hidden
        embeddings = self.vocab * h * (1 if self.tied_embeddings else 2) + self.positions * h
        if self.family == "gpt2":
            biases = sum(out for _, out in self.linear_shapes())
            norms = 2 * 2 * h  # two LayerNorms per block, weight and bias
            return embeddings + self.layers * (biases + norms) + self.linear_parameters() + 2 * h
        biases = (self.heads + 2 * self.kv_heads) * self._head_dim if self.qkv_bias else 0
        return embeddings + self.layers * (biases + 2 * h) + self.linear_parameters() + h

    def lora_parameters(self, rank: int) -> int:
        """Trainable parameters of a rank-``rank`` LoRA adapter on every linear layer (``all-linear``)."""
        return self.layers * sum(rank * (a + b) for a, b in self.linear_shapes())

    @classmethod
    def from_config(cls, config: dict[str, Any], name: str, chat: bool) -> ModelShape:
        """The shape of a transformers ``config.json`` (Llama-like or GPT-2)."""
        if config.get("model_type") == "gpt2" or "n_embd" in config:
            h = int(config["n_embd"])
            return cls(
                name=name,
                hub_id=name,
                hidden=h,
                layers=int(config["n_layer"]),
                intermediate=int(config.get("n_inner") or 4 * h),
                heads=int(config["n_head"]),
                kv_heads=int(config["n_head"]),
                vocab=int(config["vocab_size"]),
                tied_embeddings=True,
                chat=chat,
                family="gpt2",
                positions=int(config.get("n_positions", 1024)),
            )
        try:
            h = int(config["hidden_size"])
            heads = int(config["num_attention_heads"])
            return cls(
                name=name,
                hub_id=name,
                hidden=h,
                layers=int(config["num_hidden_layers"]),
                intermediate=int(config["intermediate_size"]),
                heads=heads,
                kv_heads=int(config.get("num_key_value_heads") or heads),
                vocab=int(config["vocab_size"]),
                tied_embeddings=bool(config.get("tie_word_embeddings", False)),
                chat=chat,
                head_dim=config.get("head_dim"),
                qkv_bias=bool(config.get("attention_bias", False)) or config.get("model_type") == "qwen2",
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise RecipeError(
                f"{name}: config.json lacks {exc} (a Llama-like or GPT-2 decoder is needed for the estimate)."
            ) from None


#: Target models the recipe knows by name (dimensions from each model's config.json).
KNOWN_TARGETS: dict[str, ModelShape] = {
    shape.name: shape
    for shape in (
        ModelShape("llama-3.1-8b-instruct", "meta-llama/Llama-3.1-8B-Instruct", 4096, 32, 14336, 32, 8, 128256, False, True),  # noqa: E501
        ModelShape("mistral-7b-instruct", "mistralai/Mistral-7B-Instruct-v0.3", 4096, 32, 14336, 32, 8, 32768, False, True),  # noqa: E501
        ModelShape("qwen2.5-7b-instruct", "Qwen/Qwen2.5-7B-Instruct", 3584, 28, 18944, 28, 4, 152064, False, True, qkv_bias=True),  # noqa: E501
        ModelShape("llama-3.2-3b-instruct", "meta-llama/Llama-3.2-3B-Instruct", 3072, 28, 8192, 24, 8, 128256, True, True),  # noqa: E501
        ModelShape("llama-3.2-1b-instruct", "meta-llama/Llama-3.2-1B-Instruct", 2048, 16, 8192, 32, 8, 128256, True, True),  # noqa: E501
        ModelShape("llama-3.1-70b-instruct", "meta-llama/Llama-3.1-70B-Instruct", 8192, 80, 28672, 64, 8, 128256, False, True),  # noqa: E501
        ModelShape("qwen2.5-0.5b-instruct", KNOWN_MODELS["qwen2.5-0.5b-instruct"], 896, 24, 4864, 14, 2, 151936, True, True, qkv_bias=True),  # noqa: E501
        ModelShape("smollm2-360m-instruct", KNOWN_MODELS["smollm2-360m-instruct"], 960, 32, 2560, 15, 5, 49152, True, True),  # noqa: E501
        ModelShape("smollm2-135m-instruct", KNOWN_MODELS["smollm2-135m-instruct"], 576, 30, 1536, 9, 3, 49152, True, True),  # noqa: E501
        ModelShape("gpt2", KNOWN_MODELS["gpt2"], 768, 12, 3072, 12, 12, 50257, True, False, family="gpt2", positions=1024),  # noqa: E501
    )
}  # fmt: skip
DEFAULT_TARGET = "llama-3.1-8b-instruct"


def resolve_target(spec: str) -> ModelShape:
    """A target model spec -> its shape: a name in :data:`KNOWN_TARGETS`, its Hub id, or a local directory.

    A local directory needs only ``config.json`` (and its tokenizer files for the chat template),
    so any Hub model can be targeted by downloading its config first.
    """
    spec = (spec or "").strip()
    if not spec:
        raise RecipeError("No target model given: name one of " + ", ".join(KNOWN_TARGETS) + ", or a local directory.")
    if spec in KNOWN_TARGETS:
        return KNOWN_TARGETS[spec]
    for shape in KNOWN_TARGETS.values():
        if spec.lower() == shape.hub_id.lower():
            return shape
    path = Path(spec).expanduser()
    if path.is_dir():
        config_path = path / "config.json"
        if not config_path.is_file():
            raise RecipeError(f"'{spec}' is a directory without config.json: the recipe needs the model's config.")
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RecipeError(f"'{spec}/config.json' could not be read: {exc}") from None
        return ModelShape.from_config(config, str(path.resolve()), chat=_has_chat_template(path))
    raise RecipeError(
        f"Unknown target model '{spec}'. Known: {', '.join(KNOWN_TARGETS)}; or give a local directory holding the "
        "model's config.json (e.g. `huggingface-cli download ORG/NAME config.json tokenizer_config.json "
        "--local-dir DIR`)."
    )


def _has_chat_template(directory: Path) -> bool:
    if (directory / "chat_template.jinja").is_file() or (directory / "chat_template.json").is_file():
        return True
    try:
        return bool(json.loads((directory / "tokenizer_config.json").read_text(encoding="utf-8")).get("chat_template"))
    except (OSError, ValueError):
        return False


# --------------------------------------------------------------------------- memory


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

ADAPTERS = ("none", "lora", "qlora")
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
    if engine not in ENGINES:
        raise RecipeError(f"engine must be one of {', '.join(ENGINES)} (got {engine!r}).")
    if adapter not in ADAPTERS:
        raise RecipeError(f"adapter must be one of {', '.join(ADAPTERS)} (got {adapter!r}).")
    if not isinstance(gpus, int) or gpus < 1:
        raise RecipeError(f"gpus must be a whole number of at least 1 (got {gpus!r}).")
    e = ENGINES[engine]
    n = gpus
    params = shape.parameters()
    linear = shape.linear_parameters()
    trainable = params if adapter == "none" else shape.lora_parameters(lora_rank)

    def split(value: float, sharded: bool) -> float:
        return value / n if sharded else value

    components: dict[str, float] = {}
    notes: dict[str, str] = {}
    if adapter == "none":
        components["weights"] = split(e.full_weight_bytes * params, e.shards_weights)
        notes["weights"] = f"{e.full_weight_bytes:g} B/param" + (f", split over {n}" if e.shards_weights else "")
        components["gradients"] = split(e.full_gradient_bytes * params, e.shards_gradients)
        notes["gradients"] = f"{e.full_gradient_bytes:g} B/param" + (f", split over {n}" if e.shards_gradients else "")
        components["optimizer"] = split(e.full_optimizer_bytes * params, e.shards_optimizer)
        notes["optimizer"] = f"AdamW, {e.full_optimizer_bytes:g} B/param" + (
            f", split over {n}" if e.shards_optimizer else ""
        )
        if reference:
            components["reference"] = split(2 * params, e.shards_weights)
            notes["reference"] = "frozen bf16 copy" + (f", split over {n}" if e.shards_weights else "")
    else:
        if adapter == "qlora":
            base = QLORA_WEIGHT_BYTES * linear + 2 * (params - linear)
            notes["weights"] = "frozen base: linear layers 4-bit NF4, the rest bf16"
        else:
            base = 2.0 * params
            notes["weights"] = "frozen base in bf16"
        components["weights"] = split(base, e.shards_weights) + 4 * trainable
        components["gradients"] = 4.0 * trainable
        components["optimizer"] = 8.0 * trainable
        notes["gradients"] = notes["optimizer"] = f"LoRA r={lora_rank} only ({trainable / 1e6:.1f} M params, fp32)"
        components["reference"] = 0.0
        notes["reference"] = "none: the base with the adapter switched off"
    tokens = per_device_batch * rows_per_example * max_length  # a pair: chosen and rejected rows
    per_layer = 34 * shape.hidden * tokens
    rows = f"{per_device_batch} pair(s) x 2" if rows_per_example == 2 else f"{per_device_batch} row(s)"
    if gradient_checkpointing:
        components["activations"] = 2 * shape.hidden * tokens * shape.layers + per_layer
        notes["activations"] = f"{rows} x {max_length} tokens, checkpointed"
    else:
        components["activations"] = per_layer * shape.layers
        notes["activations"] = f"{rows} x {max_length} tokens, no checkpointing"
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


def reward_model_shape(shape: ModelShape) -> ModelShape:
    """The reward model that TRL's reward script trains on ``shape``: the same backbone under a one-output score head
    (``AutoModelForSequenceClassification``, ``num_labels=1``). It has no LM head, so its embeddings count once, as a
    tied model's do; the score head (``hidden`` weights) is too small to count."""
    return replace(shape, name=f"{shape.name} (reward model)", tied_embeddings=True)


def load_dtype(engine: str, adapter: str) -> str:
    """The ``dtype`` a recipe's scripts load the models in: bf16 under an adapter, else the engine's own."""
    return "bfloat16" if adapter != "none" else ENGINES[engine].load_dtype


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
    adapter_weights = shape.lora_parameters(lora_rank) if adapter != "none" else 0
    reward = frozen_bytes * scorer / (gpus if e.shards_weights else 1) + frozen_bytes * adapter_weights
    head_dim = shape.head_dim or shape.hidden // shape.heads
    sequences = per_device_batch * accumulation
    kv_cache = 2 * shape.layers * shape.kv_heads * head_dim * frozen_bytes * tokens * sequences  # keys and values
    generation_note = f"KV cache of {sequences} answer(s) x {tokens} tokens"
    gathered = 0.0
    if engine == "zero3" and gpus > 1:  # ds3_gather_for_generation: the whole policy on each GPU while it samples
        if adapter == "qlora":
            base = QLORA_WEIGHT_BYTES * shape.linear_parameters() + 2 * (shape.parameters() - shape.linear_parameters())
        elif adapter == "lora":
            base = 2.0 * shape.parameters()
        else:
            base = e.full_weight_bytes * shape.parameters()
        gathered = base * (gpus - 1) / gpus
        generation_note += ", plus the policy's weights gathered whole for sampling"
    overhead = estimate.components.pop("overhead")
    overhead_note = estimate.notes.pop("overhead")
    estimate.components["reward model"] = reward
    estimate.notes["reward model"] = f"frozen sequence classifier, {frozen_bytes} B/param" + (
        f", split over {gpus}" if e.shards_weights else ""
    )
    estimate.components["generation"] = kv_cache + gathered
    estimate.notes["generation"] = generation_note
    estimate.components["overhead"], estimate.notes["overhead"] = overhead, overhead_note
    return estimate


def lab_memory_estimate(shape: ModelShape, settings: TrainingSettings, on_gpu: bool) -> float:
    """Bytes the lab's own run holds: the cached fp32 model, the policy copy, gradients, AdamW, activations.

    The lab keeps fp32 weights (bf16 only as autocast on a GPU), shares the cached model as the
    reference (:func:`alignlab.models.reference_view`) and trains a private fp32 copy; QLoRA trains
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


# --------------------------------------------------------------------------- methods


def preference_rows(pairs: list[PreferencePair], chat: bool, implicit_prompt: bool = False) -> list[dict[str, Any]]:
    """Pairs in TRL's preference format, as the lab trains them (``alignlab.training.to_trl_dataset``).

    Chat models: conversational rows (TRL applies the model's chat template). Base models: the
    lab's plain-text prompt, each answer after a space. ``implicit_prompt`` puts the user turn at
    the head of both conversations instead, the shape of the public sets (UltraFeedback, HH-RLHF),
    so that they can be concatenated.
    """
    if not (chat and implicit_prompt):
        return [preference_row(p, chat) for p in pairs]
    rows = []
    for p in pairs:
        user = {"role": "user", "content": p.prompt}
        rows.append(
            {
                "chosen": [user, {"role": "assistant", "content": p.chosen}],
                "rejected": [user, {"role": "assistant", "content": p.rejected}],
            }
        )
    return rows


def thumbs_rows(
    pairs: list[PreferencePair], chat: bool, implicit_prompt: bool = False, unpaired: list[UnpairedRow] | tuple = ()
) -> list[dict[str, Any]]:
    """Pairs (and thumbs rows) in TRL's unpaired preference format (``prompt``, ``completion``, ``label``), as the
    lab trains KTO (:func:`alignlab.training.to_unpaired_dataset`): each pair's chosen answer desirable, its
    rejected answer undesirable.

    The chosen rows come first, then the rejected ones, then the thumbs rows: KTO estimates its KL term by
    giving each row the answer of its neighbour in a batch (TRL rotates each batch's answers by one), and
    neighbours then answer other prompts. ``implicit_prompt`` (a mixture with the public *paired* sets, which
    TRL's KTO script unpairs itself) writes the pairs as paired rows in the public sets' shape instead.
    """
    if implicit_prompt:
        return preference_rows(pairs, chat, implicit_prompt=True)
    return (
        [thumbs_row(p.prompt, p.chosen, True, chat) for p in pairs]
        + [thumbs_row(p.prompt, p.rejected, False, chat) for p in pairs]
        + [thumbs_row(r.prompt, r.completion, r.label, chat) for r in unpaired]
    )


def prompt_rows(pairs: list[PreferencePair], chat: bool) -> list[dict[str, Any]]:
    """The pairs' distinct prompts, in order, as TRL's prompt-only rows (online RL samples its own answers), as the
    lab's RL stage trains on them (:func:`alignlab.training.to_prompt_dataset`): a conversational user turn for a
    chat model (TRL adds the generation prompt), the lab's plain-text prompt for a base model."""
    prompts = list(dict.fromkeys(p.prompt for p in pairs))
    if chat:
        return [{"prompt": [{"role": "user", "content": prompt}]} for prompt in prompts]
    return [{"prompt": PLAIN_PROMPT_TEMPLATE.format(prompt=prompt)} for prompt in prompts]


#: The unit of a stage's batch, by its registry data format: a pair, a thumbs row, or an answer it samples.
BATCH_UNITS = {"paired": "pairs", "unpaired": "rows", "prompts": "answers"}


@dataclass(frozen=True)
class RecipeMethod:
    """One training method as a recipe runs it: its data and its own config keys on a real run. Which TRL
    script runs it, and which config class, is the method registry's (:mod:`alignlab.methods`).

    A method of several stages (RLHF: a reward model, then the policy against it) is its policy stage's row with
    the earlier stages' rows in :attr:`before`; each stage is one TRL script with its own config file, data files
    and output folder, run in order by ``run.sh``.
    """

    name: str
    """The method's name in :data:`alignlab.methods.METHODS`."""
    rows: Callable[..., list[dict[str, Any]]]
    """(pairs, chat model?, implicit prompt?, thumbs rows) -> rows of the script's dataset."""
    config_fields: tuple[str, ...]
    """The keys of the method's config that carry over from the lab, as the lab sets them (the registry stage's
    ``fields_from`` and ``options``); the rest of the lab's own fields (batch, reference pre-computation) are planned
    here."""
    learning_rate_full: float
    """A real run's learning rate, full fine-tuning (the lab's is for six steps on a small model)."""
    learning_rate_adapter: float
    reference_copy: bool
    """Whether full fine-tuning keeps a frozen reference model beside the policy."""
    public_mix: bool
    """Whether the public preference sets (:data:`PUBLIC_DATASETS`) fit this method's data."""
    why: str
    takes_thumbs: bool = False
    """Whether thumbs rows (unpaired) are written to its data as they are."""
    trains: str = "policy"
    """What this stage trains: the registry stage of that product (:data:`alignlab.methods.PRODUCTS`)."""
    stage_script: str | None = None
    """TRL's script for this stage where it is not the method's: the registry names one script per method, the
    policy stage's (``trl.scripts.rloo`` for RLHF), so an earlier stage names its own (``trl.scripts.reward``)."""
    config_file: str = "config.yaml"
    data_files: tuple[str, str] = ("train.jsonl", "eval.jsonl")
    """This stage's train and eval files: the dataset's splits, in the recipe folder."""
    data_config: str = "pairs"
    """The name (before its content digest) of the dataset config that maps :attr:`data_files` to the splits."""
    output_dir: str = "output"
    inputs: dict[str, str] = field(default_factory=dict)
    """Script argument -> the product of an earlier stage, passed as the folder that stage saves it to
    (RLOO's ``reward_model_name_or_path`` <- ``reward_model``)."""
    lora_task_type: str | None = None
    """PEFT's task type for this stage's adapter where it is not a causal LM's (a reward model's: ``SEQ_CLS``, whose
    score head then trains whole beside the adapter)."""
    before: tuple[RecipeMethod, ...] = ()
    """The stages run before this one, in order."""
    no_mix: str = ""
    """Why the public sets do not fit, where :attr:`public_mix` is False."""

    @property
    def entry(self) -> Method:
        return get_method(self.name)

    @property
    def entry_stage(self) -> Stage:
        """This stage's entry in the registry (its trainer, config class, data format and fields)."""
        return self.entry.stage_of(self.trains)

    @property
    def stages(self) -> tuple[RecipeMethod, ...]:
        """Every stage's row, in the order run.sh runs them (this one, the policy's, last)."""
        return (*self.before, self)

    def lab_fields(self, settings: TrainingSettings) -> dict[str, Any]:
        """The stage's own config fields as the lab's trainer gets them (the registry's ``fields_from`` and
        ``options``), beyond those every trainer shares."""
        stage = self.entry_stage
        own = stage.fields_from(settings) if stage.fields_from is not None else {}
        return {**own, **stage.options}

    def config_keys(self, settings: TrainingSettings) -> dict[str, Any]:
        """The method's own keys in config.yaml: :attr:`config_fields`, valued as the lab's trainer gets them."""
        own = self.lab_fields(settings)
        return {key: own[key] for key in self.config_fields if key in own}

    def lab_batch(self, settings: TrainingSettings) -> int:
        """The lab's batch in this stage's rows (:attr:`unit`): its trainer's per-device batch, the lab running on one
        device (KTO: 2 rows per pair; RLOO: each prompt's sampled answers), else the settings' pairs per step."""
        return int(self.lab_fields(settings).get("per_device_train_batch_size", settings.batch_size))

    def batch_multiple(self, settings: TrainingSettings) -> int:
        """What the global batch must be a multiple of: RLOO's whole groups of ``num_generations`` answers."""
        return int(self.lab_fields(settings).get("num_generations", 1))

    def lab_learning_rate(self, settings: TrainingSettings) -> float:
        """The rate the lab trains this stage at: the stage's own (the reward model's) or the settings'."""
        return float(self.entry_stage.options.get("learning_rate", settings.learning_rate))

    @property
    def samples(self) -> bool:
        """Whether the stage samples its own answers to prompts (online RL) rather than reading given ones."""
        return self.entry_stage.data == "prompts"

    @property
    def script(self) -> str:
        """The module ``python -m`` runs: TRL's own script, as the registry names it."""
        return self.stage_script or str(self.entry.script)

    @property
    def trl_command(self) -> str:
        """``trl <command>`` runs the same script."""
        return self.script.rsplit(".", 1)[-1]

    @property
    def config_class(self) -> str:
        """TRL's config dataclass whose fields the method's keys are (for the README)."""
        return self.entry_stage.config.rsplit(".", 1)[-1]

    def config_class_fields(self) -> set[str]:
        """The fields TRL's config class for this stage takes (RLOO has no ``max_length``, for one)."""
        import dataclasses

        return {f.name for f in dataclasses.fields(resolve(self.entry_stage.config))}

    @property
    def title(self) -> str:
        return self.entry.title

    @property
    def product(self) -> str:
        """What the stage trains, in words: 'policy', 'reward model'."""
        return self.trains.replace("_", " ")

    @property
    def rows_per_pair(self) -> int:
        """Dataset rows per pair: a batch of the lab's pairs is this many of the script's rows."""
        return self.entry_stage.rows_per_pair

    @property
    def unit(self) -> str:
        return BATCH_UNITS[self.entry_stage.data]

    def estimate(
        self,
        shape: ModelShape,
        *,
        engine: str,
        gpus: int,
        adapter: str,
        lora_rank: int,
        per_device_batch: int,
        global_batch: int,
        max_length: int,
        gradient_checkpointing: bool = True,
        prompt_tokens: int = 0,
        completion_tokens: int | None = None,
    ) -> MemoryEstimate:
        """This stage's memory per GPU: :func:`estimate_memory` for a stage that reads pairs (a reward model's on the
        classifier's shape, with no reference), :func:`estimate_sampling_memory` for one that samples answers."""
        common = dict(engine=engine, gpus=gpus, adapter=adapter, lora_rank=lora_rank, per_device_batch=per_device_batch)
        if self.samples:
            return estimate_sampling_memory(
                shape,
                **common,
                accumulation=max(1, math.ceil(global_batch / (per_device_batch * gpus))),
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens if completion_tokens is not None else max_length,
                gradient_checkpointing=gradient_checkpointing,
                reference=self.reference_copy,
            )
        scored = reward_model_shape(shape) if self.trains == "reward_model" else shape
        return estimate_memory(
            scored,
            **common,
            max_length=max_length,
            gradient_checkpointing=gradient_checkpointing,
            reference=self.reference_copy,
        )


_DPO_RECIPE = RecipeMethod(
    name="dpo",
    rows=lambda pairs, chat, implicit, unpaired=(): preference_rows(pairs, chat, implicit),
    config_fields=("beta", "loss_type", "loss_weights", "label_smoothing"),
    learning_rate_full=5e-7,
    learning_rate_adapter=5e-6,
    reference_copy=True,
    public_mix=True,
    why="Direct Preference Optimization on (prompt, chosen, rejected) pairs, with the lab's loss variant.",
)

#: RLHF's first stage: a reward model on the pairs (the rows DPO's recipe writes), saved for the RL stage.
_REWARD_MODEL_RECIPE = RecipeMethod(
    name="rlhf",
    trains="reward_model",
    stage_script="trl.scripts.reward",
    rows=lambda pairs, chat, implicit, unpaired=(): preference_rows(pairs, chat, implicit),
    config_fields=(),  # its batch is planned; its rate is the stage's own (lab: 5e-5)
    learning_rate_full=1e-5,
    learning_rate_adapter=1e-4,
    reference_copy=False,
    public_mix=False,
    config_file="config.reward.yaml",
    output_dir="output/reward_model",
    lora_task_type="SEQ_CLS",
    why="a reward model (the target's backbone under a one-output score head) learns to score each pair's chosen "
    "answer above its rejected one.",
)

#: Methods a recipe can run, by their registry name; the script each runs is the registry's. DPO's rates: 5e-7
#: full (Zephyr-7B-beta's DPO recipe), 5e-6 LoRA (the LoRA example in TRL's own dpo.py). KTO's: 5e-7 full (the
#: examples in TRL's own kto.py), 5e-6 for an adapter as for DPO. RLHF's reward model: 1e-5 full, 1e-4 LoRA (TRL's
#: reward-modeling examples); its RL stage: 1e-6 full (RLOOConfig's own default), 1e-5 for an adapter (ten times, as
#: for DPO). Methods TRL ships no script for (ORPO and SimPO live in ``trl.experimental`` in TRL 1.16) have no
#: recipe; the error says so.
METHODS: dict[str, RecipeMethod] = {
    "dpo": _DPO_RECIPE,
    "ipo": replace(
        _DPO_RECIPE,
        name="ipo",
        why="IPO: DPO's script with `loss_type: [ipo]`, a squared loss that holds the length-normalised margin near "
        "1/(2 beta).",
    ),
    "kto": RecipeMethod(
        name="kto",
        rows=thumbs_rows,
        # Desirable and undesirable rows come in equal numbers from pairs, so TRL's default weights (1.0) balance.
        config_fields=("beta",),
        learning_rate_full=5e-7,
        learning_rate_adapter=5e-6,
        reference_copy=True,
        public_mix=True,
        takes_thumbs=True,
        why="Kahneman-Tversky Optimization on thumbs-up/down answers (prompt, completion, label): each pair's chosen "
        "answer desirable, its rejected answer undesirable.",
    ),
    "rlhf": RecipeMethod(
        name="rlhf",
        before=(_REWARD_MODEL_RECIPE,),
        rows=lambda pairs, chat, implicit, unpaired=(): prompt_rows(pairs, chat),
        # The answers' length (max_completion_length) is planned: the lab's 24 tokens keep a CPU step short.
        config_fields=("beta", "num_generations", "disable_dropout"),
        learning_rate_full=1e-6,
        learning_rate_adapter=1e-5,
        reference_copy=True,
        public_mix=False,
        no_mix="its RL stage samples answers to prompts, and the public sets hold conversations, not prompt rows",
        data_files=("train_prompts.jsonl", "eval_prompts.jsonl"),
        data_config="prompts",
        inputs={"reward_model_name_or_path": "reward_model"},
        why="online RL (REINFORCE leave-one-out): the policy samples answers to the pairs' prompts, the reward model "
        "scores them, and a KL penalty (beta) holds the policy near the reference.",
    ),
}


def recipe_method(name: str) -> RecipeMethod:
    """The recipe row of a registry method; a method without one raises a :class:`RecipeError` saying why."""
    if name in METHODS:
        return METHODS[name]
    try:
        entry = get_method(name)
    except UnknownMethodError as exc:
        raise RecipeError(str(exc)) from None
    have = ", ".join(METHODS[n].title for n in METHODS)
    if entry.script is None:
        why = (
            f"TRL 1.16 ships no training script for {entry.title} (its trainer, `{entry.stage.trainer}`, lives in "
            "`trl.experimental`)"
        )
    else:
        why = f"{entry.title}'s recipe is not written yet"
    raise RecipeError(f"{why}. Recipes exist for {have}.")


# --------------------------------------------------------------------------- public datasets


@dataclass(frozen=True)
class PublicDataset:
    name: str
    hub_id: str
    rows: int
    """Training rows (approximate), for the README's share of the mixture."""
    what: str


PUBLIC_DATASETS: dict[str, PublicDataset] = {
    "ultrafeedback": PublicDataset(
        "ultrafeedback",
        "trl-lib/ultrafeedback_binarized",
        62_135,
        "UltraFeedback, binarised: GPT-4-rated answers to ~62k diverse prompts (the Zephyr recipe's data)",
    ),
    "hh-rlhf": PublicDataset(
        "hh-rlhf",
        "trl-lib/hh-rlhf-helpful-base",
        43_835,
        "Anthropic HH-RLHF, helpful-base split: human preferences between two assistant replies",
    ),
}


# --------------------------------------------------------------------------- the plan


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
    method: RecipeMethod,
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
    """Map the lab's settings onto the target, for one stage of the method (``method``: the stage's row).

    ``scale='target'`` (the default) makes it a real run: the method's usual learning rate for full
    fine-tuning or an adapter, a cosine schedule with 10% warm-up, gradient checkpointing, bf16,
    the largest per-GPU batch that fits the memory estimate, and gradient accumulation making up
    the global batch: the lab's batch on the user's pairs alone (for the same number of passes
    over them as the lab made), 64 pairs for one epoch over a public mixture.
    ``scale='lab'`` repeats the lab's run exactly (its learning rate, constant schedule, steps,
    batch, fp32 weights): the way to check the recipe against the lab, as the tests do.

    ``n_train`` counts what the stage draws its batch from: pairs, or for online RL the distinct prompts (every
    stage runs the lab's steps, so each makes as many passes over its data as the lab's stage made). A stage that
    samples answers (RLOO) counts its batch in answers, a multiple of ``num_generations``, and samples them
    ``max_completion_length`` tokens long: the lab's short answers at ``scale='lab'``; on a real run whole answers,
    up to the lab's ``max_length`` (the length the reward model learnt to score).
    """
    reasons: dict[str, str] = {}
    lab_batch = method.lab_batch(settings)  # in the script's rows (KTO: 2 per pair; RLOO: answers)
    multiple = method.batch_multiple(settings)
    eval_batch = multiple if multiple > 1 else None
    lab_completion = method.lab_fields(settings).get("max_completion_length") if method.samples else None
    if scale == "lab":
        if lab_batch % gpus:
            raise RecipeError(
                f"The lab's batch of {lab_batch} {method.unit} cannot be split evenly over {gpus} GPUs; "
                "choose a GPU count that divides it, or scale the recipe for the target."
            )
        steps = settings.steps if settings.steps is not None else -1
        epochs = float(settings.epochs) if settings.epochs is not None else 1.0
        reasons["everything"] = "as in the lab (scale='lab'): the same run, to check the recipe against the lab"
        return RunPlan(
            learning_rate=learning_rate or method.lab_learning_rate(settings),
            lr_scheduler_type="constant",
            warmup_ratio=0.0,
            max_steps=steps,
            num_train_epochs=epochs,
            global_batch=lab_batch,
            per_device_batch=lab_batch // gpus,
            gradient_accumulation=1,
            max_length=settings.max_length,
            gradient_checkpointing=False,
            bf16=True,
            dtype="float32",
            reasons=reasons,
            max_completion_length=lab_completion,
            prompt_tokens=prompt_tokens,
            per_device_eval_batch=eval_batch,
            batch_multiple=multiple,
        )
    if scale != "target":
        raise RecipeError(f"scale must be 'target' or 'lab' (got {scale!r}).")

    lr = learning_rate or (method.learning_rate_adapter if adapter != "none" else method.learning_rate_full)
    reasons["learning_rate"] = (
        "given"
        if learning_rate
        else f"the usual rate for {'an adapter' if adapter != 'none' else 'full fine-tuning'} "
        f"on a real run; the lab's {method.lab_learning_rate(settings):g} is for a few steps on a small model"
    )
    if mixed:
        global_batch, epochs = GLOBAL_BATCH_MIXED, 1.0
        reasons["global_batch"] = f"64 {method.unit} per step, one pass over the mixture (the usual DPO run)"
        max_length = max(settings.max_length, 1024)
        reasons["max_length"] = "public sets have long answers: at least 1024 tokens"
    else:
        global_batch = max(lab_batch, 1)
        lab_items = settings.stage_steps(n_train) * settings.batch_size
        epochs = round(max(lab_items / max(n_train, 1), 0.1), 2)
        reasons["global_batch"] = "the lab's batch, on the lab's pairs"
        if method.rows_per_pair > 1:
            reasons["global_batch"] += f" ({method.rows_per_pair} rows per pair)"
        if multiple > 1:
            reasons["global_batch"] = (
                f"the lab's batch: {settings.batch_size} prompts x {multiple} sampled answers (num_generations)"
            )
        what = "prompts" if method.samples else "pairs"
        reasons["epochs"] = f"{epochs:g} passes over the {what}, as many as the lab's run made"
        max_length = settings.max_length
        reasons["max_length"] = "the lab's"
    if global_batch < gpus:
        global_batch = gpus
        reasons["global_batch"] += f" (raised to {gpus}: one row per GPU at least)"
    completion = None
    if method.samples:
        completion = max_length
        reasons["max_completion_length"] = (
            f"whole answers, up to the lab's max_length (the length the reward model learnt to score); the lab samples "
            f"{lab_completion} tokens to keep a CPU step short"
        )

    def accumulation_for(per_device: int) -> int:
        """Gradient accumulation making up the global batch, rounded up to whole groups of answers (RLOO)."""
        accumulation = max(1, math.ceil(global_batch / (per_device * gpus)))
        while (per_device * gpus * accumulation) % multiple:
            accumulation += 1
        return accumulation

    per_device = 1
    for candidate in PER_DEVICE_CHOICES:
        if candidate * gpus > global_batch:
            continue
        estimate = method.estimate(
            shape,
            engine=engine,
            gpus=gpus,
            adapter=adapter,
            lora_rank=settings.lora_rank,
            per_device_batch=candidate,
            global_batch=candidate * gpus * accumulation_for(candidate),
            max_length=max_length,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion,
        )
        if estimate.fits(gpu_memory_gib * 0.9):
            per_device = candidate
            break
    accumulation = accumulation_for(per_device)
    reasons["per_device_batch"] = (
        f"the largest of {', '.join(map(str, PER_DEVICE_CHOICES))} whose estimate fits 90% of {gpu_memory_gib:g} GiB"
    )
    reasons["gradient_accumulation"] = (
        f"{per_device} x {gpus} GPUs x {accumulation} = {per_device * gpus * accumulation}"
    )
    dtype = load_dtype(engine, adapter)
    reasons["dtype"] = (
        "frozen base in bf16"
        if adapter != "none"
        else f"{ENGINES[engine].title} keeps its own master weights"
        if dtype == "bfloat16"
        else "fp32 weights under bf16 autocast: pure-bf16 AdamW would round away updates this small"
    )
    return RunPlan(
        learning_rate=lr,
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
        per_device_eval_batch=eval_batch,
        batch_multiple=multiple,
    )


# --------------------------------------------------------------------------- the recipe


@dataclass
class StageRecipe:
    """One stage of a recipe: one TRL script run, with its plan, memory estimate and config."""

    method: RecipeMethod
    """The stage's row (for a method of one stage, the method's own)."""
    plan: RunPlan
    memory: MemoryEstimate
    config: dict[str, Any]
    dataset_config: str
    """The dataset config (in README.md's header) that maps the stage's data files to the splits."""

    def estimate(self, shape: ModelShape, engine: str, gpus: int, adapter: str, lora_rank: int) -> MemoryEstimate:
        """This stage's estimate on another engine or adapter, one row per GPU, the rest of its plan kept."""
        return self.method.estimate(
            shape,
            engine=engine,
            gpus=gpus,
            adapter=adapter,
            lora_rank=lora_rank,
            per_device_batch=1,
            global_batch=self.plan.global_batch,
            max_length=self.plan.max_length,
            prompt_tokens=self.plan.prompt_tokens,
            completion_tokens=self.plan.max_completion_length,
        )


@dataclass
class Recipe:
    """Everything a recipe folder holds, as text, plus what it was built from."""

    files: dict[str, str]
    method: RecipeMethod
    shape: ModelShape
    engine: str
    gpus: int
    adapter: str
    stages: list[StageRecipe]
    """Every stage, in the order run.sh runs them; the last trains the policy."""
    lora_rank: int = 16
    gpu_memory_gib: float = 80.0

    @property
    def plan(self) -> RunPlan:
        """The policy stage's plan."""
        return self.stages[-1].plan

    @property
    def memory(self) -> MemoryEstimate:
        """The policy stage's memory estimate (:attr:`stages` holds each stage's)."""
        return self.stages[-1].memory

    @property
    def config(self) -> dict[str, Any]:
        """The policy stage's config.yaml."""
        return self.stages[-1].config

    def fits(self) -> bool:
        """Whether every stage's estimate fits the GPUs."""
        return all(s.memory.fits(self.gpu_memory_gib) for s in self.stages)

    def summary(self) -> str:
        """Two lines for a terminal or the app (three when the run does not fit: what would)."""
        fits = self.fits()
        text = (
            f"{self.method.title} on {self.shape.name} ({count_text(self.shape.parameters())} params), "
            f"{self.gpus} GPU(s), {ENGINES[self.engine].title}, "
            f"{'full fine-tuning' if self.adapter == 'none' else self.adapter.upper()}.\n"
        )
        verdict = f"{'fits' if fits else 'does NOT fit'} in {self.gpu_memory_gib:g} GiB"
        if len(self.stages) == 1:
            text += (
                f"Estimated {self.memory.total / GIB:.1f} GiB per GPU ({verdict}); batch {self.plan.per_device_batch} "
                f"x {self.gpus} x {self.plan.gradient_accumulation} accumulation."
            )
        else:
            text += (
                "Estimated per GPU, stage by stage: "
                + "; ".join(
                    f"{i}. {s.method.product} {s.memory.total / GIB:.1f} GiB (batch {s.plan.per_device_batch} x "
                    f"{self.gpus} x {s.plan.gradient_accumulation} accumulation)"
                    for i, s in enumerate(self.stages, 1)
                )
                + f" ({verdict})."
            )
        if not fits:
            fitting: dict[str, list[str]] = {}
            for engine, adapter, estimate in self.alternatives():
                if estimate.fits(self.gpu_memory_gib):
                    fitting.setdefault(adapter, []).append(engine)
            options = "; ".join(f"{adapter} with {'/'.join(engines)}" for adapter, engines in fitting.items())
            text += (
                f"\nAt {self.gpus} GPU(s) these would fit (--engine, --lora/--qlora): {options or 'none, add GPUs'}."
            )
        return text

    def alternatives(self) -> list[tuple[str, str, MemoryEstimate]]:
        """Every engine x adapter at this GPU count, one row per GPU: what else would fit (for a method of several
        stages, the stage that needs the most)."""
        return [
            (
                name,
                {"none": "full", "lora": "LoRA", "qlora": "QLoRA"}[adapter],
                max(
                    (s.estimate(self.shape, name, self.gpus, adapter, self.lora_rank) for s in self.stages),
                    key=lambda estimate: estimate.total,
                ),
            )
            for name in ENGINES
            for adapter in ADAPTERS
        ]


def count_text(n: float) -> str:
    """A parameter count as people say it: 8.03 B, 135 M, 107 k."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            value = n / size
            return f"{value:.3g} {unit}" if value < 100 else f"{value:.0f} {unit}"
    return f"{n:.0f}"


def bytes_text(n: float) -> str:
    """Memory as GiB, or MiB below 1 GiB."""
    return f"{n / GIB:.2f} GiB" if n >= GIB else f"{n / 2**20:.0f} MiB"


def build_recipe(
    preset: Preset,
    settings: TrainingSettings,
    *,
    method: str | None = None,
    target: str = DEFAULT_TARGET,
    gpus: int = 1,
    engine: str = "ddp",
    adapter: str | None = None,
    mix: list[str] | None = None,
    user_repeat: int = 1,
    scale: str = "target",
    gpu_memory_gib: float = 80.0,
    learning_rate: float | None = None,
) -> Recipe:
    """A recipe for ``preset``'s pairs trained as ``settings`` say, on ``target``, on ``gpus`` GPUs.

    ``adapter`` is 'none', 'lora' or 'qlora' (default: LoRA when ``settings.use_lora``); ``mix``
    names public sets (:data:`PUBLIC_DATASETS`) to train on with the user's pairs, which then
    appear ``user_repeat`` times. ``learning_rate`` is the real run's rate for the policy (the last stage); a
    method's earlier stages (RLHF's reward model) take their own usual rates.
    """
    m = recipe_method(method or settings.method_entry.name)
    if engine not in ENGINES:
        raise RecipeError(f"engine must be one of {', '.join(ENGINES)} (got {engine!r}).")
    if not isinstance(gpus, int) or isinstance(gpus, bool) or not 1 <= gpus <= 1024:
        raise RecipeError(f"gpus must be a whole number from 1 to 1024 (got {gpus!r}).")
    if not 1 <= gpu_memory_gib <= 4096:
        raise RecipeError(f"GPU memory must be between 1 and 4096 GiB (got {gpu_memory_gib!r}).")
    adapter = adapter or ("qlora" if settings.use_qlora else "lora" if settings.use_lora else "none")
    if adapter not in ADAPTERS:
        raise RecipeError(f"adapter must be one of {', '.join(ADAPTERS)} (got {adapter!r}).")
    thumbs = list(preset.unpaired)
    if thumbs and not m.takes_thumbs:
        takers = ", ".join(r.title for r in METHODS.values() if r.takes_thumbs)
        raise RecipeError(
            f"The data has {len(thumbs)} thumbs rows, which {m.title} cannot train on (it needs pairs): its recipe "
            f"would drop them. Export a recipe for a method that takes thumbs rows ({takers}), or remove them."
        )
    if not preset.pairs and not thumbs:
        raise RecipeError("There are no training pairs to export: add at least one pair.")
    if not isinstance(user_repeat, int) or not 1 <= user_repeat <= 1000:
        raise RecipeError(f"user_repeat must be a whole number from 1 to 1000 (got {user_repeat!r}).")
    mix = list(dict.fromkeys(mix or []))
    unknown = [name for name in mix if name not in PUBLIC_DATASETS]
    if unknown:
        raise RecipeError(f"Unknown public dataset(s) {', '.join(unknown)}; choose from {', '.join(PUBLIC_DATASETS)}.")
    shape = resolve_target(target)
    if mix and thumbs:
        raise RecipeError(
            "The public sets are pairs, and thumbs rows cannot be written in their shape: export without --mix, or "
            "without the thumbs rows."
        )
    if mix and not m.public_mix:
        because = f": {m.no_mix}" if m.no_mix else ""
        raise RecipeError(
            f"The public preference sets do not fit {m.name.upper()}'s data{because}; export without --mix."
        )
    if mix and not shape.chat:
        raise RecipeError(
            f"{shape.name} has no chat template, but the public sets are conversations: "
            "mix them only into a chat model's recipe."
        )
    # A byte-level tokenizer needs no more tokens than a text's UTF-8 bytes: a bound on a sampled sequence's prompt.
    prompt_tokens = max((len(p.prompt.encode("utf-8")) for p in [*preset.pairs, *preset.heldout_pairs]), default=0)
    files: dict[str, str] = {}
    stages: list[StageRecipe] = []
    saved_to: dict[str, str] = {}  # product -> the folder its stage saves it to, for the stages after it
    for stage in m.stages:
        train_rows = stage.rows(preset.pairs, shape.chat, bool(mix), thumbs)
        train_file, eval_file = stage.data_files
        files[train_file] = _jsonl(train_rows * user_repeat)
        files[eval_file] = _jsonl(stage.rows(preset.heldout_pairs, shape.chat, bool(mix)))
        plan = plan_run(
            settings,
            stage,
            shape,
            n_train=len(train_rows)
            if stage.samples
            else len(preset.pairs) + math.ceil(len(thumbs) / stage.rows_per_pair),
            gpus=gpus,
            engine=engine,
            adapter=adapter,
            mixed=bool(mix),
            scale=scale,
            gpu_memory_gib=gpu_memory_gib,
            learning_rate=learning_rate if stage is m else None,
            prompt_tokens=prompt_tokens if stage.samples else 0,
        )
        memory = stage.estimate(
            shape,
            engine=engine,
            gpus=gpus,
            adapter=adapter,
            lora_rank=settings.lora_rank,
            per_device_batch=plan.per_device_batch,
            global_batch=plan.global_batch,
            max_length=plan.max_length,
            gradient_checkpointing=plan.gradient_checkpointing,
            prompt_tokens=plan.prompt_tokens,
            completion_tokens=plan.max_completion_length,
        )
        # `datasets` caches a folder's splits under its folder and config names only, not its files' content:
        # a config named after the content keeps a re-exported folder from reading the old rows' cache.
        digest = hashlib.sha256((files[train_file] + files[eval_file]).encode()).hexdigest()[:12]
        dataset_config = f"{stage.data_config}-{digest}"
        config = _config(
            settings,
            stage,
            shape,
            plan,
            adapter,
            engine,
            mix,
            has_eval=bool(preset.heldout_pairs),
            dataset_config=dataset_config if stages else None,  # the first stage's is the folder's default
            inputs={argument: saved_to[product] for argument, product in stage.inputs.items()},
        )
        saved_to[stage.trains] = stage.output_dir
        files[stage.config_file] = _yaml_text(config, _config_header(stage, shape, len(stages) + 1, len(m.stages)))
        stages.append(StageRecipe(stage, plan, memory, config, dataset_config))
    files["run.sh"] = _run_sh(stages, engine, gpus, adapter, mixed=bool(mix))
    for name, e in ENGINES.items():
        files[f"accelerate/{name}.yaml"] = _yaml_text(_accelerate_config(e, gpus), f"# {e.title}: {e.note}.\n")
    recipe = Recipe(
        files=files,
        method=m,
        shape=shape,
        engine=engine,
        gpus=gpus,
        adapter=adapter,
        stages=stages,
        lora_rank=settings.lora_rank,
        gpu_memory_gib=gpu_memory_gib,
    )
    recipe.files["README.md"] = _readme(recipe, preset, settings, mix, user_repeat, scale)
    return recipe


def _config(
    settings: TrainingSettings,
    method: RecipeMethod,
    shape: ModelShape,
    plan: RunPlan,
    adapter: str,
    engine: str,
    mix: list[str],
    has_eval: bool,
    dataset_config: str | None = None,
    inputs: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A stage's config file: TRL's script arguments (ScriptArguments, the stage's config, ModelConfig).

    ``dataset_config``: the folder's dataset config holding the stage's data, where it is not the default (the
    first stage's); ``inputs``: script arguments naming the folders earlier stages saved their products to.
    """
    config: dict[str, Any] = {"model_name_or_path": shape.hub_id, "dtype": plan.dtype}
    config.update(inputs or {})
    if mix:
        # A mixture: TRL's `datasets` list, concatenated (paths relative to the recipe folder).
        config["datasets"] = [{"path": "json", "data_files": method.data_files[0], "split": "train"}] + [
            {"path": PUBLIC_DATASETS[name].hub_id, "split": "train", "columns": ["chosen", "rejected"]} for name in mix
        ]
        has_eval = False  # TRL's script takes an eval split only from `dataset_name` or a random split
    else:
        # The recipe folder is the dataset: README.md's YAML header maps train.jsonl and eval.jsonl to
        # the train and test splits. `datasets` needs the folder's absolute path (with "." it fails),
        # which only the launch knows: run.sh passes `--dataset_name <this folder>`.
        if dataset_config:
            config["dataset_config"] = dataset_config
        config["dataset_train_split"] = "train"
        config["dataset_test_split"] = "test"
    config.update(method.config_keys(settings))
    training = {
        "learning_rate": plan.learning_rate,
        "lr_scheduler_type": plan.lr_scheduler_type,
        "warmup_steps": plan.warmup_ratio,  # transformers 5: a float below 1 is a ratio of all steps
        "num_train_epochs": plan.num_train_epochs,
        "max_steps": plan.max_steps,
        "per_device_train_batch_size": plan.per_device_batch,
        "per_device_eval_batch_size": plan.per_device_eval_batch or plan.per_device_batch,
        "gradient_accumulation_steps": plan.gradient_accumulation,
        "max_length": plan.max_length,
        "max_completion_length": plan.max_completion_length,
        "gradient_checkpointing": plan.gradient_checkpointing,
        "bf16": plan.bf16,
        "seed": settings.seed,
        "data_seed": settings.seed,
        "logging_steps": 1,
        "save_strategy": "steps",
        "save_steps": 500,
        "save_total_limit": 2,
        "eval_strategy": "steps" if has_eval else "no",
        "report_to": "none",
        "output_dir": method.output_dir,
    }
    # Only what the stage's TRL config takes: RLOO has no max_length (its lengths are the prompt's and the answer's).
    accepted = method.config_class_fields()
    config.update({key: value for key, value in training.items() if key in accepted and value is not None})
    if has_eval:
        config["eval_steps"] = 50
    if adapter != "none":
        config.update(
            {
                "use_peft": True,
                "lora_r": settings.lora_rank,
                "lora_alpha": 2 * settings.lora_rank,
                "lora_dropout": 0.0,
                "lora_target_modules": "all-linear",
            }
        )
        if method.lora_task_type:
            config["lora_task_type"] = method.lora_task_type
    if adapter == "qlora":
        config.update({"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "use_bnb_nested_quant": True})
        if ENGINES[engine].shards_weights:
            config["bnb_4bit_quant_storage"] = "bfloat16"  # lets ZeRO-3/FSDP shard the 4-bit weights
    return config


def _config_header(method: RecipeMethod, shape: ModelShape, number: int, stages: int) -> str:
    train, evaluate = method.data_files
    stage_line = (
        f"# Stage {number} of {stages}: the {method.product}, written to {method.output_dir}/. run.sh runs the stages "
        "in order.\n"
        if stages > 1
        else ""
    )
    return (
        stage_line + f"# Arguments of TRL's own `{method.script}` "
        f"(also `trl {method.trl_command} --config {method.config_file}`).\n"
        f"# Target: {shape.name}. Written by AlignLab; see README.md for why each value is what it is.\n"
        "# Command-line arguments override these. run.sh adds `--dataset_name <this folder>` (the folder is the\n"
        f"# dataset: README.md's header maps {train}/{evaluate} to its splits) and the batch for N processes.\n"
    )


def _jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def _yaml_text(data: dict[str, Any], header: str = "") -> str:
    import yaml

    return header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)


def _accelerate_config(engine: Engine, gpus: int) -> dict[str, Any]:
    """TRL's own launcher config for the engine (shipped in ``trl/accelerate_configs``), sized for ``gpus``."""
    from importlib.resources import files

    import yaml

    text = (files("trl") / "accelerate_configs" / engine.accelerate_config).read_text(encoding="utf-8")
    config = yaml.safe_load(text)
    config["num_processes"] = gpus
    return config


# --------------------------------------------------------------------------- run.sh

_RUN_SH_HEAD = r"""#!/usr/bin/env bash
# Launch this recipe: {what} under accelerate (DDP, DeepSpeed or FSDP),
# or, with --cpu, under torchrun over gloo on CPU processes (the same recipe, tried small).
#
#   ./run.sh [--processes N] [--cpu] [--model SPEC] [--max-steps K] [--engine E] [--dry-run] [-- ARGS]
#
#   --processes N   processes (GPUs) to launch; default {gpus}. The global batch stays {batches} per
#                   step: per-process batch and gradient accumulation are recomputed for N.
#   --cpu           run on CPU processes over gloo (fp32, no 4-bit), whatever engine the recipe targets
#   --model SPEC    train this model instead of the config's model (a Hub id or a local directory)
#   --max-steps K   stop after K optimizer steps (a trial run){each}
#   --engine E      launch with accelerate/E.yaml instead of accelerate/{engine}.yaml
#   --dry-run       print the launch command{s} and stop
#   -- ARGS         anything after -- goes to {scripts} (e.g. -- --learning_rate 1e-6)
#
{stage_lines}# PYTHON picks the interpreter (default: python3). The run writes to output/ (checkpoints with
# trainer_state.json, the final model) and its log to output/train.log.
"""

_RUN_SH_BODY = r"""set -euo pipefail
HERE="$(cd "$(dirname "${{BASH_SOURCE[0]}}")" && pwd)"
cd "$HERE"
PYTHON="${{PYTHON:-python3}}"

GPUS={gpus}
ENGINE={engine}
PROCESSES=$GPUS
CPU=0
DRY_RUN=0
EXTRA=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --processes) PROCESSES="$2"; shift 2 ;;
        --cpu) CPU=1; shift ;;
        --model) EXTRA+=(--model_name_or_path "$2"); shift 2 ;;
        --max-steps) EXTRA+=(--max_steps "$2"); shift 2 ;;
        --engine) ENGINE="$2"; shift 2 ;;
        --dry-run) DRY_RUN=1; shift ;;
        --) shift; EXTRA+=("$@"); break ;;
        -h|--help) sed -n '2,{help_end}p' "$0"; exit 0 ;;
        *) echo "run.sh: unknown option '$1' (see ./run.sh --help)" >&2; exit 2 ;;
    esac
done
if ! [[ "$PROCESSES" =~ ^[1-9][0-9]*$ ]]; then
    echo "run.sh: --processes needs a whole number of at least 1 (got '$PROCESSES')" >&2; exit 2
fi
if [[ ! -f "accelerate/$ENGINE.yaml" ]]; then
    echo "run.sh: no launcher config accelerate/$ENGINE.yaml (choose ddp, zero2, zero3 or fsdp)" >&2; exit 2
fi

export TOKENIZERS_PARALLELISM=false
{offline}# --cpu: gloo on CPU, fp32 weights, no bf16 autocast{qlora_note}. TRL's script runs as `python -m` runs
# it, and each process ends at once when the script ends its run (Trainer.end, called after the model is
# saved), or else when the script returns: releasing the DDP model can deadlock with gloo's worker threads
# once the other process has gone (seen: a process stuck in ~ProcessGroupGloo as the script's main()
# returned, and at interpreter teardown under load).
RUN_THEN_EXIT='import os, runpy, sys
import accelerate
module = sys.argv.pop(1)
sys.argv[0] = module
def exit_now():
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
end_training = accelerate.Accelerator.end_training
def end_training_then_exit(self):
    end_training(self)
    exit_now()
accelerate.Accelerator.end_training = end_training_then_exit
runpy.run_module(module, run_name="__main__", alter_sys=True)
exit_now()'

# launch SCRIPT CONFIG UNIT GLOBAL_BATCH PER_DEVICE MULTIPLE EVAL_BATCH [ARGS...]: one TRL script on $PROCESSES
# processes, keeping GLOBAL_BATCH rows (UNIT) per optimizer step: the largest per-process batch (up to
# PER_DEVICE) that divides the share of each process, the rest as gradient accumulation. A global batch that
# does not split over the processes grows to one that does, a multiple of MULTIPLE (RLOO: whole groups of
# answers). EVAL_BATCH: the per-process eval batch (0: the training batch). ARGS go to the script.
launch() {{
    local script="$1" config="$2" unit="$3" global_batch="$4" per_device="$5" multiple="$6"
    local eval_batch="$7"
    shift 7
    local batch accum share
    if (( global_batch % PROCESSES == 0 )); then
        share=$(( global_batch / PROCESSES ))
        batch=$(( per_device < share ? per_device : share ))
        while (( share % batch != 0 )); do batch=$(( batch - 1 )); done
        accum=$(( share / batch ))
    else
        batch=$per_device
        accum=$(( (global_batch + batch * PROCESSES - 1) / (batch * PROCESSES) ))
        while (( batch * PROCESSES * accum % multiple != 0 )); do accum=$(( accum + 1 )); done
        echo "run.sh: $global_batch $unit do not split over $PROCESSES processes;" \
             "the global batch becomes $(( batch * PROCESSES * accum ))" >&2
    fi
    (( eval_batch > 0 )) || eval_batch=$batch
    local args=(--config "$config" "$@" --per_device_train_batch_size "$batch"
                --per_device_eval_batch_size "$eval_batch" --gradient_accumulation_steps "$accum")
    local cmd
    if (( CPU )); then
        cmd=("$PYTHON" -m torch.distributed.run --nproc_per_node "$PROCESSES" --no-python "$PYTHON" -u
             -c "$RUN_THEN_EXIT" "$script" "${{args[@]}}" --use_cpu true --bf16 false --dtype float32
             {cpu_extra}${{EXTRA[@]+"${{EXTRA[@]}}"}})
    else
        cmd=("$PYTHON" -m accelerate.commands.launch --config_file "accelerate/$ENGINE.yaml"
             --num_processes "$PROCESSES" -m "$script" "${{args[@]}}" ${{EXTRA[@]+"${{EXTRA[@]}}"}})
    fi
    if (( DRY_RUN )); then echo "${{cmd[*]}}"; return 0; fi
    echo "+ ${{cmd[*]}}" | tee -a output/train.log
    "${{cmd[@]}}" 2>&1 | tee -a output/train.log
}}

if (( ! DRY_RUN )); then mkdir -p output; : > output/train.log; fi
{launches}"""


def _run_sh(stages: list[StageRecipe], engine: str, gpus: int, adapter: str, mixed: bool) -> str:
    """run.sh: each stage's TRL script in order, under accelerate, or over gloo on CPU processes with ``--cpu``."""
    several = len(stages) > 1
    scripts = [f"`{s.method.script}`" for s in stages]
    saved_to: dict[str, str] = {}  # product -> the folder its stage saves it to
    stage_lines, launches = "", ""
    for number, stage in enumerate(stages, 1):
        m, plan = stage.method, stage.plan
        args = [] if mixed else ['--dataset_name "$HERE"']  # a mixture names its data in the config
        # An earlier stage's product reaches this one as the folder it was saved to (RLOO's reward model).
        args += [f"--{argument} {saved_to[product]}" for argument, product in m.inputs.items()]
        given = "".join(f", the {product.replace('_', ' ')} from {saved_to[product]}/" for product in m.inputs.values())
        saved_to[m.trains] = m.output_dir
        if several:
            stage_lines += f"#   {number}. the {m.product}: {m.script} with {m.config_file}{given} -> {m.output_dir}/\n"
            launches += f"# Stage {number} of {len(stages)}: the {m.product}{given} -> {m.output_dir}/\n"
        numbers = [plan.global_batch, plan.per_device_batch, plan.batch_multiple, plan.per_device_eval_batch or 0]
        launches += " ".join(["launch", m.script, m.config_file, m.unit, *map(str, numbers), *args]) + "\n"
    if several:
        stage_lines = "# The stages, in order (the run stops at a stage that fails):\n" + stage_lines + "#\n"
    head = _RUN_SH_HEAD.format(
        what="TRL's own " + ", then ".join(scripts) + ("," if several else ""),
        gpus=gpus,
        batches=", ".join(
            f"{s.plan.global_batch} {s.method.unit}" + (f" ({s.method.product})" if several else "") for s in stages
        ),
        each=" in each stage" if several else "",
        s="s" if several else "",
        scripts="each stage's TRL script" if several else "the TRL script",
        engine=engine,
        stage_lines=stage_lines,
    )
    body = _RUN_SH_BODY.format(
        gpus=gpus,
        engine=engine,
        help_end=head.count("\n"),
        # Local data only: without this, `datasets` may wait minutes for the Hub (measured, DESIGN.md §3).
        offline="" if mixed else "export HF_DATASETS_OFFLINE=1  # the data are local files\n",
        cpu_extra="--load_in_4bit false " if adapter == "qlora" else "",
        qlora_note="; QLoRA's 4-bit base needs CUDA, so it trains as LoRA" if adapter == "qlora" else "",
        launches=launches,
    )
    return head + body


# --------------------------------------------------------------------------- README


def _data_text(preset: Preset) -> str:
    thumbs = f" and {len(preset.unpaired)} thumbs rows" if preset.unpaired else ""
    return f"{len(preset.pairs)} pairs{thumbs}"


def _value_text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return ", ".join(_value_text(v) for v in value)
    return str(value)


def _gib(value: float) -> str:
    return f"{value / GIB:.1f}"


def _memory_table(memory: MemoryEstimate, gpus: int, gpu_memory_gib: float) -> str:
    lines = ["| component | GiB per GPU | how it is counted |", "|---|---:|---|"]
    for key, value in memory.components.items():
        lines.append(f"| {key} | {_gib(value)} | {memory.notes.get(key, '')} |")
    lines.append(f"| **total** | **{_gib(memory.total)}** | {gpus} x {gpu_memory_gib:g} GiB GPUs |")
    return "\n".join(lines)


def _alternatives_table(recipe: Recipe) -> str:
    """Every engine x adapter at this GPU count, so that the reader sees what else would fit."""
    cells: dict[str, list[str]] = {}
    for name, _, estimate in recipe.alternatives():
        mark = "" if estimate.fits(recipe.gpu_memory_gib) else " (too big)"
        cells.setdefault(name, []).append(f"{_gib(estimate.total)}{mark}")
    lines = ["| engine | full fine-tuning | LoRA | QLoRA |", "|---|---:|---:|---:|"]
    lines += [f"| {ENGINES[name].title} | " + " | ".join(row) + " |" for name, row in cells.items()]
    return "\n".join(lines)


def _dataset_card(recipe: Recipe) -> str:
    """README.md's YAML header: the folder as a dataset, one config per stage's data (the first is the default)."""
    configs = ""
    for number, stage in enumerate(recipe.stages):
        train, evaluate = stage.method.data_files
        default = "  default: true\n" if number == 0 else ""
        configs += (
            f"- config_name: {stage.dataset_config}\n{default}  data_files:\n  - split: train\n    path: {train}\n"
            f"  - split: test\n    path: {evaluate}\n"
        )
    first_train, first_eval = recipe.stages[0].method.data_files
    others = "".join(
        f"\n# Config {s.dataset_config} holds {s.method.data_files[0]}/{s.method.data_files[1]} "
        f"({s.method.config_file} names it)."
        for s in recipe.stages[1:]
    )
    return (
        "---\n"
        f"# This header is also a dataset card: `datasets.load_dataset(<this folder>)` reads {first_train} as the\n"
        f"# train split and {first_eval} as the test split (run.sh passes the folder as --dataset_name).{others}\n"
        f"configs:\n{configs}---\n"
    )


def _adapter_text(adapter: str, settings: TrainingSettings, method: RecipeMethod) -> str:
    text = {
        "none": "full fine-tuning",
        "lora": f"LoRA (rank {settings.lora_rank}, all linear layers)",
        "qlora": f"QLoRA (4-bit NF4 base, LoRA rank {settings.lora_rank})",
    }[adapter]
    if adapter != "none" and method.lora_task_type:
        text += f", task {method.lora_task_type}: the score head trains whole"
    return text


def _settings_table(recipe: Recipe, stage: StageRecipe, number: int, settings: TrainingSettings) -> str:
    """How the lab's settings map onto one stage's config, with the reason for each value."""
    m, plan, config = stage.method, stage.plan, stage.config
    lab_steps = f"{settings.steps} steps" if settings.steps is not None else f"{settings.epochs:g} epochs"
    first = (
        ("stage", f"{number}. the {m.product}", f"`{m.script}` ({m.config_class}, `{m.config_file}`): {m.why}")
        if len(recipe.stages) > 1
        else ("method", m.title, f"`{m.script}`; {m.why}")
    )
    rows = [
        first,
        *[(key, _value_text(config[key]), "as in the lab") for key in m.config_fields if key in config],
        ("learning rate", f"{plan.learning_rate:g}", plan.reasons.get("learning_rate", "as in the lab")),
        ("schedule", f"{plan.lr_scheduler_type}, warm-up {plan.warmup_ratio:.0%}", "lab: constant, no warm-up"),
        (
            "length",
            f"{plan.num_train_epochs:g} epoch(s)" if plan.max_steps < 0 else f"{plan.max_steps} steps",
            plan.reasons.get("epochs", f"lab: {lab_steps}"),
        ),
        (
            "batch",
            f"{plan.global_batch} {m.unit}/step = {plan.per_device_batch} per GPU x {recipe.gpus} GPU(s) x "
            f"{plan.gradient_accumulation} accumulation",
            plan.reasons.get("global_batch", "as in the lab")
            + f"; lab: {settings.batch_size} {'prompts' if m.samples else 'pairs'}/step",
        ),
    ]
    if "max_length" in config:
        rows.append(("max_length", str(plan.max_length), plan.reasons.get("max_length", "as in the lab")))
    if plan.max_completion_length is not None:
        rows.append(
            (
                "max_completion_length",
                str(plan.max_completion_length),
                plan.reasons.get("max_completion_length", "as in the lab"),
            )
        )
    rows += [
        ("weights", f"{_adapter_text(recipe.adapter, settings, m)}, {plan.dtype}", plan.reasons.get("dtype", "")),
        ("seed", str(settings.seed), "as in the lab"),
    ]
    return "\n".join(["| setting | this run | why |", "|---|---|---|"] + [f"| {a} | {b} | {c} |" for a, b, c in rows])


def _verdict(total: float, gpu_memory_gib: float, where: str = "") -> str:
    if total <= gpu_memory_gib * GIB:
        return f"**Fits**: about {_gib(total)} GiB of {gpu_memory_gib:g} GiB per GPU{where}."
    return (
        f"**Does not fit**: about {_gib(total)} GiB per GPU{where} against {gpu_memory_gib:g} GiB. "
        "Pick a row below that fits: more GPUs with ZeRO-3/FSDP, or LoRA/QLoRA."
    )


def _stage_memory_text(recipe: Recipe, stage: StageRecipe, number: int) -> str:
    """One stage's memory: what it holds, then the table (a method of several stages)."""
    m, plan, memory = stage.method, stage.plan, stage.memory
    if m.samples:
        reference = (
            "no reference copy (the adapter switched off is the reference)"
            if recipe.adapter != "none"
            else "the frozen reference the KL penalty compares with"
        )
        what = (
            f"The policy with its gradients and optimizer states, {reference}, the reward model of stage "
            f"{number - 1} (frozen), and sampling: {plan.per_device_batch} answer(s) per GPU per micro-batch, "
            f"{plan.per_device_batch * plan.gradient_accumulation} sampled at once per GPU (a whole step's), each at "
            "most "
            f"{plan.prompt_tokens} prompt tokens (its bytes) + {plan.max_completion_length} answer tokens"
        )
    else:
        scorer = reward_model_shape(recipe.shape)
        what = (
            f"The reward model, the target's backbone under a one-output score head ({count_text(scorer.parameters())} "
            f"parameters: no LM head), with its gradients and optimizer states and no reference; "
            f"{plan.per_device_batch} pair(s) per GPU at {plan.max_length} tokens"
        )
    checkpointing = "on" if plan.gradient_checkpointing else "off"
    return (
        f"### Stage {number}: the {m.product} (`{m.script}`): about {_gib(memory.total)} GiB per GPU\n\n"
        f"{what}, gradient checkpointing {checkpointing}:\n\n"
        + _memory_table(memory, recipe.gpus, recipe.gpu_memory_gib)
    )


def _stages_text(recipe: Recipe) -> str:
    """What each stage of a method of several does, costs and hands on (empty for one stage)."""
    if len(recipe.stages) == 1:
        return ""
    saved_to: dict[str, str] = {}
    items = []
    for number, stage in enumerate(recipe.stages, 1):
        m = stage.method
        train, evaluate = m.data_files
        data = "the pairs' prompts" if m.samples else "the pairs"
        given = "".join(
            f" `run.sh` hands it the {product.replace('_', ' ')} saved by the stage before "
            f"(`--{argument} {saved_to[product]}`)."
            for argument, product in m.inputs.items()
        )
        saved_to[m.trains] = m.output_dir
        items.append(
            f"{number}. **The {m.product}**: `{m.script}` (TRL's `{m.entry_stage.trainer.rsplit('.', 1)[-1]}`) with "
            f"`{m.config_file}`, on {data} (`{train}`, held out: `{evaluate}`): {m.why}{given} It is saved to "
            f"`{m.output_dir}/`; about {_gib(stage.memory.total)} GiB per GPU "
            f"({stage.plan.global_batch} {m.unit} per step)."
        )
    return (
        f"\n## The {len(recipe.stages)} stages\n\n`run.sh` runs them in order and stops at a stage that fails; "
        "`--model`, `--max-steps` and `-- ARGS` go to each.\n\n" + "\n".join(items) + "\n"
    )


def _readme(
    recipe: Recipe, preset: Preset, settings: TrainingSettings, mix: list[str], user_repeat: int, scale: str
) -> str:
    m, shape, plan = recipe.method, recipe.shape, recipe.plan
    several = len(recipe.stages) > 1
    first = recipe.stages[0].method
    n_train = recipe.files[first.data_files[0]].count("\n")  # rows: a pair is one row, or two thumbs rows for KTO
    n_eval = recipe.files[first.data_files[1]].count("\n")
    data_format = "paired" if mix else first.entry_stage.data  # a mixture is written in the public sets' paired shape
    fmt = "conversational (the model's chat template is applied by TRL)" if shape.chat else "plain text"
    adapter_text = _adapter_text(recipe.adapter, settings, m)
    data_line = (
        f"Data: `{first.data_files[0]}` ({n_train} rows), `{first.data_files[1]}` ({n_eval} rows), TRL's {data_format} "
        f"preference format,\n{fmt}."
    )
    for stage in recipe.stages[1:]:
        train, evaluate = stage.method.data_files
        data_line += (
            f" `{train}` ({recipe.files[train].count(chr(10))} rows), `{evaluate}` "
            f"({recipe.files[evaluate].count(chr(10))} rows): their distinct prompts, TRL's prompt-only format."
        )
    if several:
        tables = "\n\n".join(
            f"### Stage {number}: the {stage.method.product}\n\n{_settings_table(recipe, stage, number, settings)}"
            for number, stage in enumerate(recipe.stages, 1)
        )
    else:
        tables = _settings_table(recipe, recipe.stages[0], 1, settings)
    if mix:
        total = n_train + sum(PUBLIC_DATASETS[name].rows for name in mix)
        mix_lines = [
            f"This recipe trains on your {len(preset.pairs)} pairs"
            + (f" (written {user_repeat} times)" if user_repeat > 1 else "")
            + " together with:",
            "",
        ]
        mix_lines += [
            f"- `{PUBLIC_DATASETS[n].hub_id}`: {PUBLIC_DATASETS[n].what} (~{PUBLIC_DATASETS[n].rows:,} rows)"
            for n in mix
        ]
        mix_lines += [
            "",
            "TRL's script concatenates them (`datasets:` in config.yaml, the public sets fetched from the Hub), so "
            f"your pairs are about {n_train / total:.2%} of the ~{total:,} rows. Your pairs decide *what* the model "
            "learns about your preference only in proportion to that share: to weigh them more, re-export with "
            "`--user-repeat K` (each pair is written K times; more than a few passes over a small set makes the model "
            "memorise it, see the lab's health check), or write more pairs. The public sets are conversations with the "
            "prompt inside (`chosen`/`rejected` message lists), so your pairs are written in that shape too.",
            "",
            "TRL's script takes an evaluation split only from `dataset_name`, so a mixed recipe does not evaluate "
            "while it trains; `eval.jsonl` holds your held-out pairs for the evaluation afterwards.",
        ]
    elif not m.public_mix:
        prompts_only = (
            " (the stage that samples answers, on their prompts)"
            if any(s.method.samples for s in recipe.stages)
            else ""
        )
        mix_lines = [
            f"This recipe trains on your {_data_text(preset)} alone and evaluates on your "
            f"{len(preset.heldout_pairs)} held-out pairs{prompts_only} every 50 steps. The public preference sets "
            f"are not mixed into {m.title}'s recipe: {m.no_mix}. For a bigger dataset of your own, replace the data "
            "files with rows in the same formats.",
        ]
    else:
        mix_lines = [
            f"This recipe trains on your {_data_text(preset)} alone and evaluates on your "
            f"{len(preset.heldout_pairs)} held-out pairs every 50 steps. A real run usually mixes them into a public "
            "preference set, so that the model learns your preference without forgetting the general one. Re-export "
            "with `--mix ultrafeedback` and/or `--mix hh-rlhf`:",
            "",
        ]
        mix_lines += [f"- `{d.hub_id}`: {d.what} (~{d.rows:,} rows)" for d in PUBLIC_DATASETS.values()]
        mix_lines += [
            "",
            "For a bigger dataset of your own, replace train.jsonl/eval.jsonl with rows in the same format.",
        ]
    if several:
        peak = max(recipe.stages, key=lambda s: s.memory.total)
        memory_text = (
            _verdict(peak.memory.total, recipe.gpu_memory_gib, f" at its larger stage, the {peak.method.product}")
            + " Computed from the model's shape, stage by stage (AlignLab's `alignlab.recipe.estimate_memory`, and\n"
            "`estimate_sampling_memory` for the stage that samples answers); the stages run one after the other, so "
            "the larger decides.\n\n"
            + "\n\n".join(_stage_memory_text(recipe, s, n) for n, s in enumerate(recipe.stages, 1))
            + f"\n\nEvery engine and adapter at {recipe.gpus} GPU(s), one row per GPU, the larger stage (GiB per GPU):"
        )
    else:
        memory_text = (
            _verdict(recipe.memory.total, recipe.gpu_memory_gib)
            + " Computed from the model's shape (AlignLab's `alignlab.recipe.estimate_memory`), for\n"
            f"{plan.per_device_batch} pair(s) per GPU at {plan.max_length} tokens, gradient checkpointing\n"
            f"{'on' if plan.gradient_checkpointing else 'off'}:\n\n"
            f"{_memory_table(recipe.memory, recipe.gpus, recipe.gpu_memory_gib)}\n\n"
            f"Every engine and adapter at {recipe.gpus} GPU(s), one pair per GPU (GiB per GPU):"
        )
    scale_note = (
        "\n> This recipe repeats the lab's own run (`scale='lab'`): the lab's learning rate, schedule, steps and batch."
        " It exists to check the recipe against the lab; export without it for a real run.\n"
        if scale == "lab"
        else ""
    )
    if several:
        runs = (
            f"scripts in {len(recipe.stages)} stages, "
            + ", then ".join(f"`{s.method.script}` (the code of `trl {s.method.trl_command}`)" for s in recipe.stages)
            + ","
        )
    else:
        runs = f"`{m.script}` script (the code of\n`trl {m.trl_command}`)"
    runs = (
        f"It runs TRL's own {runs} under `accelerate` with DDP, DeepSpeed ZeRO-2/ZeRO-3 or FSDP; nothing here is\n"
        "home-made."
    )
    batches = " and ".join(
        f"{s.plan.global_batch} {s.method.unit}" + (f" ({s.method.product})" if several else "") for s in recipe.stages
    )
    checkpoints = "step to `output/train.log`; checkpoints (with `trainer_state.json`, the full log) go to " + (
        "`output/checkpoint-*`"
        + "".join(f" (the {s.method.product}'s to `{s.method.output_dir}/checkpoint-*`)" for s in recipe.stages[:-1])
        + "."
    )
    files_rows = [
        f"| `{s.method.config_file}` | arguments of `{s.method.script}` (`ScriptArguments`, `{s.method.config_class}`, "
        f"`ModelConfig`)" + (f": stage {n}, the {s.method.product}" if several else "") + " |"
        for n, s in enumerate(recipe.stages, 1)
    ]
    files_rows += [
        f"| `{s.method.data_files[0]}`, `{s.method.data_files[1]}` | "
        + ("the pairs' distinct prompts" if s.method.samples else "the pairs")
        + " |"
        for s in recipe.stages
    ]
    return f"""{_dataset_card(recipe)}
# {m.title} recipe: {shape.name}

Exported by AlignLab from the `{preset.id}` lab. {runs}
{scale_note}
## Run it

```bash
pip install "trl==1.16.0" "transformers==5.24.0" "datasets==5.2.0" "accelerate==1.15.0" "peft==0.21.2" \\
    deepspeed bitsandbytes   # deepspeed for ZeRO, bitsandbytes for QLoRA
./run.sh --cpu --processes 2 --model <a small local model> --max-steps 3   # try it first, anywhere
./run.sh --max-steps 10                                                     # then a short run on the GPUs
./run.sh                                                                    # the whole run
```

`run.sh` launches `{recipe.gpus}` process(es) with `accelerate/{recipe.engine}.yaml` ({ENGINES[recipe.engine].title}).
`--processes N` changes the GPU count and keeps {batches} per step; `--engine` switches to another
config in `accelerate/` (TRL's own `trl/accelerate_configs`, sized for {recipe.gpus} GPU(s)); `--cpu` runs the same
recipe on N CPU processes over gloo. Several nodes: run it on each with accelerate's `--num_machines`,
`--machine_rank` and `--main_process_ip` (edit the config or the launch line). Losses and rewards are logged every
{checkpoints}
{_stages_text(recipe)}
## What it trains, and how the lab's settings map

{data_line} Target: `{shape.hub_id}` ({count_text(shape.parameters())} parameters).

{tables}

## Memory: {recipe.gpus} x {recipe.gpu_memory_gib:g} GiB GPU(s), {ENGINES[recipe.engine].title}, {adapter_text}

{memory_text}

{_alternatives_table(recipe)}

A rough estimate (a few GiB either way): check it with `./run.sh --max-steps 10` and `nvidia-smi` before a long run.

## Mixing public datasets

{chr(10).join(mix_lines)}

## Files

| file | what |
|---|---|
{chr(10).join(files_rows)}
| `accelerate/*.yaml` | launcher configs: ddp, zero2, zero3, fsdp |
| `run.sh` | the launch |
"""


# --------------------------------------------------------------------------- writing


def write_recipe(recipe: Recipe, out_dir: str | Path) -> Path:
    """Write the recipe's files into ``out_dir`` (created; files already there are replaced)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise RecipeError(f"Cannot write the recipe to '{out}': it is a file, not a directory.")
    out.mkdir(parents=True, exist_ok=True)
    for name, text in recipe.files.items():
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    run = out / "run.sh"
    run.chmod(run.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return out


def recipe_zip(recipe: Recipe, path: str | Path, folder: str = "alignlab-recipe") -> Path:
    """The recipe as one zip file, its files under ``folder/`` (run.sh executable)."""
    path = Path(path)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in sorted(recipe.files.items()):
            info = zipfile.ZipInfo(f"{folder}/{name}", date_time=(2026, 1, 1, 0, 0, 0))
            mode = 0o755 if name.endswith(".sh") else 0o644
            info.external_attr = (stat.S_IFREG | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, text)
    path.write_bytes(buffer.getvalue())
    return path


def logged_rows(recipe_dir: str | Path, output_dir: str = "output") -> list[dict[str, Any]]:
    """The per-step rows TRL logged in a recipe's run (its latest checkpoint's ``trainer_state.json``).

    ``output_dir``: the stage's output folder in the recipe (an earlier stage's, e.g. ``output/reward_model``;
    default: the policy's)."""
    output = Path(recipe_dir) / output_dir
    checkpoints = sorted(
        output.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(re.sub(r"\D", "", p.parent.name) or 0)
    )
    if not checkpoints:
        raise RecipeError(f"No checkpoint with trainer_state.json under {output}: has the run finished?")
    state = json.loads(checkpoints[-1].read_text(encoding="utf-8"))
    return [row for row in state.get("log_history", []) if "loss" in row and "step" in row]
