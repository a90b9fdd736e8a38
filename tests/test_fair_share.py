"""A fair share of the line: one visitor holds at most two waiting requests, one address (on a public Space) at most
``ALIGNLAB_MAX_PER_ADDRESS``; identical runs count once, and a lab's later steps are never refused.

The real line (``work.LINE``) and the real shared work, its slot held by a piece of work that does not end until the
test lets it; the end-to-end version with real clients is in ``test_room.py``.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator

import gradio as gr
import pytest

from alignlab.serving.line import Work
from alignlab.serving.sharing import work_key
from alignlab.ui import work
from alignlab.ui.common import STORE


def produce(run) -> tuple[str, bool]:  # noqa: ANN001
    return "done", False


@pytest.fixture
def busy_line() -> Iterator[None]:
    """The line's only slot taken by other work; every request made meanwhile waits."""
    ticket = work.LINE.enter(Work("train", "someone-else"))
    assert work.LINE.wait(ticket, timeout=30)
    joined = []
    yield joined
    work.LINE.leave(ticket, completed=False)
    for member in joined:
        member.leave()
    for key in [k for k in STORE.sessions() if k.startswith("fair-")]:
        STORE.close(key)


def ask(session, name: str, joined: list, kind: str = "baseline"):  # noqa: ANN001, ANN201
    member = work.join(session, work_key(kind, test=name), Work(kind, "tiny"), produce)
    joined.append(member)
    return member


def test_a_visitor_holds_two_waiting_requests_and_the_third_is_told_what_is_queued(busy_line) -> None:  # noqa: ANN001
    joined = busy_line
    me, other = STORE.get("fair-me"), STORE.get("fair-other")
    ask(me, "a", joined)
    ask(me, "b", joined, kind="train")
    started = time.perf_counter()
    with pytest.raises(gr.Error) as refused:
        ask(me, "c", joined)
    assert time.perf_counter() - started < 0.5
    message = refused.value.message
    assert "You already have 2 requests waiting" in message
    assert "answers before training (1st in line)" in message and "a training run (2nd in line)" in message
    ask(me, "a", joined)  # identical to one of its own: it joins that run and counts once
    ask(other, "c", joined)  # other visitors keep their places
    ask(me, "c", joined)  # ... and an identical run someone else started adds no work: joined, not refused
    assert len(work.waiting(me)) == 3 and len(work.waiting(other)) == 1


def test_a_lab_counts_once_its_later_steps_are_never_refused(busy_line) -> None:  # noqa: ANN001
    joined = busy_line
    me = STORE.get("fair-lab")

    def elsewhere(name: str):  # noqa: ANN202
        return contextvars.Context().run(ask, me, name, joined)  # another request of the same visitor

    with work.one_request():  # a whole lab (or a comparison of methods): its first step is admitted as any request
        ask(me, "lab-baseline", joined)
        elsewhere("other-1")
        with pytest.raises(gr.Error, match="already have 2 requests"):
            elsewhere("other-2")
        ask(me, "lab-train", joined, kind="train")  # the lab's next step: admitted although two are waiting
    with pytest.raises(gr.Error, match="already have 3 requests"):
        ask(me, "after-the-lab", joined)


def test_one_address_holds_at_most_its_share_on_a_public_space(busy_line, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    joined = busy_line
    monkeypatch.setenv("ALIGNLAB_PUBLIC", "1")
    monkeypatch.setenv("ALIGNLAB_MAX_PER_ADDRESS", "3")
    room = [STORE.get(f"fair-room-{i}") for i in range(4)]
    for session in room:
        session.address = "10.0.0.1"
    for index, session in enumerate(room[:3]):
        ask(session, f"room-{index}", joined)
    ask(room[3], "room-0", joined)  # the same run as a neighbour's: shared, counted once
    with pytest.raises(gr.Error, match=r"address already has 3 requests waiting for the model \(at most 3 on"):
        ask(room[3], "room-3", joined)
    elsewhere = STORE.get("fair-elsewhere")
    elsewhere.address = "10.0.0.2"
    ask(elsewhere, "room-3", joined)
    monkeypatch.setenv("ALIGNLAB_PUBLIC", "0")  # a private server has no bound per address
    ask(room[3], "room-4", joined)
