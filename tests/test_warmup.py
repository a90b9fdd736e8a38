"""The cold-start levers: a persistent Triton cache and the start-up warm-up."""

from __future__ import annotations

from alignlab import models
from alignlab.evaluation import weights_digest
from alignlab.warmup import warm_up


def test_kernel_cache_goes_under_the_alignlab_cache_unless_set(monkeypatch, tmp_path):
    monkeypatch.delenv("TRITON_CACHE_DIR", raising=False)
    monkeypatch.setenv("ALIGNLAB_CACHE", str(tmp_path))
    assert models.use_persistent_kernel_cache() == str(tmp_path / "triton")
    monkeypatch.setenv("TRITON_CACHE_DIR", "/somewhere/else")
    assert models.use_persistent_kernel_cache() == "/somewhere/else"  # an operator's choice wins


def test_warm_up_runs_the_lab_once_on_a_cpu_and_leaves_the_served_model_as_it_was(tiny_chat_dir):
    served = models.load_model(str(tiny_chat_dir), device="cpu")
    before = weights_digest(served.model)
    seconds = warm_up(str(tiny_chat_dir), device="cpu")
    assert set(seconds) == {"load", "generate", "train", "generate_trained", "total"}
    assert seconds["train"] > 0 and seconds["total"] >= seconds["train"]
    assert models.load_model(str(tiny_chat_dir), device="cpu") is served  # the model the app serves, from the cache
    assert weights_digest(served.model) == before  # the DPO step trained a copy
