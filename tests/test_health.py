"""The verdict's rules, each on its own, on synthetic histories and evidence shaped like real runs."""

import pytest

from alignlab.evidence.degeneration import Degeneration
from alignlab.evidence.figures import Evidence, curve_of
from alignlab.verdict import readings
from alignlab.verdict.findings import RunFacts
from alignlab.verdict.health import read_health, read_training_health
from alignlab.verdict.readings import accuracy_band, best_step

BETA = 0.1  # the synthetic histories' rewards are read as if trained with this beta


def rows(n=6, **series):
    """A synthetic TRL log history: each keyword is a list (or a constant) per step."""
    out = []
    for i in range(n):
        row = {
            "step": i + 1,
            "loss": 0.6,
            "grad_norm": 1.0,
            "rewards/accuracies": 1.0,
            "rewards/margins": 0.1 * (i + 1),
            "rewards/chosen": 0.0,
            "rewards/rejected": -0.1 * i,
        }
        for key, value in series.items():
            row[key.replace("__", "/")] = value[i] if isinstance(value, list) else value
        out.append(row)
    return out


GOOD_EVIDENCE = {
    "heldout_reward_accuracy": 1.0,
    "heldout_count": 6,
    "heldout_mean_margin": 0.8,
    "heldout_margins": [0.8] * 6,
    "contrast_accuracy": 0.875,
    "contrast_count": 8,
    "capability_accuracy_before": 0.875,
    "capability_accuracy_after": 0.875,
    "capability_pairs": 8,
    "kl_to_reference": 0.1,
    "perplexity_before": 20.0,
    "perplexity_after": 21.0,
}
GOOD_OUTPUTS = {
    "answers": 7,
    "distinct_answers_before": 7,
    "distinct_answers_after": 7,
    "repeated_ngram_rate_before": 0.02,
    "repeated_ngram_rate_after": 0.03,
    "looping_answers_before": 0,
    "looping_answers_after": 0,
    "garbage_answers_before": 0,
    "garbage_answers_after": 0,
    "mean_words_before": 40,
    "mean_words_after": 38,
    "new_common_phrases": [],
    "template_share": 0.0,
}


def facts(log=None, evidence=None, outputs=None, heldout_curve=(), **kw):
    """A run's facts from report-shaped evidence and answers' checks (``eval`` and ``eval.degeneration`` keys)."""
    return RunFacts(
        log_rows=rows() if log is None else log,
        beta=kw.pop("beta", BETA),
        evidence=Evidence.from_dict({**GOOD_EVIDENCE, **(evidence or {})}),
        degeneration=Degeneration.from_dict({**GOOD_OUTPUTS, **(outputs or {})}),
        heldout_curve=curve_of(list(heldout_curve)),
        changed=kw.pop("changed", 5),
        answers=7,
        **kw,
    )


def details(f):
    return [(d.code, d.severity) for d in read_health(f).details]


def codes(f, severity=None):
    return [d.code for d in read_health(f).details if severity is None or d.severity == severity]


def test_a_good_run_reads_healthy_with_a_code_behind_every_sentence():
    h = read_health(facts())
    assert h.verdict == "healthy"
    assert {"learning", "generalises", "beyond_cue", "capability_kept", "behaviour_changed"} <= set(h.codes)
    assert len(h.findings) == len(h.details) and all(d.code for d in h.details)
    report = h.to_dict()
    assert set(report) >= {"verdict", "findings", "codes", "best_step"}


def test_no_steps_is_a_failure():
    h = read_health(RunFacts(log_rows=[], beta=BETA))
    assert h.verdict == "failed" and h.codes == ["no_steps"]


