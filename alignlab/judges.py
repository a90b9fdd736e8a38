"""What the model now writes, judged against what the original model wrote: a win rate with its evidence.

Held-out accuracy asks whether the policy *ranks* two written answers the right way; the win rate asks whether the
answers the policy now *writes* are preferred over the ones the original model wrote to the same prompts. For each
held-out pair's prompt both models answer greedily, and a judge compares the two answers.

The default judge, :class:`AgreementJudge`, measures *agreement with this data's preference*, not quality: an
answer's score is how much closer it is to the pair's chosen answer than to its rejected one, closeness being the
cosine of the frozen original model's mean-pooled last hidden states over the answer's tokens. Nothing is trained and
nothing is shared with the policy's training. The policy wins a prompt when its answer scores above the original
model's; identical answers are ties, and ties count half.

A judge is read only where it can tell the held-out pairs apart (:meth:`AgreementJudge.self_check`): leaving each
pair out in turn, is its chosen answer closer to the other pairs' chosen answers (and farther from their rejected
ones) than its rejected answer is? A judge that cannot beat a coin at that says so, and its win rate is not read.

The original model's answers depend only on the model, the prompts and the answer length: they are computed once
and kept, in memory and on disk (:func:`original_answers`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from alignlab.generation import generate
from alignlab.logprobs import encode_pair
from alignlab.models import LoadedModel, cache_root
from alignlab.pairs import PreferencePair
from alignlab.settings import GenerationSettings
from alignlab.stats import Proportion, binomial_tail, wilson_interval
from alignlab.trl_rows import thumbs_row

AGREEMENT = "agreement"
AGREEMENT_MEASURES = (
    "agreement with this data's preference, not quality: whether an answer is closer to the pair's chosen answer, "
    "and farther from its rejected one, than the other answer (the frozen original model's pooled hidden states)"
)
#: Answers encoded per forward pass when pooling.
POOL_BATCH = 16


# --------------------------------------------------------------------------- the original model's answers


_original: dict[str, list[str]] = {}
_original_lock = threading.Lock()


def _answers_key(loaded: LoadedModel, prompts: list[str], max_new_tokens: int) -> str:
    source = Path(loaded.source)
    files = (
        sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in source.iterdir() if f.is_file())
        if source.is_dir()
        else []
    )
    parts = ["judged-prompts", loaded.source, files, loaded.device.type, max_new_tokens, prompts]
    return hashlib.sha256(json.dumps(parts).encode("utf-8")).hexdigest()[:32]


def answer_settings(max_new_tokens: int, n: int) -> GenerationSettings:
    """Greedy, the run's answer length, all prompts in one batch where they fit."""
    return GenerationSettings(max_new_tokens=max_new_tokens, batch_size=max(1, min(n, 32)))


def original_answers(loaded: LoadedModel, prompts: list[str], max_new_tokens: int) -> list[str]:
    """The original model's greedy answers to ``prompts``, computed once per model, prompts and length; kept in
    memory and on disk under the AlignLab cache (a CLI run and a forked GPU worker reuse them)."""
    key = _answers_key(loaded, prompts, max_new_tokens)
    with _original_lock:
        kept = _original.get(key)
    stored = cache_root() / "judged-answers" / f"{key}.json"
    if kept is None and stored.is_file():
        with contextlib.suppress(OSError, ValueError):
            kept = json.loads(stored.read_text(encoding="utf-8"))
    if not isinstance(kept, list) or len(kept) != len(prompts):
        kept = generate(loaded, prompts, answer_settings(max_new_tokens, len(prompts)))
        with contextlib.suppress(OSError):
            stored.parent.mkdir(parents=True, exist_ok=True)
            partial = stored.with_suffix(f".{os.getpid()}.partial")
            partial.write_text(json.dumps(kept), encoding="utf-8")
            partial.replace(stored)
    with _original_lock:
        _original[key] = kept
    return list(kept)


# --------------------------------------------------------------------------- the agreement judge


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


@dataclass
class JudgeCheck:
    """Whether a judge can tell the held-out pairs apart: ``k`` of ``n`` ranked right, and its test against chance."""

    k: int
    n: int

    @property
    def usable(self) -> bool:
        return self.n > 0 and Proportion(self.k, self.n).beats_chance

    def to_dict(self) -> dict[str, Any]:
        proportion = Proportion(self.k, self.n) if self.n else None
        return {
            "heldout_accuracy": self.k / self.n if self.n else None,
            "heldout_count": self.n,
            "heldout_interval": list(proportion.interval) if proportion else None,
            "heldout_p_value": proportion.p_value if proportion else None,
            "usable": self.usable,
        }


