"""The run service: every tab hands it settings and data, and gets back events and reports.

Below the tabs, above the sessions' model work (:mod:`alignlab.ui.work`): each function here is one thing a session
does with a model, checked first (a wrong click or value is answered at once, however long the line), then done as
shared work in the line, its result kept in the session (:class:`alignlab.ui.state.Session`).

- :func:`load` and :func:`record_baseline`: the model and its answers before training;
- :func:`train`: a run streamed as :class:`TrainingUpdate` s (settings in, events out), joined with identical
  work, stopped by :func:`stop`; the Train tab, the presenter's chain and the comparison panel all draw it;
- :func:`compare`: the report of the session's trained policy against its baseline;
- :func:`train_then_compare` and :func:`run_lab`: the same, unwatched, for ``/run_lab`` and a comparison's work.

The work itself is the lab's steps (:mod:`alignlab.pipeline.steps`), each a GPU job (:mod:`alignlab.ui.jobs`) run in
the line.
No tab calls another tab: each goes through here, and the views (:mod:`alignlab.ui.views`) draw the result.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import gradio as gr

from alignlab.data.pairs import DatasetError, PreferencePair, TrainingData, UnpairedRow, pairs_from_dicts
from alignlab.data.presets import Preset, load_preset, validate_eval_prompts, validate_preset
from alignlab.data.question_set import questions_from_dicts
from alignlab.models.loading import ModelLoadError
from alignlab.pipeline.steps import Baseline, Trained, check_judge_spec
from alignlab.registry.settings import TrainingSettings
from alignlab.serving.public import public_mode
from alignlab.serving.sharing import Finished, Member, Published, Waiting
from alignlab.takehome import export, tracking
from alignlab.training.trl_rows import trained_on
from alignlab.ui import work
from alignlab.ui.common import STORE, fail, problems_markdown
from alignlab.ui.state import Session, TrainedRun, TrainingHandle
from alignlab.ui.views import progress_line
from alignlab.verdict.runs_table import run_label

#: Steps logged closer together than this are drawn together (every row is kept): a tiny model or a fast GPU
#: logs many steps a second, more redraws than a browser can follow. A CPU takes seconds per step, so every
#: step of a real run is drawn.
MIN_REDRAW_SECONDS = 0.25


# --------------------------------------------------------------------------- model and baseline


def not_training(session: Session) -> None:
    if session.training_now:
        raise fail("Training is running in this session: wait for it to end or press Stop first.")


def _adopt_model(session: Session, spec: str, info: dict[str, Any]) -> str:
    """Make ``spec`` the session's model and describe it in one line."""
    if session.baseline is not None and session.baseline.model_spec != spec:  # earlier answers are not comparable
        session.baseline = None
        session.forget_training()
        session.forget_runs()
    chat = info["chat_template"]
    kind = "chat model (its chat template wraps each prompt)" if chat else "base model (plain-text prompts)"
    return f"**Loaded `{spec}`** — {info['parameters'] / 1e6:,.1f} M parameters, {kind}."


def load(session: Session, model: Any, progress: gr.Progress | None = None) -> str:
    """Load ``model`` for the session; one line describing it."""
    spec, identity = work.check_model(model)  # checks first: a bad name is answered at once
    not_training(session)
    return _adopt_model(session, spec, work.load(session, spec, identity, progress))


def check_prompts(prompts: list[str]) -> None:
    """Eval prompts the lab can answer; a clear message naming each problem otherwise."""
    if not prompts:
        raise fail("Write at least one eval prompt (one per line) before recording the baseline.", "No prompts")
    problems = validate_eval_prompts(prompts)
    if problems:
        raise gr.Error(problems_markdown(problems), title="Eval prompts")


def record_baseline(
    session: Session, model: Any, prompts: list[str], generation: dict[str, Any], progress: gr.Progress | None = None
) -> tuple[list[str], float]:
    """The model's answers to ``prompts`` before training, kept as the session's baseline; (answers, seconds)."""
    check_prompts(prompts)
    spec, identity = work.check_model(model)
    not_training(session)
    baseline = Baseline.from_dict(work.baseline(session, spec, identity, prompts, generation, progress))
    _adopt_model(session, spec, baseline.model_info)
    earlier = session.baseline
    if earlier is None or (prompts, baseline.outputs) != (earlier.eval_prompts, earlier.outputs):
        session.forget_runs()  # other answers before training: earlier runs no longer compare with them
    session.baseline = replace(baseline, eval_prompts=prompts, generation=generation)
    session.report = None
    return baseline.outputs, baseline.timings["baseline"]


