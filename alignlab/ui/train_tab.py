"""Step 3, Train: DPO hyperparameters, Start and Stop, live plots, a log table and a health reading."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import gradio as gr

from alignlab import gpu, plots
from alignlab.health import Health, read_training_health
from alignlab.presets import DatasetError, PreferencePair, Preset, load_preset, validate_preset
from alignlab.training import LOSS_TYPES, SettingsError, TrainingSettings
from alignlab.ui import jobs
from alignlab.ui.common import (
    HEAVY,
    HEAVY_LIMIT,
    api_doc,
    fail,
    pairs_from_table,
    problems_markdown,
    real_number,
    session_of,
    whole_number,
)
from alignlab.ui.state import Run, Session

INTRO = (
    "**Step 3 — Train.** DPO raises the likelihood of each *chosen* answer relative to the *rejected* one. "
    "**β is the leash:** a small β lets the model drift far from the original, a large β holds it close."
)
DEFAULTS = TrainingSettings()
#: Steps logged closer together than this are drawn together (every row is kept): a tiny model or
#: a fast GPU logs many steps a second, more redraws than a browser can follow. Real runs on a
#: CPU take seconds per step, so every step is drawn.
MIN_REDRAW_SECONDS = 0.25
VERDICT_WORDS = {"healthy": "HEALTHY", "warning": "WARNING", "failed": "FAILED"}


# --------------------------------------------------------------------------- handlers


def settings_from_inputs(
    beta: Any, learning_rate: Any, steps: Any, batch_size: Any, loss_type: Any, seed: Any
) -> TrainingSettings:
    """TrainingSettings from the widgets (or API values), each field checked with a clear message."""
    if loss_type not in LOSS_TYPES:
        raise fail(f"loss type must be one of {', '.join(LOSS_TYPES)} (got {loss_type!r}).", "Out of range")
    try:
        return TrainingSettings(
            beta=real_number(beta, "β (beta)", 0.01, 1.0),
            learning_rate=real_number(learning_rate, "learning rate", 1e-7, 1e-3),
            steps=whole_number(steps, "steps", 1, 500),
            batch_size=whole_number(batch_size, "batch size", 1, 64),
            loss_type=loss_type,
            seed=whole_number(seed, "seed", 0, 2**32 - 1),
        )
    except SettingsError as exc:
        raise gr.Error(str(exc), title="Training settings") from exc


SEVERITY_MARKS = {"failed": "✖", "warning": "⚠", "info": "ℹ", "good": "✔"}


def health_markdown(health: dict[str, Any] | Health, title: str = "Training health") -> str:
    """The verdict and each finding, marked by severity and tagged with its code."""
    health = health.to_dict() if isinstance(health, Health) else health
    details = health.get("details") or [{"code": "", "severity": "", "text": t} for t in health.get("findings", [])]
    lines = "\n".join(
        f"- {SEVERITY_MARKS.get(d['severity'], '')} {d['text']}" + (f" `{d['code']}`" if d.get("code") else "")
        for d in details
    )
    verdict = health["verdict"]
    best = health.get("best_step")
    best_line = f"\n\nBest held-out step: **{best}**." if best is not None else ""
    return f"### {title}: {VERDICT_WORDS.get(verdict, verdict.upper())}\n{lines}{best_line}"


def progress_line(step: int, total: int, elapsed: float) -> str:
    left = max(0, total - step)
    return f"**Step {step} of {total}** · {elapsed:.1f} s elapsed · {left} step{'' if left == 1 else 's'} left"


def view(status: str, rows: list[dict[str, Any]], health: str = "") -> tuple[Any, ...]:
    """The Train tab's outputs: status, the five plots, the log table, the health reading."""
    return (status, *plots.all_frames(rows), health)


