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
keys it adds to ``config.yaml``. Adding ``kto`` (``trl.scripts.kto``) or a reward model
(``trl.scripts.reward``) is one more row; nothing else here branches on the method's name.
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

from alignlab.methods import Method, UnknownMethodError, get_method
from alignlab.models import KNOWN_MODELS
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
      tokens, 16-bit: with checkpointing one hidden state per layer plus one layer recomputed
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
    tokens = per_device_batch * 2 * max_length  # chosen and rejected rows
    per_layer = 34 * shape.hidden * tokens
    if gradient_checkpointing:
        components["activations"] = 2 * shape.hidden * tokens * shape.layers + per_layer
        notes["activations"] = f"{per_device_batch} pair(s) x 2 x {max_length} tokens, checkpointed"
    else:
        components["activations"] = per_layer * shape.layers
        notes["activations"] = f"{per_device_batch} pair(s) x 2 x {max_length} tokens, no checkpointing"
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


@dataclass(frozen=True)
class RecipeMethod:
    """One training method as a recipe runs it: its data and its own config keys on a real run. Which TRL
    script runs it, and which config class, is the method registry's (:mod:`alignlab.methods`)."""

    name: str
    """The method's name in :data:`alignlab.methods.METHODS`."""
    rows: Callable[..., list[dict[str, Any]]]
    """(pairs, chat model?, implicit prompt?, thumbs rows) -> rows of the script's dataset."""
    config_fields: tuple[str, ...]
    """The keys of the method's config that carry over from the lab, as the lab sets them (the registry stage's
    ``fields_from``); the rest of the lab's own fields (batch, reference pre-computation) are planned here."""
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

    @property
    def entry(self) -> Method:
        return get_method(self.name)

    def config_keys(self, settings: TrainingSettings) -> dict[str, Any]:
        """The method's own keys in config.yaml: :attr:`config_fields`, valued as the lab's trainer gets them."""
        fields_from = self.entry.stage.fields_from
        own = fields_from(settings) if fields_from is not None else {}
        return {key: own[key] for key in self.config_fields if key in own}

    @property
    def script(self) -> str:
        """The module ``python -m`` runs: TRL's own script, as the registry names it."""
        return str(self.entry.script)

    @property
    def trl_command(self) -> str:
        """``trl <command>`` runs the same script."""
        return self.script.rsplit(".", 1)[-1]

    @property
    def config_class(self) -> str:
        """TRL's config dataclass whose fields the method's keys are (for the README)."""
        return self.entry.stage.config.rsplit(".", 1)[-1]

    @property
    def title(self) -> str:
        return self.entry.title

    @property
    def rows_per_pair(self) -> int:
        """Dataset rows per pair: a batch of the lab's pairs is this many of the script's rows."""
        return self.entry.stage.rows_per_pair

    @property
    def unit(self) -> str:
        return "pairs" if self.rows_per_pair == 1 else "rows"


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

