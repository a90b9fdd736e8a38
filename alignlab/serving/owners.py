"""Who owns each folder a server writes, so that a server that is gone leaves nothing behind.

A server writes its visitors' session folders and its shared runs' folders under one root. It removes them itself
when a visitor leaves, when idle, and at a clean exit; a server that is killed cannot. So each folder is *claimed*
when created: a small record inside it (:data:`RECORD`) names the process by its id and start time, which
together never repeat. On start a server *sweeps* the root (:func:`sweep`): folders whose owner is gone are
removed, those of a server still running are left alone, and unclaimed ones go once untouched for
``unclaimed_after`` seconds. At a clean exit :func:`remove_own` removes what this process still owns.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

import psutil

LOG = logging.getLogger(__name__)
RECORD = ".alignlab-owner.json"
#: Subfolders of the root whose own subfolders are claimed one by one (the shared runs).
NESTED = ("_shared",)


def this_process() -> dict[str, float]:
    return {"pid": os.getpid(), "started": psutil.Process().create_time()}


def claim(directory: str | Path) -> Path:
    """Record this process as the owner of ``directory`` (created if need be); returns the directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    record = directory / RECORD
    if not record.is_file():
        record.write_text(json.dumps(this_process()), encoding="utf-8")
    return directory


def owner_of(directory: Path) -> dict[str, float] | None:
    try:
        return json.loads((directory / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def alive(owner: dict[str, float]) -> bool:
    """Whether the process an owner record names still runs (the same process: its start time matches)."""
    try:
        return abs(psutil.Process(int(owner["pid"])).create_time() - float(owner["started"])) < 1.0
    except (psutil.Error, KeyError, TypeError, ValueError):
        return False


def folders(root: Path) -> list[Path]:
    """The folders under ``root`` that a server claims: each session's, and each shared run's."""
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        if not path.is_dir():
            continue
        if path.name in NESTED:
            found += [child for child in path.iterdir() if child.is_dir()]
        else:
            found.append(path)
    return found


def sweep(root: str | Path, unclaimed_after: float) -> list[Path]:
    """Remove the folders under ``root`` whose owner is gone, and unclaimed ones untouched for ``unclaimed_after``
    seconds; returns what went. Folders of running servers (this one included) stay."""
    removed = []
    now = time.time()
    for directory in folders(Path(root)):
        owner = owner_of(directory)
        if owner is not None and alive(owner):
            continue
        if owner is None and now - directory.stat().st_mtime < unclaimed_after:
            continue
        shutil.rmtree(directory, ignore_errors=True)
        removed.append(directory)
    if removed:
        LOG.info("removed %d folder(s) left under %s by servers that are gone", len(removed), root)
    return removed


def remove_own(root: str | Path) -> list[Path]:
    """Remove every folder under ``root`` that this process owns (a clean exit); returns what went."""
    me = this_process()
    removed = []
    for directory in folders(Path(root)):
        owner = owner_of(directory)
        if owner is not None and int(owner.get("pid", -1)) == me["pid"] and alive(owner):
            shutil.rmtree(directory, ignore_errors=True)
            removed.append(directory)
    return removed
