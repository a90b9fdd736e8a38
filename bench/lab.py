"""The whole lab (``alignlab.pipeline.steps.run_lab``, seed-lab preset, default settings), stage by stage.

Every run is a fresh process (:func:`in_process`, through :mod:`bench.worker`) sharing one new
``ALIGNLAB_CACHE``: the first run finds the cache empty and pays the cold load (for the embedded
default, the GGUF conversion; on a GPU, the compilation of TRL's Triton kernels, whose cache lives
there too), the later ones read the cached safetensors and kernels, as a restarted app would. More
cold loads come from load-only processes (:func:`load_in_process`), each with its own empty cache.
Inside each lab process the model is also reloaded after ``clear_model_cache()`` (a cached load
without a process start).

The first lab in a process is reported apart from the ``warm_runs`` that follow it in the same
process (a GPU server's later clicks), and one more process runs the start-up warm-up
(:mod:`alignlab.pipeline.warmup`) before its first lab, as app.py does.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from typing import Any

from bench.common import Figure, cuda_peak_mib, figure_text, load_seed_lab, peak_rss_mib, reset_cuda_peak
from bench.protocol import run_worker


def run(spec: str, device: str | None, repeats: int, cold_loads: int, warm_runs: int = 0) -> dict[str, Any]:
    cache = tempfile.mkdtemp(prefix="bench-cache-")
    env = {"ALIGNLAB_CACHE": cache, "TRITON_CACHE_DIR": os.path.join(cache, "triton")}
    options = json.dumps({"warm_runs": warm_runs})
    runs = []
    try:
        for _ in range(max(2, repeats)):  # run 1 is cold; at least one cached run
            runs.append(run_worker("lab", spec, device, options, env=env))
        warmed = run_worker("lab", spec, device, json.dumps({"warm_up": True}), env=env)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    cold_only = []
    for _ in range(max(0, cold_loads - 1)):
        fresh = tempfile.mkdtemp(prefix="bench-cache-")
        try:
            cold_only.append(run_worker("load", spec, device, env={"ALIGNLAB_CACHE": fresh}))
        finally:
            shutil.rmtree(fresh, ignore_errors=True)

    cold, cached = runs[0], runs[1:]
    figures = {
        "load_cold": Figure([cold["timings"]["load_model"]] + [r["load_seconds"] for r in cold_only]),
        "load_cached_fresh_process": Figure([r["timings"]["load_model"] for r in cached]),
        "load_cached_in_process": Figure([s for r in runs for s in r["reload_in_process_seconds"]]),
        "baseline": Figure([r["timings"]["baseline"] for r in runs]),
        "train": Figure([r["timings"]["train"] for r in runs]),
        "evaluate": Figure([r["timings"]["evaluate"] for r in runs]),
        "total_cached": Figure([r["timings"]["total"] for r in cached]),
        "total_cold": Figure([cold["timings"]["total"]]),
        "process_start_and_imports": Figure([r["process_ready_seconds"] for r in runs]),
        "peak_rss_cached": Figure([r["peak_rss_mib"] for r in cached], unit="MiB"),
        "peak_rss_cold": Figure([cold["peak_rss_mib"]] + [r["peak_rss_mib"] for r in cold_only], unit="MiB"),
    }
    if cold.get("cuda_peak_mib") is not None:
        figures["cuda_peak"] = Figure([r["cuda_peak_mib"] for r in runs], unit="MiB")
    warm = [t for r in runs for t in r["warm_timings"]]
    if warm:
        figures["total_warm"] = Figure([t["total"] for t in warm])
        figures["train_warm"] = Figure([t["train"] for t in warm])
        figures["evaluate_warm"] = Figure([t["evaluate"] for t in warm])
        figures["train_first_cached"] = Figure([r["timings"]["train"] for r in cached])
        figures["evaluate_first_cached"] = Figure([r["timings"]["evaluate"] for r in cached])
    figures["warm_up"] = Figure([warmed["warm_up_seconds"]])
    figures["total_after_warm_up"] = Figure([warmed["timings"]["total"]])
    return {
        "model": spec,
        "device": cold["device"],
        "steps": cold["steps"],
        "figures": {k: v.to_dict() for k, v in figures.items()},
        "outcome": {
            k: [r[k] for r in runs]
            for k in (
                "heldout_accuracy",
                "kl_to_reference",
                "perplexity_before",
                "perplexity_after",
                "changed",
                "health",
            )
        },
        "step_elapsed": [r["step_elapsed"] for r in runs],
    }


# --------------------------------------------------------------------------- in the worker processes


def in_process(spec: str, options: dict[str, Any], started: float) -> dict[str, Any]:
    """The whole lab in this fresh process (its first call), then ``warm_runs`` more (warm calls).

    ``started``: when the process began (``time.perf_counter``). With ``warm_up``,
    :func:`alignlab.pipeline.warmup.warm_up` runs first, as app.py does at start-up.
    """
    from alignlab.models.loading import clear_model_cache, load_model
    from alignlab.pipeline.steps import run_lab
    from alignlab.pipeline.warmup import preload, warm_up

    preset = load_seed_lab()
    preload()  # what app.py does at start-up on any machine
    ready = time.perf_counter() - started  # interpreter + imports + preload, before the "click"
    warm_up_seconds = None
    if options.get("warm_up"):
        warm_up_seconds = warm_up(spec, preset=preset).get("total")  # as app.py, on the preset it opens on
    marks: list[float] = []

    def on_event(event) -> None:  # noqa: ANN001
        if event.kind == "log":
            marks.append(event.elapsed)

    reset_cuda_peak()
    report, _ = run_lab(spec, preset, on_event=on_event)
    peak = peak_rss_mib()
    cuda = cuda_peak_mib()
    warm = [run_lab(spec, preset)[0]["timings"] for _ in range(int(options.get("warm_runs", 0)))]
    reload = Figure()  # a tab switch after clear_model_cache: the safetensors cache read again
    for _ in range(2):
        clear_model_cache()
        mark = time.perf_counter()
        load_model(spec)
        reload.add(time.perf_counter() - mark)
    ev = report["eval"]
    return {
        "process_ready_seconds": ready,
        "warm_up_seconds": warm_up_seconds,
        "timings": report["timings"],
        "warm_timings": warm,
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


def load_in_process(spec: str, options: dict[str, Any]) -> dict[str, Any]:
    """One model load in this fresh process (a cold load, when its cache is empty)."""
    from alignlab.models.loading import load_model

    mark = time.perf_counter()
    load_model(spec)
    return {"load_seconds": time.perf_counter() - mark, "peak_rss_mib": peak_rss_mib()}


def table_rows(lb: dict[str, Any]) -> list[tuple[str, str]]:
    """The bench table's rows: each figure of the lab, then its outcome."""
    rows: list[tuple[str, str]] = []
    f = lb["figures"]
    names = [
        ("load_cold", "lab: model load, cold (empty cache)"),
        ("load_cached_fresh_process", "lab: model load, cached (fresh process)"),
        ("load_cached_in_process", "lab: model load, cached (after clear_model_cache)"),
        ("baseline", "lab: baseline generation"),
        ("train", f"lab: training ({lb['steps']} steps)"),
        ("evaluate", "lab: evaluation (compare + evidence)"),
        ("total_cached", "lab: total, first call in a fresh process (model + kernels cached)"),
        ("total_cold", "lab: total, first call on a new machine (empty caches)"),
        ("train_first_cached", "lab: training, first call in a fresh process"),
        ("evaluate_first_cached", "lab: evaluation, first call in a fresh process"),
        ("total_warm", "lab: total, warm call (same process, after the first)"),
        ("train_warm", "lab: training, warm call"),
        ("evaluate_warm", "lab: evaluation, warm call"),
        ("warm_up", "lab: start-up warm-up (alignlab.pipeline.warmup, as app.py runs it)"),
        ("total_after_warm_up", "lab: total, first call after the start-up warm-up"),
        ("process_start_and_imports", "lab: process start + imports + preload (before the click)"),
        ("peak_rss_cached", "lab: peak RSS, cached run"),
        ("peak_rss_cold", "lab: peak RSS, cold run / cold load"),
        ("cuda_peak", "lab: peak CUDA memory allocated"),
    ]
    rows += [(label, figure_text(f.get(key))) for key, label in names if key in f]
    o = lb["outcome"]
    rows.append(
        ("lab: held-out accuracy / changed / health", f"{o['heldout_accuracy']} / {o['changed']} / {o['health']}")
    )
    return rows
