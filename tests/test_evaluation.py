import copy
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from alignlab.data.pairs import PreferencePair
from alignlab.evidence import evaluation, probes
from alignlab.evidence.degeneration import Degeneration
from alignlab.evidence.evaluation import count_changed, gather_evidence, mean_token_kl, perplexity
from alignlab.evidence.figures import (
    Capability,
    CheckedQuestions,
    CurvePoint,
    Drift,
    Evidence,
    Gain,
    JudgeCheck,
    Ranking,
    WinRate,
)
from alignlab.evidence.probes import PreferenceProbe, implicit_rewards, preference_accuracy
from alignlab.evidence.stats import Proportion
from alignlab.models import generation, logprobs
from alignlab.models.generation import generate, generate_scored
from alignlab.models.logprobs import sequence_logps
from alignlab.pipeline.steps import json_ready
from alignlab.registry.settings import GenerationSettings, TrainingSettings
from alignlab.training.run import train_policy


def _perturbed(model: torch.nn.Module, scale: float = 0.05, seed: int = 0) -> torch.nn.Module:
    """A copy of ``model`` with seeded noise on every weight."""
    torch.manual_seed(seed)
    other = copy.deepcopy(model)
    with torch.no_grad():
        for param in other.parameters():
            param.add_(scale * torch.randn_like(param))
    return other


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
    (got,) = sequence_logps(tiny_chat.model, tiny_chat, [prompt], [completion]).tolist()
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
    batched = sequence_logps(tiny_base.model, tiny_base, prompts, completions)
    single = torch.cat([sequence_logps(tiny_base.model, tiny_base, [p], [c]) for p, c in zip(prompts, completions)])
    assert torch.allclose(batched, single, atol=1e-4)


def test_identical_models_have_zero_kl_and_zero_rewards(tiny_chat, pairs):
    same = copy.deepcopy(tiny_chat.model)
    assert mean_token_kl(same, tiny_chat.model, tiny_chat, ["Hi"], ["Hello there."]) == pytest.approx(0.0, abs=1e-6)
    held = PreferenceProbe(tiny_chat, 0.1, pairs).score(same)["heldout"]
    assert held.accuracy == 0.0 and held.mean_margin == pytest.approx(0.0, abs=1e-6)


def test_perplexity_is_exp_of_mean_nll(tiny_base):
    text = "The river rises in the hills."
    ids = tiny_base.tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logp = F.log_softmax(tiny_base.model(ids).logits[0, :-1].float(), -1)
    nll = -logp.gather(-1, ids[0, 1:, None]).mean().item()
    assert perplexity(tiny_base.model, tiny_base, text) == pytest.approx(math.exp(nll), rel=1e-4)


def test_training_on_pairs_raises_their_implicit_reward_margin(tiny_chat, pairs):
    result = train_policy(tiny_chat, pairs, TrainingSettings(steps=6, batch_size=4, learning_rate=1e-3, max_length=64))
    evidence = gather_evidence(result.policy, tiny_chat, pairs, ["Hi"], ["Hello"], beta=0.1)
    assert evidence.heldout.accuracy == 1.0  # measured on the trained pairs: must be learnt
    assert evidence.heldout.mean_margin > 0
    assert evidence.drift.kl > 0
    assert evidence.drift.perplexity_before != evidence.drift.perplexity_after


def naive_logps(model, loaded, prompts, completions):
    """The obvious way: full-vocabulary log-softmax over the whole padded batch (what the scorer avoids)."""
    out = []
    for prompt, completion in zip(prompts, completions):
        ids, begin = logprobs.encode_pair(loaded, prompt, completion)
        with torch.no_grad():
            logp = F.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
        out.append(sum(logp[t - 1, ids[t]].item() for t in range(begin, len(ids))))
    return torch.tensor(out)


