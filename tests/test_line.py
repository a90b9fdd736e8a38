"""The line for model work (alignlab/serving/line.py): order, limits, held slots, places and estimated waits."""

from __future__ import annotations

import threading
import time

import pytest

from alignlab.serving.line import (
    Line,
    LineFull,
    Rates,
    Work,
    duration_text,
    ordinal,
    torch_threads_per_run,
)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def work(kind: str = "train", units: float = 1.0) -> Work:
    return Work(kind, "model", units)


def test_one_at_a_time_in_arrival_order() -> None:
    line = Line(limit=1, clock=Clock())
    a, b, c = (line.enter(work()) for _ in range(3))
    assert [t.state for t in (a, b, c)] == ["running", "waiting", "waiting"]
    line.leave(a)
    assert (b.state, c.state) == ("running", "waiting")
    line.leave(b)
    assert c.state == "running"
    line.leave(c)
    assert line.stats().running == line.stats().waiting == 0 and line.stats().granted == 3


def test_threads_never_overlap_and_start_in_the_order_they_came() -> None:
    line = Line(limit=1)
    inside, started, overlaps = [], [], []
    entered = threading.Semaphore(0)

    def visitor(i: int) -> None:
        ticket = line.enter(work())
        entered.release()
        line.wait(ticket)
        try:
            if inside:
                overlaps.append(i)
            inside.append(i)
            started.append(i)
            time.sleep(0.02)
            inside.remove(i)
        finally:
            line.leave(ticket)

    threads = []
    for i in range(6):  # each enters only after the previous one has its ticket: a known arrival order
        thread = threading.Thread(target=visitor, args=(i,))
        thread.start()
        entered.acquire()
        threads.append(thread)
    for thread in threads:
        thread.join(timeout=10)
    assert started == list(range(6)) and not overlaps


def test_the_limit_lets_that_many_run_at_once() -> None:
    line = Line(limit=2, clock=Clock())
    tickets = [line.enter(work()) for _ in range(3)]
    assert [t.state for t in tickets] == ["running", "running", "waiting"]
    line.leave(tickets[1])
    assert tickets[2].state == "running"


def test_an_earlier_arrival_goes_ahead_and_a_continuing_step_keeps_its_slot() -> None:
    clock = Clock()
    line = Line(limit=1, handoff_seconds=2.0, clock=clock)
    lab = clock.now
    first = line.enter(work("baseline"), arrival=lab, continues=True)
    clock.now += 1
    later = line.enter(work("baseline"))
    line.leave(first)  # the lab's next step has not arrived yet: its slot is held for it
    assert later.state == "waiting" and line.stats().holds == 1
    assert line.place(later).position == 1
    step_two = line.enter(work("train"), arrival=lab)  # the lab's next step takes the held slot
    assert step_two.state == "running" and later.state == "waiting" and line.stats().holds == 0
    line.leave(step_two)
    assert later.state == "running"


def test_a_held_slot_is_given_up_after_the_handoff_time_or_when_released() -> None:
    clock = Clock()
    line = Line(limit=1, handoff_seconds=2.0, clock=clock)
    lab = line.enter(work(), continues=True)
    clock.now += 0.1
    other = line.enter(work())
    line.leave(lab)
    assert not line.wait(other, timeout=0)
    clock.now += 2.5  # the lab did not come back in time
    assert line.wait(other, timeout=0) and other.state == "running"

    line.leave(other)
    lab = line.enter(work(), continues=True)
    clock.now += 0.1
    other = line.enter(work())
    line.leave(lab)
    assert other.state == "waiting"
    line.release_hold(lab.arrival)  # the lab says it has no next step (it failed, or joined other work)
    assert other.state == "running"


def test_a_withdrawn_ticket_stops_waiting_and_never_runs() -> None:
    line = Line(limit=1)
    running = line.enter(work())
    waiting = line.enter(work())
    result = []
    waiter = threading.Thread(target=lambda: result.append(line.wait(waiting)))
    waiter.start()
    line.leave(waiting)  # the visitor left before its turn
    waiter.join(timeout=5)
    assert result == [False] and waiting.state == "withdrawn"
    line.leave(running)
    assert line.stats().running == 0


def test_the_line_is_bounded_with_a_clear_message() -> None:
    line = Line(limit=1, max_waiting=2, clock=Clock())
    for _ in range(3):  # one runs, two wait
        line.enter(work())
    with pytest.raises(LineFull, match="The lab is full: 2 requests are waiting"):
        line.enter(work())


def test_place_and_wait_come_from_measured_times_and_running_progress() -> None:
    clock = Clock()
    rates = Rates(priors={"train": 2.0})
    line = Line(limit=1, rates=rates, clock=clock)
    first = line.enter(work("train", units=10))  # prior: 2 s x 10 units = 20 s
    second = line.enter(work("train", units=5))
    third = line.enter(work("train", units=5))
    assert line.place(first) is None  # running
    assert line.place(second).position == 1 and line.place(second).eta_seconds == pytest.approx(20)
    assert line.place(third).position == 2 and line.place(third).eta_seconds == pytest.approx(30)

    clock.now += 4
    line.report_progress(first, 0.5)  # half done in 4 s: 4 s left, whatever the prior said
    assert line.place(second).eta_seconds == pytest.approx(4)
    clock.now += 4
    line.report_progress(first, 1.0)
    line.leave(first)  # 8 s for 10 units: 0.8 s per unit measured
    assert rates.seconds(work("train", units=10)) == pytest.approx(8)
    assert line.place(third).position == 1
    assert line.place(third).eta_seconds == pytest.approx(5 * 2.0)  # second's own estimate was taken at entry
    text = line.place(third).text()
    assert "1st in line" in text and "10 s" in text


def test_work_stopped_early_or_failed_measures_nothing() -> None:
    clock = Clock()
    rates = Rates(priors={"train": 2.0})
    line = Line(limit=1, rates=rates, clock=clock)
    ticket = line.enter(work("train", units=10))
    clock.now += 1
    line.leave(ticket, completed=False)
    assert rates.measured() == {}
    failed = line.enter(work("train", units=10))  # granted, ran, then failed (what a shared run's worker does)
    assert line.wait(failed, timeout=1) and line.stats().running == 1
    clock.now += 5
    line.leave(failed, completed=False)
    assert rates.measured() == {} and line.stats().running == 0


def test_a_late_arrival_joining_earlier_work_moves_it_up() -> None:
    clock = Clock()
    line = Line(limit=1, clock=clock)
    line.enter(work())
    early_lab = clock.now
    clock.now += 1
    a = line.enter(work())
    clock.now += 1
    b = line.enter(work())
    assert line.place(b).position == 2
    line.bump(b, early_lab)  # someone who arrived before ``a`` shares ``b``'s work
    assert line.place(b).position == 1 and line.place(a).position == 2


def test_helpers() -> None:
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 101)] == [
        "1st",
        "2nd",
        "3rd",
        "4th",
        "11th",
        "12th",
        "13th",
        "21st",
        "22nd",
        "101st",
    ]
    assert duration_text(0.2) == "under a second"
    assert duration_text(42) == "42 s" and duration_text(130) == "2 min 10 s" and duration_text(3600) == "60 min"
    assert torch_threads_per_run(1, cores=2) == 2
    assert torch_threads_per_run(2, cores=2) == 1
    assert torch_threads_per_run(3, cores=2) == 1  # never zero
    assert torch_threads_per_run(2, cores=16) == 8
