"""End-to-end API tests: the real app on a real Gradio server, driven through gradio_client.

The app runs in-process on the tiny random model (``ALIGNLAB_DEFAULT_MODEL``), so every endpoint,
including the streaming ``/train``, Stop and the error paths, runs for real in seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import gradio as gr
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from alignlab.data.presets import load_preset
from alignlab.registry.methods import LOSS_TYPES
from alignlab.ui.dataset_tab import DEFAULT_PRESET

from contract import EVAL_KEYS, HEALTH_KEYS, REPORT_KEYS, WIN_KEYS

pytestmark = pytest.mark.e2e

ENDPOINTS = {
    "/load_model",
    "/baseline",
    "/validate_dataset",
    "/train",
    "/compare",
    "/run_lab",
    "/export",
    "/stop",
    "/export_recipe",
    "/run_comparison",
    "/export_model",
    "/export_dataset",
}


def _has_nan(node) -> bool:
    if isinstance(node, float):
        return node != node or node in (float("inf"), float("-inf"))
    if isinstance(node, dict):
        return any(_has_nan(v) for v in node.values())
    if isinstance(node, list):
        return any(_has_nan(v) for v in node)
    return False


@pytest.fixture(scope="module")
def app(tiny_chat_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The app on the tiny model, launched in this process; yields (demo, url)."""
    os.environ["ALIGNLAB_DEFAULT_MODEL"] = str(tiny_chat_dir)
    from alignlab.ui import build_app, launch_options, service

    redraw, service.MIN_REDRAW_SECONDS = service.MIN_REDRAW_SECONDS, 0.0  # one update per step, however fast
    demo = build_app()
    demo.session_store.root = tmp_path_factory.mktemp("sessions")
    demo.shared.clear()  # earlier test modules may have left identical runs in the shared-run cache
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **launch_options())
    yield demo, url
    demo.close()
    demo.session_store.close_all()
    service.MIN_REDRAW_SECONDS = redraw


@pytest.fixture(scope="module")
def trained(app):
    """One client that has recorded a baseline and trained (shared by the tests that need it)."""
    _, url = app
    client = Client(url, verbose=False)
    client.predict(api_name="/baseline")
    *_, last = list(client.submit(steps=4, api_name="/train"))
    assert "Finished 4 of 4 steps" in last[0]
    return client


def error_of(call) -> str:
    with pytest.raises(AppError) as info:
        call()
    return str(info.value)


def place_note(job) -> str:
    """The waiting note in a job's latest status update (``gr.Progress`` data): place in line, wait."""
    progress = job.status().progress_data or []
    return " ".join(unit.desc or "" for unit in progress)


