"""Step 3, Train: DPO hyperparameters, Start and Stop, live plots, a log table and a health reading."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import gradio as gr

from alignlab import plots
from alignlab.evaluation import read_health
from alignlab.presets import Preset, validate_preset
from alignlab.sharing import Finished, Published, Waiting
from alignlab.training import LOSS_TYPES, SettingsError, TrainingSettings
from alignlab.ui import runs
from alignlab.ui.common import (
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


def health_markdown(verdict: str, findings: list[str], title: str = "Training health") -> str:
    lines = "\n".join(f"- {f}" for f in findings)
    return f"### {title}: {VERDICT_WORDS.get(verdict, verdict.upper())}\n{lines}"


def progress_line(step: int, total: int, elapsed: float) -> str:
    left = max(0, total - step)
    return f"**Step {step} of {total}** · {elapsed:.1f} s elapsed · {left} step{'' if left == 1 else 's'} left"


def view(status: str, rows: list[dict[str, Any]], health: str = "") -> tuple[Any, ...]:
    """The Train tab's outputs: status, the four plots, the log table, the health reading."""
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
    health = read_health(training["log_history"], beta=training["settings"]["beta"])
    return view(status, session.log_rows, health_markdown(health.verdict, health.findings))


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


def train_ui(
    pairs: Any,
    heldout_pairs: Any,
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
        heldout_pairs: held-out pairs (same columns), scored on the Compare step.
        beta: DPO β, 0.01-1.0: how tightly the model is held to the original.
        learning_rate: optimizer step size, 1e-7 to 1e-3.
        steps: optimizer steps, 1-500.
        batch_size: pairs per step, 1-64.
        loss_type: sigmoid (DPO), ipo, hinge, robust, apo_zero, sppo_hard, nca_pair or bco_pair.
        seed: seed for data order: the same seed and data give the same run.
    Returns:
        Streams (status, loss plot, margin plot, rewards plot, accuracy plot, log table, health).
        While the run waits for the model, the status (and the API's progress updates) say the place
        in line and the estimated wait. An identical run already in progress or finished is joined
        (its steps replayed), not run twice.
    """
    session = session_of(request)
    settings = settings_from_inputs(beta, learning_rate, steps, batch_size, loss_type, seed)
    train_pairs, heldout = _check_ready(session, pairs, heldout_pairs)
    _, identity = runs.check_model(session.model_spec)
    member = runs.start_training(session, session.model_spec, identity, train_pairs, heldout, settings)
    session.forget_training()
    session.pairs, session.heldout_pairs = train_pairs, heldout
    run = session.run = Run(member=member)
    progress = gr.Progress()
    rows: list[dict[str, Any]] = []
    finished = False
    try:
        yield view(starting_line(member, len(train_pairs), session.model_spec), rows)
        last_redraw = 0.0
        for update in runs.training_updates(member):
            if isinstance(update, Waiting):
                runs.show_place(update, progress)
                yield view(f"**{runs.waiting_text(update.place)}**", rows)
                continue
            if isinstance(update, Finished):
                if update.error is not None:
                    runs.raise_failure(update)
                break
            event = update.payload
            record(session, settings, rows, event, member)
            if event["kind"] != "log":
                yield finished_view(session)
            elif update.replayed:  # a late joiner: the steps already run, redrawn one by one
                if runs.replay_frame(member, update.index, MIN_REDRAW_SECONDS):
                    yield view(progress_line(event["step"], event["total_steps"], event["elapsed"]), rows)
            elif time.monotonic() - last_redraw >= MIN_REDRAW_SECONDS or event["step"] >= event["total_steps"]:
                last_redraw = time.monotonic()
                yield view(progress_line(event["step"], event["total_steps"], event["elapsed"]), rows)
        finished = True
    except Exception:
        finished = True  # a failed run: nothing to wind down
        runs.end_lab(session)
        raise
    finally:
        if finished:
            member.leave()
            run.finish()
            runs.touch_lab(session)
        else:  # cancelled (Stop, a closed tab, a client's cancel): end the run without blocking the server
            runs.end_lab(session)
            if run.stop():  # nobody else follows it: it ends at this step; keep what it made
                args = (member, run, session, settings, rows)
                threading.Thread(target=_wind_down, args=args, name="alignlab-stop", daemon=True).start()
            else:  # others share the run: it goes on for them
                run.finish()


def starting_line(member: Any, n_pairs: int, spec: str) -> str:
    """The first status of a run: starting, waiting for the model, or sharing an identical run."""
    shared = runs.how_text(member)
    if member.run.state == "waiting":
        place = runs.GATE.place(member.run.ticket) if member.run.ticket is not None else None
        return f"**{runs.waiting_text(place)}** {shared}".strip()
    if shared:
        return f"**Starting** — {shared}"
    return (
        f"**Starting** DPO on {n_pairs} pairs with `{spec}`: "
        "preparing TRL and scoring the pairs with the reference model…"
    )


def record(
    session: Session, settings: TrainingSettings, rows: list[dict[str, Any]], event: dict[str, Any], member: Any
) -> None:
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
    }
    session.timings["train"] = event["seconds"]
    session.policy_dir = runs.adopt_policy(session, member, event)


def _wind_down(member: Any, run: Run, session: Session, settings: TrainingSettings, rows: list) -> None:
    """After a cancelled stream: let the run end at this step and keep its result (policy included).

    Locally the cancel reaches the training thread, so the run ends after the current step and its
    remaining events are read here. In a ZeroGPU worker it cannot, so the run's stream is closed
    instead (see ``runs.start_training``), which stops the run without a result.
    """
    try:
        for update in runs.training_updates(member):
            if isinstance(update, Published):
                record(session, settings, rows, update.payload, member)
    except Exception:  # noqa: BLE001 - nobody is listening any more; the session shows what was kept
        pass
    finally:
        member.leave()
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
    others = run.member.others if run.member is not None else 0
    stopped = run.stop()
    run.done.wait(timeout=600)
    if not stopped:
        return view(
            f"**Stopped following the shared run** — it goes on for the {others} other visitor"
            f"{'' if others == 1 else 's'} who started the same run. Press Start to join it again.",
            session.log_rows,
        )
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
        log_table=log_table,
        health=health,
    )


def inputs(tab: SimpleNamespace, dataset: SimpleNamespace) -> list[Any]:
    return [
        dataset.pairs,
        dataset.heldout,
        tab.beta,
        tab.learning_rate,
        tab.steps,
        tab.batch_size,
        tab.loss_type,
        tab.seed,
    ]


def outputs(tab: SimpleNamespace) -> list[Any]:
    return [tab.status, tab.loss_plot, tab.margin_plot, tab.rewards_plot, tab.accuracy_plot, tab.log_table, tab.health]


def wire(tab: SimpleNamespace, dataset: SimpleNamespace) -> Any:
    """Start streams ``/train``; returns that event so that Stop (wired in blocks.py) can cancel it."""
    return tab.start.click(
        train_ui,
        inputs(tab, dataset),
        outputs(tab),
        api_name="train",
        api_description=api_doc(train_ui),
        concurrency_limit=None,  # checks answer at once; the model work waits in runs.GATE
        show_progress="minimal",
    )
