"""Folders left by a server that is gone are swept on start; a running server's are kept. Real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from alignlab.owners import OWNERS, claim, sweep

CLAIM = "import sys; from alignlab.owners import claim; claim(sys.argv[1]); print('claimed', flush=True)"


def claimed_by_another_process(directory: Path, stay: bool) -> subprocess.Popen | None:
    """``directory`` claimed by a real process that has ended (``stay=False``) or still runs."""
    code = CLAIM + ("; import time; time.sleep(600)" if stay else "")
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen([sys.executable, "-c", code, str(directory)], stdout=subprocess.PIPE, text=True, cwd=root)
    assert proc.stdout.readline().strip() == "claimed"
    if not stay:
        proc.wait(timeout=60)
        return None
    return proc


def test_a_sweep_removes_what_dead_servers_left_and_keeps_the_living(tmp_path: Path) -> None:
    root = tmp_path / "sessions"
    dead, shared_dead = root / "dead-visitor", root / "_shared" / "dead-run"
    claimed_by_another_process(dead, stay=False)
    claimed_by_another_process(shared_dead, stay=False)
    (dead / "policy").mkdir()
    (dead / "policy" / "model.safetensors").write_bytes(b"\0" * 1024)
    alive_dir = root / "other-server-visitor"
    other = claimed_by_another_process(alive_dir, stay=True)
    try:
        mine = claim(root / "my-visitor")
        old_unclaimed, new_unclaimed = root / "from-before-claims", root / "just-made"
        old_unclaimed.mkdir()
        new_unclaimed.mkdir()
        an_hour_ago = time.time() - 3600
        os.utime(old_unclaimed, (an_hour_ago, an_hour_ago))

        removed = sweep(root, unclaimed_after=600)

        assert set(removed) == {dead, shared_dead, old_unclaimed}
        assert not dead.exists() and not shared_dead.exists() and not old_unclaimed.exists()
        assert alive_dir.is_dir() and mine.is_dir() and new_unclaimed.is_dir()
        records = {p.name for p in (root / OWNERS).iterdir()}
        assert records == {"other-server-visitor.json", "my-visitor.json"}  # the dead owners' records went too
    finally:
        other.kill()
        other.wait()
    assert sweep(root, unclaimed_after=600) == [alive_dir]  # once that server is gone, its folder goes


def test_the_app_sweeps_on_start_and_claims_its_sessions(tmp_path: Path) -> None:
    from alignlab.ui import build_app
    from alignlab.ui.common import STORE

    root = tmp_path / "root"
    left = root / "left-by-a-killed-server"
    claimed_by_another_process(left, stay=False)
    previous, STORE.root = STORE.root, root
    try:
        build_app()
        assert not left.exists()
        session = STORE.get("a-visitor")
        session.path("alignlab-report.json").write_text("{}")
        assert (root / OWNERS / f"{session.directory.name}.json").is_file()
        assert sweep(root, unclaimed_after=0) == []  # this server's own folder stays
    finally:
        STORE.close("a-visitor")
        STORE.root = previous
