"""Runs in trackio, read back from trackio's own store (SQLite under the tests' TRACKIO_DIR), not mocked."""

from __future__ import annotations

import os

import pytest
from conftest import EMBEDDED_PROJECT, TINY_PROJECT
from trackio.sqlite_storage import SQLiteStorage

from alignlab.registry.methods import METHODS
from alignlab.takehome import tracking


def _logs(project: str, run: str) -> list[dict]:
    return SQLiteStorage.get_logs(project, run)


def test_every_run_of_a_comparison_is_a_trackio_run_with_its_steps_evidence_and_verdict(tiny_comparison) -> None:
    runs = SQLiteStorage.get_runs(TINY_PROJECT)
    for report in tiny_comparison["runs"]:
        tracked = report["tracking"]
        assert tracked["project"] == TINY_PROJECT and tracked["run"] in runs and tracked["failed"] is None
        method = report["settings"]["training"]["method"]
        config = SQLiteStorage.get_run_config(TINY_PROJECT, tracked["run"])
        assert config["method"] == method and config["settings/steps"] == report["settings"]["training"]["steps"]
        assert config["label"].startswith(report["run"]["label"])
        logs = _logs(TINY_PROJECT, tracked["run"])
        steps = [row for row in logs if "loss" in row]
        # every logged step, RLHF's two stages in one run, each row tagged with its stage
        assert [row["step"] for row in steps] == [row["step"] for row in report["log_history"] if "loss" in row]
        if len(METHODS[method].stages) > 1:
            assert {row["stage"] for row in steps} == {stage.trains for stage in METHODS[method].stages}
        assert all("axes/loss" in row for row in steps)
        curve = [row for row in steps if "heldout/accuracy" in row]
        assert [row["step"] for row in curve] == [p["step"] for p in report["eval"]["heldout_curve"]]
        final = [row for row in logs if "verdict" in row]
        assert len(final) == 1 and final[0]["verdict"] == report["health"]["verdict"]
        assert final[0]["eval/heldout_count"] == report["eval"]["heldout_count"]
        low, high = report["eval"]["heldout_accuracy_interval"]
        assert final[0]["eval/heldout_accuracy_interval_low"] == pytest.approx(low)
        assert final[0]["eval/heldout_accuracy_interval_high"] == pytest.approx(high)
    names = [report["tracking"]["run"] for report in tiny_comparison["runs"]]
    assert len(set(names)) == len(names)


@pytest.mark.slow
def test_an_embedded_model_run_is_in_the_store(embedded_runs) -> None:
    from bench.calibration import GUARDS

    report = embedded_runs(GUARDS[0])
    logs = _logs(EMBEDDED_PROJECT, report["tracking"]["run"])
    assert [row["step"] for row in logs if "loss" in row] == list(range(1, report["settings"]["steps_done"] + 1))
    final = logs[-1]
    assert final["verdict"] == report["health"]["verdict"] and final["verdict_codes"] == ", ".join(
        report["health"]["codes"]
    )
    assert final["eval/kl_to_reference"] == pytest.approx(report["eval"]["kl_to_reference"])


def test_the_logging_cost_is_measured_and_small_against_a_step(tiny_comparison) -> None:
    for report in tiny_comparison["runs"]:
        tracked = report["tracking"]
        step_seconds = report["timings"]["train"] / max(1, report["settings"]["steps_done"])
        assert tracked["logging_calls"] >= report["settings"]["steps_done"] + 2  # steps, end of training, evidence
        assert 0 < tracked["logging_seconds"] / tracked["logging_calls"] < step_seconds


