"""The reward-model judges on the tiny model: the lab's own, trained once per data and kept, a reward model named by
its local folder, and the checks that answer a bad judge before any work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alignlab.cli import main
from alignlab.data.presets import load_preset
from alignlab.evidence.judges import AGREEMENT, LAB_REWARD_MODEL, win_rate
from alignlab.evidence.reward_judges import lab_reward_model, load_named_judge, pick_judge
from alignlab.models.loading import ModelLoadError, cache_root, copy_for_training
from alignlab.pipeline.steps import check_judge_spec
from alignlab.serving.model_checks import check_judge

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def seed_lab():
    return load_preset("seed-lab")


@pytest.fixture(scope="module")
def saved_judge(tiny_chat, seed_lab) -> Path:  # noqa: ANN001
    """The lab's reward model for the tiny model on seed-lab's pairs, as the lab keeps it on disk."""
    lab_reward_model(tiny_chat, list(seed_lab.pairs), seed=42)
    folders = [f for f in (cache_root() / "judges").iterdir() if (f / "config.json").is_file()]
    return max(folders, key=lambda f: f.stat().st_mtime)


def test_the_lab_reward_model_is_trained_once_per_data_and_reused(tiny_chat, seed_lab, saved_judge):  # noqa: ANN001
    stamp = (saved_judge / "config.json").stat().st_mtime_ns
    model = lab_reward_model(tiny_chat, list(seed_lab.pairs), seed=42)
    assert (saved_judge / "config.json").stat().st_mtime_ns == stamp  # loaded, not trained again
    assert model.config.num_labels == 1 and type(model).__name__.endswith("ForSequenceClassification")
    judge, note = pick_judge(
        tiny_chat, "lab_reward_model", seed_lab.heldout_pairs, seed_lab.contrast_pairs, seed_lab.pairs, 42, False
    )
    check = judge.self_check()
    assert note == "" and check.n == 14 and check.contrast is not None and check.contrast.n == 14
    assert set(check.to_dict()) >= {"heldout_accuracy", "contrast_accuracy", "contrast_interval", "usable"}


def test_a_reward_model_never_judges_the_run_that_trained_one(tiny_chat, seed_lab):  # noqa: ANN001
    judge, note = pick_judge(
        tiny_chat, "lab_reward_model", seed_lab.heldout_pairs, seed_lab.contrast_pairs, seed_lab.pairs, 42, True
    )
    assert judge.source == AGREEMENT and "never judges its own run" in note


def test_a_reward_model_saved_by_the_lab_judges_as_a_named_judge(tiny_chat, seed_lab, saved_judge):  # noqa: ANN001
    assert check_judge(str(saved_judge)) > 0
    assert check_judge_spec(f"  {saved_judge} ") == str(saved_judge)
    model, tokenizer, chat = load_named_judge(str(saved_judge), tiny_chat.device)
    assert chat and tokenizer.pad_token is not None
    judge, _ = pick_judge(tiny_chat, str(saved_judge), seed_lab.heldout_pairs, [], seed_lab.pairs, 42, False)
    assert judge.source == str(saved_judge) and "quality as the reward model" in judge.measures
    policy = copy_for_training(tiny_chat).eval()
    prompts = list(seed_lab.eval_prompts)
    original = ["A short answer."] * len(prompts)
    written = ["Sure! A short answer. Hope that helps!"] * len(prompts)
    training = {p.prompt for p in seed_lab.pairs}
    rate = win_rate(tiny_chat, policy, seed_lab.heldout_pairs, 6, judge, (prompts, original, written), training)
    data = rate.to_dict()
    # a reward model judges the eval prompts too, those not among the training pairs' prompts
    kept = [p for p in prompts if p not in training and p not in {q.prompt for q in seed_lab.heldout_pairs}]
    assert data["win_eval_count"] == len(kept) > 0 and data["win_count"] == 14 + len(kept)
    assert data["judge"]["source"] == str(saved_judge) and "contrast_accuracy" not in data["judge"]
    assert {r["set"] for r in data["win_per_prompt"]} == {"heldout", "eval"}


def test_a_bad_judge_is_answered_before_any_work(tiny_chat_dir, tmp_path, monkeypatch):
    with pytest.raises(ModelLoadError, match="is not a reward model: its config names LlamaForCausalLM"):
        check_judge(str(tiny_chat_dir))
    with pytest.raises(ModelLoadError, match="Could not fetch 'nobody/no-such-judge'"):
        check_judge("nobody/no-such-judge")
    with pytest.raises(ModelLoadError, match="There is no directory"):
        check_judge(str(tmp_path / "missing"))
    monkeypatch.setenv("ALIGNLAB_PUBLIC", "1")  # a folder outside the server's allowed roots
    with pytest.raises(ModelLoadError, match="a local path as the judge is refused"):
        check_judge(str(tmp_path))


def test_the_cli_names_a_bad_judge_in_one_message_and_runs_with_the_labs_reward_model(tiny_chat_dir, tmp_path, capsys):
    assert main(["lab", "--model", str(tiny_chat_dir), "--preset", "seed-lab", "--judge", str(tiny_chat_dir)]) == 2
    err = capsys.readouterr().err
    assert "is not a reward model" in err and "Traceback" not in err
    out = tmp_path / "r.json"
    args = ["lab", "--model", str(tiny_chat_dir), "--preset", "seed-lab", "--steps", "2", "--max-new-tokens", "4"]
    assert main([*args, "--judge", "lab_reward_model", "--no-track", "--out", str(out)]) == 0
    judge = json.loads(out.read_text())["eval"]["judge"]
    assert judge["source"] == LAB_REWARD_MODEL and judge["contrast_count"] == 14
    assert "judge: lab_reward_model" in capsys.readouterr().out
