"""Fetching a model's files from the Hub, after a free-disk check, with progress.

A download is slow and uses the network, not the cores: the app runs downloads in a line of their own (one at a
time, :mod:`alignlab.ui.work`), so that a visitor's download never holds up training that could already run, and
loads the model from the local Hub cache once its files are there. Only the files a load reads are fetched
(:data:`alignlab.serving.model_checks.DOWNLOAD_PATTERNS`).
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from pathlib import Path

from alignlab.models.loading import ModelLoadError
from alignlab.serving import public
from alignlab.serving.model_checks import DOWNLOAD_PATTERNS, GIB

#: Free disk kept beyond a download's own size (the OS, sessions' files, the converted models).
DISK_MARGIN_BYTES = 2 * GIB


def hub_cache() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def free_bytes(where: Path) -> int:
    """Free bytes on the file system that holds ``where`` (or its nearest existing parent)."""
    path = where
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def check_free_disk(repo: str, needed: int, where: Path | None = None) -> None:
    """Refuse a download of ``needed`` bytes when the disk would keep less than :data:`DISK_MARGIN_BYTES` free."""
    where = where or hub_cache()
    free = free_bytes(where)
    if needed + DISK_MARGIN_BYTES > free:
        raise ModelLoadError(
            f"Not enough free disk to fetch '{repo}': its files take {needed / GIB:.1f} GiB and {free / GIB:.1f} GiB "
            f"are free under {where} (the lab keeps {DISK_MARGIN_BYTES / GIB:.0f} GiB spare). Pick a smaller model."
        )


def _repo_bytes(repo: str) -> int:
    """Bytes of ``repo``'s files in the local Hub cache so far, finished or not."""
    folder = hub_cache() / ("models--" + repo.replace("/", "--")) / "blobs"
    if not folder.is_dir():
        return 0
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file())


def download(repo: str, needed: int, on_progress: Callable[[int, int], None] | None = None) -> str:
    """Fetch ``repo``'s model files into the local Hub cache; returns the snapshot folder.

    ``on_progress(done_bytes, total_bytes)`` is called about once a second while the files arrive.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    check_free_disk(repo, needed)
    start = _repo_bytes(repo)
    finished = threading.Event()

    def report() -> None:
        while not finished.wait(1.0):
            if on_progress is not None:
                on_progress(min(needed, _repo_bytes(repo) - start), needed)

    watcher = threading.Thread(target=report, name="alignlab-download-progress", daemon=True)
    watcher.start()
    try:
        return snapshot_download(
            repo, allow_patterns=list(DOWNLOAD_PATTERNS), token=False if public.public_mode() else None
        )
    except GatedRepoError:
        raise ModelLoadError(f"'{repo}' is a gated repo on the Hub: its owner must grant access first.") from None
    except RepositoryNotFoundError:
        raise ModelLoadError(f"The Hub has no public model '{repo}' (or it is private).") from None
    except Exception as exc:  # noqa: BLE001 - HTTP, network or disk: the message says which
        raise ModelLoadError(f"Fetching '{repo}' from the Hub failed: {str(exc).splitlines()[0]}") from None
    finally:
        finished.set()
        if on_progress is not None:
            on_progress(needed, needed)
