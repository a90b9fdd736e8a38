"""No files left behind: folders of a server that is gone are swept on start, a running server's are kept, a
clean exit removes its own, and the disk has a bound (idle visitors' files first, and they are told). Real
processes that exit, and one that keeps running."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from alignlab.data.presets import Preset
from alignlab.registry.settings import TrainingSettings
from alignlab.serving.owners import RECORD, claim, remove_own, sweep
from alignlab.ui.state import SessionStore, TrainedRun, disk_used

CLAIM = "import sys; from alignlab.serving.owners import claim; claim(sys.argv[1]); print('claimed', flush=True)"
ROOT = Path(__file__).resolve().parent.parent


def claimed_by_another_process(directory: Path, stay: bool) -> subprocess.Popen | None:
    """``directory`` claimed by a real process that has ended (``stay=False``) or still runs."""
    code = CLAIM + ("; import time; time.sleep(600)" if stay else "")
    proc = subprocess.Popen([sys.executable, "-c", code, str(directory)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
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
        assert (alive_dir / RECORD).is_file() and (mine / RECORD).is_file()
        assert sorted(p.name for p in root.iterdir()) == ["_shared", "just-made", "my-visitor", "other-server-visitor"]
    finally:
        other.kill()
        other.wait()
    assert sweep(root, unclaimed_after=600) == [alive_dir]  # once that server is gone, its folder goes


def test_a_clean_exit_removes_its_own_folders_and_leaves_the_others(tmp_path: Path) -> None:
    root = tmp_path / "sessions"
    other = claimed_by_another_process(root / "other-server-visitor", stay=True)
    try:
        mine, my_run = claim(root / "my-visitor"), claim(root / "_shared" / "my-run")
        (my_run / "policy").mkdir()
        assert sorted(remove_own(root)) == sorted([mine, my_run])
        assert [p.name for p in root.iterdir() if p.name != "_shared"] == ["other-server-visitor"]
    finally:
        other.kill()
        other.wait()


def test_the_app_sweeps_on_start_and_claims_its_sessions(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    from alignlab.ui import build_app
    from alignlab.ui.common import STORE

    root = tmp_path / "root"
    left = root / "left-by-a-killed-server"
    claimed_by_another_process(left, stay=False)
    previous, STORE.root = STORE.root, root
    monkeypatch.setenv("ALIGNLAB_PUBLIC", "1")  # and the page says it is a public Space
    try:
        demo = build_app()
        assert not left.exists()
        notices = [c for c in demo.config["components"] if c.get("props", {}).get("elem_id") == "public-notice"]
        assert len(notices) == 1 and "Public Space" in notices[0]["props"]["value"]
        session = STORE.get("a-visitor")
        session.path("alignlab-report.json").write_text("{}")
        assert (session.directory / RECORD).is_file()
        assert sweep(root, unclaimed_after=0) == []  # this server's own folder stays
    finally:
        STORE.close("a-visitor")
        STORE.root = previous
    assert list(root.iterdir()) == []  # a closed session leaves nothing, its owner record included


def test_the_disk_bound_clears_the_longest_idle_visitors_files_first_and_tells_them(tmp_path: Path) -> None:
    bound = int(3.5 * 2**20)
    store = SessionStore(root=tmp_path, max_disk_bytes=bound)
    sessions = [store.get(key) for key in ("oldest", "middle", "newest")]
    for index, session in enumerate(sessions):
        session.last_seen = time.monotonic() - 3600 + index * 60
        policy = session.path("policy")
        policy.mkdir()
        (policy / "model.safetensors").write_bytes(b"\0" * 2**20)
        os.link(policy / "model.safetensors", session.path("same-file-linked"))  # counted once
        lab = Preset("custom", "custom", "", [], [])
        session.trained = TrainedRun(TrainingSettings(), lab, summary={"method": "dpo"}, policy_dir=policy)
    assert disk_used(tmp_path) <= bound
    newest = sessions[-1]
    (newest.path("export.zip")).write_bytes(b"\0" * 2**20)  # over the bound now

    cleared = store.bound_disk(keep=newest)

    assert cleared == ["oldest"]
    oldest = sessions[0]
    assert not oldest.directory.exists() and oldest.trained.policy_dir is None and oldest.files_cleared
    assert "cleared" in oldest.notice and "idle" in oldest.notice
    assert sessions[1].trained.policy_dir.is_dir() and newest.trained.policy_dir.is_dir()
    assert disk_used(tmp_path) <= bound
    assert store.bound_disk(keep=newest) == []  # within the bound: nothing more goes
