"""The method registry: each preference method AlignLab runs, as one entry naming what TRL needs.

A :class:`Method` is a tuple of :class:`Stage` s, run in order. A stage names the TRL trainer and config
class that run it, TRL's own script for a real run, the rows it reads (:class:`Data`), whether it trains
against a frozen reference (:class:`Reference`) and what it trains and hands on (:class:`Product`). Most
methods have one stage, the policy's; ``rlhf`` has two: a reward model trained on the pairs with
``RewardTrainer``, then online RL of the policy against it with ``RLOOTrainer``. The method adds the keys
it logs and how they map onto the lab's common plot axes, the score that ranks held-out pairs, its
defaults and its GPU-time factor.

The runner (:mod:`alignlab.training.run`), the evidence, the verdict (:mod:`alignlab.verdict.health`), the plots, the
recipe (:mod:`alignlab.recipe`), the CLI and the UI ask this registry, and a stage answers questions about
itself (``stage.has_reference``, ``stage.samples_answers``, ...): nothing else branches on a method's name
or compares these values. Adding a method adds an entry here (and, if its data or config is new, a row
builder in :mod:`alignlab.training.trl_rows`).

This module imports neither torch nor TRL, so that :mod:`alignlab.serving.gpu` (imported before torch
initialises CUDA) and the UI can read it freely. The facts about the trainers are TRL 1.16's; the design
notes are in ``docs/architecture.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any


class Data(StrEnum):
    """The rows a stage trains on."""

    PAIRED = "paired"
    """(prompt, chosen, rejected) rows."""
    UNPAIRED = "unpaired"
    """(prompt, completion, label) thumbs rows: pairs split as chosen -> desirable, rejected -> undesirable."""
    PROMPTS = "prompts"
    """The data's distinct prompts alone: online RL samples its own answers."""


class Reference(StrEnum):
    """What a stage is measured against."""

    FROZEN = "frozen"
    """A frozen reference model, the original model's own weights (with LoRA: the adapter switched off)."""
    NONE = "none"


class Product(StrEnum):
    """What a stage trains and hands on to the stages after it."""

    POLICY = "policy"
    REWARD_MODEL = "reward_model"


class Scorer(StrEnum):
    """How held-out and contrast pairs are scored for the evidence (``eval.heldout_scorer``)."""

    IMPLICIT_REWARD = "implicit_reward"
    MEAN_IMPLICIT_REWARD = "mean_implicit_reward"
    MEAN_LOGPROB = "mean_logprob"


#: The common plot axes a method's logged keys are mapped onto (axis -> what it means).
AXES: dict[str, str] = {
    "loss": "the training loss (what the optimizer minimises)",
    "margin": "mean reward of the chosen answers minus the rejected ones",
    "chosen": "mean reward of the chosen (desirable) answers",
    "rejected": "mean reward of the rejected (undesirable) answers",
    "accuracy": "share of pairs whose chosen answer out-scores its rejected one",
    "kl": "the method's own estimate of the policy's KL divergence from the reference",
    "reward": "mean reward-model score of the answers the policy sampled (online RL)",
}

#: Each held-out scorer in words.
SCORERS: dict[Scorer, str] = {
    Scorer.IMPLICIT_REWARD: (
        "DPO's implicit reward beta * (log pi_theta(y|x) - log pi_ref(y|x)), summed over the answer's tokens: "
        "how much more likely training made each answer, relative to the original model"
    ),
    Scorer.MEAN_IMPLICIT_REWARD: (
        "IPO's reward beta * (log pi_theta(y|x) - log pi_ref(y|x)) / |y|, the implicit reward averaged over the "
        "answer's tokens (TRL's IPO loss is on this length-normalised margin): how much more likely training made "
        "each answer token, relative to the original model"
    ),
    Scorer.MEAN_LOGPROB: (
        "beta * the policy's mean log-probability per answer token (the length-normalised reward that SimPO and "
        "ORPO optimise; these methods have no reference model, so the ranking is the policy's own, and the "
        "original model's ranking under the same score is reported beside it)"
    ),
}

