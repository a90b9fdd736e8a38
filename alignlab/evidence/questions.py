"""Capability in what the model writes: short questions whose answers are checked by matching.

The likelihood-based capability pairs (:mod:`alignlab.evidence.probes`) ask whether the policy still *prefers* a correct
answer to a wrong one; a run can keep that preference and still *write* wrong answers. So the lab also asks about
twenty short questions (facts, simple arithmetic, a unit, a name) before and after training, with greedy decoding,
and checks each answer by matching: it is right when it names one of the accepted answers (a whole word or number,
any case) and none of the question's known wrong ones. It measures knowledge kept in generation, not the quality
of an explanation.

The questions and how an answer is matched are :mod:`alignlab.data.question_set`. The original model's answers depend
only on the model and the questions, so
they are computed once per model and kept, in memory and on disk (:func:`answers_before`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from alignlab.data.question_set import MAX_BATCH, MAX_NEW_TOKENS, CheckedQuestion
from alignlab.models.disk_cache import JSON, DiskCache

if TYPE_CHECKING:
    import torch

    from alignlab.models.loading import LoadedModel


def ask(loaded: LoadedModel, questions: list[CheckedQuestion], model: torch.nn.Module | None = None) -> list[str]:
    """Each question's greedy answer by ``model`` (default: the original model), all in one batch."""
    from alignlab.models.generation import generate
    from alignlab.registry.settings import GenerationSettings

    settings = GenerationSettings(max_new_tokens=MAX_NEW_TOKENS, batch_size=max(1, min(len(questions), MAX_BATCH)))
    return generate(loaded, [q.question for q in questions], settings, model=model)


_BEFORE: DiskCache[list[str]] = DiskCache("checked-answers", JSON)


def _before_key(loaded: LoadedModel, questions: list[CheckedQuestion]) -> str:
    """What the original model's answers depend on: the model (its folder's files, when local), the device's kind
    and the questions."""
    from alignlab.models.loading import model_key

    return model_key(loaded, MAX_NEW_TOKENS, [q.question for q in questions])


def answers_before(loaded: LoadedModel, questions: list[CheckedQuestion]) -> list[str]:
    """The original model's answers, computed once per model and question set and reused: kept in memory, and on
    disk under the AlignLab cache, so that a CLI run and a forked GPU worker reuse them too."""
    kept = _BEFORE.get(
        _before_key(loaded, questions),
        lambda: ask(loaded, questions),
        lambda value: isinstance(value, list) and len(value) == len(questions),
    )
    return list(kept)


@dataclass
class CheckedAnswers:
    """The questions' answers before and after training, and which were right."""

    questions: list[CheckedQuestion]
    before: list[str]
    after: list[str]
    right_before: list[bool] = field(init=False)
    right_after: list[bool] = field(init=False)

    def __post_init__(self) -> None:
        self.right_before = [q.is_right(a) for q, a in zip(self.questions, self.before)]
        self.right_after = [q.is_right(a) for q, a in zip(self.questions, self.after)]

    @property
    def count(self) -> int:
        return len(self.questions)

    @property
    def lost(self) -> int:
        """Questions answered right before training and wrong after."""
        return sum(b and not a for b, a in zip(self.right_before, self.right_after))

    @property
    def gained(self) -> int:
        return sum(a and not b for b, a in zip(self.right_before, self.right_after))

    def rows(self) -> list[dict[str, Any]]:
        """One row per question, for the report and the Compare tab."""
        return [
            {
                "question": q.question,
                "accepted": list(q.answers),
                "before": b,
                "after": a,
                "right_before": rb,
                "right_after": ra,
            }
            for q, b, a, rb, ra in zip(self.questions, self.before, self.after, self.right_before, self.right_after)
        ]


def check_answers(
    loaded: LoadedModel,
    policy: torch.nn.Module,
    questions: list[CheckedQuestion],
    after: list[str] | None = None,
) -> CheckedAnswers:
    """The original model's answers (kept from an earlier run when there is one) and the policy's (``after``, when
    already generated)."""
    after = after if after is not None else ask(loaded, questions, model=policy)
    return CheckedAnswers(questions, answers_before(loaded, questions), after)
