"""A recipe built: every file of the folder as text, each stage's plan, memory estimate and config.

:func:`build_recipe` checks what was asked (the method, the engine, the adapter, the data, the mixture) before
anything is written, plans each stage (:func:`alignlab.recipe.plan.plan_run`), estimates its memory, writes its
config for TRL's own script and its data files, then run.sh and the README (:mod:`alignlab.recipe.files`).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from alignlab.data.presets import Preset
from alignlab.recipe.files import readme, run_sh
from alignlab.recipe.folder import Recipe, StageRecipe
from alignlab.recipe.memory import ADAPTERS, ENGINES, Adapter, Engine, MemoryEstimate
from alignlab.recipe.plan import RunPlan, plan_run
from alignlab.recipe.stages import (
    PUBLIC_DATASETS,
    SAMPLING_NO_MIX,
    RecipeStage,
    mixable,
    recipe_method,
    recipe_stages,
    thumbs_takers,
)
from alignlab.recipe.targets import DEFAULT_TARGET, RecipeError, resolve_target
from alignlab.registry.methods import Method, get_method
from alignlab.registry.model_shapes import ModelShape
from alignlab.registry.settings import TrainingSettings


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
    adapter, mix = _checked(m, preset, settings, engine, gpus, gpu_memory_gib, adapter, user_repeat, mix)
    shape = resolve_target(target)
    _check_mix(m, shape, mix, thumbs=bool(preset.unpaired))
    request = _Request(preset, settings, shape, gpus, engine, adapter, mix, user_repeat, scale, gpu_memory_gib)
    files: dict[str, str] = {}
    stages: list[StageRecipe] = []
    saved_to: dict[str, str] = {}  # product -> the folder its stage saves it to, for the stages after it
    for stage in recipe_stages(m):
        stages.append(_stage_recipe(request, stage, files, saved_to, len(stages) + 1, len(m.stages), learning_rate))
    files["run.sh"] = run_sh(stages, engine, gpus, adapter, mixed=bool(mix))
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
    recipe.files["README.md"] = readme(recipe, preset, settings, mix, user_repeat, scale)
    return recipe


def _checked(
    method: Method,
    preset: Preset,
    settings: TrainingSettings,
    engine: str,
    gpus: Any,
    gpu_memory_gib: float,
    adapter: str | None,
    user_repeat: Any,
    mix: list[str] | None,
) -> tuple[str, list[str]]:
    """The request checked before anything is built: (the adapter, the public sets to mix, each once)."""
    if engine not in ENGINES:
        raise RecipeError(f"engine must be one of {', '.join(ENGINES)} (got {engine!r}).")
    if not isinstance(gpus, int) or isinstance(gpus, bool) or not 1 <= gpus <= 1024:
        raise RecipeError(f"gpus must be a whole number from 1 to 1024 (got {gpus!r}).")
    if not 1 <= gpu_memory_gib <= 4096:
        raise RecipeError(f"GPU memory must be between 1 and 4096 GiB (got {gpu_memory_gib!r}).")
    adapter = adapter or (Adapter.QLORA if settings.use_qlora else Adapter.LORA if settings.use_lora else Adapter.FULL)
    if adapter not in ADAPTERS:
        raise RecipeError(f"adapter must be one of {', '.join(ADAPTERS)} (got {adapter!r}).")
    thumbs = list(preset.unpaired)
    if thumbs and not method.stage.reads_thumbs:
        takers = ", ".join(get_method(name).title for name in thumbs_takers())
        raise RecipeError(
            f"The data has {len(thumbs)} thumbs rows, which {method.title} cannot train on (it needs pairs): its "
            f"recipe would drop them. Export a recipe for a method that takes thumbs rows ({takers}), or remove them."
        )
    if not preset.pairs and not thumbs:
        raise RecipeError("There are no training pairs to export: add at least one pair.")
    if not isinstance(user_repeat, int) or not 1 <= user_repeat <= 1000:
        raise RecipeError(f"user_repeat must be a whole number from 1 to 1000 (got {user_repeat!r}).")
    mix = list(dict.fromkeys(mix or []))
    unknown = [name for name in mix if name not in PUBLIC_DATASETS]
    if unknown:
        raise RecipeError(f"Unknown public dataset(s) {', '.join(unknown)}; choose from {', '.join(PUBLIC_DATASETS)}.")
    return adapter, mix


def _check_mix(method: Method, shape: ModelShape, mix: list[str], thumbs: bool) -> None:
    """A mixture with the public sets needs pairs, a method that reads given answers, and a chat model."""
    if mix and thumbs:
        raise RecipeError(
            "The public sets are pairs, and thumbs rows cannot be written in their shape: export without --mix, or "
            "without the thumbs rows."
        )
    if mix and not mixable(method):
        raise RecipeError(
            f"The public preference sets do not fit {method.name.upper()}'s data: {SAMPLING_NO_MIX}; export without "
            "--mix."
        )
    if mix and not shape.chat:
        raise RecipeError(
            f"{shape.name} has no chat template, but the public sets are conversations: "
            "mix them only into a chat model's recipe."
        )


@dataclass(frozen=True)
class _Request:
    """What a recipe was asked for, checked."""

    preset: Preset
    settings: TrainingSettings
    shape: ModelShape
    gpus: int
    engine: str
    adapter: str
    mix: list[str]
    user_repeat: int
    scale: str
    gpu_memory_gib: float

    @property
    def prompt_tokens(self) -> int:
        """At most this many tokens per prompt: a byte-level tokenizer needs no more than a text's UTF-8 bytes."""
        prompts = [*self.preset.pairs, *self.preset.heldout_pairs]
        return max((len(p.prompt.encode("utf-8")) for p in prompts), default=0)