# --------------------------------------------------------------------------- training


@dataclass
class TrainingUpdate:
    """What a watcher of a run sees at one moment: a status line and the run's logged rows so far.

    ``finished``: the run has ended and the session holds its result (draw :func:`views.finished_view`).
    """

    status: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    finished: bool = False


def check_ready(
    session: Session,
    pairs: list[PreferencePair],
    heldout: list[PreferencePair],
    thumbs: list[UnpairedRow],
    settings: TrainingSettings | None = None,
) -> None:
    """Whether the session can train on these pairs; a clear message when it cannot."""
    if session.training_now:
        raise fail("A training run is already in progress in this session: wait for it or press Stop.")
    if session.baseline is None:
        raise fail(
            "Record the baseline first (Baseline tab, “Load model and record answers”): "
            "Compare needs the answers from before training."
        )
    if not pairs and not thumbs:
        raise fail("There are no training pairs: add at least one row on the Dataset tab (or pick a preset).")
    problems = validate_preset(Preset("train", "", "", [], pairs, heldout, unpaired=thumbs))
    if problems:
        raise gr.Error("Fix the dataset first (Dataset tab):\n" + problems_markdown(problems), title="Dataset")
    if settings is not None:
        try:  # a paired method on thumbs rows that form no pair is refused here, before the line
            trained_on(TrainingData(pairs, thumbs), settings)
        except DatasetError as exc:
            raise gr.Error(str(exc), title="Dataset") from exc


def probes_of(preset: Preset) -> dict[str, Any]:
    """The probe sets a run on this preset is judged with (kept in the page's state, see train_tab), as
    :func:`train` takes them."""
    return {
        "preset": preset.id,
        "contrast_pairs": [p.to_dict() for p in preset.contrast_pairs],
        "capability_pairs": [p.to_dict() for p in preset.capability_pairs],
        "checked_questions": [q.to_dict() for q in preset.checked_questions],
    }


def session_preset(session: Session) -> Preset:
    """The lab dataset the session's last run trained on, with its probe sets and the baseline's eval prompts."""
    return replace(session.trained.lab, eval_prompts=list(session.baseline.eval_prompts))


def _lab_of(pairs: list[PreferencePair], heldout: list[PreferencePair], thumbs: list, probes: dict) -> Preset:
    """The lab dataset a run trains on: its pairs and thumbs rows, and the probe sets :func:`probes_for` kept."""
    return Preset(
        probes["preset"],
        probes["preset"],
        "",
        [],
        pairs,
        heldout,
        pairs_from_dicts(probes["contrast_pairs"]),
        pairs_from_dicts(probes["capability_pairs"]),
        thumbs,
        checked_questions=questions_from_dicts(probes["checked_questions"]),
    )


def probes_for(pairs: list[PreferencePair], probes: dict[str, Any]) -> dict[str, Any]:
    """The probe sets that fit these training pairs, and the preset id the report names.

    The preset's own pairs keep its id and probes. Pairs edited from it (most prompts still the
    preset's) are ``custom`` but keep its probes, which test the same preference. Pairs of another
    origin (an API client's own) get no contrast pairs and the built-in capability set.
    """
    preset_id = probes.get("preset") or "custom"
    kept = {
        "contrast_pairs": probes.get("contrast_pairs") or [],
        "capability_pairs": probes.get("capability_pairs") or [],
        "checked_questions": probes.get("checked_questions") or [],
    }
    try:
        preset = load_preset(preset_id)
    except DatasetError:
        return {"preset": "custom", **kept}
    if pairs == preset.pairs:
        return {"preset": preset.id, **kept}
    shared = len({p.prompt for p in pairs} & {p.prompt for p in preset.pairs})
    if shared * 2 >= len(pairs):
        return {"preset": "custom", **kept}
    return {"preset": "custom", "contrast_pairs": [], "capability_pairs": [], "checked_questions": []}