#: Scorers relative to the reference: the original model scores every margin 0 under them, and a policy that
#: learnt nothing scores 0 too.
RELATIVE_SCORERS = frozenset({Scorer.IMPLICIT_REWARD, Scorer.MEAN_IMPLICIT_REWARD})

#: What each product is, and the model it starts from.
PRODUCTS: dict[Product, str] = {
    Product.POLICY: "the policy: a private copy of the loaded causal LM (the run's result)",
    Product.REWARD_MODEL: (
        "a reward model: the loaded model's backbone under a fresh one-output score head "
        "(AutoModelForSequenceClassification, num_labels=1), scoring a (prompt, answer) as a whole"
    ),
}


@dataclass(frozen=True)
class Stage:
    """One TRL trainer run: what it trains, on which rows, against which reference."""

    trainer: str
    """TRL's trainer class, importable as ``module.Class`` (e.g. ``trl.DPOTrainer``)."""
    config: str
    """TRL's config class for it (e.g. ``trl.DPOConfig``)."""
    data: Data
    reference: Reference
    """A frozen reference is always the original model's own weights, never TRL's reload of them from
    ``config._name_or_path`` (see ``ref_model_argument``)."""
    options: dict[str, Any] = field(default_factory=dict)
    """Config fields the method fixes (e.g. SimPO's ``loss_type='simpo'``, ``cpo_alpha=0``)."""
    fields_from: Callable[[Any], dict[str, Any]] | None = None
    """Config fields that follow the lab's settings (a ``TrainingSettings`` -> TRL config keyword arguments),
    beyond those every trainer shares (rates, steps, batch, precision: ``TrainingSettings.trainer_config``)."""
    rows_per_pair: int = 1
    """Dataset rows each pair becomes (2 for unpaired data): the trainer's batch is this times the lab's."""
    trains: Product = Product.POLICY
    """What the stage trains and hands on. The last stage trains the policy."""
    inputs: dict[str, Product] = field(default_factory=dict)
    """Trainer keyword -> the product of an earlier stage passed as it (RLOO's ``reward_funcs`` <- the reward model)."""
    ref_model_argument: bool = True
    """Whether the trainer takes its frozen reference as ``ref_model=``. GRPO/RLOO do not: with ``beta > 0`` they
    build it themselves from the policy's ``config._name_or_path``; the runner then loads the original model's
    weights, as they are in memory, into the reference they built."""
    grad_norm_scale: float | None = None
    """Pre-clipping gradient norms up to this are the trainer's normal scale (None: the lab's usual bound,
    :data:`alignlab.verdict.rules.GRAD_NORM_LIMIT`). RLOO's loss sums log-probabilities over each sampled answer, so
    its norms run to hundreds while clipping (``max_grad_norm=1``) bounds every update."""
    script: str | None = None
    """TRL's own script for a real run of this stage (``trl.scripts.<name>``), or None where TRL 1.16 ships none."""
    script_inputs: dict[str, Product] = field(default_factory=dict)
    """Script argument -> the product of an earlier stage, passed as the folder that stage saved it to (RLOO's
    ``reward_model_name_or_path``)."""
    target_rates: tuple[float, float] | None = None
    """A real run's learning rate on a 7-8B target, (full fine-tuning, LoRA adapter): the lab's rate is for a
    few steps on a small model."""
    purpose: str = ""
    """What the stage does, in one sentence (the recipe's README)."""

    @property
    def reads_pairs(self) -> bool:
        return self.data is Data.PAIRED

    @property
    def reads_thumbs(self) -> bool:
        return self.data is Data.UNPAIRED

    @property
    def samples_answers(self) -> bool:
        """Whether the stage samples its own answers to prompts (online RL) rather than reading given ones."""
        return self.data is Data.PROMPTS

    @property
    def has_reference(self) -> bool:
        return self.reference is Reference.FROZEN

    @property
    def trains_policy(self) -> bool:
        return self.trains is Product.POLICY

    @property
    def trains_reward_model(self) -> bool:
        return self.trains is Product.REWARD_MODEL

    def own_fields(self, settings: Any) -> dict[str, Any]:
        """The stage's own config fields for ``settings`` (``fields_from``, then the fixed ``options``)."""
        own = self.fields_from(settings) if self.fields_from is not None else {}
        return {**own, **self.options}


