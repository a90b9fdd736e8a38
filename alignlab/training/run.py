"""A real, short preference-training run on TRL, streamed to the caller one logged step at a time.

:func:`train_policy` runs ``settings.method`` synchronously: the method's stages in order, each on its own
trainer (:func:`alignlab.training.trainer.build_trainer`), each stage's product handed to the later stages that take it
(RLHF's reward model), every stage's steps numbered as one run. :func:`stream_training` runs it in a thread and
yields a :class:`TrainingEvent` per logged step, which is what a live plot (or a progress bar) consumes. Both
stop cleanly within one optimizer step when asked to (:class:`CancelToken`). After each logged step of the
policy's stage, an optional probe scores the policy on held-out pairs: the live held-out curve.
"""

from __future__ import annotations

import gc
import queue
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, TrainerCallback

from alignlab.data.pairs import PreferencePair, TrainingData
from alignlab.models.loading import LoadedModel, copy_for_training
from alignlab.registry.methods import Product, Stage
from alignlab.registry.settings import SettingsError, TrainingSettings, curve_scores_step
from alignlab.training.memory import PeakMemory
from alignlab.training.openmp import release_pool
from alignlab.training.trainer import build_trainer, plain_model
from alignlab.training.trl_rows import trained_on


@dataclass
class TrainingEvent:
    """One logged optimizer step (``kind='log'``) or the end of the run (``kind='end'``)."""

    kind: str
    step: int
    total_steps: int
    elapsed: float
    row: dict[str, float] = field(default_factory=dict)
    result: TrainingResult | None = None

    @property
    def steps_left(self) -> int:
        return max(0, self.total_steps - self.step)

    def to_dict(self) -> dict[str, Any]:
        """The event as plain data (a log event's row included; the end's result is the caller's to add)."""
        plain = {"kind": self.kind, "step": self.step, "total_steps": self.total_steps, "elapsed": self.elapsed}
        return {**plain, "row": dict(self.row)} if self.kind == "log" else plain

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingEvent:
        """An event again from :meth:`to_dict` (or a step's richer end event), without a result."""
        return cls(data["kind"], data["step"], data["total_steps"], data["elapsed"], dict(data.get("row") or {}))


@dataclass
class TrainingResult:
    """What a run produced: the trained policy, TRL's log history and the live held-out curve."""

    policy: PreTrainedModel
    log_history: list[dict[str, Any]]
    steps_done: int
    total_steps: int
    stopped_early: bool
    seconds: float
    settings: TrainingSettings
    heldout_curve: list[dict[str, Any]] = field(default_factory=list)
    trainable_parameters: int = 0
    """Parameters the run trained: all of them, or the LoRA adapter's."""
    peak_memory_bytes: int | None = None
    """Peak memory during the run, measured (:class:`alignlab.training.memory.PeakMemory`): what ``peak_memory_kind``
    says."""
    peak_memory_kind: str | None = None
    """``cuda_allocated`` (the run's own peak on a GPU) or ``process_rss`` (the whole process's, on a CPU)."""
    device: str = ""
    trained_on: dict[str, int] = field(default_factory=dict)
    """What the method trained on (:func:`trained_on`): dataset rows, pairs, thumbs rows, pairs formed from them."""
    reward_model: dict[str, Any] | None = None
    """A method that trains a reward model: how it ranks the held-out and contrast pairs
    (:func:`alignlab.evidence.judges.reward_model_check`), measured when its stage ends; the report's
    ``eval.reward_model``."""

    @property
    def step_rows(self) -> list[dict[str, Any]]:
        return training_rows(self.log_history)

    @property
    def seconds_per_step(self) -> float | None:
        return self.seconds / self.steps_done if self.steps_done else None

    def summary(self) -> dict[str, Any]:
        """Everything but the policy, as plain data: the one form a run crosses a process, a session or a file in."""
        return {
            "settings": self.settings.to_dict(),
            "log_history": [dict(row) for row in self.log_history],
            "steps_done": self.steps_done,
            "total_steps": self.total_steps,
            "stopped_early": self.stopped_early,
            "seconds": self.seconds,
            "heldout_curve": [dict(point) for point in self.heldout_curve],
            "trainable_parameters": self.trainable_parameters,
            "peak_memory_bytes": self.peak_memory_bytes,
            "peak_memory_kind": self.peak_memory_kind,
            "device": self.device,
            "trained_on": dict(self.trained_on),
            "reward_model": dict(self.reward_model) if self.reward_model else None,
        }

    @classmethod
    def from_summary(cls, data: dict[str, Any], policy: Any) -> TrainingResult:
        """The result again from :meth:`summary` and the policy (loaded from where the run saved it)."""
        return cls(
            policy=policy,
            log_history=list(data["log_history"]),
            steps_done=data["steps_done"],
            total_steps=data["total_steps"],
            stopped_early=data["stopped_early"],
            seconds=data["seconds"],
            settings=TrainingSettings.from_dict(data["settings"]),
            heldout_curve=list(data.get("heldout_curve") or []),
            trainable_parameters=data.get("trainable_parameters") or 0,
            peak_memory_bytes=data.get("peak_memory_bytes"),
            peak_memory_kind=data.get("peak_memory_kind"),
            device=data.get("device") or "",
            trained_on=dict(data.get("trained_on") or {}),
            reward_model=data.get("reward_model"),
        )