def test_collapse_fails_whatever_the_loss_says():
    # measured: seed-lab at lr 5e-4, 20 steps -> every answer "Sure! Hope that helps!", loss ~0, rewards apart
    collapsed = {"distinct_answers_after": 1, "new_common_phrases": ["sure hope that helps"], "template_share": 1.0}
    h = read_health(facts(log=rows(loss=0.0001), outputs=collapsed))
    assert h.verdict == "failed"
    assert h.codes[0] == "collapse" and "template" in h.codes
    assert not [d for d in h.details if d.severity == "good"]  # nothing reads as good news in a failed run
    # two answers merging is only a warning
    assert read_health(facts(outputs={"distinct_answers_after": 6})).verdict == "warning"


def test_repetitive_phrasing_is_said_but_is_not_a_loop():
    # measured: lr 2e-5 on seed-lab, "remove the wheel from the wheel cylinder" four times, rate 0.26
    f = facts(outputs={"repetitive_answers_after": 1})
    assert read_health(f).verdict == "healthy" and "repetitive" in codes(f, "info")


def test_new_loops_are_repetition_and_old_ones_are_not():
    assert "repetition" in codes(facts(outputs={"looping_answers_after": 1}), "warning")
    assert "repetition" in codes(facts(outputs={"looping_answers_after": 5}), "failed")
    assert "repetition" not in codes(facts(outputs={"looping_answers_before": 1, "looping_answers_after": 1}))


def test_template_is_information_until_it_crowds_out_the_answer():
    light = facts(outputs={"new_common_phrases": ["hope that helps"], "template_share": 0.12})
    assert read_health(light).verdict == "healthy" and "template" in codes(light, "info")
    heavy = facts(outputs={"new_common_phrases": ["hope that helps"], "template_share": 0.6})
    assert "template" in codes(heavy, "warning")


def test_garbage():
    assert "garbage" in codes(facts(outputs={"garbage_answers_after": 5}), "failed")
    assert "garbage" in codes(facts(outputs={"garbage_answers_after": 1}), "warning")


def test_flat_training_at_chance_is_no_signal():
    f = facts(log=rows(rewards__accuracies=[0.5, 0.0, 1.0, 0.5, 0.5, 0.5], rewards__margins=0.0))
    assert read_health(f).verdict == "failed" and codes(f)[0] == "no_signal"


def test_unseen_pairs_ranked_at_chance_while_training_is_no_signal():
    # measured: seed-lab with chosen and rejected swapped on every other pair, 6 steps over 13 pairs
    # (all in the first epoch): batch accuracies 0, .5, .5, .5, .5, 1 while margins grew; held-out 17%
    log = rows(
        rewards__accuracies=[0.0, 0.5, 0.5, 0.5, 0.5, 1.0],
        rewards__margins=[0.0, -0.2, 0.47, 0.57, 0.7, 1.2],
        epoch=[0.14, 0.29, 0.43, 0.57, 0.71, 0.86],
    )
    evidence = {"heldout_reward_accuracy": 0.17, "heldout_margins": [-1.05, -0.57, -0.01, 0.71, -1.03, -1.19]}
    h = read_health(facts(log=log, evidence=evidence))
    assert h.verdict == "failed" and h.codes[0] == "no_signal"
    # the same fresh-batch figures in a run that generalises are not no_signal (batch noise at batch size 2)
    assert "no_signal" not in codes(facts(log=log))
    # later epochs revisit pairs: their accuracy is memory, not evidence
    revisited = rows(rewards__accuracies=[0, 1, 1, 0.5, 0.5, 0.5], epoch=[0.5, 1.0, 1.5, 2.0, 2.5, 3.0])
    assert "no_signal" not in codes(facts(log=revisited))


def test_held_out_pairs_ranked_backwards_are_no_signal():
    h = read_health(facts(evidence={"heldout_reward_accuracy": 0.17, "heldout_margins": [-1.0] * 5 + [1.0]}))
    assert h.codes[0] == "no_signal" and "wrong way round" in h.findings[0]


