"""A method's stages as a recipe runs them: each one of TRL's own scripts, with its files and its batch.

Everything here is read from the method registry (:mod:`alignlab.registry.methods`): which script a stage runs, its
rows,
whether it keeps a frozen reference, its config fields and a real run's learning rates. A
:class:`RecipeStage` adds only what follows from the stage's place in a recipe folder: its config file, its data
files and the folder it saves to (a method of several stages, RLHF, runs one script per stage, in order, each
saving what it trains for the next).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from alignlab.data.pairs import PreferencePair, UnpairedRow
from alignlab.recipe.memory import (
    Adapter,
    MemoryEstimate,
    estimate_memory,
    estimate_sampling_memory,
    reward_model_shape,
)
from alignlab.recipe.targets import RecipeError
from alignlab.registry.methods import METHODS, Data, Method, Product, Stage, UnknownMethodError, get_method, resolve
from alignlab.registry.model_shapes import ModelShape
from alignlab.registry.settings import TrainingSettings
from alignlab.training.trl_rows import recipe_rows

#: The unit of a stage's batch, by the rows it reads: a pair, a thumbs row, or an answer it samples.
BATCH_UNITS = {Data.PAIRED: "pairs", Data.UNPAIRED: "rows", Data.PROMPTS: "answers"}
#: The config fields a recipe plans for the target itself (batch, answer length, rates), rather than copying
#: them from the lab's trainer; the stage's other own fields carry over as the lab sets them.
PLANNED_FIELDS = frozenset(
    {
        "per_device_train_batch_size",
        "precompute_ref_log_probs",
        "max_completion_length",
        "learning_rate",
        "remove_unused_columns",
    }
)
#: Why a method that samples its answers takes no public preference set into its recipe.
SAMPLING_NO_MIX = "its RL stage samples answers to prompts, and the public sets hold conversations, not prompt rows"


@dataclass(frozen=True)
class RecipeStage:
    """One stage of ``method`` as one TRL script run in a recipe folder."""

    method: Method
    stage: Stage

    @property
    def title(self) -> str:
        return self.method.title

    @property
    def trains(self) -> Product:
        return self.stage.trains

    @property
    def product(self) -> str:
        """What the stage trains, in words: 'policy', 'reward model'."""
        return self.stage.trains.replace("_", " ")

    @property
    def config_file(self) -> str:
        """The policy's stage reads ``config.yaml``; an earlier stage its own (``config.reward.yaml``)."""
        if self.stage.trains_policy:
            return "config.yaml"
        return f"config.{self.stage.trains.split('_')[0]}.yaml"

    @property
    def output_dir(self) -> str:
        """Where the stage's script saves what it trains (``output``; an earlier stage's under it)."""
        return "output" if self.stage.trains_policy else f"output/{self.stage.trains}"

    @property
    def samples(self) -> bool:
        """Whether the stage samples its own answers to prompts (online RL) rather than reading given ones."""
        return self.stage.samples_answers

    @property
    def data_files(self) -> tuple[str, str]:
        """This stage's train and eval files: the dataset's splits, in the recipe folder."""
        return ("train_prompts.jsonl", "eval_prompts.jsonl") if self.samples else ("train.jsonl", "eval.jsonl")

    @property
    def data_config(self) -> str:
        """The name (before its content digest) of the dataset config that maps :attr:`data_files` to the splits."""
        return "prompts" if self.samples else "pairs"

    @property
    def lora_task_type(self) -> str | None:
        """PEFT's task type for this stage's adapter where it is not a causal LM's (a reward model's: ``SEQ_CLS``,
        whose score head then trains whole beside the adapter)."""
        return "SEQ_CLS" if self.stage.trains_reward_model else None

    @property
    def inputs(self) -> dict[str, Product]:
        """Script argument -> the product of an earlier stage, passed as the folder it was saved to."""
        return self.stage.script_inputs

    @property
    def script(self) -> str:
        """The module ``python -m`` runs: TRL's own script, as the registry names it."""
        return str(self.stage.script)

    @property
    def trl_command(self) -> str:
        """``trl <command>`` runs the same script."""
        return self.script.rsplit(".", 1)[-1]

    @property
    def trainer_class(self) -> str:
        return self.stage.trainer.rsplit(".", 1)[-1]

    @property
    def config_class(self) -> str:
        """TRL's config dataclass whose fields the method's keys are (for the README)."""
        return self.stage.config.rsplit(".", 1)[-1]

    def config_class_fields(self) -> set[str]:
        """The fields TRL's config class for this stage takes (RLOO has no ``max_length``, for one)."""
        return {f.name for f in dataclasses.fields(resolve(self.stage.config))}

    @property
    def purpose(self) -> str:
        return self.stage.purpose

    @property
    def rows_per_pair(self) -> int:
        """Dataset rows per pair: a batch of the lab's pairs is this many of the script's rows."""
        return self.stage.rows_per_pair

    @property
    def unit(self) -> str:
        return BATCH_UNITS[self.stage.data]

    @property
    def reference_copy(self) -> bool:
        """Whether full fine-tuning keeps a frozen reference model beside the trained one."""
        return self.stage.has_reference

    def rows(
        self, pairs: list[PreferencePair], chat: bool, implicit_prompt: bool = False, unpaired: list[UnpairedRow] = ()
    ) -> list[dict[str, Any]]:
        """Rows of the stage's data file (:func:`alignlab.training.trl_rows.recipe_rows`)."""
        return recipe_rows(self.stage, pairs, chat, implicit_prompt, unpaired)

    def lab_fields(self, settings: TrainingSettings) -> dict[str, Any]:
        """The stage's own config fields as the lab's trainer gets them."""
        return self.stage.own_fields(settings)

    def config_keys(self, settings: TrainingSettings) -> dict[str, Any]:
        """The method's own keys in the stage's config file, valued as the lab's trainer gets them."""
        return {key: value for key, value in self.lab_fields(settings).items() if key not in PLANNED_FIELDS}

    def lab_batch(self, settings: TrainingSettings) -> int:
        """The lab's batch in this stage's rows (:attr:`unit`): its trainer's per-device batch, the lab running on one
        device (KTO: 2 rows per pair; RLOO: each prompt's sampled answers), else the settings' pairs per step."""
        return int(self.lab_fields(settings).get("per_device_train_batch_size", settings.batch_size))

    def batch_multiple(self, settings: TrainingSettings) -> int:
        """What the global batch must be a multiple of: RLOO's whole groups of ``num_generations`` answers."""
        return int(self.lab_fields(settings).get("num_generations", 1))

    def lab_learning_rate(self, settings: TrainingSettings) -> float:
        """The rate the lab trains this stage at: the stage's own (the reward model's) or the settings'."""
        return float(self.stage.options.get("learning_rate", settings.learning_rate))

    def target_learning_rate(self, adapter: str) -> float:
        """A real run's usual rate for this stage: full fine-tuning's, or an adapter's."""
        full, with_adapter = self.stage.target_rates or (0.0, 0.0)
        return with_adapter if adapter != Adapter.FULL else full

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
        scored = reward_model_shape(shape) if self.stage.trains_reward_model else shape
        return estimate_memory(
            scored,
            **common,
            max_length=max_length,
            gradient_checkpointing=gradient_checkpointing,
            reference=self.reference_copy,
        )