def finished_view(session: Session) -> tuple[Any, ...]:
    """The Train tab after a run: final figures, where it stopped, and the health reading."""
    training = session.training
    if training is None:
        return view("No training run has finished in this session yet.", session.log_rows)
    done, total = training["steps_done"], training["total_steps"]
    if training["stopped_early"]:
        status = f"**Stopped after {done} of {total} steps** ({training['seconds']:.1f} s)."
    else:
        status = f"**Finished {done} of {total} steps** in {training['seconds']:.1f} s."
    if session.policy_dir is not None:
        status += " Next: the **Compare** tab shows what changed."
    else:
        status += " No step finished, so there is nothing to compare: press Start again."
    health = read_training_health(
        [r for r in training["log_history"] if "loss" in r and "step" in r],
        beta=training["settings"]["beta"],
        heldout_curve=training.get("heldout_curve"),
    )
    note = "\n\n*The full verdict, with the answers checked for collapse, loops and templates, is on the Compare tab.*"
    return view(status, session.log_rows, health_markdown(health) + note)


def _check_ready(session: Session, pairs_table: Any, heldout_table: Any) -> tuple[list, list]:
    if session.training_now:
        raise fail("A training run is already in progress in this session: wait for it or press Stop.")
    if not session.baseline_outputs or not session.model_spec:
        raise fail(
            "Record the baseline first (Baseline tab, “Load model and record answers”): "
            "Compare needs the answers from before training."
        )
    pairs, heldout = pairs_from_table(pairs_table), pairs_from_table(heldout_table)
    if not pairs:
        raise fail("There are no training pairs: add at least one row on the Dataset tab (or pick a preset).")
    problems = validate_preset(Preset("train", "", "", [], pairs, heldout))
    if problems:
        raise gr.Error("Fix the dataset first (Dataset tab):\n" + problems_markdown(problems), title="Dataset")
    return pairs, heldout


def probes_for(pairs: list[PreferencePair], probes: dict[str, Any]) -> dict[str, Any]:
    """The probe sets that fit these training pairs, and the preset id the report names.

    The preset's own pairs keep its id and probes. Pairs edited from it (most prompts still the
    preset's) are ``custom`` but keep its probes, which test the same preference. Pairs of another
    origin (an API client's own) get no contrast pairs and the built-in capability set.
    """
    preset_id = probes.get("preset") or "custom"
    try:
        preset = load_preset(preset_id)
    except DatasetError:
        return {"preset": "custom", "contrast_pairs": probes.get("contrast_pairs") or [], **_capability(probes)}
    if pairs == preset.pairs:
        return {"preset": preset.id, "contrast_pairs": probes.get("contrast_pairs") or [], **_capability(probes)}
    shared = len({p.prompt for p in pairs} & {p.prompt for p in preset.pairs})
    if shared * 2 >= len(pairs):
        return {"preset": "custom", "contrast_pairs": probes.get("contrast_pairs") or [], **_capability(probes)}
    return {"preset": "custom", "contrast_pairs": [], "capability_pairs": []}


def _capability(probes: dict[str, Any]) -> dict[str, Any]:
    return {"capability_pairs": probes.get("capability_pairs") or []}