def test_contradicting_labels_are_no_signal_even_when_training_pairs_are_fit():
    # half the pairs swapped: training accuracy reaches 1 (each pair memorised), held-out margins point both ways
    evidence = {"heldout_reward_accuracy": 0.5, "heldout_margins": [1.2, -1.0, 0.9, -1.1, 1.0, -0.8]}
    h = read_health(facts(evidence=evidence))
    assert h.verdict == "failed" and h.codes[0] == "no_signal"
    # the same accuracy with margins that agree in sign is a weak signal, not none
    agreeing = {"heldout_reward_accuracy": 0.5, "heldout_margins": [1.2, 1.0, 0.9, -0.01, -0.02, -0.01]}
    assert "no_signal" not in codes(facts(evidence=agreeing))


def test_memorised_by_margin_and_by_a_falling_curve():
    # measured: the old default (6 steps at 5e-5, 10 pairs) ended at loss 1e-4, its 6th step revisiting
    # pairs seen in step 1: margins of ~9 reward units (90 nats) against 4.2 on held-out pairs
    log = rows(loss=[0.69, 0.3, 0.13, 0.06, 0.03, 0.0001], rewards__margins=[0, 1.1, 2.0, 2.8, 3.6, 9.0])
    log[-1]["epoch"] = 1.2
    assert "memorised" in codes(facts(log=log, evidence={"heldout_mean_margin": 4.15}), "warning")
    # the same margin on pairs seen for the first time is generalisation, whatever the held-out margin
    log[-1]["epoch"] = 1.0
    assert "memorised" not in codes(facts(log=log, evidence={"heldout_mean_margin": 8.0}))
    assert "memorised" not in codes(facts(log=log, evidence={"heldout_mean_margin": 2.0}))
    curve = [
        {"step": 1, "accuracy": 0.67, "margin": 0.1, "contrast_accuracy": 0.75},
        {"step": 2, "accuracy": 1.0, "margin": 0.5, "contrast_accuracy": 0.875},
        {"step": 3, "accuracy": 1.0, "margin": 0.9, "contrast_accuracy": 0.5},
        {"step": 4, "accuracy": 1.0, "margin": 1.4, "contrast_accuracy": 0.25},
    ]
    later = rows(n=4, epoch=[0.5, 1.0, 1.5, 2.0])  # steps 3 and 4 revisit the pairs
    h = read_health(facts(log=later, heldout_curve=curve))
    assert h.best_step == 2
    assert any(d.code == "memorised" and "peaked at step 2" in d.text for d in h.details)
    # the same dip within the first epoch (no pair seen twice) is not memorising
    first = rows(n=4, epoch=[0.25, 0.5, 0.75, 1.0])
    assert "memorised" not in codes(facts(log=first, heldout_curve=curve))
    assert "memorised" not in codes(facts(heldout_curve=curve[:2]))


def test_memorised_not_generalised():
    evidence = {"heldout_reward_accuracy": 0.5, "heldout_margins": [0.5, 0.4, -0.1, -0.1, 0.3, -0.2]}
    assert {"memorised", "no_generalisation"} <= set(codes(facts(evidence=evidence), "warning"))


def test_shortcut_when_the_cue_decides_the_ranking():
    h = read_health(facts(evidence={"contrast_accuracy": 0.25}))
    assert h.verdict == "warning" and "shortcut" in h.codes
    # held-out accuracy that only the cue earns is not reported as generalising
    assert "generalises" not in h.codes and "cue_only" in h.codes
    assert "no_contrast" in codes(facts(evidence={"contrast_accuracy": None}), "info")


def test_capability_loss_needs_two_pairs_and_a_fifth():
    assert "capability_loss" in codes(facts(evidence={"capability_accuracy_after": 0.625}), "warning")
    assert "capability_loss" not in codes(facts(evidence={"capability_accuracy_after": 0.75}))  # one pair


def test_likelihood_displacement_reads_nats_under_the_runs_beta():
    log = rows(rewards__chosen=[0, -0.1, -0.2, -0.3, -0.3, -0.3])
    assert "displacement" in codes(facts(log=log, beta=0.1), "warning")
    assert "displacement" not in codes(facts(log=log, beta=1.0))


