"""Step 3, Train: the method and its hyperparameters, Start and Stop, live plots, a log table and a health reading."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import gradio as gr

from alignlab import plots
from alignlab.health import Health, read_training_health
from alignlab.methods import DEFAULT_METHOD, METHODS, UnknownMethodError, entry_for, get_method, method_choices
from alignlab.presets import DatasetError, PreferencePair, Preset, TrainingData, load_preset, validate_preset
from alignlab.recipe import (
    ADAPTERS,
    DEFAULT_TARGET,
    ENGINES,
    KNOWN_TARGETS,
    PUBLIC_DATASETS,
    RecipeError,
    build_recipe,
    bytes_text,
    count_text,
    lab_memory_estimate,
    recipe_zip,
    resolve_target,
)
from alignlab.recipe import METHODS as RECIPE_METHODS
from alignlab.sharing import Finished, Published, Waiting
from alignlab.training import KNOBS, LOSS_TYPES, SettingsError, TrainingSettings, qlora_unavailable, trained_on
from alignlab.ui import jobs, runs
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
    "**β is the leash:** a small β lets the model drift far from the original, a large β holds it close. "
    "Pick another **method** to see the map's alternatives on the same pairs: IPO, KTO (thumbs up/down: each "
    "pair's answers rated alone), ORPO and SimPO (no reference model), and RLHF (a reward model trained on the "
    "pairs, then online RL against it on the pairs' prompts)."
)
DEFAULTS = TrainingSettings()
#: Steps logged closer together than this are drawn together (every row is kept): a tiny model or
#: a fast GPU logs many steps a second, more redraws than a browser can follow. Real runs on a
#: CPU take seconds per step, so every step is drawn.
MIN_REDRAW_SECONDS = 0.25
VERDICT_WORDS = {"healthy": "HEALTHY", "warning": "WARNING", "failed": "FAILED"}


# --------------------------------------------------------------------------- handlers


def settings_from_inputs(
    beta: Any,
    learning_rate: Any,
    steps: Any,
    batch_size: Any,
    loss_type: Any,
    seed: Any,
    method: Any = DEFAULT_METHOD,
    sft_weight: Any = None,
) -> TrainingSettings:
    """TrainingSettings from the widgets (or API values), each field checked with a clear message.

    ``beta``, ``learning_rate``, ``steps`` and ``sft_weight`` left empty (None) take the method's own defaults.
    """
    try:
        entry = get_method(method)
    except UnknownMethodError as exc:
        raise fail(str(exc), "Unknown method") from None
    if loss_type not in LOSS_TYPES:
        raise fail(f"loss type must be one of {', '.join(LOSS_TYPES)} (got {loss_type!r}).", "Out of range")
    low, high = entry.beta_range
    try:
        return TrainingSettings.for_method(
            method,
            beta=real_number(beta, KNOBS["beta"].noun, low, high) if beta is not None else None,
            learning_rate=knob_value("learning_rate", learning_rate) if learning_rate is not None else None,
            steps=knob_value("steps", steps) if steps is not None else None,
            batch_size=knob_value("batch_size", batch_size),
            loss_type=loss_type,
            seed=knob_value("seed", seed),
            sft_weight=knob_value("sft_weight", sft_weight) if sft_weight is not None else None,
        )
    except SettingsError as exc:
        raise gr.Error(str(exc), title="Training settings") from exc


def knob_value(name: str, value: Any) -> Any:
    """A widget's (or API argument's) value for the setting ``name``, checked against its range in :data:`KNOBS`."""
    knob = KNOBS[name]
    if knob.whole:
        return whole_number(value, knob.noun, int(knob.low), int(knob.high))
    return real_number(value, knob.noun, knob.low, knob.high)


def knob_widget(name: str, **kwargs: Any) -> gr.Number:
    """A number box for the setting ``name``: its label and range from :data:`KNOBS`, its default from the settings."""
    knob = KNOBS[name]
    return gr.Number(getattr(DEFAULTS, name), label=knob.label, info=knob.info(), **kwargs)


def method_defaults_ui(method: str) -> tuple[Any, ...]:
    """A new method picked: its own β, learning rate, steps and SFT weight in the widgets, and DPO's loss variants and
    SFT term only for DPO (and IPO, DPO with the IPO loss).

    Picking ``ipo`` selects DPO's IPO loss; picking a method that is not DPO sets the loss back to sigmoid
    (it takes no loss variant) and locks the dropdown.
    """
    entry = METHODS.get(method) or METHODS[DEFAULT_METHOD]
    low, high = entry.beta_range
    return (
        gr.Number(value=entry.defaults["beta"], info=f"{low:g}-{high:g}: {entry.beta_means}."),
        gr.Number(value=entry.defaults["learning_rate"]),
        gr.Number(value=entry.defaults["steps"]),
        gr.Dropdown(value=entry.loss_type or "sigmoid", interactive=entry.loss_variants and entry.loss_type is None),
        gr.Number(value=entry.defaults.get("sft_weight", 0.0), interactive=entry.loss_variants),
    )


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


def view(status: str, rows: list[dict[str, Any]], health: str = "", method: str | None = None) -> tuple[Any, ...]:
    """The Train tab's outputs: status, the five plots, the log table, the health reading."""
    return (status, *plots.all_frames(rows, method), health)


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
    status += "\n\n" + run_cost(training, session.model_spec)
    settings = training["settings"]
    method = entry_for(settings.get("method", DEFAULT_METHOD), settings.get("loss_type", "sigmoid")).name
    health = read_training_health(
        [r for r in training["log_history"] if "loss" in r and "step" in r],
        beta=training["settings"]["beta"],
        heldout_curve=training.get("heldout_curve"),
        method=method,
    )
    note = "\n\n*The full verdict, with the answers checked for collapse, loops and templates, is on the Compare tab.*"
    return view(status, session.log_rows, health_markdown(health) + note, method)


