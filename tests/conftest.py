"""Shared fixtures: tiny random models built locally (no hub), loaded once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a model hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from alignlab.memory import keep_freed_memory  # noqa: E402
from alignlab.models import LoadedModel, load_model  # noqa: E402
from alignlab.presets import PreferencePair  # noqa: E402
from alignlab.tiny import build_tiny_model  # noqa: E402

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
