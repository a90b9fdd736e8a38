"""A real, short preference-training run on TRL, streamed to the caller one logged step at a time.

:class:`TrainingSettings` is the one place where the lab's knobs live (UI defaults, CLI flags and
the TRL config all come from it), and :meth:`TrainingSettings.trainer_config` the one place where a
TRL config is built. The method (``settings.method``: DPO, IPO, KTO, ORPO, SimPO, RLHF) is an entry of
:mod:`alignlab.methods`, which names its stages' trainers, configs, data formats and reference handling;
this module runs whatever entry it is given and never branches on a method's name. A method of several
stages (RLHF: a reward model, then online RL against it) runs them in order, each stage's product handed
to the later stages that take it, and streams every stage's steps as one numbered run.
:func:`train_policy` runs the trainer synchronously; :func:`stream_training` runs it in a thread
and yields a :class:`TrainingEvent` per logged step, which is what a live plot (or a progress bar)
consumes. Both stop cleanly within one optimizer step when asked to. ``train_dpo`` and
``stream_dpo`` are their earlier names.

A method with a reference model (DPO, KTO) gets it in one of three ways, all of which avoid
TRL's fallback of reloading the reference from ``config._name_or_path`` (which would measure a
policy changed in memory against the weights on disk):
- full fine-tuning (the default): the reference is the cached model itself, seen through
  :func:`alignlab.models.reference_view` (its weights shared, never copied) and passed to the
  trainer explicitly; TRL scores each batch with it as it trains, so the first step starts at once;
- DPO with ``precompute_ref_log_probs=True``: TRL scores every pair with the untouched policy
  before the first step instead (a pass over the data, and a hash of every weight);
- LoRA (``use_lora``): the reference is the same network with the adapter switched off.
GRPO/RLOO take no reference argument: with ``beta > 0`` they build one from the policy's
``config._name_or_path``. The runner lets them, then loads the original model's weights, as they are in
memory, into it (:func:`pin_reference`), so that what the policy is measured against is never whatever
happens to be on disk.
"""

from __future__ import annotations

import copy
import gc
import importlib.util
import queue
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from transformers import PreTrainedModel, TrainerCallback, set_seed
from transformers.trainer_callback import PrinterCallback

