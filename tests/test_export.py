"""The aligned model taken home: a folder transformers loads as it is, a card the Hub parses, a push that fails
plainly offline and keeps the folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from transformers import AutoModelForCausalLM

from alignlab.cli import main
from alignlab.models.generation import generate_baseline
from alignlab.models.loading import load_model
from alignlab.registry.settings import GenerationSettings
from alignlab.takehome.export import EMBEDDED_NOTE, ExportError, check_repo_id, model_card, push_folder


@pytest.fixture(scope="module")
def saved(tiny_chat_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A CLI lab on the tiny model with --save-model: (the folder, the report)."""
    root = tmp_path_factory.mktemp("saved")
    folder, out = root / "model", root / "report.json"
    args = ["lab", "--model", str(tiny_chat_dir), "--preset", "concise", "--steps", "3", "--lr", "1e-3"]
    assert main([*args, "--max-new-tokens", "8", "--out", str(out), "--save-model", str(folder)]) == 0
    return folder, json.loads(out.read_text())


def test_the_saved_folder_loads_as_it_is_and_answers_as_the_lab_saw(saved) -> None:
    folder, report = saved
    names = {path.name for path in folder.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "README.md", "curves.png"} <= names
    assert "tokenizer.json" in names and any(n.startswith("chat_template") for n in names)
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert model.num_parameters() == report["model"]["parameters"]
    loaded = load_model(str(folder))
    assert loaded.is_chat  # the chat template travelled with the tokenizer
    prompts = [row["prompt"] for row in report["aligned_outputs"]]
    answers = generate_baseline(loaded, prompts, GenerationSettings(max_new_tokens=8))
    assert answers == [row["text"] for row in report["aligned_outputs"]]


def test_the_card_is_hub_front_matter_with_the_evidence(saved) -> None:
    folder, report = saved
    card = ModelCard.load(folder / "README.md")
    assert {"trl", "dpo", "alignlab"} <= set(card.data.tags) and card.data.library_name == "transformers"
    assert card.data.base_model is None  # a local path is not a Hub id
    text = card.text
    assert "aligned with DPO" in text and f"## Verdict: {report['health']['verdict'].upper()}" in text
    assert "Held-out pairs: " in text and f"/{report['eval']['heldout_count']} (" in text
    assert all(f"`{code}`" in text for code in report["health"]["codes"])
    assert "![Training loss" in text and (folder / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert report["aligned_outputs"][0]["prompt"] in text


@pytest.mark.slow
def test_the_embedded_models_card_says_what_its_base_is(embedded_runs) -> None:
    from bench.calibration import GUARDS

    card = ModelCard(model_card(embedded_runs(GUARDS[0])))
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct" and card.data.license == "apache-2.0"
    assert EMBEDDED_NOTE in card.text and "GGUF" in card.text


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--push-to", "not a repo"], "is not owner/name"),
        (["--push-to", "me/model"], "needs a Hugging Face token"),
    ],
)
def test_save_and_push_are_checked_before_any_work(capsys, tmp_path, extra, message, monkeypatch) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    args = ["lab", "--preset", "concise", "--save-model", str(tmp_path / "new"), *extra]
    assert main(args) == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_a_folder_that_is_not_empty_is_kept_unless_overwriting(capsys, tmp_path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["lab", "--preset", "concise", "--save-model", str(tmp_path)]) == 2
    assert "exists and is not empty" in capsys.readouterr().err and (tmp_path / "notes.txt").read_text() == "mine"


def test_a_push_offline_says_so_and_keeps_the_folder(saved) -> None:
    folder, _ = saved
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    with pytest.raises(ExportError, match="offline"):
        push_folder(folder, "someone/alignlab-dpo", token="hf_not_a_real_token")
    with pytest.raises(ExportError, match="token"):
        push_folder(folder, "someone/alignlab-dpo", token=None)
    assert (folder / "model.safetensors").is_file()
    with pytest.raises(ExportError, match="owner/name"):
        check_repo_id("someone/alignlab dpo")


def test_a_lora_run_saves_its_adapter_beside_the_merged_weights(tiny_chat_dir: Path, tmp_path: Path) -> None:
    from peft import PeftModel

    from alignlab.models.loading import LoadedModel

    folder, out = tmp_path / "lora", tmp_path / "report.json"
    args = ["lab", "--model", str(tiny_chat_dir), "--preset", "concise", "--steps", "2", "--lr", "1e-3", "--lora"]
    assert main([*args, "--max-new-tokens", "8", "--out", str(out), "--save-model", str(folder)]) == 0
    report = json.loads(out.read_text())
    assert report["changed"] > 0  # the adapter moved the answers: the base alone would not give them
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in (folder / "adapter").iterdir()}
    base = AutoModelForCausalLM.from_pretrained(tiny_chat_dir)
    adapted = PeftModel.from_pretrained(base, folder / "adapter").merge_and_unload().eval()
    loaded = LoadedModel(str(folder), adapted, load_model(str(folder)).tokenizer, str(folder))
    prompts = [row["prompt"] for row in report["aligned_outputs"]]
    answers = generate_baseline(loaded, prompts, GenerationSettings(max_new_tokens=8))
    assert answers == [row["text"] for row in report["aligned_outputs"]]  # the adapter is the run's, not another
    assert "the adapter alone is in `adapter/`" in (folder / "README.md").read_text()
