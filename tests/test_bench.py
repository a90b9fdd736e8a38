"""Smoke test of `python -m bench` on the tiny model: it runs and writes its figures.

Speed is never asserted here (the bench reports figures, it does not pass or fail); what is
checked is that every section produces its figures and that the bare PyTorch DPO loop agrees
with TRL's losses, which is the bench's own correctness check.
"""

from __future__ import annotations

import json

import pytest

from bench.__main__ import main


def test_quick_bench_writes_every_figure(tmp_path):
    out = tmp_path / "bench.json"
    results = main(["--quick", "--only", "generation,training,shift", "--out", str(out)])
    written = json.loads(out.read_text())
    assert written["machine"]["cores"] >= 1 and written["config"]["model"] == "tiny"
    assert results["generation"]["batched_seconds"]["n"] == 1
    training = written["training"]
    for name in ("alignlab", "trl_default", "bare"):
        assert training["step_seconds"][name]["n"] == 2  # --quick: 2 timed steps after the warm-up
    assert training["tokens_match_trl"]
    agreement = training["loss_agreement"]
    assert agreement["first_step_loss_diff"] < 1e-4
    assert agreement["max_loss_diff"] < 1e-3  # same data order and optimiser as TRL
    assert abs(agreement["first_step_logps_chosen_trl"] - agreement["first_step_logps_chosen_bare"]) < 1e-2
    assert len(written["shift"]["heldout_accuracy_per_step"]) == written["shift"]["steps_run"]
    assert {t["target"] for t in written["targets"]}


@pytest.mark.slow
def test_quick_bench_lab_section_runs_in_fresh_processes(tmp_path):
    out = tmp_path / "bench.json"
    main(["--quick", "--only", "lab", "--out", str(out)])
    lab = json.loads(out.read_text())["lab"]
    assert lab["figures"]["total_cached"]["n"] >= 1
    assert lab["figures"]["peak_rss_cached"]["median"] > 0
