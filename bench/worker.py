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


def _lab(spec: str, options: dict) -> dict:
    """The whole lab in this fresh process (its first call), then ``warm_runs`` more (warm calls).

    With ``warm_up``, :func:`alignlab.warmup.warm_up` runs first, as app.py does at start-up.
    """
    from alignlab.lab import run_lab
    from alignlab.models import clear_model_cache, load_model
    from alignlab.warmup import preload
    from bench.common import Figure, cuda_peak_mib, load_seed_lab, peak_rss_mib, reset_cuda_peak

    preset = load_seed_lab()
    preload()  # what app.py does at start-up on any machine
    ready = time.perf_counter() - STARTED  # interpreter + imports + preload, before the "click"
    warm_up_seconds = None
    if options.get("warm_up"):
        from alignlab.warmup import warm_up

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
        started = time.perf_counter()
        load_model(spec)
        reload.add(time.perf_counter() - started)
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


def _evidence(spec: str, options: dict) -> dict:
    """One implementation of the compare step on a dataset file (see bench/evidence.py)."""
    import copy

    import torch

    from alignlab.generation import GenerationSettings, generate
    from alignlab.models import load_model
    from alignlab.presets import load_dataset_file
    from alignlab.training import TrainingSettings
    from bench.common import peak_rss_mib

    loaded = load_model(spec)
    preset = load_dataset_file(options["dataset"], seed=0)

    def perturbed(seed: int) -> torch.nn.Module:
        """The reference with a fixed, seeded perturbation of its weights (scoring costs the same)."""
        torch.manual_seed(seed)
        model = copy.deepcopy(loaded.model)
        with torch.no_grad():
            for param in model.parameters():
                param.add_(1e-3 * torch.randn_like(param))
        return model

    policy = perturbed(0)
    rss_before = peak_rss_mib()
    beta = TrainingSettings().beta
    started = time.perf_counter()
    aligned = generate(loaded, preset.eval_prompts, GenerationSettings(), model=policy)  # the same code for both
    generated = time.perf_counter()
    extra: dict = {}
    if options["impl"] == "legacy":
        from bench.legacy_evidence import gather_evidence

        evidence = gather_evidence(policy, loaded, preset.heldout_pairs, preset.eval_prompts, aligned, beta)
    else:  # what alignlab.lab.compare and build_report do after generating
        from alignlab.degeneration import degeneration_report
        from alignlab.evaluation import gather_evidence
        from alignlab.health import RunFacts, read_health
        from alignlab.presets import capability_probe

        capability, source = capability_probe(preset)

        def gather(model: torch.nn.Module):
            return gather_evidence(
                model,
                loaded,
                preset.heldout_pairs,
                preset.eval_prompts,
                aligned,
                beta,
                contrast_pairs=preset.contrast_pairs,
                capability_pairs=capability,
                capability_source=source,
            )

        evidence = gather(policy)
        degeneration = degeneration_report(aligned, aligned).to_dict()
        verdict = read_health(
            RunFacts([{"step": 1, "loss": 0.69}], beta, evidence.to_dict(), degeneration, [], 0, len(aligned))
        )
        extra = {"verdict": verdict.verdict, "capability_source": source, "capability_pairs": len(capability)}
    ended = time.perf_counter()
    if options["impl"] != "legacy" and options.get("repeat", True):
        # A second run on the same data in the same process (a learner retraining, a room on one
        # preset): another policy, the same reference, whose scores the process already holds.
        second = perturbed(1)
        again = time.perf_counter()
        gather(second)
        extra["repeat_evidence_seconds"] = time.perf_counter() - again
        del second
    figures = ("heldout_reward_accuracy", "heldout_mean_margin", "kl_to_reference", "perplexity_after")
    return {
        "impl": options["impl"],
        "pairs": {
            "train": len(preset.pairs),
            "heldout": len(preset.heldout_pairs),
            "eval_prompts": len(preset.eval_prompts),
        },
        "generate_seconds": generated - started,
        "evidence_seconds": ended - generated,
        "peak_rss_mib": peak_rss_mib(),  # the whole process, the repeat included
        "rss_before_mib": rss_before,
        "figures": {k: getattr(evidence, k) for k in figures},
        "extra": extra,
    }


def _calibrate(spec: str, options: dict) -> dict:
    from bench.calibration import CASES, SWEEP, run_case

    return run_case(spec, SWEEP[options["sweep"]] if "sweep" in options else CASES[options["case"]])


def _room(spec: str, options: dict) -> dict:
    from bench.room import run_in_process

    return run_in_process(spec, options)


def _comparison(spec: str, options: dict) -> dict:
    from bench.methods import comparison_in_process

    return comparison_in_process(spec, options)


def _method_steps(spec: str, options: dict) -> dict:
    from bench.methods import method_steps

    return method_steps(spec, options)


def main(argv: list[str]) -> None:
    mode, spec = argv[0], argv[1]
    options = json.loads(argv[2]) if len(argv) > 2 else {}
    if options.get("impl") != "legacy":  # the code before issue 8 ran without it: measured as it was
        from alignlab.memory import keep_freed_memory

        keep_freed_memory()  # what app.py and the CLI do first at start-up, before any thread starts
    from bench.common import quiet

    quiet()
    if mode == "lab":
        result = _lab(spec, options)
    elif mode == "load":
        result = _load(spec)
    elif mode == "probe":
        result = _probe(spec, options)
    elif mode == "evidence":
        result = _evidence(spec, options)
    elif mode == "calibrate":
        result = _calibrate(spec, options)
    elif mode == "room":
        result = _room(spec, options)
    elif mode == "comparison":
        result = _comparison(spec, options)
    elif mode == "method_steps":
        result = _method_steps(spec, options)
    else:
        raise SystemExit(
            f"unknown mode {mode!r}: lab, load, probe, evidence, calibrate, room, comparison or method_steps"
        )
    print(MARKER + json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