@dataclass(frozen=True)
class Method:
    """One preference method, as the lab runs it on TRL."""

    name: str
    title: str
    summary: str
    """One line for a dropdown: what it needs and what it does."""
    stages: tuple[Stage, ...]
    logged: tuple[str, ...]
    """Keys the trainer logs per step, beyond ``loss``, ``grad_norm``, ``learning_rate`` and ``epoch``."""
    axes: dict[str, str]
    """Common axis (:data:`AXES`) -> the logged key that means it. An axis the method does not log is absent."""
    rewards_relative: bool
    """Whether the logged ``rewards/*`` are log-ratios to the reference (beta * log pi/pi_ref), so that
    a falling chosen reward means the chosen answers became less likely than before. SimPO's and ORPO's
    rewards are the policy's own length-normalised log-probabilities: always negative, not a change."""
    scorer: Scorer
    """How held-out and contrast pairs are scored."""
    defaults: dict[str, Any]
    """The method's own defaults for ``TrainingSettings`` fields (learning rate, beta, steps)."""
    beta_range: tuple[float, float] = (0.01, 1.0)
    beta_means: str = "how tightly the policy is held to the reference"
    variant_of: str | None = None
    loss_type: str | None = None
    """For a loss variant offered as a method name (``ipo``): the entry it runs as (``variant_of='dpo'``)
    and the ``loss_type`` it stands for. Settings store it as that entry with that loss."""
    loss_variants: bool = False
    """Whether the method takes the settings' ``loss_type`` variants and ``sft_weight`` (DPO's)."""
    supports_qlora: bool = False
    step_cost: float = 1.0
    """GPU seconds of one step relative to a DPO step on the same pairs (for :mod:`alignlab.serving.gpu`); for a
    method of several stages, one step of each stage together (every stage runs the lab's ``steps``)."""
    rewards_are: str = "the policy's own length-normalised log-probabilities, not a change from the original"
    """What the logged rewards are when they are not relative (the verdict says so)."""
    rewards_from_policy: bool = True
    """Whether the logged margin and accuracy rank pairs by a score of the policy itself. False for rlhf:
    they are the reward model's, so the verdict does not compare them with the policy's held-out ranking."""

    @property
    def runs_as(self) -> str:
        """The registry entry whose trainer runs it (``ipo`` runs as ``dpo``)."""
        return self.variant_of or self.name

    @property
    def stage(self) -> Stage:
        """The policy's stage (the last one)."""
        return self.stages[-1]

    def stage_of(self, trains: str | None) -> Stage:
        """The stage that trains ``trains`` (a log row's ``stage`` key); None or unknown: the policy's stage."""
        return next((s for s in self.stages if s.trains == trains), self.stage)

    @property
    def has_reference(self) -> bool:
        return self.stage.has_reference

    @property
    def judged_by_reward_model(self) -> bool:
        """Whether a stage trains a reward model that the policy is trained against (RLHF): such a method is read
        from that reward model's own ranking of pairs it never saw and from the win rate, not from the policy's
        implicit reward, a score it never optimises."""
        return any(stage.trains_reward_model for stage in self.stages)

    @property
    def data(self) -> Data:
        """The rows the policy's stage reads."""
        return self.stage.data

    @property
    def script(self) -> str | None:
        """TRL's own script for the policy's stage (``trl.scripts.dpo``), or None where TRL ships none."""
        return self.stage.script

    @property
    def has_recipe(self) -> bool:
        """Whether every stage has a TRL script, so that a recipe for a real run can be exported."""
        return all(stage.script is not None for stage in self.stages)

    def key(self, axis: str) -> str | None:
        """The logged key behind a common axis, or None when the method does not log it."""
        return self.axes.get(axis)

    def describe(self) -> dict[str, Any]:
        """What the method needs and logs, as plain data (the report's ``settings.method_info``)."""
        return {
            "name": self.name,
            "runs_as": self.runs_as,
            "trainer": self.stage.trainer,
            "config": self.stage.config,
            "data": self.data,
            "reference": self.stage.reference,
            "heldout_scorer": self.scorer,
            "script": self.script,
            "stages": len(self.stages),
            "stage_details": [
                {"trains": s.trains, "trainer": s.trainer, "config": s.config, "data": s.data, "reference": s.reference}
                for s in self.stages
            ],
        }