@pytest.mark.parametrize("fixture", ["tiny_chat", "tiny_base"])
def test_chunked_scoring_equals_full_log_softmax_whatever_the_batching(request, fixture, monkeypatch):
    loaded = request.getfixturevalue(fixture)
    prompts = ["Hi", "A much longer question about rivers and the sea and bridges?", "Why?", "Hi"]
    completions = ["Yes.", "Rivers flow to the sea.", "Because the sky scatters blue light more than red.", "No"]
    expected = naive_logps(loaded.model, loaded, prompts, completions)
    monkeypatch.setattr(logprobs, "POSITIONS_PER_CHUNK", 3)  # a chunk boundary inside every answer
    for max_tokens in (8, 64, 4096):  # one row per batch ... everything in one batch
        got = sequence_logps(loaded.model, loaded, prompts, completions, max_tokens=max_tokens)
        assert torch.allclose(got, expected, atol=1e-4), max_tokens


@pytest.mark.parametrize("fixture", ["tiny_chat", "tiny_base"])
def test_answers_of_unlike_length_go_in_their_own_batches_over_one_prompt_cache(request, fixture, monkeypatch):
    """With no token floor, each prompt batch's answers split by length into several forwards on copies of the
    prompts' KV cache (a forward appends to the cache it is given): the scores stay the naive ones."""
    loaded = request.getfixturevalue(fixture)
    prompts = ["Hi", "Hi", "Tell me about rivers.", "Tell me about rivers.", "Why?"]
    completions = [
        "Yes.",
        "Hello there, how can I help you with your question about anything today?",
        "Rivers flow to the sea, carving valleys as they go.",
        "No.",
        "Because the sky scatters blue light more than red light.",
    ]
    expected = naive_logps(loaded.model, loaded, prompts, completions)
    forwards = []
    real_forward = logprobs._forward
    monkeypatch.setattr(logprobs, "_forward", lambda *a, **k: forwards.append(k) or real_forward(*a, **k))
    monkeypatch.setattr(logprobs, "MIN_BATCH_TOKENS", {"cpu": 1, "cuda": 1})
    got = sequence_logps(loaded.model, loaded, prompts, completions)
    answer_forwards = [k for k in forwards if k.get("use_cache") is False]  # prompts run with use_cache=True
    assert len(answer_forwards) >= 3  # the long and short answers of one prompt batch ran apart
    assert torch.allclose(got, expected, atol=1e-4)
    forwards.clear()
    monkeypatch.setattr(logprobs, "MIN_BATCH_TOKENS", {"cpu": 10**6, "cuda": 10**6})  # one forward each
    assert torch.allclose(sequence_logps(loaded.model, loaded, prompts, completions), expected, atol=1e-4)
    assert len([k for k in forwards if k.get("use_cache") is False]) == 1


def test_prompts_opening_alike_run_their_common_opening_once(tiny_chat, monkeypatch):
    """Prompts that open alike (a chat template's system prompt, an instruction every prompt repeats) run their
    common opening once per batch, as one row, and each prompt's own tokens on a copy of its cache; the scores
    stay the naive ones."""
    opening = "You are a careful assistant: answer in one short sentence. "
    prompts = [opening + q for q in ("Hi", "Tell me about rivers.", "Why is the sky blue?", "Hi")]
    completions = ["Yes.", "Rivers flow to the sea.", "Because the sky scatters blue light.", "Hello there!"]
    expected = naive_logps(tiny_chat.model, tiny_chat, prompts, completions)
    encoded = [logprobs.encode_pair(tiny_chat, p, c) for p, c in zip(prompts, completions)]
    shared = logprobs._shared_prefix(list({tuple(ids[:begin]) for ids, begin in encoded}))
    assert shared >= logprobs.MIN_SHARED_PREFIX
    forwards = []
    real_forward = logprobs._forward
    monkeypatch.setattr(logprobs, "_forward", lambda *a, **k: forwards.append(k) or real_forward(*a, **k))
    monkeypatch.setattr(logprobs, "MIN_BATCH_TOKENS", {"cpu": 10**6, "cuda": 10**6})  # one batch
    got = sequence_logps(tiny_chat.model, tiny_chat, prompts, completions)
    assert torch.allclose(got, expected, atol=1e-4)
    assert tuple(forwards[0]["input_ids"].shape) == (1, shared)  # the opening, once
    rests = forwards[1]
    assert rests["past_key_values"] is not None and rests["use_cache"] is True
    assert rests["input_ids"].shape[0] == 3  # the three distinct prompts, after the opening
    assert rests["attention_mask"].shape[1] == shared + rests["input_ids"].shape[1]


