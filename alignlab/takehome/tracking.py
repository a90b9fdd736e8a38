"""Every run in trackio: its label, method and settings, its steps and live curve, then its evidence and verdict.

One trackio run per lab run (RLHF's two stages in one, each row tagged with its stage), under one project
(``alignlab``; ``ALIGNLAB_TRACKIO_PROJECT`` or the CLI's ``--project`` name another), logged through trackio's own
API from the lab's step events. TRL's ``report_to`` is not used: it closes its run when training ends, before the
evidence exists, and opens one per trainer. Training and its comparison may happen apart (the app's Train and
Compare tabs), so the evidence resumes the run by its name. Tracking never stops a run: a failure (a full disk, an
unreachable Hub for a synced project) is one warning, and the run goes on untracked.

Where: trackio's own store, SQLite under ``TRACKIO_DIR`` (default ``~/.cache/huggingface/trackio``); synced to a
Space only where trackio is told to (``TRACKIO_SPACE_ID``). On a public Space
(:func:`alignlab.serving.public.public_mode`)
tracking is off unless the Space's owner names a project: visitors' runs are not pooled anywhere by default. Each
run's name carries its own random part, so no run (and no visitor) can write into another's; a project keeps at
most ``ALIGNLAB_TRACKIO_MAX_RUNS`` runs (default 500), the oldest deleted first, so the store stays bounded.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from alignlab.registry.methods import METHODS
from alignlab.registry.settings import TrainingSettings
from alignlab.serving.public import public_mode

LOG = logging.getLogger(__name__)

DEFAULT_PROJECT = "alignlab"
DEFAULT_MAX_RUNS = 500
#: The common axes logged beside each method's own keys (``axes/margin`` whatever TRL calls it).
AXES = ("loss", "margin", "accuracy", "chosen", "rejected", "reward", "kl")
VERDICT_LEVELS = {"healthy": 0, "warning": 1, "failed": 2}
_PRUNE_LOCK = threading.Lock()


def project_name(explicit: str | None = None) -> str | None:
    """The trackio project runs go to, or None when tracking is off.

    ``explicit`` (the CLI's ``--project``) wins; then ``ALIGNLAB_TRACKIO_PROJECT``; ``ALIGNLAB_TRACKIO=0`` turns
    tracking off. On a public Space it is off unless the owner set ``ALIGNLAB_TRACKIO_PROJECT``.
    """
    if explicit:
        return explicit
    if os.environ.get("ALIGNLAB_TRACKIO", "1").strip() == "0":
        return None
    configured = os.environ.get("ALIGNLAB_TRACKIO_PROJECT", "").strip()
    if configured:
        return configured
    return None if public_mode() else DEFAULT_PROJECT


def check_project(name: str) -> str:
    """A project name trackio accepts (letters, digits, ``-``, ``_``, ``.``); a clear message otherwise."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}", name):
        raise ValueError(
            f"trackio project {name!r}: use letters, digits, '-', '_' or '.', starting with a letter or digit."
        )
    return name


def run_name(*parts: Any) -> str:
    """A run name from readable parts and a random tail (``seed-lab-dpo-3f9a1c``), unique to this run."""
    words = [re.sub(r"[^A-Za-z0-9._-]+", "-", str(p)).strip("-") for p in parts if p not in (None, "")]
    return "-".join([*[w for w in words if w], uuid.uuid4().hex[:6]])


def dashboard_text(project: str, name: str) -> str:
    """Where a person sees the run: the owner's trackio Space, or ``trackio show`` on this machine."""
    space = os.environ.get("TRACKIO_SPACE_ID", "").strip()
    where = (
        f"the dashboard at https://huggingface.co/spaces/{space}"
        if space
        else f"`trackio show --project {project}` on the machine that ran it"
    )
    return f"Tracked in trackio: project `{project}`, run `{name}`; see it with {where}."


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def step_metrics(row: dict[str, Any], method: str) -> dict[str, Any]:
    """A logged step as trackio metrics: every numeric key as TRL (or the live curve) named it, the common axes
    under ``axes/``, and the stage of a method of several stages."""
    metrics: dict[str, Any] = {}
    for key, value in row.items():
        number = _number(value)
        if number is not None and key != "step":
            metrics[key] = number
    entry = METHODS.get(method)
    for axis in AXES:
        key = entry.key(axis) if entry is not None else None
        if key is not None and key in metrics:
            metrics[f"axes/{axis}"] = metrics[key]
    if row.get("stage"):
        metrics["stage"] = str(row["stage"])
    return metrics


