"""What the model now writes, judged against what the original model wrote: a win rate with its evidence.

Held-out accuracy asks whether the policy *ranks* two written answers the right way; the win rate asks whether the
answers the policy now *writes* are preferred over the ones the original model wrote to the same prompts. For each
held-out pair's prompt both models answer greedily, and a judge compares the two answers.

The default judge, :class:`AgreementJudge`, measures *agreement with this data's preference*, not quality: an
answer's score is how much closer it is to the pair's chosen answer than to its rejected one, closeness being the
cosine of the frozen original model's mean-pooled last hidden states over the answer's tokens. Nothing is trained and
nothing is shared with the policy's training. The policy wins a prompt when its answer scores above the original
model's; identical answers are ties, and ties count half.

Two further judges are reward models (:class:`RewardModelJudge`): a score for a (prompt, answer) as a whole, so
they judge the eval prompts' answers too (those whose prompt is not a training pair's):

- ``lab_reward_model``: a Bradley-Terry reward model trained on the run's training pairs by TRL's RewardTrainer (the
  construction of RLHF's first stage, :func:`lab_reward_model`), trained once per model and pairs and kept on disk.
  It measures agreement with this data's preference as a model that learnt it; it is read only where it ranks both
  the held-out and the contrast pairs better than a coin, and it never judges an RLHF run (the same construction on
  the same pairs: the run's own reward model).
- a reward model the user names (a Hub id or a local folder, :func:`load_named_judge`): it judges quality as that
  model scores it; checked before any weight is fetched (:func:`alignlab.serving.model_checks.check_judge`).

A judge is read only where it can tell the held-out pairs apart (:meth:`AgreementJudge.self_check`,
:meth:`RewardModelJudge.self_check`): for the agreement judge, leaving each pair out in turn, is its chosen answer
closer to the other pairs' chosen answers (and farther from their rejected ones) than its rejected answer is; for
a reward model, does it score each held-out pair's chosen answer above its rejected one? A judge that cannot beat a
coin at that says so, and its win rate is not read.

The original model's answers depend only on the model, the prompts and the answer length: they are computed once
and kept, in memory and on disk (:func:`original_answers`).
"""

from __future__ import annotations

from typing import Any

import torch

from alignlab.data.pairs import PreferencePair
from alignlab.evidence.figures import JudgeCheck, WinRate
from alignlab.models.disk_cache import JSON, TENSOR, DiskCache
from alignlab.models.generation import generate
from alignlab.models.loading import LoadedModel, model_key
from alignlab.models.logprobs import encode_pair
from alignlab.registry.settings import GenerationSettings
from alignlab.training.trl_rows import thumbs_row

AGREEMENT = "agreement"
LAB_REWARD_MODEL = "lab_reward_model"
LAB_REWARD_MODEL_MEASURES = (
    "agreement with this data's preference as a reward model trained on the run's training pairs scores it "
    "(TRL's RewardTrainer, a Bradley-Terry model)"
)
AGREEMENT_MEASURES = (
    "agreement with this data's preference, not quality: whether an answer is closer to the pair's chosen answer, "
    "and farther from its rejected one, than the other answer (the frozen original model's pooled hidden states)"
)
#: Answers encoded per forward pass when pooling.
POOL_BATCH = 16


# --------------------------------------------------------------------------- the original model's answers


_ORIGINAL: DiskCache[list[str]] = DiskCache("judged-answers", JSON)


def _answers_key(loaded: LoadedModel, prompts: list[str], max_new_tokens: int) -> str:
    return model_key(loaded, "judged-prompts", max_new_tokens, prompts)


def answer_settings(max_new_tokens: int, n: int) -> GenerationSettings:
    """Greedy, the run's answer length, all prompts in one batch where they fit."""
    return GenerationSettings(max_new_tokens=max_new_tokens, batch_size=max(1, min(n, 32)))


def original_answers(loaded: LoadedModel, prompts: list[str], max_new_tokens: int) -> list[str]:
    """The original model's greedy answers to ``prompts``, computed once per model, prompts and length; kept in
    memory and on disk under the AlignLab cache (a CLI run and a forked GPU worker reuse them)."""
    kept = _ORIGINAL.get(
        _answers_key(loaded, prompts, max_new_tokens),
        lambda: generate(loaded, prompts, answer_settings(max_new_tokens, len(prompts))),
        lambda value: isinstance(value, list) and len(value) == len(prompts),
    )
    return list(kept)