from alignlab import cpu_head
from alignlab.memory import PeakMemory
from alignlab.methods import (
    DEFAULT_METHOD,
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
from alignlab.models import (
    PLAIN_PROMPT_TEMPLATE,
    LoadedModel,
    copy_for_training,
    reference_view,
    use_persistent_kernel_cache,
)
from alignlab.openmp import release_pool
from alignlab.presets import PreferencePair, TrainingData, UnpairedRow

#: DPO and its siblings, as TRL's ``DPOConfig.loss_type`` names them.
LOSS_TYPES: dict[str, str] = {
    "sigmoid": "DPO: logistic loss on the reward margin (the original paper)",
    "ipo": "IPO: squared loss that keeps the margin near 1/(2*beta); resists overfitting",
    "hinge": "SLiC hinge: stops pushing once the margin exceeds 1/beta",
    "robust": "Robust DPO: tolerates some flipped labels (uses label smoothing)",
    "apo_zero": "APO-zero: raises chosen and lowers rejected likelihood directly",
    "sppo_hard": "SPPO (hard labels): pushes chosen/rejected rewards to +-1/2",
    "nca_pair": "NCA: noise-contrastive; keeps chosen likelihood from falling",
    "bco_pair": "BCO: binary classifier on each response's reward",
}


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
    """1e-7 and 1e-3 as people write them (not 1e-07 and 0.001); other numbers as ``:g`` has them."""
    if 0 < abs(value) < 0.01:
        mantissa, exponent = f"{value:.0e}".split("e")
        return f"{mantissa}e{int(exponent)}"
    return f"{value:g}"


#: Every numeric training setting's label, range and meaning (β's range is the method's: ``Method.beta_range``).
KNOBS: dict[str, Knob] = {
    "beta": Knob("β (beta)", 0.01, 1.0, "How tightly the model is held to the original: higher = closer."),
    "learning_rate": Knob("Learning rate", 1e-7, 1e-3, "Optimizer step size; too high and training goes unstable."),
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
    """Everything that shapes a lab's run. Defaults are chosen by ``make bench`` (DPO's; each method's
    own defaults are in its registry entry: :meth:`for_method`)."""

    method: str = DEFAULT_METHOD
    """The preference method, a name in :data:`alignlab.methods.METHODS` (dpo, ipo, kto, orpo, simpo, rlhf).
    ``ipo`` is DPO with the IPO loss: it is stored as ``method='dpo'``, ``loss_type='ipo'``."""
    beta: float = 0.1
    """How tightly the policy is held to the reference (0.01-1.0; SimPO's reward scale goes to 10). Small
    beta lets it move far; large beta keeps it close and needs a bigger log-prob gap for the same reward."""
    learning_rate: float = 2e-5
    """Adam step size (1e-7 to 1e-3). A lab run has few steps, so it is higher than a real run's.
    2e-5 (was 5e-5): at 5e-5 and 3e-5 the seed-lab's greedy answers loop after 6 steps on the
    embedded model, at 2e-5 none do and every preset still moves (bench calibration section)."""
    steps: int | None = 6
    """Optimizer steps to run (1-500), in each stage of a method of several (RLHF). Set this or ``epochs``, not both."""
    epochs: float | None = None
    """Passes over the pairs (0.1-50), instead of ``steps``."""
    batch_size: int = 2
    """Pairs per optimizer step (1-64). 2 puts a point on the plot every few seconds on a CPU; 6
    steps then see 12 pairs, enough for the seed lab's shift (measured, see bench/)."""
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
    (measured, see bench/)."""
    precision: str = "auto"
    """'auto' (bf16 on a GPU that has it, else fp32), 'fp32' or 'bf16'."""
    use_qlora: bool = False
    """QLoRA: the LoRA adapter trains on the base loaded in 4-bit NF4 (bitsandbytes), a quarter of its bf16
    memory. Needs ``use_lora``, a CUDA GPU and the bitsandbytes package (see :func:`qlora_unavailable`)."""

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
        """The only place where a TRL config is built: the fields every trainer shares (see DESIGN.md §3
        for each choice), then the stage's own (its registry entry's ``fields_from`` and ``options``).

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
            # Measured: checkpointing only costs time at these sizes (bench/).
            gradient_checkpointing=False,
            dataloader_num_workers=0,
            # One fused kernel for the AdamW update (the bare loop's optimiser on a GPU), not a loop of them: on
            # this CPU (2 cores, the embedded 135M model) 0.06 s a step against 0.42 s for the foreach loop.
            optim="adamw_torch_fused",
        )
        # RLOO/GRPO have no max_length (their lengths are the prompt's and max_completion_length).
        accepted = {f.name for f in fields(config_class)}
        shared = {k: v for k, v in shared.items() if k in accepted}
        own = stage.fields_from(self) if stage.fields_from is not None else {}
        return config_class(**{**shared, **own, **stage.options})

    def to_dpo_config(self, output_dir: str | Path, device: torch.device) -> Any:
        """The TRL config of a DPO run (the earlier name of :meth:`trainer_config`, for DPO settings)."""
        if self.method_entry.stage.trainer != "trl.DPOTrainer":
            raise SettingsError(f"to_dpo_config: these settings are for method {self.method!r}, not DPO.")
        return self.trainer_config(output_dir, device)


@dataclass
class TrainingEvent:
    """One logged optimizer step (``kind='log'``) or the end of the run (``kind='end'``)."""

    kind: str
    step: int
    total_steps: int
    elapsed: float
    row: dict[str, float] = field(default_factory=dict)
    result: TrainingResult | None = None

    @property
    def steps_left(self) -> int:
        return max(0, self.total_steps - self.step)


