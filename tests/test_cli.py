import json
import subprocess
import sys
from pathlib import Path

import pytest

from alignlab.cli import main

from contract import CURVE_POINT_KEYS, DEGENERATION_KEYS, EVAL_KEYS, HEALTH_KEYS, REPORT_KEYS, WIN_KEYS

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "alignlab", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"},
    )


def test_presets_are_listed():
    out = run_cli("presets")
    assert out.returncode == 0
    assert "seed-lab" in out.stdout and "concise" in out.stdout and "warm-tone" in out.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--preset", "nope"], "Unknown preset 'nope'"),
        (["--preset", "seed-lab", "--steps", "0"], "steps must be a whole number from 1 to 500"),
        (["--preset", "seed-lab", "--beta", "0"], "beta must be between 0.01 and 1.0"),
        (["--preset", "seed-lab", "--beta", "-1"], "beta must be"),
        (["--preset", "seed-lab", "--loss", "magic"], "loss_type must be one of"),
        (
            ["--preset", "seed-lab", "--method", "ppo"],
            "Unknown method 'ppo'. Known methods: dpo, ipo, kto, orpo, simpo, rlhf",
        ),
        (["--preset", "seed-lab", "--method", "kto", "--loss", "hinge"], "loss_type is DPO's"),
        (["--preset", "seed-lab", "--method", "dpo", "--beta", "2"], "beta must be between 0.01 and 1.0"),
        (["--preset", "seed-lab", "--model", "/no/such/model"], "There is no directory"),
        (["--dataset", "/no/such/file.jsonl"], "There is no file"),
        (["--preset", "seed-lab", "--project", "../elsewhere"], "trackio project '../elsewhere': use letters"),
    ],
)
def test_bad_input_ends_with_one_clear_message(capsys, args, message):
    assert main(["lab", *args]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_malformed_dataset_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "q", "chosen": "a", "rejected": "b"}\nnot json\n')
    out = run_cli("lab", "--dataset", str(bad), "--steps", "1")
    assert out.returncode == 2
    assert "bad.jsonl: line 2 is not valid JSON" in out.stderr
    assert "Traceback" not in out.stderr


