"""Checked questions: capability in what the model writes, checked by matching, before and after training."""

from __future__ import annotations

import json

import pytest

from alignlab.data.pairs import DatasetError
from alignlab.data.presets import Preset, load_preset
from alignlab.data.question_set import CheckedQuestion, builtin_questions, question_set
from alignlab.evidence import questions
from alignlab.evidence.evaluation import checked_questions
from alignlab.evidence.figures import Evidence
from alignlab.evidence.questions import CheckedAnswers, check_answers
from alignlab.models.loading import cache_root
from alignlab.verdict.readings import checked_capability_reading, evidence_readings

SUBTRACT = CheckedQuestion("What is 10 minus 3?", ("7", "seven"))
CAPITAL = CheckedQuestion("What is the capital of France?", ("Paris",), wrong=("Lyon",))


@pytest.mark.parametrize(
    ("question", "answer", "right"),
    [
        (SUBTRACT, "10 minus 3 is 7.", True),
        (SUBTRACT, "10 minus 3 is seven.", True),
        (SUBTRACT, "10 minus 3 is 2.", False),  # the question's own numbers are not the answer
        (SUBTRACT, "It is 17, or maybe 7.", False),  # the first number it states decides
        (SUBTRACT, "The answer is 7.5.", False),
        (SUBTRACT, "First find 10 - 3, which is 3. Then subtract 3 from 10,", False),  # a result the question states
        # A stated result decides, whatever numbers the working shows before it.
        (CheckedQuestion("What is half of 10?", ("5",)), "Divide 10 by 2 and get 5. So, 10 / 2 =", True),
        (CheckedQuestion("What is 3 times 4?", ("12",)), "The formula, which is 3 × 4 = 12.", True),
        (CheckedQuestion("How many months are in a year?", ("12",)), "A year is 365 days, so 365 * 12 = 312.", False),
        (CheckedQuestion("At what temperature does water freeze?", ("0", "zero")), "It freezes at -18.0°C.", False),
        (CheckedQuestion("How many hours are in a day?", ("24",)), "A day has twenty-four hours.", True),
        (CheckedQuestion("How many cm in a meter?", ("100",)), "A simple one: a meter is 100 cm.", True),
        (CAPITAL, "The capital of France is Paris.", True),
        (CAPITAL, "PARIS, of course", True),
        (CAPITAL, "Parisian food is good.", False),  # a whole word only
        (CAPITAL, "Paris, or perhaps Lyon.", False),  # a known wrong answer makes it wrong
        (CheckedQuestion("Who painted the Mona Lisa?", ("da Vinci",)), "Leonardo da  Vinci painted it.", True),
    ],
)
def test_answers_are_checked_by_matching(question: CheckedQuestion, answer: str, right: bool) -> None:
    assert question.is_right(answer) is right


def test_the_builtin_set_and_a_presets_own_questions() -> None:
    builtin = builtin_questions()
    assert 18 <= len(builtin) <= 24 and len({q.question for q in builtin}) == len(builtin)
    extra = [CheckedQuestion("What is 6 times 7?", ("42",)), builtin[0]]
    asked = question_set(extra)
    assert asked[: len(builtin)] == builtin and asked[len(builtin) :] == extra[:1]  # a repeated question once
    data = {**load_preset("seed-lab").to_dict(), "checked_questions": [q.to_dict() for q in extra[:1]]}
    assert Preset.from_dict(data).checked_questions == extra[:1]
    assert Preset.from_dict(Preset.from_dict(data).to_dict()).checked_questions == extra[:1]
    for bad, says in (
        ([{"question": "", "answers": ["x"]}], "'question' must be non-empty"),
        ([{"question": "q?", "answers": []}], "'answers' must be a non-empty list"),
        ([{"question": "q?", "answers": ["a"], "wrong": "b"}], "'wrong' must be a list"),
        ("nope", "a list of questions"),
    ):
        with pytest.raises(DatasetError, match=says):
            Preset.from_dict({**data, "checked_questions": bad})
    # in the app, a loaded preset's own questions travel with its probe sets to the run and its comparison
    from alignlab.ui.dataset_tab import probes_of
    from alignlab.ui.service import probes_for

    preset = Preset.from_dict(data)
    kept = probes_for(preset.pairs[:-1] + preset.pairs[-1:], probes_of(preset))
    assert kept["checked_questions"] == [q.to_dict() for q in extra[:1]]
    assert probes_for(preset.pairs[:2], {"preset": "nope"})["checked_questions"] == []


def test_a_real_model_is_asked_before_once_and_after_each_time(tiny_chat) -> None:  # noqa: ANN001
    asked = builtin_questions()[:4]
    checked = check_answers(tiny_chat, tiny_chat.model, asked)
    key = questions._before_key(tiny_chat, asked)
    assert questions._BEFORE.memory[key] == checked.before  # kept: the next run reuses the original model's answers
    stored = cache_root() / "checked-answers" / f"{key}.json"
    assert json.loads(stored.read_text()) == checked.before  # and on disk, for the next process
    stored.write_text(json.dumps(["kept on disk"] * 4))
    questions._BEFORE.memory.clear()
    assert questions.answers_before(tiny_chat, asked) == ["kept on disk"] * 4  # read back, not asked again
    stored.unlink()
    questions._BEFORE.memory.clear()
    assert checked.after == checked.before  # the same weights write the same greedy answers
    assert checked.lost == checked.gained == 0 and len(checked.rows()) == 4
    assert checked.right_before == [q.is_right(a) for q, a in zip(asked, checked.before)]


def test_right_answers_turned_wrong_are_counted_and_read_with_their_intervals() -> None:
    asked = [CheckedQuestion(f"What is {n} plus 10?", (str(n + 10),)) for n in range(1, 21)]
    right = [f"It is {n + 10}." for n in range(1, 21)]
    wrong = [f"It is {n + 11}." for n in range(1, 21)]
    kept = checked_questions(CheckedAnswers(asked, right, right[:19] + wrong[19:]))
    assert kept.lost == 1
    assert "20/20" in checked_capability_reading(kept) and "19/20" in checked_capability_reading(kept)
    assert "knowledge kept" in checked_capability_reading(kept) and "thin margin" in checked_capability_reading(kept)
    lost = checked_questions(CheckedAnswers(asked, right, right[:15] + wrong[15:]))
    report = Evidence(checked=lost).to_dict()  # the report's eval block
    assert report["checked_capability_lost"] == 5 and report["checked_capability_after"] == 0.75
    low, high = report["checked_capability_interval_after"]
    assert low < 0.75 < high
    reading = checked_capability_reading(lost)
    assert "15/20 (" in reading and "5 answers that were right turned wrong" in reading
    assert reading in evidence_readings(report)
