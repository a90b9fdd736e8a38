"""Per-session state: what one visitor (or one API client) has done so far.

Module globals are shared by every user of a Space, so all per-user data lives in a
:class:`Session`, kept in a :class:`SessionStore` keyed by Gradio's ``session_hash`` (a browser
tab, or one ``gradio_client.Client``). Each session owns a directory for its trained policy, its
report and its exports; the directory is deleted when the tab closes (``demo.unload``), when the
session has been idle longer than ``ttl`` seconds, or when the app exits.

Nothing here imports gradio: the store is plain Python and is tested as such
(``tests/test_state.py``: expiry after ``ttl``, never while training, files deleted).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignlab.data.presets import Preset
from alignlab.pipeline.steps import Baseline
from alignlab.registry.settings import TrainingSettings
from alignlab.serving.owners import claim
from alignlab.takehome.tracking import RunTracker
from alignlab.training.run import CancelToken
from alignlab.verdict.runs_table import MAX_RUNS, RunRecord, run_label

#: Cancel tokens of the runs in progress, by run id. A heavy job looks its token up here: in the
#: same process (a local run) Stop reaches it at once; in a forked ZeroGPU worker it finds a copy
#: that never fires, and closing the stream is what stops the run.
RUN_TOKENS: dict[str, CancelToken] = {}


@dataclass
class TrainingHandle:
    """A training run in progress, as its session holds it: how to stop it and how to know it has finished.

    ``member`` is the session's membership of the shared run that does the work (see
    ``alignlab/serving/sharing.py``): stopping this run stops that one only if nobody else shares it.
    """

    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    cancel: CancelToken = field(default_factory=CancelToken)
    done: threading.Event = field(default_factory=threading.Event)
    member: Any = None

    def __post_init__(self) -> None:
        RUN_TOKENS[self.id] = self.cancel

    def stop(self) -> bool:
        """Ask the run to stop; True when the shared work itself stops (no other member follows it)."""
        self.cancel.cancel()
        return self.member.stop() if self.member is not None else True

    def finish(self) -> None:
        RUN_TOKENS.pop(self.id, None)
        self.done.set()


@dataclass
class LabPlan:
    """A whole lab in progress (``/run_lab`` or the presenter's chain): its steps keep its place in line.

    ``follow_on`` maps each step's kind to the estimated seconds of the lab's steps after it.
    """

    arrival: float
    touched: float
    follow_on: dict[str, float] = field(default_factory=dict)
    request: AcceptedRequest | None = None
    """The lab as one request in the share of the line, from its first step until its comparison starts."""


@dataclass
class AcceptedRequest:
    """A request of several steps (a whole lab, a comparison of methods) accepted into the line: until its last step
    starts it counts, as one request, in its visitor's and its address's share, whichever step it is on."""

    what: str
    """What it is, as a refusal lists it (``"a whole lab"``)."""
    key: str
    """Everything its result depends on: identical requests are one piece of work and count once."""
    steps: set[str] = field(default_factory=set)
    """The work keys of the steps it has joined so far (counted as part of it, not one by one)."""
    member: Any = None
    """The membership of the step it is on (``alignlab.serving.sharing.Member``), None before its first."""
    comparisons: int = 1
    """The comparisons of before and after it has still to join: its last step is its last comparison (a whole lab
    makes one; a comparison of methods, one per method)."""
    free: bool = False
    """Identical to a request already accepted, whose work it joins: it adds nothing to the line."""

    @property
    def final(self) -> bool:
        """Its last step has been joined: from then on that step counts as any waiting request, until it starts."""
        return self.comparisons <= 0


@dataclass
class TrainedRun:
    """The session's latest training run: what it trains on and with, its rows as they stream, then what it made."""

    settings: TrainingSettings
    lab: Preset
    """The lab dataset it trains on: pairs, held-out pairs, probe sets, checked questions, thumbs rows, and the preset
    id the report names (its eval prompts are the baseline's)."""
    log_rows: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] | None = None
    """The training summary once the run has ended (its end event: :class:`alignlab.pipeline.steps.Trained`)."""
    policy_dir: Path | None = None
    """The session's own copy of the trained policy (None: no step finished, or its files were cleared)."""
    key: str | None = None
    """Which shared training run produced ``policy_dir`` (its key, steps done and whether stopped)."""


