"""The win rate against the original model under the agreement judge, on the embedded model (real states)."""

from __future__ import annotations

import json
import random

import pytest

from alignlab.data.pairs import PreferencePair
from alignlab.data.presets import load_preset
from alignlab.evidence import judges
from alignlab.evidence.figures import Evidence, WinRate
from alignlab.evidence.judges import AgreementJudge, judge_answers
from alignlab.models.loading import cache_root, load_model
from alignlab.verdict.findings import RunFacts
from alignlab.verdict.readings import win_band, win_reading
from alignlab.verdict.rules import rule_win

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def embedded():
    return load_model("smollm2-135m-instruct", device="cpu")


@pytest.fixture(scope="module")
def seed_lab_judge(embedded) -> AgreementJudge:  # noqa: ANN001
    return AgreementJudge(embedded, load_preset("seed-lab").heldout_pairs)


def test_the_judge_tells_seed_labs_held_out_pairs_apart(seed_lab_judge: AgreementJudge) -> None:
    check = seed_lab_judge.self_check()
    assert check.n == 14 and check.usable, check
    assert check.to_dict()["heldout_p_value"] < 0.05


def test_a_judge_given_no_preference_is_blind_and_its_win_rate_is_not_read(embedded) -> None:  # noqa: ANN001
    pairs = load_preset("seed-lab").heldout_pairs
    coin = random.Random(3)
    flips = [coin.random() < 0.5 for _ in pairs]
    sides = [(p.rejected, p.chosen) if flip else (p.chosen, p.rejected) for p, flip in zip(pairs, flips)]
    shuffled = [PreferencePair(p.prompt, *side) for p, side in zip(pairs, sides)]
    judge = AgreementJudge(embedded, shuffled)
    assert not judge.self_check().usable
    judged = judge_answers(judge, [p.prompt for p in shuffled], [p.rejected for p in pairs], [p.chosen for p in pairs])
    assert win_band(judged) == "blind"
    assert "cannot tell the held-out pairs apart" in win_reading(judged)
    (finding,) = rule_win(RunFacts(log_rows=[], beta=0.1, method="dpo", evidence=Evidence(win=judged)))
    assert (finding.code, finding.severity) == ("no_win", "info")


def test_answers_that_carry_the_preference_win_and_the_reverse_loses(seed_lab_judge: AgreementJudge) -> None:
    pairs = seed_lab_judge.pairs
    prompts, chosen, rejected = [p.prompt for p in pairs], [p.chosen for p in pairs], [p.rejected for p in pairs]
    won = judge_answers(seed_lab_judge, prompts, original=rejected, policy=chosen)
    report = won.to_dict()  # the report's eval fields of the win rate
    assert report["wins"] == 14 and report["win_rate"] == 1.0 and report["win_p_value"] < 0.001
    low, high = report["win_interval"]
    assert 0.7 < low < 1.0 == high
    assert all(row["winner"] == "policy" and row["margin"] > 0 for row in report["win_per_prompt"])
    assert WinRate.from_dict(report).to_dict() == report  # read back from a report, the same win rate
    facts = RunFacts(log_rows=[], beta=0.1, method="dpo", evidence=Evidence(win=won))
    assert [(f.code, f.severity) for f in rule_win(facts)] == [("win", "good")]
    assert "won 14 of 14 held-out prompts" in win_reading(won) and "(Judge: agreement, measuring" in win_reading(won)
    lost = judge_answers(seed_lab_judge, prompts, original=chosen, policy=rejected)
    assert lost.wins == 0 and win_band(lost) == "loses"
    assert [f.code for f in rule_win(RunFacts(log_rows=[], beta=0.1, method="dpo", evidence=Evidence(win=lost)))] == [
        "loses"
    ]
    same = judge_answers(seed_lab_judge, prompts, original=chosen, policy=chosen)
    assert same.ties == 14 and same.rate == 0.5 and win_band(same) == "no_win"
    assert same.mean_words_original == same.mean_words_policy


def test_wins_that_go_with_longer_answers_are_named(seed_lab_judge: AgreementJudge) -> None:
    pairs = seed_lab_judge.pairs
    prompts = [p.prompt for p in pairs]
    padded = [p.chosen + " " + " ".join(p.chosen.split()[:20]) for p in pairs]
    judged = judge_answers(seed_lab_judge, prompts, original=[p.rejected for p in pairs], policy=padded)
    assert judged.length_shift > 0.25 and judged.mean_words_policy > judged.mean_words_original
    if win_band(judged) == "win":
        assert "longer than the original's" in win_reading(judged)


def test_the_original_models_answers_are_written_once_and_reused(embedded) -> None:  # noqa: ANN001
    prompts = ["Say hello.", "Name a colour."]
    first = judges.original_answers(embedded, prompts, 8)
    key = judges._answers_key(embedded, prompts, 8)
    stored = cache_root() / "judged-answers" / f"{key}.json"
    assert json.loads(stored.read_text()) == first
    stored.write_text(json.dumps(["kept", "on disk"]))
    judges._ORIGINAL.memory.clear()
    assert judges.original_answers(embedded, prompts, 8) == ["kept", "on disk"]
    stored.unlink()
    judges._ORIGINAL.memory.clear()