_DPO_AXES = {
    "loss": "loss",
    "margin": "rewards/margins",
    "chosen": "rewards/chosen",
    "rejected": "rewards/rejected",
    "accuracy": "rewards/accuracies",
}
_DPO_LOGGED = (
    "rewards/chosen",
    "rewards/rejected",
    "rewards/accuracies",
    "rewards/margins",
    "logps/chosen",
    "logps/rejected",
)


def _dpo_fields(settings: Any) -> dict[str, Any]:
    """DPO's loss variant, its optional SFT term (TRL's ``loss_type=[loss, "sft"]`` with ``loss_weights``)
    and how the reference is scored. ``loss_weights`` and ``label_smoothing`` appear only when they differ from
    TRL's defaults (None, 0.0), so that a recipe's config (:mod:`alignlab.recipe`) writes only what the lab set."""
    sft = settings.sft_weight > 0
    fields = {
        "beta": settings.beta,
        "loss_type": [settings.loss_type, "sft"] if sft else [settings.loss_type],
        "precompute_ref_log_probs": settings.precompute_ref_log_probs and not settings.use_lora,
    }
    if sft:
        fields["loss_weights"] = [1.0, float(settings.sft_weight)]
    if settings.loss_type == "robust":
        fields["label_smoothing"] = 0.1
    return fields


def _kto_fields(settings: Any) -> dict[str, Any]:
    # Each pair gives a desirable and an undesirable row, so a step sees as many pairs as a DPO step.
    # TRL's default sequential sampling stays: its KL estimate pairs each row with its batch neighbour's
    # answer (the runner lays the rows out so that those neighbours answer other prompts).
    return {
        "beta": settings.beta,
        "per_device_train_batch_size": 2 * settings.batch_size,
        "precompute_ref_log_probs": False,  # the explicit reference scores each batch; nothing to precompute
    }


def _reference_free_fields(settings: Any) -> dict[str, Any]:
    # ORPO's and CPO's collator needs the raw columns (TRL sets this itself, with a warning, otherwise).
    return {"beta": settings.beta, "remove_unused_columns": False}


#: Online RL (rlhf): answers sampled per prompt (RLOO's leave-one-out baseline is the mean of the others),
#: and their length in tokens, short at lab scale: every step generates batch_size x this many answers.
RL_GENERATIONS = 4
RL_COMPLETION_TOKENS = 24


def _reward_model_fields(settings: Any) -> dict[str, Any]:
    # TRL's RewardTrainer drops (not truncates) pairs longer than max_length; the lab's 256 keeps every preset pair.
    return {"per_device_train_batch_size": settings.batch_size}


def _rloo_fields(settings: Any) -> dict[str, Any]:
    # RLOO's batch counts answers, not prompts: batch_size prompts, each answered RL_GENERATIONS times.
    return {
        "beta": settings.beta,
        "num_generations": RL_GENERATIONS,
        "per_device_train_batch_size": settings.batch_size * RL_GENERATIONS,
        "max_completion_length": RL_COMPLETION_TOKENS,
    }


