"""A method's stage as a TRL trainer: the policy's copy, its reference, LoRA/QLoRA, the reward model.

:func:`build_trainer` is the one place where a trainer is built, from the stage's registry entry
(:mod:`alignlab.registry.methods`), the settings' TRL config
(:meth:`alignlab.registry.settings.TrainingSettings.trainer_config`)
and the stage's rows (:mod:`alignlab.training.trl_rows`). A stage with a frozen reference gets it in one of three ways,
all of which avoid TRL's fallback of reloading the reference from ``config._name_or_path`` (which would measure
a policy changed in memory against the weights on disk):

- full fine-tuning (the default): the reference is the cached model itself, seen through
  :func:`alignlab.models.loading.reference_view` (its weights shared, never copied) and passed to the trainer
  explicitly; TRL scores each batch with it as it trains, so the first step starts at once;
- DPO with ``precompute_ref_log_probs=True``: TRL scores every pair with the untouched policy before the first
  step instead (a pass over the data, and a hash of every weight);
- LoRA (``use_lora``): the reference is the same network with the adapter switched off.

GRPO/RLOO take no reference argument: with ``beta > 0`` they build one from the policy's
``config._name_or_path``. The runner lets them, then loads the original model's weights, as they are in memory,
into it (:func:`pin_reference`), so that what the policy is measured against is never whatever happens to be on
disk.
"""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, TrainerCallback, set_seed
from transformers.trainer_callback import PrinterCallback

from alignlab.data.pairs import PreferencePair, TrainingData
from alignlab.models import cpu_head
from alignlab.models.loading import LoadedModel, copy_for_training, reference_view, use_persistent_kernel_cache
from alignlab.registry.methods import Stage, resolve
from alignlab.registry.settings import SettingsError, TrainingSettings
from alignlab.training.trl_rows import stage_dataset


def reward_model_from(loaded: LoadedModel) -> PreTrainedModel:
    """A fresh reward model on the loaded model's backbone: the same weights as in memory (copied), under a
    new one-output score head (``AutoModelForSequenceClassification``, ``num_labels=1``; 2 is TRL's ValueError).

    Built from the model in memory rather than from ``loaded.source``, which may be a GGUF file or a Hub id.
    The seed is set first (by :func:`build_trainer`), so the head's random start is the same every run.
    """
    from transformers import AutoModelForSequenceClassification

    config = copy.deepcopy(loaded.model.config)
    config.num_labels = 1
    config.pad_token_id = loaded.tokenizer.pad_token_id  # scores are read at the last non-pad token
    scorer = AutoModelForSequenceClassification.from_config(config, dtype=torch.float32)
    prefix = scorer.base_model_prefix
    backbone = getattr(loaded.model, prefix, None)
    if backbone is None:
        raise SettingsError(
            f"A reward model needs the causal LM's backbone under '{prefix}', which "
            f"{type(loaded.model).__name__} does not have: this model cannot be trained as a reward model here."
        )
    getattr(scorer, prefix).load_state_dict(backbone.state_dict())
    scorer.config._name_or_path = "reward_model"  # TRL names its logged rewards after it: rewards/reward_model/mean
    return scorer.to(loaded.device)


def pin_reference(trainer: Any, loaded: LoadedModel) -> bool:
    """Load the original model's weights, as they are in memory, into the reference a trainer built itself.

    GRPO and RLOO take no ``ref_model``: with ``beta > 0`` they load one from the policy's
    ``config._name_or_path`` (the weights on disk, or an error for a model with no path). The policy copy
    points that at ``loaded.source``, from which ``loaded`` itself was loaded, so the architecture matches;
    the weights are then replaced by ``loaded.model``'s, so a model changed in memory is still its own
    reference. Returns False when the trainer holds no reference model (beta 0, or LoRA: the adapter off).
    """
    reference = getattr(trainer, "ref_model", None)
    if reference is None:
        return False
    reference = trainer.accelerator.unwrap_model(reference)
    with torch.no_grad():
        reference.load_state_dict(loaded.model.state_dict())
    reference.eval()
    return True


