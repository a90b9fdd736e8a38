"""The session store (alignlab/ui/state.py): private sessions, their files, and expiry after the time-to-live."""

from __future__ import annotations

import time
from pathlib import Path

from alignlab.ui.state import RUN_TOKENS, SessionStore, TrainingHandle


def wait_for(predicate, timeout: float = 5.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_each_key_gets_its_own_session_and_directory(tmp_path: Path) -> None:
    store = SessionStore(root=tmp_path)
    a, b = store.get("a"), store.get("b")
    assert a is store.get("a") and a is not b and a.directory != b.directory
    assert store.get(None) is store.get("") is store.peek(None)  # no session hash: one shared "anonymous" one
    a.path("policy").mkdir()
    assert a.directory.parent == tmp_path and (a.directory / "policy").is_dir()
    assert len(store) == 3 and "a" in store and set(store.sessions()) == {"a", "b", "anonymous"}


def test_idle_sessions_expire_after_the_ttl_and_their_files_go(tmp_path: Path) -> None:
    store = SessionStore(root=tmp_path, ttl=60)
    idle, busy = store.get("idle"), store.get("busy")
    idle.path("report.json").write_text("{}")
    busy.path("report.json").write_text("{}")
    now = time.monotonic()
    assert store.expire(now=now + 30) == []  # not idle long enough
    busy.last_seen = now + 50  # busy was seen again meanwhile
    assert store.expire(now=now + 61) == ["idle"]
    assert "idle" not in store and not idle.directory.exists()
    assert "busy" in store and busy.directory.is_dir()


def test_using_a_session_keeps_it_alive_and_get_expires_the_others(tmp_path: Path) -> None:
    store = SessionStore(root=tmp_path, ttl=60)
    old, kept = store.get("old"), store.get("kept")
    old.path("x").write_text("x")
    old.last_seen -= 120  # idle for two minutes
    kept.last_seen -= 30  # idle for half a minute
    fresh = store.get("new")  # every get expires the idle ones first
    assert "old" not in store and not old.directory.exists()
    assert store.peek("kept") is kept and fresh is store.get("new")
    before = time.monotonic()
    assert store.get("kept") is kept and kept.last_seen >= before  # seen again: its clock restarts


def test_a_session_that_is_training_never_expires(tmp_path: Path) -> None:
    store = SessionStore(root=tmp_path, ttl=1)
    session = store.get("trainer")
    session.training_handle = TrainingHandle()
    assert store.expire(now=time.monotonic() + 10) == [] and "trainer" in store
    session.training_handle.finish()
    assert store.expire(now=time.monotonic() + 10) == ["trainer"]


def test_closing_a_session_stops_its_run_and_deletes_its_files_once_the_run_has_ended(tmp_path: Path) -> None:
    store = SessionStore(root=tmp_path)
    session = store.get("s")
    session.path("policy").mkdir()
    run = session.training_handle = TrainingHandle()
    assert RUN_TOKENS[run.id] is run.cancel
    store.close("s")
    assert "s" not in store and run.cancel.cancelled
    assert session.directory.is_dir()  # the run may still be writing there
    run.finish()
    wait_for(lambda: not session.directory.exists())
    assert run.id not in RUN_TOKENS


def test_close_all_empties_the_store(tmp_path: Path) -> None:
    store = SessionStore(root=tmp_path)
    sessions = [store.get(k) for k in "abc"]
    for session in sessions:
        session.path("f").write_text("x")
    store.close_all()
    assert len(store) == 0 and not any(s.directory.exists() for s in sessions)