class CancelToken:
    """Set from any thread to stop a run at the end of the current step."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


def training_rows(log_history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The per-step rows of TRL's ``log_history`` (the final summary row has no ``loss``)."""
    return [row for row in log_history if "loss" in row and "step" in row]


#: Scores the policy after a logged step: ``probe(policy, step)`` -> a point of the held-out curve
#: (``{"step", "accuracy", "margin", ...}``); see :meth:`alignlab.evidence.evaluation.PreferenceProbe.curve_point`.
StepProbe = Callable[[torch.nn.Module, int], dict[str, Any]]

#: Prefix of the curve's figures in a streamed log row (``heldout/accuracy``, ``heldout/margin``, ...).
CURVE_PREFIX = "heldout/"


class _StreamCallback(TrainerCallback):
    """Forwards each logged step to ``on_event``, runs the held-out probe, and honours a cancel request.

    A method of several stages gets one callback per stage: ``stage`` (what the stage trains) tags each row,
    ``offset`` is the steps of the stages before it, so that a row's ``step`` counts the whole run, and
    ``total`` is the whole run's steps (None: this trainer's own).
    """

    def __init__(
        self,
        on_event: Callable[[TrainingEvent], None] | None,
        cancel: CancelToken | None,
        started: float,
        probe: StepProbe | None = None,
        stage: str | None = None,
        offset: int = 0,
        total: int | None = None,
    ):
        self.on_event = on_event
        self.cancel = cancel
        self.started = started
        self.probe = probe
        self.stage = stage
        self.offset = offset
        self.total = total
        self.curve: list[dict[str, Any]] = []
        self.stopped_early = False

    def on_log(self, args, state, control, logs=None, model=None, **kwargs):  # noqa: ANN001 - TrainerCallback API
        if logs and "loss" in logs:
            step = self.offset + state.global_step
            row: dict[str, Any] = {k: float(v) for k, v in logs.items() if isinstance(v, (int, float))}
            row["step"] = step
            if self.stage is not None:
                row["stage"] = self.stage
            if self.probe is not None and model is not None and curve_scores_step(state.global_step, state.max_steps):
                point = self.probe(model, step)  # the policy in eval mode, no gradients
                self.curve.append(point)
                row.update({CURVE_PREFIX + k: v for k, v in point.items() if k != "step"})
            if self.on_event is not None:
                total = self.total if self.total is not None else self.offset + state.max_steps
                self.on_event(TrainingEvent("log", step, total, time.perf_counter() - self.started, row))
        return self._maybe_stop(state, control)  # a cancel sent while this step was logged stops here

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
        return self._maybe_stop(state, control)

    def _maybe_stop(self, state, control):  # noqa: ANN001
        if self.cancel is not None and self.cancel.cancelled and state.global_step < state.max_steps:
            self.stopped_early = True
            control.should_training_stop = True
        return control


