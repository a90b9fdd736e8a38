"""The method registry: each preference method AlignLab runs, as one entry naming what TRL needs.

A :class:`Method` says which TRL trainer and config class run it, how the lab's pairs become its
dataset (``paired`` rows, or ``unpaired`` thumbs-up/down rows), whether it trains against a frozen
reference model, which keys it logs and how they map onto the lab's common plot axes, which score
ranks held-out pairs in its evidence, its defaults, its GPU-time factor and TRL's own script for it.
The runner (:mod:`alignlab.training`), the evidence (:mod:`alignlab.evaluation`), the verdict
(:mod:`alignlab.health`), the plots, the CLI and the UI ask this registry; none of them branches on
a method's name. Adding a method adds an entry here (and, if its data or config is new, a builder
in :mod:`alignlab.training`).

A method is a tuple of :class:`Stage` s, run in order; each trains one model (``trains``: the policy, or a
reward model) and hands it to the later stages that name it in their ``inputs``. Most methods have one
stage, the policy's. ``rlhf`` has two: a reward model trained on the pairs with ``RewardTrainer``, then
an online RL run of the policy against it with ``RLOOTrainer``. The runner runs any such tuple the same
way (:func:`alignlab.training.train_policy`); each stage runs the lab's ``steps``.

This module imports neither torch nor TRL, so that :mod:`alignlab.gpu` (imported before torch
initialises CUDA) and the UI can read it freely. Facts about the trainers are from TRL 1.16 as
installed here (DESIGN.md §3).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

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

#: Held-out scorers: how a pair's answers are scored for the evidence (``eval.heldout_scorer``).
SCORERS: dict[str, str] = {
    "implicit_reward": (
        "DPO's implicit reward beta * (log pi_theta(y|x) - log pi_ref(y|x)), summed over the answer's tokens: "
        "how much more likely training made each answer, relative to the original model"
    ),
    "mean_implicit_reward": (
        "IPO's reward beta * (log pi_theta(y|x) - log pi_ref(y|x)) / |y|, the implicit reward averaged over the "
        "answer's tokens (TRL's IPO loss is on this length-normalised margin): how much more likely training made "
        "each answer token, relative to the original model"
    ),
    "mean_logprob": (
        "beta * the policy's mean log-probability per answer token (the length-normalised reward that SimPO and "
        "ORPO optimise; these methods have no reference model, so the ranking is the policy's own, and the "
        "original model's ranking under the same score is reported beside it)"
    ),
}

#: Scorers relative to the reference: the original model scores every margin 0 under them, and a policy that
#: learnt nothing scores 0 too.
RELATIVE_SCORERS = frozenset({"implicit_reward", "mean_implicit_reward"})

#: What a stage trains (``Stage.trains``): the product it hands to later stages, and the model it starts from.
PRODUCTS: dict[str, str] = {
    "policy": "the policy: a private copy of the loaded causal LM (the run's result)",
    "reward_model": (
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
    data: str
    """``paired``: (prompt, chosen, rejected) rows. ``unpaired``: (prompt, completion, label) rows, from
    pairs as chosen -> desirable (label True) and rejected -> undesirable (label False). ``prompts``: the
    pairs' distinct prompts alone (online RL samples its own answers)."""
    reference: str
    """``frozen``: the stage trains against a frozen reference model, the original model's own weights,
    never TRL's reload of them from ``config._name_or_path`` (see ``ref_model_argument``); with LoRA it is the
    adapter switched off. ``none``: no reference model."""
    options: dict[str, Any] = field(default_factory=dict)
    """Config fields the method fixes (e.g. SimPO's ``loss_type='simpo'``, ``cpo_alpha=0``)."""
    fields_from: Callable[[Any], dict[str, Any]] | None = None
    """Config fields that follow the lab's settings (a ``TrainingSettings`` -> TRL config keyword arguments),
    beyond those every trainer shares (rates, steps, batch, precision: ``TrainingSettings.trainer_config``)."""
    rows_per_pair: int = 1
    """Dataset rows each pair becomes (2 for unpaired data): the trainer's batch is this times the lab's."""
    trains: str = "policy"
    """What the stage trains and hands on, a key of :data:`PRODUCTS`. The last stage trains the policy."""
    inputs: dict[str, str] = field(default_factory=dict)
    """Trainer keyword -> the product of an earlier stage passed as it (RLOO's ``reward_funcs`` <- ``reward_model``)."""
    ref_model_argument: bool = True
    """Whether the trainer takes its frozen reference as ``ref_model=``. GRPO/RLOO do not: with ``beta > 0`` they
    build it themselves from the policy's ``config._name_or_path`` (DESIGN.md §3); the runner then loads the
    original model's weights, as they are in memory, into the reference they built."""
    grad_norm_scale: float | None = None
    """Pre-clipping gradient norms up to this are the trainer's normal scale (None: the lab's usual bound,
    :data:`alignlab.health.GRAD_NORM_LIMIT`). RLOO's loss sums log-probabilities over each sampled answer, so
    its norms run to hundreds while clipping (``max_grad_norm=1``) bounds every update."""


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
    scorer: str
    """Key of :data:`SCORERS`: how held-out and contrast pairs are scored."""
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
    """GPU seconds of one step relative to a DPO step on the same pairs (for :mod:`alignlab.gpu`); for a
    method of several stages, one step of each stage together (every stage runs the lab's ``steps``)."""
    script: str | None = None
    """TRL's own script for the method (``trl.scripts.<name>``), or None where TRL 1.16 ships none."""
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
        return self.stage.reference == "frozen"

    @property
    def data(self) -> str:
        return self.stage.data

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


