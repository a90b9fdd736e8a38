"""One line for all model work: a first-come, first-served gate with places and estimated waits.

Loading a model, generating, training and evaluating all compete for the same cores (or GPU), and
they reach the model through many doors: the tabs, the presenter's chain, ``/run_lab`` and each API
step. Gradio's queue limits one *event* at a time per concurrency group, but it cannot see work that
one event starts on behalf of another, and it must not hold a wrong click behind a long run. So the
lab keeps its own line here, in plain Python: every piece of model work takes a :class:`Ticket`, at
most ``limit`` tickets run at once, and the rest wait in order of arrival. A request's checks run
before it takes a ticket, so a wrong click is answered at once however long the line is.

Each waiting ticket knows its place and an estimated wait, computed from what the work ahead of it
is measured to cost (:class:`Rates`: seconds per unit of work, by kind and model, from the runs this
process has finished) and, for work already running, from its own progress so far.

A lab (``/run_lab`` or the presenter's chain) is several pieces of work in a row; all of them carry
the lab's *arrival* time, so a lab that has started finishes before later arrivals start theirs, and
its slot is held for a moment (``handoff_seconds``) between two of its steps for the same reason.
"""

from __future__ import annotations

import itertools
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

#: Seconds per unit of work before anything has been measured: the embedded 135M model's on 2 CPU cores
#: (``docs/performance.md``). Units are defined by the caller (see ``ui/work.py``).
PRIOR_SECONDS_PER_UNIT: dict[str, float] = {"load": 1.0, "baseline": 0.14, "train": 2.2, "compare": 0.16}


class LineFull(RuntimeError):
    """The line is as long as it may get; the message says how long it is and the wait."""


@dataclass(frozen=True)
class Work:
    """What a ticket will do: its kind, the model it runs on, and how much of it (in the kind's unit).

    ``scale`` multiplies the prior before anything of this kind and model has been measured (a model
    twice the reference size costs about twice as much).
    """

    kind: str
    model: str
    units: float = 1.0
    scale: float = 1.0


class Rates:
    """Measured seconds per unit of work, by (kind, model); an exponential moving average."""

    def __init__(self, priors: dict[str, float] | None = None, smoothing: float = 0.5) -> None:
        self.priors = dict(PRIOR_SECONDS_PER_UNIT if priors is None else priors)
        self.smoothing = smoothing
        self._measured: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def seconds(self, work: Work) -> float:
        """Estimated seconds for ``work``: measured rate x units, else the prior."""
        with self._lock:
            rate = self._measured.get((work.kind, work.model))
        if rate is None:
            rate = self.priors.get(work.kind, 1.0) * work.scale
        return rate * max(0.0, work.units)

    def record(self, work: Work, seconds: float) -> None:
        if work.units <= 0 or seconds <= 0 or not math.isfinite(seconds):
            return
        rate = seconds / work.units
        key = (work.kind, work.model)
        with self._lock:
            old = self._measured.get(key)
            self._measured[key] = rate if old is None else old + self.smoothing * (rate - old)

    def measured(self) -> dict[tuple[str, str], float]:
        with self._lock:
            return dict(self._measured)


@dataclass
class Ticket:
    """One piece of model work in the line."""

    id: int
    work: Work
    arrival: float
    follow_on: float = 0.0
    """Seconds of work the same requester will add right after this one (a lab's later steps)."""
    continues: bool = False
    """The requester has a next step: hold the slot for it for a moment after this one ends."""
    state: str = "waiting"  # waiting -> running -> done, or waiting -> withdrawn
    started: float | None = None
    progress: float = 0.0
    """Fraction of the work done (0-1), reported by long work such as training."""
    estimate: float = 0.0

    @property
    def order(self) -> tuple[float, int]:
        return (self.arrival, self.id)


@dataclass(frozen=True)
class Place:
    """Where a waiting ticket stands: 1 = next; ``ahead`` tickets are in front of it."""

    position: int
    waiting: int
    running: int
    eta_seconds: float

    def text(self) -> str:
        """'You are 3rd in line (5 waiting), about 1 min 10 s' — for a status line."""
        return (
            f"You are {ordinal(self.position)} in line ({self.waiting} waiting, {self.running} running), "
            f"about {duration_text(self.eta_seconds)} to wait"
        )


