"""The cold-start levers: a persistent Triton cache and the start-up warm-up (a no-op off a GPU)."""

from __future__ import annotations

from alignlab import models
from alignlab.warmup import warm_up


def test_kernel_cache_goes_under_the_alignlab_cache_unless_set(monkeypatch, tmp_path):
    monkeypatch.delenv("TRITON_CACHE_DIR", raising=False)
    monkeypatch.setenv("ALIGNLAB_CACHE", str(tmp_path))
    assert models.use_persistent_kernel_cache() == str(tmp_path / "triton")
    monkeypatch.setenv("TRITON_CACHE_DIR", "/somewhere/else")
    assert models.use_persistent_kernel_cache() == "/somewhere/else"  # an operator's choice wins


def test_warm_up_does_nothing_off_a_gpu(monkeypatch):
    def no_loading(*args, **kwargs):
        raise AssertionError("warm_up must not load a model on a CPU")

    monkeypatch.setattr("alignlab.warmup.load_model", no_loading)
    assert warm_up("smollm2-135m-instruct", device="cpu") == {}
