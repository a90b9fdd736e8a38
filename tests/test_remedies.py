"""A remedy a person can apply: the cure of a verdict's most severe finding, as settings, and the CLI that runs it."""

from __future__ import annotations

import json

import pytest

from alignlab.cli import main
from alignlab.evidence.figures import Drift, Evidence
from alignlab.registry.settings import KNOBS, TrainingSettings
from alignlab.verdict.findings import Finding, Health
from alignlab.verdict.remedies import CURES, DATA_PROBLEMS, remedy, remedy_settings


def health(*codes: str, best_step: int | None = None) -> Health:
    """A verdict whose findings are ``codes``, each 'failed' when prefixed with '!' (else 'warning')."""
    details = [Finding(c.lstrip("!"), "failed" if c.startswith("!") else "warning", c) for c in codes]
    verdict = "failed" if any(c.startswith("!") for c in codes) else ("warning" if codes else "healthy")
    return Health(verdict, details, best_step)


def test_too_large_a_step_is_cured_by_a_smaller_one_and_explosions_by_a_much_smaller_one():
    settings = TrainingSettings(learning_rate=6e-5, steps=20)
    for code in ("collapse", "repetition", "garbage", "garbled", "broken"):
        found = remedy(health(f"!{code}"), settings, Evidence())
        assert found.changes == {"learning_rate": 1.5e-5} and found.code == code
        assert "a learning rate of 1.5e-05 instead of 6e-05" in found.because
    assert remedy(health("!unstable"), settings, Evidence()).changes == {"learning_rate": 6e-6}
    # far above the method's own default: back to the default at the most, the rate measured not to loop
    found = remedy(health("!collapse"), TrainingSettings(learning_rate=5e-4, steps=20), Evidence())
    assert found.changes == {"learning_rate": 2e-5} and "(the method's own default)" in found.because
    assert remedy(health("!collapse"), TrainingSettings(learning_rate=1e-5), Evidence()).changes == {
        "learning_rate": 2.5e-6
    }
    # the remedy's settings are the run's own with the cure applied: a new run is that run changed in that alone
    found = remedy(health("!collapse"), settings, Evidence())
    assert found.settings == {**settings.to_dict(), "learning_rate": 1.5e-5}
    assert TrainingSettings.from_dict(found.settings).steps == 20


def test_the_most_severe_finding_with_a_cure_names_the_remedy():
    settings = TrainingSettings(learning_rate=4e-5, steps=20)
    # failed before warning, whatever order the findings came in
    found = remedy(health("memorised", "!repetition"), settings, Evidence())
    assert found.code == "repetition"
    # a finding without a cure is passed over for the next
    assert remedy(health("!no_steps", "memorised", best_step=8), settings, Evidence()).changes == {"steps": 8}
    assert remedy(health(), settings, Evidence()) is None  # healthy: nothing to cure


def test_memorising_stops_at_the_best_held_out_step_or_halves_the_step():
    settings = TrainingSettings(steps=20)
    assert remedy(health("memorised", best_step=6), settings, Evidence()).changes == {"steps": 6}
    # the curve peaked at the end: no earlier step to stop at
    assert remedy(health("memorised", best_step=20), settings, Evidence()).changes == {"learning_rate": 1e-5}
    # a method of two stages numbers the policy's steps after the reward model's: halve the step instead
    rlhf = TrainingSettings.for_method("rlhf", steps=10)
    assert remedy(health("loses", best_step=12), rlhf, Evidence()).changes == {"learning_rate": 2.5e-5}


def test_drift_and_lost_knowledge_hold_the_policy_closer():
    assert remedy(health("capability_loss"), TrainingSettings(), Evidence()).changes == {"beta": 0.2}
    assert remedy(health("!heavy_drift"), TrainingSettings(beta=0.8), Evidence()).changes == {"learning_rate": 1e-5}
    # no reference to hold it to (SimPO), or one felt only as a penalty on sampled answers (RLHF): a smaller step
    for method in ("simpo", "rlhf"):
        settings = TrainingSettings.for_method(method)
        assert remedy(health("capability_loss"), settings, Evidence()).changes == {
            "learning_rate": settings.learning_rate / 2
        }