_DPO_STAGE = Stage(
    "trl.DPOTrainer",
    "trl.DPOConfig",
    Data.PAIRED,
    Reference.FROZEN,
    fields_from=_dpo_fields,
    script="trl.scripts.dpo",
    target_rates=(5e-7, 5e-6),  # Zephyr-7B-beta's DPO recipe; the LoRA example in TRL's own dpo.py
    purpose="Direct Preference Optimization on (prompt, chosen, rejected) pairs, with the lab's loss variant.",
)

_DPO = Method(
    name="dpo",
    title="DPO",
    summary="pairs; a frozen reference; logistic loss on the reward margin (with its loss variants)",
    stages=(_DPO_STAGE,),
    logged=_DPO_LOGGED,
    axes=_DPO_AXES,
    rewards_relative=True,
    scorer=Scorer.IMPLICIT_REWARD,
    defaults={"learning_rate": 2e-5, "beta": 0.1, "steps": 6},
    loss_variants=True,
    supports_qlora=True,
    step_cost=1.0,
)

#: Every runnable method, by the name the CLI, the API and the Train tab use. Each method's defaults are the
#: settings that read healthy on seed-lab with the embedded model (RLHF read from its reward model), chosen from the
#: bench's ``method_defaults`` sweep; the measured runs are in ``docs/calibration.md`` and ``docs/performance.md``.
METHODS: dict[str, Method] = {
    "dpo": _DPO,
    "ipo": replace(
        _DPO,
        name="ipo",
        title="IPO",
        summary="DPO with the IPO loss: a squared loss that holds the margin near 1/(2 beta); resists overfitting",
        stages=(
            replace(
                _DPO_STAGE,
                purpose="IPO: DPO's script with `loss_type: [ipo]`, a squared loss that holds the length-normalised "
                "margin near 1/(2 beta).",
            ),
        ),
        variant_of="dpo",
        loss_type="ipo",
        scorer=Scorer.MEAN_IMPLICIT_REWARD,
        # Without DPO's SFT term IPO widens the margin by pushing both answers down (displacement).
        defaults={"learning_rate": 5e-6, "beta": 0.5, "steps": 6, "sft_weight": 2.0},
    ),
    "kto": Method(
        name="kto",
        title="KTO",
        summary="thumbs up/down (pairs split into desirable and undesirable answers); a frozen reference",
        stages=(
            Stage(
                "trl.KTOTrainer",
                "trl.KTOConfig",
                Data.UNPAIRED,
                Reference.FROZEN,
                fields_from=_kto_fields,
                rows_per_pair=2,
                script="trl.scripts.kto",
                target_rates=(5e-7, 5e-6),  # the examples in TRL's own kto.py; an adapter's as DPO's
                purpose="Kahneman-Tversky Optimization on thumbs-up/down answers (prompt, completion, label): each "
                "pair's chosen answer desirable, its rejected answer undesirable.",
            ),
        ),
        logged=("rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected", "kl"),
        # KTO logs no per-pair accuracy: its rows are single answers, not pairs.
        axes={
            "loss": "loss",
            "margin": "rewards/margins",
            "chosen": "rewards/chosen",
            "rejected": "rewards/rejected",
            "kl": "kl",
        },
        rewards_relative=True,
        scorer=Scorer.IMPLICIT_REWARD,
        defaults={"learning_rate": 2e-5, "beta": 0.1, "steps": 6},
        supports_qlora=True,
        step_cost=1.6,  # each answer is scored twice (its own prompt and a mismatched one, for the KL term)
    ),
    "orpo": Method(
        name="orpo",
        title="ORPO",
        summary="pairs; no reference model; SFT on the chosen answers plus an odds-ratio penalty on the rejected",
        stages=(
            Stage(
                "trl.experimental.orpo.ORPOTrainer",
                "trl.experimental.orpo.ORPOConfig",
                Data.PAIRED,
                Reference.NONE,
                fields_from=_reference_free_fields,
            ),
        ),
        logged=(*_DPO_LOGGED, "nll_loss", "log_odds_ratio", "log_odds_chosen"),
        axes=_DPO_AXES,
        rewards_relative=False,
        scorer=Scorer.MEAN_LOGPROB,
        defaults={"learning_rate": 1e-5, "beta": 0.5, "steps": 6},
        beta_means="weight of the odds-ratio term beside the SFT loss (ORPO's lambda)",
        step_cost=0.7,
    ),
    "simpo": Method(
        name="simpo",
        title="SimPO",
        summary="pairs; no reference model; margin of length-normalised log-probabilities (CPO with the SimPO loss)",
        stages=(
            Stage(
                "trl.experimental.cpo.CPOTrainer",
                "trl.experimental.cpo.CPOConfig",
                Data.PAIRED,
                Reference.NONE,
                {"loss_type": "simpo", "cpo_alpha": 0.0},  # SimPO as TRL documents it: no BC term
                fields_from=_reference_free_fields,
            ),
        ),
        logged=(*_DPO_LOGGED, "nll_loss"),
        axes=_DPO_AXES,
        rewards_relative=False,
        scorer=Scorer.MEAN_LOGPROB,
        defaults={"learning_rate": 2e-5, "beta": 2.0, "steps": 6},
        beta_range=(0.01, 10.0),
        beta_means="scale of the length-normalised reward (SimPO's beta; its paper uses 2-2.5)",
        step_cost=0.7,
    ),
    "rlhf": Method(
        name="rlhf",
        title="RLHF",
        summary="pairs -> a reward model (RewardTrainer), then online RL against it (RLOO), leashed to the reference",
        stages=(
            Stage(
                "trl.RewardTrainer",
                "trl.RewardConfig",
                Data.PAIRED,
                Reference.NONE,
                {"learning_rate": 5e-5},  # the reward model's own rate; the lab's learning rate is the policy's
                fields_from=_reward_model_fields,
                trains=Product.REWARD_MODEL,
                script="trl.scripts.reward",
                target_rates=(1e-5, 1e-4),  # TRL's reward-modeling examples
                purpose="a reward model (the target's backbone under a one-output score head) learns to score each "
                "pair's chosen answer above its rejected one.",
            ),
            Stage(
                "trl.RLOOTrainer",
                "trl.RLOOConfig",
                Data.PROMPTS,
                Reference.FROZEN,
                # Dropout off: with it on, the policy's log-probs are noisy against the reference's (GPT-2 has
                # 0.1), so step 1's KL is not 0 and RLOO's importance ratio explodes (seen on the tiny GPT-2).
                {"disable_dropout": True},
                fields_from=_rloo_fields,
                inputs={"reward_funcs": Product.REWARD_MODEL},
                ref_model_argument=False,
                grad_norm_scale=2000.0,
                script="trl.scripts.rloo",
                script_inputs={"reward_model_name_or_path": Product.REWARD_MODEL},
                target_rates=(1e-6, 1e-5),  # RLOOConfig's own default; ten times that for an adapter, as for DPO
                purpose="online RL (REINFORCE leave-one-out): the policy samples answers to the pairs' prompts, the "
                "reward model scores them, and a KL penalty (beta) holds the policy near the reference.",
            ),
        ),
        # The reward model's stage logs accuracy and margin on its pairs; the RL stage logs the reward model's mean
        # score of the sampled answers (``reward``, without the KL penalty) and RLOO's KL estimate to the reference.
        logged=("accuracy", "margin", "mean_reward", "reward", "reward_std", "kl", "entropy"),
        axes={"loss": "loss", "margin": "margin", "accuracy": "accuracy", "reward": "reward", "kl": "kl"},
        rewards_relative=False,
        rewards_are="the reward model's scores (its margin and accuracy on the training pairs), not a change from the "
        "original",
        rewards_from_policy=False,
        # The policy has a reference, and the KL-regularised RL objective's optimum is exactly
        # beta * log(pi/pi_ref) = reward + const: the implicit reward is the reward the policy has taken on.
        scorer=Scorer.IMPLICIT_REWARD,
        defaults={"learning_rate": 5e-5, "beta": 0.05, "steps": 6},
        beta_means="weight of the KL penalty to the reference in the RL reward (RLOO's beta)",
        # A reward-model step and an RL step together: about 1.5-2.5 DPO steps on 2 CPU cores; on a GPU the RL
        # step's token-by-token sampling weighs more, hence the margin.
        step_cost=3.0,
    ),
}

