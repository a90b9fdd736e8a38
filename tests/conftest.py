"""Shared fixtures: tiny random models built locally (no hub), loaded once per session."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a model hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
#: The tests' own trackio store (trackio reads TRACKIO_DIR once, when first imported).
TRACKIO_STORE = Path(tempfile.mkdtemp(prefix="alignlab-trackio-"))
os.environ["TRACKIO_DIR"] = str(TRACKIO_STORE)
os.environ.pop("ALIGNLAB_TRACKIO_PROJECT", None)
#: The trackio projects of the shared runs below: the tiny model's comparison and the embedded model's cases.
TINY_PROJECT = "alignlab-tiny"
EMBEDDED_PROJECT = "alignlab-embedded"

from alignlab.data.presets import PreferencePair  # noqa: E402
from alignlab.models.loading import LoadedModel, load_model  # noqa: E402
from alignlab.models.tiny import build_tiny_model  # noqa: E402
from alignlab.training.memory import keep_freed_memory  # noqa: E402

keep_freed_memory()  # as the app and the CLI do at start-up

SHARED_DIR = Path(__file__).resolve().parents[2] / "shared"
OUTPUT_DIR = Path(__file__).resolve().parents[1] / "test-output"


@pytest.fixture(scope="session")
def tiny_chat_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer Llama with a ChatML template, saved with save_pretrained."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-chat"), chat=True)


@pytest.fixture(scope="session")
def tiny_base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer GPT-2 without chat template or pad token, like the real GPT-2."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-base"), chat=False)


@pytest.fixture(scope="session")
def tiny_chat(tiny_chat_dir: Path) -> LoadedModel:
    return load_model(str(tiny_chat_dir), device="cpu")


@pytest.fixture(scope="session")
def tiny_base(tiny_base_dir: Path) -> LoadedModel:
    return load_model(str(tiny_base_dir), device="cpu")


@pytest.fixture(scope="session")
def tiny_comparison(tiny_chat_dir: Path) -> dict:
    """Every method of the registry run on seed-lab with the tiny model, one after another on one baseline
    (``alignlab.pipeline.comparison.run_comparison``, 2 steps each): the runs the comparison and method tests read."""
    from alignlab.data.presets import load_preset
    from alignlab.pipeline.comparison import comparison_settings, run_comparison
    from alignlab.registry.methods import METHODS
    from alignlab.registry.settings import GenerationSettings

    settings = comparison_settings(list(METHODS), steps=2)
    return run_comparison(
        str(tiny_chat_dir),
        load_preset("seed-lab"),
        settings,
        GenerationSettings(max_new_tokens=6),
        track=True,
        project=TINY_PROJECT,
    )


@pytest.fixture(scope="session")
def embedded_runs():
    """Calibration cases (``bench.calibration.Case``) run on the embedded model, each at most once per session, on
    one loaded model and one baseline per source: ``run(case)`` -> the case's report.

    The same path as ``alignlab.pipeline.steps.run_lab`` (``load_and_baseline``, then ``train_and_compare``), with the
    baseline answers of a source recorded once for every case on it. Only the report is kept (a run's policy is
    a full copy of the model)."""
    import gc

    from alignlab.pipeline.steps import Baseline, load_and_baseline, train_and_compare
    from alignlab.registry.model_shapes import EMBEDDED_DEFAULT
    from alignlab.registry.settings import GenerationSettings, TrainingSettings
    from alignlab.takehome.tracking import start_run
    from bench.calibration import source_dataset

    generation = GenerationSettings()
    baselines: dict[str, Baseline] = {}
    reports: dict[str, dict] = {}

    def run(case) -> dict:  # noqa: ANN001 - a bench.calibration.Case
        if case.name not in reports:
            if case.source not in baselines:
                baselines[case.source] = load_and_baseline(EMBEDDED_DEFAULT, source_dataset(case.source), generation)
            settings = TrainingSettings.for_method(case.method, **case.settings)
            dataset = case.dataset()
            tracker = start_run(settings, dataset.id, EMBEDDED_DEFAULT, case.slug, project=EMBEDDED_PROJECT)
            report, trained = train_and_compare(baselines[case.source], dataset, settings, tracker=tracker)
            del trained
            gc.collect()
            reports[case.name] = report
        return reports[case.name]

    return run


@pytest.fixture
def pairs() -> list[PreferencePair]:
    return [
        PreferencePair("How do I boil an egg?", "Sure! Boil it for eight minutes.", "No."),
        PreferencePair("How do I learn to code?", "Great question. Start with small projects.", "Whatever."),
        PreferencePair("How can I sleep better?", "Sure! Keep a regular bedtime.", "Not my problem."),
        PreferencePair("How do I save money?", "Great question. Track what you spend.", "Figure it out."),
    ]


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The project's shared/ folder (beside the checkout, as in CI)."""
    return SHARED_DIR


@pytest.fixture(scope="session")
def output_dir() -> Path:
    OUTPUT_DIR.mkdir(exist_ok=True)
    return OUTPUT_DIR
