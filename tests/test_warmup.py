"""The cold-start levers: a persistent Triton cache and the start-up warm-up."""

from __future__ import annotations

from alignlab.data.presets import load_preset
from alignlab.models import loading
from alignlab.models.logprobs import REFERENCE_SCORES, weights_digest
from alignlab.pipeline.steps import run_probe
from alignlab.pipeline.warmup import warm_up
from alignlab.registry.settings import TrainingSettings


def test_kernel_cache_goes_under_the_alignlab_cache_unless_set(monkeypatch, tmp_path):
    monkeypatch.delenv("TRITON_CACHE_DIR", raising=False)
    monkeypatch.setenv("ALIGNLAB_CACHE", str(tmp_path))
    assert loading.use_persistent_kernel_cache() == str(tmp_path / "triton")
    monkeypatch.setenv("TRITON_CACHE_DIR", "/somewhere/else")
    assert loading.use_persistent_kernel_cache() == "/somewhere/else"  # an operator's choice wins


def test_warm_up_runs_the_lab_once_on_a_cpu_and_leaves_the_served_model_as_it_was(tiny_chat_dir):
    served = loading.load_model(str(tiny_chat_dir), device="cpu")
    before = weights_digest(served.model)
    seconds = warm_up(str(tiny_chat_dir), device="cpu")
    assert set(seconds) == {"load", "generate", "train", "generate_trained", "total"}
    assert seconds["train"] > 0 and seconds["total"] >= seconds["train"]
    assert loading.load_model(str(tiny_chat_dir), device="cpu") is served  # the model the app serves, from the cache
    assert weights_digest(served.model) == before  # the DPO step trained a copy


def test_warm_up_scores_the_opening_presets_probe_pairs_before_the_first_run(tiny_chat_dir):
    preset = load_preset("seed-lab")
    served = loading.load_model(str(tiny_chat_dir), device="cpu")
    REFERENCE_SCORES.clear()
    seconds = warm_up(str(tiny_chat_dir), device="cpu", preset=preset)
    assert seconds["probe_reference"] > 0
    scored = REFERENCE_SCORES.misses
    rows = 2 * (len(preset.heldout_pairs) + len(preset.contrast_pairs) + len(preset.capability_pairs))
    assert scored >= rows > 0
    run_probe(served, preset, TrainingSettings())  # what a run on the preset builds first
    assert REFERENCE_SCORES.misses == scored  # nothing left to score
    assert REFERENCE_SCORES.hits >= rows