class AgreementJudge:
    """Closer to the chosen answer than to the rejected one, by the frozen original model's pooled states."""

    source = AGREEMENT
    measures = AGREEMENT_MEASURES

    def __init__(self, loaded: LoadedModel, pairs: list[PreferencePair]) -> None:
        self.loaded = loaded
        self.pairs = pairs
        prompts = [p.prompt for p in pairs]
        self.chosen = pooled_states(loaded, prompts, [p.chosen for p in pairs])
        self.rejected = pooled_states(loaded, prompts, [p.rejected for p in pairs])

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

    def scores(self, answers: list[str]) -> list[float]:
        """Each pair's answer scored: cosine to its chosen answer minus cosine to its rejected one."""
        states = pooled_states(self.loaded, [p.prompt for p in self.pairs], answers)
        return [float(states[i] @ self.chosen[i] - states[i] @ self.rejected[i]) for i in range(len(answers))]


# --------------------------------------------------------------------------- the win rate


@dataclass
class WinRate:
    """The policy's answers against the original model's, prompt by prompt, as one judge read them."""

    source: str
    measures: str
    check: JudgeCheck
    per_prompt: list[dict[str, Any]] = field(default_factory=list)
    mean_words_original: float = float("nan")
    mean_words_policy: float = float("nan")

    @property
    def wins(self) -> int:
        return sum(r["winner"] == "policy" for r in self.per_prompt)

    @property
    def losses(self) -> int:
        return sum(r["winner"] == "original" for r in self.per_prompt)

    @property
    def ties(self) -> int:
        return sum(r["winner"] == "tie" for r in self.per_prompt)

    @property
    def count(self) -> int:
        return len(self.per_prompt)

    @property
    def rate(self) -> float:
        """The share the policy wins, ties counting half."""
        return (self.wins + self.ties / 2) / self.count if self.count else float("nan")

    @property
    def p_value(self) -> float:
        """One-sided sign test against 50%, ties left out: how often a coin gives the policy this many wins."""
        return binomial_tail(self.wins, self.wins + self.losses)

    @property
    def p_value_behind(self) -> float:
        """The same test the other way: how often a coin gives the original model this many wins."""
        return binomial_tail(self.losses, self.wins + self.losses)

    def length_shift(self) -> float | None:
        """Among the prompts the policy won, how much longer its answers were than the original's (a share)."""
        won = [r for r in self.per_prompt if r["winner"] == "policy" and r["words_original"]]
        if not won:
            return None
        return sum(r["words_policy"] / r["words_original"] - 1.0 for r in won) / len(won)

    def to_dict(self) -> dict[str, Any]:
        """The report's ``eval`` fields of the win rate."""
        interval = wilson_interval(self.wins + self.ties / 2, self.count) if self.count else None
        shift = self.length_shift()
        return {
            "judge": {"source": self.source, "measures": self.measures, **self.check.to_dict()},
            "win_rate": self.rate,
            "win_count": self.count,
            "win_interval": list(interval) if interval else None,
            "win_p_value": self.p_value if self.count else None,
            "win_p_value_behind": self.p_value_behind if self.count else None,
            "wins": self.wins,
            "win_losses": self.losses,
            "win_ties": self.ties,
            "win_per_prompt": [{k: r[k] for k in ("prompt", "winner", "margin")} for r in self.per_prompt],
            "win_length_shift": shift,
            "mean_words_original": self.mean_words_original,
            "mean_words_policy": self.mean_words_policy,
        }


def _words(text: str) -> int:
    return len(text.split())


def judge_answers(judge: AgreementJudge, prompts: list[str], original: list[str], policy: list[str]) -> WinRate:
    """Each prompt: the policy's answer against the original model's, by ``judge``; identical answers tie."""
    before, after = judge.scores(original), judge.scores(policy)
    rows = []
    for prompt, old, new, s_old, s_new in zip(prompts, original, policy, before, after):
        margin = 0.0 if old.strip() == new.strip() else s_new - s_old
        winner = "tie" if margin == 0.0 else ("policy" if margin > 0 else "original")
        rows.append(
            {
                "prompt": prompt,
                "winner": winner,
                "margin": round(margin, 4),
                "words_original": _words(old),
                "words_policy": _words(new),
            }
        )
    n = max(1, len(rows))
    return WinRate(
        judge.source,
        judge.measures,
        judge.self_check(),
        rows,
        mean_words_original=sum(r["words_original"] for r in rows) / n if rows else float("nan"),
        mean_words_policy=sum(r["words_policy"] for r in rows) / n if rows else float("nan"),
    )


def win_rate(
    loaded: LoadedModel, policy: torch.nn.Module, pairs: list[PreferencePair], max_new_tokens: int
) -> WinRate | None:
    """The win rate on the held-out pairs' prompts under the agreement judge (None without held-out pairs)."""
    if not pairs:
        return None
    prompts = [p.prompt for p in pairs]
    original = original_answers(loaded, prompts, max_new_tokens)
    written = generate(loaded, prompts, answer_settings(max_new_tokens, len(prompts)), model=policy)
    return judge_answers(AgreementJudge(loaded, pairs), prompts, original, written)


# --------------------------------------------------------------------------- reward models


def reward_texts(tokenizer: Any, chat: bool, prompts: list[str], answers: list[str]) -> list[str]:
    """Each (prompt, answer) as a reward model reads it, in the rows its RewardTrainer trained on
    (:func:`alignlab.trl_rows.thumbs_row`): the chat template over the user's prompt and the assistant's answer (TRL's
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
