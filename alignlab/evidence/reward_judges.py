"""The reward-model judges: the lab's own, trained on a run's pairs, and one the user names; and which judge speaks.

:func:`pick_judge` turns the judge a person asked for (``""``/``"agreement"``, ``"lab_reward_model"`` or a model
id/path) into a judge of :mod:`alignlab.evidence.judges` (the choice itself is checked at the boundary, before any
work, by
:func:`alignlab.pipeline.steps.check_judge_spec`).

The lab's reward model is trained by TRL's RewardTrainer through the same stage as RLHF's first
(:data:`alignlab.registry.methods.METHODS` ``["rlhf"].stages[0]``, built by
:func:`alignlab.training.trainer.build_trainer`) on the
run's training pairs, at RLHF's defaults; it depends only on the model and the pairs, so it is trained once and kept
under the AlignLab cache (``judges/``), and every later run on the same data reuses it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

from alignlab.data.pairs import PreferencePair
from alignlab.evidence.judges import (
    AGREEMENT,
    LAB_REWARD_MODEL,
    LAB_REWARD_MODEL_MEASURES,
    AgreementJudge,
    Judge,
    RewardModelJudge,
)
from alignlab.models.loading import LoadedModel, ModelLoadError, cache_root, model_key, resolve_spec

#: What a person may type for the default judge and for the lab's reward model.
AGREEMENT_NAMES = ("", AGREEMENT)
LAB_NAMES = (LAB_REWARD_MODEL, "lab")

_named: dict[str, tuple[Any, Any, bool]] = {}
_lock = threading.Lock()


def judge_source(spec: str | None) -> str:
    """The judge's name as the report's ``eval.judge.source`` gives it: 'agreement', 'lab_reward_model' or the
    model's spec."""
    spec = (spec or "").strip()
    if spec in AGREEMENT_NAMES:
        return AGREEMENT
    if spec in LAB_NAMES:
        return LAB_REWARD_MODEL
    return spec


def pick_judge(
    loaded: LoadedModel,
    spec: str | None,
    heldout: list[PreferencePair],
    contrast: list[PreferencePair],
    training: list[PreferencePair],
    seed: int,
    trains_reward_model: bool,
) -> tuple[Judge, str]:
    """The judge for a run and, where it is not the one asked for, why (else ''). ``trains_reward_model``: the run's
    method trains its own reward model on these pairs (RLHF), which the lab's reward model would only repeat."""
    source = judge_source(spec)
    if source == AGREEMENT:
        return AgreementJudge(loaded, heldout), ""
    if source == LAB_REWARD_MODEL:
        if trains_reward_model:
            return AgreementJudge(loaded, heldout), (
                "the lab's reward model was asked for, but this run's method trains the same reward model on the "
                "same pairs, and a reward model never judges its own run: the agreement judge spoke"
            )
        if not training:
            return AgreementJudge(loaded, heldout), (
                "the lab's reward model was asked for, but the run has no training pairs to train it on: the "
                "agreement judge spoke"
            )
        model = lab_reward_model(loaded, training, seed)
        judge = RewardModelJudge(
            LAB_REWARD_MODEL, LAB_REWARD_MODEL_MEASURES, model, loaded.tokenizer, loaded.is_chat, heldout, contrast
        )
        return judge, ""
    model, tokenizer, chat = load_named_judge(source, loaded.device)
    measures = f"quality as the reward model {source} scores an answer (its own judgement, not this data's)"
    return RewardModelJudge(source, measures, model, tokenizer, chat, heldout), ""


# --------------------------------------------------------------------------- the lab's reward model


def _lab_key(loaded: LoadedModel, pairs: list[PreferencePair], seed: int) -> str:
    return model_key(loaded, "lab-reward-model", seed, [p.to_dict() for p in pairs])


def lab_reward_model(loaded: LoadedModel, pairs: list[PreferencePair], seed: int) -> Any:
    """A reward model trained on ``pairs`` by RewardTrainer (RLHF's first stage at RLHF's defaults), trained once per
    model, pairs and seed and kept on disk; a later call loads it."""
    from transformers import AutoModelForSequenceClassification

    folder = cache_root() / "judges" / _lab_key(loaded, pairs, seed)
    with _lock:
        if not (folder / "config.json").is_file():
            _train_lab_reward_model(loaded, pairs, seed, folder)
    model = AutoModelForSequenceClassification.from_pretrained(str(folder), trust_remote_code=False)
    model.config.pad_token_id = loaded.tokenizer.pad_token_id
    return model.to(loaded.device).eval()


def _train_lab_reward_model(loaded: LoadedModel, pairs: list[PreferencePair], seed: int, folder: Path) -> None:
    from alignlab.registry.methods import METHODS
    from alignlab.registry.settings import TrainingSettings
    from alignlab.training.trainer import build_trainer, plain_model

    settings = TrainingSettings.for_method("rlhf", seed=seed)
    stage = next(s for s in METHODS["rlhf"].stages if s.trains_reward_model)
    with tempfile.TemporaryDirectory(prefix="alignlab-judge-") as scratch:
        trainer = build_trainer(loaded, pairs, settings, scratch, [], stage)
        trainer.train()
        model = plain_model(trainer)
        partial = folder.with_name(f"{folder.name}.{os.getpid()}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        model.save_pretrained(str(partial))
        loaded.tokenizer.save_pretrained(str(partial))  # a whole reward model: a named judge elsewhere too
        shutil.rmtree(folder, ignore_errors=True)
        partial.replace(folder)
    loaded.tokenizer.padding_side = "left"  # the trainer may have changed it; generation needs left


# --------------------------------------------------------------------------- a reward model the user names


def load_named_judge(spec: str, device: Any) -> tuple[Any, Any, bool]:
    """(model, tokenizer, chat) of a reward model named by a Hub id or a local folder, loaded once and kept."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    source = resolve_spec(spec)
    key = f"{source}@{device}"
    with _lock:
        kept = _named.get(key)
        if kept is not None:
            return kept
        try:
            tokenizer = AutoTokenizer.from_pretrained(source)
            model = AutoModelForSequenceClassification.from_pretrained(source, trust_remote_code=False)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(
                f"The judge '{spec}' could not be loaded with its tokenizer: {str(exc).splitlines()[0]}"
            ) from None
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model.config.pad_token_id = tokenizer.pad_token_id
        chat = getattr(tokenizer, "chat_template", None) is not None
        _named.clear()  # one named judge at a time: a reward model is as big as the policy
        _named[key] = (model.to(device).eval(), tokenizer, chat)
        return _named[key]
