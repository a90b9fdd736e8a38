"""Identical runs computed once: join one in flight, or replay one that has finished.

AlignLab's runs are deterministic: the same model, data, settings and seed give the same run. A room
of visitors mostly presses the same button with the same preset and defaults, so the lab computes each
distinct run once and serves it to everyone who asks for it:

- a request whose key matches a run *in flight* (waiting in line or running) joins it: it sees the
  events already published replayed from the start, then the rest live;
- a request whose key matches a *finished* run is served from a bounded cache, events replayed;
- anything else starts a new run, which takes a ticket in the :mod:`alignlab.serving.line` line.

A run's *key* (:func:`work_key`) is a hash of everything its result depends on; callers pass exactly
the inputs of the work (model fingerprint, data, settings, seed), so any edit makes a run its own.
Each member gets the same events and the same result object: copy it before changing it.

Files a run writes (a trained policy) live in the run's own directory, owned by this registry.
Members take hard links to them (:func:`link_tree`), so a session's copy outlives the cache entry
and costs no extra disk while both exist. The cache is bounded in entries, in memory (the JSON size
of events and results) and in disk (the size of run directories); the least recently used finished
runs go first, and a run's files are deleted only once no member is still reading it.

Nothing here imports gradio or torch.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import itertools
import json
import os
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignlab.serving.line import Line, Place, Ticket, Work

#: What a producer returns: the run's result and whether it may be served again from the cache
#: (a run stopped early may not: the next identical request wants the whole run).
Produced = tuple[Any, bool]
Producer = Callable[["SharedWork"], Produced]


def work_key(kind: str, **parts: Any) -> str:
    """A stable key for a run of ``kind`` from everything its result depends on."""
    canonical = json.dumps({"kind": kind, **parts}, sort_keys=True, separators=(",", ":"), default=_plain)
    return f"{kind}-{hashlib.sha256(canonical.encode('utf-8')).hexdigest()[:40]}"


def _plain(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if hasattr(value, "__dataclass_fields__"):
        return {name: getattr(value, name) for name in value.__dataclass_fields__}
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"work_key cannot hash {type(value).__name__}")


def json_size(value: Any) -> int:
    """Bytes of ``value`` as JSON: the memory figure the cache counts (a close proxy for small data)."""
    try:
        return len(json.dumps(value, default=str))
    except (TypeError, ValueError):
        return 0


def tree_size(path: Path | None) -> int:
    """Bytes of the files under ``path`` (0 when it does not exist)."""
    if path is None or not path.exists():
        return 0
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += (Path(root) / name).stat().st_size
    return total


def link_tree(source: str | Path, target: str | Path) -> Path:
    """A copy of ``source`` at ``target`` made of hard links (a plain copy across file systems).

    The files are written once and never changed, so linking is safe, takes no extra disk while both
    exist, and the target survives the source's deletion.
    """
    source, target = Path(source), Path(target)
    shutil.rmtree(target, ignore_errors=True)
    for root, _, files in os.walk(source):
        destination = target / Path(root).relative_to(source)
        destination.mkdir(parents=True, exist_ok=True)
        for name in files:
            try:
                os.link(Path(root) / name, destination / name)
            except OSError:
                shutil.copy2(Path(root) / name, destination / name)
    return target


# --------------------------------------------------------------------------- what members see


@dataclass(frozen=True)
class Waiting:
    """The run has not started: where it stands in line (None when it is about to start)."""

    place: Place | None


@dataclass(frozen=True)
class Published:
    """One event of the run; ``replayed`` when it was published before this member joined."""

    payload: Any
    index: int
    replayed: bool


@dataclass(frozen=True)
class Finished:
    """The end of the run: its result, or the error it failed with, or ``cancelled``."""

    result: Any
    error: BaseException | None = None
    cancelled: bool = False


# --------------------------------------------------------------------------- runs


class SharedWork:
    """One computation and everything it published, read by any number of members."""

    def __init__(self, key: str, kind: str, directory: Path) -> None:
        self.key = key
        self.kind = kind
        self.directory = directory
        self.events: list[Any] = []
        self.state = "waiting"  # waiting -> running -> done | failed | cancelled
        self.result: Any = None
        self.error: BaseException | None = None
        self.cacheable = False
        self.ticket: Ticket | None = None
        self.members: set[int] = set()
        self.memory_bytes = 0
        self.disk_bytes = 0
        self.created = time.monotonic()
        self.started: float | None = None
        self.cached = False
        self.dropped = False  # out of the cache (or never in it): files go once no member reads them
        self.cond = threading.Condition()
        self._cancelled = threading.Event()
        self._on_cancel: list[Callable[[], None]] = []

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed", "cancelled")

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    @property
    def joinable(self) -> bool:
        """Not given up, and not ended in a way that must not be served again."""
        if self.cancelled:
            return False
        return not self.finished or (self.state == "done" and self.cacheable)

    def on_cancel(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when every member has left before the run finished (at once if already so)."""
        with self.cond:
            if not self._cancelled.is_set():
                self._on_cancel.append(callback)
                return
        callback()

    def cancel(self) -> None:
        with self.cond:
            if self._cancelled.is_set():
                return
            self._cancelled.set()
            callbacks, self._on_cancel = self._on_cancel, []
            self.cond.notify_all()
        for callback in callbacks:
            callback()

    def publish(self, payload: Any) -> None:
        """The producer's stream: every member sees every payload, in order."""
        size = json_size(payload)
        with self.cond:
            self.events.append(payload)
            self.memory_bytes += size
            self.cond.notify_all()

    def _set_state(self, state: str, result: Any = None, error: BaseException | None = None) -> None:
        with self.cond:
            self.state = state
            if state == "running":
                self.started = time.monotonic()
            self.result, self.error = result, error
            if state == "done":
                self.memory_bytes += json_size(result)
            self.cond.notify_all()


