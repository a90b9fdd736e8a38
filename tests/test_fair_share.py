"""A fair share of the line: one visitor holds at most two waiting requests, one address (on a public Space) at most
``ALIGNLAB_MAX_PER_ADDRESS``; identical runs count once; a request of several steps (a whole lab, a comparison)
counts as one from its acceptance until its last step, and its steps are never refused; the address counted is
the one the nearest trusted proxy saw.

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


#: Requests of several steps the tests entered and have not left: (the context each runs in, its context manager).
OPEN: list[tuple[contextvars.Context, object]] = []


@pytest.fixture
def busy_line() -> Iterator[None]:
    """The line's only slot taken by other work; every request made meanwhile waits."""
    ticket = work.LINE.enter(Work("train", "someone-else"))
    assert work.LINE.wait(ticket, timeout=30)
    joined = []
    yield joined
    while OPEN:
        context, request = OPEN.pop()
        context.run(request.__exit__, None, None, None)
    work.LINE.leave(ticket, completed=False)
    for member in joined:
        member.leave()
    for key in [k for k in STORE.sessions() if k.startswith("fair-")]:
        STORE.close(key)  # with its accepted requests: what a test left open goes with its session


def ask(session, name: str, joined: list, kind: str = "baseline"):  # noqa: ANN001, ANN201
    member = work.join(session, work_key(kind, test=name), Work(kind, "tiny"), produce)
    joined.append(member)
    return member


def public_room(monkeypatch: pytest.MonkeyPatch, name: str, count: int, cap: int) -> list:
    """A public Space that allows ``cap`` waiting requests per address, and ``count`` sessions behind one address."""
    monkeypatch.setenv("ALIGNLAB_PUBLIC", "1")
    monkeypatch.setenv("ALIGNLAB_MAX_PER_ADDRESS", str(cap))
    sessions = [STORE.get(f"fair-{name}-{i}") for i in range(count)]
    for session in sessions:
        session.address = f"address:10.0.0.{len(name)}"
    return sessions


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

    with work.one_request(me, "a whole lab", "lab-1"):  # checked before its first step, then one request
        assert list(work.waiting(me).values()) == ["a whole lab (accepted, about to start)"]
        ask(me, "lab-baseline", joined)
        elsewhere("other-1")
        with pytest.raises(gr.Error, match="already have 2 requests") as refused:
            elsewhere("other-2")
        assert "a whole lab (its answers before training waits)" in refused.value.message
        ask(me, "lab-train", joined, kind="train")  # the lab's next step: admitted although two are waiting
        assert len(work.waiting(me)) == 2  # the lab, whichever step it is on, and the other request
        ask(me, "lab-compare", joined, kind="compare")  # its last step counts as any waiting request from now on
        assert "lab-1" not in work.waiting(me) and len(work.waiting(me)) == 4  # the lab's three steps wait here
    assert not me.accepted


def test_a_comparison_of_methods_counts_until_its_last_methods_comparison(busy_line) -> None:  # noqa: ANN001
    joined = busy_line
    me = STORE.get("fair-methods")
    with work.one_request(me, "a comparison of methods", "methods-1", comparisons=2):
        ask(me, "dpo-train", joined, kind="train")
        ask(me, "dpo-compare", joined, kind="compare")  # the first method's comparison: not its last step
        assert list(work.waiting(me)) == ["methods-1"]
        ask(me, "kto-train", joined, kind="train")
        ask(me, "kto-compare", joined, kind="compare")  # the last method's: from now on its steps count one by one
        assert "methods-1" not in work.waiting(me) and len(work.waiting(me)) == 4


def enter(request):  # noqa: ANN001, ANN201
    """Enter a request of several steps in a context of its own, as a server's thread would (left when the test
    ends); the accepted request."""
    context = contextvars.Context()
    accepted = context.run(request.__enter__)
    OPEN.append((context, request))
    return accepted