def test_no_common_opening_runs_every_prompt_whole():
    assert logprobs._shared_prefix([(1, 2, 3)]) == 0  # one prompt: nothing to share
    assert logprobs._shared_prefix([tuple(range(20)), (0, 1, 2) + tuple(range(50, 70))]) == 0  # under the floor
    ten = tuple(range(10))
    assert logprobs._shared_prefix([ten + (1,), ten + (2,)]) == 10
    assert logprobs._shared_prefix([ten, ten + (5, 6)]) == 9  # each prompt keeps a token of its own


def test_long_prompts_are_cut_from_the_left_and_the_answer_is_kept(tiny_base, monkeypatch):
    full, full_begin = logprobs.encode_pair(tiny_base, "word " * 100, "The answer stays whole.")
    monkeypatch.setattr(logprobs, "MAX_SCORED_TOKENS", 16)
    ids, begin = logprobs.encode_pair(tiny_base, "word " * 100, "The answer stays whole.")
    assert len(full) > 100 and len(ids) == 16
    assert ids == full[-16:] and len(ids) - begin == len(full) - full_begin


def test_probe_scores_every_set_in_one_pass_and_the_reference_once(tiny_chat, pairs, monkeypatch):
    logprobs.REFERENCE_SCORES.clear()  # earlier tests may have scored these pairs with this reference
    calls = []
    real = logprobs.sequence_logps
    monkeypatch.setattr(logprobs, "sequence_logps", lambda *a, **k: calls.append(len(a[2])) or real(*a, **k))
    capability = [PreferencePair("What is 2 plus 2?", "2 plus 2 is 4.", "2 plus 2 is 5.")]
    probe = PreferenceProbe(tiny_chat, 0.1, pairs[:2], pairs[2:], capability)
    assert calls == [2 * (2 + 2 + 1)]  # the reference: every chosen and rejected answer, once
    policy = _perturbed(tiny_chat.model, scale=0.02)
    scores = probe.score(policy)
    assert calls == [10, 10]  # the policy: one more pass, whatever the number of sets
    # capability "before" is the reference's own preference, "after" the policy's
    ref = real(tiny_chat.model, tiny_chat, ["What is 2 plus 2?"] * 2, ["2 plus 2 is 4.", "2 plus 2 is 5."])
    assert scores["capability_before"].mean_margin == pytest.approx(float(ref[0] - ref[1]), abs=1e-4)
    assert scores["capability_after"].mean_margin != pytest.approx(scores["capability_before"].mean_margin, abs=1e-4)
    held = real(policy, tiny_chat, [p.prompt for p in pairs[:2]], [p.chosen for p in pairs[:2]])
    ref_held = real(tiny_chat.model, tiny_chat, [p.prompt for p in pairs[:2]], [p.chosen for p in pairs[:2]])
    assert scores["heldout"].chosen == pytest.approx((0.1 * (held - ref_held)).tolist(), abs=1e-4)


def test_the_reference_scores_each_answer_once_per_process(tiny_chat, pairs, monkeypatch):
    logprobs.REFERENCE_SCORES.clear()
    calls = []
    real = logprobs.sequence_logps
    monkeypatch.setattr(logprobs, "sequence_logps", lambda *a, **k: calls.append(len(a[2])) or real(*a, **k))
    first = PreferenceProbe(tiny_chat, 0.1, pairs[:2], pairs[2:])
    assert calls == [8]
    new = PreferencePair("Name a primary colour.", "Blue is a primary colour.", "Green is a primary colour.")
    again = PreferenceProbe(tiny_chat, 0.3, [*pairs[:2], new])  # another run on the same data, one pair more
    assert calls == [8, 2]  # only the new pair's two answers
    assert again.reference["heldout"][0][:2].tolist() == pytest.approx(first.reference["heldout"][0].tolist(), abs=1e-6)
    held = [*pairs[:2], new]
    fresh = real(tiny_chat.model, tiny_chat, [p.prompt for p in held], [p.rejected for p in held])
    assert again.reference["heldout"][1].tolist() == pytest.approx(fresh.tolist(), abs=1e-4)