def build_trainer(
    loaded: LoadedModel,
    pairs: list[PreferencePair] | TrainingData,
    settings: TrainingSettings,
    output_dir: str | Path,
    callbacks: list[TrainerCallback] | None = None,
    stage: Stage | None = None,
    inputs: dict[str, Any] | None = None,
) -> Any:
    """The one place where a trainer is built: a private copy of the model it trains, its reference, TRL's config.

    ``stage``: which of the method's stages (default: the policy's, the last); ``inputs``: the products of
    the stages before it (e.g. ``{"reward_model": ...}``), passed as the trainer keywords the stage names.
    The trainer class, the data format and the reference handling come from the registry entry. Seeds
    first, so the same settings and pairs give the same run. :func:`alignlab.training.run.train_policy` and the
    bench's probe both train what this returns.
    """
    stage = stage or settings.method_entry.stage
    trainer_class = resolve(stage.trainer)
    use_persistent_kernel_cache()  # before TRL compiles its Triton kernels on a GPU
    set_seed(settings.seed)
    args = settings.trainer_config(output_dir, loaded.device, stage)
    extra = _earlier_products(loaded, settings, stage, inputs or {})
    model, peft_config = _model_to_train(loaded, settings, stage, args, extra)
    if stage.has_reference and stage.ref_model_argument:
        # Always explicit: left to itself, TRL would reload the reference from config._name_or_path (the
        # weights on disk, not the model in memory). LoRA's reference is the adapter switched off; DPO's
        # precomputed reference log-probs come from the untouched policy before the first step.
        precomputed = bool(getattr(args, "precompute_ref_log_probs", False))
        shared_reference = not settings.use_lora and not precomputed
        extra["ref_model"] = reference_view(loaded) if shared_reference else None
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=stage_dataset(loaded, TrainingData.of(pairs), settings, stage),
        processing_class=loaded.tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
        **extra,
    )
    if stage.has_reference and not stage.ref_model_argument:
        pin_reference(trainer, loaded)  # the trainer built its reference from disk: make it the model in memory
    trainer.remove_callback(PrinterCallback)  # rows reach the caller as events, not as prints
    return trainer


def _earlier_products(
    loaded: LoadedModel, settings: TrainingSettings, stage: Stage, inputs: dict[str, Any]
) -> dict[str, Any]:
    """The trainer keywords the stage takes from earlier stages (RLOO's ``reward_funcs`` <- the reward model)."""
    extra: dict[str, Any] = {}
    for keyword, product in stage.inputs.items():
        if product not in inputs:
            raise SettingsError(
                f"The {stage.trains} stage of {settings.method!r} trains on the {product} of an earlier stage: "
                "run the method's stages in order (train_policy does)."
            )
        extra[keyword] = inputs[product]
    if "reward_funcs" in extra:  # the reward model reads (prompt, answer) with the policy's own tokenizer
        extra["reward_processing_classes"] = loaded.tokenizer
    return extra


def _model_to_train(
    loaded: LoadedModel, settings: TrainingSettings, stage: Stage, args: Any, extra: dict[str, Any]
) -> tuple[Any, Any]:
    """(the model the trainer trains, its LoRA config or None): a private copy of the loaded model, a reward model
    on its backbone, or under QLoRA the base's path for TRL to load in 4-bit (its ``quantization_config`` goes into
    ``extra``)."""
    if stage.trains_reward_model:  # LoRA and QLoRA are the policy's: the small reward model trains every weight
        return reward_model_from(loaded), None
    if settings.use_qlora:  # TRL loads the 4-bit base itself; nothing is copied
        model, extra["quantization_config"] = qlora_model_arguments(loaded, args)
        return model, settings.peft_config()
    return copy_for_training(loaded), settings.peft_config()


def qlora_unavailable() -> str | None:
    """Why QLoRA cannot run here, or None when it can (a CUDA GPU and bitsandbytes are present)."""
    if not torch.cuda.is_available():
        return "QLoRA loads the base in 4-bit with bitsandbytes, which needs a CUDA GPU; this machine has none."
    if importlib.util.find_spec("bitsandbytes") is None:
        return "QLoRA needs the bitsandbytes package (`pip install bitsandbytes`), which is not installed."
    return None


