"""A result computed once: kept in memory, written whole to the AlignLab cache, read back by the next process."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from alignlab.models.disk_cache import JSON, TENSOR, DiskCache, cache_root


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ALIGNLAB_CACHE", str(tmp_path))
    return tmp_path


def _counted(value: Any) -> tuple[Callable[[], Any], list[int]]:
    """A computation that records each time it runs."""
    calls = []

    def compute() -> Any:
        calls.append(1)
        return value

    return compute, calls


def _list_of(n: int) -> Callable[[Any], bool]:
    """The check the question and judge caches make: a kept list of the length asked for."""
    return lambda value: isinstance(value, list) and len(value) == n


def test_a_value_is_computed_once_written_once_and_read_back_unchanged(root: Path) -> None:
    cache = DiskCache("answers", JSON)
    compute, calls = _counted(["a", "b"])
    fits = _list_of(2)
    assert cache.get("k", compute, fits) == ["a", "b"]
    stored = root / "answers" / "k.json"
    assert cache_root() == root and cache.path("k") == stored
    assert json.loads(stored.read_text(encoding="utf-8")) == ["a", "b"]
    written = (stored.read_bytes(), stored.stat().st_mtime_ns)
    assert cache.get("k", compute, fits) == ["a", "b"] and len(calls) == 1  # from memory
    cache.memory.clear()  # as a new process would: the file is read, not recomputed nor rewritten
    assert cache.get("k", compute, fits) == ["a", "b"] and len(calls) == 1
    assert (stored.read_bytes(), stored.stat().st_mtime_ns) == written
    assert [p.name for p in stored.parent.iterdir()] == ["k.json"]  # no partial file left behind


def test_a_damaged_or_unfitting_file_is_computed_again_and_rewritten(root: Path) -> None:
    cache = DiskCache("answers", JSON)
    stored = cache.path("k")
    stored.parent.mkdir(parents=True)
    stored.write_text("[not json", encoding="utf-8")
    compute, calls = _counted(["fresh"])
    fits = _list_of(1)
    assert cache.get("k", compute, fits) == ["fresh"] and len(calls) == 1
    assert json.loads(stored.read_text(encoding="utf-8")) == ["fresh"]
    stored.write_text(json.dumps(["one", "too many"]), encoding="utf-8")
    cache.memory.clear()
    assert cache.get("k", compute, fits) == ["fresh"] and len(calls) == 2  # the kept value does not fit the ask


def test_an_unwritable_cache_still_returns_the_value(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("", encoding="utf-8")
    monkeypatch.setenv("ALIGNLAB_CACHE", str(blocked))  # a file where the folder should be
    cache = DiskCache("answers", JSON)
    compute, calls = _counted([1])
    assert cache.get("k", compute, lambda value: value == [1]) == [1]
    assert cache.get("k", compute, lambda value: value == [1]) == [1] and len(calls) == 1  # kept in memory


def test_tensors_are_kept_as_tensor_files(root: Path) -> None:
    cache = DiskCache("states", TENSOR)
    states = torch.arange(6.0).reshape(3, 2)
    compute, calls = _counted(states)
    fits = lambda value: isinstance(value, torch.Tensor) and value.shape[0] == 3  # noqa: E731 - the judge's check
    assert cache.get("k", compute, fits) is states
    assert cache.path("k") == root / "states" / "k.pt"
    cache.memory.clear()
    assert torch.equal(cache.get("k", compute, fits), states) and len(calls) == 1
    assert torch.equal(torch.load(cache.path("k"), weights_only=True), states)