def recipe_methods() -> list[str]:
    """The methods a recipe can run: those whose every stage has a TRL script."""
    return [name for name, method in METHODS.items() if method.has_recipe]


def recipe_method(name: str) -> Method:
    """The registry entry of a method a recipe can run; a method without one raises a :class:`RecipeError`
    saying why."""
    try:
        method = get_method(name)
    except UnknownMethodError as exc:
        raise RecipeError(str(exc)) from None
    if method.has_recipe:
        return method
    have = ", ".join(METHODS[n].title for n in recipe_methods())
    raise RecipeError(
        f"TRL 1.16 ships no training script for {method.title} (its trainer, `{method.stage.trainer}`, lives in "
        f"`trl.experimental`). Recipes exist for {have}."
    )


def recipe_stages(method: Method) -> list[RecipeStage]:
    """Every stage of ``method`` in the order run.sh runs them (the policy's last)."""
    return [RecipeStage(method, stage) for stage in method.stages]


def mixable(method: Method) -> bool:
    """Whether the public preference sets fit the method's data: not where a stage samples its own answers."""
    return not any(stage.samples_answers for stage in method.stages)


def thumbs_takers() -> list[str]:
    """The methods whose recipe trains on thumbs rows as they are."""
    return [name for name in recipe_methods() if METHODS[name].stage.reads_thumbs]


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