def test_displacement_adds_dpos_sft_term_and_a_run_that_did_not_move_gets_a_real_step():
    assert remedy(health("displacement"), TrainingSettings(), Evidence()).changes == {"sft_weight": 1.0}
    kto = TrainingSettings.for_method("kto")
    assert remedy(health("displacement"), kto, Evidence()).changes == {"learning_rate": kto.learning_rate / 2}
    assert remedy(health("no_change"), TrainingSettings(learning_rate=1e-8), Evidence()).changes == {
        "learning_rate": 2e-5
    }
    assert remedy(health("no_change"), TrainingSettings(learning_rate=5e-5), Evidence()).changes == {
        "learning_rate": 5e-4
    }
    top = KNOBS["learning_rate"].high
    assert remedy(health("no_change"), TrainingSettings(learning_rate=top), Evidence()).changes == {
        "learning_rate": top
    }
    # too few held-out pairs to decide: a bigger step only where the policy did not move
    assert remedy(health("weak_generalisation"), TrainingSettings(), Evidence(drift=Drift(kl=0.0001))) is not None
    assert remedy(health("weak_generalisation"), TrainingSettings(), Evidence(drift=Drift(kl=0.05))) is None


@pytest.mark.parametrize("code", sorted(DATA_PROBLEMS))
def test_a_problem_of_the_data_has_no_remedy_in_the_settings(code):
    assert code not in CURES
    # even beside a finding that has a cure: the data must change first
    assert remedy(health(f"!{code}", "!repetition"), TrainingSettings(learning_rate=1e-3), Evidence()) is None


def test_every_remedy_is_usable_settings_within_the_knobs():
    settings = TrainingSettings(learning_rate=1e-3, steps=30, beta=0.6)
    for code in CURES:
        found = remedy(health(code, best_step=4), settings, Evidence(drift=Drift(kl=0.0)))
        if found is not None:
            assert not TrainingSettings.from_dict(found.settings).problems(), code
            assert set(found.changes) <= {"learning_rate", "steps", "beta", "sft_weight"}, code
            assert found.to_dict()["because"].endswith("."), code


def test_a_report_without_a_remedy_says_why():
    with pytest.raises(ValueError, match="not an AlignLab report"):
        remedy_settings({"eval": {}})
    with pytest.raises(ValueError, match=r"This report \(healthy\) names no remedy"):
        remedy_settings({"health": {"verdict": "healthy", "remedy": None}})
    settings = {"learning_rate": 1e-5}
    assert remedy_settings({"health": {"remedy": {"settings": settings}}}) == settings


def _report_with_remedy(settings: TrainingSettings, preset: str = "seed-lab") -> dict:
    found = remedy(health("!collapse"), settings, Evidence())
    return {"settings": {"preset": preset}, "health": {"verdict": "failed", "remedy": found.to_dict()}}


@pytest.mark.parametrize(
    ("report", "message"),
    [
        (None, "does not exist"),
        ("not json", "is not a readable JSON report"),
        ({"health": {"verdict": "healthy", "remedy": None}}, "names no remedy"),
        (_report_with_remedy(TrainingSettings(learning_rate=1e-3), "concise"), "that report's run was on 'concise'"),
    ],
)
def test_remedy_of_a_bad_report_is_one_clear_message_before_any_work(tmp_path, capsys, report, message):
    path = tmp_path / "report.json"
    if report is not None:
        path.write_text(report if isinstance(report, str) else json.dumps(report))
    assert main(["lab", "--preset", "seed-lab", "--remedy-of", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.slow
def test_remedy_of_trains_the_remedy_with_the_flags_beside_it_winning(tmp_path, tiny_chat_dir, capsys):
    first = TrainingSettings(learning_rate=1e-4, steps=3, batch_size=4, seed=7)
    report = tmp_path / "first.json"
    report.write_text(json.dumps(_report_with_remedy(first)))
    out = tmp_path / "second.json"
    args = ["lab", "--model", str(tiny_chat_dir), "--preset", "seed-lab", "--remedy-of", str(report)]
    assert main([*args, "--steps", "2", "--max-new-tokens", "4", "--no-track", "--out", str(out)]) == 0
    assert "lr 2e-05, 2 steps" in capsys.readouterr().out
    training = json.loads(out.read_text())["settings"]["training"]
    # the remedy's learning rate, the first run's batch size and seed, and the steps given beside it
    assert training["learning_rate"] == 2e-5 and training["batch_size"] == 4 and training["seed"] == 7
    assert training["steps"] == 2