_DPO_STAGE = Stage("trl.DPOTrainer", "trl.DPOConfig", "paired", "frozen", fields_from=_dpo_fields)

_DPO = Method(
    name="dpo",
    title="DPO",
    summary="pairs; a frozen reference; logistic loss on the reward margin (with its loss variants)",
    stages=(_DPO_STAGE,),
    logged=_DPO_LOGGED,
    axes=_DPO_AXES,
    rewards_relative=True,
    scorer="implicit_reward",
    defaults={"learning_rate": 2e-5, "beta": 0.1, "steps": 6},
    loss_variants=True,
    supports_qlora=True,
    step_cost=1.0,
    script="trl.scripts.dpo",
)

#: Every runnable method, by the name the CLI, the API and the Train tab use. Defaults were measured
#: with ``alignlab.lab.run_lab`` on the embedded model and seed-lab (2 shared CPU cores, 2026-11-27):
#: - dpo (beta 0.1, lr 2e-5, 6 steps): 6 of 7 answers changed, healthy, held-out 1.00, KL 0.089;
#: - ipo, 6 steps, held-out pairs scored by IPO's own per-token implicit reward (`make bench ARGS="--only
#:   method_defaults --methods ipo"`, bench/calibration.py's SWEEP; 2026-11-28). At lr 2e-5 without an SFT term, beta
#:   0.1 / 0.25 / 0.5: held-out 1.00, contrast 1.00, but warning: gradient norms above 100 (195 at beta 0.1; 55 at
#:   beta 0.5 already at step 1, where the policy is the reference: IPO's squared loss pulls the per-token margin
#:   toward 1/(2 beta)) and displacement (the chosen answers' log-probability fell 2-17 nats: IPO widens the margin by
#:   pushing both answers down); beta 1.0: an answer loops. IPO's updates barely depend on beta under Adam, so the
#:   rate and DPO's SFT term on the chosen answers (TRL's loss_type [ipo, sft]) were measured next: lr 1e-5 with SFT
#:   1 or 2: an answer loops; lr 2e-6 with SFT 1: no real change (KL 0.0014); beta 1.0, lr 5e-6, SFT 1: an answer
#:   loops; beta 0.5, lr 5e-6, SFT 2: healthy, 4 changed, held-out 1.00, contrast 1.00, KL 0.0037, no loop, gradient
#:   norms 43-96, the chosen answers' log-probability up 0.9 nats, the rejected ones' down 4.5. Kept (its title in
#:   tables: "IPO + SFT×2"); the margin to the thresholds is thin (KL 0.0037 against 0.002, norm 96 against 100);
#: - simpo (beta 2.0, lr 2e-5, 6 steps): 7 changed, healthy, held-out 1.00 but the original model also
#:   ranks every held-out pair right under SimPO's own score (no_gain), KL 0.054;
#: - kto (beta 0.1, lr 2e-5, 6 steps of 2 pairs = 4 thumbs rows): 6 changed, healthy, held-out 1.00, KL 0.088;
#: - orpo, 6 steps (`make bench ARGS="--only method_defaults --methods orpo"`, bench/calibration.py's SWEEP; 2 cores,
#:   2026-11-28): beta 0.1 at lr 2e-5 and 1e-5: an answer loops (repetition, warning; ORPO's SFT term on the chosen
#:   answers: repeated-phrase rate 0.04 -> 0.17 and 0.15), contrast 0.62; beta 0.1 at lr 5e-6: healthy, 6 changed,
#:   contrast 0.62 (partial cue), KL 0.01; beta 0.5 at lr 1e-5: healthy, 6 changed, no loop (0.04 -> 0.04),
#:   held-out 1.00 (the original model's too, under the mean log-prob score: no_gain), contrast 0.75 (beyond the
#:   cue), KL 0.01. Kept: beta 0.5 (a heavier odds-ratio term beside the SFT loss), lr 1e-5.
#: - rlhf (reward model: 6 steps of 2 pairs at its own lr 5e-5; RL: 6 RLOO steps of 2 prompts x 4 sampled answers of
#:   24 tokens, beta 0.05), by lr of the RL stage (`python -m alignlab lab --preset seed-lab --method rlhf --lr LR`, the
#:   machine shared: load average 4-8 on its 2 cores, so wall times are 12-45x a quiet run's, see below):
#:   the reward model ranks every training pair right from step 1 (margin 0.03 -> 5.94). RL reward, first step -> mean
#:   of the last three: lr 2e-5: -3.41 -> -2.71, KL to the reference 0.019, 5 of 7 answers changed; lr 5e-5: -3.41 ->
#:   -2.27, KL 0.067, 6 changed, no loops, capability 1.00 -> 1.00, contrast 0.25 -> 0.88 over the RL steps; lr 1e-4:
#:   -3.41 -> -2.11 but KL 0.46 and answers turned generic ("To tackle this task, consider a multi-step approach",
#:   a new common phrase). All three read warning, not healthy: the policy's implicit reward ranks the held-out pairs
#:   backwards (0.00, 0.17, 0.17): RL moved it toward direct answers without the chosen answers' "Sure! ... Hope that
#:   helps!" wrapper (hence contrast up, held-out down). lr 5e-5 kept. 2026-11-28: sampled answers of 48 tokens instead
#:   of 24 (whole answers, as the reward model saw them) read worse: held-out 0.50, contrast 0.38 (shortcut), failed,
#:   531 s under load; 12 steps of each stage instead of 6: held-out 0.33, contrast 0.75, KL 0.14, warning (no
#:   generalisation). RLHF at its defaults is held by the calibration matrix to read warning, not healthy: online
#:   RL learns only from the answers the policy samples, and an instruct model never samples the rejected answers'
#:   kind (a curt brush-off), so nothing pushes them down and the held-out ranking follows incidental drift.
#:   The default run on the 2 cores quiet (load 0.6; `time python -m alignlab lab --preset seed-lab --method rlhf`,
#:   2026-11-28 00:52 UTC): 114 s of wall time (load 0.5, baseline 6.9, train 91.3, evaluate 10.8): reward-model
#:   steps 1.5-2 s, RL steps about 13 s (the first, with the reference's load, 13 s too); the same figures as above
#:   (reward -3.41 -> -2.27, held-out 0.17, contrast 0.88, 6 changed, warning). Under the load of the sweep (4-8)
#:   the same run had taken 1503 s.
METHODS: dict[str, Method] = {
    "dpo": _DPO,
    "ipo": replace(
        _DPO,
        name="ipo",
        title="IPO",
        summary="DPO with the IPO loss: a squared loss that holds the margin near 1/(2 beta); resists overfitting",
        variant_of="dpo",
        loss_type="ipo",
        scorer="mean_implicit_reward",
        defaults={"learning_rate": 5e-6, "beta": 0.5, "steps": 6, "sft_weight": 2.0},
    ),
    "kto": Method(
        name="kto",
        title="KTO",
        summary="thumbs up/down (pairs split into desirable and undesirable answers); a frozen reference",
        stages=(
            Stage("trl.KTOTrainer", "trl.KTOConfig", "unpaired", "frozen", fields_from=_kto_fields, rows_per_pair=2),
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
        scorer="implicit_reward",
        defaults={"learning_rate": 2e-5, "beta": 0.1, "steps": 6},
        supports_qlora=True,
        step_cost=1.6,  # each answer is scored twice (its own prompt and a mismatched one, for the KL term)
        script="trl.scripts.kto",
    ),
    "orpo": Method(
        name="orpo",
        title="ORPO",
        summary="pairs; no reference model; SFT on the chosen answers plus an odds-ratio penalty on the rejected",
        stages=(
            Stage(
                "trl.experimental.orpo.ORPOTrainer",
                "trl.experimental.orpo.ORPOConfig",
                "paired",
                "none",
                fields_from=_reference_free_fields,
            ),
        ),
        logged=(*_DPO_LOGGED, "nll_loss", "log_odds_ratio", "log_odds_chosen"),
        axes=_DPO_AXES,
        rewards_relative=False,
        scorer="mean_logprob",
        defaults={"learning_rate": 1e-5, "beta": 0.5, "steps": 6},
        beta_means="weight of the odds-ratio term beside the SFT loss (ORPO's lambda)",
        step_cost=0.7,
        script=None,
    ),
    "simpo": Method(
        name="simpo",
        title="SimPO",
        summary="pairs; no reference model; margin of length-normalised log-probabilities (CPO with the SimPO loss)",
        stages=(
            Stage(
                "trl.experimental.cpo.CPOTrainer",
                "trl.experimental.cpo.CPOConfig",
                "paired",
                "none",
                {"loss_type": "simpo", "cpo_alpha": 0.0},  # SimPO as TRL documents it: no BC term
                fields_from=_reference_free_fields,
            ),
        ),
        logged=(*_DPO_LOGGED, "nll_loss"),
        axes=_DPO_AXES,
        rewards_relative=False,
        scorer="mean_logprob",
        defaults={"learning_rate": 2e-5, "beta": 2.0, "steps": 6},
        beta_range=(0.01, 10.0),
        beta_means="scale of the length-normalised reward (SimPO's beta; its paper uses 2-2.5)",
        step_cost=0.7,
        script=None,
    ),
    "rlhf": Method(
        name="rlhf",
        title="RLHF",
        summary="pairs -> a reward model (RewardTrainer), then online RL against it (RLOO), leashed to the reference",
        stages=(
            Stage(
                "trl.RewardTrainer",
                "trl.RewardConfig",
                "paired",
                "none",
                {"learning_rate": 5e-5},  # the reward model's own rate; the lab's learning rate is the policy's
                fields_from=_reward_model_fields,
                trains="reward_model",
            ),
            Stage(
                "trl.RLOOTrainer",
                "trl.RLOOConfig",
                "prompts",
                "frozen",
                # Dropout off: with it on, the policy's log-probs are noisy against the reference's (GPT-2 has
                # 0.1), so step 1's KL is not 0 and RLOO's importance ratio explodes (seen on the tiny GPT-2).
                {"disable_dropout": True},
                fields_from=_rloo_fields,
                inputs={"reward_funcs": "reward_model"},
                ref_model_argument=False,
                grad_norm_scale=2000.0,
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
        scorer="implicit_reward",
        defaults={"learning_rate": 5e-5, "beta": 0.05, "steps": 6},
        beta_means="weight of the KL penalty to the reference in the RL reward (RLOO's beta)",
        # A reward-model step and an RL step together: about 1.5-2.5 DPO steps on 2 CPU cores (above); on a GPU the
        # RL step's token-by-token sampling weighs more (not measured: no GPU here), hence the margin.
        step_cost=3.0,
        script="trl.scripts.rloo",
    ),
}

DEFAULT_METHOD = "dpo"


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
