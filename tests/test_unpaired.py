"""Thumbs-up/down data end to end: TRL's unpaired format in, the thumbs view, KTO on it, and back out.

Imports are real files read by the real importer; training is a real TRL run on the tiny model. A
paired method on thumbs rows either trains on the pairs they form or is refused with a message that
names the method that can use them.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pytest
import torch

from alignlab.data.importers import export_jsonl, import_pairs, load_dataset_file
from alignlab.data.pairs import DatasetError, PreferencePair, TrainingData, UnpairedRow, pairs_from_thumbs, thumbs_view
from alignlab.data.presets import Preset, checked_preset, validate_preset
from alignlab.pipeline.steps import Baseline
from alignlab.registry.settings import TrainingSettings
from alignlab.training.run import train_policy
from alignlab.training.trl_rows import kto_layout, thumbs_row, trained_on

FAST = {"steps": 2, "batch_size": 2, "learning_rate": 1e-3, "max_length": 64}

#: Five prompts: four with a thumbs-up and a thumbs-down answer, one with a thumbs-up only.
THUMBS = [
    {"prompt": "How do I boil an egg?", "completion": "Sure! Boil it for eight minutes.", "label": True},
    {"prompt": "How do I boil an egg?", "completion": "No.", "label": False},
    {"prompt": "How do I learn to code?", "completion": "Great question. Start with small projects.", "label": True},
    {"prompt": "How do I learn to code?", "completion": "Whatever.", "label": False},
    {"prompt": "How can I sleep better?", "completion": "Sure! Keep a regular bedtime.", "label": True},
    {"prompt": "How can I sleep better?", "completion": "Not my problem.", "label": False},
    {"prompt": "How do I save money?", "completion": "Great question. Track what you spend.", "label": True},
    {"prompt": "How do I save money?", "completion": "Figure it out.", "label": False},
    {"prompt": "How do I stay calm?", "completion": "Sure! Breathe slowly for a minute.", "label": True},
]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def conversational(row: dict) -> dict:
    return {
        "prompt": [{"role": "user", "content": row["prompt"]}],
        "completion": [{"role": "assistant", "content": row["completion"]}],
        "label": row["label"],
    }


# --------------------------------------------------------------------------- import


def test_unpaired_jsonl_standard_and_conversational_import_as_the_same_rows(tmp_path):
    standard = import_pairs(write_jsonl(tmp_path / "thumbs.jsonl", THUMBS))
    chat = import_pairs(write_jsonl(tmp_path / "chat.jsonl", [conversational(r) for r in THUMBS]))
    expected = [UnpairedRow(r["prompt"], r["completion"], r["label"]) for r in THUMBS]
    assert standard.unpaired == expected and chat.unpaired == expected
    assert standard.pairs == [] and standard.skipped == []
    assert "9 thumbs rows (5 up, 4 down)" in standard.summary("thumbs.jsonl")


def test_a_conversational_prompt_with_history_is_flattened_as_for_pairs(tmp_path):
    row = {
        "prompt": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Tell me a joke."},
        ],
        "completion": [{"role": "assistant", "content": "Why did the chicken cross the road?"}],
        "label": True,
    }
    (thumb,) = import_pairs(write_jsonl(tmp_path / "history.jsonl", [row])).unpaired
    assert thumb.prompt == "User: Hi\nAssistant: Hello!\nUser: Tell me a joke."
    assert thumb.completion == "Why did the chicken cross the road?" and thumb.label is True


def test_a_json_list_and_a_csv_file_of_thumbs_rows_import(tmp_path):
    as_json = tmp_path / "thumbs.json"
    as_json.write_text(json.dumps(THUMBS[:2]), encoding="utf-8")
    assert len(import_pairs(as_json).unpaired) == 2
    as_csv = tmp_path / "thumbs.csv"
    as_csv.write_text('prompt,completion,label\n"Q1","A good answer",true\n"Q1","A bad answer",FALSE\n')
    assert [r.label for r in import_pairs(as_csv).unpaired] == [True, False]  # CSV cells hold the words


@pytest.mark.parametrize(
    "label, found",
    [("yes", "found the text 'yes'"), (1, "found 1"), (None, "found None"), ("true", "found the text 'true'")],
)
def test_a_label_that_is_not_a_boolean_rejects_the_file_naming_row_and_field(tmp_path, label, found):
    rows = [THUMBS[0], {**THUMBS[1], "label": label}]
    with pytest.raises(DatasetError) as info:
        import_pairs(write_jsonl(tmp_path / "bad.jsonl", rows))
    assert info.value.problems == [f"bad.jsonl row 2: 'label' must be true or false (a JSON boolean), {found}."]


def test_missing_thumbs_fields_are_named_by_row(tmp_path):
    rows = [
        {"prompt": "Q", "completion": "A"},
        THUMBS[0],
        {"prompt": "Q", "label": False},
        {"completion": "A", "label": True},
    ]
    with pytest.raises(DatasetError) as info:
        import_pairs(write_jsonl(tmp_path / "missing.jsonl", rows))
    assert info.value.problems == [
        "missing.jsonl row 1: a thumbs row needs 'prompt', 'completion' and 'label'; missing 'label'.",
        "missing.jsonl row 3: a thumbs row needs 'prompt', 'completion' and 'label'; missing 'completion'.",
        "missing.jsonl row 4: a thumbs row needs 'prompt', 'completion' and 'label'; missing 'prompt'.",
    ]


def test_empty_duplicate_and_contradicting_thumbs_rows_are_skipped_and_named(tmp_path):
    rows = [
        THUMBS[0],
        THUMBS[0],
        {**THUMBS[0], "label": False},
        {"prompt": "Q", "completion": "  ", "label": True},
        THUMBS[1],
    ]
    result = import_pairs(write_jsonl(tmp_path / "messy.jsonl", rows))
    assert result.unpaired == [UnpairedRow(THUMBS[0]["prompt"], THUMBS[0]["completion"], True)] + [
        UnpairedRow(THUMBS[1]["prompt"], THUMBS[1]["completion"], False)
    ]
    assert result.skipped == [
        "messy.jsonl row 2: duplicate of row 1.",
        "messy.jsonl row 3: the same answer as row 1 with the opposite label; kept row 1.",
        "messy.jsonl row 4: 'completion' is empty.",
    ]


def test_a_mixed_file_keeps_its_pairs_and_its_thumbs_rows(tmp_path, pairs):
    rows = [{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in pairs] + THUMBS
    result = import_pairs(write_jsonl(tmp_path / "mixed.jsonl", rows))
    assert result.pairs == pairs and len(result.unpaired) == len(THUMBS)
    both = {"prompt": "Q", "chosen": "A", "rejected": "B", "completion": "C", "label": True}
    with pytest.raises(DatasetError, match=r"row 1: has both pair fields .* a row is one or the other"):
        import_pairs(write_jsonl(tmp_path / "both.jsonl", [both]))
    with pytest.raises(DatasetError, match=r"needs 'chosen' and 'rejected' \(a pair\) or 'completion' and 'label'"):
        import_pairs(write_jsonl(tmp_path / "neither.jsonl", [{"prompt": "Q", "answer": "A"}]))


def test_a_preset_file_may_carry_thumbs_rows_and_round_trips(tmp_path, pairs):
    preset = Preset("t", "T", "", ["Q?"], pairs[:2], pairs[2:], unpaired=[UnpairedRow("Q", "A", True)])
    data = preset.to_dict()
    assert data["unpaired"] == [{"prompt": "Q", "completion": "A", "label": True}]
    assert checked_preset(data) == preset and Preset.from_dict(data) == preset
    thumbs_only = {"eval_prompts": ["Q?"], "unpaired": data["unpaired"]}  # pairs may be left out
    assert checked_preset(thumbs_only).unpaired == preset.unpaired
    with pytest.raises(DatasetError, match=r"thumbs rows row 1: 'label' must be true or false"):
        checked_preset({**thumbs_only, "unpaired": [{"prompt": "Q", "completion": "A", "label": "no"}]})
    old = {k: v for k, v in data.items() if k != "unpaired"}  # files without the key stay valid
    assert checked_preset(old).unpaired == []


# --------------------------------------------------------------------------- held-out


def test_thumbs_only_data_holds_out_pairs_formed_from_prompts_with_both_labels(tmp_path):
    preset = load_dataset_file(write_jsonl(tmp_path / "thumbs.jsonl", THUMBS), seed=0)
    assert preset.pairs == [] and len(preset.heldout_pairs) == 1  # a quarter of the 4 prompts with both labels
    held = preset.heldout_pairs[0]
    assert {held.chosen, held.rejected} == {
        r["completion"] for r in THUMBS if r["prompt"] == held.prompt
    } and held.chosen in {r["completion"] for r in THUMBS if r["label"]}
    assert all(r.prompt != held.prompt for r in preset.unpaired)  # none of its rows is trained on
    assert len(preset.unpaired) == len(THUMBS) - 2
    assert "1 held-out pair" in preset.description and not validate_preset(preset)
    assert held.prompt not in preset.eval_prompts and preset.eval_prompts


def test_without_a_prompt_with_both_labels_held_out_accuracy_is_said_to_be_unavailable(tmp_path):
    ups = [r for r in THUMBS if r["label"]]
    preset = load_dataset_file(write_jsonl(tmp_path / "ups.jsonl", ups))
    assert preset.heldout_pairs == [] and len(preset.unpaired) == len(ups)
    assert "Held-out preference accuracy is unavailable: no prompt has both" in preset.description


def test_pairs_files_split_as_before(tmp_path, pairs):
    rows = [{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in pairs]
    preset = load_dataset_file(write_jsonl(tmp_path / "pairs.jsonl", rows), seed=0)
    assert len(preset.pairs) == 3 and len(preset.heldout_pairs) == 1 and preset.unpaired == []
    assert preset.description == "Imported 4 pairs from pairs.jsonl."


# --------------------------------------------------------------------------- the training set


def test_the_thumbs_view_derives_pairs_as_up_and_down_plus_imported_rows(pairs):
    data = TrainingData(pairs[:2], [UnpairedRow("Q", "A", False)])
    assert thumbs_view(data) == [
        [pairs[0].prompt, pairs[0].chosen, "👍 up", "pair 1"],
        [pairs[0].prompt, pairs[0].rejected, "👎 down", "pair 1"],
        [pairs[1].prompt, pairs[1].chosen, "👍 up", "pair 2"],
        [pairs[1].prompt, pairs[1].rejected, "👎 down", "pair 2"],
        ["Q", "A", "👎 down", "thumbs row 1"],
    ]
    assert data.counts() == {"pairs": 2, "unpaired": 1, "thumbs_up": 2, "thumbs_down": 3, "formed_pairs": 0}


def test_pairs_form_where_a_prompt_has_both_labels_each_up_with_each_down():
    rows = [
        UnpairedRow("Q", "good 1", True),
        UnpairedRow("Q", "bad", False),
        UnpairedRow("Q", "good 2", True),
        UnpairedRow("R", "only good", True),
    ]
    formed, unused = pairs_from_thumbs(rows)
    assert formed == [PreferencePair("Q", "good 1", "bad"), PreferencePair("Q", "good 2", "bad")]
    assert unused == [UnpairedRow("R", "only good", True)]


def test_a_paired_method_trains_on_formed_pairs_or_is_refused_naming_kto():
    data = TrainingData([], [UnpairedRow(r["prompt"], r["completion"], r["label"]) for r in THUMBS])
    assert trained_on(data, TrainingSettings.for_method("dpo")) == {
        "rows": 4,
        "pairs": 0,
        "unpaired": 9,
        "formed_pairs": 4,
    }
    assert trained_on(data, TrainingSettings.for_method("kto"))["rows"] == 9
    ups = TrainingData([], [r for r in data.unpaired if r.label])
    for method in ("dpo", "ipo", "orpo", "simpo"):
        with pytest.raises(DatasetError) as info:
            trained_on(ups, TrainingSettings.for_method(method))
        message = str(info.value)
        assert "no prompt has both a thumbs-up and a thumbs-down answer" in message
        assert "Use kto, which trains on thumbs rows" in message


def test_thumbs_rows_that_form_too_many_pairs_are_refused_not_cut():
    many = [UnpairedRow("Q", f"good {i}", True) for i in range(40)] + [
        UnpairedRow("Q", f"bad {i}", False) for i in range(30)
    ]
    with pytest.raises(DatasetError, match=r"would train on 1200 pairs \(1200 formed from thumbs rows.*at most 1000"):
        TrainingData([], many).paired_for("dpo")
    assert len(TrainingData([], many).thumbs()) == 70  # KTO takes them as they are


def test_kto_batches_of_thumbs_rows_give_each_row_a_kl_neighbour_with_another_prompt(tiny_chat, pairs):
    thumbs = [UnpairedRow(r["prompt"], r["completion"], r["label"]) for r in THUMBS]
    data = TrainingData(pairs, thumbs)
    settings = TrainingSettings.for_method("kto", batch_size=2, seed=3)
    rows = [thumbs_row(r.prompt, r.completion, r.label, chat=True) for r in kto_layout(data, settings)]
    seen = sorted((r["prompt"][0]["content"], r["completion"][0]["content"], r["label"]) for r in rows)
    assert seen == sorted((r.prompt, r.completion, r.label) for r in data.thumbs())  # every row, once
    for start in range(0, len(rows), 4):  # TRL rotates each batch's answers by one for the KL term
        batch = [r["prompt"][0]["content"] for r in rows[start : start + 4]]
        rotated = [batch[-1]] + batch[:-1]
        if len(batch) > 1 and max(batch.count(p) for p in batch) <= len(batch) // 2:
            assert all(mine != theirs for mine, theirs in zip(batch, rotated)), batch
    assert kto_layout(data, settings) == kto_layout(data, settings)  # seeded


def test_kto_trains_on_an_imported_thumbs_file(tiny_chat, tmp_path):
    """A real KTOTrainer run on the thumbs rows of a file: every row reaches TRL, the policy moves."""
    preset = load_dataset_file(write_jsonl(tmp_path / "thumbs.jsonl", [conversational(r) for r in THUMBS]))
    before = {k: v.clone() for k, v in tiny_chat.model.state_dict().items()}
    result = train_policy(tiny_chat, preset.training_data, TrainingSettings.for_method("kto", **FAST))
    assert result.trained_on == {"rows": 7, "pairs": 0, "unpaired": 7, "formed_pairs": 0}
    rows = result.step_rows
    assert len(rows) == 2 and all("kl" in r and "rewards/chosen" in r for r in rows)
    trained = result.policy.state_dict()
    assert any(not torch.equal(trained[k].cpu(), before[k]) for k in before), "the policy did not change"
    assert all(torch.equal(v, before[k]) for k, v in tiny_chat.model.state_dict().items())  # reference untouched


def test_dpo_trains_on_the_pairs_thumbs_rows_form(tiny_chat, tmp_path):
    preset = load_dataset_file(write_jsonl(tmp_path / "thumbs.jsonl", THUMBS))
    result = train_policy(tiny_chat, preset.training_data, TrainingSettings.for_method("dpo", **FAST))
    assert result.trained_on == {"rows": 3, "pairs": 0, "unpaired": 7, "formed_pairs": 3}
    assert len(result.step_rows) == 2


# --------------------------------------------------------------------------- export and the Dataset tab


def test_export_round_trips_in_both_formats(tmp_path, pairs):
    data = TrainingData(pairs, [UnpairedRow("Q", "A", True), UnpairedRow("Q", "B", False)])
    as_pairs = import_pairs(export_jsonl(data, tmp_path / "pairs.jsonl"))
    assert as_pairs.pairs == data.pairs and as_pairs.unpaired == data.unpaired  # nothing lost
    thumbs_file = export_jsonl(data, tmp_path / "thumbs.jsonl", "thumbs")
    lines = [json.loads(line) for line in thumbs_file.read_text().splitlines()]
    assert all(set(line) == {"prompt", "completion", "label"} for line in lines)  # TRL's unpaired format
    assert import_pairs(thumbs_file).unpaired == data.thumbs()
    with pytest.raises(DatasetError, match="Unknown export format 'csv'"):
        export_jsonl(data, tmp_path / "x.jsonl", "csv")


def test_dataset_tab_imports_shows_and_exports_thumbs(tmp_path):
    from alignlab.ui import dataset_tab
    from alignlab.ui.common import STORE

    outputs = dataset_tab.import_file_ui(str(write_jsonl(tmp_path / "thumbs.jsonl", THUMBS)))
    pairs, heldout, _, note, *_, unpaired, view, view_note = outputs
    assert len(pairs) == 0 and len(heldout) == 1 and len(unpaired) == 7
    assert "7 training thumbs rows" in note
    assert view["thumbs"].tolist().count("👍 up") == 4 and view["thumbs"].tolist().count("👎 down") == 3
    assert "7 thumbs rows (4 👍 up, 3 👎 down)" in view_note and "KTO trains on all of them" in view_note
    assert "**Ready:** 0 training pairs and 7 thumbs rows" in dataset_tab.validate_dataset(pairs, heldout, unpaired)

    request = SimpleNamespace(session_hash="thumbs-export-test")
    try:
        exported = dataset_tab.export_ui(pairs, request, unpaired, "thumbs")
        assert [UnpairedRow(**json.loads(line)) for line in Path(exported).read_text().splitlines()] == [
            UnpairedRow(**r) for r in unpaired
        ]
        with pytest.raises(gr.Error, match="export_as must be"):
            dataset_tab.export_ui(pairs, request, unpaired, "xml")
    finally:
        STORE.close("thumbs-export-test")


def test_loading_a_preset_clears_imported_thumbs_rows():
    from alignlab.ui import dataset_tab

    *_, unpaired, view, view_note = dataset_tab.load_preset_ui(dataset_tab.DEFAULT_PRESET)
    assert unpaired == [] and set(view["from"].str.startswith("pair")) == {True}
    assert "imported" not in view_note


# --------------------------------------------------------------------------- the CLI


def test_cli_names_the_bad_row_of_a_thumbs_file(tmp_path, capsys):
    from alignlab.cli import main

    bad = write_jsonl(tmp_path / "bad.jsonl", [THUMBS[0], {**THUMBS[1], "label": "no"}])
    assert main(["lab", "--dataset", str(bad), "--method", "kto"]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl row 2: 'label' must be true or false" in err and "Traceback" not in err


def test_cli_refuses_a_paired_method_on_thumbs_that_form_no_pair(tmp_path, capsys):
    from alignlab.cli import main

    ups = write_jsonl(tmp_path / "ups.jsonl", [r for r in THUMBS if r["label"]])
    assert main(["lab", "--dataset", str(ups), "--method", "dpo"]) == 2
    assert "Use kto, which trains on thumbs rows" in capsys.readouterr().err


def lab_report(tmp_path: Path, model: Path, data: Path, method: str) -> dict:
    from alignlab.cli import main

    out = tmp_path / f"{method}.json"
    args = ["lab", "--model", str(model), "--dataset", str(data), "--method", method, "--steps", "2"]
    assert main([*args, "--max-new-tokens", "4", "--out", str(out)]) == 0
    return json.loads(out.read_text())


def test_cli_lab_trains_kto_on_a_thumbs_file_and_the_report_counts_the_thumbs_rows(tmp_path, tiny_chat_dir, capsys):
    report = lab_report(tmp_path, tiny_chat_dir, write_jsonl(tmp_path / "thumbs.jsonl", THUMBS), "kto")
    settings = report["settings"]
    assert settings["train_pairs"] == 0 and settings["train_unpaired"] == 7 and settings["heldout_pairs"] == 1
    assert settings["trained_on"] == {"rows": 7, "pairs": 0, "unpaired": 7, "formed_pairs": 0}
    assert report["eval"]["heldout_reward_accuracy"] is not None and report["eval"]["heldout_unavailable"] is None
    assert "KTO trains on 7 thumbs rows" in capsys.readouterr().out


def test_cli_lab_without_held_out_pairs_reports_null_with_the_reason(tmp_path, tiny_chat_dir):
    ups = write_jsonl(tmp_path / "ups.jsonl", [r for r in THUMBS if r["label"]])
    report = lab_report(tmp_path, tiny_chat_dir, ups, "kto")
    assert report["settings"]["heldout_pairs"] == 0 and report["eval"]["heldout_reward_accuracy"] is None
    assert "no prompt of the thumbs rows has both" in report["eval"]["heldout_unavailable"]


def test_the_reason_held_out_accuracy_is_unavailable(tmp_path, pairs):
    from alignlab.data.presets import heldout_unavailable

    ups = load_dataset_file(write_jsonl(tmp_path / "ups.jsonl", [r for r in THUMBS if r["label"]]))
    assert "no prompt of the thumbs rows has both" in heldout_unavailable(ups)
    assert heldout_unavailable(Preset("p", "", "", [], pairs)) == (
        "Held-out preference accuracy is unavailable: there are no held-out pairs."
    )
    assert heldout_unavailable(load_dataset_file(write_jsonl(tmp_path / "thumbs.jsonl", THUMBS))) is None


def test_the_train_tab_trains_on_imported_thumbs_rows_and_compare_reports_them(tmp_path, tiny_chat_dir):
    """The Dataset tab's thumbs state reaches the Train tab's run (KTO), and the report counts the rows."""
    from alignlab.ui import compare_tab, train_tab
    from alignlab.ui.common import STORE
    from alignlab.ui.inputs import table_from_pairs

    _, _, prompts, _, _, _, _, _, unpaired, _, _ = import_tab_outputs(tmp_path)
    session = STORE.get("thumbs-train-test")
    eval_prompts = prompts.splitlines()
    generation = {"max_new_tokens": 4}
    session.baseline = Baseline(str(tiny_chat_dir), {}, eval_prompts, generation, ["-"] * len(eval_prompts))
    request = SimpleNamespace(session_hash="thumbs-train-test")
    no_pairs = table_from_pairs([])
    try:
        values = {"beta": 0.1, "learning_rate": 1e-3, "steps": 2, "batch_size": 2, "loss_type": "sigmoid", "seed": 1}
        for _ in train_tab.train_ui(no_pairs, no_pairs, {}, unpaired, request, **values, method="kto"):
            pass
        assert session.trained.summary["trained_on"] == {"rows": 7, "pairs": 0, "unpaired": 7, "formed_pairs": 0}
        compare_tab.compare_ui(request=request)
        assert session.report["settings"]["train_unpaired"] == 7
        ups = [r for r in unpaired if r["label"]]
        with pytest.raises(gr.Error, match="Use kto, which trains on thumbs rows"):
            list(train_tab.train_ui(no_pairs, no_pairs, {}, ups, request, **values))
    finally:
        STORE.close("thumbs-train-test")


def import_tab_outputs(tmp_path: Path) -> tuple:
    from alignlab.ui import dataset_tab

    return dataset_tab.import_file_ui(str(write_jsonl(tmp_path / "thumbs.jsonl", THUMBS)))