@dataclass
class TrainingResult:
    """What a run produced: the trained policy, TRL's log history and the live held-out curve."""

    policy: PreTrainedModel
    log_history: list[dict[str, Any]]
    steps_done: int
    total_steps: int
    stopped_early: bool
    seconds: float
    settings: TrainingSettings
    heldout_curve: list[dict[str, Any]] = field(default_factory=list)
    trainable_parameters: int = 0
    """Parameters the run trained: all of them, or the LoRA adapter's."""
    peak_memory_bytes: int | None = None
    """Peak memory during the run, measured (:class:`alignlab.memory.PeakMemory`): what ``peak_memory_kind`` says."""
    peak_memory_kind: str | None = None
    """``cuda_allocated`` (the run's own peak on a GPU) or ``process_rss`` (the whole process's, on a CPU)."""
    device: str = ""
    trained_on: dict[str, int] = field(default_factory=dict)
    """What the method trained on (:func:`trained_on`): dataset rows, pairs, thumbs rows, pairs formed from them."""

    @property
    def step_rows(self) -> list[dict[str, Any]]:
        return training_rows(self.log_history)

    @property
    def seconds_per_step(self) -> float | None:
        return self.seconds / self.steps_done if self.steps_done else None

    def summary(self) -> dict[str, Any]:
        """Everything but the policy, as plain data: the one form a run crosses a process, a session or a file in."""
        return {
            "settings": self.settings.to_dict(),
            "log_history": [dict(row) for row in self.log_history],
            "steps_done": self.steps_done,
            "total_steps": self.total_steps,
            "stopped_early": self.stopped_early,
            "seconds": self.seconds,
            "heldout_curve": [dict(point) for point in self.heldout_curve],
            "trainable_parameters": self.trainable_parameters,
            "peak_memory_bytes": self.peak_memory_bytes,
            "peak_memory_kind": self.peak_memory_kind,
            "device": self.device,
            "trained_on": dict(self.trained_on),
        }

    @classmethod
    def from_summary(cls, data: dict[str, Any], policy: Any) -> TrainingResult:
        """The result again from :meth:`summary` and the policy (loaded from where the run saved it)."""
        return cls(
            policy=policy,
            log_history=list(data["log_history"]),
            steps_done=data["steps_done"],
            total_steps=data["total_steps"],
            stopped_early=data["stopped_early"],
            seconds=data["seconds"],
            settings=TrainingSettings.from_dict(data["settings"]),
            heldout_curve=list(data.get("heldout_curve") or []),
            trainable_parameters=data.get("trainable_parameters") or 0,
            peak_memory_bytes=data.get("peak_memory_bytes"),
            peak_memory_kind=data.get("peak_memory_kind"),
            device=data.get("device") or "",
            trained_on=dict(data.get("trained_on") or {}),
        )


class CancelToken:
    """Set from any thread to stop a run at the end of the current step."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


def training_rows(log_history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The per-step rows of TRL's ``log_history`` (the final summary row has no ``loss``)."""
    return [row for row in log_history if "loss" in row and "step" in row]


def to_trl_dataset(loaded: LoadedModel, pairs: list[PreferencePair]) -> Dataset:
    """Pairs in the format TRL expects for this model.

    Chat models get TRL's *conversational* format, so TRL applies the same chat template that
    generation uses; base models get the *standard* format with our plain-text prompt
    (TRL appends the eos token to each completion).
    """
    return Dataset.from_list([preference_row(p, loaded.is_chat) for p in pairs])


def preference_row(pair: PreferencePair, chat: bool) -> dict[str, Any]:
    """One row of TRL's preference format: conversational for a chat model, our plain-text prompt (what
    :meth:`LoadedModel.format_prompt` gives a base model) with each answer after a space otherwise."""
    if chat:
        return {
            "prompt": [{"role": "user", "content": pair.prompt}],
            "chosen": [{"role": "assistant", "content": pair.chosen}],
            "rejected": [{"role": "assistant", "content": pair.rejected}],
        }
    return {
        "prompt": PLAIN_PROMPT_TEMPLATE.format(prompt=pair.prompt),
        "chosen": " " + pair.chosen.strip(),
        "rejected": " " + pair.rejected.strip(),
    }


def thumbs_row(prompt: str, answer: str, label: bool, chat: bool) -> dict[str, Any]:
    """One row of TRL's unpaired format: conversational for a chat model, plain-text prompt for a base model."""
    if chat:
        return {
            "prompt": [{"role": "user", "content": prompt}],
            "completion": [{"role": "assistant", "content": answer}],
            "label": label,
        }
    return {"prompt": PLAIN_PROMPT_TEMPLATE.format(prompt=prompt), "completion": " " + answer.strip(), "label": label}