def train(
    session: Session,
    settings: TrainingSettings,
    pairs: list[PreferencePair],
    heldout: list[PreferencePair],
    probes: dict[str, Any] | None = None,
    thumbs: list[UnpairedRow] | None = None,
) -> Iterator[TrainingUpdate]:
    """Train ``settings`` on the data in this session, one update per drawn step; checks run before the line.

    While the run waits for the model the status (and the API's progress updates) say the place in line and the
    estimated wait. An identical run already in progress or finished is joined (its steps replayed, paced so that
    a late joiner sees the curves grow), not run twice. If the consumer stops reading (Stop, a closed tab, a
    client's cancel), the run ends at its next step and keeps what it made, unless others share it.
    """
    thumbs = list(thumbs or [])
    check_ready(session, pairs, heldout, thumbs, settings)
    lab = _lab_of(pairs, heldout, thumbs, probes_for(pairs, probes or {}))
    spec = session.baseline.model_spec
    _, identity = work.check_model(spec)
    member = work.start_training(session, spec, identity, lab, settings)
    session.forget_training()
    trained = session.trained = TrainedRun(settings, lab)
    handle = session.training_handle = TrainingHandle(member=member)
    start_tracking(session, settings)
    return _follow_training(session, trained, member, handle)


def start_tracking(session: Session, settings: TrainingSettings) -> None:
    """The run's trackio run, named for this session (its key's start) and the run's label: no other visitor's
    run can share the name. The previous run's, if still open, is closed."""
    if session.tracker is not None:
        session.tracker.finish()
    label = run_label(session.runs_started + 1)
    title = f"{label} · {settings.method_label}"
    spec, preset = session.baseline.model_spec, session.trained.lab.id
    session.tracker = tracking.start_run(settings, preset, spec, label, title, owner=session.key[:8])


def _follow_training(
    session: Session, trained: TrainedRun, member: Member, handle: TrainingHandle
) -> Iterator[TrainingUpdate]:
    progress = gr.Progress()
    rows = trained.log_rows
    method, n_pairs, spec = trained.settings.method_label, len(trained.lab.pairs), session.baseline.model_spec
    finished = False
    try:
        yield TrainingUpdate(starting_line(member, n_pairs, spec, method), rows)
        last_redraw = 0.0
        for update in work.training_updates(member):
            if isinstance(update, Waiting):
                work.show_place(update, progress)
                yield TrainingUpdate(f"**{work.waiting_text(update.place)}**", rows)
                continue
            if isinstance(update, Finished):
                if update.error is not None:
                    work.raise_failure(update)
                break
            event = update.payload
            record(session, trained, event, member)
            if event["kind"] != "log":
                yield TrainingUpdate("", rows, finished=True)
            elif update.replayed:  # a late joiner: the steps already run, redrawn one by one
                if work.replay_frame(member, update.index, MIN_REDRAW_SECONDS):
                    yield TrainingUpdate(progress_line(event["step"], event["total_steps"], event["elapsed"]), rows)
            elif time.monotonic() - last_redraw >= MIN_REDRAW_SECONDS or event["step"] >= event["total_steps"]:
                last_redraw = time.monotonic()
                yield TrainingUpdate(progress_line(event["step"], event["total_steps"], event["elapsed"]), rows)
        finished = True
    except Exception:
        finished = True  # a failed run: nothing to wind down
        work.end_lab(session)
        raise
    finally:
        if finished:
            member.leave()
            handle.finish()
            work.touch_lab(session)
        else:  # cancelled (Stop, a closed tab, a client's cancel): end the run without blocking the server
            work.end_lab(session)
            if handle.stop():  # nobody else follows it: it ends at this step; keep what it made
                args = (member, handle, session, trained)
                threading.Thread(target=_wind_down, args=args, name="alignlab-stop", daemon=True).start()
            else:  # others share the run: it goes on for them
                handle.finish()


def starting_line(member: Member, n_pairs: int, spec: str, method: str = "DPO") -> str:
    """The first status of a run: starting, waiting for the model, or sharing an identical run."""
    shared = work.how_text(member)
    if member.run.state == "waiting":
        place = work.LINE.place(member.run.ticket) if member.run.ticket is not None else None
        return f"**{work.waiting_text(place)}** {shared}".strip()
    if shared:
        return f"**Starting** — {shared}"
    return (
        f"**Starting** {method} on {n_pairs} pairs with `{spec}`: preparing TRL and scoring the held-out pairs "
        "once with the original model (the reference for the live held-out curve)…"
    )


def record(session: Session, trained: TrainedRun, event: dict[str, Any], member: Member) -> None:
    """Keep a streamed event in the session's run: a log row, or its training summary and where its policy is."""
    if session.tracker is not None:
        session.tracker.follow(event)
    if event["kind"] == "log":
        trained.log_rows.append(event["row"])
        return
    trained.summary = Trained.from_event(event).summary
    work.adopt_policy(session, trained, member, event)
    if trained.policy_dir is not None:  # a run that made at least one step joins the session's runs
        session.add_run(trained.summary, trained.lab.id)