def train_ui(
    pairs: Any,
    heldout_pairs: Any,
    probes: dict[str, Any] | None,
    beta: float,
    learning_rate: float,
    steps: float,
    batch_size: float,
    loss_type: str,
    seed: float,
    request: gr.Request,
) -> Iterator[tuple[Any, ...]]:
    """Run DPO on the pairs, streaming one update per logged step; needs /baseline first.

    Args:
        pairs: training pairs, a table with the columns prompt, chosen, rejected.
        heldout_pairs: held-out pairs (same columns), scored after every step (the live held-out curve) and on Compare.
        probes: the preset's probe sets (contrast and capability pairs), kept by the Dataset tab.
        beta: DPO β, 0.01-1.0: how tightly the model is held to the original.
        learning_rate: optimizer step size, 1e-7 to 1e-3.
        steps: optimizer steps, 1-500.
        batch_size: pairs per step, 1-64.
        loss_type: sigmoid (DPO), ipo, hinge, robust, apo_zero, sppo_hard, nca_pair or bco_pair.
        seed: seed for data order: the same seed and data give the same run.
    Returns:
        Streams (status, loss plot, margin plot, rewards plot, accuracy plot, held-out plot, log table, health).
    """
    session = session_of(request)
    settings = settings_from_inputs(beta, learning_rate, steps, batch_size, loss_type, seed)
    train_pairs, heldout = _check_ready(session, pairs, heldout_pairs)
    session.forget_training()
    session.pairs, session.heldout_pairs = train_pairs, heldout
    probes = probes_for(train_pairs, probes or {})
    session.contrast_pairs = jobs.pairs_from_dicts(probes["contrast_pairs"])
    session.capability_pairs = jobs.pairs_from_dicts(probes["capability_pairs"])
    session.preset_id = probes["preset"]
    run = session.run = Run()
    stream = jobs.train_job(
        session.model_spec,
        jobs.pairs_to_dicts(train_pairs),
        settings.to_dict(),
        str(session.path("policy")),
        run.id,
        jobs.pairs_to_dicts(heldout),
        jobs.pairs_to_dicts(session.contrast_pairs),
    )
    rows: list[dict[str, Any]] = []
    finished = False
    try:
        yield view(
            f"**Starting** DPO on {len(train_pairs)} pairs with `{session.model_spec}`: preparing TRL and "
            "scoring the held-out pairs once with the original model (the reference for the live held-out curve)…",
            rows,
        )
        last_redraw = 0.0
        for event in stream:
            record(session, settings, rows, event)
            if event["kind"] != "log":
                yield finished_view(session)
            elif time.monotonic() - last_redraw >= MIN_REDRAW_SECONDS or event["step"] >= event["total_steps"]:
                last_redraw = time.monotonic()
                yield view(progress_line(event["step"], event["total_steps"], event["elapsed"]), rows)
        finished = True
    finally:
        if finished:
            run.finish()
        else:  # cancelled (Stop, a closed tab, a client's cancel): end the run without blocking the server
            run.cancel.cancel()
            args = (stream, run, session, settings, rows)
            threading.Thread(target=_wind_down, args=args, name="alignlab-stop", daemon=True).start()


def record(session: Session, settings: TrainingSettings, rows: list[dict[str, Any]], event: dict[str, Any]) -> None:
    """Keep a streamed event in the session: a log row, or the finished run and where its policy is."""
    if event["kind"] == "log":
        rows.append(event["row"])
        session.log_rows = rows
        return
    session.training = {
        "settings": settings.to_dict(),
        "log_history": event["log_history"],
        "steps_done": event["steps_done"],
        "total_steps": event["total_steps"],
        "stopped_early": event["stopped_early"],
        "seconds": event["seconds"],
        "heldout_curve": event.get("heldout_curve", []),
    }
    session.timings["train"] = event["seconds"]
    session.policy_dir = session.path("policy") if event["policy_dir"] else None


def _wind_down(
    stream: Iterator[dict[str, Any]], run: Run, session: Session, settings: TrainingSettings, rows: list
) -> None:
    """After a cancelled stream: let the run end at this step and keep its result (policy included).

    Locally the cancel token reaches the training thread, so the stream ends after the current
    step and is read to its end. In a ZeroGPU worker the token cannot reach it, so the stream is
    closed instead, which stops the run without a result.
    """
    try:
        if gpu.on_zero_gpu():
            stream.close()
        else:
            for event in stream:
                record(session, settings, rows, event)
    except Exception:  # noqa: BLE001 - nobody is listening any more; the session shows what was kept
        pass
    finally:
        run.finish()


def stop_ui(request: gr.Request) -> tuple[Any, ...]:
    """Stop this session's training run at the end of the current step (other users are unaffected).

    Returns:
        The Train tab's final state: status, plots, log table, health.
    """
    session = session_of(request)
    run = session.run
    if run is None or run.done.is_set():
        gr.Info("Nothing is training in this session.")
        return finished_view(session)
    run.cancel.cancel()
    run.done.wait(timeout=600)
    return finished_view(session)


# --------------------------------------------------------------------------- layout and events