def to_unpaired_dataset(
    loaded: LoadedModel, pairs: list[PreferencePair] | TrainingData, batch_size: int, seed: int
) -> Dataset:
    """Training data as TRL's unpaired preference rows (``prompt``, ``completion``, ``label``): thumbs up/down.

    Each pair gives its chosen answer as desirable (``label=True``) and its rejected answer as undesirable;
    thumbs rows (a :class:`TrainingData`'s ``unpaired``) are used as they are. KTO estimates its KL term by
    giving each row the answer of its neighbour in the batch (TRL rotates the batch's answers by one, and
    keeps the data order for that), so neighbours should answer other prompts. Pairs alone are shuffled
    with ``seed`` (TRL's sequential order would otherwise always see them in file order) and laid out batch
    by batch as the batch's chosen answers, then its rejected ones: every rotated answer then belongs to
    another prompt whenever a batch holds two pairs or more. With thumbs rows, all the rows are shuffled
    together and each batch of ``2 * batch_size`` rows is ordered to the same end (:func:`_thumbs_layout`).
    Chat models get conversational rows, base models the plain-text prompt, as in :func:`to_trl_dataset`.
    """
    data = TrainingData.of(pairs)
    if data.unpaired:
        rows = _thumbs_layout(data.thumbs(), 2 * batch_size, seed)
        return Dataset.from_list([thumbs_row(r.prompt, r.completion, r.label, loaded.is_chat) for r in rows])
    order = torch.randperm(len(data.pairs), generator=torch.Generator().manual_seed(seed)).tolist()
    shuffled = [data.pairs[i] for i in order]
    rows: list[dict[str, Any]] = []
    for start in range(0, len(shuffled), batch_size):
        batch = shuffled[start : start + batch_size]
        rows += [thumbs_row(p.prompt, p.chosen, True, loaded.is_chat) for p in batch]
        rows += [thumbs_row(p.prompt, p.rejected, False, loaded.is_chat) for p in batch]
    return Dataset.from_list(rows)


def _thumbs_layout(rows: list[UnpairedRow], batch_rows: int, seed: int) -> list[UnpairedRow]:
    """Thumbs rows shuffled with ``seed``, then each batch ordered so that neighbours answer other prompts.

    Within a batch, the rows are grouped by prompt (the largest group first) and dealt to the even
    positions, then the odd ones: no two neighbours, the last and the first included (TRL's rotation
    wraps around), share a prompt unless one prompt holds more than half of the batch.
    """
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed)).tolist()
    shuffled = [rows[i] for i in order]
    laid_out: list[UnpairedRow] = []
    for start in range(0, len(shuffled), batch_rows):
        groups: dict[str, list[UnpairedRow]] = {}
        for row in shuffled[start : start + batch_rows]:
            groups.setdefault(row.prompt, []).append(row)
        dealt = [row for group in sorted(groups.values(), key=len, reverse=True) for row in group]
        positions = [*range(0, len(dealt), 2), *range(1, len(dealt), 2)]
        batch: list[UnpairedRow | None] = [None] * len(dealt)
        for position, row in zip(positions, dealt):
            batch[position] = row
        laid_out += [row for row in batch if row is not None]
    return laid_out


def to_prompt_dataset(loaded: LoadedModel, pairs: list[PreferencePair] | TrainingData) -> Dataset:
    """The data's distinct prompts (pairs' and thumbs rows'), in order, as TRL's prompt-only rows (online RL
    samples its own answers).

    Chat models get a conversational prompt (TRL applies the chat template and its generation prompt); base
    models our plain-text prompt, as in :func:`to_trl_dataset`.
    """
    data = TrainingData.of(pairs)
    prompts = list(dict.fromkeys([p.prompt for p in data.pairs] + [r.prompt for r in data.unpaired]))
    if loaded.is_chat:
        return Dataset.from_list([{"prompt": [{"role": "user", "content": p}]} for p in prompts])
    return Dataset.from_list([{"prompt": loaded.format_prompt(p)} for p in prompts])