def test_where_runs_go(monkeypatch) -> None:
    for name in ("ALIGNLAB_TRACKIO", "ALIGNLAB_TRACKIO_PROJECT", "ALIGNLAB_PUBLIC", "SPACE_ID"):
        monkeypatch.delenv(name, raising=False)
    assert tracking.project_name() == "alignlab" and tracking.project_name("mine") == "mine"
    monkeypatch.setenv("ALIGNLAB_TRACKIO_PROJECT", "workshop")
    assert tracking.project_name() == "workshop"
    monkeypatch.setenv("ALIGNLAB_TRACKIO", "0")
    assert tracking.project_name() is None and tracking.start("x", "dpo", {}) is None
    monkeypatch.delenv("ALIGNLAB_TRACKIO")
    # a public Space: nothing recorded unless its owner named a project
    monkeypatch.delenv("ALIGNLAB_TRACKIO_PROJECT")
    monkeypatch.setenv("SPACE_ID", "someone/alignlab")
    assert tracking.project_name() is None
    monkeypatch.setenv("ALIGNLAB_TRACKIO_PROJECT", "owners-runs")
    assert tracking.project_name() == "owners-runs"
    with pytest.raises(ValueError, match="letters, digits"):
        tracking.check_project("../elsewhere")


def test_trackio_says_nothing_on_stdout(capsys) -> None:
    """trackio's own announcements go to the log: a CLI's report or a worker's result line stays alone on stdout."""
    tracker = tracking.start(tracking.run_name("quiet"), "dpo", {"label": "A"}, "alignlab-quiet")
    tracker.log_row({"step": 1, "loss": 0.5})
    tracker.end_training(1, 0.1, False)
    tracker.log_report({"eval": {}, "health": {"verdict": "healthy", "codes": []}})
    assert tracker.failed is None and capsys.readouterr().out == ""


def test_names_are_unique_and_the_store_is_bounded(monkeypatch) -> None:
    project = "alignlab-bound"
    names = [tracking.run_name("seed-lab", "A", "dpo") for _ in range(4)]
    assert len(set(names)) == 4 and all(n.startswith("seed-lab-A-dpo-") for n in names)
    monkeypatch.setenv("ALIGNLAB_TRACKIO_MAX_RUNS", "3")
    for i, name in enumerate(names):
        tracker = tracking.start(name, "dpo", {"label": f"run {i}"}, project)
        tracker.log_row({"step": 1, "loss": 0.5 + i})
        tracker.end_training(1, 0.1, False)
    assert SQLiteStorage.get_runs(project) == names[1:]  # the oldest went first
    assert _logs(project, names[3])[0]["loss"] == 3.5


def test_a_failing_store_never_stops_the_run(tmp_path) -> None:
    tracker = tracking.RunTracker("alignlab-broken", "x", "dpo")
    tracker._run = object()  # a run whose log call fails, as a full disk or a dropped connection would
    tracker.log_row({"step": 1, "loss": 0.5})
    assert tracker.failed and "logging a step" in tracker.failed
    tracker.log_row({"step": 2, "loss": 0.4})  # quietly nothing: one warning, not one per step
    tracker.log_report({"eval": {}, "health": {"verdict": "healthy", "codes": []}})
    assert tracker.summary()["failed"] == tracker.failed


def test_an_unreachable_hub_never_blocks_a_run(monkeypatch) -> None:
    """A project synced to a Space (the owner's TRACKIO_SPACE_ID) on a machine that cannot reach the Hub: one
    warning, and the run goes on untracked."""
    monkeypatch.setenv("TRACKIO_SPACE_ID", "nobody/alignlab-dashboard")
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    tracker = tracking.start("unreachable-1", "dpo", {"label": "A"}, "alignlab-synced")
    assert tracker is not None and tracker.failed and "starting the run" in tracker.failed
    tracker.log_row({"step": 1, "loss": 0.5})
    tracker.end_training(1, 1.0, False)
    tracker.log_report({"eval": {}, "health": {"verdict": "healthy", "codes": []}})
    assert "dashboard at https://huggingface.co/spaces/nobody/alignlab-dashboard" in tracker.summary()["dashboard"]


def test_a_closed_session_closes_its_open_run(tmp_path) -> None:
    """A visitor who trained and left without comparing: the session's trackio run is closed with it, its rows kept."""
    from alignlab.ui.state import SessionStore

    store = SessionStore(tmp_path)
    session = store.get("visitor")
    session.tracker = tracking.start(tracking.run_name("left"), "dpo", {"label": "A"}, "alignlab-closed")
    session.tracker.log_row({"step": 1, "loss": 0.5})
    assert session.tracker._run is not None
    store.close("visitor")
    assert session.tracker._run is None and not session.directory.exists()
    assert _logs("alignlab-closed", session.tracker.name)[0]["loss"] == 0.5