def report_metrics(report: dict[str, Any]) -> dict[str, Any]:
    """A report's evidence and verdict as trackio metrics: each figure under ``eval/`` (intervals as ``_low`` and
    ``_high``), the answers changed, the verdict as a word, a level (0 healthy, 1 warning, 2 failed) and its codes."""
    metrics: dict[str, Any] = {}
    for key, value in (report.get("eval") or {}).items():
        number = _number(value)
        if number is not None:
            metrics[f"eval/{key}"] = number
        elif key.endswith("_interval") and isinstance(value, (list, tuple)) and len(value) == 2:
            for end, bound in zip(("low", "high"), value):
                if _number(bound) is not None:
                    metrics[f"eval/{key}_{end}"] = float(bound)
    if _number(report.get("changed")) is not None:
        metrics["eval/answers_changed"] = float(report["changed"])
    health = report.get("health") or {}
    if health.get("verdict"):
        metrics["verdict"] = health["verdict"]
        metrics["verdict_level"] = float(VERDICT_LEVELS.get(health["verdict"], 1))
        metrics["verdict_codes"] = ", ".join(health.get("codes") or [])
    return metrics


_PRINTS_ROUTED = False


def _route_trackio_prints() -> None:
    """trackio announces each step of its own on stdout with ``print``; send those lines to this module's log
    instead, so that the lab's output (a CLI report, a server's log, a bench worker's result line) stays its own.
    A module-level ``print`` shadows the builtin for that module only: no other thread's output is touched."""
    global _PRINTS_ROUTED
    if _PRINTS_ROUTED:
        return
    import importlib

    def to_log(*args: Any, **_: Any) -> None:
        LOG.info("trackio: %s", " ".join(str(a) for a in args).strip())

    for name in ("trackio", "trackio.run", "trackio.utils", "trackio.sqlite_storage"):
        importlib.import_module(name).print = to_log
    _PRINTS_ROUTED = True


@dataclass
class RunTracker:
    """One lab run in trackio: :meth:`log_row` per logged step, :meth:`end_training`, then :meth:`log_report`."""

    project: str
    name: str
    method: str
    config: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    """Time spent in trackio's calls (init, log, finish), measured here: the logging's own cost."""
    calls: int = 0
    last_step: int = 0
    failed: str | None = None
    _run: Any = None

    def _call(self, what: str, work: Any) -> Any:
        if self.failed is not None:
            return None
        started = time.perf_counter()
        try:
            return work()
        except Exception as exc:  # noqa: BLE001 - tracking never stops a run
            self.failed = f"{what}: {exc}"
            self._run = None
            LOG.warning("trackio: %s failed (%s); the run goes on untracked", what, exc)
            return None
        finally:
            self.seconds += time.perf_counter() - started
            self.calls += 1

    def _open(self, resume: str) -> None:
        import trackio
        from trackio import context_vars

        _route_trackio_prints()
        self._run = trackio.init(
            project=self.project,
            name=self.name,
            config=self.config,
            resume=resume,
            embed=False,
            auto_log_cpu=False,
            auto_log_gpu=False,
        )
        # This tracker holds its run; trackio's "current run" (and its finish at exit) is not used.
        context_vars.current_run.set(None)

    def start(self) -> RunTracker:
        started = time.perf_counter()
        prune(self.project)  # the first call imports trackio: counted in the logging's cost too
        self.seconds += time.perf_counter() - started
        self._call("starting the run", lambda: self._open("never"))
        return self

    def log_row(self, row: dict[str, Any]) -> None:
        if self._run is None:
            return
        step = int(row.get("step") or self.last_step + 1)
        self.last_step = max(self.last_step, step)
        metrics = step_metrics(row, self.method)
        self._call("logging a step", lambda: self._run.log(metrics, step=step))

    def follow(self, event: dict[str, Any]) -> None:
        """One event of the lab's training step (:func:`alignlab.pipeline.steps.train`): a logged step, or the end of
        training."""
        if event["kind"] == "log":
            self.log_row(event["row"])
        else:
            stopped = bool(event.get("stopped_early"))
            self.end_training(event.get("steps_done") or 0, event.get("seconds") or 0.0, stopped)

    def end_training(self, steps_done: int, seconds: float, stopped_early: bool) -> None:
        """The end of training: its summary, then the trackio run is closed until the evidence reopens it."""
        if self._run is None:
            return
        summary = {"run/steps_done": float(steps_done), "run/seconds": seconds, "run/stopped_early": stopped_early}
        self._call("logging the end of training", lambda: self._run.log(summary, step=max(self.last_step, 1)))
        self.finish()

    def log_report(self, report: dict[str, Any]) -> None:
        """The evidence and the verdict, at the run's last step (the run reopened by its name)."""
        if self.failed is not None:
            return
        if self._run is None:
            self._call("reopening the run", lambda: self._open("allow"))
        if self._run is None:
            return
        metrics = report_metrics(report)
        self._call("logging the evidence", lambda: self._run.log(metrics, step=max(self.last_step, 1)))
        self.finish()

    def summary(self) -> dict[str, Any]:
        """Where the run is and what logging it cost (the report's ``tracking``)."""
        return {
            "project": self.project,
            "run": self.name,
            "dashboard": dashboard_text(self.project, self.name),
            "logging_seconds": round(self.seconds, 4),
            "logging_calls": self.calls,
            "failed": self.failed,
        }

    def finish(self) -> None:
        if self._run is not None:
            run, self._run = self._run, None
            self._call("closing the run", run.finish)


