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

from embedded_cases import EmbeddedRuns  # noqa: E402

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


#: The embedded model's calibration cases, run in worker processes while the rest of the suite runs.
EMBEDDED_RUNS = EmbeddedRuns(EMBEDDED_PROJECT, OUTPUT_DIR)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests that read the embedded model's cases run last, and the cases the calibration tests name start now,
    in worker processes (:mod:`embedded_cases`), so that the rest of the suite runs while they do."""
    reading = [item for item in items if "embedded_runs" in getattr(item, "fixturenames", ())]
    if not reading:
        return
    items[:] = [item for item in items if item not in reading] + reading
    callspecs = [getattr(item, "callspec", None) for item in reading]
    EMBEDDED_RUNS.submit([spec.params["case"] for spec in callspecs if spec is not None and "case" in spec.params])


def pytest_sessionfinish() -> None:
    EMBEDDED_RUNS.close()


@pytest.fixture(scope="session")
def embedded_runs() -> EmbeddedRuns:
    """Calibration cases (``bench.calibration.Case``) run on the embedded model, each at most once per session:
    ``embedded_runs(case)`` -> the case's report (:class:`embedded_cases.EmbeddedRuns`)."""
    return EMBEDDED_RUNS


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