#: Methods a recipe can run, by their registry name; the script each runs is the registry's. DPO's rates: 5e-7
#: full (Zephyr-7B-beta's DPO recipe), 5e-6 LoRA (the LoRA example in TRL's own dpo.py). KTO's: 5e-7 full (the
#: examples in TRL's own kto.py), 5e-6 for an adapter as for DPO. Methods TRL ships no script for (ORPO and SimPO
#: live in ``trl.experimental`` in TRL 1.16) have no recipe; the error says so.
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
) -> RunPlan:
    """Map the lab's settings onto the target.

    ``scale='target'`` (the default) makes it a real run: the method's usual learning rate for full
    fine-tuning or an adapter, a cosine schedule with 10% warm-up, gradient checkpointing, bf16,
    the largest per-GPU batch that fits the memory estimate, and gradient accumulation making up
    the global batch: the lab's batch on the user's pairs alone (for the same number of passes
    over them as the lab made), 64 pairs for one epoch over a public mixture.
    ``scale='lab'`` repeats the lab's run exactly (its learning rate, constant schedule, steps,
    batch, fp32 weights): the way to check the recipe against the lab, as the tests do.
    """
    reasons: dict[str, str] = {}
    lab_batch = settings.batch_size * method.rows_per_pair  # in the script's rows (KTO: 2 per pair)
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
            learning_rate=learning_rate or settings.learning_rate,
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
        )
    if scale != "target":
        raise RecipeError(f"scale must be 'target' or 'lab' (got {scale!r}).")

    lr = learning_rate or (method.learning_rate_adapter if adapter != "none" else method.learning_rate_full)
    reasons["learning_rate"] = (
        "given"
        if learning_rate
        else f"the usual rate for {'an adapter' if adapter != 'none' else 'full fine-tuning'} "
        f"on a real run; the lab's {settings.learning_rate:g} is for a few steps on a small model"
    )
    if mixed:
        global_batch, epochs = GLOBAL_BATCH_MIXED, 1.0
        reasons["global_batch"] = f"64 {method.unit} per step, one pass over the mixture (the usual DPO run)"
        max_length = max(settings.max_length, 1024)
        reasons["max_length"] = "public sets have long answers: at least 1024 tokens"
    else:
        global_batch = max(lab_batch, 1)
        lab_pairs = settings.total_steps(n_train) * settings.batch_size
        epochs = round(max(lab_pairs / max(n_train, 1), 0.1), 2)
        reasons["global_batch"] = "the lab's batch, on the lab's pairs"
        if method.rows_per_pair > 1:
            reasons["global_batch"] += f" ({method.rows_per_pair} rows per pair)"
        reasons["epochs"] = f"{epochs:g} passes over the pairs, as many as the lab's run made"
        max_length = settings.max_length
        reasons["max_length"] = "the lab's"
    if global_batch < gpus:
        global_batch = gpus
        reasons["global_batch"] += f" (raised to {gpus}: one row per GPU at least)"

    per_device = 1
    for candidate in PER_DEVICE_CHOICES:
        if candidate * gpus > global_batch:
            continue
        estimate = estimate_memory(
            shape,
            engine=engine,
            gpus=gpus,
            adapter=adapter,
            lora_rank=settings.lora_rank,
            per_device_batch=candidate,
            max_length=max_length,
            reference=method.reference_copy,
        )
        if estimate.fits(gpu_memory_gib * 0.9):
            per_device = candidate
            break
    accumulation = max(1, math.ceil(global_batch / (per_device * gpus)))
    reasons["per_device_batch"] = (
        f"the largest of {', '.join(map(str, PER_DEVICE_CHOICES))} whose estimate fits 90% of {gpu_memory_gib:g} GiB"
    )
    reasons["gradient_accumulation"] = (
        f"{per_device} x {gpus} GPUs x {accumulation} = {per_device * gpus * accumulation}"
    )
    dtype = "bfloat16" if adapter != "none" else ENGINES[engine].load_dtype
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
    )


# --------------------------------------------------------------------------- the recipe