def _check_ready(
    session: Session,
    pairs_table: Any,
    heldout_table: Any,
    unpaired: Any = None,
    settings: TrainingSettings | None = None,
) -> tuple[list, list, list]:
    """The pairs, held-out pairs and thumbs rows to train on, checked; a clear message when they will not do."""
    if session.training_now:
        raise fail("A training run is already in progress in this session: wait for it or press Stop.")
    if not session.baseline_outputs or not session.model_spec:
        raise fail(
            "Record the baseline first (Baseline tab, “Load model and record answers”): "
            "Compare needs the answers from before training."
        )
    pairs, heldout = pairs_from_table(pairs_table), pairs_from_table(heldout_table)
    thumbs = jobs.unpaired_from_dicts(unpaired or [])
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
    return pairs, heldout, thumbs


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
    use_lora: bool = False,
    lora_rank: float = DEFAULTS.lora_rank,
    use_qlora: bool = False,
    method: str = DEFAULT_METHOD,
    sft_weight: float | None = None,
    unpaired: list[dict[str, Any]] | None = None,
) -> Iterator[tuple[Any, ...]]:
    """Run a preference method (DPO by default) on the pairs, streaming each logged step; needs /baseline first.

    Args:
        pairs: training pairs, a table with the columns prompt, chosen, rejected.
        heldout_pairs: held-out pairs (same columns), scored after every step (the live held-out curve) and on Compare.
        probes: the preset's probe sets (contrast and capability pairs), kept by the Dataset tab.
        beta: β: how tightly the model is held to the original (SimPO's scale goes to 10).
        learning_rate: optimizer step size.
        steps: optimizer steps.
        batch_size: pairs per step.
        loss_type: sigmoid (DPO), ipo, hinge, robust, apo_zero, sppo_hard, nca_pair or bco_pair.
        seed: seed for data order: the same seed and data give the same run.
        use_lora: train a LoRA adapter instead of every weight (the reference is the adapter switched off).
        lora_rank: LoRA rank.
        use_qlora: QLoRA, LoRA on a 4-bit base (needs a CUDA GPU and bitsandbytes).
        method: dpo, ipo (DPO with the IPO loss), kto (each pair's answers as thumbs up/down), orpo or simpo (no
            reference model). β, learning rate and steps are used as given: each method's own defaults are listed by
            /run_lab, which uses them when those are left empty. Other methods than dpo take loss_type sigmoid.
        sft_weight: DPO's (and IPO's) added SFT term on the chosen answers, 0-10 (0 = none); empty means the
            method's default (IPO's is 2, see its registry entry). Other methods take none.
    Returns:
        Streams (status, loss plot, margin plot, rewards plot, accuracy plot, held-out plot, log table, health).
        While the run waits for the model, the status (and the API's progress updates) say the place
        in line and the estimated wait. An identical run already in progress or finished is joined
        (its steps replayed), not run twice.
    """
    session = session_of(request)
    settings = settings_from_inputs(beta, learning_rate, steps, batch_size, loss_type, seed, method, sft_weight)
    settings = with_adapter(settings, use_lora, lora_rank, use_qlora)
    train_pairs, heldout, thumbs = _check_ready(session, pairs, heldout_pairs, unpaired, settings)
    probes = probes_for(train_pairs, probes or {})
    contrast = jobs.pairs_from_dicts(probes["contrast_pairs"])
    _, identity = runs.check_model(session.model_spec)
    member = runs.start_training(
        session, session.model_spec, identity, train_pairs, heldout, settings, contrast, unpaired=thumbs
    )
    session.forget_training()
    session.pairs, session.heldout_pairs, session.unpaired = train_pairs, heldout, thumbs
    session.contrast_pairs = contrast
    session.capability_pairs = jobs.pairs_from_dicts(probes["capability_pairs"])
    session.preset_id = probes["preset"]
    run = session.run = Run(member=member)
    progress = gr.Progress()
    rows: list[dict[str, Any]] = []
    finished = False
    try:
        yield view(starting_line(member, len(train_pairs), session.model_spec, settings.method_label), rows)
        last_redraw = 0.0
        for update in runs.training_updates(member):
            if isinstance(update, Waiting):
                runs.show_place(update, progress)
                yield view(f"**{runs.waiting_text(update.place)}**", rows, method=settings.method)
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
                    line = progress_line(event["step"], event["total_steps"], event["elapsed"])
                    yield view(line, rows, method=settings.method)
            elif time.monotonic() - last_redraw >= MIN_REDRAW_SECONDS or event["step"] >= event["total_steps"]:
                last_redraw = time.monotonic()
                line = progress_line(event["step"], event["total_steps"], event["elapsed"])
                yield view(line, rows, method=settings.method)
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


