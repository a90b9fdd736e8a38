"""Results computed once and kept: in memory for this process, and on disk under the AlignLab cache for the next.

Some results depend only on the model and fixed inputs (the original model's answers to the checked questions,
its answers to the judged prompts, the pooled states of a pair's answers). A :class:`DiskCache` keeps each under
a key that names everything it depends on (:func:`alignlab.models.loading.model_key`), so that a CLI run, the app and a
forked GPU worker compute it once. A file is written whole or not at all (a temporary file renamed over it), so a
process that reads it never sees half of one; a file that cannot be read, or does not fit what is asked, is
computed again and rewritten. Nothing here imports torch until a tensor is read or written.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

T = TypeVar("T")


def cache_root() -> Path:
    """Where converted models and session artefacts live (``ALIGNLAB_CACHE`` overrides)."""
    root = os.environ.get("ALIGNLAB_CACHE") or os.path.join(Path.home(), ".cache", "alignlab")
    return Path(root)


@dataclass(frozen=True)
class FileFormat:
    """How a kept value is written to a file and read back, and what a damaged file raises when read."""

    suffix: str
    load: Callable[[Path], Any]
    save: Callable[[Any, Path], None]
    damaged: tuple[type[Exception], ...]


def _load_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _save_json(value: Any, path: Path) -> None:
    path.write_text(json.dumps(value), encoding="utf-8")


def _load_tensor(path: Path) -> Any:
    import torch

    return torch.load(path, weights_only=True)


def _save_tensor(value: Any, path: Path) -> None:
    import torch

    torch.save(value, path)


JSON = FileFormat(".json", _load_json, _save_json, (OSError, ValueError))
TENSOR = FileFormat(".pt", _load_tensor, _save_tensor, (OSError, RuntimeError, ValueError))


class DiskCache(Generic[T]):
    """One kind of kept result: the files ``<cache root>/<folder>/<key><suffix>`` and their copies in memory."""

    def __init__(self, folder: str, file_format: FileFormat) -> None:
        self.folder = folder
        self.file_format = file_format
        self.memory: dict[str, T] = {}  # the values this process has computed or read, by key
        self._lock = threading.Lock()

    def path(self, key: str) -> Path:
        """The file that keeps ``key``'s value (under the cache root as it is now: ``ALIGNLAB_CACHE`` may change)."""
        return cache_root() / self.folder / f"{key}{self.file_format.suffix}"

    def get(self, key: str, compute: Callable[[], T], fits: Callable[[Any], bool]) -> T:
        """``key``'s value: from memory, else from its file, else ``compute()`` (then written to the file).

        ``fits`` says whether a value kept is the one asked for (a list of the right length): one that does not,
        like a file that cannot be read, is computed again. A file that cannot be written is left out: the value
        is still kept in memory and returned.
        """
        with self._lock:
            kept: Any = self.memory.get(key)
        stored = self.path(key)
        if kept is None and stored.is_file():
            with contextlib.suppress(*self.file_format.damaged):
                kept = self.file_format.load(stored)
        if not fits(kept):
            kept = compute()
            self._write(stored, kept)
        with self._lock:
            self.memory[key] = kept
        return kept

    def _write(self, stored: Path, value: T) -> None:
        """Write ``value`` beside ``stored`` under this process's own name, then rename it over ``stored``."""
        with contextlib.suppress(OSError):
            stored.parent.mkdir(parents=True, exist_ok=True)
            partial = stored.with_suffix(f".{os.getpid()}.partial")
            self.file_format.save(value, partial)
            partial.replace(stored)
