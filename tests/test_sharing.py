"""Identical runs computed once (alignlab/serving/sharing.py): joining, replaying, cancelling, and the cache's
bounds."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from alignlab.serving.line import Line, Work
from alignlab.serving.sharing import Finished, Published, SharedWorks, Waiting, link_tree, tree_size, work_key

WORK = Work("train", "model", 1.0)


class Producer:
    """A run that publishes ``steps`` events, each released by the test, and counts its calls."""

    def __init__(self, steps: int = 3, result: object = "done", cacheable: bool = True, files: int = 0) -> None:
        self.steps, self.result, self.cacheable, self.files = steps, result, cacheable, files
        self.calls = 0
        self.go = threading.Semaphore(0)
        self.started = threading.Event()
        self.cancelled = threading.Event()

    def __call__(self, run):  # noqa: ANN001
        self.calls += 1
        run.on_cancel(self.cancelled.set)
        self.started.set()
        for step in range(1, self.steps + 1):
            self.go.acquire(timeout=10)
            if run.cancelled:
                return {"stopped_at": step - 1}, False
            run.publish({"step": step})
        if self.files:
            run.directory.mkdir(parents=True, exist_ok=True)
            (run.directory / "weights.bin").write_bytes(b"x" * self.files)
        return self.result, self.cacheable

    def release(self, n: int | None = None) -> None:
        for _ in range(self.steps if n is None else n):
            self.go.release()


@pytest.fixture
def runs(tmp_path: Path) -> SharedWorks:
    return SharedWorks(Line(limit=1), root=tmp_path / "shared", poll_seconds=0.05)


def wait_for(predicate, timeout: float = 5.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def drain(member) -> tuple[list[Published], Finished | None]:  # noqa: ANN001
    events, end = [], None
    for update in member.updates():
        if isinstance(update, Published):
            events.append(update)
        elif isinstance(update, Finished):
            end = update
    return events, end


def test_the_key_changes_with_any_input_and_not_with_dict_order() -> None:
    key = work_key("train", model="m", pairs=[{"prompt": "a", "chosen": "b", "rejected": "c"}], settings={"beta": 0.1})
    same = work_key("train", settings={"beta": 0.1}, model="m", pairs=[{"rejected": "c", "chosen": "b", "prompt": "a"}])
    assert key == same and key.startswith("train-")
    assert key != work_key("train", model="m", pairs=[{"prompt": "a", "chosen": "b", "rejected": "c"}], settings={})
    assert key != work_key(
        "train", model="m", pairs=[{"prompt": "a", "chosen": "B", "rejected": "c"}], settings={"beta": 0.1}
    )
    assert key != work_key("compare", model="m", pairs=[{"prompt": "a", "chosen": "b", "rejected": "c"}], settings={})


def test_an_identical_request_in_flight_joins_and_sees_every_event(runs: SharedWorks) -> None:
    produce = Producer(steps=3)
    first = runs.join("k", WORK, produce)
    produce.release(1)
    first_updates = first.updates()
    event = next(u for u in first_updates if isinstance(u, Published))
    assert (event.payload, event.replayed) == ({"step": 1}, False)  # the first member saw step 1 live
    second = runs.join("k", WORK, Producer())  # a different producer: it must never be called
    assert (first.how, second.how) == ("new", "joined") and second.others == 1
    produce.release(2)
    events, end = drain(second)
    assert [e.payload["step"] for e in events] == [1, 2, 3]
    assert [e.replayed for e in events] == [True, False, False]  # step 1 happened before it joined
    assert end.result == "done" and produce.calls == 1
    rest = [u.payload["step"] for u in first_updates if isinstance(u, Published)]
    assert rest == [2, 3]
    first.leave()
    second.leave()
    stats = runs.stats()
    assert (stats.misses, stats.joins, stats.in_flight, stats.cached) == (1, 1, 0, 1)


def test_a_finished_run_is_served_from_the_cache_with_its_events_replayed(runs: SharedWorks) -> None:
    produce = Producer(steps=2)
    produce.release()
    member = runs.join("k", WORK, produce)
    drain(member)
    member.leave()
    again = runs.join("k", WORK, Producer())
    events, end = drain(again)
    again.leave()
    assert again.how == "cached" and [e.payload["step"] for e in events] == [1, 2]
    assert all(e.replayed for e in events) and end.result == "done" and produce.calls == 1
    assert runs.stats().hits == 1


def test_a_run_stopped_early_or_failed_is_never_served_again(runs: SharedWorks) -> None:
    stopped = Producer(steps=1, cacheable=False)
    stopped.release()
    member = runs.join("k", WORK, stopped)
    drain(member)
    member.leave()

    both_in = threading.Event()

    def boom(run):  # noqa: ANN001
        both_in.wait(5)
        raise ValueError("bad model")

    failing = runs.join("k", WORK, boom)
    other = runs.join("k", WORK, boom)
    both_in.set()
    _, end = drain(failing)
    _, other_end = drain(other)
    assert isinstance(end.error, ValueError) and other_end.error is end.error
    failing.leave()
    other.leave()
    fresh = Producer(steps=1)
    fresh.release()
    member = runs.join("k", WORK, fresh)
    drain(member)
    member.leave()
    assert member.how == "new" and fresh.calls == 1 and runs.stats().misses == 3


def test_waiting_members_see_their_place_and_the_last_to_leave_withdraws_the_run(runs: SharedWorks) -> None:
    busy = Producer(steps=1)
    holder = runs.join("busy", WORK, busy)
    assert busy.started.wait(5)
    queued = Producer(steps=1)
    a = runs.join("queued", WORK, queued)
    b = runs.join("queued", WORK, queued)
    note = next(a.updates())
    assert isinstance(note, Waiting) and note.place.position == 1
    a.leave()
    wait_for(lambda: runs.stats().in_flight == 2)  # b still wants it
    b.leave()  # nobody wants it any more: its ticket is withdrawn and it never runs
    busy.release()
    drain(holder)
    holder.leave()
    wait_for(lambda: runs.stats().in_flight == 0 and runs.stats().cached == 1)  # filed by the worker thread
    assert queued.calls == 0
    wait_for(lambda: runs.workers() == 0)  # every worker thread has ended
    assert runs.line.stats().waiting == runs.line.stats().running == 0


def test_stop_cancels_a_run_only_when_nobody_else_follows_it(runs: SharedWorks) -> None:
    produce = Producer(steps=3)
    mine = runs.join("k", WORK, produce)
    theirs = runs.join("k", WORK, produce)
    assert produce.started.wait(5)
    assert mine.stop() is False  # someone else follows it: I just leave
    assert not produce.cancelled.is_set()
    assert theirs.stop() is True  # alone now: the run itself stops, and still publishes its end
    assert produce.cancelled.is_set()
    produce.release()
    _, end = drain(theirs)
    theirs.leave()
    assert end.result == {"stopped_at": 0} and runs.stats().cached == 0


def test_every_bound_evicts_the_least_recently_used_and_files_go_when_unread(tmp_path: Path) -> None:
    runs = SharedWorks(Line(limit=1), root=tmp_path / "shared", max_entries=2, poll_seconds=0.05)

    def finish(key: str, files: int = 0) -> object:
        produce = Producer(steps=1, files=files)
        produce.release()
        member = runs.join(key, WORK, produce)
        drain(member)
        return member

    for key in ("a", "b"):
        finish(key).leave()
    runs.join("a", WORK, Producer()).leave()  # "a" used again: "b" is now the least recently used
    finish("c").leave()
    stats = runs.stats()
    assert stats.cached == 2 and stats.evictions == 1
    assert runs.join("a", WORK, Producer()).how == "cached" and runs.join("b", WORK, Producer()).how == "new"

    disk = SharedWorks(Line(limit=1), root=tmp_path / "disk", max_disk_bytes=2500, poll_seconds=0.05)
    runs = disk
    finish("x", files=1000).leave()
    reader = finish("y", files=1000)  # still reading when "z" pushes it out
    wait_for(lambda: disk.stats().disk_bytes == 2000)  # the worker files the run just after its end is read
    copy = link_tree(reader.run.directory, tmp_path / "session" / "policy")  # a session's own copy
    disk.join("x", WORK, Producer()).leave()  # "y" becomes the least recently used
    finish("z", files=1000).leave()
    stats = disk.stats()
    assert stats.cached == 2 and stats.disk_bytes <= 2500 and stats.draining == 1
    assert reader.run.directory.is_dir()  # evicted but still being read: its files stay
    reader.leave()
    assert not reader.run.directory.exists() and disk.stats().draining == 0
    assert (copy / "weights.bin").read_bytes() == b"x" * 1000  # the linked copy outlives the cache entry

    memory = SharedWorks(Line(limit=1), root=tmp_path / "mem", max_memory_bytes=60, poll_seconds=0.05)
    runs = memory
    finish("m1").leave()
    one = memory.stats().memory_bytes
    assert 0 < one <= 60
    finish("m2").leave()
    finish("m3").leave()
    assert memory.stats().memory_bytes <= 60 and memory.stats().cached == 60 // one

    off = SharedWorks(Line(limit=1), root=tmp_path / "off", max_entries=0, poll_seconds=0.05)
    runs = off
    finish("q", files=10).leave()
    assert off.stats().cached == 0 and not (tmp_path / "off" / "q").exists()


def test_clear_forgets_finished_runs_and_deletes_their_files(runs: SharedWorks) -> None:
    produce = Producer(steps=1, files=100)
    produce.release()
    member = runs.join("k", WORK, produce)
    drain(member)
    member.leave()
    assert (runs.root / "k" / "weights.bin").is_file()
    runs.clear()
    assert not (runs.root / "k").exists() and runs.stats().cached == 0


def test_link_tree_and_tree_size(tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    (source / "a.bin").write_bytes(b"1234")
    (source / "sub" / "b.bin").write_bytes(b"56")
    target = link_tree(source, tmp_path / "dst")
    assert tree_size(target) == tree_size(source) == 6
    assert (target / "a.bin").stat().st_ino == (source / "a.bin").stat().st_ino  # a link, not a copy
    assert tree_size(tmp_path / "missing") == 0