def method_dataset(
    loaded: LoadedModel,
    pairs: list[PreferencePair] | TrainingData,
    settings: TrainingSettings,
    stage: Stage | None = None,
) -> Dataset:
    """The training data in the data format of a stage of ``settings``' method (default: the policy's stage).

    An ``unpaired`` stage gets every row as a thumbs row; a ``prompts`` stage the distinct prompts; a ``paired``
    one the pairs, with those that thumbs rows form (:meth:`TrainingData.paired_for`, which refuses data that
    forms none).
    """
    data = TrainingData.of(pairs)
    kind = (stage or settings.method_entry.stage).data
    if kind == "unpaired":
        return to_unpaired_dataset(loaded, data, settings.batch_size, settings.seed)
    if kind == "prompts":
        return to_prompt_dataset(loaded, data)
    return to_trl_dataset(loaded, data.paired_for(settings.method))


def trained_on(pairs: list[PreferencePair] | TrainingData, settings: TrainingSettings) -> dict[str, int]:
    """What ``settings``' method trains on from this data: ``rows`` (the trainer's dataset rows), ``pairs``
    (given as pairs), ``unpaired`` (thumbs rows given as such) and ``formed_pairs`` (pairs formed from them,
    for a paired method). Raises the refusal of :meth:`TrainingData.paired_for` where a paired method has none."""
    data = TrainingData.of(pairs)
    if settings.method_entry.data == "unpaired":
        return {"rows": len(data.thumbs()), "pairs": len(data.pairs), "unpaired": len(data.unpaired), "formed_pairs": 0}
    paired = data.paired_for(settings.method)
    formed = len(paired) - len(data.pairs)
    return {"rows": len(paired), "pairs": len(data.pairs), "unpaired": len(data.unpaired), "formed_pairs": formed}


#: Scores the policy after a logged step: ``probe(policy, step)`` -> a point of the held-out curve
#: (``{"step", "accuracy", "margin", ...}``); see :meth:`alignlab.evaluation.PreferenceProbe.curve_point`.
StepProbe = Callable[[torch.nn.Module, int], dict[str, Any]]

#: Prefix of the curve's figures in a streamed log row (``heldout/accuracy``, ``heldout/margin``, ...).
CURVE_PREFIX = "heldout/"


