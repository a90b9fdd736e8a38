"""What a person sets: the training settings and the generation settings, each setting declared once.

Each field of :class:`TrainingSettings` and :class:`GenerationSettings` declares, in the style of TRL's config
dataclasses (``field(metadata={"help": ...})``), its type, its default, its range or choices, its label and its
help. Everything else reads them from there through :class:`Knob`: the one check (``problems``, run by
``__post_init__``), the app's widgets and its API documentation (:mod:`alignlab.ui.inputs`,
:func:`alignlab.ui.common.api_doc`) and the CLI's flags (:mod:`alignlab.cli`). β's range and the choices of
``method`` and ``loss_type`` are the registry's (:mod:`alignlab.registry.methods`): each method's own β range, and every
method and loss type it lists. :meth:`TrainingSettings.trainer_config` is the one place where a TRL config is
built. The method's own defaults (learning rate, beta, steps) are this dataclass's defaults for DPO and
:meth:`TrainingSettings.for_method`'s for the others.

This module imports torch, TRL and PEFT only inside the methods that need them, so that the torch-free
modules (:mod:`alignlab.serving.gpu`) can read the defaults.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import MISSING, Field, asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alignlab.registry.methods import (
    DEFAULT_METHOD,
    LOSS_TYPES,
    METHODS,
    Method,
    Stage,
    UnknownMethodError,
    beta_ranges,
    entry_for,
    get_method,
    method_title,
    resolve,
)

if TYPE_CHECKING:
    import torch

#: The default method's own defaults: the dataclass's defaults below.
_DEFAULT = METHODS[DEFAULT_METHOD].defaults
#: The longest answer the lab generates, in tokens.
MAX_NEW_TOKENS_LIMIT = 512


class SettingsError(ValueError):
    """A training setting is out of range; the message names each bad field."""


@dataclass(frozen=True)
class Knob:
    """A setting as its field declares it: what the check, the widgets, the API's docs and the CLI's flags read.

    ``low``/``high``: the range of a number (None: none, or β's, which is the method's: :meth:`bounds`);
    ``choices``: the values a text setting takes; ``switch``: on or off; ``optional``: None is accepted (steps or
    epochs).
    """

    name: str
    label: str
    help: str
    default: Any
    whole: bool = False
    number: bool = False
    switch: bool = False
    optional: bool = False
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()

    @classmethod
    def of(cls, declared: Field) -> Knob:
        """The knob of a settings field (its type is the annotation's text: ``from __future__ import annotations``)."""
        meta = declared.metadata
        kind = str(declared.type)
        low, high = meta.get("range", (None, None))
        return cls(
            name=declared.name,
            label=meta.get("label", declared.name),
            help=meta["help"],
            default=None if declared.default is MISSING else declared.default,
            whole=kind.startswith("int"),
            number=kind.startswith(("int", "float")),
            switch=kind == "bool",
            optional="None" in kind,
            low=low,
            high=high,
            choices=tuple(meta.get("choices", ())),
        )

    def bounds(self, method: Method | None = None) -> tuple[float, float] | None:
        """The range a value must lie in: the field's own, or for β the method's (the default method's without one)."""
        if self.name == "beta":
            return (method or METHODS[DEFAULT_METHOD]).beta_range
        return None if self.low is None or self.high is None else (self.low, self.high)

    def range_text(self, join: str = "-", method: Method | None = None, exact: bool = False) -> str:
        """'1-500', '1e-8 to 1e-3', '0 to 2^32-1'; ``exact``: reals as Python writes them ('0.01 and 1.0')."""
        low, high = self.bounds(method) or (0, 0)
        return f"{self._number(low, exact)}{join}{self._number(high, exact)}"

    def _number(self, value: float, exact: bool) -> str:
        if self.whole:
            value = int(value)
            if value > 2**16 and (value + 1).bit_count() == 1:
                return f"2^{(value + 1).bit_length() - 1}-1"
            return str(value)
        if 0 < abs(value) < 0.01:  # 1e-8 and 1e-3 as people write them, not 1e-08 and 0.001
            mantissa, exponent = f"{value:.0e}".split("e")
            return f"{mantissa}e{int(exponent)}"
        return repr(float(value)) if exact else f"{value:g}"

    def info(self) -> str:
        """A widget's help line: the range, then what the setting does."""
        return f"{self.range_text('–')}. {self.help}" if self.bounds() else self.help

    def doc(self, default: str | None = None, choices: Iterable[str] | None = None) -> str:
        """The setting for a reader of the API page or of ``--help``: what it does, then its range or choices (β's
        per method, from the registry; ``choices`` where a door takes fewer than the field), and ``default``."""
        if self.name == "beta":
            allowed = beta_ranges()
        elif self.bounds():
            allowed = self.range_text(" to ")
        else:
            named = tuple(self.choices if choices is None else choices)
            allowed = f"one of {', '.join(named)}" if named else ""
        said = "; ".join(part for part in (allowed, default) if part)
        return f"{self.help.rstrip('.')} ({said})." if said else self.help

    def problem(self, value: Any, method: Method | None = None) -> str | None:
        """What is wrong with ``value`` for this setting, as a sentence naming it and its range; None when it fits."""
        if value is None and self.optional:
            return None
        if self.choices:
            if value in self.choices:
                return None
            return f"{self.name} must be one of {', '.join(self.choices)} (got {value!r})."
        bounds = self.bounds(method)
        if not self.number or bounds is None:
            return None
        low, high = bounds
        real = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
        if real and (isinstance(value, int) or not self.whole) and low <= value <= high:
            return None
        if self.whole:
            return f"{self.name} must be a whole number from {self.range_text(' to ', method, True)} (got {value!r})."
        return f"{self.name} must be between {self.range_text(' and ', method, True)} (got {value!r})."


def knobs(settings: type) -> dict[str, Knob]:
    """Every field of a settings dataclass as its :class:`Knob`, in the fields' order."""
    return {declared.name: Knob.of(declared) for declared in fields(settings)}


def method_defaults_text(name: str, methods: Iterable[str] | None = None) -> str:
    """'dpo 6, kto 6, ...': each method's own default of the setting ``name`` (those that set it), from the registry."""
    names = METHODS if methods is None else methods
    own = {method: get_method(method).defaults for method in names}
    return ", ".join(f"{method} {values[name]:g}" for method, values in own.items() if name in values)


def method_default_text(name: str, methods: Iterable[str] | None = None) -> str:
    """ "the method's: dpo 6, kto 6, ..." (methods that have none of their own: "; else" the field's default), for a
    setting left out or empty."""
    names = list(METHODS if methods is None else methods)
    text = f"the method's: {method_defaults_text(name, names)}"
    if any(name not in get_method(method).defaults for method in names):
        text += f"; else {KNOBS[name].default:g}"
    return text


def method_sets(name: str) -> bool:
    """Whether some method of the registry has its own default for the setting ``name`` (learning rate, β, ...)."""
    return any(name in entry.defaults for entry in METHODS.values())


@dataclass
class TrainingSettings:
    """Everything that shapes a lab's run. The defaults are DPO's registry entry's (each method's own are in its
    entry: :meth:`for_method`); the bench's calibration section is where they were chosen."""

    # ``ipo`` (a loss variant with its own entry) is stored as ``method='dpo'``, ``loss_type='ipo'``.
    method: str = field(
        default=DEFAULT_METHOD,
        metadata={
            "label": "Method",
            "help": "The preference method, each on TRL's own trainer; ipo is DPO with the IPO loss.",
            "choices": METHODS,
        },
    )
    beta: float = field(
        default=_DEFAULT["beta"],
        metadata={
            "label": "β (beta)",
            "help": "How tightly the model is held to the original: higher = closer.",
            # no "range": each method's own (Method.beta_range); a large beta needs a bigger log-prob gap for
            # the same reward
        },
    )
    # A lab run has few steps, so its rate is higher than a real run's; DPO's 2e-5 is the highest at which no
    # seed-lab answer loops after 6 steps on the embedded model while every preset moves.
    learning_rate: float = field(
        default=_DEFAULT["learning_rate"],
        metadata={
            "label": "Learning rate",
            "help": "Optimizer step size; too high and training goes unstable.",
            "range": (1e-8, 1e-3),
        },
    )
    # In each stage of a method of several (RLHF). Set this or ``epochs``, not both.
    steps: int | None = field(
        default=_DEFAULT["steps"],
        metadata={"label": "Steps", "help": "Optimizer steps; more = bigger change.", "range": (1, 500)},
    )
    epochs: float | None = field(
        default=None,
        metadata={"label": "Epochs", "help": "Passes over the pairs, instead of steps.", "range": (0.1, 50)},
    )
    # 2 puts a point on the plot every few seconds on a CPU; 6 steps then see 12 pairs, enough for the seed lab's
    # shift (the bench's shift section).
    batch_size: int = field(
        default=2, metadata={"label": "Batch size", "help": "Pairs per optimizer step.", "range": (1, 64)}
    )
    # ``sigmoid`` is DPO; methods other than DPO keep ``sigmoid``.
    loss_type: str = field(
        default="sigmoid",
        metadata={
            "label": "Loss type",
            "help": "DPO's loss variant; sigmoid is the original DPO.",
            "choices": LOSS_TYPES,
        },
    )
    # The production habit that keeps a model fluent while its preference moves: TRL's
    # ``loss_type=[loss, "sft"]`` with ``loss_weights=[1, sft_weight]``.
    sft_weight: float = field(
        default=0.0,
        metadata={
            "label": "SFT weight",
            "help": "DPO: weight of an added SFT term on the chosen answers (0 = none).",
            "range": (0.0, 10.0),
        },
    )
    seed: int = field(
        default=42, metadata={"label": "Seed", "help": "Same seed + data = same run.", "range": (0, 2**32 - 1)}
    )
    max_length: int = field(
        default=256,
        metadata={
            "label": "Max length",
            "help": "Tokens kept per prompt + answer; longer pairs are cut.",
            "range": (32, 2048),
        },
    )
    use_lora: bool = field(
        default=False,
        metadata={
            "label": "LoRA adapter",
            "help": "Train a LoRA adapter instead of every weight; the reference is the adapter switched off.",
        },
    )
    lora_rank: int = field(
        default=16,
        metadata={"label": "LoRA rank", "help": "LoRA adapter rank; higher = more capacity.", "range": (1, 256)},
    )
    # Off by default: that pass delays the first plotted step by several seconds on a CPU and saves no memory,
    # since the reference shares the cached weights (the bench's candidates section).
    precompute_ref_log_probs: bool = field(
        default=False,
        metadata={
            "help": "Full fine-tuning: score every pair with the reference once, before the first step, instead "
            "of scoring each batch as it trains."
        },
    )
    precision: str = field(
        default="auto",
        metadata={"help": "auto = bf16 on a GPU that has it, else fp32.", "choices": ("auto", "fp32", "bf16")},
    )
    # Needs a CUDA GPU and the bitsandbytes package (see :func:`alignlab.training.trainer.qlora_unavailable`).
    use_qlora: bool = field(
        default=False,
        metadata={
            "label": "QLoRA (4-bit base)",
            "help": "QLoRA: the LoRA adapter trains on the base loaded in 4-bit NF4 (bitsandbytes), a quarter of "
            "its bf16 memory; needs use_lora.",
        },
    )

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
        """Each unusable field as a sentence (its range and choices from its declaration, β's from the method),
        then each setting that does not go with another; empty when the settings are usable."""
        entry = METHODS.get(self.method) if isinstance(self.method, str) else None
        out = [
            problem
            for name, knob in KNOBS.items()
            if not (name == "beta" and entry is None)  # an unknown method has no β range; its name is the problem
            and (problem := knob.problem(getattr(self, name), entry))
        ]
        if (self.steps is None) == (self.epochs is None):
            out.append("Give either steps or epochs (exactly one).")
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

    # Longer answers cost time linearly. The lab's one default for it: the CLI, the API and the app read it here.
    max_new_tokens: int = field(
        default=64,
        metadata={
            "label": "Max new tokens",
            "help": "Answer length cap in tokens; longer costs time.",
            "range": (1, MAX_NEW_TOKENS_LIMIT),
        },
    )
    do_sample: bool = field(
        default=False, metadata={"help": "False: greedy decoding (repeatable). True: seeded sampling."}
    )
    temperature: float = field(
        default=0.7, metadata={"help": "Sampling temperature; used only when sampling.", "range": (0.05, 2.0)}
    )
    top_p: float = field(
        default=0.9, metadata={"help": "Nucleus sampling mass; used only when sampling.", "range": (0.05, 1.0)}
    )
    # So that a sampled run can be repeated exactly.
    seed: int = field(
        default=0, metadata={"label": "Sampling seed", "help": "Used only when sampling.", "range": (0, 2**31 - 1)}
    )
    batch_size: int = field(default=16, metadata={"help": "Prompts per forward batch.", "range": (1, 64)})
    # 0 for the lab; the bench sets it to max_new_tokens so that a random-weight model, which tends to stop at once,
    # generates its full length.
    min_new_tokens: int = field(
        default=0,
        metadata={
            "help": "Answer length floor in tokens (at most max_new_tokens): the end-of-turn token is held back "
            "until then.",
            "range": (0, MAX_NEW_TOKENS_LIMIT),
        },
    )

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise GenerationSettingsError(" ".join(problems))

    def problems(self) -> list[str]:
        """Each out-of-range field as a sentence (its range from its declaration); empty when usable."""
        out = [problem for name, knob in GENERATION_KNOBS.items() if (problem := knob.problem(getattr(self, name)))]
        if not out and self.min_new_tokens > self.max_new_tokens:
            out.append(
                f"min_new_tokens must be at most max_new_tokens ({self.max_new_tokens}) (got {self.min_new_tokens!r})."
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: Every training setting as declared on its field (label, help, range, choices), in the fields' order.
KNOBS: dict[str, Knob] = knobs(TrainingSettings)
#: Every generation setting, likewise.
GENERATION_KNOBS: dict[str, Knob] = knobs(GenerationSettings)