@contextmanager
def garbage_frozen() -> Iterator[None]:
    """While training runs, the garbage collector leaves out every object that existed before it.

    The HF Trainer starts each run with ``accelerator.free_memory()``, a full ``gc.collect()``: in a
    process holding torch, transformers, TRL (and gradio), that pass over every object costs a large share
    of a warm GPU training (``docs/performance.md``). Frozen (``gc.freeze``), a pass reads only what was made
    since; everything is handed back to the collector when training ends, so nothing is kept alive for good.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def train_policy(
    loaded: LoadedModel,
    pairs: list[PreferencePair] | TrainingData,
    settings: TrainingSettings,
    on_event: Callable[[TrainingEvent], None] | None = None,
    cancel: CancelToken | None = None,
    output_dir: str | Path | None = None,
    probe: StepProbe | None = None,
    reward_check: Callable[[PreTrainedModel], dict[str, Any] | None] | None = None,
) -> TrainingResult:
    """Run ``settings.method`` on a private copy of ``loaded.model``; the loaded model stays the reference.

    ``pairs``: a list of pairs, or :class:`TrainingData` (pairs and/or thumbs rows; see
    :func:`alignlab.training.trl_rows.stage_rows` for what each stage trains on).

    The method's stages run in order, each on its own trainer; what a stage trains is handed to the later
    stages that take it (RLHF's reward model), and the last stage's is the policy. Rows are numbered over
    the whole run and, for a method of several stages, carry the ``stage`` that logged them. ``probe``, when
    given, scores the policy after every logged step of the policy's stage (the live held-out curve). A
    cancel stops the stage that runs and skips the rest; if the policy's stage never ran, the policy is the
    untrained copy. ``reward_check``, when given, reads a reward model a stage trained (on pairs it never saw) before
    the later stages run; its answer is the result's ``reward_model``.
    """
    if TrainingData.of(pairs).empty:
        raise SettingsError("There are no training pairs: add at least one pair before training.")
    counts = trained_on(TrainingData.of(pairs), settings)  # a paired method on thumbs rows that form no pair stops
    started = time.perf_counter()
    method = settings.method_entry
    per_stage = settings.stage_steps(max(1, counts["rows"] // method.stage.rows_per_pair))
    run = _Run(planned=per_stage * len(method.stages), tagged=len(method.stages) > 1, reward_check=reward_check)
    with (
        PeakMemory(loaded.device) as peak,
        tempfile.TemporaryDirectory(prefix=f"alignlab-{settings.method}-") as scratch,
    ):
        for stage in method.stages:
            if run.stopped:
                run.total += per_stage  # a stage a cancel skipped: still part of the run that was planned
                continue
            callback = _StreamCallback(
                on_event,
                cancel,
                started,
                probe if stage.trains_policy else None,  # only the policy's stage changes the policy
                stage=stage.trains if run.tagged else None,
                offset=run.done,
                total=run.planned if run.tagged else None,
            )
            trainer = build_trainer(loaded, pairs, settings, output_dir or scratch, [callback], stage, run.products)
            run.add(stage, trainer, callback)
            del trainer
    loaded.tokenizer.padding_side = "left"  # the trainer may have changed it; generation needs left
    result = run.result(loaded, settings, counts, time.perf_counter() - started, peak)
    if on_event is not None:
        on_event(TrainingEvent("end", result.steps_done, result.total_steps, result.seconds, result=result))
    return result


@dataclass
class _Run:
    """A run of a method's stages so far: each stage's product, the rows logged over the whole run, the curve."""

    planned: int
    tagged: bool
    """Whether rows carry the stage that logged them (a method of several stages)."""
    products: dict[str, Any] = field(default_factory=dict)
    log_history: list[dict[str, Any]] = field(default_factory=list)
    curve: list[dict[str, Any]] = field(default_factory=list)
    done: int = 0
    total: int = 0
    trainable: int = 0
    stopped: bool = False
    reward_check: Callable[[PreTrainedModel], dict[str, Any] | None] | None = None
    reward_model: dict[str, Any] | None = None

    def add(self, stage: Stage, trainer: Any, callback: _StreamCallback) -> None:
        """Train ``stage`` and keep what it made: its product, its rows numbered over the whole run."""
        if stage.trains_policy:
            self.trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
        with garbage_frozen():
            trainer.train()
        self.products[stage.trains] = plain_model(trainer)
        if stage.trains_reward_model and self.reward_check is not None:
            self.reward_model = self.reward_check(self.products[stage.trains])
        for row in trainer.state.log_history:
            row = dict(row)
            if "step" in row:
                row["step"] += self.done
            if self.tagged:
                row["stage"] = stage.trains
            self.log_history.append(row)
        self.curve += callback.curve
        self.done += trainer.state.global_step
        self.total += trainer.state.max_steps
        self.stopped = callback.stopped_early

    def result(
        self, loaded: LoadedModel, settings: TrainingSettings, counts: dict[str, int], seconds: float, peak: PeakMemory
    ) -> TrainingResult:
        """What the run made: the last stage's policy (the untrained copy if the policy's stage never ran)."""
        trained = self.products.get(Product.POLICY) or copy_for_training(loaded)
        trained.eval()
        return TrainingResult(
            policy=trained,
            log_history=self.log_history,
            steps_done=self.done,
            total_steps=self.total,
            stopped_early=self.stopped,
            seconds=seconds,
            settings=settings,
            heldout_curve=self.curve,
            trainable_parameters=self.trainable,
            peak_memory_bytes=peak.bytes,
            peak_memory_kind=peak.kind,
            device=str(loaded.device),
            trained_on=counts,
            reward_model=self.reward_model,
        )


def stream_training(
    loaded: LoadedModel,
    pairs: list[PreferencePair] | TrainingData,
    settings: TrainingSettings,
    cancel: CancelToken | None = None,
    probe: StepProbe | None = None,
    reward_check: Callable[[PreTrainedModel], dict[str, Any] | None] | None = None,
) -> Iterator[TrainingEvent]:
    """Yield one event per logged step while training runs, then an ``end`` event with the result.

    If the consumer stops iterating (a closed generator, a cancelled request), the run is
    cancelled and the thread joined before this generator finishes; a run that ended leaves ``cancel`` as it was
    (a comparison's token goes on to its next run).
    """
    cancel = cancel or CancelToken()
    events: queue.Queue[TrainingEvent | BaseException] = queue.Queue()

    def work() -> None:
        try:
            train_policy(
                loaded, pairs, settings, on_event=events.put, cancel=cancel, probe=probe, reward_check=reward_check
            )
        except BaseException as exc:  # re-raised in the consumer's thread
            events.put(exc)

    # This thread only waits from here: its OpenMP workers would slow the training's (alignlab.training.openmp).
    release_pool()
    thread = threading.Thread(target=work, name=f"alignlab-{settings.method}", daemon=True)
    thread.start()
    ended = False
    try:
        while True:
            item = events.get()
            if isinstance(item, BaseException):
                ended = True
                raise item
            ended = item.kind == "end"
            yield item
            if ended:
                return
    finally:
        if not ended:
            cancel.cancel()
        thread.join()