@dataclass
class _Hold:
    arrival: float
    until: float
    follow_on: float = 0.0


@dataclass
class LineStats:
    running: int
    waiting: int
    holds: int
    granted: int = 0
    served_seconds: float = 0.0
    by_kind: dict[str, int] = field(default_factory=dict)


class Line:
    """At most ``limit`` tickets run at once; the others wait in arrival order.

    Thread-safe. ``max_waiting`` bounds the line (``enter`` raises :class:`LineFull` beyond it).
    """

    def __init__(
        self,
        limit: int = 1,
        max_waiting: int = 64,
        rates: Rates | None = None,
        handoff_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1 (got {limit})")
        self.limit = limit
        self.max_waiting = max_waiting
        self.rates = rates or Rates()
        self.handoff_seconds = handoff_seconds
        self._clock = clock
        self._ids = itertools.count(1)
        self._waiting: list[Ticket] = []
        self._running: list[Ticket] = []
        self._holds: list[_Hold] = []
        self._cond = threading.Condition()
        self._granted = 0
        self._by_kind: dict[str, int] = {}

    # ------------------------------------------------------------------ entering and leaving

    def enter(
        self, work: Work, arrival: float | None = None, follow_on: float = 0.0, continues: bool = False
    ) -> Ticket:
        """Take a ticket (it waits until :meth:`wait` grants it). Raises :class:`LineFull`."""
        with self._cond:
            if len(self._waiting) >= self.max_waiting:
                eta = self._work_ahead(None) / self.limit
                raise LineFull(
                    f"The lab is full: {len(self._waiting)} requests are waiting for the model (about "
                    f"{duration_text(eta)} of work). Try again in a few minutes."
                )
            ticket = Ticket(
                id=next(self._ids),
                work=work,
                arrival=self._clock() if arrival is None else arrival,
                follow_on=follow_on,
                continues=continues,
                estimate=self.rates.seconds(work),
            )
            self._waiting.append(ticket)
            self._holds = [h for h in self._holds if h.arrival != ticket.arrival]  # the step it held for came
            self._dispatch()
            return ticket

    def wait(self, ticket: Ticket, timeout: float | None = None) -> bool:
        """Block until ``ticket`` runs (True), it is withdrawn (False) or ``timeout`` passes (False)."""
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            while ticket.state == "waiting":
                self._dispatch()
                if ticket.state != "waiting":
                    break
                pause = self._next_hold_expiry()
                if deadline is not None:
                    left = deadline - self._clock()
                    if left <= 0:
                        return False
                    pause = left if pause is None else min(pause, left)
                self._cond.wait(timeout=pause)
            return ticket.state == "running"

    def leave(self, ticket: Ticket, completed: bool = True) -> None:
        """The work is over (or never started): free the slot, or withdraw the waiting ticket.

        A ``completed`` ticket's time is recorded as a measured rate, and when it ``continues`` its
        slot is held for the same arrival's next step for up to ``handoff_seconds``. Work that
        failed or was stopped early measures nothing and holds nothing.
        """
        with self._cond:
            if ticket.state == "waiting":
                self._waiting.remove(ticket)
                ticket.state = "withdrawn"
            elif ticket.state == "running":
                self._running.remove(ticket)
                ticket.state = "done"
                if completed:
                    self.rates.record(ticket.work, self._clock() - (ticket.started or self._clock()))
                    if ticket.continues and self.handoff_seconds > 0:
                        hold = _Hold(ticket.arrival, self._clock() + self.handoff_seconds, ticket.follow_on)
                        self._holds.append(hold)
            self._dispatch()
            self._cond.notify_all()

    def release_hold(self, arrival: float) -> None:
        """The requester behind ``arrival`` has no next step after all (it failed, or joined other work)."""
        with self._cond:
            self._holds = [h for h in self._holds if h.arrival != arrival]
            self._dispatch()
            self._cond.notify_all()

    def bump(self, ticket: Ticket, arrival: float, follow_on: float = 0.0, continues: bool = False) -> None:
        """Someone who arrived earlier joined this ticket's work: it moves up to their place."""
        with self._cond:
            if ticket.state != "waiting":
                return
            ticket.arrival = min(ticket.arrival, arrival)
            ticket.follow_on = max(ticket.follow_on, follow_on)
            ticket.continues = ticket.continues or continues
            self._holds = [h for h in self._holds if h.arrival != arrival]
            self._dispatch()
            self._cond.notify_all()

    def report_progress(self, ticket: Ticket, fraction: float) -> None:
        """Long work says how far it is (0-1): the waits of everyone behind it follow."""
        with self._cond:
            ticket.progress = min(1.0, max(0.0, fraction))

    # ------------------------------------------------------------------ places and estimates

    def place(self, ticket: Ticket) -> Place | None:
        """A waiting ticket's place and estimated wait; None once it runs or has left."""
        with self._cond:
            if ticket.state != "waiting":
                return None
            ordered = sorted(self._waiting, key=lambda t: t.order)
            position = ordered.index(ticket) + 1
            return Place(position, len(ordered), len(self._running), self._work_ahead(ticket) / self.limit)

    def _remaining(self, ticket: Ticket) -> float:
        if ticket.state != "running":
            return ticket.estimate if ticket.state == "waiting" else 0.0
        elapsed = self._clock() - (ticket.started or self._clock())
        if 0.0 < ticket.progress < 1.0:
            return elapsed * (1.0 - ticket.progress) / ticket.progress
        return max(0.0, ticket.estimate - elapsed)

    def _work_ahead(self, ticket: Ticket | None) -> float:
        """Seconds of work that will run before ``ticket`` (None: before a newcomer)."""
        now = self._clock()

        def before(arrival: float, ident: int) -> bool:
            return ticket is None or (arrival, ident) < ticket.order

        total = 0.0
        for other in self._running:
            total += self._remaining(other)
            if ticket is None or other.arrival < ticket.arrival:
                total += other.follow_on
        for other in self._waiting:
            if other is not ticket and before(other.arrival, other.id):
                total += other.estimate + other.follow_on
        for hold in self._holds:
            if hold.until > now and (ticket is None or hold.arrival < ticket.arrival):
                total += hold.follow_on
        return total

    def stats(self) -> LineStats:
        with self._cond:
            now = self._clock()
            return LineStats(
                running=len(self._running),
                waiting=len(self._waiting),
                holds=sum(1 for h in self._holds if h.until > now),
                granted=self._granted,
                by_kind=dict(self._by_kind),
            )

    # ------------------------------------------------------------------ scheduling

    def _next_hold_expiry(self) -> float | None:
        now = self._clock()
        pending = [h.until - now for h in self._holds if h.until > now]
        return max(0.01, min(pending)) if pending else None

    def _dispatch(self) -> None:
        """Grant slots in arrival order; an unexpired hold of an earlier arrival keeps its slot free."""
        now = self._clock()
        self._holds = [h for h in self._holds if h.until > now]
        granted = False
        while len(self._running) < self.limit and self._waiting:
            head = min(self._waiting, key=lambda t: t.order)
            held = [h for h in self._holds if h.arrival < head.arrival]
            if held and len(self._running) + len(held) >= self.limit:
                break
            self._waiting.remove(head)
            head.state = "running"
            head.started = now
            self._running.append(head)
            self._granted += 1
            self._by_kind[head.work.kind] = self._by_kind.get(head.work.kind, 0) + 1
            granted = True
        if granted:
            self._cond.notify_all()


# --------------------------------------------------------------------------- helpers


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def duration_text(seconds: float) -> str:
    """'45 s', '3 min 10 s', 'under a second'."""
    if seconds < 1:
        return "under a second"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, rest = divmod(seconds, 60)
    return f"{minutes} min {rest} s" if rest and minutes < 10 else f"{minutes} min"


def torch_threads_per_run(limit: int, cores: int | None = None) -> int:
    """Threads each run may use so that ``limit`` runs at once do not oversubscribe the cores."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, limit))


def configure_torch_threads(limit: int) -> int:
    """Give torch ``cores // limit`` intra-op threads (CPU only); returns the number set.

    With one run at a time (the CPU default) that is every core; with ``limit`` runs at once each
    gets its share, instead of every run spinning up a thread per core.
    """
    import torch

    threads = torch_threads_per_run(limit)
    if not torch.cuda.is_available() and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()