def _stage_recipe(
    request: _Request,
    stage: RecipeStage,
    files: dict[str, str],
    saved_to: dict[str, str],
    number: int,
    count: int,
    learning_rate: float | None,
) -> StageRecipe:
    """One stage: its data files, plan, memory estimate and config file (written into ``files``); ``saved_to``
    maps each earlier stage's product to the folder it saves it to, and gets this stage's."""
    preset, shape, mixed = request.preset, request.shape, bool(request.mix)
    train_rows = stage.rows(preset.pairs, shape.chat, mixed, list(preset.unpaired))
    train_file, eval_file = stage.data_files
    files[train_file] = _jsonl(train_rows * request.user_repeat)
    files[eval_file] = _jsonl(stage.rows(preset.heldout_pairs, shape.chat, mixed))
    plan = _stage_plan(request, stage, len(train_rows), learning_rate)
    memory = _stage_memory(request, stage, plan)
    dataset_config = _dataset_config(stage, files[train_file] + files[eval_file])
    config = _config(
        request.settings,
        stage,
        shape,
        plan,
        request.adapter,
        request.engine,
        request.mix,
        has_eval=bool(preset.heldout_pairs),
        dataset_config=dataset_config if number > 1 else None,  # the first stage's is the folder's default
        inputs={argument: saved_to[product] for argument, product in stage.inputs.items()},
    )
    saved_to[stage.trains] = stage.output_dir
    files[stage.config_file] = _yaml_text(config, _config_header(stage, shape, number, count))
    return StageRecipe(stage, plan, memory, config, dataset_config)


def _stage_plan(request: _Request, stage: RecipeStage, train_rows: int, learning_rate: float | None) -> RunPlan:
    """The stage's batch, rate and lengths for the target. A stage that samples answers draws its batch from its
    ``train_rows`` (the distinct prompts); one that reads given answers from the pairs, its thumbs rows counted as
    pairs of ``rows_per_pair`` rows."""
    preset = request.preset
    thumbs = math.ceil(len(preset.unpaired) / stage.rows_per_pair)
    return plan_run(
        request.settings,
        stage,
        request.shape,
        n_train=train_rows if stage.samples else len(preset.pairs) + thumbs,
        gpus=request.gpus,
        engine=request.engine,
        adapter=request.adapter,
        mixed=bool(request.mix),
        scale=request.scale,
        gpu_memory_gib=request.gpu_memory_gib,
        learning_rate=learning_rate if stage.stage.trains_policy else None,
        prompt_tokens=request.prompt_tokens if stage.samples else 0,
    )