def test_batches_of_different_pairs_are_not_read_as_displacement():
    # Measured (concise preset, batch size 2): chosen rewards against the reference stay above zero.
    log = rows(rewards__chosen=[0.0, 0.24, -0.08, 0.14, 0.67, 0.4], rewards__rejected=[0.0, -3.6, -8.2, -11, -14, -18])
    assert "displacement" not in codes(facts(log=log))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_loss_is_instability(bad):
    h = read_health(facts(log=rows(loss=[0.6, 0.5, bad, 0.4, 0.4, 0.4])))
    assert h.verdict == "failed" and "unstable" in h.codes
    assert any("at step 3" in f for f in h.findings)


def test_exploding_grad_norm():
    assert "unstable" in codes(facts(log=rows(grad_norm=[1, 2, 5, 400, 9, 1])), "warning")


def test_no_behaviour_change():
    assert "no_change" in codes(facts(changed=0), "warning")
    # measured: lr 1e-7 changed 1 of 7 answers by a rounding-level tie, at 0.0000 nats/token of KL
    assert "no_change" in codes(facts(changed=1, evidence={"kl_to_reference": 0.00003}), "warning")
    assert "no_change" not in codes(facts(changed=1, evidence={"kl_to_reference": 0.05}))


def test_drift_is_a_warning_past_its_line_and_a_failure_at_twice_the_line():
    assert ("heavy_drift", "warning") in details(facts(evidence={"kl_to_reference": 0.8}))
    assert ("heavy_drift", "failed") in details(facts(evidence={"kl_to_reference": 1.0}))
    assert ("heavy_drift", "warning") in details(facts(evidence={"perplexity_after": 40.0}))  # x2.0
    assert ("heavy_drift", "failed") in details(facts(evidence={"perplexity_after": 60.0}))  # x3.0, twice x1.5
    # KL 3.1 and perplexity 24 -> 1,082: failed, and none of the good findings is shown as a good sign
    h = read_health(facts(evidence={"kl_to_reference": 3.1, "perplexity_before": 24.0, "perplexity_after": 1082.0}))
    assert h.verdict == "failed" and not [d for d in h.details if d.severity == "good"]
    assert {"generalises", "capability_kept"} <= set(h.codes)  # still in the report, as information


def test_one_source_of_thresholds_for_readings_and_verdict():
    from alignlab.evidence.stats import Proportion

    # the Compare tab and the verdict use the same bands: 60% is "about chance" in both, whatever the count
    assert accuracy_band(Proportion(6, 10)) == "chance" and accuracy_band(Proportion(60, 100)) == "chance"
    evidence = {**GOOD_EVIDENCE, "heldout_reward_accuracy": 0.6, "heldout_count": 10}
    assert "about chance" in readings.heldout_reading(Evidence.from_dict(evidence))
    assert "no_generalisation" in codes(facts(evidence=evidence))
    # above it, a test against chance decides: 5/5 beats a coin (p = 0.031), 4/5 and 5/6 do not
    assert accuracy_band(Proportion(5, 5)) == "beats_chance" and accuracy_band(Proportion(6, 6)) == "beats_chance"
    assert accuracy_band(Proportion(4, 5)) == "undecided" and accuracy_band(Proportion(5, 6)) == "undecided"
    assert accuracy_band(None) == "unknown"