def qlora_model_arguments(loaded: LoadedModel, args: Any) -> tuple[str, Any]:
    """QLoRA: the base's path for TRL to load in 4-bit NF4 (bf16 compute), and the quantisation config."""
    reason = qlora_unavailable()
    if reason is not None:
        raise SettingsError(reason)
    if loaded.device.type != "cuda":
        raise SettingsError("QLoRA trains on a CUDA GPU, but the model is loaded on the CPU.")
    kwargs = qlora_load_kwargs(loaded)
    quantization = kwargs.pop("quantization_config")
    args.model_init_kwargs = kwargs
    return loaded.source, quantization


def qlora_load_kwargs(loaded: LoadedModel) -> dict[str, Any]:
    """``from_pretrained`` arguments of QLoRA's frozen base: 4-bit NF4 with nested quantisation, bf16 compute."""
    from transformers import BitsAndBytesConfig

    return {
        "dtype": torch.bfloat16,
        "device_map": {"": loaded.device.index or 0},
        "quantization_config": BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        ),
    }


def is_quantized(model: Any) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return bool(getattr(base, "is_loaded_in_4bit", False) or getattr(base, "is_loaded_in_8bit", False))


def plain_model(trainer: Any) -> PreTrainedModel:
    """The trained policy as a plain transformers model, without what the trainer wrapped it in.

    After ``train()`` the policy still carries accelerate's wrapper (under bf16 its ``forward`` runs
    in autocast and casts outputs to fp32), TRL's fused LM head (``add_fused_lm_head`` replaces the
    instance's ``forward``), gradient checkpointing if it was on, and a LoRA adapter as extra layers.
    Generation and the evidence then pay for all of it (seen in a GPU profile). So: unwrap, merge the
    adapter into the weights (a 4-bit base keeps it unmerged), and fall back to the class's own
    ``forward``.
    """
    model = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
    if hasattr(model, "merge_and_unload") and not is_quantized(model):
        adapter = _adapter_of(model)
        model = model.merge_and_unload()
        model.__dict__[ADAPTER_ATTRIBUTE] = adapter  # kept beside the merged weights: saved as ``adapter/``
    patched = model.get_base_model() if hasattr(model, "get_base_model") else model
    for name in ("forward", "_original_forward"):
        patched.__dict__.pop(name, None)
    if getattr(patched, "is_gradient_checkpointing", False):
        patched.gradient_checkpointing_disable()
        patched.config.use_cache = True
    return model.eval()


#: Where a merged LoRA policy keeps the adapter it was merged from (its weights and config, as plain data).
ADAPTER_ATTRIBUTE = "alignlab_adapter"
#: The adapter's own folder beside the merged weights: ``PeftModel.from_pretrained(base, <folder>/adapter)``.
ADAPTER_FOLDER = "adapter"


def _adapter_of(model: Any) -> tuple[dict[str, torch.Tensor], Any]:
    """A PEFT model's adapter as ``PeftModel.save_pretrained`` would write it: its weights and its config."""
    from peft import get_peft_model_state_dict

    weights = {key: value.detach().cpu().clone() for key, value in get_peft_model_state_dict(model).items()}
    return weights, model.peft_config["default"]


def save_policy(policy: PreTrainedModel, tokenizer: Any, directory: str | Path) -> Path:
    """Save a trained policy (or LoRA adapter) so that another process can load it; a LoRA run's merged policy
    also writes the adapter it was merged from into ``adapter/``, which ``peft`` loads over the base model."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    policy.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    adapter = policy.__dict__.get(ADAPTER_ATTRIBUTE)
    if adapter is not None:
        weights, config = adapter
        folder = directory / ADAPTER_FOLDER
        config.save_pretrained(folder)
        save_file(weights, folder / "adapter_model.safetensors", metadata={"format": "pt"})
    return directory


def load_policy(directory: str | Path, loaded: LoadedModel) -> PreTrainedModel:
    """A policy saved by :func:`save_policy`, on ``loaded``'s device, ready to generate.

    A full model comes back in fp32, like the loaded model. A QLoRA run saves its adapter alone
    (merging it into 4-bit weights would round the small update away): it comes back over the
    4-bit base, loaded again from ``loaded.source``.
    """
    from transformers import AutoModelForCausalLM

    directory = Path(directory)
    if (directory / "adapter_config.json").is_file():
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(loaded.source, **qlora_load_kwargs(loaded))
        return PeftModel.from_pretrained(base, directory).eval()
    policy = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).to(loaded.device).eval()
    return cpu_head.install(policy)
