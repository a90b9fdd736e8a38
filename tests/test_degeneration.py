"""Output-level checks, on answers like the ones real runs produced (see the calibration matrix)."""

from alignlab.evidence.degeneration import (
    LOOPING_RATE,
    degeneration_report,
    distinct_answers,
    is_garbage,
    new_common_phrases,
    repeated_ngram_rate,
    similarity,
    template_share,
)

from contract import DEGENERATION_KEYS

BEFORE = [
    "To cook rice on the stove, rinse one cup of rice and add two cups of water, then simmer for 18 minutes.",
    "Practise every day, use flashcards, and talk with native speakers as often as you can.",
    "Go to bed at the same time every night and put your alarm across the room.",
    "Loosen the nuts, jack up the car, swap the wheel for the spare and tighten the nuts again.",
    "Write down your income and expenses and set a limit for each category.",
    "Break your work into small goals and reward yourself when you finish each one.",
    "The capital of France is Paris.",
]
COLLAPSED = ["Sure! Hope that helps!"] * 6 + ["Sure! Hope that helps! Hope that helps!"]
LOOP = "Stay healthy, eat well, Stay active, eat well, Stay healthy, eat well, Stay active, eat well, Stay healthy"


def test_collapse_counts_near_duplicates_once():
    assert distinct_answers(BEFORE) == 7
    assert distinct_answers(COLLAPSED) == 1
    assert similarity("Sure! Hope that helps!", "sure, hope that helps") == 1.0  # case and punctuation ignored
    assert similarity(BEFORE[0], BEFORE[1]) < 0.2


def test_a_loop_repeats_most_of_its_phrases_and_fluent_text_does_not():
    assert repeated_ngram_rate(LOOP) > 0.5
    assert all(repeated_ngram_rate(t) < 0.1 for t in BEFORE)
    assert repeated_ngram_rate("") == 0.0 and repeated_ngram_rate("one two") == 0.0
    assert repeated_ngram_rate(LOOP) >= LOOPING_RATE > max(repeated_ngram_rate(t) for t in BEFORE)


def test_phrases_new_in_most_answers_are_found_longest_first():
    after = [f"Sure! {t} Hope that helps!" for t in BEFORE]
    phrases = new_common_phrases(BEFORE, after)
    assert phrases[0] == "hope that helps" or "hope that helps" in phrases[0]
    assert not any(p in ("that helps", "sure hope") for p in phrases)
    # a phrase already common before training is not new
    assert new_common_phrases(after, after) == []
    assert 0.05 < template_share(after, phrases) < 0.4
    assert template_share(COLLAPSED, ["sure hope that helps"]) > 0.8


def test_garbage_is_symbols_runs_and_broken_characters_not_punctuation():
    assert is_garbage("!!!!!!!!!!!!")
    assert is_garbage("🙂🙂🙂 🙂🙂 ✨✨✨ 🙂")
    assert is_garbage("The answer is \ufffd\ufffd here")
    assert not is_garbage("Sure! (It works.) Hope that helps -- really, it does.")
    assert not any(is_garbage(t) for t in BEFORE)


def test_report_has_every_contract_field_before_and_after():
    report = degeneration_report(BEFORE, COLLAPSED).to_dict()
    assert set(report) >= DEGENERATION_KEYS
    assert report["distinct_answers_before"] == 7 and report["distinct_answers_after"] == 1
    assert report["mean_words_after"] < report["mean_words_before"]
    assert "sure hope that helps" in report["new_common_phrases"]
    looped = degeneration_report(BEFORE, BEFORE[:6] + [LOOP]).to_dict()
    assert looped["looping_answers_before"] == 0 and looped["looping_answers_after"] == 1


def test_garbled_answers_surprise_the_original_model_far_beyond_its_own():
    from alignlab.evidence.degeneration import GARBLED_NATS, is_garbled

    typical = 1.0  # nats per token: the original model's median surprise at its own answers
    assert is_garbled("It can be a little thing like small kids can you take", typical + GARBLED_NATS, typical)
    assert not is_garbled("A fluent answer, worded differently.", typical + 0.8, typical)
    assert not is_garbled("", typical + 9.0, typical)  # an empty answer has no words to garble
    assert not is_garbled("no measurement", None, typical)
    before = ["The capital of France is Paris.", "Boil it for nine minutes.", "Use flashcards daily."]
    after = ["The capital of France is Paris.", "Boil build one thing at a time small", "a a a a a a a a a a a a"]
    d = degeneration_report(before, after, [0.4, 1.0, 1.2], [0.4, 3.0, 0.9])
    assert (d.garbled_answers_before, d.garbled_answers_after) == (0, 1)
    # a loop and a garbled answer are both broken; counted once each
    assert (d.looping_answers_after, d.broken_answers_after, d.broken_answers_before) == (1, 2, 0)
    assert d.surprise_after == [0.4, 3.0, 0.9]
    # without the original model's surprise, nothing reads as garbled
    assert degeneration_report(before, after).garbled_answers_after == 0
