"""A room full of visitors: eight API clients at once on a real server (the tiny model).

Mixed presets and settings, some identical, one working tab by tab: every report matches its own
request, identical requests get identical reports (and share the work), wrong clicks made while the
line is full are answered in under a second, and nothing is left behind once the clients have gone.
On a public Space, a burst of distinct whole labs or comparisons from one address is held to the address's share
from the moment each is accepted, and a forged ``X-Forwarded-For`` does not make a visitor someone new.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from alignlab.data.presets import load_preset
from alignlab.ui.dataset_tab import DEFAULT_PRESET

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

STEPS = 4
TOKENS = 8
#: (name, /run_lab arguments): four identical default requests and three that differ from them.
LABS = [  # four visitors run the defaults on the preset the app opens with, as a room pressing one button does
    ("default-1", {"preset": DEFAULT_PRESET}),
    ("default-2", {"preset": DEFAULT_PRESET}),
    ("default-3", {"preset": DEFAULT_PRESET}),
    ("default-4", {"preset": DEFAULT_PRESET}),
    ("concise", {"preset": "concise"}),
    ("seed-lab-beta", {"preset": "seed-lab", "beta": 0.2}),
    ("seed-7", {"preset": DEFAULT_PRESET, "seed": 7}),
]
WRONG_CLICKS = [
    ("/compare", {}, "Record the baseline first"),
    ("/train", {}, "Record the baseline first"),
    ("/run_lab", {"preset": "nope"}, "Unknown preset"),
    ("/run_lab", {"steps": 0}, "steps must be a whole number"),
    ("/run_lab", {"model": "no-such-owner/no-such-model-xyz"}, "no-such-owner/no-such-model-xyz"),
    ("/load_model", {"model": "/no/such/model"}, "There is no directory"),
    ("/baseline", {"max_new_tokens": 10_000}, "max_new_tokens must be a whole number from 1 to 512"),
]


@pytest.fixture(scope="module")
def app(tiny_chat_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    os.environ["ALIGNLAB_DEFAULT_MODEL"] = str(tiny_chat_dir)
    from alignlab.ui import build_app, launch_options, service

    redraw, service.MIN_REDRAW_SECONDS = service.MIN_REDRAW_SECONDS, 0.0
    demo = build_app()
    demo.session_store.root = tmp_path_factory.mktemp("room-sessions")
    demo.shared.clear()  # earlier test modules may have left identical runs in the cache
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **launch_options())
    yield demo, url
    demo.close()
    demo.session_store.close_all()
    service.MIN_REDRAW_SECONDS = redraw


def without_tracking(report: dict) -> dict:
    """A report less its trackio run, which each visitor has to themselves."""
    return {k: v for k, v in report.items() if k != "tracking"}


def without_timings(report: dict) -> dict:
    """A report less what the clock and the memory sampler measured (its timings, TRL's runtime and throughput
    figures, the run's seconds and peak memory), which run of its session it was (a session's second run is B) and
    its trackio run (each visitor's own)."""
    timed = ("_runtime", "_per_second")
    rows = [{k: v for k, v in row.items() if not k.endswith(timed)} for row in report["log_history"]]
    measured = ("seconds", "seconds_per_step", "peak_memory_bytes")
    cost = {k: v for k, v in report["cost"].items() if k not in measured}
    kept = {k: v for k, v in report.items() if k not in ("timings", "run", "tracking")}
    return {**kept, "log_history": rows, "cost": cost}


def test_a_room_of_eight_clients(app) -> None:
    demo, url = app
    store, cache, line = demo.session_store, demo.shared, demo.line
    clients = {name: Client(url, verbose=False) for name, _ in LABS}
    tabs = Client(url, verbose=False)  # the eighth visitor works tab by tab, with the defaults
    clicker = Client(url, verbose=False)  # a ninth who only clicks the wrong things
    reports: dict[str, dict] = {}
    errors: list[str] = []
    notes: list[str] = []  # every waiting note (place in line, estimated wait) an API client saw

    def lab(name: str, arguments: dict) -> None:
        try:
            job = clients[name].submit(steps=STEPS, max_new_tokens=TOKENS, api_name="/run_lab", **arguments)
            while not job.done():  # what a script polling its job would see
                notes.extend(u.desc for u in job.status().progress_data or [] if u.desc)
                time.sleep(0.25)
            reports[name] = job.result()
        except Exception as exc:  # noqa: BLE001 - reported below with the client's name
            errors.append(f"{name}: {exc!r}")

    def step_by_step() -> None:
        try:
            tabs.predict(max_new_tokens=TOKENS, api_name="/baseline")
            statuses = [update[0] for update in tabs.submit(steps=STEPS, api_name="/train")]
            assert f"Finished {STEPS} of {STEPS} steps" in statuses[-1], statuses[-3:]
            notes.extend(s for s in statuses if "in line" in s)
            reports["tabs"] = tabs.predict(api_name="/compare")[-1]
        except Exception as exc:  # noqa: BLE001
            errors.append(f"tabs: {exc!r}")

    before = cache.stats()  # the cache's counters run for the process's life: count this test's share
    threads = [threading.Thread(target=lab, args=item) for item in LABS]
    threads.append(threading.Thread(target=step_by_step))
    for thread in threads:
        thread.start()

    # Wrong clicks while the line is full: each is answered at once, with what to do.
    deadline = time.monotonic() + 240
    while line.stats().waiting == 0 and any(t.is_alive() for t in threads):
        assert time.monotonic() < deadline, "the line never filled"
        time.sleep(0.02)
    answered: list[tuple[str, float, int]] = []
    while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
        for endpoint, arguments, message in WRONG_CLICKS:
            waiting = line.stats().waiting
            started = time.perf_counter()
            with pytest.raises(AppError) as info:
                clicker.predict(api_name=endpoint, **arguments)
            answered.append((endpoint, time.perf_counter() - started, waiting))
            assert message in str(info.value), (endpoint, str(info.value))
        time.sleep(0.2)
    for thread in threads:
        thread.join(timeout=240)
    assert not errors, errors

    during_load = [a for a in answered if a[2] > 0]
    assert len(during_load) >= len(WRONG_CLICKS), f"only {len(during_load)} wrong clicks while requests waited"
    slowest = max(answered, key=lambda a: a[1])
    assert slowest[1] < 1.0, f"a wrong click took {slowest[1]:.2f} s ({slowest[0]}); all: {answered}"
    assert any("in line" in n and "about" in n for n in notes), "no client was told its place and wait"

    # Isolation: every report is for its own request, and each session holds its own copy.
    for name, arguments in LABS:
        report = reports[name]
        preset = load_preset(arguments["preset"])
        settings, training = report["settings"], report["settings"]["training"]
        assert settings["preset"] == preset.id and settings["train_pairs"] == len(preset.pairs)
        assert training["beta"] == arguments.get("beta", 0.1) and training["seed"] == arguments.get("seed", 42)
        assert settings["steps_done"] == STEPS
        assert [row["prompt"] for row in report["aligned_outputs"]] == preset.eval_prompts
        session = store.peek(clients[name].session_hash)
        assert session.report == report and (session.directory / "policy" / "config.json").is_file()
    sessions = [store.peek(c.session_hash) for c in [*clients.values(), tabs]]
    assert len({id(s) for s in sessions}) == len({s.directory for s in sessions}) == 8
    assert sessions[0].report is not sessions[1].report  # equal reports, each session's own copy

    # Determinism: identical requests, identical reports; the tabs visitor trained the same run.
    defaults = [reports[f"default-{i}"] for i in range(1, 5)]
    assert all(without_tracking(r) == without_tracking(defaults[0]) for r in defaults[1:])
    assert len({r["tracking"]["run"] for r in defaults}) == len(defaults)  # the same run, each visitor's own record
    assert reports["tabs"]["log_history"] == defaults[0]["log_history"]
    assert reports["seed-7"]["log_history"] != defaults[0]["log_history"]
    stats = cache.stats()
    # Distinct work: 3 baselines (one per preset), 4 trainings, 4 compares, and the tabs visitor's
    # compare, which shares the default one when its session's copy of the run matches it exactly
    # (it does when it joined the default training in flight; measured both ways: 11 and 12).
    misses, shared = stats.misses - before.misses, stats.joins + stats.hits - before.joins - before.hits
    assert misses in (11, 12) and shared >= 3 * 3 + 2, (before, stats)

    # The same request again after the cache is emptied: recomputed, and still the same report.
    cache.clear()
    again = clients["default-1"].predict(steps=STEPS, max_new_tokens=TOKENS, preset=DEFAULT_PRESET, api_name="/run_lab")
    assert without_timings(again) == without_timings(defaults[0])

    # The clients go (API clients never close a tab: their sessions expire after the time-to-live).
    ttl, store.ttl = store.ttl, 0.0
    try:
        store.expire()
    finally:
        store.ttl = ttl
    assert len(store) == 0
    assert [p.name for p in store.root.iterdir()] in ([], ["_shared"]), "a session left files behind"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (cache.workers() or line.stats().running or line.stats().holds):
        time.sleep(0.1)
    stats, places = cache.stats(), line.stats()
    assert (places.running, places.waiting, places.holds) == (0, 0, 0)
    assert (stats.in_flight, stats.draining, cache.workers()) == (0, 0, 0)
    assert stats.disk_bytes <= cache.max_disk_bytes and stats.memory_bytes <= cache.max_memory_bytes
    from alignlab.ui.state import RUN_TOKENS

    assert not RUN_TOKENS
    leftovers = [
        t.name for t in threading.enumerate() if t.name.startswith(("alignlab-dpo", "alignlab-run", "alignlab-stop"))
    ]
    assert not leftovers, leftovers


def test_a_late_visitor_sees_a_finished_identical_run_replayed_step_by_step(app) -> None:
    demo, url = app
    first, late = Client(url, verbose=False), Client(url, verbose=False)
    for client in (first, late):
        client.predict(max_new_tokens=TOKENS, api_name="/baseline")
    *_, done = list(first.submit(steps=3, seed=11, api_name="/train"))
    assert "Finished 3 of 3 steps" in done[0]
    updates = list(late.submit(steps=3, seed=11, api_name="/train"))
    statuses = [u[0] for u in updates]
    assert "already finished" in statuses[0]
    for step in (1, 2, 3):  # the curves are redrawn one step at a time, as if it ran again
        assert any(f"Step {step} of 3" in s for s in statuses), statuses
    points = [len(u[1]["data"]) for u in updates]
    assert points == sorted(points) and points[-1] == 3 and len(set(points)) >= 3
    assert updates[-1][5] == done[5] and "Finished 3 of 3 steps" in statuses[-1]  # the same log, its own copy
    mine, theirs = (demo.session_store.peek(c.session_hash) for c in (late, first))
    assert mine.trained.policy_dir != theirs.trained.policy_dir and (mine.trained.policy_dir / "config.json").is_file()
    assert "answers changed" in late.predict(api_name="/compare")[0]


def test_stop_leaves_a_shared_run_to_the_others_and_the_last_one_stops_it(app) -> None:
    demo, url = app
    a, b = Client(url, verbose=False), Client(url, verbose=False)
    for client in (a, b):
        client.predict(max_new_tokens=TOKENS, api_name="/baseline")
    job_a = a.submit(steps=400, seed=5, api_name="/train")
    deadline = time.monotonic() + 60
    while not any("Step " in str(u[0]) for u in job_a.outputs()):
        assert time.monotonic() < deadline, "training never started"
        time.sleep(0.05)
    job_b = b.submit(steps=400, seed=5, api_name="/train")  # identical: joins a's run
    while not any("Step " in str(u[0]) for u in job_b.outputs()):
        assert time.monotonic() < deadline, "the second visitor never joined"
        time.sleep(0.05)
    assert "Joined an identical run" in job_b.outputs()[0][0]
    assert "Stopped following the shared run" in a.predict(api_name="/stop")[0]  # b still follows it
    run = demo.session_store.peek(b.session_hash).training_handle.member.run
    assert not run.cancelled and run.state == "running"
    stopped = b.predict(api_name="/stop")  # the last one stops the run itself, at the end of a step
    assert "Stopped after" in stopped[0] and "of 400 steps" in stopped[0]
    assert run.cancelled and demo.shared.stats().in_flight == 0
    assert demo.session_store.peek(a.session_hash).trained.policy_dir is None  # a left: nothing to compare
    assert "answers changed" in b.predict(api_name="/compare")[0]  # b kept the stopped run's policy


def test_one_visitor_holds_two_places_in_line_and_a_third_request_is_refused_at_once(app) -> None:
    """A scripted client cannot fill the line: its third waiting request is answered at once, others keep theirs."""
    from alignlab.serving.line import Work
    from alignlab.ui import work

    demo, url = app
    greedy, b, c = (Client(url, verbose=False) for _ in range(3))
    ticket = demo.line.enter(Work("train", "someone-else"))  # the line's slot taken until the test lets it go
    assert demo.line.wait(ticket, timeout=60)
    try:
        held = [greedy.submit(max_new_tokens=n, api_name="/baseline") for n in (11, 12)]  # none ran before
        deadline = time.monotonic() + 60
        while len(work.waiting(demo.session_store.get(greedy.session_hash))) < 2:
            assert time.monotonic() < deadline, "the two requests never reached the line"
            time.sleep(0.05)
        started = time.perf_counter()
        with pytest.raises(AppError, match="You already have 2 requests waiting") as refused:
            greedy.predict(max_new_tokens=13, api_name="/baseline")
        assert time.perf_counter() - started < 3.0
        assert "1st in line" in str(refused.value) and "2nd in line" in str(refused.value)
        others = [client.submit(max_new_tokens=n, api_name="/baseline") for client, n in ((b, 14), (c, 15))]
        while demo.line.stats().waiting < 4:  # both other visitors got their places behind the greedy two
            assert time.monotonic() < deadline, "the other visitors did not get their places"
            time.sleep(0.05)
    finally:
        demo.line.leave(ticket, completed=False)
    for job in (*held, *others):
        assert "Recorded" in job.result(timeout=120)[1]


def _burst(demo, url: str, endpoint: str, arguments: list[dict], headers: list[dict] | None = None):  # noqa: ANN001, ANN202
    """Visitors in a process of their own (``burst_clients.py``) submitting ``endpoint`` at once, one client each
    with its ``headers``, while the line's slot is held until every request has been accepted or refused: (seconds
    each refusal took, {client: result}, errors, the addresses the sessions were counted as)."""
    from alignlab.serving.line import Work

    job = {"url": url, "endpoint": endpoint, "arguments": arguments, "headers": headers or [{}] * len(arguments)}
    refused: list[tuple[float, str]] = []
    results: dict[int, object] = {}
    errors: list[str] = []
    ticket = demo.line.enter(Work("train", "someone-else"))  # nothing accepted can start before all have arrived
    assert demo.line.wait(ticket, timeout=60)
    visitors = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("burst_clients.py"))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        visitors.stdin.write(json.dumps(job))
        visitors.stdin.close()
        sessions = json.loads(visitors.stdout.readline())["sessions"]

        def accepted() -> int:
            found = [demo.session_store.peek(key) for key in sessions]
            return sum(len(session.accepted) for session in found if session is not None)

        def read(line: str) -> None:
            outcome = json.loads(line)
            if "refused" in outcome:
                refused.append((outcome["seconds"], outcome["refused"]))
            elif "error" in outcome:
                errors.append(f"{outcome['index']}: {outcome['error']}")
            else:
                results[outcome["index"]] = outcome["result"]

        outcomes: queue.Queue[str] = queue.Queue()
        reader = threading.Thread(target=lambda: [outcomes.put(line) for line in visitors.stdout], daemon=True)
        reader.start()
        deadline = time.monotonic() + 60
        while len(refused) + accepted() < len(arguments) and not errors:  # the accepted say nothing until they end
            assert time.monotonic() < deadline, (refused, accepted(), errors)
            with contextlib.suppress(queue.Empty):
                read(outcomes.get(timeout=0.05))
        found = [demo.session_store.peek(key) for key in sessions]  # while the visitors are here
        counted = {session.address for session in found if session is not None}
    finally:
        demo.line.leave(ticket, completed=False)
    assert visitors.wait(timeout=300) == 0
    reader.join(timeout=10)
    while not outcomes.empty():
        read(outcomes.get())
    return refused, results, errors, counted


