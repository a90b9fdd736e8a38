"""From the lab to a real run: a folder that launches TRL's own training script on a cluster.

The lab trains a 135M model for six steps; a real run trains a 7-8B model on tens of thousands of pairs on
several GPUs. :func:`build_recipe` turns what the learner settled on in the lab (the method, beta, the loss
variant, LoRA, their pairs) into that run, and :func:`write_recipe` writes it:

- ``train.jsonl``, ``eval.jsonl``: the pairs in TRL's format for the target model, the rows the lab trains on
  (:mod:`alignlab.training.trl_rows`);
- ``config.yaml``: the arguments of TRL's own script for the method (``trl.scripts.dpo`` for DPO), the lab's
  settings mapped and scaled for the target (:mod:`alignlab.recipe.plan`);
- ``accelerate/*.yaml``: TRL's own launcher configs (DDP, DeepSpeed ZeRO-2/3, FSDP) for N GPUs;
- ``run.sh``: launches it (``--cpu`` tries the same recipe over gloo on N CPU processes);
- ``README.md``: what runs, the memory estimate (:mod:`alignlab.recipe.memory`) and the dataset mixing; its YAML
  header is also the dataset card that tells ``datasets`` which file is which split.

Which script a method runs, its rows and its config fields are the method registry's (:mod:`alignlab.registry.methods`);
nothing here branches on a method's name. A method of several stages (RLHF) runs one TRL script per stage, in
order, each with its own config file, data and output folder (:mod:`alignlab.recipe.stages`).

The modules, bottom up: ``targets`` (the model), ``memory`` (estimates), ``stages`` (the registry's stages as
scripts), ``plan`` (the numbers), ``folder`` (what a recipe holds), ``files`` (run.sh and the README, rendered
from ``templates/``; writing the folder), ``build`` (:func:`build_recipe`).
"""

from alignlab.recipe.build import build_recipe
from alignlab.recipe.files import logged_rows, recipe_zip, write_recipe
from alignlab.recipe.folder import Recipe, StageRecipe
from alignlab.recipe.memory import (
    ADAPTERS,
    ENGINES,
    GIB,
    MemoryEstimate,
    bytes_text,
    estimate_memory,
    estimate_sampling_memory,
    lab_memory_estimate,
    reward_model_shape,
)
from alignlab.recipe.plan import RunPlan, plan_run
from alignlab.recipe.stages import PUBLIC_DATASETS, RecipeStage, recipe_method, recipe_methods, recipe_stages
from alignlab.recipe.targets import DEFAULT_TARGET, KNOWN_TARGETS, RecipeError, resolve_target

__all__ = [
    "ADAPTERS",
    "DEFAULT_TARGET",
    "ENGINES",
    "GIB",
    "KNOWN_TARGETS",
    "PUBLIC_DATASETS",
    "MemoryEstimate",
    "Recipe",
    "RecipeError",
    "RecipeStage",
    "RunPlan",
    "StageRecipe",
    "build_recipe",
    "bytes_text",
    "estimate_memory",
    "estimate_sampling_memory",
    "lab_memory_estimate",
    "logged_rows",
    "plan_run",
    "recipe_method",
    "recipe_methods",
    "recipe_stages",
    "recipe_zip",
    "resolve_target",
    "reward_model_shape",
    "write_recipe",
]