def _wind_down(member: Member, handle: TrainingHandle, session: Session, trained: TrainedRun) -> None:
    """After a cancelled stream: let the run end at this step and keep its result (policy included).

    Locally the cancel reaches the training thread, so the run ends after the current step and its
    remaining events are read here. In a ZeroGPU worker it cannot, so the run's stream is closed
    instead (see ``work.start_training``), which stops the run without a result.
    """
    try:
        for update in work.training_updates(member):
            if isinstance(update, Published):
                record(session, trained, update.payload, member)
    except Exception:  # noqa: BLE001 - nobody is listening any more; the session shows what was kept
        pass
    finally:
        member.leave()
        handle.finish()


def stop(session: Session) -> str:
    """Stop this session's run at the end of its step: ``idle`` (nothing ran), ``stopped``, or ``left`` (others
    share the run, which goes on for them)."""
    handle = session.training_handle
    if handle is None or handle.done.is_set():
        return "idle"
    stopped = handle.stop()
    handle.done.wait(timeout=600)
    return "stopped" if stopped else "left"


# --------------------------------------------------------------------------- compare


def choose_judge(session: Session, judge: Any) -> None:
    """The judge of this session's comparisons from now on, checked before any work (a named model: where it may
    come from, that it is a reward model, that it fits)."""
    text = "" if judge is None else str(judge).strip()
    try:
        check_judge_spec(text)
    except ModelLoadError as exc:
        raise fail(str(exc), "Judge") from exc
    session.judge = text


def compare(session: Session, progress: gr.Progress | None = None) -> tuple[dict[str, Any], str]:
    """The report of the session's trained policy against its baseline, kept with its run; (report, its file). The
    win rate is judged by the session's judge (:func:`choose_judge`)."""
    if session.baseline is None:
        raise fail("Record the baseline first (Baseline tab), then train (Train tab), then compare.")
    if session.training_now:
        raise fail("Training is still running: wait for it to finish (or press Stop), then compare.")
    if session.files_cleared:
        raise fail(
            "Your trained model's files were cleared while the session was idle (this shared machine keeps its disk "
            "within a bound): train again (Train tab), then compare.",
            "Files cleared",
        )
    trained = session.trained
    if trained is None or trained.summary is None or trained.policy_dir is None or not trained.policy_dir.is_dir():
        raise fail("Train first (Train tab): there is no trained model to compare with yet.")
    preset = session_preset(session)
    # waits its turn; shared with identical sessions
    report = work.compare(session, preset.to_dict(), progress, judge=session.judge)
    work.end_lab(session)
    if session.tracker is not None:
        session.tracker.log_report(report)
        report = {**report, "tracking": session.tracker.summary()}
    record = session.latest_run
    if record is not None and record.training is trained.summary:  # the run this report describes
        report = {**report, "run": {"label": record.label, "index": session.runs_started, "of": session.runs_started}}
        record.report = report
    session.report = report
    path = session.path("alignlab-report.json")
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    return report, str(path)


def train_then_compare(session: Session, lab: Preset, settings: TrainingSettings, what: str) -> dict[str, Any]:
    """Train ``settings`` on a preset's pairs in this session, unwatched, then compare: the report.

    The whole-lab endpoint and each run of a comparison go through here; ``what`` names the run in the
    message when it stopped before its first step.
    """
    probes = probes_of(lab)
    with work.unpaced_replay():  # nobody watches the curves here
        for _ in train(session, settings, list(lab.pairs), list(lab.heldout_pairs), probes):
            pass
    trained = session.trained
    if trained is None or trained.policy_dir is None:
        raise fail(f"{what} stopped before its first step ended, so there is nothing to compare.", "Stopped")
    trained.lab = replace(trained.lab, id=lab.id, title=lab.id)
    report, _ = compare(session)
    return report


def run_lab(
    session: Session, model: Any, lab: Preset, settings: TrainingSettings, generation: dict[str, Any]
) -> dict[str, Any]:
    """The whole lab on a preset in this session (baseline, train, compare), its place in line kept: the report."""
    spec, _ = work.check_model(model)
    if session.training_now:
        raise fail("A training run is already in progress in this session: wait for it or press Stop.")
    work.start_lab(session, spec, lab, settings, generation["max_new_tokens"])  # one request in the share of the line
    try:
        record_baseline(session, spec, list(lab.eval_prompts), generation, gr.Progress())
        return train_then_compare(session, lab, settings, "Training")
    finally:
        work.end_lab(session)