@dataclass
class Recipe:
    """Everything a recipe folder holds, as text, plus what it was built from."""

    files: dict[str, str]
    method: RecipeMethod
    shape: ModelShape
    engine: str
    gpus: int
    adapter: str
    plan: RunPlan
    memory: MemoryEstimate
    config: dict[str, Any]
    lora_rank: int = 16
    gpu_memory_gib: float = 80.0

    def summary(self) -> str:
        """Two lines for a terminal or the app (three when the run does not fit: what would)."""
        fits = self.memory.fits(self.gpu_memory_gib)
        text = (
            f"{self.method.title} on {self.shape.name} ({count_text(self.shape.parameters())} params), "
            f"{self.gpus} GPU(s), {ENGINES[self.engine].title}, "
            f"{'full fine-tuning' if self.adapter == 'none' else self.adapter.upper()}.\n"
            f"Estimated {self.memory.total / GIB:.1f} GiB per GPU ({'fits' if fits else 'does NOT fit'} in "
            f"{self.gpu_memory_gib:g} GiB); batch {self.plan.per_device_batch} x {self.gpus} x "
            f"{self.plan.gradient_accumulation} accumulation."
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
        """Every engine x adapter at this GPU count, one pair per GPU: what else would fit."""
        return [
            (
                name,
                {"none": "full", "lora": "LoRA", "qlora": "QLoRA"}[adapter],
                estimate_memory(
                    self.shape,
                    engine=name,
                    gpus=self.gpus,
                    adapter=adapter,
                    lora_rank=self.lora_rank,
                    per_device_batch=1,
                    max_length=self.plan.max_length,
                    reference=self.method.reference_copy,
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
    appear ``user_repeat`` times.
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
        raise RecipeError(f"The public preference sets do not fit {m.name.upper()}'s data; export without --mix.")
    if mix and not shape.chat:
        raise RecipeError(
            f"{shape.name} has no chat template, but the public sets are conversations: "
            "mix them only into a chat model's recipe."
        )
    plan = plan_run(
        settings,
        m,
        shape,
        n_train=len(preset.pairs) + math.ceil(len(thumbs) / m.rows_per_pair),
        gpus=gpus,
        engine=engine,
        adapter=adapter,
        mixed=bool(mix),
        scale=scale,
        gpu_memory_gib=gpu_memory_gib,
        learning_rate=learning_rate,
    )
    memory = estimate_memory(
        shape,
        engine=engine,
        gpus=gpus,
        adapter=adapter,
        lora_rank=settings.lora_rank,
        per_device_batch=plan.per_device_batch,
        max_length=plan.max_length,
        gradient_checkpointing=plan.gradient_checkpointing,
        reference=m.reference_copy,
    )
    config = _config(settings, m, shape, plan, adapter, engine, mix, has_eval=bool(preset.heldout_pairs))
    files = {
        "train.jsonl": _jsonl(m.rows(preset.pairs, shape.chat, bool(mix), thumbs) * user_repeat),
        "eval.jsonl": _jsonl(m.rows(preset.heldout_pairs, shape.chat, bool(mix))),
        "config.yaml": _yaml_text(config, _config_header(m, shape, plan)),
        "run.sh": _run_sh(m, engine, gpus, plan, adapter, mixed=bool(mix)),
    }
    for name, e in ENGINES.items():
        files[f"accelerate/{name}.yaml"] = _yaml_text(_accelerate_config(e, gpus), f"# {e.title}: {e.note}.\n")
    recipe = Recipe(
        files=files,
        method=m,
        shape=shape,
        engine=engine,
        gpus=gpus,
        adapter=adapter,
        plan=plan,
        memory=memory,
        config=config,
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
) -> dict[str, Any]:
    """config.yaml: TRL's script arguments (ScriptArguments, the method's config, ModelConfig)."""
    config: dict[str, Any] = {"model_name_or_path": shape.hub_id, "dtype": plan.dtype}
    if mix:
        # A mixture: TRL's `datasets` list, concatenated (paths relative to the recipe folder).
        config["datasets"] = [{"path": "json", "data_files": "train.jsonl", "split": "train"}] + [
            {"path": PUBLIC_DATASETS[name].hub_id, "split": "train", "columns": ["chosen", "rejected"]} for name in mix
        ]
        has_eval = False  # TRL's script takes an eval split only from `dataset_name` or a random split
    else:
        # The recipe folder is the dataset: README.md's YAML header maps train.jsonl and eval.jsonl to
        # the train and test splits. `datasets` needs the folder's absolute path (with "." it fails),
        # which only the launch knows: run.sh passes `--dataset_name <this folder>`.
        config["dataset_train_split"] = "train"
        config["dataset_test_split"] = "test"
    config.update(method.config_keys(settings))
    config.update(
        {
            "learning_rate": plan.learning_rate,
            "lr_scheduler_type": plan.lr_scheduler_type,
            "warmup_steps": plan.warmup_ratio,  # transformers 5: a float below 1 is a ratio of all steps
            "num_train_epochs": plan.num_train_epochs,
            "max_steps": plan.max_steps,
            "per_device_train_batch_size": plan.per_device_batch,
            "per_device_eval_batch_size": plan.per_device_batch,
            "gradient_accumulation_steps": plan.gradient_accumulation,
            "max_length": plan.max_length,
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
            "output_dir": "output",
        }
    )
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
    if adapter == "qlora":
        config.update({"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "use_bnb_nested_quant": True})
        if ENGINES[engine].shards_weights:
            config["bnb_4bit_quant_storage"] = "bfloat16"  # lets ZeRO-3/FSDP shard the 4-bit weights
    return config


def _config_header(method: RecipeMethod, shape: ModelShape, plan: RunPlan) -> str:
    return (
        f"# Arguments of TRL's own `{method.script}` (also `trl {method.trl_command} --config config.yaml`).\n"
        f"# Target: {shape.name}. Written by AlignLab; see README.md for why each value is what it is.\n"
        "# Command-line arguments override these. run.sh adds `--dataset_name <this folder>` (the folder is the\n"
        "# dataset: README.md's header maps train.jsonl/eval.jsonl to its splits) and the batch for N processes.\n"
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

_RUN_SH = r"""#!/usr/bin/env bash
# Launch this recipe: TRL's own `{script}` under accelerate (DDP, DeepSpeed or FSDP), or, with
# --cpu, under torchrun over gloo on CPU processes (the same recipe, tried small).
#
#   ./run.sh [--processes N] [--cpu] [--model SPEC] [--max-steps K] [--engine E] [--dry-run] [-- ARGS]
#
#   --processes N   processes (GPUs) to launch; default {gpus}. The global batch stays {global_batch} {unit}
#                   per step: per-process batch and gradient accumulation are recomputed for N.
#   --cpu           run on CPU processes over gloo (fp32, no 4-bit), whatever engine the recipe targets
#   --model SPEC    train this model instead of {model} (a Hub id or a local directory)
#   --max-steps K   stop after K optimizer steps (a trial run)
#   --engine E      launch with accelerate/E.yaml instead of accelerate/{engine}.yaml
#   --dry-run       print the launch command and stop
#   -- ARGS         anything after -- goes to the TRL script (e.g. -- --learning_rate 1e-6)
#
# PYTHON picks the interpreter (default: python3). The run writes to output/ (checkpoints with
# trainer_state.json, the final model) and its log to output/train.log.
set -euo pipefail
HERE="$(cd "$(dirname "${{BASH_SOURCE[0]}}")" && pwd)"
cd "$HERE"
PYTHON="${{PYTHON:-python3}}"

GPUS={gpus}
GLOBAL_BATCH={global_batch}
PER_DEVICE={per_device}
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
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "run.sh: unknown option '$1' (see ./run.sh --help)" >&2; exit 2 ;;
    esac
done
if ! [[ "$PROCESSES" =~ ^[1-9][0-9]*$ ]]; then
    echo "run.sh: --processes needs a whole number of at least 1 (got '$PROCESSES')" >&2; exit 2
fi
if [[ ! -f "accelerate/$ENGINE.yaml" ]]; then
    echo "run.sh: no launcher config accelerate/$ENGINE.yaml (choose ddp, zero2, zero3 or fsdp)" >&2; exit 2
fi

# Keep {global_batch} {unit} per optimizer step on $PROCESSES processes: the largest per-process batch
# (up to {per_device}) that divides the share of each process, the rest as gradient accumulation.
if (( GLOBAL_BATCH % PROCESSES == 0 )); then
    SHARE=$(( GLOBAL_BATCH / PROCESSES ))
    BATCH=$(( PER_DEVICE < SHARE ? PER_DEVICE : SHARE ))
    while (( SHARE % BATCH != 0 )); do BATCH=$(( BATCH - 1 )); done
    ACCUM=$(( SHARE / BATCH ))
else
    BATCH=$PER_DEVICE
    ACCUM=$(( (GLOBAL_BATCH + BATCH * PROCESSES - 1) / (BATCH * PROCESSES) ))
    echo "run.sh: $GLOBAL_BATCH {unit} do not split over $PROCESSES processes;" \
         "the global batch becomes $(( BATCH * PROCESSES * ACCUM ))" >&2
fi
ARGS=(--config config.yaml {dataset_arg}--per_device_train_batch_size "$BATCH" --per_device_eval_batch_size "$BATCH"
      --gradient_accumulation_steps "$ACCUM")

export TOKENIZERS_PARALLELISM=false
{offline}if (( CPU )); then
    # gloo on CPU: fp32 weights, no bf16 autocast{qlora_note}. TRL's script runs as `python -m` runs
    # it, and once it has returned (model saved) each process ends at once: at interpreter teardown
    # gloo's worker threads can deadlock with the release of the DDP model (seen under load).
    RUN_THEN_EXIT='import os, runpy, sys
module = sys.argv.pop(1)
sys.argv[0] = module
runpy.run_module(module, run_name="__main__", alter_sys=True)
sys.stdout.flush()
sys.stderr.flush()
os._exit(0)'
    CMD=("$PYTHON" -m torch.distributed.run --nproc_per_node "$PROCESSES" --no-python "$PYTHON" -u -c "$RUN_THEN_EXIT"
         {script} "${{ARGS[@]}}" --use_cpu true --bf16 false --dtype float32 {cpu_extra}${{EXTRA[@]+"${{EXTRA[@]}}"}})
else
    CMD=("$PYTHON" -m accelerate.commands.launch --config_file "accelerate/$ENGINE.yaml" --num_processes "$PROCESSES"
         -m {script} "${{ARGS[@]}}" ${{EXTRA[@]+"${{EXTRA[@]}}"}})
fi
if (( DRY_RUN )); then echo "${{CMD[*]}}"; exit 0; fi
mkdir -p output
echo "+ ${{CMD[*]}}" | tee output/train.log
"${{CMD[@]}}" 2>&1 | tee -a output/train.log
"""


def _run_sh(method: RecipeMethod, engine: str, gpus: int, plan: RunPlan, adapter: str, mixed: bool) -> str:
    return _RUN_SH.format(
        script=method.script,
        unit=method.unit,
        gpus=gpus,
        global_batch=plan.global_batch,
        per_device=plan.per_device_batch,
        engine=engine,
        model="the config's model",
        dataset_arg="" if mixed else '--dataset_name "$HERE" ',
        # Local data only: without this, `datasets` may wait minutes for the Hub (measured, DESIGN.md §3).
        offline="" if mixed else "export HF_DATASETS_OFFLINE=1  # the data are local files\n",
        cpu_extra="--load_in_4bit false " if adapter == "qlora" else "",
        qlora_note="; QLoRA's 4-bit base needs CUDA, so it trains as LoRA" if adapter == "qlora" else "",
    )


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


def _memory_table(recipe: Recipe) -> str:
    m = recipe.memory
    lines = ["| component | GiB per GPU | how it is counted |", "|---|---:|---|"]
    for key, value in m.components.items():
        lines.append(f"| {key} | {_gib(value)} | {m.notes.get(key, '')} |")
    lines.append(f"| **total** | **{_gib(m.total)}** | {recipe.gpus} x {recipe.gpu_memory_gib:g} GiB GPUs |")
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


def _readme(
    recipe: Recipe, preset: Preset, settings: TrainingSettings, mix: list[str], user_repeat: int, scale: str
) -> str:
    m, shape, plan = recipe.method, recipe.shape, recipe.plan
    n_train = recipe.files["train.jsonl"].count("\n")  # rows: a pair is one row, or two thumbs rows for KTO
    n_eval = recipe.files["eval.jsonl"].count("\n")
    data_format = "paired" if mix else m.entry.data  # a mixture is written in the public sets' paired shape
    # `datasets` caches a folder's splits under its folder and config names only, not its files' content:
    # a config named after the content keeps a re-exported folder from reading the old pairs' cache.
    digest = hashlib.sha256((recipe.files["train.jsonl"] + recipe.files["eval.jsonl"]).encode()).hexdigest()[:12]
    card = (
        "---\n"
        "# This header is also a dataset card: `datasets.load_dataset(<this folder>)` reads train.jsonl as the\n"
        "# train split and eval.jsonl as the test split (run.sh passes the folder as --dataset_name).\n"
        f"configs:\n- config_name: pairs-{digest}\n  default: true\n  data_files:\n  - split: train\n"
        "    path: train.jsonl\n  - split: test\n    path: eval.jsonl\n---\n"
    )
    fmt = "conversational (the model's chat template is applied by TRL)" if shape.chat else "plain text"
    adapter_text = {
        "none": "full fine-tuning",
        "lora": f"LoRA (rank {settings.lora_rank}, all linear layers)",
        "qlora": f"QLoRA (4-bit NF4 base, LoRA rank {settings.lora_rank})",
    }[recipe.adapter]
    lab_steps = f"{settings.steps} steps" if settings.steps is not None else f"{settings.epochs:g} epochs"
    rows = [
        ("method", m.title, f"`{m.script}`; {m.why}"),
        *[(key, _value_text(recipe.config[key]), "as in the lab") for key in m.config_fields if key in recipe.config],
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
            plan.reasons.get("global_batch", "as in the lab") + f"; lab: {settings.batch_size} pairs/step",
        ),
        ("max_length", str(plan.max_length), plan.reasons.get("max_length", "as in the lab")),
        ("weights", f"{adapter_text}, {plan.dtype}", plan.reasons.get("dtype", "")),
        ("seed", str(settings.seed), "as in the lab"),
    ]
    settings_table = "\n".join(
        ["| setting | this run | why |", "|---|---|---|"] + [f"| {a} | {b} | {c} |" for a, b, c in rows]
    )
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
    fits = recipe.memory.fits(recipe.gpu_memory_gib)
    verdict = (
        f"**Fits**: about {_gib(recipe.memory.total)} GiB of {recipe.gpu_memory_gib:g} GiB per GPU."
        if fits
        else f"**Does not fit**: about {_gib(recipe.memory.total)} GiB per GPU against {recipe.gpu_memory_gib:g} GiB. "
        "Pick a row below that fits: more GPUs with ZeRO-3/FSDP, or LoRA/QLoRA."
    )
    scale_note = (
        "\n> This recipe repeats the lab's own run (`scale='lab'`): the lab's learning rate, schedule, steps and batch."
        " It exists to check the recipe against the lab; export without it for a real run.\n"
        if scale == "lab"
        else ""
    )
    return f"""{card}
# {m.title} recipe: {shape.name}

Exported by AlignLab from the `{preset.id}` lab. It runs TRL's own `{m.script}` script (the code of
`trl {m.trl_command}`) under `accelerate` with DDP, DeepSpeed ZeRO-2/ZeRO-3 or FSDP; nothing here is
home-made.
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
`--processes N` changes the GPU count and keeps {plan.global_batch} {m.unit} per step; `--engine` switches to another
config in `accelerate/` (TRL's own `trl/accelerate_configs`, sized for {recipe.gpus} GPU(s)); `--cpu` runs the same
recipe on N CPU processes over gloo. Several nodes: run it on each with accelerate's `--num_machines`,
`--machine_rank` and `--main_process_ip` (edit the config or the launch line). Losses and rewards are logged every
step to `output/train.log`; checkpoints (with `trainer_state.json`, the full log) go to `output/checkpoint-*`.

## What it trains, and how the lab's settings map

Data: `train.jsonl` ({n_train} rows), `eval.jsonl` ({n_eval} rows), TRL's {data_format} preference format,
{fmt}. Target: `{shape.hub_id}` ({count_text(shape.parameters())} parameters).

{settings_table}

## Memory: {recipe.gpus} x {recipe.gpu_memory_gib:g} GiB GPU(s), {ENGINES[recipe.engine].title}, {adapter_text}

{verdict} Computed from the model's shape (AlignLab's `alignlab.recipe.estimate_memory`), for
{plan.per_device_batch} pair(s) per GPU at {plan.max_length} tokens, gradient checkpointing
{"on" if plan.gradient_checkpointing else "off"}:

{_memory_table(recipe)}

Every engine and adapter at {recipe.gpus} GPU(s), one pair per GPU (GiB per GPU):

{_alternatives_table(recipe)}

A rough estimate (a few GiB either way): check it with `./run.sh --max-steps 10` and `nvidia-smi` before a long run.

## Mixing public datasets

{chr(10).join(mix_lines)}

## Files

| file | what |
|---|---|
| `config.yaml` | arguments of `{m.script}` (`ScriptArguments`, `{m.config_class}`, `ModelConfig`) |
| `train.jsonl`, `eval.jsonl` | the pairs |
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


def logged_rows(recipe_dir: str | Path) -> list[dict[str, Any]]:
    """The per-step rows TRL logged in a recipe's run (its latest checkpoint's ``trainer_state.json``)."""
    output = Path(recipe_dir) / "output"
    checkpoints = sorted(
        output.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(re.sub(r"\D", "", p.parent.name) or 0)
    )
    if not checkpoints:
        raise RecipeError(f"No checkpoint with trainer_state.json under {output}: has the run finished?")
    state = json.loads(checkpoints[-1].read_text(encoding="utf-8"))
    return [row for row in state.get("log_history", []) if "loss" in row and "step" in row]
