"""ZeroGPU glue: a no-op decorator off ZeroGPU, durations that follow the request, and a picklable boundary.

On ZeroGPU every argument, return value and yielded value of a heavy function is pickled into and
out of a forked worker; local runs never cross that boundary, so these tests pickle everything that
would, after running the real jobs on the tiny model.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from alignlab.data.pairs import pairs_to_dicts
from alignlab.data.presets import load_preset
from alignlab.serving import gpu


def test_decorator_is_a_no_op_off_zerogpu() -> None:
    def work(x: int) -> int:
        return x + 1

    assert not gpu.on_zero_gpu()
    assert gpu.gpu(duration=gpu.baseline_duration)(work) is work


def test_durations_grow_with_steps_and_model_size_and_stay_bounded(tiny_chat_dir: Path) -> None:
    pairs = [{"prompt": "p", "chosen": "c", "rejected": "r"}] * 8
    small = gpu.train_duration("smollm2-135m-instruct", pairs, {"steps": 10, "batch_size": 4})
    more_steps = gpu.train_duration("smollm2-135m-instruct", pairs, {"steps": 200, "batch_size": 4})
    bigger = gpu.train_duration("qwen2.5-0.5b-instruct", pairs, {"steps": 200, "batch_size": 4})
    assert gpu.MIN_DURATION <= small < more_steps < bigger <= gpu.MAX_DURATION
    assert gpu.train_duration("gpt2", pairs, {"steps": 500, "batch_size": 64}) == gpu.MAX_DURATION
    by_epochs = gpu.train_duration("gpt2", pairs, {"steps": None, "epochs": 3, "batch_size": 4})
    assert by_epochs == gpu.train_duration("gpt2", pairs, {"steps": 6, "batch_size": 4})
    assert gpu.baseline_duration("gpt2", ["q"] * 40, {"max_new_tokens": 256}) > gpu.baseline_duration(
        "gpt2", ["q"], {"max_new_tokens": 16}
    )
    assert gpu.compare_duration("gpt2", "dir", {"eval_prompts": ["q"], "heldout_pairs": []}, ["a"], {}) >= 20


def test_parameter_estimates_count_the_models_shape(tiny_chat_dir: Path, tiny_chat) -> None:
    """Known models and local folders are counted from their shape, as the loaded model counts itself; an unknown
    Hub id by the size in its name, else as a large model (a GPU lease too short kills the run)."""
    from alignlab.registry.model_shapes import KNOWN_SHAPES

    assert gpu.estimate_parameters("gpt2") == KNOWN_SHAPES["gpt2"].parameters()
    assert gpu.estimate_parameters("openai-community/gpt2") == KNOWN_SHAPES["gpt2"].parameters()
    assert gpu.estimate_parameters(str(tiny_chat_dir)) == tiny_chat.num_parameters
    assert gpu.estimate_parameters("HuggingFaceTB/SmolLM2-1.7B-Instruct") == 1_700_000_000
    assert gpu.estimate_parameters("someone/mystery") == gpu.UNKNOWN_PARAMETERS


def test_every_value_crossing_the_gpu_boundary_pickles(tiny_chat_dir: Path, tmp_path: Path) -> None:
    from alignlab.registry.settings import TrainingSettings
    from alignlab.ui import jobs
    from alignlab.ui.state import TrainingHandle

    spec = str(tiny_chat_dir)
    preset = load_preset("seed-lab")
    prompts = preset.eval_prompts[:2]
    generation = {"max_new_tokens": 8, "do_sample": False, "seed": 0, "temperature": 0.7}
    pickle.dumps((spec, prompts, generation))
    baseline = jobs.baseline_job(spec, prompts, generation)
    pickle.dumps(baseline)

    run = TrainingHandle()
    args = (spec, pairs_to_dicts(preset.pairs), TrainingSettings(steps=2).to_dict(), str(tmp_path / "p"), run.id)
    pickle.dumps(args)
    events = list(jobs.train_job(*args))
    run.finish()
    for event in events:
        pickle.dumps(event)
    end = events[-1]
    assert end["kind"] == "end" and Path(end["policy_dir"], "config.json").is_file()

    training = {k: end[k] for k in ("log_history", "steps_done", "stopped_early", "seconds")}
    training.update(total_steps=end["total_steps"], settings=TrainingSettings(steps=2).to_dict())
    preset_dict = {
        "id": preset.id,
        "eval_prompts": prompts,
        "pairs": pairs_to_dicts(preset.pairs),
        "heldout_pairs": pairs_to_dicts(preset.heldout_pairs),
    }
    compare_args = (spec, end["policy_dir"], preset_dict, baseline["outputs"], generation, training, {"train": 1.0})
    pickle.dumps(compare_args)
    report = jobs.compare_job(*compare_args)
    pickle.dumps(report)
    assert report["changed"] in range(len(prompts) + 1)


def test_expected_failures_reach_the_user_as_gradio_errors() -> None:
    import gradio as gr

    from alignlab.ui import jobs

    with pytest.raises(gr.Error, match="no directory"):
        jobs.baseline_job("/no/such/dir", ["q"], {"max_new_tokens": 4})


def test_the_compare_job_reuses_the_runs_last_live_scores(tiny_chat_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """Train and compare are separate calls (on ZeroGPU, separate processes): the end event carries the live
    curve's last scores, and the compare job scores only what the curve did not (the capability pairs)."""
    from alignlab.models import logprobs
    from alignlab.registry.settings import TrainingSettings
    from alignlab.ui import jobs
    from alignlab.ui.state import TrainingHandle

    spec = str(tiny_chat_dir)
    preset = load_preset("seed-lab")
    settings = TrainingSettings(steps=2).to_dict()
    heldout = pairs_to_dicts(preset.heldout_pairs)
    run = TrainingHandle()
    args = (spec, pairs_to_dicts(preset.pairs), settings, str(tmp_path / "p"), run.id, heldout)
    end = list(jobs.train_job(*args))[-1]
    run.finish()
    assert end["live_scores"]["step"] == end["steps_done"]
    assert len(end["live_scores"]["sets"]["heldout"]["chosen"]) == len(heldout)
    pickle.dumps(end)

    training = {k: end[k] for k in ("log_history", "steps_done", "stopped_early", "seconds", "total_steps")}
    training["settings"] = settings
    preset_dict = {"id": preset.id, "eval_prompts": preset.eval_prompts[:1], "pairs": [], "heldout_pairs": heldout}
    generation = {"max_new_tokens": 4}
    rows: list[int] = []
    real = logprobs.sequence_logps
    monkeypatch.setattr(logprobs, "sequence_logps", lambda *a, **k: rows.append(len(a[2])) or real(*a, **k))

    def compare(live_scores) -> dict:  # noqa: ANN001
        rows.clear()
        logprobs.REFERENCE_SCORES.clear()  # both compares score the reference's rows alike
        given = {**training, "live_scores": live_scores}
        return jobs.compare_job(spec, end["policy_dir"], preset_dict, [""], generation, given, {})

    fresh = compare(None)
    fresh_rows = sum(rows)
    reused = compare(end["live_scores"])
    assert sum(rows) == fresh_rows - 2 * len(heldout)  # the held-out pairs' answers were not scored again
    assert reused["eval"]["heldout_reward_accuracy"] == fresh["eval"]["heldout_reward_accuracy"]
    assert reused["eval"]["heldout_mean_margin"] == pytest.approx(fresh["eval"]["heldout_mean_margin"], abs=1e-5)
