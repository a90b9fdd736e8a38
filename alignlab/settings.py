"""What a person sets: the training settings (one dataclass, one place for each knob) and the generation settings.

:class:`TrainingSettings` is the one place where the lab's training knobs live: the Train tab's widgets, the
API's documentation, the CLI's flags and the TRL config all come from it and from :data:`KNOBS` (each knob's
label, range and meaning). :meth:`TrainingSettings.trainer_config` is the one place where a TRL config is
built. The method (``method``: DPO, IPO, KTO, ORPO, SimPO, RLHF) is an entry of :mod:`alignlab.methods`,
whose own defaults (learning rate, beta, steps) are this dataclass's defaults for DPO and
:meth:`TrainingSettings.for_method`'s for the others.

This module imports torch, TRL and PEFT only inside the methods that need them, so that the torch-free
modules (:mod:`alignlab.gpu`) can read the defaults.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alignlab.methods import (
    DEFAULT_METHOD,
    LOSS_TYPES,
    METHODS,
    Method,
    Stage,
    UnknownMethodError,
    entry_for,
    get_method,
    known_methods,
    method_title,
    resolve,
)

if TYPE_CHECKING:
    import torch

#: The default method's own defaults: the dataclass's defaults below.
_DEFAULT = METHODS[DEFAULT_METHOD].defaults


class SettingsError(ValueError):
    """A training setting is out of range; the message names each bad field."""


@dataclass(frozen=True)
class Knob:
    """A tunable setting as a person meets it: its label, its range and what it does.

    :data:`KNOBS` is the one source of these for the checks (:meth:`TrainingSettings.problems`), the Train
    tab's widgets, the API's documentation (:func:`alignlab.ui.common.api_doc`) and the CLI's flags.
    """

    label: str
    low: float
    high: float
    means: str
    whole: bool = False

    @property
    def noun(self) -> str:
        """The label as a sentence names it: 'steps', 'learning rate'; 'LoRA rank' and 'β (beta)' as they are."""
        keep = not self.label[0].isascii() or any(c.isupper() for c in self.label[1:])
        return self.label if keep else self.label.lower()

    def range_text(self, join: str = "-") -> str:
        high = "2^32-1" if self.high == 2**32 - 1 else _number_text(self.high)
        return f"{_number_text(self.low)}{join}{high}"

    def info(self) -> str:
        """The widget's help line: the range, then what the setting does."""
        return f"{self.range_text('–')}. {self.means}"

    def accepts(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            return False
        if self.whole and not isinstance(value, int):
            return False
        return self.low <= value <= self.high

    def problem(self, name: str, value: Any) -> str:
        if self.whole:
            return f"{name} must be a whole number from {self.range_text(' to ')} (got {value!r})."
        return f"{name} must be between {self.range_text(' and ')} (got {value!r})."


def _number_text(value: float) -> str:
    """1e-8 and 1e-3 as people write them (not 1e-08 and 0.001); other numbers as ``:g`` has them."""
    if 0 < abs(value) < 0.01:
        mantissa, exponent = f"{value:.0e}".split("e")
        return f"{mantissa}e{int(exponent)}"
    return f"{value:g}"


#: Every numeric training setting's label, range and meaning (β's range is the method's: ``Method.beta_range``).
KNOBS: dict[str, Knob] = {
    "beta": Knob("β (beta)", 0.01, 1.0, "How tightly the model is held to the original: higher = closer."),
    "learning_rate": Knob("Learning rate", 1e-8, 1e-3, "Optimizer step size; too high and training goes unstable."),
    "steps": Knob("Steps", 1, 500, "Optimizer steps; more = bigger change.", whole=True),
    "epochs": Knob("Epochs", 0.1, 50, "Passes over the pairs, instead of steps."),
    "batch_size": Knob("Batch size", 1, 64, "Pairs per optimizer step.", whole=True),
    "sft_weight": Knob("SFT weight", 0.0, 10.0, "DPO: weight of an added SFT term on the chosen answers (0 = none)."),
    "seed": Knob("Seed", 0, 2**32 - 1, "Same seed + data = same run.", whole=True),
    "max_length": Knob("Max length", 32, 2048, "Tokens kept per prompt + answer; longer pairs are cut.", whole=True),
    "lora_rank": Knob("LoRA rank", 1, 256, "LoRA adapter rank; higher = more capacity.", whole=True),
}


@dataclass
class TrainingSettings:
    """Everything that shapes a lab's run. The defaults are DPO's registry entry's (each method's own are in its
    entry: :meth:`for_method`); the bench's calibration section is where they were chosen."""

    method: str = DEFAULT_METHOD
    """The preference method, a name in :data:`alignlab.methods.METHODS` (dpo, ipo, kto, orpo, simpo, rlhf).
    ``ipo`` is DPO with the IPO loss: it is stored as ``method='dpo'``, ``loss_type='ipo'``."""
    beta: float = _DEFAULT["beta"]
    """How tightly the policy is held to the reference (0.01-1.0; SimPO's reward scale goes to 10). Small
    beta lets it move far; large beta keeps it close and needs a bigger log-prob gap for the same reward."""
    learning_rate: float = _DEFAULT["learning_rate"]
    """Adam step size (1e-8 to 1e-3). A lab run has few steps, so it is higher than a real run's; DPO's 2e-5 is
    the highest at which no seed-lab answer loops after 6 steps on the embedded model while every preset moves."""
    steps: int | None = _DEFAULT["steps"]
    """Optimizer steps to run (1-500), in each stage of a method of several (RLHF). Set this or ``epochs``, not both."""
    epochs: float | None = None
    """Passes over the pairs (0.1-50), instead of ``steps``."""
    batch_size: int = 2
    """Pairs per optimizer step (1-64). 2 puts a point on the plot every few seconds on a CPU; 6
    steps then see 12 pairs, enough for the seed lab's shift (the bench's shift section)."""
    loss_type: str = "sigmoid"
    """DPO's loss variant, one of :data:`LOSS_TYPES`; ``sigmoid`` is DPO. Other methods keep ``sigmoid``."""
    sft_weight: float = 0.0
    """Weight of an SFT term (the chosen answers' negative log-likelihood) added to the preference
    loss (0-10; 0 = none): the production habit that keeps a model fluent while its preference
    moves. TRL's ``loss_type=[loss, "sft"]`` with ``loss_weights=[1, sft_weight]``."""
    seed: int = 42
    """Seeds data order and initialisation: same seed and data, same run."""
    max_length: int = 256
    """Tokens kept per prompt+answer (32-2048); longer pairs are cut at the end."""
    use_lora: bool = False
    """Train a LoRA adapter instead of every weight; the reference is the adapter switched off."""
    lora_rank: int = 16
    """LoRA rank (1-256), when ``use_lora``."""
    precompute_ref_log_probs: bool = False
    """Full fine-tuning: score every pair with the reference once, before the first step, instead of
    scoring each batch as it trains. Off by default: that pass delays the first plotted step by
    several seconds on a CPU and saves no memory, since the reference shares the cached weights
    (the bench's candidates section)."""
    precision: str = "auto"
    """'auto' (bf16 on a GPU that has it, else fp32), 'fp32' or 'bf16'."""
    use_qlora: bool = False
    """QLoRA: the LoRA adapter trains on the base loaded in 4-bit NF4 (bitsandbytes), a quarter of its bf16
    memory. Needs ``use_lora``, a CUDA GPU and the bitsandbytes package
    (see :func:`alignlab.trainer.qlora_unavailable`)."""

    def __post_init__(self) -> None:
        entry = METHODS.get(self.method) if isinstance(self.method, str) else None
        if entry is not None and entry.loss_type is not None:  # a loss variant named as a method
            if self.loss_type not in ("sigmoid", entry.loss_type):
                raise SettingsError(
                    f"method {self.method!r} is DPO with loss_type {entry.loss_type!r}; it cannot also take "
                    f"loss_type {self.loss_type!r} (use method 'dpo' for that)."
                )
            self.method, self.loss_type = entry.runs_as, entry.loss_type
        problems = self.problems()
        if problems:
            raise SettingsError(" ".join(problems))

    @classmethod
    def for_method(cls, method: str = DEFAULT_METHOD, **overrides: Any) -> TrainingSettings:
        """Settings with ``method``'s own defaults (learning rate, beta, steps), then ``overrides``.

        An override of None leaves the method's default (so a CLI flag or API argument left empty gets it).
        """
        try:
            entry = get_method(method)
        except UnknownMethodError as exc:
            raise SettingsError(str(exc)) from None
        given = {k: v for k, v in overrides.items() if v is not None}
        return cls(**{"method": method, **entry.defaults, **given})

    @property
    def method_label(self) -> str:
        """The method as a person names it: 'DPO', 'IPO' (a loss variant with its own entry), 'DPO (hinge loss)',
        with DPO's SFT term when it has one ('IPO + SFT×2')."""
        return method_title(self.method, self.loss_type, self.sft_weight)

    @property
    def method_entry(self) -> Method:
        """This run's registry entry: ``ipo`` settings are stored as DPO with loss_type ipo, and their entry is IPO's
        (its held-out scorer), which runs as DPO's."""
        return entry_for(self.method, self.loss_type)

    def problems(self) -> list[str]:
        """Each out-of-range field as a sentence; empty when the settings are usable."""
        out: list[str] = []

        def check(name: str, ok: bool, what: str) -> None:
            if not ok:
                out.append(f"{name} must be {what} (got {getattr(self, name)!r}).")

        def number(value: Any) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value

        entry = METHODS.get(self.method) if isinstance(self.method, str) else None
        if entry is None:
            out.append(f"method must be one of {known_methods()} (got {self.method!r}).")
        low, high = entry.beta_range if entry is not None else (KNOBS["beta"].low, KNOBS["beta"].high)
        check("beta", number(self.beta) and low <= self.beta <= high, f"between {low} and {high}")
        if (self.steps is None) == (self.epochs is None):
            out.append("Give either steps or epochs (exactly one).")
        for name in ("learning_rate", "steps", "epochs", "batch_size", "sft_weight", "seed", "max_length", "lora_rank"):
            value = getattr(self, name)
            if value is None and name in ("steps", "epochs"):
                continue
            if not KNOBS[name].accepts(value):
                out.append(KNOBS[name].problem(name, value))
        check("loss_type", self.loss_type in LOSS_TYPES, f"one of {', '.join(LOSS_TYPES)}")
        check("precision", self.precision in ("auto", "fp32", "bf16"), "'auto', 'fp32' or 'bf16'")
        if self.use_qlora and not self.use_lora:
            out.append("use_qlora needs use_lora: QLoRA is a LoRA adapter on a 4-bit base.")
        if entry is not None and not entry.loss_variants:
            if self.loss_type != "sigmoid":
                out.append(f"loss_type is DPO's; method {self.method!r} takes none (got {self.loss_type!r}).")
            if self.sft_weight:
                out.append(
                    f"sft_weight is DPO's SFT term; method {self.method!r} takes none (got {self.sft_weight!r})."
                )
        if entry is not None and self.use_qlora and not entry.supports_qlora:
            out.append(f"use_qlora: method {self.method!r} runs on a model TRL cannot load in 4-bit for it; use LoRA.")
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingSettings:
        """Settings from a (possibly partial) dict; unknown keys are an error, not ignored."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SettingsError(f"Unknown setting(s): {', '.join(unknown)}. Known: {', '.join(sorted(known))}.")
        return cls(**data)

    def use_bf16(self, device: torch.device) -> bool:
        if self.precision == "bf16":
            return True
        if self.precision == "fp32":
            return False
        import torch

        return device.type == "cuda" and torch.cuda.is_bf16_supported()

    def stage_steps(self, n_pairs: int) -> int:
        """Optimizer steps each stage of this run takes on ``n_pairs`` pairs."""
        if self.steps is not None:
            return self.steps
        per_epoch = max(1, -(-n_pairs // self.batch_size))
        return max(1, int(round(per_epoch * float(self.epochs))))

    def total_steps(self, n_pairs: int) -> int:
        """Optimizer steps this run will take on ``n_pairs`` pairs, over all of its method's stages."""
        return self.stage_steps(n_pairs) * len(self.method_entry.stages)

    def peft_config(self) -> Any:
        """The LoRA adapter's config when ``use_lora``, else None (full fine-tuning)."""
        if not self.use_lora:
            return None
        from peft import LoraConfig

        return LoraConfig(
            r=self.lora_rank,
            lora_alpha=2 * self.lora_rank,
            lora_dropout=0.0,
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        )

    def trainer_config(self, output_dir: str | Path, device: torch.device, stage: Stage | None = None) -> Any:
        """The only place where a TRL config is built: the fields every trainer shares (each choice is
        explained beside it), then the stage's own (its registry entry's ``fields_from`` and ``options``).

        ``stage``: which of the method's stages (default: the policy's, the last).
        """
        stage = stage or self.method_entry.stage
        config_class = resolve(stage.config)
        bf16 = self.use_bf16(device)
        shared = dict(
            output_dir=str(output_dir),
            learning_rate=self.learning_rate,
            max_steps=self.steps if self.steps is not None else -1,
            num_train_epochs=float(self.epochs) if self.epochs is not None else 1.0,
            per_device_train_batch_size=self.batch_size,
            gradient_accumulation_steps=1,
            seed=self.seed,
            data_seed=self.seed,
            max_length=self.max_length,
            # A short run wants the full rate on every step and no warm-up.
            lr_scheduler_type="constant",
            warmup_steps=0,
            logging_steps=1,  # TRL's default of 10 would plot almost nothing
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            use_cpu=device.type != "cuda",
            bf16=bf16,
            fp16=False,
            gradient_checkpointing=False,  # at the lab's sizes it only costs time (the bench's candidates)
            dataloader_num_workers=0,
            # One fused kernel for the AdamW update, not a loop of them: a seventh of the foreach loop's time on
            # a CPU step of the embedded model (docs/performance.md).
            optim="adamw_torch_fused",
        )
        # RLOO/GRPO have no max_length (their lengths are the prompt's and max_completion_length).
        accepted = {f.name for f in fields(config_class)}
        shared = {k: v for k, v in shared.items() if k in accepted}
        return config_class(**{**shared, **stage.own_fields(self)})


#: The longest answer the lab generates, in tokens.
MAX_NEW_TOKENS_LIMIT = 512
#: The live held-out curve scores at most this many held-out and contrast pairs at each of its points.
LIVE_PROBE_PAIRS = 24
#: The live curve scores every this many steps at least: a point costs about two thirds of a CPU training step
#: of the embedded model on 14 + 14 pairs (``docs/performance.md``), so every other step keeps the lab's time.
CURVE_EVERY = 2
#: ...and at most this many points on a long run.
MAX_CURVE_POINTS = 15


def curve_every(steps: int) -> int:
    """Every how many steps the live curve scores a run of ``steps`` steps (the last step is always scored)."""
    return max(CURVE_EVERY, -(-steps // MAX_CURVE_POINTS))


def curve_scores_step(step: int, steps: int) -> bool:
    """Whether the live curve scores the policy after ``step`` (1-based) of a run of ``steps`` steps."""
    return step >= steps or step % curve_every(steps) == 0


class GenerationSettingsError(ValueError):
    """A generation setting is out of range; the message names it."""


@dataclass
class GenerationSettings:
    """How eval prompts are answered."""

    max_new_tokens: int = 64
    """Answer length cap in tokens (1-512). Longer answers cost time linearly. The lab's one default for it:
    the CLI, the API and the app read it from here."""
    do_sample: bool = False
    """False: greedy decoding (deterministic). True: seeded sampling."""
    temperature: float = 0.7
    """Sampling temperature (0.05-2.0); used only when sampling."""
    top_p: float = 0.9
    """Nucleus sampling mass (0.05-1.0); used only when sampling."""
    seed: int = 0
    """Seed for sampling, so that a sampled run can be repeated exactly."""
    batch_size: int = 16
    """Prompts per forward batch (1-64)."""
    min_new_tokens: int = 0
    """Answer length floor in tokens (0 to max_new_tokens): the end-of-turn token is held back until then.
    0 for the lab; the bench sets it to max_new_tokens so that a random-weight model, which tends to stop
    at once, generates its full length."""

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise GenerationSettingsError(" ".join(problems))

    def problems(self) -> list[str]:
        out = []
        if not isinstance(self.max_new_tokens, int) or not 1 <= self.max_new_tokens <= MAX_NEW_TOKENS_LIMIT:
            out.append(
                f"max_new_tokens must be a whole number from 1 to {MAX_NEW_TOKENS_LIMIT} (got {self.max_new_tokens!r})."
            )
        if not 0.05 <= float(self.temperature) <= 2.0:
            out.append(f"temperature must be between 0.05 and 2.0 (got {self.temperature!r}).")
        if not 0.05 <= float(self.top_p) <= 1.0:
            out.append(f"top_p must be between 0.05 and 1.0 (got {self.top_p!r}).")
        if not isinstance(self.batch_size, int) or not 1 <= self.batch_size <= 64:
            out.append(f"batch_size must be from 1 to 64 (got {self.batch_size!r}).")
        ceiling = self.max_new_tokens if isinstance(self.max_new_tokens, int) else MAX_NEW_TOKENS_LIMIT
        if not isinstance(self.min_new_tokens, int) or not 0 <= self.min_new_tokens <= ceiling:
            out.append(f"min_new_tokens must be from 0 to max_new_tokens (got {self.min_new_tokens!r}).")
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