@dataclass
class Session:
    """Everything one user's lab has produced; the handlers read and update it."""

    key: str
    directory: Path
    last_seen: float = field(default_factory=time.monotonic)
    baseline: Baseline | None = None
    """The model and its answers before training (the Baseline tab's record), which every run is compared with."""
    trained: TrainedRun | None = None
    judge: str = ""
    """Who judges the win rate of this session's comparisons (the Compare tab's field; empty: the agreement judge)."""
    report: dict[str, Any] | None = None
    """The report of the latest compared run (the Compare tab's)."""
    training_handle: TrainingHandle | None = None
    lab: LabPlan | None = None
    runs: list[RunRecord] = field(default_factory=list)
    """The session's finished runs, oldest first, at most :data:`MAX_RUNS` (the Compare tab shows them side by
    side); the last one is the run ``trained`` and ``report`` describe."""
    runs_started: int = 0
    """Runs recorded in this session so far: the next run's label is ``run_label(runs_started + 1)``."""
    tracker: RunTracker | None = None
    """The trackio run of the session's latest training (its steps, then its evidence once compared)."""
    address: str = ""
    """Who the session's requests are counted as in the fair share of the line: its visitor's account, or the network
    address they come from (a room behind one router shares one); see ``ui.common.visitor_of``."""
    counted_as: str = "your network address"
    """``address`` as the page names it to the visitor."""
    members: list[Any] = field(default_factory=list)
    """The session's memberships of shared runs still being read (``alignlab.serving.sharing.Member``): its requests in
    the line."""
    accepted: list[AcceptedRequest] = field(default_factory=list)
    """Its requests of several steps that were accepted and have not ended (``ui.work.one_request``)."""
    notice: str = ""
    """Something the session must be told at its next request (its files were cleared to free disk)."""
    files_cleared: bool = False
    """The session's trained policy was deleted to keep the disk within its bound (until it trains again)."""

    @property
    def training_now(self) -> bool:
        return self.training_handle is not None and not self.training_handle.done.is_set()

    @property
    def log_rows(self) -> list[dict[str, Any]]:
        """The latest run's logged rows so far (none before a run)."""
        return self.trained.log_rows if self.trained is not None else []

    def path(self, name: str) -> Path:
        """A file or folder inside this session's private directory (created, and claimed by this server, on first
        use: see :mod:`alignlab.serving.owners`)."""
        if not self.directory.is_dir():
            claim(self.directory)
        return self.directory / name

    def clear_files(self, why: str) -> None:
        """Delete the session's files (its trained policy, its exports) and tell the visitor at their next request."""
        shutil.rmtree(self.directory, ignore_errors=True)
        trained = self.trained
        if trained is not None:
            trained.policy_dir, trained.key = None, None
        self.files_cleared = trained is not None and trained.summary is not None
        self.notice = why

    def add_run(self, training: dict[str, Any], preset_id: str = "") -> RunRecord:
        """Keep a finished run (its training summary, and the preset it trained on); the oldest run goes when there
        are :data:`MAX_RUNS`."""
        self.runs_started += 1
        record = RunRecord(run_label(self.runs_started), preset_id or "custom", training)
        self.runs = [*self.runs, record][-MAX_RUNS:]
        return record

    @property
    def latest_run(self) -> RunRecord | None:
        return self.runs[-1] if self.runs else None

    def forget_runs(self) -> None:
        """Another model or other baseline answers: earlier runs are no longer side by side with this baseline."""
        self.runs = []

    def forget_training(self) -> None:
        """A new baseline or a new run makes earlier results stale."""
        self.files_cleared = False
        self.report = None
        if self.trained is not None and self.trained.policy_dir is not None:
            shutil.rmtree(self.trained.policy_dir, ignore_errors=True)
        self.trained = None


