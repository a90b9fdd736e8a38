"""What a run cost: KL drift from the reference and perplexity on neutral text, and the evidence of a run.

- :func:`mean_token_kl`: KL(pi_theta || pi_ref) per answer token over the whole vocabulary, on the eval
  answers; :func:`generated_token_kl` takes the policy's half from what it predicted while it generated them,
  so only the reference runs again;
- :func:`perplexity` on a fixed neutral text: together with the KL, the *alignment tax*;
- :func:`count_changed`: eval prompts whose answer differs after training;
- :func:`gather_evidence`: every figure of the report's ``eval`` block, the probes' included
  (:mod:`alignlab.probes`).

The output-level checks live in :mod:`alignlab.degeneration`, and the verdict in :mod:`alignlab.health`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from alignlab.generation import ScoredAnswers
from alignlab.judges import WinRate
from alignlab.logprobs import (
    ANSWER_SURPRISE,
    TOKENS_PER_BATCH,
    chunks,
    encode_pair,
    log_probs,
    scored_batches,
)
from alignlab.methods import SCORERS, Scorer
from alignlab.models import LoadedModel
from alignlab.pairs import PreferencePair
from alignlab.probes import PreferenceProbe
from alignlab.questions import CheckedAnswers
from alignlab.stats import Proportion, paired_gain

#: A neutral paragraph, unrelated to any preset, on which the policy's perplexity is measured
#: before and after training: if it rises a lot, the run damaged general language ability.
NEUTRAL_TEXT = (
    "The river rises in the hills to the north of the town and flows south through farmland "
    "before it reaches the sea. In spring the water is high and fast, and in late summer it is "
    "slow and shallow enough to cross on foot. The old stone bridge near the market was built "
    "more than two hundred years ago and is still used by people walking into town every day."
)


# --------------------------------------------------------------------------- drift


@torch.inference_mode()
def mean_token_kl(
    policy: torch.nn.Module,
    reference: torch.nn.Module,
    loaded: LoadedModel,
    prompts: list[str],
    completions: list[str],
    max_tokens: int = TOKENS_PER_BATCH,
) -> float:
    """Mean over completion tokens of KL(pi_theta || pi_ref) over the whole vocabulary, in nats."""
    encoded = [encode_pair(loaded, p, c) for p, c in zip(prompts, completions)]
    if not encoded:
        return float("nan")
    policy_was, reference_was = policy.training, reference.training
    policy.eval()
    reference.eval()
    total, count = 0.0, 0
    try:
        batches = zip(
            scored_batches(policy, loaded, encoded, max_tokens),
            scored_batches(reference, loaded, encoded, max_tokens),
        )
        for mine, theirs in batches:  # the same rows in the same order: the batching depends on lengths only
            for part in chunks(len(mine.targets)):
                logp_p = log_probs(mine.states[part], mine.head)
                logp_r = log_probs(theirs.states[part].to(mine.states.device), theirs.head)
                total += float((logp_p.exp() * (logp_p - logp_r)).sum())
                count += logp_p.shape[0]
    finally:
        policy.train(policy_was)
        reference.train(reference_was)
    return total / count if count else float("nan")


@torch.inference_mode()
def generated_token_kl(
    reference: torch.nn.Module, loaded: LoadedModel, answers: ScoredAnswers, max_tokens: int = TOKENS_PER_BATCH
) -> float:
    """:func:`mean_token_kl` on generated answers whose policy log-probabilities were kept while generating
    (:func:`alignlab.generation.generate_scored`): the same KL per answer token, from the reference's forward
    alone. The tokens are the generated ones, up to and including the end-of-turn token."""
    return reference_pass(reference, loaded, answers, max_tokens)[0]


@torch.inference_mode()
def reference_pass(
    reference: torch.nn.Module, loaded: LoadedModel, answers: ScoredAnswers, max_tokens: int = TOKENS_PER_BATCH
) -> tuple[float, list[float]]:
    """One forward of the reference over generated answers whose policy log-probabilities were kept: the KL per
    answer token (:func:`generated_token_kl`) and the reference's surprise at each answer (mean nats per token,
    as :func:`answer_surprise`; NaN for an empty answer)."""
    if answers.logps is None:
        raise ValueError("these answers were generated without keeping their log-probabilities")
    rows = [i for i, ids in enumerate(answers.answer_ids) if ids]
    surprise = [float("nan")] * len(answers.answer_ids)
    if not rows:
        return float("nan"), surprise
    encoded = [(answers.prompt_ids[i] + answers.answer_ids[i], len(answers.prompt_ids[i])) for i in rows]
    was_training = reference.training
    reference.eval()
    total, count = 0.0, 0
    nll = torch.zeros(len(answers.answer_ids), dtype=torch.float64)
    tokens = torch.zeros(len(answers.answer_ids), dtype=torch.float64)
    try:
        for batch in scored_batches(reference, loaded, encoded, max_tokens):
            mine = torch.cat([answers.logps[rows[r]] for r in batch.rows]).to(batch.states.device)
            owners = torch.tensor([rows[r] for r in batch.rows], device=batch.states.device)[batch.owner]
            for part in chunks(len(batch.targets)):
                logp_p = mine[part]
                logp_r = log_probs(batch.states[part], batch.head)
                total += float((logp_p.exp() * (logp_p - logp_r)).sum())
                count += logp_p.shape[0]
                taken = logp_r.gather(-1, batch.targets[part, None]).squeeze(-1).double()
                nll.index_add_(0, owners[part].cpu(), -taken.cpu())
                tokens.index_add_(0, owners[part].cpu(), torch.ones_like(taken).cpu())
    finally:
        reference.train(was_training)
    for i in rows:
        if tokens[i]:
            surprise[i] = round(float(nll[i] / tokens[i]), 4)
    return (total / count if count else float("nan")), surprise


@torch.inference_mode()
def perplexity(model: torch.nn.Module, loaded: LoadedModel, text: str = NEUTRAL_TEXT) -> float:
    """exp(mean negative log-likelihood per token) of ``text``."""
    was_training = model.training
    model.eval()
    try:
        ids = loaded.tokenizer(text, return_tensors="pt")["input_ids"].to(next(model.parameters()).device)
        loss = model(input_ids=ids, labels=ids).loss
    finally:
        model.train(was_training)
    return float(torch.exp(loss.float()))


def answer_surprise(
    reference: torch.nn.Module, loaded: LoadedModel, prompts: list[str], answers: list[str]
) -> list[float]:
    """The original model's surprise at each answer: its mean negative log-likelihood per answer token, in nats.

    Its own greedy answers surprise it little; answers whose words no longer make sense to it (a trained
    policy's word salad) surprise it a lot, whatever characters they are written in. Read through
    :data:`~alignlab.logprobs.ANSWER_SURPRISE`: the baseline's answers were remembered as it wrote them.
    """
    if not answers:
        return []
    return [round(float(v), 4) for v in ANSWER_SURPRISE.logps(reference, loaded, prompts, answers)]


def count_changed(before: list[str], after: list[str]) -> int:
    """How many eval prompts' answers differ (whitespace at the ends ignored)."""
    return sum(a.strip() != b.strip() for a, b in zip(before, after))


# --------------------------------------------------------------------------- evidence


@dataclass
class Evidence:
    """The numeric part of the report's ``eval`` block (``docs/architecture.md``)."""

    heldout_reward_accuracy: float
    heldout_mean_margin: float
    kl_to_reference: float
    perplexity_before: float
    perplexity_after: float
    heldout_scorer: str = Scorer.IMPLICIT_REWARD
    """Which score ranked held-out and contrast pairs (a key of :data:`alignlab.methods.SCORERS`)."""
    heldout_scorer_text: str = ""
    """The same in words, for a reader of the report."""
    heldout_reward_accuracy_before: float = float("nan")
    """The original model's held-out accuracy under the same score (reference-free scorers only)."""
    contrast_accuracy_before: float = float("nan")
    contrast_accuracy: float = float("nan")
    contrast_mean_margin: float = float("nan")
    capability_accuracy_before: float = float("nan")
    capability_accuracy_after: float = float("nan")
    capability_margin_before: float = float("nan")
    capability_margin_after: float = float("nan")
    capability_source: str = "preset"
    capability_pairs: int = 0
    heldout_chosen_rewards: list[float] = field(default_factory=list)
    heldout_rejected_rewards: list[float] = field(default_factory=list)
    heldout_margins: list[float] = field(default_factory=list)
    contrast_margins: list[float] = field(default_factory=list)
    heldout_count: int = 0
    heldout_accuracy_interval: list[float] | None = None
    """The Wilson 95% interval of the held-out accuracy (:mod:`alignlab.stats`)."""
    heldout_p_value: float = float("nan")
    """How often a coin ranks as many held-out pairs right (one-sided exact binomial test)."""
    heldout_margin_interval: list[float] | None = None
    heldout_margins_before: list[float] = field(default_factory=list)
    """Each held-out pair's margin under the original model (reference-free scorers; a relative score gives 0)."""
    heldout_gain: dict[str, Any] = field(default_factory=dict)
    """A sign test of each held-out pair's margin against the original model's: gains, losses, p-value."""
    contrast_count: int = 0
    contrast_accuracy_interval: list[float] | None = None
    contrast_p_value: float = float("nan")
    contrast_margin_interval: list[float] | None = None
    capability_count: int = 0
    capability_accuracy_interval_before: list[float] | None = None
    capability_accuracy_interval_after: list[float] | None = None
    checked_capability_before: float = float("nan")
    """Share of the checked questions (:mod:`alignlab.questions`) the original model answered right."""
    checked_capability_after: float = float("nan")
    checked_capability_count: int = 0
    checked_capability_interval_before: list[float] | None = None
    checked_capability_interval_after: list[float] | None = None
    checked_capability_lost: int = 0
    """Questions answered right before training and wrong after."""
    checked_capability_answers: list[dict[str, Any]] = field(default_factory=list)
    """Each checked question: its accepted answers, both answers, and which were right."""
    judged: dict[str, Any] = field(default_factory=dict)
    """The win rate against the original model and its judge (:meth:`alignlab.judges.WinRate.to_dict`): the report's
    ``eval.judge``, ``eval.win_*`` and ``eval.mean_words_*`` fields, merged into :meth:`to_dict`."""
    reward_model: dict[str, Any] | None = None
    """A method that trains a reward model: how that model ranks the held-out and contrast pairs (``heldout_*`` and
    ``contrast_*`` accuracy, count, interval, p-value); None for the others."""
    answer_surprise: dict[str, list[float]] = field(default_factory=dict)
    """The original model's surprise at each eval answer, ``before`` and ``after`` training
    (:func:`answer_surprise`); the report carries it in ``eval.degeneration``."""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["answer_surprise"]
        return {**data, **data.pop("judged")}


def gather_evidence(
    policy: torch.nn.Module,
    loaded: LoadedModel,
    heldout_pairs: list[PreferencePair],
    eval_prompts: list[str],
    aligned_outputs: list[str],
    beta: float,
    contrast_pairs: list[PreferencePair] | None = None,
    capability_pairs: list[PreferencePair] | None = None,
    capability_source: str = "preset",
    probe: PreferenceProbe | None = None,
    reuse_step: int | None = None,
    scorer: str = Scorer.IMPLICIT_REWARD,
    scored_answers: ScoredAnswers | None = None,
    baseline_outputs: list[str] | None = None,
    checked: CheckedAnswers | None = None,
    judged: WinRate | None = None,
    reward_model: dict[str, Any] | None = None,
) -> Evidence:
    """All numeric evidence; ``loaded.model`` is the untouched reference.

    ``probe``: the run's own probe (built on these same pairs), whose reference scores and, at
    ``reuse_step``, last live-curve scores are reused instead of computed again. ``scorer``: how
    held-out and contrast pairs are ranked (the method's; a given probe brings its own).
    ``scored_answers``: ``aligned_outputs`` as the policy generated them, with its log-probabilities
    (:func:`alignlab.generation.generate_scored`); the KL then needs only the reference's forward.
    ``baseline_outputs``: the original model's answers to ``eval_prompts``; with them, the original model's
    surprise at each answer before and after (:func:`answer_surprise`) is measured too.
    ``checked``: the checked questions' answers before and after (:func:`alignlab.questions.check_answers`).
    ``judged``: the win rate of the policy's answers against the original model's (:func:`alignlab.judges.win_rate`).
    ``reward_model``: how the run's own reward model ranks held-out and contrast pairs
    (:func:`alignlab.judges.reward_model_check`), for a method that trains one.
    """
    reference = loaded.model
    if probe is None:
        probe = PreferenceProbe(loaded, beta, heldout_pairs, contrast_pairs, capability_pairs, scorer=scorer)
    scores = probe.score(policy, reuse_step=reuse_step)
    before = probe.before()
    held, contrast = scores["heldout"], scores["contrast"]
    held_before = before["heldout"].margins if not probe.relative else [0.0] * held.count
    gains, losses, gain_p = paired_gain(held.margins, held_before)
    if scored_answers is not None and scored_answers.logps is not None:
        kl, surprise_after = reference_pass(reference, loaded, scored_answers)
    else:
        kl = mean_token_kl(policy, reference, loaded, eval_prompts, aligned_outputs)
        surprise_after = answer_surprise(reference, loaded, eval_prompts, aligned_outputs) if baseline_outputs else []
    return Evidence(
        heldout_reward_accuracy=held.accuracy,
        heldout_mean_margin=held.mean_margin,
        kl_to_reference=kl,
        perplexity_before=perplexity(reference, loaded),
        perplexity_after=perplexity(policy, loaded),
        heldout_scorer=probe.scorer,
        heldout_scorer_text=SCORERS[probe.scorer],
        heldout_reward_accuracy_before=before["heldout"].accuracy,
        contrast_accuracy_before=before["contrast"].accuracy,
        contrast_accuracy=contrast.accuracy,
        contrast_mean_margin=contrast.mean_margin,
        capability_accuracy_before=scores["capability_before"].accuracy,
        capability_accuracy_after=scores["capability_after"].accuracy,
        capability_margin_before=scores["capability_before"].mean_margin,
        capability_margin_after=scores["capability_after"].mean_margin,
        capability_source=capability_source if capability_pairs else "none",
        capability_pairs=len(capability_pairs or []),
        heldout_chosen_rewards=held.chosen,
        heldout_rejected_rewards=held.rejected,
        heldout_margins=held.margins,
        contrast_margins=contrast.margins,
        heldout_count=held.count,
        heldout_accuracy_interval=held.accuracy_interval,
        heldout_p_value=held.p_value,
        heldout_margin_interval=held.margin_interval,
        heldout_margins_before=before["heldout"].margins,
        heldout_gain={"gains": gains, "losses": losses, "p_value": gain_p} if held.count else {},
        contrast_count=contrast.count,
        contrast_accuracy_interval=contrast.accuracy_interval,
        contrast_p_value=contrast.p_value,
        contrast_margin_interval=contrast.margin_interval,
        capability_count=scores["capability_after"].count,
        capability_accuracy_interval_before=scores["capability_before"].accuracy_interval,
        capability_accuracy_interval_after=scores["capability_after"].accuracy_interval,
        answer_surprise=(
            {"before": answer_surprise(reference, loaded, eval_prompts, baseline_outputs), "after": surprise_after}
            if baseline_outputs is not None
            else {}
        ),
        **checked_fields(checked),
        judged=judged.to_dict() if judged is not None else {},
        reward_model=reward_model,
    )


def checked_fields(checked: CheckedAnswers | None) -> dict[str, Any]:
    """The :class:`Evidence` fields of the checked questions: shares right, count, intervals, losses, rows."""
    if checked is None or not checked.count:
        return {}
    n, before, after = checked.count, sum(checked.right_before), sum(checked.right_after)
    return {
        "checked_capability_before": before / n,
        "checked_capability_after": after / n,
        "checked_capability_count": n,
        "checked_capability_interval_before": list(Proportion(before, n).interval),
        "checked_capability_interval_after": list(Proportion(after, n).interval),
        "checked_capability_lost": checked.lost,
        "checked_capability_answers": checked.rows(),
    }