# --------------------------------------------------------------------------- the agreement judge


_STATES: DiskCache[torch.Tensor] = DiskCache("judged-states", TENSOR)


def kept_pooled_states(loaded: LoadedModel, prompts: list[str], answers: list[str]) -> torch.Tensor:
    """:func:`pooled_states` of answers that do not depend on a run (a pair's chosen and rejected answers, the
    original model's answers): computed once per model, prompts and answers, kept in memory and on disk."""
    return _STATES.get(
        model_key(loaded, "pooled-states", prompts, answers),
        lambda: pooled_states(loaded, prompts, answers),
        lambda value: isinstance(value, torch.Tensor) and value.shape[0] == len(answers),
    )


@torch.inference_mode()
def pooled_states(loaded: LoadedModel, prompts: list[str], answers: list[str]) -> torch.Tensor:
    """Each answer's mean last hidden state over its own tokens (after its prompt), by the original model, unit
    length: one row per answer. An empty answer gets a zero row."""
    model = loaded.model
    device = next(model.parameters()).device
    rows: list[torch.Tensor] = []
    hidden = model.config.get_text_config().hidden_size
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(answers), POOL_BATCH):
            encoded = [encode_pair(loaded, p, a) for p, a in zip(prompts[start:], answers[start : start + POOL_BATCH])]
            width = max(len(ids) for ids, _ in encoded)
            pad = loaded.tokenizer.pad_token_id or 0
            ids = torch.full((len(encoded), width), pad, dtype=torch.long)
            mask = torch.zeros((len(encoded), width), dtype=torch.long)
            answer = torch.zeros((len(encoded), width), dtype=torch.bool)
            for row, (tokens, prompt_length) in enumerate(encoded):
                ids[row, : len(tokens)] = torch.tensor(tokens)
                mask[row, : len(tokens)] = 1
                answer[row, prompt_length : len(tokens)] = True
            states = model.base_model(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state
            weights = answer.to(states.device).unsqueeze(-1).float()
            summed = (states.float() * weights).sum(dim=1)
            counts = weights.sum(dim=1).clamp(min=1.0)
            rows.append((summed / counts).cpu())
    finally:
        model.train(was_training)
    pooled = torch.cat(rows) if rows else torch.zeros((0, hidden))
    return torch.nn.functional.normalize(pooled, dim=-1)


class AgreementJudge:
    """Closer to the chosen answer than to the rejected one, by the frozen original model's pooled states."""

    source = AGREEMENT
    measures = AGREEMENT_MEASURES

    def __init__(self, loaded: LoadedModel, pairs: list[PreferencePair]) -> None:
        self.loaded = loaded
        self.pairs = pairs
        prompts = [p.prompt for p in pairs]
        self.chosen = kept_pooled_states(loaded, prompts, [p.chosen for p in pairs])
        self.rejected = kept_pooled_states(loaded, prompts, [p.rejected for p in pairs])

    def self_check(self) -> JudgeCheck:
        """Leave each pair out: is its chosen answer nearer the others' chosen and farther from their rejected
        answers than its rejected answer is? (n/a below three pairs.)"""
        n = len(self.pairs)
        if n < 3:
            return JudgeCheck(0, 0)
        right = 0
        for i in range(n):
            others = [j for j in range(n) if j != i]
            toward = torch.nn.functional.normalize(self.chosen[others].mean(0) - self.rejected[others].mean(0), dim=0)
            right += int(float(self.chosen[i] @ toward) > float(self.rejected[i] @ toward))
        return JudgeCheck(right, n)

    def scores(self, prompts: list[str], answers: list[str], keep: bool = False) -> list[float]:
        """Each pair's answer scored: cosine to its chosen answer minus cosine to its rejected one. ``prompts`` are
        the pairs' own, in order: this judge reads an answer against its pair's two answers. ``keep``: the answers
        do not depend on the run (the original model's), so their states are kept for later runs."""
        if prompts != [p.prompt for p in self.pairs][: len(prompts)]:
            raise ValueError("the agreement judge scores answers to its own pairs' prompts, in their order")
        pool = kept_pooled_states if keep else pooled_states
        states = pool(self.loaded, prompts, answers)
        return [float(states[i] @ self.chosen[i] - states[i] @ self.rejected[i]) for i in range(len(answers))]

    judges_any_prompt = False
    """It reads an answer against its own pair's two answers, so it judges only the held-out prompts."""


class RewardModelJudge:
    """A sequence-classification reward model's score of each (prompt, answer): the lab's own (trained on the run's
    pairs) or one the user names. ``chat``: whether its tokenizer reads the pair through its chat template."""

    def __init__(
        self,
        source: str,
        measures: str,
        model: Any,
        tokenizer: Any,
        chat: bool,
        pairs: list[PreferencePair],
        contrast: list[PreferencePair] | None = None,
    ) -> None:
        self.source, self.measures = source, measures
        self.model, self.tokenizer, self.chat = model, tokenizer, chat
        self.pairs, self.contrast = pairs, contrast

    judges_any_prompt = True

    def scores(self, prompts: list[str], answers: list[str], keep: bool = False) -> list[float]:
        padding_side = self.tokenizer.padding_side
        try:
            return reward_scores(self.model, self.tokenizer, self.chat, prompts, answers)
        finally:
            self.tokenizer.padding_side = padding_side

    def self_check(self) -> JudgeCheck:
        """The held-out pairs it ranks right (and, for the lab's reward model, the contrast pairs)."""
        check = ranks_right(self.scores, self.pairs)
        if self.contrast is not None:
            check.contrast = ranks_right(self.scores, self.contrast)
        return check


# --------------------------------------------------------------------------- the win rate


def _words(text: str) -> int:
    return len(text.split())


Judge = AgreementJudge | RewardModelJudge


def judge_answers(
    judge: Judge,
    prompts: list[str],
    original: list[str],
    policy: list[str],
    check: JudgeCheck | None = None,
    sets: list[str] | None = None,
) -> WinRate:
    """Each prompt: the policy's answer against the original model's, by ``judge``; identical answers tie.
    ``sets`` names where each prompt comes from ('heldout' or 'eval'); ``check``: the judge's self-check, when
    already made."""
    before, after = judge.scores(prompts, original, keep=not (sets and "eval" in sets)), judge.scores(prompts, policy)
    rows = []
    for index, (prompt, old, new, s_old, s_new) in enumerate(zip(prompts, original, policy, before, after)):
        margin = 0.0 if old.strip() == new.strip() else s_new - s_old
        winner = "tie" if margin == 0.0 else ("policy" if margin > 0 else "original")
        rows.append(
            {
                "prompt": prompt,
                "winner": winner,
                "margin": round(margin, 4),
                "words_original": _words(old),
                "words_policy": _words(new),
                "set": sets[index] if sets else "heldout",
            }
        )
    n = max(1, len(rows))
    return WinRate(
        judge.source,
        judge.measures,
        check if check is not None else judge.self_check(),
        rows,
        mean_words_original=sum(r["words_original"] for r in rows) / n if rows else float("nan"),
        mean_words_policy=sum(r["words_policy"] for r in rows) / n if rows else float("nan"),
        length_shift=length_shift(rows),
    )


def length_shift(rows: list[dict[str, Any]]) -> float | None:
    """Among the prompts the policy won, how much longer its answers were than the original's (a share)."""
    won = [r for r in rows if r["winner"] == "policy" and r["words_original"]]
    if not won:
        return None
    return sum(r["words_policy"] / r["words_original"] - 1.0 for r in won) / len(won)


def win_rate(
    loaded: LoadedModel,
    policy: torch.nn.Module,
    pairs: list[PreferencePair],
    max_new_tokens: int,
    judge: Judge | None = None,
    eval_answers: tuple[list[str], list[str], list[str]] | None = None,
    training_prompts: set[str] | frozenset[str] = frozenset(),
    written: list[str] | None = None,
) -> WinRate | None:
    """The win rate on the held-out pairs' prompts (None without held-out pairs), under ``judge`` (default: the
    agreement judge). A reward-model judge also judges ``eval_answers`` ((prompts, the original model's answers, the
    policy's)), leaving out the prompts of training pairs. ``written``: the policy's answers to the held-out
    prompts, when already generated."""
    if not pairs:
        return None
    judge = judge if judge is not None else AgreementJudge(loaded, pairs)
    check = judge.self_check()
    prompts = [p.prompt for p in pairs]
    original = original_answers(loaded, prompts, max_new_tokens)
    if written is None:
        written = generate(loaded, prompts, answer_settings(max_new_tokens, len(prompts)), model=policy)
    sets = ["heldout"] * len(prompts)
    if eval_answers is not None and judge.judges_any_prompt:
        for prompt, old, new in zip(*eval_answers):
            if prompt not in training_prompts and prompt not in prompts:
                prompts, original, written = [*prompts, prompt], [*original, old], [*written, new]
                sets.append("eval")
    return judge_answers(judge, prompts, original, written, check=check, sets=sets)


# --------------------------------------------------------------------------- reward models


def reward_texts(tokenizer: Any, chat: bool, prompts: list[str], answers: list[str]) -> list[str]:
    """Each (prompt, answer) as a reward model reads it, in the rows its RewardTrainer trained on
    (:func:`alignlab.training.trl_rows.thumbs_row`): the chat template over the user's prompt and the assistant's
    answer (TRL's
    own ``apply_chat_template``, as its online trainers render answers for a reward model), else the plain prompt and
    the answer, ended by EOS as RewardTrainer ends plain answers."""
    from trl.data_utils import apply_chat_template

    rows = [thumbs_row(p, a, True, chat) for p, a in zip(prompts, answers)]
    if chat:
        return [apply_chat_template({"messages": r["prompt"] + r["completion"]}, tokenizer)["text"] for r in rows]
    return [r["prompt"] + r["completion"] + (tokenizer.eos_token or "") for r in rows]


@torch.inference_mode()
def reward_scores(model: Any, tokenizer: Any, chat: bool, prompts: list[str], answers: list[str]) -> list[float]:
    """A sequence-classification reward model's score of each answer (its one logit at the last real token)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    scores: list[float] = []
    try:
        texts = reward_texts(tokenizer, chat, prompts, answers)
        for start in range(0, len(texts), POOL_BATCH):
            inputs = tokenizer(
                texts[start : start + POOL_BATCH],
                return_tensors="pt",
                padding=True,
                padding_side="right",
                add_special_tokens=False,
            ).to(device)
            scores += [float(s) for s in model(**inputs).logits[:, 0].float().cpu()]
    finally:
        model.train(was_training)
    return scores


def ranks_right(scores: Any, pairs: list[PreferencePair]) -> JudgeCheck:
    """How many ``pairs`` a scorer (``scores(prompts, answers) -> list[float]``) ranks right: chosen above rejected."""
    if not pairs:
        return JudgeCheck(0, 0)
    prompts = [p.prompt for p in pairs]
    chosen, rejected = scores(prompts, [p.chosen for p in pairs]), scores(prompts, [p.rejected for p in pairs])
    return JudgeCheck(sum(c > r for c, r in zip(chosen, rejected)), len(pairs))


def reward_model_check(
    loaded: LoadedModel, heldout: list[PreferencePair], contrast: list[PreferencePair], model: Any
) -> dict[str, Any] | None:
    """A run's own reward model (RLHF's first stage) on pairs it never trained on: does it rank held-out pairs
    right, and contrast pairs (the training answers' cue on the worse answer), or did it learn a cue? The report's
    ``eval.reward_model``; None without held-out or contrast pairs."""
    if not heldout and not contrast:
        return None
    padding_side = loaded.tokenizer.padding_side

    def scores(prompts: list[str], answers: list[str]) -> list[float]:
        return reward_scores(model, loaded.tokenizer, loaded.is_chat, prompts, answers)

    try:
        checks = {"heldout": ranks_right(scores, heldout), "contrast": ranks_right(scores, contrast)}
    finally:
        loaded.tokenizer.padding_side = padding_side
    out: dict[str, Any] = {}
    for name, check in checks.items():
        for key, value in check.to_dict().items():
            if key != "usable":
                out[key.replace("heldout", name)] = value
    return out
