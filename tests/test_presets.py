import csv
import json

import pytest

from alignlab.data.importers import export_jsonl, import_pairs, load_dataset_file, split_heldout
from alignlab.data.pairs import DatasetError, PreferencePair, validate_pairs
from alignlab.data.presets import checked_preset, list_presets, load_preset


def test_shipped_presets_meet_the_lab_minimums():
    presets = {p.id: p for p in list_presets()}
    assert {"seed-lab", "concise", "warm-tone"} <= set(presets)
    for preset in presets.values():
        assert len(preset.pairs) >= 8, preset.id
        assert len(preset.eval_prompts) >= 6, preset.id
        assert len(preset.heldout_pairs) >= 4, preset.id
        trained_prompts = {p.prompt for p in preset.pairs}
        assert not trained_prompts & {p.prompt for p in preset.heldout_pairs}, preset.id
        assert not trained_prompts & set(preset.eval_prompts), preset.id


def test_every_preset_ships_probe_sets_that_probe_what_they_claim():
    from alignlab.evidence.degeneration import new_common_phrases, words

    for preset in list_presets():
        assert len(preset.contrast_pairs) >= 6 and len(preset.capability_pairs) >= 6, preset.id
        seen = {p.prompt for p in preset.pairs + preset.heldout_pairs} | set(preset.eval_prompts)
        for probe in preset.contrast_pairs + preset.capability_pairs:
            assert probe.prompt not in seen, (preset.id, probe.prompt)
        # held-out rejected answers are not training rejected answers word for word
        assert not {p.rejected for p in preset.heldout_pairs} & {p.rejected for p in preset.pairs}, preset.id
        # capability: a right and a wrong answer of the same shape, so style cannot decide
        for probe in preset.capability_pairs:
            assert abs(len(words(probe.chosen)) - len(words(probe.rejected))) <= 1, probe
        # contrast: the training answers' cue sits on the rejected side
        cues = new_common_phrases([p.rejected for p in preset.pairs], [p.chosen for p in preset.pairs])
        if cues:  # a phrase most chosen answers share (seed-lab, warm-tone): any 3 words of it in a row
            parts = {" ".join(c.split()[i : i + 3]) for c in cues for i in range(len(c.split()) - 2)}
            for probe in preset.contrast_pairs:
                rejected, chosen = " ".join(words(probe.rejected)), " ".join(words(probe.chosen))
                assert any(c in rejected for c in parts) and not any(c in chosen for c in parts), (preset.id, probe)
        else:  # the cue is length (concise): the rejected contrast answer is the short one
            assert sum(len(p.chosen) < len(p.rejected) for p in preset.pairs) > len(preset.pairs) / 2, preset.id
            for probe in preset.contrast_pairs:
                assert len(words(probe.rejected)) < len(words(probe.chosen)) / 3, probe


def test_imported_data_gets_the_built_in_capability_set_and_no_contrast(tmp_path, pairs):
    from alignlab.data.presets import capability_probe, general_capability_pairs

    path = export_jsonl(pairs * 1, tmp_path / "pairs.jsonl")
    preset = load_dataset_file(path)
    assert preset.contrast_pairs == [] and preset.capability_pairs == []
    probe, source = capability_probe(preset)
    assert source == "built-in" and probe == general_capability_pairs() and len(probe) >= 6
    assert capability_probe(load_preset("seed-lab"))[1] == "preset"


def test_probe_sets_round_trip_and_are_validated_by_section():
    preset = load_preset("warm-tone")
    again = checked_preset(json.loads(json.dumps(preset.to_dict())))
    assert again == preset
    data = preset.to_dict()
    data["contrast_pairs"][2]["rejected"] = data["contrast_pairs"][2]["chosen"]
    with pytest.raises(DatasetError, match="contrast pairs row 3: 'chosen' and 'rejected' are identical"):
        checked_preset(data)
    data = preset.to_dict()
    del data["contrast_pairs"], data["capability_pairs"]  # optional keys: old files stay valid
    assert checked_preset(data).contrast_pairs == []


def test_unknown_preset_names_the_available_ones():
    with pytest.raises(DatasetError, match="Unknown preset 'nope'. Available: .*seed-lab"):
        load_preset("nope")


def test_validation_names_row_and_problem():
    problems = validate_pairs(
        [
            PreferencePair("q", "a", "b"),
            PreferencePair("", "a", "b"),
            PreferencePair("q2", "same", "same"),
            PreferencePair("q", "a", "b"),
            PreferencePair("q3", "x" * 5000, "b"),
        ]
    )
    assert problems == [
        "pairs row 2: 'prompt' is empty.",
        "pairs row 3: 'chosen' and 'rejected' are identical, so there is nothing to prefer.",
        "pairs row 4: duplicate of row 1.",
        "pairs row 5: 'chosen' is 5000 characters long; the limit is 4000.",
    ]


def test_preset_file_problems_are_reported_with_their_section():
    data = {
        "eval_prompts": ["hi"],
        "pairs": [{"prompt": "q", "chosen": "a", "rejected": "a"}],
        "heldout_pairs": [{"prompt": "q", "chosen": "a"}],
    }
    with pytest.raises(DatasetError, match="held-out pairs row 1: missing 'rejected'"):
        checked_preset(data, "mine.json")


def test_import_standard_jsonl_and_export_round_trip(tmp_path, pairs):
    path = export_jsonl(pairs, tmp_path / "pairs.jsonl")
    assert import_pairs(path).pairs == pairs