def test_generalises_only_where_a_coin_would_not_match_the_held_out_ranking():
    # 4 of 5 held-out pairs: 80%, and a coin does as well 19% of the time: not "generalises", and not healthy
    four_of_five = facts(evidence={"heldout_reward_accuracy": 0.8, "heldout_count": 5, "heldout_margins": [0.5] * 5})
    h = read_health(four_of_five)
    assert "generalises" not in h.codes and "weak_generalisation" in h.codes and h.verdict == "warning"
    text = next(d.text for d in h.details if d.code == "weak_generalisation")
    assert "4/5 (38–96%)" in text and "19%" in text and "about 13 pairs" in text
    # 5 of 5 does beat a coin (p = 0.031): the finding says how sure, with the count
    h = read_health(facts(evidence={"heldout_reward_accuracy": 1.0, "heldout_count": 5}))
    assert h.verdict == "healthy" and "5/5 (57–100%)" in next(d.text for d in h.details if d.code == "generalises")


def test_beyond_the_cue_only_where_the_contrast_ranking_beats_chance():
    undecided = facts(evidence={"contrast_accuracy": 5 / 6, "contrast_count": 6})
    assert "beyond_cue" not in codes(undecided) and "partial_cue" in codes(undecided, "info")
    assert "beyond_cue" in codes(facts(evidence={"contrast_accuracy": 1.0, "contrast_count": 6}), "good")
    # a shortcut is read on the point estimate: a test never makes a harm easier to miss
    assert "shortcut" in codes(facts(evidence={"contrast_accuracy": 0.5, "contrast_count": 4}), "warning")


def test_a_reference_free_score_needs_a_gain_over_the_original_model_on_the_same_pairs():
    ref_free = {"heldout_scorer": "mean_logprob", "heldout_reward_accuracy_before": 1.0, "heldout_count": 12}
    no_gain = {**ref_free, "heldout_gain": {"gains": 7, "losses": 5, "p_value": 0.39}}
    assert "no_gain" in codes(facts(evidence=no_gain, method="orpo")) and "generalises" not in codes(
        facts(evidence=no_gain, method="orpo")
    )
    gain = {**ref_free, "heldout_gain": {"gains": 11, "losses": 1, "p_value": 0.0032}}
    assert "generalises" in codes(facts(evidence=gain, method="orpo"), "good")


def test_answers_that_no_longer_make_sense_are_garbled_and_half_or_more_fail():
    garbled = {"garbled_answers_before": 0, "surprise_before": [1.0] * 7, "surprise_after": [3.0] * 7}
    assert ("garbled", "warning") in details(facts(outputs={**garbled, "garbled_answers_after": 3}))
    assert ("garbled", "failed") in details(facts(outputs={**garbled, "garbled_answers_after": 4}))
    # 2 looping and 2 garbled answers of 7: no one kind reaches half, together they do
    mixed = {**garbled, "garbled_answers_after": 2, "looping_answers_after": 2, "broken_answers_after": 4}
    assert ("broken", "failed") in details(facts(outputs=mixed))
    assert read_health(facts(outputs=mixed)).verdict == "failed"
    assert "broken" not in codes(facts(outputs={**mixed, "broken_answers_after": 3}))
    # four of seven looping answers: half or more, failed on its own
    assert ("repetition", "failed") in details(facts(outputs={"looping_answers_after": 4}))


def test_training_tab_reading_needs_only_the_log():
    h = read_training_health(rows(), BETA, [{"step": 1, "accuracy": 0.5}, {"step": 2, "accuracy": 1.0}])
    assert h.verdict == "healthy" and h.best_step == 2
    assert not {"no_heldout", "no_contrast"} & set(h.codes)  # evidence comes later, on the Compare tab


def test_best_step_is_the_earliest_peak():
    curve = [{"step": s, "accuracy": a} for s, a in [(1, 0.5), (2, 1.0), (3, 1.0), (4, 0.83)]]
    assert best_step(curve_of(curve)) == 2 and best_step([]) is None


