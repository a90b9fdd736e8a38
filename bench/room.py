"""A room of visitors on a real server: N API clients press "run the whole lab" at once.

Runs in a fresh process (``python -m bench.worker room``): the app is launched there on the bench's
model, and N ``gradio_client`` clients call ``/run_lab`` from threads, each a tenth of a second after
the previous one (so "the last in line" is well defined). Two kinds of rooms:

- *distinct*: every client asks for a different run (presets and seeds differ);
- *identical*: every client asks for the same default run.

Figures, each measured in this one process, side by side:

- each distinct request's single-run time (the client alone, the shared-run cache emptied first);
- makespan: first submit to last report, against the serial sum of the same requests' single-run
  times (distinct), or against one single run (identical); the same ratio in CPU time of this
  process (server and clients), which other load on a shared machine disturbs much less;
- time to the first plotted step for the last client in line (its session's first training row,
  read on the server every 0.1 s);
- answers to a wrong click (``/compare`` with no baseline), one every :data:`CLICK_EVERY` seconds while the
  room waits, the slowest of all;
- peak resident memory of the server process during the room (sampled by alignlab.training.memory.PeakMemory, so
  it is the peak of this room, not the process's high-water mark), and the cache's memory and disk after it.

Nothing here passes or fails: the bench's targets are reported as met or not.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from alignlab.training.memory import PeakMemory
from bench.protocol import run_worker

#: The distinct requests, in the order clients arrive: presets first, then seeds.
DISTINCT = [{"preset": preset, "seed": seed} for seed in (42, 1, 2) for preset in ("seed-lab", "concise", "warm-tone")][
    :8
]
IDENTICAL = {"preset": "seed-lab", "seed": 42}
#: Seconds between the wrong clicks made while the room waits: a visitor's pace, not a flood (this process
#: handles them too, and its CPU time is one of the room's figures).
CLICK_EVERY = 2.0


def room(demo: Any, url: str, requests: list[dict], lab: dict, probe: bool = False) -> dict[str, Any]:
    """N clients at once, one request each; returns their timings and the room's figures."""
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    store = demo.session_store
    demo.shared.clear()
    before = demo.shared.stats()
    clients = [Client(url, verbose=False) for _ in requests]
    clicker = Client(url, verbose=False) if probe else None
    submitted: list[float] = [0.0] * len(requests)
    finished: list[float] = [0.0] * len(requests)
    first_step: list[float | None] = [None] * len(requests)
    errors: list[str] = []
    wrong_clicks: list[float] = []
    last_click = float("-inf")

    def visit(i: int) -> None:
        try:
            submitted[i] = time.perf_counter()
            clients[i].predict(**lab, **requests[i], api_name="/run_lab")
            finished[i] = time.perf_counter()
        except Exception as exc:  # noqa: BLE001 - reported in the figures
            errors.append(f"client {i}: {exc}")
            finished[i] = time.perf_counter()

    threads = [threading.Thread(target=visit, args=(i,)) for i in range(len(requests))]
    cpu_started = time.process_time()  # this process's CPU time, all threads: server and clients
    with PeakMemory("cpu") as memory:
        for thread in threads:
            thread.start()
            time.sleep(0.1)
        while any(t.is_alive() for t in threads):
            now = time.perf_counter()
            for i, client in enumerate(clients):
                session = store.peek(client.session_hash)
                if first_step[i] is None and session is not None and session.log_rows:
                    first_step[i] = now - submitted[i]
            if clicker is not None and demo.line.stats().waiting and now - last_click >= CLICK_EVERY:
                started = last_click = time.perf_counter()
                try:
                    clicker.predict(api_name="/compare")
                    errors.append("a /compare with no baseline was not refused")
                except AppError as exc:
                    if "Record the baseline first" not in str(exc):
                        errors.append(f"a wrong click got {exc}")
                wrong_clicks.append(time.perf_counter() - started)
            time.sleep(0.1)
        for thread in threads:
            thread.join()
    cpu_seconds = time.process_time() - cpu_started
    stats = demo.shared.stats()
    for client in [*clients, *([clicker] if clicker else [])]:
        store.close(client.session_hash)
    return {
        "n": len(requests),
        "makespan": max(finished) - min(submitted),
        "cpu_seconds": cpu_seconds,
        "per_client": [f - s for s, f in zip(submitted, finished)],
        "first_step_last_in_line": first_step[-1],
        "first_step": first_step,
        "peak_rss_mib": memory.bytes / 2**20,
        "cache_memory_bytes": stats.memory_bytes,
        "cache_disk_bytes": stats.disk_bytes,
        "shared_runs": {  # in this room only
            "computed": stats.misses - before.misses,
            "joined": stats.joins - before.joins,
            "from_cache": stats.hits - before.hits,
        },
        "wrong_click_seconds": wrong_clicks,
        "errors": errors,
    }


