"""The methods side by side: a comparison from click to filled table, and each method's cost beside a
plain TRL script of the same method.

- *comparison*: in a fresh process (``python -m bench.worker comparison``) the app is started on the
  bench's model as ``app.py`` starts it (preload, then the start-up warm-up, reported apart) and one
  ``gradio_client`` calls ``/run_comparison`` (default dpo, ipo, kto, orpo on
  seed-lab, each at its own defaults), as the presenter's button does: baseline once, then each method
  trained and compared in turn. Click-to-table seconds, and every run's evidence row.
- *per method*: two fresh processes per method (``python -m bench.worker method_steps``), each on the
  seed lab's pairs with the method's defaults: AlignLab's ``train_policy`` as the lab runs it (its live
  held-out probe after each step included) and a plain script that builds TRL's trainer for the method
  directly (the method's config class with the same learning rate, beta, batch, steps and the stage's own
  fields, fp32, no gradient checkpointing; the pairs as TRL's conversational rows; the reference a second
  copy of the model). Seconds per step after one warm-up step, and the process's peak resident memory.

Nothing here passes or fails: the bench's targets are reported as met or not.
"""

from __future__ import annotations

import copy
import json
import tempfile
import time
from typing import Any

from bench.common import Figure
from bench.protocol import run_worker

#: What the comparison runs by default.
METHODS = ("dpo", "ipo", "kto", "orpo")


def run(spec: str, device: str | None, methods: tuple[str, ...] = METHODS, steps: int | None = None) -> dict[str, Any]:
    options = {"methods": ",".join(methods), "steps": steps}
    comparison = run_worker("comparison", spec, device, json.dumps(options))
    per_method: dict[str, Any] = {}
    for name in methods:
        mine = run_worker(
            "method_steps", spec, device, json.dumps({"method": name, "runner": "alignlab", "steps": steps})
        )
        plain = run_worker(
            "method_steps", spec, device, json.dumps({"method": name, "runner": "plain", "steps": steps})
        )
        per_method[name] = {
            "alignlab_step": Figure(mine["step_seconds"][1:]).to_dict(),
            "plain_trl_step": Figure(plain["step_seconds"][1:]).to_dict(),
            "ratio": _ratio(mine["step_seconds"][1:], plain["step_seconds"][1:]),
            "alignlab_peak_rss_mib": mine["peak_rss_mib"],
            "plain_trl_peak_rss_mib": plain["peak_rss_mib"],
            "alignlab_config": mine["config"],
            "plain_trl_config": plain["config"],
        }
    return {"comparison": comparison, "per_method": per_method}


def _ratio(ours: list[float], theirs: list[float]) -> float | None:
    if not ours or not theirs:
        return None
    return Figure(ours).median / Figure(theirs).median


# --------------------------------------------------------------------------- in the worker processes


def comparison_in_process(spec: str, options: dict[str, Any]) -> dict[str, Any]:
    """The app on ``spec`` in this process; one client presses the comparison; click-to-table seconds."""
    import os

    from gradio_client import Client

    from bench.common import peak_rss_mib

    os.environ["ALIGNLAB_DEFAULT_MODEL"] = spec
    from alignlab.pipeline.warmup import preload, warm_up
    from alignlab.ui import build_app, default_preset, launch_options

    demo = build_app()
    preload()  # the app as app.py starts it: preload, then the start-up warm-up on the opening preset
    warm_up_seconds = warm_up(spec, preset=default_preset()).get("total")
    demo.session_store.root = tempfile.mkdtemp(prefix="bench-comparison-")
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **launch_options())
    try:
        client = Client(url, verbose=False)
        arguments = {"methods": options["methods"], "api_name": "/run_comparison"}
        if options.get("steps"):
            arguments["steps"] = options["steps"]
        started = time.perf_counter()
        result = client.predict(**arguments)
        seconds = time.perf_counter() - started
    finally:
        demo.close()
    return {
        "methods": options["methods"],
        "click_to_table_seconds": seconds,
        "warm_up_seconds": warm_up_seconds,
        "table": result["table"],
        "timings": [r["timings"] for r in result["runs"]],
        "codes": [r["health"].get("codes") for r in result["runs"]],
        "peak_rss_mib": peak_rss_mib(),
    }