def start(name: str, method: str, config: dict[str, Any], project: str | None = None) -> RunTracker | None:
    """A tracked run under ``project`` (see :func:`project_name`), started; None when tracking is off."""
    chosen = project_name(project)
    if chosen is None:
        return None
    return RunTracker(check_project(chosen), name, method, config).start()


def start_run(
    settings: TrainingSettings,
    preset: str,
    model: str,
    label: str = "",
    title: str = "",
    owner: str = "",
    project: str | None = None,
) -> RunTracker | None:
    """The trackio run of a lab run of ``settings`` on ``preset`` with ``model``, started (None when tracking is off).

    Its name reads ``preset-owner-label-method-<random>`` (``owner``: a session's key, so that no other visitor's run
    shares it); its config carries ``title`` (default: ``label``, else the method), the preset, the model and every
    setting. ``project``: see :func:`project_name`.
    """
    name = run_name(preset, owner, label, settings.method)
    config = run_config(title or label or settings.method_label, settings.to_dict(), preset=preset, model=model)
    return start(name, settings.method, config, project)


def run_config(label: str, settings: dict[str, Any], **more: Any) -> dict[str, Any]:
    """A run's trackio config: its label, method and every training setting (plain values)."""
    config = {"label": label, "method": settings.get("method"), **{k: v for k, v in more.items() if v is not None}}
    config.update({f"settings/{k}": v for k, v in settings.items() if isinstance(v, (str, int, float, bool))})
    return config


def max_runs() -> int:
    try:
        return max(1, int(os.environ.get("ALIGNLAB_TRACKIO_MAX_RUNS", DEFAULT_MAX_RUNS)))
    except ValueError:
        return DEFAULT_MAX_RUNS


def prune(project: str, keep: int | None = None) -> int:
    """Delete the project's oldest runs beyond ``keep`` - 1 (room for the one starting); returns how many went."""
    keep = max_runs() if keep is None else keep
    try:
        from trackio.sqlite_storage import SQLiteStorage

        _route_trackio_prints()
        with _PRUNE_LOCK:
            runs = SQLiteStorage.get_runs(project)
            surplus = runs[: max(0, len(runs) - (keep - 1))]
            for old in surplus:
                SQLiteStorage.delete_run(project, old)
        return len(surplus)
    except Exception as exc:  # noqa: BLE001 - a store that cannot be pruned is a warning, not a failed run
        LOG.warning("trackio: could not prune project %s (%s)", project, exc)
        return 0