# --------------------------------------------------------------------------- take it home


def _push(folder: Any, repo_id: str, token: str, said: str, repo_type: str = "model") -> str:
    """Push ``folder`` where asked and say what happened; the zip stays whatever the push does."""
    if not repo_id:
        return said + " Give a repo id and a token to push it to the Hub."
    if not token and not public_mode():  # on a public Space, never the Space's own token
        token = os.environ.get("HF_TOKEN", "")
    try:
        url = export.push_folder(folder, repo_id, token, repo_type=repo_type)
    except export.ExportError as exc:
        return f"{said}\n\n**Not pushed:** {exc} The zip is still yours to download."
    return f"{said}\n\nPushed to [{repo_id}]({url}) (private)."


def export_dataset(
    session: Session,
    data: TrainingData,
    heldout: list[PreferencePair],
    fmt: str,
    source: str,
    repo_id: str = "",
    token: str = "",
) -> tuple[str, str]:
    """The training data as a dataset folder with its card, zipped; pushed to ``repo_id`` when one is given."""
    repo_id = (repo_id or "").strip()
    try:
        if repo_id:
            export.check_repo_id(repo_id)
    except export.ExportError as exc:
        raise fail(str(exc), "Cannot save") from exc
    name = f"alignlab-{source or 'custom'}-{fmt}"
    folder = export.save_dataset(data, heldout, session.path("export") / name, fmt, source, overwrite=True)
    archive = export.zip_folder(folder, session.path(f"{name}.zip"))
    said = f"Saved **{name}**: train.jsonl, test.jsonl ({len(heldout)} held-out pairs) and a dataset card."
    return str(archive), _push(folder, repo_id, token, said, repo_type="dataset")


#: The largest zip a browser is offered (MB; ``ALIGNLAB_MAX_DOWNLOAD_MB``): larger models are saved with the CLI.
MAX_DOWNLOAD_MB = int(os.environ.get("ALIGNLAB_MAX_DOWNLOAD_MB", "4096"))


def export_model(session: Session, repo_id: str = "", token: str = "") -> tuple[str, str]:
    """The session's compared run as a model folder with its card, zipped; pushed to ``repo_id`` when one is given.

    Returns (zip path, what happened). Checks come first (a compared run, the repo id, the room on disk and the
    download's size); a failed push keeps the zip. On a public Space the token comes only from the visitor's
    field, never from the Space's own secrets, and it is used for this push alone.
    """
    policy_dir = session.trained.policy_dir if session.trained is not None else None
    if session.report is None or policy_dir is None or not policy_dir.is_dir():
        raise fail("Train and compare first: the model is saved with its evidence, which Compare produces.")
    repo_id = (repo_id or "").strip()
    try:
        if repo_id:
            export.check_repo_id(repo_id)
        size = export.folder_bytes(policy_dir)
        free = shutil.disk_usage(session.directory).free
        if 2 * size > free:
            raise export.ExportError(
                f"The model is {size / 1e9:.2f} GB and this machine has {free / 1e9:.2f} GB free: save it with the "
                "CLI on your own machine (python -m alignlab lab ... --save-model DIR)."
            )
        if size > MAX_DOWNLOAD_MB * 1e6:
            raise export.ExportError(
                f"The model is {size / 1e9:.2f} GB, over the {MAX_DOWNLOAD_MB / 1e3:g} GB a browser download is "
                "offered here: train a LoRA adapter, or save it with the CLI (--save-model DIR)."
            )
    except export.ExportError as exc:
        raise fail(str(exc), "Cannot save") from exc
    training = session.report["settings"]["training"]
    name = f"alignlab-{training['method']}-{session.report['settings'].get('preset') or 'custom'}"
    folder = export.save_model(session.report, session.path("export") / name, policy_dir=policy_dir, overwrite=True)
    archive = export.zip_folder(folder, session.path(f"{name}.zip"))
    said = f"Saved **{name}** ({export.folder_bytes(folder) / 1e6:.0f} MB): weights, tokenizer, model card."
    STORE.bound_disk(keep=session)  # other, idle visitors' files go first when the disk is over its bound
    return str(archive), _push(folder, repo_id, token, said)