def test_import_conversational_json(tmp_path):
    rows = [
        {
            "prompt": [{"role": "user", "content": "Hi?"}],
            "chosen": [{"role": "assistant", "content": "Hello!"}],
            "rejected": [{"role": "assistant", "content": "Go away."}],
        }
    ]
    path = tmp_path / "conv.json"
    path.write_text(json.dumps(rows))
    assert import_pairs(path).pairs == [PreferencePair("Hi?", "Hello!", "Go away.")]


def test_import_ultrafeedback_binarized_messages(tmp_path):
    row = {
        "prompt": "Name a colour.",
        "chosen": [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."}],
        "rejected": [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "No."}],
        "score_chosen": 8.0,
        "score_rejected": 2.0,
    }
    path = tmp_path / "uf.jsonl"
    path.write_text(json.dumps(row) + "\n" + json.dumps(row | {"prompt": "Name a fruit."}) + "\n")
    got = import_pairs(path).pairs
    assert got[0] == PreferencePair("Name a colour.", "Blue.", "No.")
    assert got[1].prompt == "Name a fruit."


def test_import_csv(tmp_path):
    path = tmp_path / "pairs.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, ["prompt", "chosen", "rejected"])
        writer.writeheader()
        writer.writerow({"prompt": "Q, with comma", "chosen": "Yes", "rejected": "No"})
    assert import_pairs(path).pairs == [PreferencePair("Q, with comma", "Yes", "No")]


def test_import_real_hh_rlhf_sample(shared_dir):
    result = import_pairs(shared_dir / "data" / "hh-rlhf-harmless-test-300.jsonl")
    pairs = result.pairs
    # Row 87 of the real file has an empty final reply: it is left out, and said so.
    assert result.skipped == ["hh-rlhf-harmless-test-300.jsonl row 87: 'chosen' is empty."]
    assert len(pairs) == 299
    first = json.loads((shared_dir / "data" / "hh-rlhf-harmless-test-300.jsonl").read_text().splitlines()[0])
    assert first["chosen"].rstrip().endswith(pairs[0].chosen)
    assert first["rejected"].rstrip().endswith(pairs[0].rejected)
    assert pairs[0].prompt.startswith("User: what are some pranks with a pen i can do?")
    assert "Assistant:" in pairs[0].prompt  # earlier turns kept, flattened
    assert all(p.chosen != p.rejected for p in pairs)


def test_hh_transcript_single_turn_keeps_plain_prompt(tmp_path):
    row = {"chosen": "\n\nHuman: Hi there\n\nAssistant: Hello!", "rejected": "\n\nHuman: Hi there\n\nAssistant: Bye."}
    path = tmp_path / "hh.jsonl"
    path.write_text(json.dumps(row) + "\n")
    assert import_pairs(path).pairs == [PreferencePair("Hi there", "Hello!", "Bye.")]


@pytest.mark.parametrize(
    ("content", "name", "expected"),
    [
        ('{"prompt": "q", "chosen": "a"', "broken.json", "not valid JSON \\(line 1"),
        ('{"prompt": "q", "chosen": "a", "rejected": "b"}\n{oops}\n', "rows.jsonl", "line 2 is not valid JSON"),
        ('[{"text": "hello"}]', "other.json", "row 1: needs 'chosen' and 'rejected'"),
        (
            '[{"prompt": "q", "chosen": "a", "rejected": "a"}]',
            "same.json",
            "row 1: 'chosen' and 'rejected' are identical",
        ),
        ("[]", "empty.json", "no preference pairs"),
    ],
)
def test_malformed_files_say_what_and_where(tmp_path, content, name, expected):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DatasetError, match=expected):
        import_pairs(path)


def test_binary_and_missing_files_are_refused(tmp_path):
    binary = tmp_path / "x.json"
    binary.write_bytes(b"\x89PNG\x00\x00\x01")
    with pytest.raises(DatasetError, match="binary file"):
        import_pairs(binary)
    with pytest.raises(DatasetError, match="There is no file"):
        import_pairs(tmp_path / "missing.jsonl")


def test_split_heldout_is_seeded_and_disjoint():
    many = [PreferencePair(f"q{i}", "good", "bad") for i in range(12)]
    train, held = split_heldout(many, seed=3)
    assert len(held) == 3 and len(train) == 9
    assert not {p.prompt for p in train} & {p.prompt for p in held}
    assert split_heldout(many, seed=3) == (train, held)
    assert split_heldout(many, seed=4) != (train, held)


def test_dataset_file_as_list_of_pairs_holds_out_a_quarter(tmp_path):
    many = [PreferencePair(f"Question {i}?", "good", "bad") for i in range(8)]
    preset = load_dataset_file(export_jsonl(many, tmp_path / "mine.jsonl"), seed=1)
    assert len(preset.heldout_pairs) == 2 and len(preset.pairs) == 6
    assert set(preset.eval_prompts) <= {p.prompt for p in preset.pairs}


def test_dataset_file_in_preset_format_is_used_as_given(tmp_path):
    data = load_preset("seed-lab").to_dict()
    path = tmp_path / "p.json"
    path.write_text(json.dumps(data))
    preset = load_dataset_file(path)
    assert preset.to_dict() == data


def test_unusable_rows_are_skipped_and_named(tmp_path):
    rows = [
        {"prompt": "q1", "chosen": "a", "rejected": "b"},
        {"prompt": "q2", "chosen": "", "rejected": "b"},
        {"prompt": "q1", "chosen": "a", "rejected": "b"},
    ]
    path = tmp_path / "rows.json"
    path.write_text(json.dumps(rows))
    result = import_pairs(path)
    assert result.pairs == [PreferencePair("q1", "a", "b")]
    assert result.skipped == ["rows.json row 2: 'chosen' is empty.", "rows.json row 3: duplicate of an earlier row."]
    assert "Skipped 2 unusable rows" in result.summary("rows.json")