def test_a_reference_changed_in_place_is_scored_afresh(tiny_chat, pairs):
    loaded = dataclasses.replace(tiny_chat, model=copy.deepcopy(tiny_chat.model))
    before = PreferenceProbe(loaded, 0.1, pairs[:2]).reference_logps
    with torch.no_grad():
        for param in loaded.model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    after = PreferenceProbe(loaded, 0.1, pairs[:2]).reference_logps
    fresh = sequence_logps(
        loaded.model,
        loaded,
        [p.prompt for p in pairs[:2]] * 2,
        [p.chosen for p in pairs[:2]] + [p.rejected for p in pairs[:2]],
    )
    assert after.tolist() == pytest.approx(fresh.tolist(), abs=1e-4)
    assert after.tolist() != pytest.approx(before.tolist(), abs=1e-2)


def test_reference_scores_stay_within_their_bound(tiny_chat, pairs):
    scores = logprobs.ReferenceScores(max_rows=3)
    got = scores.logps(tiny_chat.model, tiny_chat, [p.prompt for p in pairs], [p.chosen for p in pairs])
    assert len(got) == len(pairs) > 3 and len(scores) == 3
    assert (scores.hits, scores.misses) == (0, len(pairs))
    scores.logps(tiny_chat.model, tiny_chat, [pairs[-1].prompt], [pairs[-1].chosen])  # the newest is kept
    assert (scores.hits, len(scores)) == (1, 3)


def test_live_curve_is_recorded_every_other_step_and_at_the_last(tiny_chat, pairs):
    probe = probes.live_probe(tiny_chat, 0.1, pairs[:2], pairs[2:])
    events = []
    result = train_policy(
        tiny_chat,
        pairs,
        TrainingSettings(steps=4, batch_size=2, learning_rate=1e-3, max_length=64),
        on_event=events.append,
        probe=probe.curve_point,
    )
    assert [p["step"] for p in result.heldout_curve] == [2, 4]
    logs = [e for e in events if e.kind == "log" and "heldout/accuracy" in e.row]
    assert [e.row["heldout/accuracy"] for e in logs] == [p["accuracy"] for p in result.heldout_curve]
    for point in result.heldout_curve:  # each point with its count and intervals
        assert point["count"] == 2 and point["contrast_count"] == len(pairs) - 2
        low, high = point["accuracy_interval"]
        assert low <= point["accuracy"] <= high
        low, high = point["margin_interval"]
        assert low <= point["margin"] <= high
    # the last point is the final policy's own held-out score
    final = probe.score(result.policy)
    assert result.heldout_curve[-1]["margin"] == pytest.approx(final["heldout"].mean_margin, abs=1e-5)
    assert result.heldout_curve[-1]["contrast_accuracy"] == final["contrast"].accuracy
    # and the probe left the policy as it found it: TRL's log history has no probe keys
    assert not any(k.startswith("heldout/") for row in result.log_history for k in row)


def test_evidence_has_every_reported_figure(tiny_chat, pairs):
    result = train_policy(tiny_chat, pairs, TrainingSettings(steps=2, batch_size=2, learning_rate=1e-3, max_length=64))
    capability = [PreferencePair("What is 2 plus 2?", "2 plus 2 is 4.", "2 plus 2 is 5.")] * 2
    evidence = gather_evidence(
        result.policy, tiny_chat, pairs[:2], ["Hi"], ["Hello"], 0.1, pairs[2:], capability, "built-in"
    ).to_dict()
    for key in ("contrast_accuracy", "capability_accuracy_before", "capability_accuracy_after"):
        assert 0.0 <= evidence[key] <= 1.0
    assert evidence["capability_source"] == "built-in" and evidence["capability_pairs"] == 2
    assert len(evidence["heldout_margins"]) == 2 and len(evidence["contrast_margins"]) == 2
    none = gather_evidence(result.policy, tiny_chat, [], ["Hi"], ["Hello"], 0.1).to_dict()
    assert math.isnan(none["heldout_reward_accuracy"]) and math.isnan(none["contrast_accuracy"])
    assert none["capability_source"] == "none"