def in_process(spec: str, options: dict[str, Any]) -> dict[str, Any]:
    """The whole section, in the calling (fresh) process: singles, then each room."""
    os.environ["ALIGNLAB_DEFAULT_MODEL"] = spec
    sizes = sorted(set(options.get("sizes", [1, 3, 8])))
    lab = {"steps": options.get("steps", 6), "max_new_tokens": options.get("max_new_tokens", 64)}
    from alignlab.ui import build_app, launch_options

    demo = build_app()
    root = Path(tempfile.mkdtemp(prefix="bench-room-"))
    demo.session_store.root = root
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **launch_options())
    try:
        # Warm-up (model load, TRL's first step), so that no measured run pays it.
        room(demo, url, [{"preset": "seed-lab", "seed": 0}], {"steps": 1, "max_new_tokens": 4})
        alone = [room(demo, url, [request], lab) for request in DISTINCT[: max(sizes)]]
        singles, single_cpu = [r["makespan"] for r in alone], [r["cpu_seconds"] for r in alone]
        results: dict[str, Any] = {
            "lab": lab,
            "singles": singles,
            "singles_cpu_seconds": single_cpu,
            "distinct": {},
            "identical": {},
            "load_average_before": [round(x, 2) for x in os.getloadavg()],
        }
        if options.get("progress"):
            Path(options["progress"]).write_text(json.dumps(results, indent=2))
        for n in sizes:
            if n == 1:  # one client alone is the single run itself
                one = {**alone[0], "first_step_last_in_line": None, "ratio": 1.0, "cpu_ratio": 1.0}
                results["distinct"]["1"] = {**one, "serial_sum": singles[0]}
                results["identical"]["1"] = {**one, "one_run": singles[0]}
                continue
            distinct = room(demo, url, DISTINCT[:n], lab, probe=True)
            distinct["serial_sum"] = sum(singles[:n])
            distinct["ratio"] = distinct["makespan"] / distinct["serial_sum"]
            distinct["cpu_ratio"] = distinct["cpu_seconds"] / sum(single_cpu[:n])
            results["distinct"][str(n)] = distinct
            identical = room(demo, url, [IDENTICAL] * n, lab, probe=True)
            identical["one_run"] = singles[0]
            identical["ratio"] = identical["makespan"] / singles[0]
            identical["cpu_ratio"] = identical["cpu_seconds"] / single_cpu[0]
            results["identical"][str(n)] = identical
            if options.get("progress"):  # rooms so far, for a bench stopped before it ends
                Path(options["progress"]).write_text(json.dumps(results, indent=2))
        results["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
        return results
    finally:
        demo.close()
        demo.session_store.close_all()
        demo.shared.clear()
        shutil.rmtree(root, ignore_errors=True)


def run(spec: str, device: str | None, options: dict[str, Any]) -> dict[str, Any]:
    """The section from the bench's main process: one fresh worker process does it all."""
    return run_worker("room", spec, device, json.dumps(options))


def table_rows(section: dict[str, Any]) -> list[tuple[str, str]]:
    """Table rows: one per room, then the singles."""

    def secs(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f} s"

    out = []
    lab = section["lab"]
    for kind in ("distinct", "identical"):
        for n, r in section[kind].items():
            base = r.get("serial_sum", r.get("one_run"))
            versus = "serial sum" if kind == "distinct" else "one run"
            clicks = r.get("wrong_click_seconds") or []
            click_text = f"; wrong clicks {len(clicks)}, slowest {max(clicks):.2f} s" if clicks else ""
            shared = r.get("shared_runs")
            shared_text = (
                f"; runs computed {shared['computed']}, joined {shared['joined']}, cached {shared['from_cache']}"
                if shared
                else ""
            )
            memory = f"; peak RSS {r['peak_rss_mib']:.0f} MiB" if r.get("peak_rss_mib") else ""
            out.append(
                (
                    f"room: {n} {kind} /run_lab ({lab['steps']} steps, {lab['max_new_tokens']} tokens)",
                    f"makespan {secs(r['makespan'])} vs {versus} {secs(base)} = {r['ratio']:.2f}x "
                    f"(CPU time {r['cpu_ratio']:.2f}x); "
                    f"first step for the last in line {secs(r.get('first_step_last_in_line'))}"
                    f"{memory}{click_text}{shared_text}",
                )
            )
    out.append(("room: single-run times (each alone)", ", ".join(f"{s:.1f}" for s in section["singles"]) + " s"))
    return out