class SessionStore:
    """Sessions by key, each with its own directory under ``root``; idle ones expire."""

    def __init__(self, root: Path | None = None, ttl: float = 2 * 3600, max_disk_bytes: int = 0) -> None:
        self._root = Path(root) if root is not None else None
        self.ttl = ttl
        self.max_disk_bytes = max_disk_bytes
        """Bound on the bytes under :attr:`root` (0: none); see :meth:`bound_disk`."""
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    @property
    def root(self) -> Path:
        """Where session directories go: ``$ALIGNLAB_SESSIONS``, else the system's temp directory.

        Gradio serves downloads only from the working directory or the temp directory, and
        session files are disposable, so they do not belong in the model cache.
        """
        if self._root is not None:
            return self._root
        return Path(os.environ.get("ALIGNLAB_SESSIONS") or Path(tempfile.gettempdir()) / "alignlab-sessions")

    @root.setter
    def root(self, value: Path) -> None:
        self._root = Path(value)

    def get(self, key: str | None) -> Session:
        """The session for ``key``, created on first use; also expires idle sessions."""
        key = key or "anonymous"
        self.expire()
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                session = Session(key=key, directory=self.root / uuid.uuid4().hex)
                self._sessions[key] = session
            session.last_seen = time.monotonic()
            return session

    def peek(self, key: str | None) -> Session | None:
        with self._lock:
            return self._sessions.get(key or "anonymous")

    def sessions(self) -> dict[str, Session]:
        """A snapshot of the live sessions by key (for operators and tests)."""
        with self._lock:
            return dict(self._sessions)

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._sessions

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def close(self, key: str | None) -> None:
        """End a session: stop its run, then delete its directory (after the run has stopped)."""
        with self._lock:
            session = self._sessions.pop(key or "anonymous", None)
        if session is not None:
            _dispose(session)

    def expire(self, now: float | None = None) -> list[str]:
        """Close every session idle for longer than ``ttl``; returns their keys."""
        now = time.monotonic() if now is None else now
        with self._lock:
            stale = [k for k, s in self._sessions.items() if now - s.last_seen > self.ttl and not s.training_now]
            sessions = [self._sessions.pop(k) for k in stale]
        for session in sessions:
            _dispose(session)
        return stale

    def bound_disk(self, keep: Session | None = None) -> list[str]:
        """Keep the root's files within :attr:`max_disk_bytes`: clear the files of the sessions idle longest first
        (never ``keep``'s, nor those of a session training now); returns their keys."""
        if self.max_disk_bytes <= 0 or disk_used(self.root) <= self.max_disk_bytes:
            return []
        with self._lock:
            idle = sorted(
                (s for s in self._sessions.values() if s is not keep and not s.training_now and s.directory.is_dir()),
                key=lambda s: s.last_seen,
            )
        cleared = []
        for session in idle:
            minutes = (time.monotonic() - session.last_seen) / 60
            session.clear_files(
                f"Your files (trained model, exports) were cleared after {minutes:.0f} min idle, to keep this shared "
                "machine's disk within its bound: train again to compare or export."
            )
            cleared.append(session.key)
            if disk_used(self.root) <= self.max_disk_bytes:
                break
        return cleared

    def close_all(self) -> None:
        with self._lock:
            sessions = list(self._sessions.values())
            self._sessions.clear()
        for session in sessions:
            _dispose(session)


def disk_used(root: Path) -> int:
    """Bytes of the files under ``root``, each file once however many hard links it has."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            try:
                info = os.stat(os.path.join(folder, name))
            except OSError:
                continue
            if (info.st_dev, info.st_ino) not in seen:
                seen.add((info.st_dev, info.st_ino))
                total += info.st_size
    return total


def _dispose(session: Session) -> None:
    if session.tracker is not None:  # its trackio run, if still open (trained, never compared), is closed
        session.tracker.finish()
    handle = session.training_handle
    if handle is not None and not handle.done.is_set():
        handle.stop()

        def wait_then_delete() -> None:
            handle.done.wait(timeout=600)
            shutil.rmtree(session.directory, ignore_errors=True)

        threading.Thread(target=wait_then_delete, name="alignlab-session-cleanup", daemon=True).start()
    else:
        shutil.rmtree(session.directory, ignore_errors=True)