def test_final_evidence_reuses_the_live_curves_last_scores(tiny_chat, pairs, monkeypatch):
    capability = [PreferencePair("What is 2 plus 2?", "2 plus 2 is 4.", "2 plus 2 is 5.")]
    probe = PreferenceProbe(tiny_chat, 0.1, pairs[:2], pairs[2:], capability)
    result = train_policy(
        tiny_chat,
        pairs,
        TrainingSettings(steps=2, batch_size=2, learning_rate=1e-3, max_length=64),
        probe=probe.curve_point,
    )
    calls = []
    real = logprobs.sequence_logps
    monkeypatch.setattr(logprobs, "sequence_logps", lambda *a, **k: calls.append(len(a[2])) or real(*a, **k))
    args = (result.policy, tiny_chat, pairs[:2], ["Hi"], ["Hello"], 0.1, pairs[2:], capability)
    reused = gather_evidence(*args, probe=probe, reuse_step=result.steps_done).to_dict()
    assert calls == [2]  # only the capability pair's two answers; held-out and contrast came from the curve
    fresh = gather_evidence(*args).to_dict()
    for key, value in fresh.items():
        assert reused[key] == pytest.approx(value, abs=1e-5, nan_ok=True), key
    calls.clear()
    gather_evidence(*args, probe=probe, reuse_step=result.steps_done - 1)  # another step: nothing to reuse
    assert calls == [10]


def test_live_scores_carry_to_a_compare_in_another_call_only_for_the_same_pairs(tiny_chat, pairs, monkeypatch):
    """The app trains and compares in separate calls (the policy goes through disk): the live curve's last scores
    travel as plain data with the run, and a new probe on the same pairs takes them instead of scoring again."""
    import json

    capability = [PreferencePair("What is 2 plus 2?", "2 plus 2 is 4.", "2 plus 2 is 5.")]
    trained_probe = PreferenceProbe(tiny_chat, 0.1, pairs[:2], pairs[2:])
    assert trained_probe.last_scores() is None  # nothing scored yet
    settings = TrainingSettings(steps=2, batch_size=2, learning_rate=1e-3, max_length=64)
    result = train_policy(tiny_chat, pairs, settings, probe=trained_probe.curve_point)
    saved = json.loads(json.dumps(trained_probe.last_scores()))  # as the run's summary carries it
    assert saved["step"] == result.steps_done and set(saved["sets"]) == {"heldout", "contrast"}

    probe = PreferenceProbe(tiny_chat, 0.1, pairs[:2], pairs[2:], capability)
    assert probe.reuse_scores(saved)
    calls = []
    real = logprobs.sequence_logps
    monkeypatch.setattr(logprobs, "sequence_logps", lambda *a, **k: calls.append(len(a[2])) or real(*a, **k))
    args = (result.policy, tiny_chat, pairs[:2], ["Hi"], ["Hello"], 0.1, pairs[2:], capability)
    reused = gather_evidence(*args, probe=probe, reuse_step=result.steps_done).to_dict()
    assert calls == [2]  # the capability pair only
    fresh = gather_evidence(*args).to_dict()
    for key, value in fresh.items():
        assert reused[key] == pytest.approx(value, abs=1e-5, nan_ok=True), key

    other = PreferenceProbe(tiny_chat, 0.1, pairs[1:3], pairs[3:], capability)  # other held-out pairs
    assert other.reuse_scores(saved) is False
    assert not PreferenceProbe(tiny_chat, 0.1, pairs[:2]).reuse_scores(None)


# --------------------------------------------------------------------------- KL from the generation


