"""The line for model work (alignlab/heavy.py): order, limits, held slots, places and estimated waits."""

from __future__ import annotations

import threading
import time

import pytest

from alignlab.heavy import (
    GateFull,
    HeavyGate,
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
    gate = HeavyGate(limit=1, clock=Clock())
    a, b, c = (gate.enter(work()) for _ in range(3))
    assert [t.state for t in (a, b, c)] == ["running", "waiting", "waiting"]
    gate.leave(a)
    assert (b.state, c.state) == ("running", "waiting")
    gate.leave(b)
    assert c.state == "running"
    gate.leave(c)
    assert gate.stats().running == gate.stats().waiting == 0 and gate.stats().granted == 3


def test_threads_never_overlap_and_start_in_the_order_they_came() -> None:
    gate = HeavyGate(limit=1)
    inside, started, overlaps = [], [], []
    entered = threading.Semaphore(0)

    def visitor(i: int) -> None:
        ticket = gate.enter(work())
        entered.release()
        gate.wait(ticket)
        try:
            if inside:
                overlaps.append(i)
            inside.append(i)
            started.append(i)
            time.sleep(0.02)
            inside.remove(i)
        finally:
            gate.leave(ticket)

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
    gate = HeavyGate(limit=2, clock=Clock())
    tickets = [gate.enter(work()) for _ in range(3)]
    assert [t.state for t in tickets] == ["running", "running", "waiting"]
    gate.leave(tickets[1])
    assert tickets[2].state == "running"


def test_an_earlier_arrival_goes_ahead_and_a_continuing_step_keeps_its_slot() -> None:
    clock = Clock()
    gate = HeavyGate(limit=1, handoff_seconds=2.0, clock=clock)
    lab = clock.now
    first = gate.enter(work("baseline"), arrival=lab, continues=True)
    clock.now += 1
    later = gate.enter(work("baseline"))
    gate.leave(first)  # the lab's next step has not arrived yet: its slot is held for it
    assert later.state == "waiting" and gate.stats().holds == 1
    assert gate.place(later).position == 1
    step_two = gate.enter(work("train"), arrival=lab)  # the lab's next step takes the held slot
    assert step_two.state == "running" and later.state == "waiting" and gate.stats().holds == 0
    gate.leave(step_two)
    assert later.state == "running"


def test_a_held_slot_is_given_up_after_the_handoff_time_or_when_released() -> None:
    clock = Clock()
    gate = HeavyGate(limit=1, handoff_seconds=2.0, clock=clock)
    lab = gate.enter(work(), continues=True)
    clock.now += 0.1
    other = gate.enter(work())
    gate.leave(lab)
    assert not gate.wait(other, timeout=0)
    clock.now += 2.5  # the lab did not come back in time
    assert gate.wait(other, timeout=0) and other.state == "running"

    gate.leave(other)
    lab = gate.enter(work(), continues=True)
    clock.now += 0.1
    other = gate.enter(work())
    gate.leave(lab)
    assert other.state == "waiting"
    gate.release_hold(lab.arrival)  # the lab says it has no next step (it failed, or joined other work)
    assert other.state == "running"


def test_a_withdrawn_ticket_stops_waiting_and_never_runs() -> None:
    gate = HeavyGate(limit=1)
    running = gate.enter(work())
    waiting = gate.enter(work())
    result = []
    waiter = threading.Thread(target=lambda: result.append(gate.wait(waiting)))
    waiter.start()
    gate.leave(waiting)  # the visitor left before its turn
    waiter.join(timeout=5)
    assert result == [False] and waiting.state == "withdrawn"
    gate.leave(running)
    assert gate.stats().running == 0


def test_the_line_is_bounded_with_a_clear_message() -> None:
    gate = HeavyGate(limit=1, max_waiting=2, clock=Clock())
    for _ in range(3):  # one runs, two wait
        gate.enter(work())
    with pytest.raises(GateFull, match="The lab is full: 2 requests are waiting"):
        gate.enter(work())


def test_place_and_wait_come_from_measured_times_and_running_progress() -> None:
    clock = Clock()
    rates = Rates(priors={"train": 2.0})
    gate = HeavyGate(limit=1, rates=rates, clock=clock)
    first = gate.enter(work("train", units=10))  # prior: 2 s x 10 units = 20 s
    second = gate.enter(work("train", units=5))
    third = gate.enter(work("train", units=5))
    assert gate.place(first) is None  # running
    assert gate.place(second).position == 1 and gate.place(second).eta_seconds == pytest.approx(20)
    assert gate.place(third).position == 2 and gate.place(third).eta_seconds == pytest.approx(30)

    clock.now += 4
    gate.report_progress(first, 0.5)  # half done in 4 s: 4 s left, whatever the prior said
    assert gate.place(second).eta_seconds == pytest.approx(4)
    clock.now += 4
    gate.report_progress(first, 1.0)
    gate.leave(first)  # 8 s for 10 units: 0.8 s per unit measured
    assert rates.seconds(work("train", units=10)) == pytest.approx(8)
    assert gate.place(third).position == 1
    assert gate.place(third).eta_seconds == pytest.approx(5 * 2.0)  # second's own estimate was taken at entry
    text = gate.place(third).text()
    assert "1st in line" in text and "10 s" in text


def test_work_stopped_early_or_failed_measures_nothing() -> None:
    clock = Clock()
    rates = Rates(priors={"train": 2.0})
    gate = HeavyGate(limit=1, rates=rates, clock=clock)
    ticket = gate.enter(work("train", units=10))
    clock.now += 1
    gate.leave(ticket, completed=False)
    assert rates.measured() == {}
    failed = gate.enter(work("train", units=10))  # granted, ran, then failed (what a shared run's worker does)
    assert gate.wait(failed, timeout=1) and gate.stats().running == 1
    clock.now += 5
    gate.leave(failed, completed=False)
    assert rates.measured() == {} and gate.stats().running == 0


def test_a_late_arrival_joining_earlier_work_moves_it_up() -> None:
    clock = Clock()
    gate = HeavyGate(limit=1, clock=clock)
    gate.enter(work())
    early_lab = clock.now
    clock.now += 1
    a = gate.enter(work())
    clock.now += 1
    b = gate.enter(work())
    assert gate.place(b).position == 2
    gate.bump(b, early_lab)  # someone who arrived before ``a`` shares ``b``'s work
    assert gate.place(b).position == 1 and gate.place(a).position == 2


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