def build() -> SimpleNamespace:
    gr.Markdown(INTRO, elem_classes="al-intro")
    with gr.Row():
        beta = gr.Number(DEFAULTS.beta, label="β (beta)", info="0.01-1.0. Higher = stay closer to the original.")
        learning_rate = gr.Number(
            DEFAULTS.learning_rate, label="Learning rate", info="1e-7 to 1e-3. Too high and training goes unstable."
        )
        steps = gr.Number(DEFAULTS.steps, label="Steps", info="1-500 optimizer steps. More = bigger change.")
        batch_size = gr.Number(DEFAULTS.batch_size, label="Batch size", info="1-64 pairs per step.")
    with gr.Row():
        loss_type = gr.Dropdown(
            [(f"{name} — {text}", name) for name, text in LOSS_TYPES.items()],
            value=DEFAULTS.loss_type,
            label="Loss type",
            info="sigmoid is the original DPO.",
            scale=3,
        )
        seed = gr.Number(DEFAULTS.seed, label="Seed", info="Same seed + data = same run.", scale=1)
    with gr.Row():
        start = gr.Button("Start training", variant="primary", elem_id="train-start")
        stop = gr.Button("Stop", variant="stop", elem_id="train-stop")
    status = gr.Markdown(
        "Press **Start training** once the baseline is recorded.", label="status", elem_id="train-status"
    )
    plot = {"x": "step", "height": 260, "show_label": False}
    with gr.Row():
        loss_plot = gr.LinePlot(
            y="loss", label="loss plot", title="DPO loss (should fall)", elem_id="plot-loss", **plot
        )
        margin_plot = gr.LinePlot(
            y="margin",
            label="margin plot",
            title="Reward margin: chosen − rejected (should rise)",
            elem_id="plot-margin",
            **plot,
        )
    with gr.Row():
        rewards_plot = gr.LinePlot(
            y="reward",
            color="answer",
            label="rewards plot",
            title="Rewards: chosen vs rejected",
            elem_id="plot-rewards",
            **plot,
        )
        accuracy_plot = gr.LinePlot(
            y="accuracy",
            label="accuracy plot",
            title="Reward accuracy (running mean)",
            y_lim=[0, 1],
            elem_id="plot-accuracy",
            **plot,
        )
    with gr.Row():
        heldout_plot = gr.LinePlot(
            y="accuracy",
            color="pairs",
            label="held-out plot",
            title="Held-out evidence after each step: pairs never trained on (should rise and stay up)",
            y_lim=[0, 1],
            elem_id="plot-heldout",
            **plot,
        )
    health = gr.Markdown(label="health", elem_id="train-health")
    log_table = gr.Dataframe(
        headers=list(plots.LOG_COLUMNS),
        interactive=False,
        label="log",
        elem_id="train-log",
        max_height=300,
    )
    return SimpleNamespace(
        beta=beta,
        learning_rate=learning_rate,
        steps=steps,
        batch_size=batch_size,
        loss_type=loss_type,
        seed=seed,
        start=start,
        stop=stop,
        status=status,
        loss_plot=loss_plot,
        margin_plot=margin_plot,
        rewards_plot=rewards_plot,
        accuracy_plot=accuracy_plot,
        heldout_plot=heldout_plot,
        log_table=log_table,
        health=health,
    )


def inputs(tab: SimpleNamespace, dataset: SimpleNamespace) -> list[Any]:
    return [
        dataset.pairs,
        dataset.heldout,
        dataset.probes,
        tab.beta,
        tab.learning_rate,
        tab.steps,
        tab.batch_size,
        tab.loss_type,
        tab.seed,
    ]


def outputs(tab: SimpleNamespace) -> list[Any]:
    return [
        tab.status,
        tab.loss_plot,
        tab.margin_plot,
        tab.rewards_plot,
        tab.accuracy_plot,
        tab.heldout_plot,
        tab.log_table,
        tab.health,
    ]


def wire(tab: SimpleNamespace, dataset: SimpleNamespace) -> Any:
    """Start streams ``/train``; returns that event so that Stop (wired in blocks.py) can cancel it."""
    return tab.start.click(
        train_ui,
        inputs(tab, dataset),
        outputs(tab),
        api_name="train",
        api_description=api_doc(train_ui),
        concurrency_id=HEAVY,
        concurrency_limit=HEAVY_LIMIT,
        show_progress="minimal",
    )