def _kl_by_full_forward(policy, reference, answers) -> float:
    """The KL per answer token from two plain forwards over each prompt + generated answer, row by row."""
    total, count = 0.0, 0
    with torch.inference_mode():
        for prompt, answer in zip(answers.prompt_ids, answers.answer_ids):
            ids = torch.tensor([prompt + answer])
            where = slice(len(prompt) - 1, len(prompt) + len(answer) - 1)  # the states that predict the answer
            logp_p = F.log_softmax(policy(input_ids=ids).logits[0, where].float(), dim=-1)
            logp_r = F.log_softmax(reference(input_ids=ids).logits[0, where].float(), dim=-1)
            total += float((logp_p.exp() * (logp_p - logp_r)).sum())
            count += len(answer)
    return total / count


def test_kl_from_the_generation_equals_the_kl_of_two_full_forwards(tiny_chat, pairs):
    policy = _perturbed(tiny_chat.model)
    prompts = [p.prompt for p in pairs]
    answers = generate_scored(tiny_chat, prompts, GenerationSettings(max_new_tokens=10), model=policy)
    assert answers.texts == generate(tiny_chat, prompts, GenerationSettings(max_new_tokens=10), model=policy)
    assert [len(lp) for lp in answers.logps] == [len(ids) for ids in answers.answer_ids]
    assert all(1 <= len(ids) <= 10 for ids in answers.answer_ids)
    eos = tiny_chat.tokenizer.eos_token_id
    assert all(eos not in ids[:-1] for ids in answers.answer_ids)  # an answer ends at its first end-of-turn token
    kl = evaluation.generated_token_kl(tiny_chat.model, tiny_chat, answers)
    assert kl > 1e-3
    assert kl == pytest.approx(_kl_by_full_forward(policy, tiny_chat.model, answers), rel=1e-3)
    same = generate_scored(tiny_chat, prompts, GenerationSettings(max_new_tokens=10))  # the reference's own answers
    assert evaluation.generated_token_kl(tiny_chat.model, tiny_chat, same) == pytest.approx(0.0, abs=1e-5)


def test_evidence_takes_the_kl_from_the_generation_and_falls_back_past_the_memory_cap(tiny_chat, pairs, monkeypatch):
    policy = _perturbed(tiny_chat.model)
    prompts = [p.prompt for p in pairs]
    answers = generate_scored(tiny_chat, prompts, GenerationSettings(max_new_tokens=10), model=policy)

    def evidence(scored):
        return gather_evidence(policy, tiny_chat, pairs, prompts, answers.texts, 0.1, scored_answers=scored)

    calls = []
    monkeypatch.setattr(evaluation, "mean_token_kl", lambda *a, **k: calls.append(a) or 0.5)
    expected = _kl_by_full_forward(policy, tiny_chat.model, answers)
    assert evidence(answers).drift.kl == pytest.approx(expected, rel=1e-3)
    assert not calls  # the policy did not run again
    monkeypatch.setattr(generation, "KEPT_LOGPS_BYTES", 1)
    capped = generate_scored(tiny_chat, prompts, GenerationSettings(max_new_tokens=10), model=policy)
    assert capped.logps is None and capped.texts == answers.texts
    assert evidence(capped).drift.kl == 0.5 and len(calls) == 1  # the text path, without kept log-probs