def test_a_whole_lab_counts_from_its_acceptance_whatever_step_it_is_on(busy_line) -> None:  # noqa: ANN001
    joined = busy_line
    me = STORE.get("fair-labs")
    ask(me, "single", joined)
    enter(work.one_request(me, "a whole lab", "lab-a"))  # accepted: it has joined no step yet, and counts already
    started = time.perf_counter()
    with pytest.raises(gr.Error, match="already have 2 requests") as refused:
        enter(work.one_request(me, "a comparison of methods", "comparison-b"))
    assert time.perf_counter() - started < 0.5
    assert "a whole lab (accepted, about to start)" in refused.value.message
    assert len(me.accepted) == 1  # nothing accepted is lost, and the refused request left nothing behind
    enter(work.one_request(me, "a whole lab", "lab-a"))  # identical to one accepted: it adds no work, free
    assert len(me.accepted) == 2 and len(work.waiting(me)) == 2


def test_one_address_holds_its_share_of_whole_labs_and_the_refusal_lists_them(
    busy_line,  # noqa: ANN001
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    room = public_room(monkeypatch, "burst", 5, cap=3)
    for index, session in enumerate(room[:3]):
        enter(work.one_request(session, "a whole lab", f"burst-{index}"))
    with pytest.raises(gr.Error) as refused:
        enter(work.one_request(room[3], "a whole lab", "burst-3"))
    message = refused.value.message
    assert message.startswith("Your network address already has 3 requests waiting for the model (at most 3 on")
    assert message.count("a whole lab (accepted, about to start)") == 3 and "Try again once some" in message
    enter(work.one_request(room[4], "a whole lab", "burst-0"))  # a neighbour's identical lab: shared, free
    account = STORE.get("fair-burst-account")
    account.address, account.counted_as = "account:ada", "your account **ada**"
    enter(work.one_request(account, "a whole lab", "burst-3"))  # a logged-in visitor is counted on their own


def test_one_address_holds_at_most_its_share_on_a_public_space(busy_line, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    joined = busy_line
    room = public_room(monkeypatch, "room", 4, cap=3)
    for index, session in enumerate(room[:3]):
        ask(session, f"room-{index}", joined)
    ask(room[3], "room-0", joined)  # the same run as a neighbour's: shared, counted once
    with pytest.raises(gr.Error, match=r"address already has 3 requests waiting for the model \(at most 3 on"):
        ask(room[3], "room-3", joined)
    elsewhere = STORE.get("fair-elsewhere")
    elsewhere.address = "address:10.0.0.2"
    ask(elsewhere, "room-3", joined)
    monkeypatch.setenv("ALIGNLAB_PUBLIC", "0")  # a private server has no bound per address
    ask(room[3], "room-4", joined)


@pytest.mark.parametrize(
    ("forwarded", "peer", "proxies", "counted"),
    [
        ("", "192.0.2.1", 0, "192.0.2.1"),  # no proxy: the socket's peer
        ("6.6.6.6", "192.0.2.1", 0, "192.0.2.1"),  # a header no trusted proxy wrote is not read
        ("6.6.6.6, 203.0.113.5", "10.0.0.1", 1, "203.0.113.5"),  # the entry the proxy appended, not the first
        ("203.0.113.5", "10.0.0.1", 1, "203.0.113.5"),
        ("6.6.6.6, 203.0.113.5, 10.0.0.2", "10.0.0.1", 2, "203.0.113.5"),  # two proxies: the farther one's
        ("203.0.113.5", "10.0.0.1", 2, "203.0.113.5"),  # fewer entries than proxies: all theirs, the first the farthest
        ("", "10.0.0.1", 1, "10.0.0.1"),
    ],
)
def test_the_address_counted_is_the_one_the_nearest_trusted_proxy_saw(forwarded, peer, proxies, counted) -> None:  # noqa: ANN001
    from alignlab.serving.addresses import forwarded_address

    assert forwarded_address(forwarded, peer, proxies) == counted


def test_trusted_proxies_are_one_on_a_space_and_none_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    from alignlab.serving.addresses import trusted_proxies

    monkeypatch.delenv("ALIGNLAB_TRUSTED_PROXIES", raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.setenv("ALIGNLAB_PUBLIC", "1")  # a public local server too: the socket's peer
    assert trusted_proxies() == 0
    monkeypatch.setenv("SPACE_ID", "someone/alignlab")
    assert trusted_proxies() == 1
    for value, expected in (("2", 2), ("0", 0), ("-1", 1), ("two", 1)):
        monkeypatch.setenv("ALIGNLAB_TRUSTED_PROXIES", value)
        assert trusted_proxies() == expected, value


def test_a_whole_lab_from_the_page_counts_from_its_click_until_its_comparison(
    busy_line,  # noqa: ANN001
    tiny_chat_dir,  # noqa: ANN001
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from alignlab.data.presets import load_preset
    from alignlab.registry.settings import TrainingSettings

    joined = busy_line
    a, b, c = public_room(monkeypatch, "page", 3, cap=2)
    lab = load_preset("seed-lab")

    def click(session, seed: int) -> None:  # noqa: ANN001 - *Run the whole lab*: the chain's first link
        work.start_lab(session, str(tiny_chat_dir), lab, TrainingSettings(seed=seed), 8)

    click(a, 1)
    click(b, 2)
    with pytest.raises(gr.Error, match="address already has 2 requests") as refused:
        click(c, 3)  # refused at the click, before any of its steps
    assert refused.value.message.count("a whole lab (accepted, about to start)") == 2 and c.lab is None
    click(c, 1)  # identical to a neighbour's lab: free
    assert c.lab.request.free and c.lab.request.key == a.lab.request.key
    ask(a, "a-baseline", joined)  # its steps are never refused, though the address is full
    ask(a, "a-train", joined, kind="train")
    key = a.lab.request.key
    assert not a.lab.request.final and key in work.waiting(a)
    ask(a, "a-compare", joined, kind="compare")  # its comparison: from now on the lab counts as that step
    assert a.lab.request.final and key not in work.waiting(a)
    work.end_lab(a)
    assert not a.accepted and a.lab is None


def test_the_page_says_who_a_visitor_is_counted_as(monkeypatch: pytest.MonkeyPatch) -> None:
    from starlette.requests import Request as HTTPRequest

    from alignlab.ui.blocks import visitor_notice
    from alignlab.ui.common import visitor_of

    def request(forwarded: str, username: str | None = None) -> gr.Request:
        """A request as a Space's proxy hands it on: the visitor's own entry first, the proxy's last."""
        scope = {
            "type": "http",
            "method": "POST",
            "path": "/",
            "query_string": b"",
            "headers": [(b"x-forwarded-for", forwarded.encode())],
            "client": ("10.0.0.1", 5000),
        }
        return gr.Request(request=HTTPRequest(scope), username=username)

    monkeypatch.delenv("ALIGNLAB_TRUSTED_PROXIES", raising=False)
    monkeypatch.setenv("SPACE_ID", "someone/alignlab")  # a Space: one trusted proxy, and public mode
    monkeypatch.delenv("ALIGNLAB_PUBLIC", raising=False)
    visitor = request("6.6.6.6, 203.0.113.5")
    assert visitor_of(visitor).key == "address:203.0.113.5"
    assert visitor_notice(visitor).endswith("Here, requests are counted for your network address.")
    account = request("6.6.6.6, 203.0.113.5", username="ada")
    assert visitor_of(account).key == "account:ada"
    assert visitor_notice(account).endswith("Here, requests are counted for your account **ada**.")
    monkeypatch.setenv("ALIGNLAB_PUBLIC", "0")
    assert visitor_notice(visitor) == ""