def train_with(
    settings: TrainingSettings,
    pairs: Any,
    heldout_pairs: Any,
    probes: dict[str, Any] | None,
    request: gr.Request,
    unpaired: list[dict[str, Any]] | None = None,
) -> Iterator[tuple[Any, ...]]:
    """:func:`train_ui` for settings already checked (the whole lab, a comparison's runs): every field of ``settings``
    reaches the run (``method`` as stored: IPO is DPO with the IPO loss, its SFT term given, not DPO's default)."""
    return train_ui(
        pairs,
        heldout_pairs,
        probes,
        settings.beta,
        settings.learning_rate,
        settings.steps,
        settings.batch_size,
        settings.loss_type,
        settings.seed,
        request,
        use_lora=settings.use_lora,
        lora_rank=settings.lora_rank,
        use_qlora=settings.use_qlora,
        method=settings.method,
        sft_weight=settings.sft_weight,
        unpaired=unpaired,
    )


def starting_line(member: Any, n_pairs: int, spec: str, method: str = "DPO") -> str:
    """The first status of a run: starting, waiting for the model, or sharing an identical run."""
    shared = runs.how_text(member)
    if member.run.state == "waiting":
        place = runs.GATE.place(member.run.ticket) if member.run.ticket is not None else None
        return f"**{runs.waiting_text(place)}** {shared}".strip()
    if shared:
        return f"**Starting** — {shared}"
    return (
        f"**Starting** {method} on {n_pairs} pairs with `{spec}`: preparing TRL and scoring the held-out pairs "
        "once with the original model (the reference for the live held-out curve)…"
    )


