"""Several methods side by side: the method list, the runner, the run records, the CLI and the API.

Everything trains for real (TRL on the tiny model); the API tests run the real app on a real Gradio
server through gradio_client.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from alignlab.cli import main
from alignlab.pipeline.comparison import (
    MAX_METHODS,
    comparison_settings,
    parse_methods,
    settings_for,
)
from alignlab.pipeline.plots import overlay_frame
from alignlab.registry.methods import METHODS
from alignlab.registry.settings import GenerationSettings, SettingsError, TrainingSettings
from alignlab.training.run import TrainingResult, train_policy
from alignlab.ui.state import Session
from alignlab.verdict.runs_table import EVIDENCE_COLUMNS, MAX_RUNS, RunRecord, display_row, evidence_row, run_label

GENERATION = GenerationSettings(max_new_tokens=6)


# --------------------------------------------------------------------------- the method list


def test_method_names_are_checked_before_any_work() -> None:
    assert parse_methods("dpo, ipo kto,orpo") == ["dpo", "ipo", "kto", "orpo"]
    assert parse_methods(["DPO", "hinge"]) == ["dpo", "hinge"]
    assert parse_methods("sigmoid") == ["dpo"]  # DPO's own loss named as a variant is DPO
    for bad, words in (
        ("", "at least one method"),
        ("dpo,ppo", "Unknown method(s): ppo"),
        ("dpo,dpo", "more than once"),
        (",".join(["dpo", "ipo", "kto", "orpo", "simpo", "hinge", "robust"]), f"At most {MAX_METHODS}"),
    ):
        with pytest.raises(SettingsError, match=None) as caught:
            parse_methods(bad)
        assert words in str(caught.value)


def test_a_loss_variant_is_dpo_with_that_loss_and_each_method_keeps_its_defaults() -> None:
    hinge = settings_for("hinge")
    assert (hinge.method, hinge.loss_type, hinge.method_label) == ("dpo", "hinge", "DPO (hinge loss)")
    ipo = settings_for("ipo")
    assert (ipo.method, ipo.loss_type, ipo.method_label) == ("dpo", "ipo", "IPO + SFT×2")
    simpo = settings_for("simpo", steps=3)
    assert (simpo.beta, simpo.steps) == (2.0, 3)  # SimPO's own beta, the shared step count
    with pytest.raises(SettingsError, match="dpo: steps must be"):
        comparison_settings(["dpo", "orpo"], steps=0)


# --------------------------------------------------------------------------- records and the table


def test_training_summary_round_trips_without_the_policy(tiny_chat, pairs) -> None:
    settings = TrainingSettings(steps=2, batch_size=2)
    result = train_policy(tiny_chat, pairs, settings)
    summary = result.summary()
    json.dumps(summary)  # plain data: crosses a process, a session or a file
    again = TrainingResult.from_summary(summary, result.policy)
    assert again.summary() == summary
    assert summary["peak_memory_kind"] == "process_rss" and summary["peak_memory_bytes"] > 10 * 2**20
    assert summary["steps_done"] == 2 and again.seconds_per_step == pytest.approx(result.seconds / 2)


def test_a_session_keeps_its_latest_runs_labelled_in_order(tmp_path: Path) -> None:
    session = Session(key="k", directory=tmp_path)
    training = {"settings": TrainingSettings().to_dict(), "log_history": [], "steps_done": 2, "seconds": 4.0}
    for _ in range(MAX_RUNS + 2):
        session.add_run(dict(training))
    assert [r.label for r in session.runs] == [run_label(n) for n in range(3, MAX_RUNS + 3)]
    assert session.latest_run.label == "H" and run_label(27) == "A2"
    row = session.latest_run.evidence_row()
    assert row["verdict"] == "not compared yet" and row["seconds_per_step"] == 2.0
    assert RunRecord.from_dict(json.loads(json.dumps(session.latest_run.to_dict()))) == session.latest_run
    session.forget_runs()
    assert session.runs == [] and session.add_run(dict(training)).label == run_label(MAX_RUNS + 3)


# --------------------------------------------------------------------------- the runner


@pytest.fixture(scope="module")
def comparison(tiny_comparison: dict) -> dict:
    return tiny_comparison


def test_every_method_runs_on_the_same_baseline_and_gets_its_own_report(comparison: dict) -> None:
    runs = comparison["runs"]
    names = list(METHODS)
    assert [r["settings"]["training"]["method"] for r in runs] == [METHODS[n].runs_as for n in names]
    assert [r["run"] for r in runs] == [{"label": run_label(i), "index": i, "of": len(names)} for i in range(1, 7)]
    assert all(r["baseline_outputs"] == runs[0]["baseline_outputs"] for r in runs)  # recorded once, shared
    assert [r["settings"]["method_info"]["reference"] for r in runs] == [METHODS[n].stage.reference for n in names]
    # Each run starts from the original weights: their step-1 losses are each method's own first loss,
    # so DPO's is ln 2 whatever ran before it.
    assert runs[0]["log_history"][0]["loss"] == pytest.approx(0.6931, abs=1e-3)
    for name, report in zip(names, runs):
        stages = len(METHODS[name].stages)
        assert report["settings"]["steps_done"] == 2 * stages
        cost = report["cost"]
        assert cost["steps"] == 2 * stages and cost["seconds_per_step"] > 0
        assert cost["peak_memory_kind"] == "process_rss" and cost["peak_memory_bytes"] > 0
        assert cost["trainable_parameters"] > 0


def test_the_table_is_each_report_as_a_row(comparison: dict) -> None:
    table = comparison["table"]
    assert [row["run"] for row in table] == [run_label(i) for i in range(1, 7)]
    assert [row["method"] for row in table] == ["DPO", "IPO + SFT×2", "KTO", "ORPO", "SimPO", "RLHF"]
    for row, report in zip(table, comparison["runs"]):
        assert row == evidence_row(report)
        assert set(row) == set(EVIDENCE_COLUMNS) | {"counts"}
        assert row["heldout_accuracy"] == report["eval"]["heldout_reward_accuracy"]
        assert row["counts"]["heldout"] == report["eval"]["heldout_count"] > 0
        assert row["verdict"] == report["health"]["verdict"]
        cells = dict(zip(EVIDENCE_COLUMNS, display_row(row)))
        assert len(cells) == len(EVIDENCE_COLUMNS)
        held = round(row["heldout_accuracy"] * row["counts"]["heldout"])
        assert cells["heldout_accuracy"].startswith(f"{held}/{row['counts']['heldout']} (")  # '5/6 (44–97%)'
        assert cells["capability"].count("/") == 2 and " → " in cells["capability"]
        usable = report["eval"]["judge"]["usable"]  # the tiny model's judge: read only when it tells pairs apart
        assert row["counts"]["win"] == report["eval"]["win_count"] == len(report["eval"]["win_per_prompt"])
        assert cells["win_rate"] == (f"{row['win_rate']:.0%} of {row['counts']['win']}" if usable else "—")


def test_overlaid_curves_have_one_series_per_run(comparison: dict) -> None:
    series = [
        (r["run"]["label"], [row for row in r["log_history"] if "loss" in row], r["settings"]["training"]["method"])
        for r in comparison["runs"]
    ]
    frame = overlay_frame(series, "loss")
    assert sorted(frame["run"].unique()) == [run_label(i) for i in range(1, 7)]
    assert len(frame) == 2 * 5 + 4  # two steps each, RLHF two in each of its stages
    margin = overlay_frame(series, "reward margin")
    assert sorted(margin["run"].unique()) == [run_label(i) for i in range(1, 7)]  # RLHF's: its reward model's


def test_cli_compare_writes_every_run_and_refuses_a_bad_list(tiny_chat_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "runs.json"
    code = main(
        [
            "compare",
            "--methods",
            "dpo,hinge",
            "--model",
            str(tiny_chat_dir),
            "--preset",
            "seed-lab",
            "--steps",
            "1",
            "--max-new-tokens",
            "4",
            "--out",
            str(out),
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0
    assert "Runs side by side" in printed and "DPO (hinge loss)" in printed and "[run 2/2]" in printed
    written = json.loads(out.read_text())
    assert [r["settings"]["training"]["loss_type"] for r in written["runs"]] == ["sigmoid", "hinge"]
    assert len(written["table"]) == 2

    assert main(["compare", "--methods", "dpo,ppo", "--preset", "seed-lab"]) == 2
    assert "Unknown method(s): ppo" in capsys.readouterr().err
    assert main(["compare", "--preset", "seed-lab", "--steps", "0", "--methods", "dpo"]) == 2
    assert "steps must be" in capsys.readouterr().err


# --------------------------------------------------------------------------- the API


@pytest.fixture(scope="module")
def app(tiny_chat_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    os.environ["ALIGNLAB_DEFAULT_MODEL"] = str(tiny_chat_dir)
    from alignlab.ui import build_app, launch_options

    demo = build_app()
    demo.session_store.root = tmp_path_factory.mktemp("comparison-sessions")
    demo.shared.clear()
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **launch_options())
    yield demo, url
    demo.close()


def _error(call) -> str:
    started = time.monotonic()
    with pytest.raises(AppError) as caught:
        call()
    assert time.monotonic() - started < 5, "a bad input waited for model work"
    return str(caught.value)


@pytest.mark.e2e
def test_run_comparison_endpoint(app) -> None:
    demo, url = app
    client = Client(url, verbose=False)
    assert "Unknown method(s): ppo" in _error(lambda: client.predict(methods="dpo,ppo", api_name="/run_comparison"))
    assert "Unknown preset" in _error(lambda: client.predict(preset="nope", api_name="/run_comparison"))
    result = client.predict(methods="dpo,kto", steps=2, max_new_tokens=6, api_name="/run_comparison")
    runs = result["runs"]
    assert [r["settings"]["training"]["method"] for r in runs] == ["dpo", "kto"]
    assert [r["run"]["index"] for r in runs] == [1, 2] and all(r["run"]["of"] == 2 for r in runs)
    assert [r["settings"]["preset"] for r in runs] == ["seed-lab", "seed-lab"]
    assert [row["method"] for row in result["table"]] == ["DPO", "KTO"]
    assert runs[0]["baseline_outputs"] == runs[1]["baseline_outputs"]
    # The session keeps both runs, each with its report, for the Compare tab's side-by-side view.
    sessions = [s for s in demo.session_store.sessions().values() if len(s.runs) == 2]
    assert len(sessions) == 1
    kept = sessions[0].runs
    assert [r.report["settings"]["training"]["method"] for r in kept] == ["dpo", "kto"]
    assert [r.label for r in kept] == [r["run"]["label"] for r in runs]


@pytest.mark.e2e
def test_each_start_adds_a_run_and_compare_fills_it_in(app) -> None:
    demo, url = app
    client = Client(url, verbose=False)
    client.predict(api_name="/baseline")
    for method, beta, lr in (("dpo", 0.1, 2e-5), ("simpo", 2.0, 2e-5), ("dpo", 0.1, 1e-4)):
        client.submit(beta=beta, learning_rate=lr, steps=2, method=method, api_name="/train").result()
        client.predict(api_name="/compare")
    session = next(s for s in demo.session_store.sessions().values() if len(s.runs) == 3)
    assert [r.method for r in session.runs] == ["dpo", "simpo", "dpo"]
    assert all(r.report is not None for r in session.runs)
    assert session.runs[2].report["run"]["label"] == session.runs[2].label == "C"
    assert session.report == session.runs[2].report  # the Compare tab's current report is the latest run's
    # Another baseline (other prompts) makes earlier runs no longer comparable: they go.
    client.predict(eval_prompts="What is 2+2?", api_name="/baseline")
    assert session.runs == []


@pytest.mark.e2e
def test_rlhf_through_the_api_streams_both_stages_and_compares(app) -> None:
    """The two-stage method through /train and /compare like any other: both stages stream, the report says rlhf."""
    _, url = app
    client = Client(url, verbose=False)
    client.predict(max_new_tokens=6, api_name="/baseline")
    updates = list(client.submit(beta=0.05, learning_rate=5e-5, steps=1, method="rlhf", api_name="/train"))
    assert "Finished 2 of 2 steps" in updates[-1][0]  # one reward-model step, then one RL step
    report = client.predict(api_name="/compare")[-1]
    assert report["settings"]["training"]["method"] == "rlhf" and report["settings"]["method_info"]["stages"] == 2
    assert [row.get("stage") for row in report["log_history"] if "loss" in row] == ["reward_model", "policy"]