class Member:
    """One request's membership of a run: it reads the run's events and leaves when done."""

    _ids = itertools.count(1)

    def __init__(self, registry: SharedWorks, run: SharedWork, how: str) -> None:
        self.id = next(Member._ids)
        self.registry = registry
        self.run = run
        self.how = how  # "new": this request started it; "joined": it was in flight; "cached": it had finished
        self.left = False
        with run.cond:
            self.joined_at = len(run.events)
            run.members.add(self.id)

    @property
    def others(self) -> int:
        """How many other requests share this run now."""
        with self.run.cond:
            return len(self.run.members - {self.id})

    def updates(self, poll: float | None = None) -> Iterator[Waiting | Published | Finished]:
        """Waiting notes while in line, every event (replayed, then live), then :class:`Finished`.

        Ends early, without :class:`Finished`, once this member has left.
        """
        poll = self.registry.poll_seconds if poll is None else poll
        run, index, first = self.run, 0, True
        while True:
            with run.cond:
                if not first and index >= len(run.events) and not run.finished and not self.left:
                    run.cond.wait(timeout=poll)
                first = False
                fresh = run.events[index:]
                state, finished = run.state, run.finished
            for payload in fresh:
                yield Published(payload, index, replayed=index < self.joined_at)
                index += 1
            if self.left:
                return
            if finished:
                with run.cond:
                    if index < len(run.events):
                        continue
                yield Finished(run.result, run.error, cancelled=state == "cancelled")
                return
            if state == "waiting" and not fresh:
                yield Waiting(self.registry.line.place(run.ticket) if run.ticket is not None else None)

    def leave(self) -> None:
        """Stop reading. The last member to leave an unfinished run cancels it."""
        if self.left:
            return
        self.left = True
        run = self.run
        with self.registry._lock:  # no one joins between the last member leaving and the cancel
            with run.cond:
                run.members.discard(self.id)
                alone = not run.members
                run.cond.notify_all()
            if alone and not run.finished:
                self._cancel_run()
        self.registry._settle(run)

    def _cancel_run(self) -> None:
        self.run.cancel()
        if self.run.ticket is not None and self.run.ticket.state == "waiting":
            self.registry.line.leave(self.run.ticket)  # withdraw: the worker wakes and ends the run

    def stop(self) -> bool:
        """Stop this member's run if it is the only member (True), else just leave it (False).

        A member that stops alone keeps reading: the run ends at its next step and publishes
        what it has (a training run stopped early still has a result).
        """
        with self.registry._lock:
            with self.run.cond:
                alone = self.run.members == {self.id}
            if alone:
                self._cancel_run()
                return True
        self.leave()
        return False


@dataclass(frozen=True)
class CacheStats:
    in_flight: int
    cached: int
    draining: int
    """Finished runs out of the cache whose files a member is still reading."""
    memory_bytes: int
    """JSON size of the cached runs' events and results."""
    disk_bytes: int
    """Bytes of the cached runs' directories."""
    draining_disk_bytes: int
    hits: int
    joins: int
    misses: int
    evictions: int


