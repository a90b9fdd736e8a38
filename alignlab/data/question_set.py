"""The checked questions: short questions (facts, simple arithmetic, a unit, a name), each with the answers that
count as right and the ones that make an answer wrong, and how an answer is matched against them.

The built-in set (``presets/probes/checked-questions.json``) is asked for every dataset; a preset may add its own
(its file's ``checked_questions``). Asking them before and after training is :mod:`alignlab.evidence.questions`.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignlab.data.pairs import DatasetError

BUILTIN_FILE = Path(__file__).resolve().parents[2] / "presets" / "probes" / "checked-questions.json"
#: Long enough for an answer that opens with a sentence of context before its number or name: a preference for
#: fuller, warmer answers (warm-tone's) delays the fact, and a shorter cap would read that style as lost knowledge.
MAX_NEW_TOKENS = 64
#: The questions are answered in one batch (one generation call), up to this many at once.
MAX_BATCH = 32


@dataclass(frozen=True)
class CheckedQuestion:
    """A question and the answers that count as right (and, optionally, ones that make an answer wrong)."""

    question: str
    answers: tuple[str, ...]
    wrong: tuple[str, ...] = ()

    @property
    def numeric(self) -> bool:
        return any(_number(a) is not None for a in self.answers)

    def is_right(self, text: str) -> bool:
        """Whether ``text`` answers right.

        A number is read as the answer's first stated result that the question does not state (a number right
        after "is", "are", "=", "equals", "get", "gives" or "makes"; number words count: "seven" is 7), else as the
        first number it states that the question does not; so "10 minus 3 is 2" is wrong, "which is 3 x 4 = 12" and
        "divide 10 by 2 and get 5" right. A name
        or word must appear as a whole word, any case, with none of the question's known wrong answers.
        """
        if any(_names(text, w) for w in self.wrong):
            return False
        if self.numeric:
            given = set(_numbers(self.question))
            stated = _result(text, given)
            if stated is None:
                stated = next((n for n in _numbers(text) if n not in given), None)
            return stated is not None and any(stated == _number(a) for a in self.answers)
        return any(_names(text, a) for a in self.answers)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"question": self.question, "answers": list(self.answers)}
        if self.wrong:
            data["wrong"] = list(self.wrong)
        return data

    @classmethod
    def from_dict(cls, data: Any, where: str = "checked_questions") -> CheckedQuestion:
        if not isinstance(data, dict):
            raise DatasetError(f"{where}: each checked question is an object with 'question' and 'answers'.")
        question, answers, wrong = data.get("question"), data.get("answers"), data.get("wrong", [])
        if not isinstance(question, str) or not question.strip():
            raise DatasetError(f"{where}: 'question' must be non-empty text.")
        if isinstance(answers, str):
            answers = [answers]
        if not isinstance(answers, list) or not answers or not all(isinstance(a, str) and a.strip() for a in answers):
            raise DatasetError(f"{where}: 'answers' must be a non-empty list of text (answers that count as right).")
        if not isinstance(wrong, list) or not all(isinstance(w, str) and w.strip() for w in wrong):
            raise DatasetError(f"{where}: 'wrong' must be a list of text (answers that make a reply wrong).")
        return cls(question.strip(), tuple(a.strip() for a in answers), tuple(w.strip() for w in wrong))


_UNITS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
          "seventeen eighteen nineteen twenty")  # fmt: skip
_TENS = {"thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100}
#: Number words and their values.
_WORDS = {w: i for i, w in enumerate(_UNITS.split())} | _TENS
_WORD = "(?:" + "|".join(_WORDS) + ")"
#: A number in digits (not part of a longer one: "-18.0", "1,000") or in words ("seven", "twenty-four").
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:[.,]\d+)*(?![\w])|\b" + _WORD + r"(?:[\s-]+" + _WORD + r")?\b")


def _number(token: str) -> float | None:
    """A number written in digits ("12", "1,000", "-18.0") or words ("twelve", "twenty-four", "one hundred")."""
    token = token.strip().lower()
    words = re.split(r"[\s-]+", token)
    if words == ["one"]:  # "a crucial one" is not a number
        return None
    if all(w in _WORDS for w in words):
        if len(words) == 2 and words[1] == "hundred":
            return float(_WORDS[words[0]] * 100)
        return float(sum(_WORDS[w] for w in words))
    try:
        return float(token.replace(",", ""))
    except ValueError:
        return None


#: What introduces a stated result: "is", "are", "=", "equals", "get", "gives", "makes" (and "is equal to", "is
#: about" ...).
_RESULT = re.compile(
    r"(?:=|\b(?:is|are|equals?|gets?|gives?|makes?)\b)\s*(?:(?:equal to|about|approximately|exactly|just)\s+)?"
)


def _result(text: str, given: set[float]) -> float | None:
    """The first number that follows a result's marker in ``text`` and is not among ``given``, or None."""
    low = text.lower()
    for marker in _RESULT.finditer(low):
        found = _NUMBER.match(low, marker.end())
        value = _number(found.group(0)) if found else None
        if value is not None and value not in given:
            return value
    return None


def _numbers(text: str) -> list[float]:
    found = (_number(m.group(0)) for m in _NUMBER.finditer(text.lower()))
    return [n for n in found if n is not None]


def _names(text: str, answer: str) -> bool:
    pattern = r"(?<![\w])" + re.escape(answer.lower()).replace(r"\ ", r"[\s-]+") + r"(?![\w])"
    return re.search(pattern, text.lower()) is not None


def questions_from_dicts(rows: Any, where: str = "checked_questions") -> list[CheckedQuestion]:
    if not isinstance(rows, list):
        raise DatasetError(f"{where}: a list of questions is expected.")
    return [CheckedQuestion.from_dict(row, f"{where}[{i}]") for i, row in enumerate(rows)]


def builtin_questions() -> list[CheckedQuestion]:
    """The built-in set every dataset is checked on."""
    return list(_builtin())


@functools.cache
def _builtin() -> tuple[CheckedQuestion, ...]:
    data = json.loads(BUILTIN_FILE.read_text(encoding="utf-8"))
    return tuple(questions_from_dicts(data["checked_questions"], BUILTIN_FILE.name))


def question_set(extra: list[CheckedQuestion] | None = None) -> list[CheckedQuestion]:
    """The built-in set, then a preset's own questions (a question already in the set is asked once)."""
    questions = builtin_questions()
    seen = {q.question for q in questions}
    return questions + [q for q in extra or [] if q.question not in seen]
