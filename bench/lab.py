"""The whole lab (``alignlab.lab.run_lab``, seed-lab preset, default settings), stage by stage.

Every run is a fresh process (:mod:`bench.worker`) sharing one new ``ALIGNLAB_CACHE``: the first
run finds the cache empty and pays the cold load (for the embedded default, the GGUF conversion;
on a GPU, the compilation of TRL's Triton kernels, whose cache lives there too), the later ones
read the cached safetensors and kernels, as a restarted app would. More cold loads come from
load-only processes, each with its own empty cache. Inside each lab process the model is also
reloaded after ``clear_model_cache()`` (a cached load without a process start).

The first lab in a process is reported apart from the ``warm_runs`` that follow it in the same
process (a GPU server's later clicks), and one more process runs the start-up warm-up
(:mod:`alignlab.warmup`) before its first lab, as app.py does.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any

from bench.common import Figure, run_worker


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
        "_figures": figures,
    }