@pytest.fixture
def public_space(app, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN001, ANN201
    """The room's server in public mode, at most 4 waiting requests per address."""
    monkeypatch.setenv("ALIGNLAB_PUBLIC", "1")
    monkeypatch.setenv("ALIGNLAB_MAX_PER_ADDRESS", "4")
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.delenv("ALIGNLAB_TRUSTED_PROXIES", raising=False)
    return app


def _labs(count: int, first_seed: int) -> list[dict]:
    """``count`` distinct short whole labs (their seeds differ)."""
    return [{"steps": 1, "max_new_tokens": 2, "seed": first_seed + i} for i in range(count)]


def test_a_burst_of_whole_labs_from_one_address_is_held_to_its_share(public_space, output_dir: Path) -> None:  # noqa: ANN001
    """Eight sessions from one address submit distinct whole labs at once: four are refused at once (each lab counts
    from its acceptance, not from its shared first step), with what is already waiting; the four others run."""
    demo, url = public_space
    refused, reports, errors, _ = _burst(demo, url, "/run_lab", _labs(8, 100))
    (output_dir / "burst-labs.json").write_text(json.dumps({"refusal_seconds": [s for s, _ in refused]}))
    assert not errors, errors
    assert len(refused) >= 4 and all(seconds < 1.0 for seconds, _ in refused[:4]), refused
    message = refused[0][1]
    assert "Your network address already has 4 requests waiting" in message and "a whole lab (" in message
    assert len(reports) == 8 - len(refused)
    assert {report["settings"]["training"]["seed"] for report in reports.values()} == {
        100 + i for i in reports
    }  # each accepted lab returned its own report


def test_a_burst_of_comparisons_from_one_address_is_held_to_its_share(public_space, output_dir: Path) -> None:  # noqa: ANN001
    demo, url = public_space
    arguments = [{"methods": "dpo,kto", "steps": 1, "max_new_tokens": 2, "seed": 200 + i} for i in range(8)]
    refused, results, errors, _ = _burst(demo, url, "/run_comparison", arguments)
    (output_dir / "burst-comparisons.json").write_text(json.dumps({"refusal_seconds": [s for s, _ in refused]}))
    assert not errors, errors
    assert len(refused) >= 4 and all(seconds < 1.0 for seconds, _ in refused[:4]), refused
    assert "a comparison of methods (" in refused[0][1]
    assert len(results) == 8 - len(refused) and all(len(result["runs"]) == 2 for result in results.values())


def test_a_forged_forwarded_address_does_not_buy_a_new_share(public_space, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    """Each session writes its own first X-Forwarded-For entry: with no trusted proxy (a local public server) the
    socket's peer is counted, and the cap holds. Behind one trusted proxy that appends each visitor's own address,
    the eight are eight visitors, and none is refused."""
    demo, url = public_space
    forged = [{"X-Forwarded-For": f"198.51.100.{i}"} for i in range(8)]
    refused, _, errors, counted = _burst(demo, url, "/run_lab", _labs(8, 300), forged)
    assert not errors and len(refused) >= 4, (errors, refused)
    assert counted == {"address:127.0.0.1"}, counted  # the socket's peer, whatever the header said
    monkeypatch.setenv("ALIGNLAB_TRUSTED_PROXIES", "1")
    proxied = [{"X-Forwarded-For": f"198.51.100.{i}, 203.0.113.{i}"} for i in range(8)]  # the proxy's entry last
    refused, reports, errors, counted = _burst(demo, url, "/run_lab", _labs(8, 400), proxied)
    assert not errors and not refused and len(reports) == 8, (errors, refused)
    assert counted == {f"address:203.0.113.{i}" for i in range(8)}, counted