class SharedWorks:
    """Runs by key: in flight (joinable) and finished (a bounded LRU cache)."""

    def __init__(
        self,
        line: Line,
        root: Path | Callable[[], Path],
        max_entries: int = 32,
        max_memory_bytes: int = 64 * 2**20,
        max_disk_bytes: int = 4 * 2**30,
        poll_seconds: float = 1.0,
    ) -> None:
        self.line = line
        self._root = root
        self.max_entries = max_entries
        self.max_memory_bytes = max_memory_bytes
        self.max_disk_bytes = max_disk_bytes
        self.poll_seconds = poll_seconds
        self._in_flight: dict[str, SharedWork] = {}
        self._cache: OrderedDict[str, SharedWork] = OrderedDict()
        self._draining: set[SharedWork] = set()
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self._hits = self._joins = self._misses = self._evictions = 0

    @property
    def root(self) -> Path:
        return self._root() if callable(self._root) else Path(self._root)

    def join(
        self,
        key: str,
        work: Work,
        produce: Producer,
        arrival: float | None = None,
        follow_on: float = 0.0,
        continues: bool = False,
    ) -> Member:
        """Join the run for ``key``: the cached one, the one in flight, or a new one.

        A new run takes a ticket in the line now (so its place is known at once) and a worker
        thread calls ``produce(run)`` once the ticket is granted; ``produce`` publishes events with
        ``run.publish`` and returns ``(result, cacheable)``. Raises :class:`alignlab.serving.line.LineFull`.
        """
        with self._lock:
            run = self._cache.get(key)
            if run is not None:
                self._cache.move_to_end(key)
                self._hits += 1
                return Member(self, run, "cached")
            run = self._in_flight.get(key)
            if run is not None and run.joinable:
                self._joins += 1
                member = Member(self, run, "joined")
                if run.ticket is not None:
                    self.line.bump(
                        run.ticket, arrival if arrival is not None else run.ticket.arrival, follow_on, continues
                    )
                return member
            ticket = self.line.enter(work, arrival, follow_on, continues)  # may raise LineFull
            self._misses += 1
            run = SharedWork(key, work.kind, self.root / key)
            run.ticket = ticket
            self._in_flight[key] = run
            member = Member(self, run, "new")
            # The worker runs in a copy of the first member's context: code that reads the request
            # from context variables (ZeroGPU's spaces.GPU does, to bill the right visitor) finds it.
            context = contextvars.copy_context()
            thread = threading.Thread(
                target=context.run, args=(self._work, run, produce), name=f"alignlab-run-{work.kind}", daemon=True
            )
            self._threads.add(thread)
        thread.start()
        return member

    def has(self, key: str) -> bool:
        """Whether a request for ``key`` would join a run (in flight or cached) rather than start one."""
        with self._lock:
            if key in self._cache:
                return True
            run = self._in_flight.get(key)
            return run is not None and run.joinable

    def _work(self, run: SharedWork, produce: Producer) -> None:
        ticket = run.ticket
        try:
            if not self.line.wait(ticket) or run.cancelled:  # everyone left before it started
                run._set_state("cancelled")
                return
            run._set_state("running")
            result, cacheable = produce(run)
            run.cacheable = cacheable
            run._set_state("done", result)
        except BaseException as exc:  # noqa: BLE001 - handed to every member, who re-raises it
            run._set_state("failed", error=exc)
        finally:
            self.line.leave(ticket, completed=run.state == "done" and run.cacheable)
            self._settle(run)
            with self._lock:
                self._threads.discard(threading.current_thread())

    def _settle(self, run: SharedWork) -> None:
        """Move a finished run into the cache or out of the way; delete files nobody reads."""
        doomed: list[SharedWork] = []
        with self._lock:
            if run.finished and self._in_flight.get(run.key) is run:
                del self._in_flight[run.key]
                if run.state == "done" and run.cacheable and self.max_entries > 0:
                    run.disk_bytes = tree_size(run.directory)
                    run.cached = True
                    self._cache[run.key] = run
                    self._cache.move_to_end(run.key)
                    self._evict()
                else:
                    run.dropped = True
                    self._draining.add(run)
            for candidate in list(self._draining):
                with candidate.cond:
                    unread = not candidate.members
                if unread:
                    self._draining.discard(candidate)
                    doomed.append(candidate)
        for candidate in doomed:
            shutil.rmtree(candidate.directory, ignore_errors=True)
            candidate.disk_bytes = 0

    def _evict(self) -> None:
        """Least recently used finished runs out until every bound holds (caller holds the lock)."""

        def over() -> bool:
            runs = self._cache.values()
            return (
                len(self._cache) > self.max_entries
                or sum(r.memory_bytes for r in runs) > self.max_memory_bytes
                or sum(r.disk_bytes for r in runs) > self.max_disk_bytes
            )

        while self._cache and over():
            _, oldest = self._cache.popitem(last=False)
            oldest.cached = False
            oldest.dropped = True
            self._draining.add(oldest)
            self._evictions += 1

    def stats(self) -> CacheStats:
        with self._lock:
            cached = list(self._cache.values())
            draining = list(self._draining)
            return CacheStats(
                in_flight=len(self._in_flight),
                cached=len(cached),
                draining=len(draining),
                memory_bytes=sum(r.memory_bytes for r in cached),
                disk_bytes=sum(r.disk_bytes for r in cached),
                draining_disk_bytes=sum(tree_size(r.directory) for r in draining),
                hits=self._hits,
                joins=self._joins,
                misses=self._misses,
                evictions=self._evictions,
            )

    def workers(self) -> int:
        """Worker threads still running (for tests: none once every run has finished)."""
        with self._lock:
            return sum(1 for t in self._threads if t.is_alive())

    def clear(self) -> None:
        """Forget every finished run and delete the files nobody is reading (runs in flight stay)."""
        with self._lock:
            for run in self._cache.values():
                run.cached = False
                run.dropped = True
                self._draining.add(run)
            self._cache.clear()
        for run in list(self._draining):
            self._settle(run)
