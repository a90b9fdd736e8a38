"""Smoke test of `python -m bench` on the tiny model: it runs and writes its figures.

Speed is never asserted here (the bench reports figures, it does not pass or fail); what is
checked is that every section produces its figures and that the bare PyTorch DPO loop agrees
with TRL's losses, which is the bench's own correctness check.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from bench.__main__ import main
from bench.bare_dpo import EncodedPair
from bench.probe import pairs_per_step
from bench.protocol import ROOT
from bench.training import padding_share


def test_quick_bench_writes_every_figure(tmp_path):
    out = tmp_path / "bench.json"
    sections = "correctness,generation,training,shift,scale"
    results = main(["--quick", "--only", sections, "--scale-size", "tiny", "--out", str(out)])
    written = json.loads(out.read_text())
    assert written["machine"]["cores"] >= 1 and written["config"]["model"] == "tiny"
    assert results["generation"]["batched_seconds"]["n"] == 1
    steps = written["generation"]["decode_step_seconds"]
    assert steps["batch_1"]["n"] == steps[f"batch_{written['generation']['prompts']}"]["n"] == 16
    assert written["generation"]["speedup_bound_from_decode_steps"] > 0
    # random weights are held to the full length: 64 decoding steps batched, 6 x 64 one at a time
    assert written["generation"]["full_length"]
    assert written["generation"]["decoding_steps"] == {"batched": 64, "one_at_a_time": 6 * 64}
    assert written["correctness"]["loss_agreement"]["max_loss_diff"] < 1e-3
    scale = written["scale"]
    assert scale["lora_r16"]["trainable_parameters"] < scale["full"]["trainable_parameters"] == scale["parameters"]
    assert scale["lora_r16"]["estimate_mib"] < scale["full"]["estimate_mib"]
    training = written["training"]
    for name in ("alignlab", "trl_default", "bare"):
        assert training["step_seconds"][name]["n"] == 2  # --quick: 2 timed steps after the warm-up
    assert training["tokens_match_trl"]
    assert 0 <= training["padding_share"]["floor"] <= training["padding_share"]["mean"] < 1
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


def test_the_1b_row_is_skipped_off_a_gpu_with_the_reason():
    import torch

    from bench import scale

    assert "needs a CUDA GPU" in scale.run(torch.device("cpu"), [], size="1b")["skipped"]


def _wheel(directory, name: str, version: str, requires: list[str]) -> None:
    import zipfile

    lines = [f"Name: {name}", f"Version: {version}"] + [f"Requires-Dist: {r}" for r in requires]
    with zipfile.ZipFile(directory / f"{name}-{version}-py3-none-any.whl", "w") as archive:
        archive.writestr(f"{name}-{version}.dist-info/METADATA", "\n".join(lines) + "\n")


def test_wheel_plan_installs_the_core_and_only_the_support_the_machine_lacks(tmp_path):
    from bench.wheels import plan

    _wheel(tmp_path, "trl", "1.16.0", ["datasets>=4.7.0", 'rich; extra == "cli"'])
    _wheel(tmp_path, "datasets", "5.2.0", ["fsspec<=1.0", "xxhash"])
    _wheel(tmp_path, "transformers", "5.24.0", ["dill<0.1"])
    _wheel(tmp_path, "peft", "0.21.2", [])
    _wheel(tmp_path, "fsspec", "0.9.0", [])  # this venv's fsspec fails <=1.0: carried one installed
    _wheel(tmp_path, "xxhash", "1.0.0", [])  # this venv's xxhash meets the requirement: kept
    _wheel(tmp_path, "no_such_package_here", "1.0.0", [])  # needed by nothing: not installed
    names = sorted(p.name.split("-")[0] for p in plan(tmp_path))
    assert names == ["datasets", "fsspec", "peft", "transformers", "trl"]


def test_pairs_per_step_follow_epochs_with_a_short_last_batch():
    assert pairs_per_step(10, 4, 6) == [4, 4, 2, 4, 4, 2]
    assert pairs_per_step(10, 2, 6) == [2, 2, 2, 2, 2, 2]
    assert pairs_per_step(3, 8, 2) == [3, 3]


def test_padding_share_counts_the_pads_a_batch_needs():
    same = [EncodedPair([1, 2], [3, 4], [5, 6])] * 4
    assert padding_share(same, batch_size=2) == {"mean": 0.0, "floor": 0.0, "batch_size": 2}
    # chosen 4 tokens, rejected 2: each pair alone pads 2 of 8 positions, whatever the batching
    uneven = [EncodedPair([1, 2], [3, 4], [])] * 4
    share = padding_share(uneven, batch_size=2)
    assert share["floor"] == pytest.approx(0.25) and share["mean"] == pytest.approx(0.25)


@pytest.mark.slow
def test_candidates_run_each_setting_in_its_own_process(tmp_path):
    out = tmp_path / "bench.json"
    main(["--quick", "--only", "candidates", "--candidate-names", "defaults,precomputed_reference", "--out", str(out)])
    cand = json.loads(out.read_text())["candidates"]
    assert set(cand) == {"defaults", "precomputed_reference"}
    # the same run either way: the reference's scores do not depend on when they are computed
    assert cand["defaults"]["losses"] == pytest.approx(cand["precomputed_reference"]["losses"], abs=1e-5)
    assert all(c["seconds_per_pair"] > 0 and c["peak_rss_mib"] > 0 for c in cand.values())


def _worktrees() -> list[str]:
    listing = subprocess.run(
        ["git", "worktree", "list", "--porcelain"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return [line for line in listing.stdout.splitlines() if line.startswith("worktree ")]


def test_quick_evidence_section_measures_this_checkout_beside_another_revision(tmp_path):
    """The compare step on HH-RLHF with this checkout's code and, in a git worktree, HEAD's: in a clean clone
    the same code, so every figure agrees; the worktree is gone afterwards."""
    before = _worktrees()
    out = tmp_path / "bench.json"
    main(["--quick", "--only", "evidence", "--evidence-against", "HEAD", "--out", str(out)])
    evidence = json.loads(out.read_text())["evidence"]
    assert evidence["pairs"]["heldout"] == 75 and evidence["pairs"]["train"] == 224  # HH-RLHF: one empty reply
    now, head = evidence["now"], evidence["against"]
    for side in (now, head):
        assert side["evidence_seconds"]["n"] == side["repeat_seconds"]["n"] == 1
        assert side["peak_rss"]["median"] > 0 and side["generate_seconds"]["median"] > 0
        assert side["capability_source"] == "built-in" and side["capability_pairs"] > 0
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert head["revision"] == "HEAD" and head["commit"] == commit.stdout.strip()
    assert (
        set(evidence["agreement"])
        == set(now["figures"])
        == {
            "heldout_reward_accuracy",
            "heldout_mean_margin",
            "kl_to_reference",
            "perplexity_after",
        }
    )
    for key, (theirs, ours) in evidence["agreement"].items():
        assert ours == pytest.approx(theirs, rel=1e-4, abs=1e-5), key
    assert now["verdict"] == head["verdict"] is not None
    assert evidence["speedup"]["n"] == evidence["repeat_speedup"]["n"] == 1 and evidence["repeat_speedup"]["median"] > 0
    assert _worktrees() == before


def test_the_revisions_worktree_is_removed_also_when_its_measurement_fails():
    from bench.evidence import worktree

    before = _worktrees()
    with pytest.raises(RuntimeError, match="the measurement failed"), worktree("HEAD") as (tree, _):
        assert (tree / "alignlab" / "evidence" / "evaluation.py").is_file() and len(_worktrees()) == len(before) + 1
        raise RuntimeError("the measurement failed")
    assert not tree.exists() and _worktrees() == before
    with pytest.raises(RuntimeError, match="names no commit"), worktree("no-such-revision"):
        pass
    assert _worktrees() == before


def test_a_calibration_case_names_each_way_a_run_misses_its_verdict():
    from bench.calibration import Case

    case = Case(
        "a case",
        "seed-lab",
        "over-trained",
        verdicts=("failed",),
        codes=("collapse",),
        forbidden=("loop",),
        min_changed=1,
    )
    assert case.check("failed", ["collapse", "learning"], 1) == []
    assert case.check("healthy", ["loop"], 0) == [
        "verdict healthy, expected failed",
        "missing code collapse",
        "unexpected code loop",
        "0 answers changed, expected at least 1",
    ]


def test_quick_calibration_section_reports_each_case_with_its_figures(tmp_path):
    from bench.calibration import CASES

    name = "seed-lab at the defaults"
    case = next(c for c in CASES if c.name == name)
    out = tmp_path / "bench.json"
    main(["--quick", "--only", "calibration", "--calibration-cases", name, "--out", str(out)])
    section = json.loads(out.read_text())["calibration"]
    (row,) = section["cases"]
    assert row["case"] == name and row["expected"] == list(case.verdicts) == ["healthy"]
    # the case's own check read this run's verdict, codes and changed answers: on the tiny model it may well miss
    assert row["codes"] and row["wrong"] == case.check(row["verdict"], row["codes"], row["changed"])
    assert section["calibrated"] is (not row["wrong"])
    assert len(row["answers_after"]) == row["answers"] == 7
    assert set(row) >= {
        "distinct",
        "repeated_ngram_rate",
        "heldout_accuracy",
        "contrast_accuracy",
        "capability_accuracy",
    }
    # one case on the tiny model is not the matrix: its table goes beside the JSON, not to docs/calibration.md
    assert section["markdown"] == str(tmp_path / "bench.calibration.md")
    table = _cases_table((tmp_path / "bench.calibration.md").read_text())
    assert table[0].startswith("| case | why | expected | verdict | codes | ok |") and len(table) == 2
    cells = table[1].strip("| ").split(" | ")
    assert cells[:4] == [name, case.why, "healthy", row["verdict"]]
    assert cells[5] == ("ok" if not row["wrong"] else "WRONG: " + "; ".join(row["wrong"]))


def _cases_table(markdown: str) -> list[str]:
    """The rows of a calibration document's table of every case, its header first."""
    lines = markdown.split("## Every case")[-1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| case |"))
    return [line for line in lines[start:] if line.startswith("| ")]


def test_docs_calibration_has_a_row_for_every_case_in_order():
    from bench.calibration import CASES, DOC

    text = DOC.read_text()
    rows = [line[2:-2].split(" | ") for line in _cases_table(text)]
    assert rows[0][0] == "case" and [row[0] for row in rows[1:]] == [case.name for case in CASES]
    # the last column marks the cases make test runs
    assert rows[0][-1] == "make test" and [row[-1] == "guard" for row in rows[1:]] == [case.guards for case in CASES]
    # the confusion matrix counts every case once, and every target is met
    matrix = text.split("## Expected reading against verdict")[1].split("## Targets")[0]
    counts = [
        int(cell)
        for line in matrix.splitlines()[3:]
        if line.startswith("| ")
        for cell in line[2:-2].split(" | ")[1:]
        if cell.strip()
    ]
    assert sum(counts) == len(CASES)
    targets = text.split("## Targets")[1].split("## Every case")[0]
    assert targets.count("- met: ") == 5 and "NOT MET" not in targets
    # every remedy applied, and each method's win rate at its defaults on each preset
    remedies = text.split("## Remedies")[1].split("## Win rate at each method's defaults")[0]
    assert "| case | finding | remedy |" in remedies
    wins = text.split("## Win rate at each method's defaults")[1].split("## Every case")[0]
    from alignlab.registry.methods import METHODS

    assert [line.split(" | ")[0][2:] for line in wins.splitlines() if line.startswith("| ")][1:] == list(METHODS)


def test_the_calibration_family_is_generated_from_its_sources():
    from alignlab.data.presets import load_preset
    from alignlab.registry.methods import METHODS
    from alignlab.ui.dataset_tab import DEFAULT_PRESET
    from bench.calibration import (
        CASES,
        GUARDED,
        OPENING,
        SOURCES,
        SWAP_SEEDS,
        TARGETS,
        Case,
        confusion,
        swapped_half,
    )

    kinds = {}
    for case in CASES:
        kinds.setdefault(case.kind, []).append(case)
    assert {c.source for c in kinds["clean"]} == set(SOURCES) == {c.source for c in kinds["swapped"]}
    swapped_dpo = [c for c in kinds["swapped"] if c.method == "dpo"]
    assert len(swapped_dpo) == len(SOURCES) * len(SWAP_SEEDS) and len(kinds["over-trained"]) == 2
    # RLHF, read from its reward model, with half the labels swapped on the opening preset
    assert [(c.method, c.source) for c in kinds["swapped"] if c.method != "dpo"] == [("rlhf", GUARDED)]
    assert all(c.settings == {"learning_rate": 1e-8} for c in kinds["too small a step"])
    assert {c.method for c in kinds["method demo"]} | {"dpo"} == set(METHODS)
    # every method at its defaults on every preset; those on the opening preset guard the verdict
    demos = {(c.method, c.source) for c in kinds["method demo"]}
    assert demos == {(m, p) for m in METHODS if m != "dpo" for p in SOURCES if p != "hh-rlhf"}
    assert all(c.guards == (c.source == GUARDED) for c in kinds["method demo"])
    # the preset the app opens on guards its claim: healthy, a real win, beyond the cue, no knowledge lost
    assert OPENING == DEFAULT_PRESET
    (opening,) = [c for c in kinds["clean"] if c.source == OPENING]
    assert opening.guards and {"win", "beyond_cue"} <= set(opening.codes) and "capability_loss" in opening.forbidden
    (guarded,) = [c for c in kinds["clean"] if c.source == GUARDED]
    assert "no_win" in guarded.codes and "win" in guarded.forbidden
    # half the labels swapped at random: exactly half of each list, a different half for each pattern
    preset = load_preset(GUARDED)
    patterns = []
    for seed in SWAP_SEEDS:
        swapped = swapped_half(preset, seed)
        for name in ("pairs", "heldout_pairs"):
            original, now = getattr(preset, name), getattr(swapped, name)
            flipped = [
                i for i, (a, b) in enumerate(zip(original, now)) if (a.chosen, a.rejected) == (b.rejected, b.chosen)
            ]
            unchanged = [i for i, (a, b) in enumerate(zip(original, now)) if a == b]
            assert len(flipped) == len(original) // 2 and len(flipped) + len(unchanged) == len(original)
            patterns.append(tuple(flipped))
        assert swapped.contrast_pairs == preset.contrast_pairs and swapped.eval_prompts == preset.eval_prompts
    assert patterns[:2] != patterns[2:]
    # the targets and the confusion matrix read the rows' verdicts
    rows = [
        {"case": "a", "kind": "swapped", "source": OPENING, "verdict": "healthy", "expected_reading": "not healthy"},
        {"case": "b", "kind": "clean", "source": OPENING, "verdict": "warning", "expected_reading": "healthy"},
        {"case": "c", "kind": "clean", "source": OPENING, "verdict": "healthy", "expected_reading": "healthy"},
    ]
    met = {t.text: t.met(rows) for t in TARGETS}
    assert met["no healthy verdict for swapped labels"] is False
    assert met["the clean cases healthy in all but at most one"] is True
    assert confusion(rows)[2:] == ["| not healthy | 1 |  |  |", "| healthy | 1 | 1 |  |"]
    assert Case("x", OPENING, "swapped", verdicts=("warning", "failed")).expected == "not healthy"


def test_a_workers_result_is_the_last_marked_line_of_its_output():
    from bench.protocol import MARKER, read_result

    assert read_result(f'loading\n{MARKER}{{"n": 1}}\nwarning\n{MARKER}{{"n": 2}}\nbye\n') == {"n": 2}
    assert read_result("a worker that died before its result") is None


@pytest.mark.slow
def test_quick_bench_room_section_runs_rooms_on_a_real_server(tmp_path):
    out = tmp_path / "bench.json"
    main(["--quick", "--only", "room", "--room-sizes", "2", "--out", str(out)])
    written = json.loads(out.read_text())
    room = written["room"]
    assert len(room["singles"]) == 2 and all(s > 0 for s in room["singles"])
    distinct, identical = room["distinct"]["2"], room["identical"]["2"]
    assert not distinct["errors"] and not identical["errors"]
    assert distinct["serial_sum"] == pytest.approx(sum(room["singles"]))
    assert distinct["shared_runs"] == {"computed": 6, "joined": 0, "from_cache": 0}  # 2 labs x 3 steps
    shared = identical["shared_runs"]
    assert shared["computed"] == 3 and shared["joined"] + shared["from_cache"] == 3  # the second lab shared all
    assert distinct["peak_rss_mib"] > 0 and identical["first_step_last_in_line"] is not None
    targets = {t["target"]: t for t in written["targets"]}
    assert targets["distinct requests: makespan <= 1.15x serial sum"]["value"] == pytest.approx(distinct["ratio"])


def test_the_defaults_sweep_is_valid_settings_around_each_methods_defaults():
    """Every case of the method_defaults sweep is a method's settings the lab accepts, held to the demo's bar, and
    the chosen defaults were among the candidates measured (they are what the registry comments cite)."""
    from alignlab.registry.methods import METHODS
    from alignlab.registry.settings import TrainingSettings
    from bench.calibration import CASES, SWEEP

    assert len({case.name for case in SWEEP}) == len(SWEEP)
    for case in SWEEP:
        settings = TrainingSettings.for_method(case.method, **case.settings)
        assert not settings.problems(), case.name
        assert case.verdicts == ("healthy",) and case.min_changed == 1 and "repetition" in case.forbidden
    for name in ("ipo", "orpo"):
        defaults = {k: v for k, v in METHODS[name].defaults.items() if k != "steps"}
        measured = [c.settings for c in SWEEP if c.method == name]
        assert any(all(s.get(k) == v for k, v in defaults.items()) for s in measured), name
    # and every method's default run is in the calibration matrix, so its verdict is a slow test
    assert {c.method for c in CASES if not c.settings and c.source == "seed-lab"} >= set(METHODS)