def method_steps(spec: str, options: dict[str, Any]) -> dict[str, Any]:
    """One method's training in this fresh process: AlignLab's runner or a plain TRL script."""
    from alignlab.models.loading import load_model
    from alignlab.pipeline.steps import run_probe
    from alignlab.registry.settings import TrainingSettings
    from alignlab.training.run import train_policy
    from bench.common import load_seed_lab, peak_rss_mib

    preset = load_seed_lab()
    overrides = {"steps": options["steps"]} if options.get("steps") else {}
    settings = TrainingSettings.for_method(options["method"], **overrides)
    loaded = load_model(spec)
    if options["runner"] == "alignlab":
        marks: list[float] = []

        def on_event(event) -> None:  # noqa: ANN001
            if event.kind == "log":
                marks.append(event.elapsed)

        probe = run_probe(loaded, preset, settings)
        train_policy(loaded, preset.pairs, settings, on_event=on_event, probe=probe.curve_point)
        steps = [b - a for a, b in zip([0.0, *marks], marks)]
        config = {"runner": "alignlab.training.run.train_policy", "probe": "held-out and contrast after every step"}
    else:
        steps, config = plain_trl(loaded, preset.pairs, settings)
    return {"step_seconds": steps, "peak_rss_mib": peak_rss_mib(), "config": config}


def plain_trl(loaded: Any, pairs: list, settings: Any) -> tuple[list[float], dict[str, Any]]:
    """The method's TRL trainer built directly, as a script following TRL's docs would."""
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback

    from alignlab.data.pairs import thumbs_from_pairs
    from alignlab.registry.methods import resolve
    from alignlab.training.trl_rows import preference_row, thumbs_row
    from bench.training import StepClock

    stage = settings.method_entry.stage
    if stage.reads_thumbs:  # each pair as its chosen answer (desirable) and its rejected answer (undesirable)
        rows = [thumbs_row(r.prompt, r.completion, r.label, chat=True) for r in thumbs_from_pairs(pairs)]
    else:
        rows = [preference_row(p, chat=True) for p in pairs]
    clock = StepClock(loaded.device)
    with tempfile.TemporaryDirectory(prefix="bench-plain-") as scratch:
        fields = {
            "output_dir": scratch,
            "use_cpu": loaded.device.type != "cuda",
            "learning_rate": settings.learning_rate,
            "per_device_train_batch_size": settings.batch_size * stage.rows_per_pair,
            "max_steps": settings.steps,
            "logging_steps": 1,
            "bf16": False,
            "gradient_checkpointing": False,
            "report_to": "none",
            "disable_tqdm": True,
            "save_strategy": "no",
            **stage.own_fields(settings),  # beta, the loss variant, what the method fixes
        }
        kwargs: dict[str, Any] = {
            "model": copy.deepcopy(loaded.model).train(),
            "args": resolve(stage.config)(**fields),
            "train_dataset": Dataset.from_list(rows),
            "processing_class": loaded.tokenizer,
            "callbacks": [clock],
        }
        if stage.has_reference:
            kwargs["ref_model"] = copy.deepcopy(loaded.model)
        trainer = resolve(stage.trainer)(**kwargs)
        trainer.remove_callback(PrinterCallback)
        trainer.train()
    config = {"trainer": stage.trainer, "config": stage.config, "fp32": True, "gradient_checkpointing": False}
    return clock.step_seconds, config


def table_rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    """Table rows: the comparison, each of its runs, then each method against plain TRL."""
    comparison = result["comparison"]
    names = ", ".join(row["method"] for row in comparison["table"])
    out = [(f"methods: comparison click-to-table ({names})", f"{comparison['click_to_table_seconds']:.1f} s")]
    if comparison.get("warm_up_seconds") is not None:
        out.append(("methods: the app's start-up warm-up, before the click", f"{comparison['warm_up_seconds']:.1f} s"))
    for row in comparison["table"]:
        out.append(
            (
                f"methods: run {row['run']} {row['method']}",
                f"held-out {_fmt(row['heldout_accuracy'])}, contrast {_fmt(row['contrast_accuracy'])}, "
                f"KL {_fmt(row['kl_to_reference'], 3)}, changed {row['changed']}, {row['verdict']}, "
                f"{_fmt(row['seconds_per_step'])} s/step",
            )
        )
    for name, f in result["per_method"].items():
        ratio = "-" if f["ratio"] is None else f"{f['ratio']:.2f}x"
        out.append(
            (
                f"methods: {name} step, AlignLab (with live probe) vs plain TRL",
                f"{_fmt(f['alignlab_step']['median'])} s vs {_fmt(f['plain_trl_step']['median'])} s = {ratio}; "
                f"peak RSS {f['alignlab_peak_rss_mib']:.0f} vs {f['plain_trl_peak_rss_mib']:.0f} MiB",
            )
        )
    return out


def _fmt(value: Any, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