#: Keys of a run's end event that describe the event, not the run (the rest is its training summary).
_EVENT_ONLY = ("kind", "step", "elapsed", "policy_dir")


def record(
    session: Session, settings: TrainingSettings, rows: list[dict[str, Any]], event: dict[str, Any], member: Any
) -> None:
    """Keep a streamed event in the session: a log row, or the finished run and where its policy is."""
    if event["kind"] == "log":
        rows.append(event["row"])
        session.log_rows = rows
        return
    session.training = {key: value for key, value in event.items() if key not in _EVENT_ONLY}
    session.training["settings"] = settings.to_dict()
    session.timings["train"] = event["seconds"]
    session.policy_dir = runs.adopt_policy(session, member, event)
    if session.policy_dir is not None:  # a run that made at least one step joins the session's runs
        session.add_run(session.training)


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


def with_adapter(settings: TrainingSettings, use_lora: Any, lora_rank: Any, use_qlora: Any) -> TrainingSettings:
    """The settings with the LoRA/QLoRA switches; QLoRA where it cannot run is refused with the reason."""
    if not use_lora and not use_qlora:
        return settings
    rank = knob_value("lora_rank", lora_rank)
    if use_qlora and (reason := qlora_unavailable()):
        raise fail(reason, "QLoRA not available here")
    return replace(settings, use_lora=True, lora_rank=rank, use_qlora=bool(use_qlora))


def run_cost(training: dict[str, Any], model_spec: str | None) -> str:
    """Time and memory of a finished run, and how much of the model it trained (the run's cost)."""
    settings = training["settings"]
    trainable = training.get("trainable_parameters")
    if settings.get("use_qlora"):
        what = f"QLoRA r={settings['lora_rank']} (4-bit base)"
    elif settings.get("use_lora"):
        what = f"LoRA r={settings['lora_rank']}"
    else:
        what = "Full fine-tuning"
    parts = [what]
    total = None
    try:
        shape = resolve_target(model_spec or "")
        total = shape.parameters()
    except RecipeError:
        shape = None
    if trainable:
        share = f" of {count_text(total)} ({trainable / total:.1%})" if total else ""
        parts.append(f"{count_text(trainable)} weights trained{share}")
    parts.append(f"{training['seconds']:.1f} s")
    peak = training.get("peak_memory_bytes")
    gpu_peak = bool(peak) and training.get("peak_memory_kind", "cuda_allocated") == "cuda_allocated"
    if gpu_peak:
        parts.append(f"peak GPU memory {bytes_text(peak)} (measured)")
    elif peak:
        parts.append(f"peak process memory {bytes_text(peak)} (measured: the whole server process)")
    if shape is not None and not gpu_peak:
        on_gpu = str(training.get("device") or "").startswith("cuda")
        estimate = lab_memory_estimate(shape, TrainingSettings.from_dict(settings), on_gpu=on_gpu)
        parts.append(f"memory ~{bytes_text(estimate)} (estimated: weights, copy, gradients, AdamW, activations)")
    return "**This run:** " + " · ".join(parts)


def adapter_note() -> str:
    """Under the LoRA switches: what LoRA and QLoRA are, and whether QLoRA can run here."""
    reason = qlora_unavailable()
    qlora = "QLoRA is available here." if reason is None else f"QLoRA is off here: {reason}"
    return (
        "**LoRA** trains a small adapter (a few % of the weights) and keeps the base frozen: less memory for "
        "gradients and optimizer, and the reference is the base with the adapter switched off. **QLoRA** also loads "
        f"the frozen base in 4-bit, a quarter of its bf16 memory. {qlora}"
    )


