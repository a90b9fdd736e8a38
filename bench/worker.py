"""One measurement in a fresh process: ``python -m bench.worker lab|load|probe|room ...``.

A fresh process is what a cold start is, and the only honest way to read a peak-memory figure:
``ru_maxrss`` is a high-water mark that never comes down within a process. The parent reads the
last stdout line, ``BENCH-RESULT {json}``.
"""

from __future__ import annotations

import json
import os
import sys
import time

STARTED = time.perf_counter()
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

MARKER = "BENCH-RESULT "


def _lab(spec: str) -> dict:
    from alignlab.lab import run_lab
    from alignlab.models import clear_model_cache, load_model
    from bench.common import Figure, cuda_peak_mib, load_seed_lab, peak_rss_mib, reset_cuda_peak

    preset = load_seed_lab()
    ready = time.perf_counter() - STARTED  # interpreter + imports, before the "click"
    marks: list[float] = []

    def on_event(event) -> None:  # noqa: ANN001
        if event.kind == "log":
            marks.append(event.elapsed)

    reset_cuda_peak()
    report, _ = run_lab(spec, preset, on_event=on_event)
    peak = peak_rss_mib()
    cuda = cuda_peak_mib()
    reload = Figure()  # a tab switch after clear_model_cache: the safetensors cache read again
    for _ in range(2):
        clear_model_cache()
        started = time.perf_counter()
        load_model(spec)
        reload.add(time.perf_counter() - started)
    ev = report["eval"]
    return {
        "process_ready_seconds": ready,
        "timings": report["timings"],
        "step_elapsed": marks,
        "peak_rss_mib": peak,
        "cuda_peak_mib": cuda,
        "reload_in_process_seconds": reload.samples,
        "heldout_accuracy": ev["heldout_reward_accuracy"],
        "kl_to_reference": ev["kl_to_reference"],
        "perplexity_before": ev["perplexity_before"],
        "perplexity_after": ev["perplexity_after"],
        "changed": report["changed"],
        "health": report["health"]["verdict"],
        "steps": report["settings"]["steps_done"],
        "device": report["model"]["device"],
    }


def _load(spec: str) -> dict:
    from alignlab.models import load_model
    from bench.common import peak_rss_mib

    started = time.perf_counter()
    load_model(spec)
    return {"load_seconds": time.perf_counter() - started, "peak_rss_mib": peak_rss_mib()}


def _probe(spec: str, options: dict) -> dict:
    from alignlab.models import load_model
    from alignlab.training import TrainingSettings
    from bench.common import load_seed_lab
    from bench.probe import probe_run

    preset = load_seed_lab()
    loaded = load_model(spec)
    return probe_run(
        loaded,
        preset.pairs,
        preset.heldout_pairs,
        TrainingSettings.from_dict(options.get("settings", {})),
        every_step=options.get("every_step", True),
    )


def _room(spec: str, options: dict) -> dict:
    from bench.room import run_in_process

    return run_in_process(spec, options)


def main(argv: list[str]) -> None:
    from bench.common import quiet

    quiet()
    mode, spec = argv[0], argv[1]
    if mode == "lab":
        result = _lab(spec)
    elif mode == "load":
        result = _load(spec)
    elif mode == "probe":
        result = _probe(spec, json.loads(argv[2]))
    elif mode == "room":
        result = _room(spec, json.loads(argv[2]))
    else:
        raise SystemExit(f"unknown mode {mode!r}: lab, load, probe or room")
    print(MARKER + json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