DEFAULT_METHOD = "dpo"

#: DPO and its siblings, as TRL's ``DPOConfig.loss_type`` names them (the settings' ``loss_type``).
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


class UnknownMethodError(ValueError):
    """A method name that is not in :data:`METHODS`; the message lists the known ones."""


def known_methods() -> str:
    return ", ".join(METHODS)


def resolve(path: str) -> Any:
    """The class a registry entry names by its dotted path (``trl.DPOTrainer``), imported on first use."""
    import importlib

    module, name = path.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def get_method(name: str) -> Method:
    """The registry entry for ``name``; an unknown name raises with the list of known ones."""
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise UnknownMethodError(f"Unknown method {name!r}. Known methods: {known_methods()}.") from None


def thumbs_methods() -> list[str]:
    """The methods whose policy trains on thumbs rows (KTO)."""
    return [name for name, m in METHODS.items() if m.stage.reads_thumbs]


def paired_methods() -> list[str]:
    """The methods whose policy trains on pairs (DPO, IPO, ORPO, SimPO)."""
    return [name for name, m in METHODS.items() if m.stage.reads_pairs]


def method_choices() -> list[tuple[str, str]]:
    """(label, name) for a dropdown."""
    return [(f"{m.title} — {m.summary}", name) for name, m in METHODS.items()]