class _StreamCallback(TrainerCallback):
    """Forwards each logged step to ``on_event``, runs the held-out probe, and honours a cancel request.

    A method of several stages gets one callback per stage: ``stage`` (what the stage trains) tags each row,
    ``offset`` is the steps of the stages before it, so that a row's ``step`` counts the whole run, and
    ``total`` is the whole run's steps (None: this trainer's own).
    """

    def __init__(
        self,
        on_event: Callable[[TrainingEvent], None] | None,
        cancel: CancelToken | None,
        started: float,
        probe: StepProbe | None = None,
        stage: str | None = None,
        offset: int = 0,
        total: int | None = None,
    ):
        self.on_event = on_event
        self.cancel = cancel
        self.started = started
        self.probe = probe
        self.stage = stage
        self.offset = offset
        self.total = total
        self.curve: list[dict[str, Any]] = []
        self.stopped_early = False

    def on_log(self, args, state, control, logs=None, model=None, **kwargs):  # noqa: ANN001 - TrainerCallback API
        if logs and "loss" in logs:
            step = self.offset + state.global_step
            row: dict[str, Any] = {k: float(v) for k, v in logs.items() if isinstance(v, (int, float))}
            row["step"] = step
            if self.stage is not None:
                row["stage"] = self.stage
            if self.probe is not None and model is not None:
                point = self.probe(model, step)  # the policy in eval mode, no gradients
                self.curve.append(point)
                row.update({CURVE_PREFIX + k: v for k, v in point.items() if k != "step"})
            if self.on_event is not None:
                total = self.total if self.total is not None else self.offset + state.max_steps
                self.on_event(TrainingEvent("log", step, total, time.perf_counter() - self.started, row))
        return self._maybe_stop(state, control)  # a cancel sent while this step was logged stops here

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
        return self._maybe_stop(state, control)

    def _maybe_stop(self, state, control):  # noqa: ANN001
        if self.cancel is not None and self.cancel.cancelled and state.global_step < state.max_steps:
            self.stopped_early = True
            control.should_training_stop = True
        return control


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
    first, so the same settings and pairs give the same run. :func:`train_policy` and the bench's probe both
    train what this returns.
    """
    stage = stage or settings.method_entry.stage
    trainer_class = resolve(stage.trainer)
    use_persistent_kernel_cache()  # before TRL compiles its Triton kernels on a GPU
    set_seed(settings.seed)
    args = settings.trainer_config(output_dir, loaded.device, stage)
    extra: dict[str, Any] = {}
    for keyword, product in stage.inputs.items():
        if product not in (inputs or {}):
            raise SettingsError(
                f"The {stage.trains} stage of {settings.method!r} trains on the {product} of an earlier stage: "
                "run the method's stages in order (train_policy does)."
            )
        extra[keyword] = inputs[product]
    if "reward_funcs" in extra:  # the reward model reads (prompt, answer) with the policy's own tokenizer
        extra["reward_processing_classes"] = loaded.tokenizer
    peft_config = None
    if stage.trains == "reward_model":  # LoRA and QLoRA are the policy's: the small reward model trains every weight
        model = reward_model_from(loaded)
    elif settings.use_qlora:  # TRL loads the 4-bit base itself; nothing is copied
        model, extra["quantization_config"] = qlora_model_arguments(loaded, args)
        peft_config = settings.peft_config()
    else:
        model = copy_for_training(loaded)
        peft_config = settings.peft_config()
    if stage.reference == "frozen" and stage.ref_model_argument:
        # Always explicit: left to itself, TRL would reload the reference from config._name_or_path (the
        # weights on disk, not the model in memory). LoRA's reference is the adapter switched off; DPO's
        # precomputed reference log-probs come from the untouched policy before the first step.
        precomputed = bool(getattr(args, "precompute_ref_log_probs", False))
        shared_reference = not settings.use_lora and not precomputed
        extra["ref_model"] = reference_view(loaded) if shared_reference else None
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=method_dataset(loaded, pairs, settings, stage),
        processing_class=loaded.tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
        **extra,
    )
    if stage.reference == "frozen" and not stage.ref_model_argument:
        pin_reference(trainer, loaded)  # the trainer built its reference from disk: make it the model in memory
    trainer.remove_callback(PrinterCallback)  # rows reach the caller as events, not as prints
    return trainer


def build_dpo_trainer(
    loaded: LoadedModel,
    pairs: list[PreferencePair],
    settings: TrainingSettings,
    output_dir: str | Path,
    callbacks: list[TrainerCallback] | None = None,
) -> Any:
    """The earlier name of :func:`build_trainer` (the bench's probe calls it)."""
    return build_trainer(loaded, pairs, settings, output_dir, callbacks)


@contextmanager
def garbage_frozen() -> Iterator[None]:
    """While training runs, the garbage collector leaves out every object that existed before it.

    The HF Trainer starts each run with ``accelerator.free_memory()``, a full ``gc.collect()``: in a
    process holding torch, transformers, TRL (and gradio), that pass over every object took about
    0.5 s per run on a GPU machine, a third of a warm GPT-2-size training (py-spy, bench/gpu.sh's
    model). Frozen (``gc.freeze``), a pass reads only what was made since; everything is handed back to
    the collector when training ends, so nothing is kept alive for good.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


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
        model = model.merge_and_unload()
    patched = model.get_base_model() if hasattr(model, "get_base_model") else model
    for name in ("forward", "_original_forward"):
        patched.__dict__.pop(name, None)
    if getattr(patched, "is_gradient_checkpointing", False):
        patched.gradient_checkpointing_disable()
        patched.config.use_cache = True
    return model.eval()


def train_policy(
    loaded: LoadedModel,
    pairs: list[PreferencePair] | TrainingData,
    settings: TrainingSettings,
    on_event: Callable[[TrainingEvent], None] | None = None,
    cancel: CancelToken | None = None,
    output_dir: str | Path | None = None,
    probe: StepProbe | None = None,
) -> TrainingResult:
    """Run ``settings.method`` on a private copy of ``loaded.model``; the loaded model stays the reference.

    ``pairs``: a list of pairs, or :class:`TrainingData` (pairs and/or thumbs rows; see :func:`method_dataset`
    for what each stage trains on).

    The method's stages run in order, each on its own trainer; what a stage trains is handed to the later
    stages that take it (RLHF's reward model), and the last stage's is the policy. Rows are numbered over
    the whole run and, for a method of several stages, carry the ``stage`` that logged them. ``probe``, when
    given, scores the policy after every logged step of the policy's stage (the live held-out curve). A
    cancel stops the stage that runs and skips the rest; if the policy's stage never ran, the policy is the
    untrained copy.
    """
    if TrainingData.of(pairs).empty:
        raise SettingsError("There are no training pairs: add at least one pair before training.")
    counts = trained_on(pairs, settings)  # a paired method on thumbs rows that form no pair stops here
    started = time.perf_counter()
    method = settings.method_entry
    per_stage = settings.stage_steps(max(1, counts["rows"] // method.stage.rows_per_pair))
    planned = per_stage * len(method.stages)
    tagged = len(method.stages) > 1
    products: dict[str, Any] = {}
    log_history: list[dict[str, Any]] = []
    curve: list[dict[str, Any]] = []
    done, stopped, trainable, total = 0, False, 0, 0
    with (
        PeakMemory(loaded.device) as peak,
        tempfile.TemporaryDirectory(prefix=f"alignlab-{settings.method}-") as scratch,
    ):
        for stage in method.stages:
            if stopped:
                total += per_stage  # a stage a cancel skipped: still part of the run that was planned
                continue
            is_policy = stage is method.stage
            callback = _StreamCallback(
                on_event,
                cancel,
                started,
                probe if is_policy else None,  # only the policy's stage changes the policy
                stage=stage.trains if tagged else None,
                offset=done,
                total=planned if tagged else None,
            )
            trainer = build_trainer(loaded, pairs, settings, output_dir or scratch, [callback], stage, products)
            if is_policy:
                trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
            with garbage_frozen():
                trainer.train()
            products[stage.trains] = plain_model(trainer)
            for row in trainer.state.log_history:
                row = dict(row)
                if "step" in row:
                    row["step"] += done
                if tagged:
                    row["stage"] = stage.trains
                log_history.append(row)
            curve += callback.curve
            done += trainer.state.global_step
            total += trainer.state.max_steps
            stopped = callback.stopped_early
            del trainer
    loaded.tokenizer.padding_side = "left"  # the trainer may have changed it; generation needs left
    trained = products.get("policy") or copy_for_training(loaded)
    trained.eval()
    result = TrainingResult(
        policy=trained,
        log_history=log_history,
        steps_done=done,
        total_steps=total,
        stopped_early=stopped,
        seconds=time.perf_counter() - started,
        settings=settings,
        heldout_curve=curve,
        trainable_parameters=trainable,
        peak_memory_bytes=peak.bytes,
        peak_memory_kind=peak.kind,
        device=str(loaded.device),
        trained_on=counts,
    )
    if on_event is not None:
        on_event(TrainingEvent("end", result.steps_done, result.total_steps, result.seconds, result=result))
    return result


#: The earlier name of :func:`train_policy` (it runs whatever method the settings name, DPO by default).
train_dpo = train_policy


def stream_training(
    loaded: LoadedModel,
    pairs: list[PreferencePair] | TrainingData,
    settings: TrainingSettings,
    cancel: CancelToken | None = None,
    probe: StepProbe | None = None,
) -> Iterator[TrainingEvent]:
    """Yield one event per logged step while training runs, then an ``end`` event with the result.

    If the consumer stops iterating (a closed generator, a cancelled request), the run is
    cancelled and the thread joined before this generator finishes.
    """
    cancel = cancel or CancelToken()
    events: queue.Queue[TrainingEvent | BaseException] = queue.Queue()

    def work() -> None:
        try:
            train_policy(loaded, pairs, settings, on_event=events.put, cancel=cancel, probe=probe)
        except BaseException as exc:  # re-raised in the consumer's thread
            events.put(exc)

    release_pool()  # this thread only waits from here: its OpenMP workers would slow the training's (alignlab.openmp)
    thread = threading.Thread(target=work, name=f"alignlab-{settings.method}", daemon=True)
    thread.start()
    try:
        while True:
            item = events.get()
            if isinstance(item, BaseException):
                raise item
            yield item
            if item.kind == "end":
                return
    finally:
        cancel.cancel()
        thread.join()


#: The earlier name of :func:`stream_training` (it streams whatever method the settings name).
stream_dpo = stream_training


def save_policy(policy: PreTrainedModel, tokenizer: Any, directory: str | Path) -> Path:
    """Save a trained policy (or LoRA adapter) so that another process can load it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    policy.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
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