def test_the_original_models_surprise_is_kept_as_it_writes_and_read_from_the_kl_pass(tiny_chat, pairs):
    from alignlab.models.generation import generate_baseline
    from alignlab.models.logprobs import ANSWER_SURPRISE, mean_surprise

    prompts = [p.prompt for p in pairs]
    settings = GenerationSettings(max_new_tokens=10)
    ANSWER_SURPRISE.clear()
    baseline = generate_baseline(tiny_chat, prompts, settings)
    assert baseline == generate(tiny_chat, prompts, settings)
    assert (ANSWER_SURPRISE.hits, ANSWER_SURPRISE.misses, len(ANSWER_SURPRISE)) == (0, 0, len(prompts))
    remembered = evaluation.answer_surprise(tiny_chat.model, tiny_chat, prompts, baseline)
    assert ANSWER_SURPRISE.misses == 0  # read, not scored again
    # the same figure as the reference's pass over the same answers (the policy's KL pass measures the after side)
    same = generate_scored(tiny_chat, prompts, settings)
    kl, surprise = evaluation.reference_pass(tiny_chat.model, tiny_chat, same)
    assert kl == pytest.approx(0.0, abs=1e-5) and surprise == pytest.approx(remembered, abs=1e-3)
    # without a generation to read, a forward over the answer's text as the model writes it (no end-of-turn token
    # added): the mean negative log-likelihood of its tokens, as one plain forward computes it
    from alignlab.models.logprobs import encode_answer

    forward = mean_surprise(tiny_chat.model, tiny_chat, prompts, baseline).tolist()
    for i, scored in enumerate(forward):
        ids, start = encode_answer(tiny_chat, prompts[i], baseline[i])
        with torch.no_grad():
            logits = tiny_chat.model(torch.tensor([ids])).logits[0, start - 1 : -1].float()
        nll = -torch.log_softmax(logits, -1).gather(-1, torch.tensor(ids[start:])[:, None]).mean()
        assert scored == pytest.approx(float(nll), abs=1e-4)
    # an answer the original model would never write surprises it more than its own
    policy = _perturbed(tiny_chat.model)
    drifted = generate_scored(tiny_chat, prompts, settings, model=policy)
    evidence = gather_evidence(
        policy, tiny_chat, pairs, prompts, drifted.texts, 0.1, scored_answers=drifted, baseline_outputs=baseline
    )
    before, after = evidence.answer_surprise
    assert before == remembered and len(after) == len(prompts)
    assert "answer_surprise" not in evidence.to_dict()  # the report carries it in eval.degeneration


def test_a_reports_eval_block_reads_back_key_for_key():
    """:meth:`Evidence.to_dict` writes the report's ``eval`` block; :meth:`Evidence.from_dict` reads it back whole."""
    rows = [{"prompt": f"p{i}", "winner": w, "margin": 0.1, "set": "heldout"} for i, w in enumerate("ppot")]
    evidence = Evidence(
        heldout=Ranking(0.75, 4, 0.2, [0.3, 0.2, -0.1, 0.4], [0.5, 0.4, 0.1, 0.6], [0.2, 0.2, 0.2, 0.2]),
        heldout_before=Ranking(0.5, 4, margins=[0.1, 0.0, 0.0, 0.1]),
        gain=Gain.of([0.3, 0.2, -0.1, 0.4], [0.1, 0.0, 0.0, 0.1]),
        contrast=Ranking(1.0, 2, 0.3, [0.2, 0.4]),
        capability=Capability(Ranking(0.5, 2, 0.1), Ranking(1.0, 2, 0.2), "built-in", 2),
        drift=Drift(0.1, 20.0, 21.0),
        scorer="mean_logprob",
        scorer_text="the policy's mean log-probability",
        checked=CheckedQuestions(Proportion(19, 20), Proportion(17, 20), 2, [{"question": "q", "accepted": ["a"]}]),
        win=WinRate("agreement", "agreement", JudgeCheck(12, 14), rows, 30.0, 35.0, 0.2),
        reward_model=JudgeCheck(13, 14, JudgeCheck(5, 8)),
        training=Proportion(11, 12),
        curve=[CurvePoint(2, 0.5, 4, [0.15, 0.85], 0.1, None, float("nan"), 0)],
        degeneration=Degeneration(7, 6, 0.1, 0.2, 30.0, 31.0, ["hope that helps"], answers=7),
        heldout_unavailable=None,
    )
    block = json_ready(evidence.to_dict())
    again = json_ready(Evidence.from_dict(block).to_dict())
    assert again == block and list(again) == list(block)
    assert "usable" not in block["reward_model"] and block["judge"]["usable"] and block["judged"]["win_count"] == 4
    # with nothing judged, the win rate's keys are left out and every other key is there, in the same order
    assert list(json_ready(Evidence().to_dict())) == [
        key for key in block if key not in WinRate.from_dict(block).to_dict()
    ]