def wait_until(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_every_contract_endpoint_is_public_and_documented(app) -> None:
    client = Client(app[1], verbose=False)
    api = client.view_api(return_format="dict", print_info=False)
    assert set(api["named_endpoints"]) >= ENDPOINTS
    train = api["named_endpoints"]["/train"]
    names = [p["parameter_name"] for p in train["parameters"]]
    assert names == [
        "pairs",
        "heldout_pairs",
        "beta",
        "learning_rate",
        "steps",
        "batch_size",
        "loss_type",
        "seed",
        "use_lora",
        "lora_rank",
        "use_qlora",
        "method",  # added after the others, so that clients that pass them by position keep working
        "sft_weight",
    ]
    for name in ENDPOINTS:
        assert api["named_endpoints"][name]["description"], f"{name} has no description"
    # each input's range is documented, from the settings' fields (β's per method, from the registry)
    assert "steps — Optimizer steps; more = bigger change (1 to 500;" in train["description"]
    assert "beta — How tightly the model is held to the original" in train["description"]
    assert "dpo, ipo, kto, orpo" in train["description"] and "simpo: 0.01 to 10" in train["description"]
    # every method and loss type of the registry, on every endpoint that takes them
    for name in ("/train", "/run_lab", "/export_recipe"):
        description = api["named_endpoints"][name]["description"]
        assert "loss_type — " in description and all(loss in description for loss in LOSS_TYPES)
    for name in ("/train", "/run_lab"):
        assert "one of dpo, ipo, kto, orpo, simpo, rlhf" in api["named_endpoints"][name]["description"]
    assert "rlhf" in api["named_endpoints"]["/run_comparison"]["description"]
    assert "concise, seed-lab, warm-tone" in api["named_endpoints"]["/run_lab"]["description"]
    lab = api["named_endpoints"]["/run_lab"]
    steps = {p["parameter_name"]: p["type"] for p in lab["parameters"]}["steps"]
    assert {"type": "integer"} in steps["oneOf"] and {"type": "null"} in steps["oneOf"]  # empty: the method's own


def test_out_of_order_clicks_say_what_to_do_first(app) -> None:
    client = Client(app[1], verbose=False)
    assert "Record the baseline first" in error_of(lambda: client.predict(api_name="/compare"))
    assert "Record the baseline first" in error_of(lambda: client.submit(api_name="/train").result())
    client.predict(api_name="/baseline")
    assert "Train first" in error_of(lambda: client.predict(api_name="/compare"))
    empty = {"headers": ["prompt", "chosen", "rejected"], "data": []}
    assert "no training pairs" in error_of(lambda: client.submit(pairs=empty, api_name="/train").result())


def test_journey_load_baseline_train_streams_compare_export(app, tiny_chat_dir: Path) -> None:
    client = Client(app[1], verbose=False)
    assert "Loaded" in client.predict(str(tiny_chat_dir), api_name="/load_model")

    table, status = client.predict(max_new_tokens=16, api_name="/baseline")
    assert "Recorded 7 answers" in status
    assert len(table["data"]) == 7 and all(row[1] for row in table["data"])
    assert "Ready" in client.predict(api_name="/validate_dataset")

    job = client.submit(steps=5, api_name="/train")
    updates = list(job)
    statuses = [u[0] for u in updates]
    assert "Starting" in statuses[0]
    for step in range(1, 6):  # one streamed update per logged step, with steps left
        left = f"{5 - step} step{'' if step == 4 else 's'} left"
        assert any(f"Step {step} of 5" in s and left in s for s in statuses), statuses
    points = [len(u[1]["data"]) for u in updates]  # the loss plot grows step by step
    assert points[0] == 0 and max(points) == 5 and points == sorted(points)
    final = updates[-1]
    assert "Finished 5 of 5 steps" in final[0]
    # the live held-out curve: held-out and contrast accuracy after every other step and the last, drawn as it trains
    heldout_points = [len(u[5]["data"]) for u in updates]
    assert heldout_points[-1] == 2 * 3 and heldout_points == sorted(heldout_points)  # steps 2, 4 and 5
    assert any(0 < points < 6 for points in heldout_points)
    assert {row[2] for row in final[5]["data"]} == {"held-out pairs", "contrast pairs (cue on the wrong side)"}
    assert len(final[6]["data"]) == 5  # log table
    assert "Training health" in final[7]
    assert {row[2] for row in final[3]["data"]} == {"chosen", "rejected"}  # rewards plot series

    summary, table_html, evidence, health, report_path, report = client.predict(api_name="/compare")
    assert f"{report['changed']} of 7 answers changed" in summary
    # one badge per prompt, "changed" exactly where the texts differ, and the words marked in those rows
    assert table_html.count("al-badge al-changed") == report["changed"]
    assert table_html.count("al-badge al-same") == 7 - report["changed"]
    if report["changed"]:
        assert "<del" in table_html or "<ins" in table_html
    for reading in ("Held-out pairs", "Contrast pairs", "Capability", "KL drift", "Perplexity"):
        assert reading in evidence
    assert "distinct answers" in evidence and "repeated 3-word phrases" in evidence
    assert "Health verdict" in health and report["health"]["verdict"].upper() in health
    assert all(f"`{code}`" in health for code in report["health"]["codes"])
    assert set(report) >= REPORT_KEYS
    assert report["health"]["verdict"] in {"healthy", "warning", "failed"}
    assert set(report["eval"]) >= EVAL_KEYS | WIN_KEYS
    assert [p["step"] for p in report["eval"]["heldout_curve"]] == [2, 4, 5]  # every other step and the last
    assert report["settings"]["preset"] == DEFAULT_PRESET  # the pairs the app opens with
    assert set(report["health"]) >= HEALTH_KEYS
    assert not _has_nan(report)
    assert len(report["aligned_outputs"]) == len(report["baseline_outputs"]) == 7
    assert json.loads(Path(report_path).read_text())["changed"] == report["changed"]

    exported = Path(client.predict(api_name="/export"))
    lines = [json.loads(line) for line in exported.read_text().splitlines()]
    assert len(lines) == 13 and set(lines[0]) == {"prompt", "chosen", "rejected"}


def test_stop_ends_only_this_sessions_run_and_the_session_keeps_working(app, trained) -> None:
    demo, url = app
    client = Client(url, verbose=False)
    client.predict(api_name="/baseline")
    job = client.submit(steps=400, api_name="/train")
    wait_until(lambda: any("Step " in str(u[0]) for u in job.outputs()))
    other = trained.predict(api_name="/validate_dataset")  # another session is not blocked or touched
    assert "Ready" in other
    # Model work waits its turn, and is told so (9 tokens: no identical baseline was recorded before).
    waiting = trained.submit(max_new_tokens=9, api_name="/baseline")
    wait_until(lambda: "1st in line" in place_note(waiting))
    stopped = client.predict(api_name="/stop")
    assert "Stopped after" in stopped[0] and "of 400 steps" in stopped[0]
    assert "Training health" in stopped[7]
    wait_until(lambda: job.done(), timeout=30)
    assert "Stopped after" in job.outputs()[-1][0]
    assert "Recorded 7 answers" in waiting.result(timeout=60)[1]  # the queued job ran once the slot was free
    session = demo.session_store.peek(client.session_hash)
    assert not session.training_now and session.trained.policy_dir.is_dir()
    assert "answers changed" in client.predict(api_name="/compare")[0]  # a stopped run can still be compared


def test_a_client_cancel_closes_the_stream_and_stops_training(app) -> None:
    demo, url = app
    client = Client(url, verbose=False)
    client.predict(api_name="/baseline")
    job = client.submit(steps=400, api_name="/train")
    wait_until(lambda: any("Step " in str(u[0]) for u in job.outputs()))
    job.cancel()
    session = demo.session_store.peek(client.session_hash)
    wait_until(lambda: not session.training_now, timeout=60)
    assert session.training_handle.cancel.cancelled
    *_, last = list(client.submit(steps=2, api_name="/train"))  # the session is free to train again
    assert "Finished 2 of 2 steps" in last[0]


def test_bad_input_gets_a_clear_message_and_the_session_keeps_working(app) -> None:
    client = Client(app[1], verbose=False)
    assert "Pick a model" in error_of(lambda: client.predict("  ", api_name="/load_model"))
    assert "There is no directory" in error_of(lambda: client.predict("/no/such/model", api_name="/load_model"))
    message = error_of(lambda: client.predict("not a model id!", api_name="/load_model"))
    assert "neither a known model" in message
    message = error_of(lambda: client.predict("no-such-owner/no-such-model-xyz", api_name="/load_model"))
    assert "no-such-owner/no-such-model-xyz" in message
    message = error_of(lambda: client.predict(eval_prompts=" \n ", api_name="/baseline"))
    assert "Write at least one eval prompt" in message
    assert "limit is 4000" in error_of(lambda: client.predict(eval_prompts="x" * 5000, api_name="/baseline"))
    assert "under" in error_of(lambda: client.predict(eval_prompts="x" * 300_000, api_name="/baseline"))
    message = error_of(lambda: client.predict(max_new_tokens=10_000, api_name="/baseline"))
    assert "max_new_tokens must be a whole number from 1 to 512" in message

    rows = [[f"prompt {i}", f"good {i}", f"bad {i}"] for i in range(3000)]
    huge = {"headers": ["prompt", "chosen", "rejected"], "data": rows}
    assert "3000 rows is too many" in client.predict(pairs=huge, api_name="/validate_dataset")
    broken = {"headers": ["prompt", "chosen", "rejected"], "data": [["", "same", "same"]]}
    message = client.predict(pairs=broken, api_name="/validate_dataset")
    assert "pairs row 1: 'prompt' is empty" in message and "identical" in message

    client.predict(api_name="/baseline")
    message = error_of(lambda: client.submit(beta=5, api_name="/train").result())
    assert "beta must be between 0.01 and 1.0" in message
    assert "steps must be a whole number" in error_of(lambda: client.submit(steps=0, api_name="/train").result())
    assert "steps must be a whole number" in error_of(lambda: client.submit(steps=2.5, api_name="/train").result())
    message = error_of(lambda: client.submit(learning_rate=1.0, api_name="/train").result())
    assert "learning_rate must be between 1e-8 and 1e-3" in message
    assert "Fix the dataset first" in error_of(lambda: client.submit(pairs=broken, api_name="/train").result())
    assert "Unknown preset" in error_of(lambda: client.predict(preset="nope", api_name="/run_lab"))
    message = error_of(lambda: client.submit(method="ppo", api_name="/train").result())
    assert "Unknown method 'ppo'. Known methods: dpo, ipo, kto, orpo, simpo" in message
    assert "Known methods" in error_of(lambda: client.predict(method="ppo", api_name="/run_lab"))
    # a judge that is no reward model, or cannot be fetched, is named before any work
    assert "Could not fetch 'nobody/no-such-judge'" in error_of(
        lambda: client.predict(judge="nobody/no-such-judge", api_name="/run_lab")
    )
    assert "a judge is a sequence-classification model" in error_of(
        lambda: client.predict(judge=os.environ["ALIGNLAB_DEFAULT_MODEL"], api_name="/compare")
    )
    assert "loss_type is DPO's" in error_of(
        lambda: client.submit(method="kto", loss_type="hinge", api_name="/train").result()
    )

    assert "Ready" in client.predict(api_name="/validate_dataset")  # still working after all that
    *_, last = list(client.submit(steps=1, api_name="/train"))
    assert "Finished 1 of 1 steps" in last[0]


def test_uploads_good_malformed_and_binary(tmp_path: Path, shared_dir: Path) -> None:
    from alignlab.ui.dataset_tab import import_file_ui

    pairs, heldout, prompts, note, probes, probes_note, contrast, capability, *_ = import_file_ui(
        str(shared_dir / "data" / "hh-rlhf-harmless-test-300.jsonl")
    )
    assert len(pairs) + len(heldout) > 250 and "Imported" in note and prompts.strip()
    # an imported dataset brings no probes: no contrast score (said so), the built-in capability set
    assert probes["preset"] == "custom" and probes["contrast_pairs"] == [] and len(contrast) == 0
    assert "No contrast pairs" in probes_note and "built-in" in probes_note
    binary = tmp_path / "weights.jsonl"
    binary.write_bytes(b"\x00\x01\x02" * 100)
    with pytest.raises(gr.Error, match="binary"):
        import_file_ui(str(binary))
    malformed = tmp_path / "broken.json"
    malformed.write_text('[{"prompt": "a", "chosen": ')
    with pytest.raises(gr.Error, match="not valid JSON"):
        import_file_ui(str(malformed))
    with pytest.raises(gr.Error, match="Choose"):
        import_file_ui(None)


def test_lora_run_shows_its_cost_and_qlora_is_explained_where_it_cannot_run(app) -> None:
    from alignlab.training.trainer import qlora_unavailable

    client = Client(app[1], verbose=False)
    client.predict(max_new_tokens=8, api_name="/baseline")
    *_, last = list(client.submit(steps=2, use_lora=True, lora_rank=4, api_name="/train"))
    assert "Finished 2 of 2 steps" in last[0]
    assert "LoRA r=4 · 8.19 k weights trained of 107 k (7.7%)" in last[0] and "MiB (estimated" in last[0]
    reason = qlora_unavailable()
    if reason is not None:  # this machine has no CUDA or no bitsandbytes: refused with the reason
        message = error_of(lambda: client.submit(steps=1, use_lora=True, use_qlora=True, api_name="/train").result())
        assert reason in message
    assert "rank" in error_of(lambda: client.submit(use_lora=True, lora_rank=0, api_name="/train").result())


def test_export_recipe_returns_a_zip_for_the_target(app) -> None:
    import zipfile

    client = Client(app[1], verbose=False)
    path, summary = client.predict(
        target_model="mistral-7b-instruct", gpus=8, engine="zero3", adapter="qlora", api_name="/export_recipe"
    )
    assert "mistral-7b-instruct" in summary and "DeepSpeed ZeRO-3" in summary and "GiB per GPU" in summary
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        assert {"alignlab-recipe/config.yaml", "alignlab-recipe/run.sh", "alignlab-recipe/train.jsonl"} <= names
        config = archive.read("alignlab-recipe/config.yaml").decode()
        assert "load_in_4bit: true" in config and "mistralai/Mistral-7B-Instruct-v0.3" in config
    assert "Unknown target model" in error_of(lambda: client.predict(target_model="nope", api_name="/export_recipe"))
    assert "GPUs must be" in error_of(lambda: client.predict(gpus=0, api_name="/export_recipe"))
    # the method picked on the Train tab decides TRL's script: KTO's, on thumbs rows made of the pairs
    path, summary = client.predict(method="kto", api_name="/export_recipe")
    assert summary.startswith("KTO on ")
    with zipfile.ZipFile(path) as archive:
        assert "trl.scripts.kto" in archive.read("alignlab-recipe/run.sh").decode()
        first = archive.read("alignlab-recipe/train.jsonl").decode().splitlines()[0]
        assert '"label": true' in first
    assert "no training script for ORPO" in error_of(lambda: client.predict(method="orpo", api_name="/export_recipe"))


def test_two_sessions_do_not_see_each_others_state(app, trained) -> None:
    demo, url = app
    stranger = Client(url, verbose=False)
    assert "Record the baseline first" in error_of(lambda: stranger.predict(api_name="/compare"))
    mine = demo.session_store.peek(trained.session_hash)
    theirs = demo.session_store.peek(stranger.session_hash)
    assert mine is not theirs and mine.directory != theirs.directory
    assert mine.trained is not None and theirs.trained is None and theirs.baseline is None
    assert Path(trained.predict(api_name="/export")).read_text() != ""
    assert "answers changed" in trained.predict(api_name="/compare")[0]  # the first session is unaffected


def test_two_visitors_runs_are_tracked_apart(app) -> None:
    """Two visitors start the same lab: the training is shared, but each has a trackio run of their own, with
    every step, the evidence and the verdict, and neither run holds the other's rows."""
    from trackio.sqlite_storage import SQLiteStorage

    _, url = app
    jobs = [Client(url, verbose=False).submit(preset="warm-tone", steps=2, max_new_tokens=6, api_name="/run_lab")]
    jobs.append(Client(url, verbose=False).submit(preset="warm-tone", steps=2, max_new_tokens=6, api_name="/run_lab"))
    reports = [job.result(timeout=300) for job in jobs]
    names = [report["tracking"]["run"] for report in reports]
    assert names[0] != names[1] and all(report["tracking"]["project"] == "alignlab" for report in reports)
    keys = [name.removeprefix("warm-tone-").split("-")[0] for name in names]
    assert keys[0] != keys[1]  # each name carries its own session's key
    for report, name in zip(reports, names):
        logs = SQLiteStorage.get_logs("alignlab", name)
        assert [row["step"] for row in logs if "loss" in row] == [1, 2]
        assert [row["verdict"] for row in logs if "verdict" in row] == [report["health"]["verdict"]]
        assert SQLiteStorage.get_run_config("alignlab", name)["preset"] == "warm-tone"
    assert f"run `{names[0]}`" in reports[0]["tracking"]["dashboard"]


def test_export_model_saves_a_loadable_folder_and_a_failed_push_keeps_it(app) -> None:
    import zipfile

    from transformers import AutoModelForCausalLM

    _, url = app
    with pytest.raises(AppError, match="Train and compare first"):
        Client(url, verbose=False).predict(api_name="/export_model")
    client = Client(url, verbose=False)
    report = client.predict(preset="concise", steps=2, max_new_tokens=6, api_name="/run_lab")
    archive, said = client.predict(api_name="/export_model")
    assert "Saved **alignlab-dpo-concise**" in said
    folder = Path(archive).parent / "unzipped"
    with zipfile.ZipFile(archive) as zipped:
        zipped.extractall(folder)
    model = AutoModelForCausalLM.from_pretrained(folder / "alignlab-dpo-concise")
    assert model.num_parameters() == report["model"]["parameters"]
    assert report["health"]["verdict"].upper() in (folder / "alignlab-dpo-concise" / "README.md").read_text()
    with pytest.raises(AppError, match="owner/name"):
        client.predict(repo_id="not a repo", api_name="/export_model")
    archive, said = client.predict(repo_id="someone/alignlab-dpo", token="hf_not_real", api_name="/export_model")
    assert "Not pushed" in said and "offline" in said and Path(archive).is_file()


def test_export_dataset_is_a_folder_datasets_loads_with_its_card(app) -> None:
    import zipfile

    from datasets import load_dataset
    from huggingface_hub import DatasetCard

    client = Client(app[1], verbose=False)
    archive, said = client.predict(api_name="/export_dataset")  # the opening preset's pairs, as the tab shows them
    assert f"Saved **alignlab-{DEFAULT_PRESET}-pairs**" in said
    folder = Path(archive).parent / "unzipped"
    with zipfile.ZipFile(archive) as zipped:
        zipped.extractall(folder)
    folder /= f"alignlab-{DEFAULT_PRESET}-pairs"
    card = DatasetCard.load(folder / "README.md")
    assert card.data.license == "apache-2.0" and "dpo" in card.data.tags
    preset = load_preset(DEFAULT_PRESET)
    data = load_dataset(str(folder))
    assert data["train"].num_rows == len(preset.pairs) and data["test"].num_rows == len(preset.heldout_pairs)
    assert f"{len(preset.pairs)} pairs" in card.text
    archive, said = client.predict(
        repo_id="someone/pairs", token="hf_not_real", export_as="thumbs", api_name="/export_dataset"
    )
    assert f"alignlab-{DEFAULT_PRESET}-thumbs" in said and "Not pushed" in said and Path(archive).is_file()


def test_run_lab_returns_the_report_and_fills_the_session(app) -> None:
    demo, url = app
    client = Client(url, verbose=False)
    report = client.predict(preset="concise", steps=2, max_new_tokens=12, api_name="/run_lab")
    assert set(report) >= REPORT_KEYS
    assert report["settings"]["preset"] == "concise" and report["settings"]["steps_done"] == 2
    assert len(report["log_history"]) >= 2
    assert set(report["eval"]) >= EVAL_KEYS and not _has_nan(report)
    contrast = len(load_preset("concise").contrast_pairs)
    assert report["settings"]["contrast_pairs"] == contrast and report["eval"]["contrast_count"] == contrast
    assert report["eval"]["contrast_accuracy"] is not None
    assert [p["step"] for p in report["eval"]["heldout_curve"]] == [2]
    session = demo.session_store.peek(client.session_hash)
    assert session.report == report and session.trained.policy_dir.is_dir()


def test_run_lab_and_train_take_a_method(app) -> None:
    from alignlab.registry.methods import METHODS

    _, url = app
    client = Client(url, verbose=False)
    report = client.predict(preset="concise", steps=2, max_new_tokens=8, method="kto", api_name="/run_lab")
    assert report["settings"]["training"]["method"] == "kto" and not _has_nan(report)
    assert report["settings"]["training"]["beta"] == METHODS["kto"].defaults["beta"]  # left empty: the method's
    assert any("kl" in row for row in report["log_history"]) and report["health"]["verdict"]
    # every default of the method reaches the run through the whole lab: IPO's SFT term too
    report = client.predict(preset="concise", steps=1, max_new_tokens=4, method="ipo", api_name="/run_lab")
    training = report["settings"]["training"]
    assert (training["loss_type"], training["sft_weight"]) == ("ipo", METHODS["ipo"].defaults["sft_weight"])
    assert training["learning_rate"] == METHODS["ipo"].defaults["learning_rate"]
    assert report["eval"]["heldout_scorer"] == "mean_implicit_reward"
    *_, last = list(client.submit(steps=2, method="orpo", api_name="/train"))
    assert "Finished 2 of 2 steps" in last[0] and "log-odds ratio" in last[6]["headers"]


def test_session_files_are_deleted_when_the_session_ends(app) -> None:
    demo, url = app
    client = Client(url, verbose=False)
    client.predict(steps=1, max_new_tokens=8, api_name="/run_lab")
    directory = demo.session_store.peek(client.session_hash).directory
    assert (directory / "policy" / "config.json").is_file()
    demo.session_store.close(client.session_hash)  # what demo.unload and expiry call
    assert not directory.exists() and client.session_hash not in demo.session_store


def test_probes_follow_the_pairs_they_were_written_for(pairs) -> None:
    from alignlab.data.pairs import PreferencePair
    from alignlab.ui.dataset_tab import probes_of
    from alignlab.ui.service import probes_for

    preset = load_preset("seed-lab")
    probes = probes_of(preset)
    same = probes_for(preset.pairs, probes)
    assert same["preset"] == "seed-lab" and len(same["contrast_pairs"]) == len(preset.contrast_pairs)
    edited = [PreferencePair(preset.pairs[0].prompt, "Sure! A better answer. Hope that helps!", "No.")]
    edited += preset.pairs[1:]
    kept = probes_for(edited, probes)  # an edit of the preset: its probes still test the same preference
    assert kept["preset"] == "custom" and kept["contrast_pairs"] == same["contrast_pairs"]
    foreign = probes_for(pairs, probes)  # someone else's pairs (an API client's): no contrast, built-in capability
    assert foreign == {"preset": "custom", "contrast_pairs": [], "capability_pairs": [], "checked_questions": []}


def test_a_public_space_refuses_local_paths_before_loading_and_says_what_it_allows(
    app, tiny_chat_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from alignlab.models import loading
    from alignlab.ui.blocks import public_notice

    client = Client(app[1], verbose=False)
    visitors_policy = tmp_path / "someone" / "policy"
    shutil.copytree(tiny_chat_dir, visitors_policy)
    monkeypatch.setenv("ALIGNLAB_PUBLIC", "1")
    for field, call in (
        ("model", lambda: client.predict(str(visitors_policy), api_name="/load_model")),
        ("model", lambda: client.predict(model=str(visitors_policy), api_name="/run_lab")),
        ("recipe target", lambda: client.predict(target_model=str(visitors_policy), api_name="/export_recipe")),
    ):
        assert f"public Space: a local path as the {field} is refused" in error_of(call)
    assert not loading.is_loaded(str(visitors_policy))
    assert "Loaded" in client.predict(str(tiny_chat_dir), api_name="/load_model")  # the server's own default model
    notice = public_notice()
    assert "local paths are refused" in notice and "2 requests waiting" in notice and "16 per network address" in notice
    monkeypatch.setenv("ALIGNLAB_PUBLIC", "0")
    assert public_notice() == ""
    assert "Loaded" in client.predict(str(visitors_policy), api_name="/load_model")  # a private server loads it


def test_a_reports_remedy_is_train_parameters_and_compare_takes_a_judge(app) -> None:
    """Far too large a step breaks the tiny model's answers: the verdict names a remedy whose changes are /train
    parameters; trained with them and compared under the lab's reward model, the second run is the remedy."""
    client = Client(app[1], verbose=False)
    client.predict(max_new_tokens=16, api_name="/baseline")
    *_, last = list(client.submit(steps=80, learning_rate=1e-3, beta=0.01, api_name="/train"))
    assert "Finished 80 of 80 steps" in last[0]
    *_, health, _, first = client.predict(api_name="/compare")
    remedy = first["health"]["remedy"]
    assert first["health"]["verdict"] in ("warning", "failed") and remedy is not None, first["health"]
    assert "Remedy:" in health and remedy["because"] in health
    assert set(remedy["changes"]) <= {"learning_rate", "steps", "beta", "sft_weight"}
    *_, last = list(client.submit(**{"steps": 80, "beta": 0.01, **remedy["changes"]}, api_name="/train"))
    assert "Finished" in last[0]
    *_, second = client.predict(judge="lab_reward_model", api_name="/compare")
    training = second["settings"]["training"]
    assert all(training[name] == value for name, value in remedy["changes"].items())
    judge = second["eval"]["judge"]
    assert judge["source"] == "lab_reward_model" and judge["contrast_count"] == 14
    assert second["eval"]["win_count"] == 14 + second["eval"]["win_eval_count"]
