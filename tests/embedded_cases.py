"""The embedded model's calibration cases (``bench.calibration.Case``), run in worker processes beside the rest of
the suite.

Each case is a real lab run on SmolLM2-135M, by the same path as ``alignlab.pipeline.steps.run_lab``
(``load_and_baseline``, then ``train_and_compare``), tracked in the tests' trackio store. They are most of the
suite's work, so they do not wait their turn: :class:`EmbeddedRuns` hands them to :data:`WORKERS` processes as soon
as the session's tests are collected (``conftest.pytest_collection_modifyitems``), and the tests that read them run
last. Each worker gets ``cores // WORKERS`` torch threads, as the app sizes runs that share the cores
(``alignlab.serving.line.torch_threads_per_run``): two runs of one thread each do more per second on two cores
than one run of two, and the other tests' servers and browsers fill the cores' idle time. A worker records a
source's baseline answers once, for every case it runs on that source. Only the report comes back (a run's policy
is a full copy of the model).

This module has no side effects on import: the workers import it by name (``spawn``).
"""

from __future__ import annotations

import contextlib
import multiprocessing
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

#: Worker processes for the cases.
WORKERS = 2

_baselines: dict[str, Any] = {}  # a worker's baselines, by the case's source


def _start_worker(threads: int, logs: str) -> None:
    """A worker's start: its share of the cores, and its output (TRL's progress bars, warnings) into a log of its
    own in ``logs`` (``test-output/``) instead of across the suite's."""
    import os
    from pathlib import Path

    import torch

    from alignlab.training.memory import keep_freed_memory

    Path(logs).mkdir(parents=True, exist_ok=True)
    log = os.open(Path(logs) / f"embedded-worker-{os.getpid()}.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    torch.set_num_threads(threads)
    keep_freed_memory()  # as the app and the CLI do at start-up


def run_case(case: Any, project: str) -> dict[str, Any]:
    """Run ``case`` (a ``bench.calibration.Case``) in this process, tracked under ``project``; its report."""
    import gc

    from alignlab.pipeline.steps import load_and_baseline, train_and_compare
    from alignlab.registry.model_shapes import EMBEDDED_DEFAULT
    from alignlab.registry.settings import GenerationSettings, TrainingSettings
    from alignlab.takehome.tracking import start_run
    from bench.calibration import source_dataset

    if case.source not in _baselines:
        _baselines[case.source] = load_and_baseline(EMBEDDED_DEFAULT, source_dataset(case.source), GenerationSettings())
    settings = TrainingSettings.for_method(case.method, **case.settings)
    dataset = case.dataset()
    tracker = start_run(settings, dataset.id, EMBEDDED_DEFAULT, case.slug, project=project)
    report, trained = train_and_compare(_baselines[case.source], dataset, settings, tracker=tracker)
    del trained
    gc.collect()
    return report


def expected_cost(case: Any) -> int:
    """A case's training steps over all its method's stages: the longest cases go to the workers first."""
    from alignlab.registry.settings import TrainingSettings

    settings = TrainingSettings.for_method(case.method, **case.settings)
    return settings.steps * len(settings.method_entry.stages)


def running_order(cases: list[Any]) -> list[Any]:
    """The longest case of each source first (so that the workers start on different sources, and what a source's
    cases share on disk, such as the original model's judged answers, is computed once), then the rest, the longest
    first."""
    longest = sorted(cases, key=expected_cost, reverse=True)
    firsts = list({case.source: case for case in reversed(longest)}.values())[::-1]
    firsts.sort(key=expected_cost, reverse=True)
    return firsts + [case for case in longest if case not in firsts]


class EmbeddedRuns:
    """The cases' runs: ``runs(case)`` -> the case's report, run at most once per session."""

    def __init__(self, project: str, logs: Path) -> None:
        self.project = project
        self.logs = logs
        self._pool: ProcessPoolExecutor | None = None
        self._runs: dict[str, Future[dict[str, Any]]] = {}

    def submit(self, cases: list[Any]) -> None:
        """Start ``cases`` that are not started yet (:func:`running_order`)."""
        if self._pool is None:
            from alignlab.models.loading import ModelLoadError, ensure_embedded_model
            from alignlab.serving.line import torch_threads_per_run

            with contextlib.suppress(ModelLoadError):  # a missing model is each case's own error
                ensure_embedded_model()  # converted once here, not by each worker at once

            self._pool = ProcessPoolExecutor(
                WORKERS,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker,
                initargs=(torch_threads_per_run(WORKERS), str(self.logs)),
            )
        for case in running_order(cases):
            if case.name not in self._runs:
                self._runs[case.name] = self._pool.submit(run_case, case, self.project)

    def __call__(self, case: Any) -> dict[str, Any]:
        self.submit([case])
        return self._runs[case.name].result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
