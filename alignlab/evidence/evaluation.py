"""What a run cost: KL drift from the reference and perplexity on neutral text, and the evidence of a run.

- :func:`mean_token_kl`: KL(pi_theta || pi_ref) per answer token over the whole vocabulary, on the eval
  answers; :func:`generated_token_kl` takes the policy's half from what it predicted while it generated them,
  so only the reference runs again;
- :func:`perplexity` on a fixed neutral text: together with the KL, the *alignment tax*;
- :func:`count_changed`: eval prompts whose answer differs after training;
- :func:`gather_evidence`: every figure of the report's ``eval`` block, the probes' included
  (:mod:`alignlab.evidence.probes`), as :class:`alignlab.evidence.figures.Evidence`; :func:`finish_evidence` adds what
  the report
  reads from the run (the answers' checks, the training accuracy, the live curve).

The output-level checks live in :mod:`alignlab.evidence.degeneration`, and the verdict in
:mod:`alignlab.verdict.health`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch

from alignlab.data.pairs import PreferencePair
from alignlab.evidence.degeneration import degeneration_report
from alignlab.evidence.figures import Capability, CheckedQuestions, Drift, Evidence, Gain, JudgeCheck, WinRate, curve_of
from alignlab.evidence.probes import PairScores, PreferenceProbe
from alignlab.evidence.questions import CheckedAnswers
from alignlab.evidence.stats import Proportion, finite
from alignlab.models.generation import ScoredAnswers
from alignlab.models.loading import LoadedModel
from alignlab.models.logprobs import (
    ANSWER_SURPRISE,
    TOKENS_PER_BATCH,
    chunks,
    encode_pair,
    log_probs,
    scored_batches,
)
from alignlab.registry.methods import DEFAULT_METHOD, METHODS, SCORERS, Scorer
from alignlab.registry.settings import TrainingSettings

if TYPE_CHECKING:
    from alignlab.training.run import TrainingResult

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
    (:func:`alignlab.models.generation.generate_scored`): the same KL per answer token, from the reference's forward
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
    :data:`~alignlab.models.logprobs.ANSWER_SURPRISE`: the baseline's answers were remembered as it wrote them.
    """
    if not answers:
        return []
    return [round(float(v), 4) for v in ANSWER_SURPRISE.logps(reference, loaded, prompts, answers)]


def count_changed(before: list[str], after: list[str]) -> int:
    """How many eval prompts' answers differ (whitespace at the ends ignored)."""
    return sum(a.strip() != b.strip() for a, b in zip(before, after))


# --------------------------------------------------------------------------- evidence


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
    (:func:`alignlab.models.generation.generate_scored`); the KL then needs only the reference's forward.
    ``baseline_outputs``: the original model's answers to ``eval_prompts``; with them, the original model's
    surprise at each answer before and after (:func:`answer_surprise`) is measured too.
    ``checked``: the checked questions' answers before and after (:func:`alignlab.evidence.questions.check_answers`).
    ``judged``: the win rate of the policy's answers against the original model's
    (:func:`alignlab.evidence.judges.win_rate`).
    ``reward_model``: how the run's own reward model ranks held-out and contrast pairs
    (:func:`alignlab.evidence.judges.reward_model_check`), for a method that trains one.
    """
    reference = loaded.model
    if probe is None:
        probe = PreferenceProbe(loaded, beta, heldout_pairs, contrast_pairs, capability_pairs, scorer=scorer)
    evidence = ranked_evidence(probe, probe.score(policy, reuse_step=reuse_step))
    evidence.capability.source = capability_source if capability_pairs else "none"
    evidence.capability.pairs = len(capability_pairs or [])
    if scored_answers is not None and scored_answers.logps is not None:
        kl, surprise_after = reference_pass(reference, loaded, scored_answers)
    else:
        kl = mean_token_kl(policy, reference, loaded, eval_prompts, aligned_outputs)
        surprise_after = answer_surprise(reference, loaded, eval_prompts, aligned_outputs) if baseline_outputs else []
    evidence.drift = Drift(kl, perplexity(reference, loaded), perplexity(policy, loaded))
    if baseline_outputs is not None:
        evidence.answer_surprise = (answer_surprise(reference, loaded, eval_prompts, baseline_outputs), surprise_after)
    evidence.checked = checked_questions(checked)
    evidence.win = judged
    evidence.reward_model = JudgeCheck.from_dict(reward_model)
    return evidence


def ranked_evidence(probe: PreferenceProbe, scores: dict[str, PairScores]) -> Evidence:
    """The evidence of the probe's sets (:meth:`PreferenceProbe.score`): held-out and contrast pairs under the
    probe's score, the original model's ranking under it and the gain over it, capability before and after."""
    before = probe.before()
    held = scores["heldout"]
    held_before = before["heldout"].margins if not probe.relative else [0.0] * held.count
    return Evidence(
        heldout=held.ranking(),
        heldout_before=before["heldout"].ranking(),
        gain=Gain.of(held.margins, held_before) if held.count else None,
        contrast=scores["contrast"].ranking(),
        contrast_before=before["contrast"].ranking(),
        capability=Capability(scores["capability_before"].ranking(), scores["capability_after"].ranking()),
        scorer=probe.scorer,
        scorer_text=SCORERS[probe.scorer],
    )


def checked_questions(checked: CheckedAnswers | None) -> CheckedQuestions | None:
    """The checked questions' figures: the answers right before and after, those lost, each row (None without any)."""
    if checked is None or not checked.count:
        return None
    n = checked.count
    before, after = Proportion(sum(checked.right_before), n), Proportion(sum(checked.right_after), n)
    return CheckedQuestions(before, after, checked.lost, checked.rows())


def finish_evidence(
    evidence: Evidence,
    result: TrainingResult,
    settings: TrainingSettings,
    baseline_outputs: list[str],
    aligned_outputs: list[str],
    heldout_unavailable: str | None,
) -> Evidence:
    """``evidence`` with what the report adds once the run is known: the answers' checks before and after
    (:func:`alignlab.evidence.degeneration.degeneration_report`), the training accuracy, the live curve, and why
    held-out
    accuracy is missing (``heldout_unavailable``), when it is."""
    surprise_before, surprise_after = evidence.answer_surprise or (None, None)
    return replace(
        evidence,
        training=training_accuracy(result.step_rows, settings.method_entry.name, settings.batch_size),
        curve=curve_of(result.heldout_curve),
        degeneration=degeneration_report(baseline_outputs, aligned_outputs, surprise_before, surprise_after),
        heldout_unavailable=heldout_unavailable,
    )


def training_accuracy(rows: list[dict[str, Any]], method: str, pairs_per_step: int) -> Proportion | None:
    """The training reward accuracy over the last half of the logged steps, as pairs ranked right of pairs seen
    (each step logs its batch's mean over ``pairs_per_step`` pairs); None when the method logs no accuracy."""
    key = (METHODS.get(method) or METHODS[DEFAULT_METHOD]).key("accuracy")
    values = [v for v in (finite(r.get(key)) for r in rows) if v is not None] if key is not None else []
    tail = values[len(values) // 2 :] or values
    if not tail or pairs_per_step < 1:
        return None
    n = len(tail) * pairs_per_step
    return Proportion(round(sum(tail) * pairs_per_step), n)