def test_the_curve_in_one_sentence():
    curve = [
        {"step": s, "accuracy": a, "count": 4, "contrast_accuracy": c, "contrast_count": 4, "margin": m}
        for s, a, c, m in [(2, 0.5, 0.25, 0.01), (4, 1.0, 0.75, 0.2), (6, 1.0, 0.5, 0.1)]
    ]
    curve[-1]["margin_interval"] = [0.05, 0.15]
    text = readings.curve_reading(curve_of(curve))
    assert "scored after steps 2, 4, 6" in text and "2/4 (15–85%) (contrast 1/4 (5–70%)) at step 2" in text
    assert "best 4/4 (51–100%) (contrast 3/4 (30–95%)) at step 4" in text
    assert "mean margin +0.100 (95%: +0.050 to +0.150) at the end" in text
    assert "No held-out curve" in readings.curve_reading([])


def _checked(before: int, after: int, lost: int, n: int = 20) -> dict:
    return {
        "checked_capability_before": before / n,
        "checked_capability_after": after / n,
        "checked_capability_count": n,
        "checked_capability_lost": lost,
    }


def test_checked_answers_turned_wrong_are_a_capability_loss_on_the_point_estimate():
    # measured: rlhf on seed-lab at its defaults, "How many hours are in a day?" -> "you can use the formula 1 + 2"
    lost = facts(evidence=_checked(19, 16, 3))
    assert "capability_loss" in codes(lost, "warning") and read_health(lost).verdict == "warning"
    text = next(d.text for d in read_health(lost).details if d.code == "capability_loss")
    assert "19/20" in text and "16/20" in text and "%" in text  # both counts and their intervals
    # two answers turned wrong, as the smallest move flips fragile ones (IPO on seed-lab, KL 0.004), are not a loss
    assert "capability_loss" not in codes(facts(evidence=_checked(19, 17, 2)))
    assert "capability_loss" not in codes(facts(evidence=_checked(19, 19, 3)))  # three lost, three gained


REWARD_MODEL_RIGHT = {
    "heldout_accuracy": 1.0,
    "heldout_count": 14,
    "contrast_accuracy": 1.0,
    "contrast_count": 14,
}
RLHF_RANKING = {"heldout_reward_accuracy": 3 / 14, "heldout_count": 14, "heldout_margins": [-0.2] * 14}


def test_rlhf_is_read_from_its_reward_model_and_its_implicit_ranking_is_information():
    rlhf = facts(method="rlhf", evidence={**RLHF_RANKING, "reward_model": REWARD_MODEL_RIGHT})
    assert "reward_model_right" in codes(rlhf, "good")
    # the policy's implicit reward ranks held-out pairs backwards: said, but as information only
    assert "no_generalisation" in codes(rlhf, "info") and "no_generalisation" not in codes(rlhf, "warning")
    assert read_health(rlhf).verdict == "healthy"
    # the same ranking under DPO, which optimises that score, is a warning
    assert "no_generalisation" in codes(facts(evidence=RLHF_RANKING), "warning")


@pytest.mark.parametrize(
    ("reward_model", "code"),
    [
        ({**REWARD_MODEL_RIGHT, "heldout_accuracy": 7 / 14}, "reward_model_chance"),  # half the labels swapped
        ({**REWARD_MODEL_RIGHT, "heldout_accuracy": 4 / 6, "heldout_count": 6}, "reward_model_undecided"),
        ({**REWARD_MODEL_RIGHT, "contrast_accuracy": 5 / 14}, "reward_model_cue"),
    ],
)
def test_a_reward_model_that_did_not_learn_the_preference_keeps_rlhf_from_healthy(reward_model, code):
    rlhf = facts(method="rlhf", evidence={"reward_model": reward_model})
    assert code in codes(rlhf, "warning") and read_health(rlhf).verdict != "healthy"
    assert "reward_model_right" not in codes(rlhf)


def test_a_reward_model_without_held_out_pairs_is_unchecked_and_dpo_has_none():
    rlhf = facts(method="rlhf", evidence={"reward_model": None, "heldout_reward_accuracy": None, "heldout_count": 0})
    assert "reward_model_unchecked" in codes(rlhf, "info")
    assert not [c for c in codes(facts()) if c.startswith("reward_model")]