def beta_ranges() -> str:
    """'dpo, ipo, kto, orpo: 0.01 to 1; simpo: 0.01 to 10': each method's β range, for help texts."""
    groups: dict[tuple[float, float], list[str]] = {}
    for name, entry in METHODS.items():
        groups.setdefault(entry.beta_range, []).append(name)
    return "; ".join(f"{', '.join(names)}: {low:g} to {high:g}" for (low, high), names in groups.items())


def _variant(method: str, loss_type: str) -> Method | None:
    """The entry of a loss variant stored as ``method`` with ``loss_type`` (``dpo`` with ``ipo`` -> IPO's), if any."""
    return next((e for e in METHODS.values() if e.variant_of == method and e.loss_type == loss_type), None)


def entry_for(method: str, loss_type: str = "sigmoid") -> Method:
    """The registry entry of settings stored as ``method`` with ``loss_type``: a loss variant with an entry of
    its own (``dpo`` with ``ipo`` -> IPO's, with its scorer and defaults), else ``method``'s own entry."""
    return _variant(method, loss_type) or get_method(method)


def method_title(method: str, loss_type: str = "sigmoid", sft_weight: float = 0.0) -> str:
    """The method as a person names it: 'DPO', 'IPO' (a loss variant with its own entry), 'DPO (hinge loss)', and
    DPO's SFT term when it has one: 'IPO + SFT×2'."""
    sft = f" + SFT×{sft_weight:g}" if sft_weight else ""
    variant = _variant(method, loss_type)
    if variant is not None:
        return variant.title + sft
    title = METHODS[method].title if method in METHODS else str(method)
    return title + (f" ({loss_type} loss)" if loss_type != "sigmoid" else "") + sft
