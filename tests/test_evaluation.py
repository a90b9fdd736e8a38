import copy
import math

import pytest
import torch
import torch.nn.functional as F

from alignlab.evaluation import (
    completion_logps,
    count_changed,
    gather_evidence,
    heldout_preference,
    implicit_rewards,
    mean_token_kl,
    perplexity,
    preference_accuracy,
    read_health,
)
from alignlab.training import TrainingSettings, train_dpo


def test_implicit_reward_from_known_log_probs():
    policy = torch.tensor([-10.0, -20.0, -5.0])
    reference = torch.tensor([-12.0, -18.0, -5.0])
    assert implicit_rewards(policy, reference, beta=0.1).tolist() == pytest.approx([0.2, -0.2, 0.0])


def test_preference_accuracy_counts_strict_wins_and_mean_margin():
    chosen = torch.tensor([1.0, 0.5, 0.0, 2.0])
    rejected = torch.tensor([0.0, 1.0, 0.0, 1.0])
    accuracy, margin = preference_accuracy(chosen, rejected)
    assert accuracy == 0.5  # rows 1 and 4 win; a tie (row 3) is not a win
    assert margin == pytest.approx((1 - 0.5 + 0 + 1) / 4)


def test_count_changed():
    assert count_changed(["a", "b ", "c"], ["a", "b", "d"]) == 1


def test_completion_logps_match_a_hand_computed_sum(tiny_chat):
    prompt, completion = "Hi", "Hello there."
    (got,) = completion_logps(tiny_chat.model, tiny_chat, [prompt], [completion]).tolist()
    tok = tiny_chat.tokenizer
    prompt_ids = tok(tiny_chat.format_prompt(prompt), add_special_tokens=False)["input_ids"]
    full = tok(tiny_chat.format_prompt(prompt) + "Hello there.<|im_end|>\n", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = tiny_chat.model(torch.tensor([full])).logits[0]
    logp = F.log_softmax(logits.float(), -1)
    expected = sum(logp[t - 1, full[t]].item() for t in range(len(prompt_ids), len(full)))
    assert got == pytest.approx(expected, abs=1e-4)


def test_completion_logps_batched_equals_single(tiny_base):
    prompts = ["Hi", "A much longer question about rivers?"]
    completions = ["Yes.", "Rivers flow to the sea."]
    batched = completion_logps(tiny_base.model, tiny_base, prompts, completions)
    single = torch.cat([completion_logps(tiny_base.model, tiny_base, [p], [c]) for p, c in zip(prompts, completions)])
    assert torch.allclose(batched, single, atol=1e-4)


def test_identical_models_have_zero_kl_and_zero_rewards(tiny_chat, pairs):
    same = copy.deepcopy(tiny_chat.model)
    assert mean_token_kl(same, tiny_chat.model, tiny_chat, ["Hi"], ["Hello there."]) == pytest.approx(0.0, abs=1e-6)
    held = heldout_preference(same, tiny_chat.model, tiny_chat, pairs, beta=0.1)
    assert held.accuracy == 0.0 and held.mean_margin == pytest.approx(0.0, abs=1e-6)


def test_perplexity_is_exp_of_mean_nll(tiny_base):
    text = "The river rises in the hills."
    ids = tiny_base.tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logp = F.log_softmax(tiny_base.model(ids).logits[0, :-1].float(), -1)
    nll = -logp.gather(-1, ids[0, 1:, None]).mean().item()
    assert perplexity(tiny_base.model, tiny_base, text) == pytest.approx(math.exp(nll), rel=1e-4)


def test_training_on_pairs_raises_their_implicit_reward_margin(tiny_chat, pairs):
    result = train_dpo(tiny_chat, pairs, TrainingSettings(steps=6, batch_size=4, learning_rate=1e-3, max_length=64))
    evidence = gather_evidence(result.policy, tiny_chat, pairs, ["Hi"], ["Hello"], beta=0.1)
    assert evidence.heldout_reward_accuracy == 1.0  # measured on the trained pairs: must be learnt
    assert evidence.heldout_mean_margin > 0
    assert evidence.kl_to_reference > 0
    assert evidence.perplexity_before != evidence.perplexity_after


# ----------------------------------------------------------------------------- health

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
            "logps/chosen": -50.0,
            "logps/rejected": -60.0 - i,
            "rewards/chosen": 0.0,
            "rewards/rejected": -0.1 * i,
        }
        for key, value in series.items():
            row[key.replace("__", "/")] = value[i] if isinstance(value, list) else value
        out.append(row)
    return out