def export_recipe_ui(
    pairs: Any,
    heldout_pairs: Any,
    beta: float,
    learning_rate: float,
    steps: float,
    batch_size: float,
    loss_type: str,
    seed: float,
    use_lora: bool,
    lora_rank: float,
    target_model: str,
    gpus: float,
    engine: str,
    adapter: str,
    gpu_memory: float,
    mix: list[str] | None,
    method: str = DEFAULT_METHOD,
    sft_weight: float | None = None,
    unpaired: list[dict[str, Any]] | None = None,
    request: gr.Request = None,
) -> tuple[str, str]:
    """Export a recipe for a real run: the pairs, TRL's own script's config, launcher configs, run.sh, a README.

    Args:
        pairs: training pairs, a table with the columns prompt, chosen, rejected.
        heldout_pairs: held-out pairs (same columns), the recipe's eval.jsonl.
        beta: the method's β (carried over as is; empty: the method's default).
        learning_rate: the lab's learning rate (a real run uses the method's usual rate).
        steps: the lab's steps (the recipe makes as many passes over the pairs).
        batch_size: the lab's pairs per step.
        loss_type: sigmoid (DPO), ipo, hinge, robust, apo_zero, sppo_hard, nca_pair or bco_pair.
        seed: seed for data order.
        use_lora: whether the lab trains LoRA (used when adapter is 'lab').
        lora_rank: LoRA rank.
        target_model: the model to train for real: a known name (e.g. llama-3.1-8b-instruct), its Hub id, or a
            local directory holding its config.json.
        gpus: GPUs the run is sized for, 1-1024.
        engine: ddp, zero2, zero3 or fsdp (DeepSpeed ZeRO-2/3, FSDP).
        adapter: lab (as in the lab), none (full fine-tuning), lora or qlora.
        gpu_memory: GiB per GPU, 8-4096 (80 for an H100).
        mix: public preference sets to train on too: ultrafeedback, hh-rlhf.
        method: the method to run for real: dpo, ipo or kto (TRL's own dpo or kto script), or rlhf (TRL's reward
            script, then its rloo script on the reward model); orpo and simpo have no recipe (TRL ships no script
            for them), and the error says why.
        sft_weight: DPO's (and IPO's) SFT term, 0-10; empty means the method's default.
        unpaired: thumbs rows (prompt, completion, label) imported on the Dataset tab; a KTO recipe trains on them.
    Returns:
        (the recipe as a .zip file, a summary with the memory estimate).
    """
    settings = settings_from_inputs(beta, learning_rate, steps, batch_size, loss_type, seed, method, sft_weight)
    rank = knob_value("lora_rank", lora_rank)
    settings = replace(settings, lora_rank=rank, use_lora=bool(use_lora))
    if adapter not in ("lab", *ADAPTERS):
        raise fail(f"adapter must be lab, {', '.join(ADAPTERS)} (got {adapter!r}).", "Out of range")
    train_pairs, heldout = pairs_from_table(pairs), pairs_from_table(heldout_pairs)
    thumbs = jobs.unpaired_from_dicts(unpaired or [])
    problems = validate_preset(Preset("recipe", "", "", [], train_pairs, heldout, unpaired=thumbs))
    if problems:
        raise gr.Error("Fix the dataset first (Dataset tab):\n" + problems_markdown(problems), title="Dataset")
    session = session_of(request)
    preset = Preset(session.preset_id or "custom", "AlignLab pairs", "", [], train_pairs, heldout, unpaired=thumbs)
    try:
        recipe = build_recipe(
            preset,
            settings,
            target=target_model,
            gpus=whole_number(gpus, "GPUs", 1, 1024),
            engine=engine,
            adapter=None if adapter == "lab" else adapter,
            mix=list(mix or []),
            gpu_memory_gib=real_number(gpu_memory, "GPU memory (GiB)", 8, 4096),
        )
    except RecipeError as exc:
        raise gr.Error(str(exc), title="Recipe") from exc
    path = recipe_zip(recipe, session.path("alignlab-recipe.zip"))
    summary = (
        recipe.summary().replace("\n", "  \n")
        + "  \nUnzip, then `alignlab-recipe/run.sh --cpu --processes 2 --model <a small model> --max-steps 3` "
        "tries it anywhere; `alignlab-recipe/run.sh` runs it on the GPUs. Its README says what runs and why."
    )
    return str(path), summary


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
    method = gr.Dropdown(
        method_choices(),
        value=DEFAULT_METHOD,
        label="Method",
        info="Each on TRL's own trainer; picking one sets its own β, learning rate and steps.",
        allow_custom_value=True,  # an API client's unknown name gets the list of known ones from settings_from_inputs
        elem_id="train-method",
    )
    with gr.Row():
        beta = knob_widget("beta")
        learning_rate = knob_widget("learning_rate")
        steps = knob_widget("steps")
        batch_size = knob_widget("batch_size")
    with gr.Row():
        loss_type = gr.Dropdown(
            [(f"{name} — {text}", name) for name, text in LOSS_TYPES.items()],
            value=DEFAULTS.loss_type,
            label="Loss type",
            info="sigmoid is the original DPO.",
            scale=3,
        )
        sft_weight = knob_widget("sft_weight", scale=1)
        seed = knob_widget("seed", scale=1)
    adapter = build_adapter_controls()
    with gr.Row():
        start = gr.Button("Start training", variant="primary", elem_id="train-start")
        stop = gr.Button("Stop", variant="stop", elem_id="train-stop")
    status = gr.Markdown(
        "Press **Start training** once the baseline is recorded.", label="status", elem_id="train-status"
    )
    plot = {"x": "step", "height": 260, "show_label": False}
    with gr.Row():
        loss_plot = gr.LinePlot(
            y="loss", label="loss plot", title="Training loss (should fall)", elem_id="plot-loss", **plot
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
            title="Rewards: chosen vs rejected (RLHF: sampled answers' reward, and KL)",
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
    recipe = build_recipe_controls()
    return SimpleNamespace(
        **vars(adapter),
        **vars(recipe),
        method=method,
        beta=beta,
        learning_rate=learning_rate,
        steps=steps,
        batch_size=batch_size,
        loss_type=loss_type,
        sft_weight=sft_weight,
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


def build_adapter_controls() -> SimpleNamespace:
    """The LoRA switch, its rank, and QLoRA (offered only where CUDA and bitsandbytes are)."""
    with gr.Row():
        use_lora = gr.Checkbox(DEFAULTS.use_lora, label="LoRA adapter", elem_id="train-lora", scale=1)
        lora_rank = knob_widget("lora_rank", scale=1)
        use_qlora = gr.Checkbox(
            False,
            label="QLoRA (4-bit base)",
            interactive=qlora_unavailable() is None,
            elem_id="train-qlora",
            scale=1,
        )
        gr.Markdown(adapter_note(), elem_id="adapter-note")
    return SimpleNamespace(use_lora=use_lora, lora_rank=lora_rank, use_qlora=use_qlora)


def _no_recipe_text() -> str:
    """Which methods have no recipe, and why (TRL ships no script for them)."""
    no_script = [m.title for name, m in METHODS.items() if name not in RECIPE_METHODS and m.script is None]
    not_yet = [m.title for name, m in METHODS.items() if name not in RECIPE_METHODS and m.script is not None]
    parts = [f"{', '.join(no_script)}: no recipe (TRL 1.16 ships no script for them)."] if no_script else []
    parts += [f"{', '.join(not_yet)}: no recipe yet."] if not_yet else []
    return " ".join(parts)


def build_recipe_controls() -> SimpleNamespace:
    """'From the lab to a real run': export the settings and pairs as a recipe for TRL's own script."""
    with gr.Accordion("From the lab to a real run: export a recipe", open=False, elem_id="recipe-panel"):
        gr.Markdown(
            "Take these pairs and settings to a cluster: a folder (zip) with the pairs in TRL's format, a config for "
            "TRL's own script of the method above (`dpo` for DPO and IPO, `kto` for KTO, with the thumbs rows; for "
            "RLHF `reward`, then `rloo` on the reward model it trained) scaled for the target model, launcher "
            "configs (DDP, DeepSpeed ZeRO-2/3, FSDP), `run.sh`, and a README with the "
            "memory estimate and how to mix in public preference data. "
            f"{_no_recipe_text()}"
        )
        with gr.Row():
            target_model = gr.Dropdown(
                list(KNOWN_TARGETS),
                value=DEFAULT_TARGET,
                allow_custom_value=True,
                label="Target model",
                info="Or a local directory with the model's config.json.",
                scale=2,
            )
            gpus = gr.Number(1, label="GPUs", info="1-1024", scale=1)
            gpu_memory = gr.Number(80, label="GiB per GPU", info="80 = H100", scale=1)
        with gr.Row():
            engine = gr.Dropdown([(e.title, name) for name, e in ENGINES.items()], value="ddp", label="Engine", scale=1)
            recipe_adapter = gr.Radio(
                [("As in the lab", "lab"), ("Full", "none"), ("LoRA", "lora"), ("QLoRA", "qlora")],
                value="lora",
                label="Weights trained",
                info="LoRA fits an 8B model on one 80 GiB GPU; full fine-tuning needs ZeRO-3/FSDP on several.",
                scale=2,
            )
            mix = gr.CheckboxGroup(
                [(d.hub_id, name) for name, d in PUBLIC_DATASETS.items()],
                label="Mix in public preference data",
                scale=2,
            )
        export = gr.Button("Export recipe (.zip)", elem_id="recipe-export")
        recipe_summary = gr.Markdown(elem_id="recipe-summary")
        recipe_file = gr.File(label="recipe", interactive=False, elem_id="recipe-file")
    return SimpleNamespace(
        target_model=target_model,
        gpus=gpus,
        gpu_memory=gpu_memory,
        engine=engine,
        recipe_adapter=recipe_adapter,
        mix=mix,
        export=export,
        recipe_summary=recipe_summary,
        recipe_file=recipe_file,
    )


def wire_recipe(tab: SimpleNamespace, dataset: SimpleNamespace) -> None:
    """Export streams nothing and loads no model: it runs outside the model-work queue (``/export_recipe``)."""
    tab.export.click(
        export_recipe_ui,
        [
            dataset.pairs,
            dataset.heldout,
            tab.beta,
            tab.learning_rate,
            tab.steps,
            tab.batch_size,
            tab.loss_type,
            tab.seed,
            tab.use_lora,
            tab.lora_rank,
            tab.target_model,
            tab.gpus,
            tab.engine,
            tab.recipe_adapter,
            tab.gpu_memory,
            tab.mix,
            tab.method,
            tab.sft_weight,
            dataset.unpaired,  # a state: thumbs rows imported on the Dataset tab (not an API parameter)
        ],
        [tab.recipe_file, tab.recipe_summary],
        api_name="export_recipe",
        api_description=api_doc(export_recipe_ui),
        concurrency_limit=None,
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
        tab.use_lora,
        tab.lora_rank,
        tab.use_qlora,
        tab.method,
        tab.sft_weight,
        dataset.unpaired,  # a state: thumbs rows imported on the Dataset tab (not an API parameter)
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
    wire_recipe(tab, dataset)
    tab.method.change(
        method_defaults_ui,
        tab.method,
        [tab.beta, tab.learning_rate, tab.steps, tab.loss_type, tab.sft_weight],
        api_visibility="private",
        queue=False,
    )
    return tab.start.click(
        train_ui,
        inputs(tab, dataset),
        outputs(tab),
        api_name="train",
        api_description=api_doc(train_ui),
        concurrency_limit=None,  # checks answer at once; the model work waits in runs.GATE
        show_progress="minimal",
    )
