"""Who owns each directory a server writes, so that a server that died leaves nothing behind for long.

A server writes its visitors' session folders and its shared runs' policies under one root. It removes them
itself when a visitor leaves, when idle, and at a clean exit; a server that is killed cannot. So each folder is
*claimed* when created: a small record beside it, under ``<root>/.owners/``, names the process (its id and start
time, which together never repeat). On start a server *sweeps* the root: folders whose owner is gone are removed,
those of a server still running are left alone, and unclaimed ones (from before claims existed, or whose claim
was lost) go once they have been untouched for ``unclaimed_after`` seconds. The record lives beside the folder,
not in it, so that a job rewriting the folder cannot erase it.
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
OWNERS = ".owners"
#: Subfolders of the root whose own subfolders are claimed one by one (the shared runs).
NESTED = ("_shared",)


def this_process() -> dict[str, float]:
    return {"pid": os.getpid(), "started": psutil.Process().create_time()}


def _record(directory: Path) -> Path:
    root = directory.parent.parent if directory.parent.name in NESTED else directory.parent
    relative = directory.relative_to(root)
    return root / OWNERS / (str(relative).replace(os.sep, "__") + ".json")


def claim(directory: str | Path) -> Path:
    """Record this process as the owner of ``directory`` (created if need be); returns the directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    record = _record(directory)
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(this_process()), encoding="utf-8")
    return directory


def owner_alive(owner: dict[str, float]) -> bool:
    """Whether the process in an owner record still runs (the same process: its start time matches)."""
    try:
        return abs(psutil.Process(int(owner["pid"])).create_time() - float(owner["started"])) < 1.0
    except (psutil.Error, KeyError, TypeError, ValueError):
        return False


def _candidates(root: Path) -> list[Path]:
    found = []
    for path in root.iterdir():
        if not path.is_dir() or path.name == OWNERS:
            continue
        if path.name in NESTED:
            found += [child for child in path.iterdir() if child.is_dir()]
        else:
            found.append(path)
    return found


def sweep(root: str | Path, unclaimed_after: float) -> list[Path]:
    """Remove the folders under ``root`` whose owner is gone, and unclaimed ones idle for ``unclaimed_after``
    seconds; returns what went. Folders of live processes (this one included) stay."""
    root = Path(root)
    if not root.is_dir():
        return []
    removed = []
    now = time.time()
    for directory in _candidates(root):
        record = _record(directory)
        try:
            owner = json.loads(record.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            owner = None
        if owner is not None and owner_alive(owner):
            continue
        if owner is None and now - directory.stat().st_mtime < unclaimed_after:
            continue
        shutil.rmtree(directory, ignore_errors=True)
        record.unlink(missing_ok=True)
        removed.append(directory)
    owners = root / OWNERS
    if owners.is_dir():  # records whose folder is gone and whose owner is gone too
        for record in owners.iterdir():
            try:
                owner = json.loads(record.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                owner = None
            if owner is None or not owner_alive(owner):
                record.unlink(missing_ok=True)
    if removed:
        LOG.info("removed %d folder(s) left under %s by servers that are gone", len(removed), root)
    return removed