def test_healthy_run_reads_healthy():
    health = read_health(
        rows(),
        heldout_accuracy=0.9,
        changed=3,
        kl_to_reference=0.1,
        perplexity_before=20,
        perplexity_after=21,
        beta=BETA,
    )
    assert health.verdict == "healthy"
    assert any("Learning signal" in f for f in health.findings)
    assert any("90% of held-out pairs" in f for f in health.findings)


def test_no_steps_is_a_failure():
    assert read_health([{"train_runtime": 1.0}], beta=BETA).verdict == "failed"


def test_no_learning_signal():
    health = read_health(rows(rewards__accuracies=[0.5, 0.0, 1.0, 0.5, 0.5, 0.5], rewards__margins=0.0), beta=BETA)
    assert health.verdict == "failed"
    assert any(f.startswith("No learning signal") for f in health.findings)


def test_memorised_not_generalised():
    health = read_health(rows(), heldout_accuracy=0.5, beta=BETA)
    assert health.verdict == "warning"
    assert any(f.startswith("Memorised, not generalised") for f in health.findings)


def test_heldout_at_chance_is_no_generalisation():
    health = read_health(rows(rewards__accuracies=[0, 1, 0, 1, 1, 0]), heldout_accuracy=0.5, beta=BETA)
    assert health.verdict == "warning"
    assert any(f.startswith("No generalisation: only 50%") for f in health.findings)


def test_likelihood_displacement():
    # beta 0.1: a chosen reward of -0.3 is 3 nats below the reference on the same pairs
    health = read_health(rows(rewards__chosen=[0, -0.1, -0.2, -0.3, -0.3, -0.3]), beta=0.1)
    assert health.verdict == "warning"
    assert any(
        f.startswith("Likelihood displacement: the chosen answers' log-probability fell 3.00") for f in health.findings
    )
    # the same rewards under beta 1.0 are only 0.3 nats: no warning
    assert read_health(rows(rewards__chosen=[0, -0.1, -0.2, -0.3, -0.3, -0.3]), beta=1.0).verdict == "healthy"


def test_batches_of_different_pairs_are_not_read_as_displacement():
    # Measured (concise preset, batch size 2): raw chosen log-probs swing with the pairs each batch
    # drew, while the chosen rewards, against the reference on the same pairs, stay above zero.
    history = rows(
        logps__chosen=[-23.1, -11.2, -46.4, -16.0, -26.4, -44.4],
        logps__rejected=[-138.3, -156.0, -244.5, -240.7, -287.2, -335.9],
        rewards__chosen=[0.0, 0.24, -0.08, 0.14, 0.67, 0.4],
        rewards__rejected=[0.0, -3.59, -8.22, -11.26, -14.16, -18.32],
    )
    health = read_health(history, beta=0.1)
    assert not any(f.startswith("Likelihood displacement") for f in health.findings)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_loss_is_instability(bad):
    health = read_health(rows(loss=[0.6, 0.5, bad, 0.4, 0.4, 0.4]), beta=BETA)
    assert health.verdict == "failed"
    assert any("Instability: the loss became NaN or infinite at step 3" in f for f in health.findings)


def test_exploding_grad_norm():
    health = read_health(rows(grad_norm=[1, 2, 5, 400, 9, 1]), beta=BETA)
    assert health.verdict == "warning"
    assert any("gradient norm reached 400" in f for f in health.findings)


def test_no_behaviour_change():
    health = read_health(rows(), changed=0, beta=BETA)
    assert health.verdict == "warning"
    assert any(f.startswith("No behaviour change") for f in health.findings)


def test_heavy_drift_by_kl_and_by_perplexity():
    by_kl = read_health(rows(), kl_to_reference=2.0, beta=BETA)
    by_ppl = read_health(rows(), perplexity_before=10.0, perplexity_after=30.0, beta=BETA)
    assert by_kl.verdict == by_ppl.verdict == "warning"
    assert any(f.startswith("Heavy drift: 2.00 nats/token") for f in by_kl.findings)
    assert any("rose from 10.0 to 30.0" in f for f in by_ppl.findings)