def test_lab_on_tiny_model_writes_every_report_field(tmp_path, tiny_chat_dir, capsys):
    out = tmp_path / "r.json"
    code = main(
        [
            "lab",
            "--model",
            str(tiny_chat_dir),
            "--preset",
            "seed-lab",
            "--steps",
            "3",
            "--lr",
            "1e-3",
            "--max-new-tokens",
            "8",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "=== Before vs after" in printed and "=== Health:" in printed
    for words in (
        "Held-out pairs: ",
        "Contrast pairs (cue on the wrong side): ",
        "Capability",
        "The live curve, scored after steps 2, 3",
    ):
        assert words in printed, words
    assert "=== The answers themselves" in printed and "distinct answers" in printed
    report = json.loads(out.read_text())
    assert f"Tracked in trackio: project `alignlab`, run `{report['tracking']['run']}`" in printed
    assert set(report) >= REPORT_KEYS
    assert set(report["eval"]) >= EVAL_KEYS | WIN_KEYS
    assert report["eval"]["win_count"] == report["settings"]["heldout_pairs"]  # every held-out prompt judged
    assert report["eval"]["judge"]["source"] == "agreement"
    assert set(report["eval"]["degeneration"]) >= DEGENERATION_KEYS
    assert [p["step"] for p in report["eval"]["heldout_curve"]] == [2, 3]  # every other step, and the last
    assert all(set(point) >= CURVE_POINT_KEYS for point in report["eval"]["heldout_curve"])
    # every accuracy with its count and its 95% interval, the interval containing it
    ev = report["eval"]
    for accuracy, count, interval in (
        ("heldout_reward_accuracy", "heldout_count", "heldout_accuracy_interval"),
        ("contrast_accuracy", "contrast_count", "contrast_accuracy_interval"),
        ("capability_accuracy_before", "capability_count", "capability_accuracy_interval_before"),
        ("capability_accuracy_after", "capability_count", "capability_accuracy_interval_after"),
    ):
        low, high = ev[interval]
        assert ev[count] >= 8 and 0 <= low <= ev[accuracy] <= high <= 1, accuracy
        k = round(ev[accuracy] * ev[count])
        assert f"{k}/{ev[count]} (" in printed, accuracy
    assert set(report["health"]) >= HEALTH_KEYS
    assert len(report["health"]["codes"]) >= 1 and all(f"[{c}]" in printed for c in report["health"]["codes"])
    assert "NaN" not in out.read_text() and "Infinity" not in out.read_text()
    assert report["health"]["verdict"] in {"healthy", "warning", "failed"}
    assert len(report["baseline_outputs"]) == len(report["aligned_outputs"]) == 7
    assert [r["prompt"] for r in report["baseline_outputs"]] == [r["prompt"] for r in report["aligned_outputs"]]
    assert report["changed"] == sum(
        b["text"] != a["text"] for b, a in zip(report["baseline_outputs"], report["aligned_outputs"])
    )
    assert len([r for r in report["log_history"] if "loss" in r]) == 3
    assert set(report["timings"]) >= {"load_model", "baseline", "train", "evaluate", "total"}


def test_lab_method_is_in_the_report_with_its_own_defaults(tmp_path, tiny_chat_dir, capsys):
    from alignlab.registry.methods import METHODS

    out = tmp_path / "r.json"
    args = ["lab", "--model", str(tiny_chat_dir), "--preset", "seed-lab", "--method", "simpo", "--steps", "2"]
    assert main([*args, "--max-new-tokens", "4", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "method SimPO" in printed and "Scored by beta * the policy's mean log-probability" in printed
    report = json.loads(out.read_text())
    training = report["settings"]["training"]
    assert training["method"] == "simpo" and training["beta"] == METHODS["simpo"].defaults["beta"]
    assert report["settings"]["method_info"]["reference"] == "none"
    assert report["eval"]["heldout_scorer"] == "mean_logprob" and report["eval"]["heldout_scorer_text"]
    assert "heldout_scorer" in report["health"]["codes"]


def test_lab_runs_rlhf_and_reports_both_stages(tmp_path, tiny_chat_dir, capsys):
    out = tmp_path / "r.json"
    args = ["lab", "--model", str(tiny_chat_dir), "--preset", "seed-lab", "--method", "rlhf", "--steps", "2"]
    assert main([*args, "--lr", "1e-3", "--max-new-tokens", "4", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "method RLHF" in printed and "Reward " in printed  # the verdict reads the RL stage's reward
    report = json.loads(out.read_text())
    assert report["settings"]["training"]["method"] == "rlhf" and report["settings"]["steps_done"] == 4
    info = report["settings"]["method_info"]
    assert info["stages"] == 2 and [s["trains"] for s in info["stage_details"]] == ["reward_model", "policy"]
    assert (info["trainer"], info["script"]) == ("trl.RLOOTrainer", "trl.scripts.rloo")
    steps = [(r["step"], r["stage"]) for r in report["log_history"] if "loss" in r]
    assert steps == [(1, "reward_model"), (2, "reward_model"), (3, "policy"), (4, "policy")]
    assert report["eval"]["heldout_scorer"] == "implicit_reward" and report["eval"]["kl_to_reference"] is not None
    assert {"reward_rising", "reward_flat"} & set(report["health"]["codes"])


def test_lab_on_a_list_of_pairs_holds_out_a_quarter(tmp_path, tiny_base_dir, pairs):
    from alignlab.data.importers import export_jsonl

    many = pairs + [type(pairs[0])(f"Extra question {i}?", "Sure! Here is a full answer.", "No.") for i in range(4)]
    data = export_jsonl(many, tmp_path / "mine.jsonl")
    out = tmp_path / "r.json"
    assert (
        main(
            [
                "lab",
                "--model",
                str(tiny_base_dir),
                "--dataset",
                str(data),
                "--steps",
                "2",
                "--max-new-tokens",
                "4",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    report = json.loads(out.read_text())
    assert report["settings"]["heldout_pairs"] == 2 and report["settings"]["train_pairs"] == 6
    # imported pairs: no contrast pairs (null, and the verdict says so), the built-in capability set
    assert report["eval"]["contrast_accuracy"] is None and "no_contrast" in report["health"]["codes"]
    assert report["eval"]["capability_source"] == "built-in" and report["eval"]["capability_accuracy_after"] is not None
