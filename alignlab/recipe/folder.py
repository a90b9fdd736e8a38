"""What a recipe folder holds: every file as text, and each stage's plan, memory estimate and config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from alignlab.recipe.memory import ADAPTERS, ENGINES, GIB, MemoryEstimate
from alignlab.recipe.plan import RunPlan
from alignlab.recipe.stages import RecipeStage
from alignlab.registry.methods import Method
from alignlab.registry.model_shapes import ModelShape, count_text


@dataclass
class StageRecipe:
    """One stage of a recipe: one TRL script run, with its plan, memory estimate and config."""

    stage: RecipeStage
    plan: RunPlan
    memory: MemoryEstimate
    config: dict[str, Any]
    dataset_config: str
    """The dataset config (in README.md's header) that maps the stage's data files to the splits."""

    def estimate(self, shape: ModelShape, engine: str, gpus: int, adapter: str, lora_rank: int) -> MemoryEstimate:
        """This stage's estimate on another engine or adapter, one row per GPU, the rest of its plan kept."""
        return self.stage.estimate(
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
    method: Method
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
                    f"{i}. {s.stage.product} {s.memory.total / GIB:.1f} GiB (batch {s.plan.per_device_batch} x "
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