def _stage_memory(request: _Request, stage: RecipeStage, plan: RunPlan) -> MemoryEstimate:
    """The stage's memory per GPU at its planned batch and lengths."""
    return stage.estimate(
        request.shape,
        engine=request.engine,
        gpus=request.gpus,
        adapter=request.adapter,
        lora_rank=request.settings.lora_rank,
        per_device_batch=plan.per_device_batch,
        global_batch=plan.global_batch,
        max_length=plan.max_length,
        gradient_checkpointing=plan.gradient_checkpointing,
        prompt_tokens=plan.prompt_tokens,
        completion_tokens=plan.max_completion_length,
    )


def _dataset_config(stage: RecipeStage, data: str) -> str:
    """The name of the folder's dataset config that holds the stage's ``data`` (its files' text).

    `datasets` caches a folder's splits under its folder and config names only, not its files' content: a config
    named after the content keeps a re-exported folder from reading the old rows' cache.
    """
    digest = hashlib.sha256(data.encode()).hexdigest()[:12]
    return f"{stage.data_config}-{digest}"


def _config(
    settings: TrainingSettings,
    method: RecipeStage,
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
    config.update(_data_arguments(method, mix, dataset_config))
    config.update(method.config_keys(settings))
    # TRL's script takes an eval split only from `dataset_name` or a random split: a mixture has none.
    config.update(_training_arguments(settings, method, plan, has_eval=has_eval and not mix))
    config.update(_adapter_arguments(settings, method, adapter, engine))
    return config


def _data_arguments(method: RecipeStage, mix: list[str], dataset_config: str | None) -> dict[str, Any]:
    """Where the stage's script reads its rows: the recipe folder's splits, or a mixture with the public sets."""
    if mix:
        # A mixture: TRL's `datasets` list, concatenated (paths relative to the recipe folder).
        return {
            "datasets": [{"path": "json", "data_files": method.data_files[0], "split": "train"}]
            + [
                {"path": PUBLIC_DATASETS[name].hub_id, "split": "train", "columns": ["chosen", "rejected"]}
                for name in mix
            ]
        }
    # The recipe folder is the dataset: README.md's YAML header maps train.jsonl and eval.jsonl to
    # the train and test splits. `datasets` needs the folder's absolute path (with "." it fails),
    # which only the launch knows: run.sh passes `--dataset_name <this folder>`.
    arguments: dict[str, Any] = {"dataset_config": dataset_config} if dataset_config else {}
    return arguments | {"dataset_train_split": "train", "dataset_test_split": "test"}


def _training_arguments(
    settings: TrainingSettings, method: RecipeStage, plan: RunPlan, has_eval: bool
) -> dict[str, Any]:
    """The plan's numbers as the stage's TRL config fields, with the run's logging, saving and evaluation."""
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
    arguments = {key: value for key, value in training.items() if key in accepted and value is not None}
    if has_eval:
        arguments["eval_steps"] = 50
    return arguments


def _adapter_arguments(settings: TrainingSettings, method: RecipeStage, adapter: str, engine: str) -> dict[str, Any]:
    """TRL's ModelConfig fields for a LoRA adapter (on a 4-bit base under QLoRA); none for full fine-tuning."""
    if adapter == Adapter.FULL:
        return {}
    arguments: dict[str, Any] = {
        "use_peft": True,
        "lora_r": settings.lora_rank,
        "lora_alpha": 2 * settings.lora_rank,
        "lora_dropout": 0.0,
        "lora_target_modules": "all-linear",
    }
    if method.lora_task_type:
        arguments["lora_task_type"] = method.lora_task_type
    if adapter == Adapter.QLORA:
        arguments.update({"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "use_bnb_nested_quant": True})
        if ENGINES[engine].shards_weights:
            arguments["bnb_4bit_quant_storage"] = "bfloat16"  # lets ZeRO-3/FSDP shard the 4-bit weights
    return arguments


def _config_header(method: RecipeStage, shape: ModelShape, number: int, stages: int) -> str:
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
