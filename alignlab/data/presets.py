"""Presets: complete lab datasets (``presets/<id>.json``), their validation and their probe sets.

A :class:`Preset` bundles the pairs to train on (and thumbs rows), held-out pairs never trained on, the eval
prompts whose answers are compared before and after, and the probe sets the evidence reads: contrast pairs
(the training answers' surface cue on the worse answer) and capability pairs (unrelated questions with a
right and a wrong answer). The file format is in ``docs/architecture.md``; a user's own files in other
formats are read by :mod:`alignlab.data.importers`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignlab.data.pairs import (
    MAX_TEXT_CHARS,
    DatasetError,
    PreferencePair,
    TrainingData,
    UnpairedRow,
    pairs_from_dicts,
    pairs_from_thumbs,
    pairs_to_dicts,
    thumbs_from_dicts,
    thumbs_to_dicts,
    validate_pairs,
    validate_unpaired,
)
from alignlab.data.question_set import CheckedQuestion, questions_from_dicts

PRESETS_DIR = Path(__file__).resolve().parents[2] / "presets"
MAX_EVAL_PROMPTS = 32
HELDOUT_UNAVAILABLE = "Held-out preference accuracy is unavailable: "

#: The pair lists of a preset file, with how problems name them.
PAIR_SECTIONS: dict[str, str] = {
    "pairs": "pairs",
    "heldout_pairs": "held-out pairs",
    "contrast_pairs": "contrast pairs",
    "capability_pairs": "capability pairs",
}


@dataclass
class Preset:
    """A complete lab dataset, as a preset file holds it."""

    id: str
    title: str
    description: str
    eval_prompts: list[str]
    pairs: list[PreferencePair]
    heldout_pairs: list[PreferencePair] = field(default_factory=list)
    contrast_pairs: list[PreferencePair] = field(default_factory=list)
    """Held-out pairs that put the training answers' surface cue (a greeting, a sign-off, a length)
    on the *rejected* side, attached to an answer that is worse on what the preference is really
    about: a model that learnt only the cue ranks them wrong."""
    capability_pairs: list[PreferencePair] = field(default_factory=list)
    """Questions unrelated to the preference, each with a correct and a wrong answer of the same
    style and length: the policy's own preference for the correct one, before and after training,
    measures the alignment tax on knowledge."""
    unpaired: list[UnpairedRow] = field(default_factory=list)
    """Thumbs rows to train on beside ``pairs`` (TRL's unpaired format; the preset file's optional ``unpaired``)."""
    checked_questions: list[CheckedQuestion] = field(default_factory=list)
    """Short questions with answers checked by matching, asked besides the built-in set
    (:mod:`alignlab.evidence.questions`;
    the preset file's optional ``checked_questions``)."""

    @property
    def training_data(self) -> TrainingData:
        """What a run trains on: the pairs and the thumbs rows, as one object."""
        return TrainingData(list(self.pairs), list(self.unpaired))

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "eval_prompts": list(self.eval_prompts),
            **{section: pairs_to_dicts(getattr(self, section)) for section in PAIR_SECTIONS},
            "unpaired": thumbs_to_dicts(self.unpaired),
            **({"checked_questions": [q.to_dict() for q in self.checked_questions]} if self.checked_questions else {}),
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = "preset") -> Preset:
        """A preset from the JSON object of a preset file (or :meth:`to_dict`), each row's shape checked; its
        content is checked by :func:`checked_preset`. ``pairs`` may be left out when the file brings thumbs rows
        (``unpaired``) instead."""
        if not isinstance(data, dict):
            raise DatasetError(f"{source}: a preset file holds one JSON object.")
        missing = [k for k in ("eval_prompts", "pairs") if k not in data and not (k == "pairs" and "unpaired" in data)]
        if missing:
            raise DatasetError(f"{source}: missing {', '.join(missing)}.")
        for key in ("eval_prompts", *PAIR_SECTIONS, "unpaired"):
            if key in data and data[key] is not None and not isinstance(data[key], list):
                raise DatasetError(f"{source}: '{key}' must be a list.")
        return cls(
            id=str(data.get("id") or Path(source).stem),
            title=str(data.get("title") or data.get("id") or Path(source).stem),
            description=str(data.get("description", "")),
            eval_prompts=list(data["eval_prompts"]),
            **{
                section: pairs_from_dicts(data.get(section) or [], f"{source}: {label}")
                for section, label in PAIR_SECTIONS.items()
            },
            unpaired=thumbs_from_dicts(data.get("unpaired") or [], f"{source}: thumbs rows"),
            checked_questions=questions_from_dicts(data.get("checked_questions") or [], f"{source}: checked_questions"),
        )


# --------------------------------------------------------------------------- validation


def validate_eval_prompts(prompts: list[str]) -> list[str]:
    problems = []
    if len(prompts) > MAX_EVAL_PROMPTS:
        problems.append(f"eval prompts: {len(prompts)} is too many; keep at most {MAX_EVAL_PROMPTS}.")
    for row, prompt in enumerate(prompts, start=1):
        if not isinstance(prompt, str) or not prompt.strip():
            problems.append(f"eval prompt {row}: it is empty.")
        elif len(prompt) > MAX_TEXT_CHARS:
            problems.append(f"eval prompt {row}: {len(prompt)} characters; the limit is {MAX_TEXT_CHARS}.")
    return problems


def validate_preset(preset: Preset, require_training_pairs: bool = True) -> list[str]:
    """All problems of a preset: its pairs, held-out pairs, eval prompts, and overlap between them."""
    problems = []
    if require_training_pairs and not preset.pairs and not preset.unpaired:
        problems.append("pairs: there are no training pairs (or thumbs rows); add at least one.")
    for section, label in PAIR_SECTIONS.items():
        problems += validate_pairs(getattr(preset, section), label)
    problems += validate_unpaired(preset.unpaired)
    problems += validate_eval_prompts(preset.eval_prompts)
    trained = {(p.prompt.strip(), p.chosen.strip(), p.rejected.strip()) for p in preset.pairs}
    answered = {(r.prompt.strip(), r.completion.strip()) for r in preset.unpaired if isinstance(r.completion, str)}
    for section in ("heldout_pairs", "contrast_pairs", "capability_pairs"):
        for row, pair in enumerate(getattr(preset, section), start=1):
            if (pair.prompt.strip(), pair.chosen.strip(), pair.rejected.strip()) in trained:
                problems.append(
                    f"{PAIR_SECTIONS[section]} row {row}: also a training pair, so it cannot measure generalisation."
                )
            elif {(pair.prompt.strip(), pair.chosen.strip()), (pair.prompt.strip(), pair.rejected.strip())} & answered:
                problems.append(
                    f"{PAIR_SECTIONS[section]} row {row}: its answers are also training thumbs rows, so it cannot "
                    "measure generalisation."
                )
    return problems


# --------------------------------------------------------------------------- presets on disk


def checked_preset(data: Any, source: str = "preset") -> Preset:
    """A :class:`Preset` from the JSON object of a preset file, its shape and content checked: every problem
    named with its section and row."""
    preset = Preset.from_dict(data, source)
    problems = validate_preset(preset)
    if problems:
        raise DatasetError([f"{source}: {p}" for p in problems])
    return preset


#: The built-in capability probe, for datasets that bring none of their own.
GENERAL_CAPABILITY_FILE = PRESETS_DIR / "probes" / "general-capability.json"


def general_capability_pairs() -> list[PreferencePair]:
    """Unrelated facts and arithmetic (a correct and a wrong answer each), for imported datasets."""
    data = json.loads(GENERAL_CAPABILITY_FILE.read_text(encoding="utf-8"))
    return pairs_from_dicts(data["capability_pairs"], GENERAL_CAPABILITY_FILE.name)


def capability_probe(preset: Preset) -> tuple[list[PreferencePair], str]:
    """The capability pairs to score for ``preset`` and where they come from ('preset' or 'built-in')."""
    if preset.capability_pairs:
        return preset.capability_pairs, "preset"
    return general_capability_pairs(), "built-in"


def preset_ids() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.json"))


def load_preset(preset_id: str) -> Preset:
    """Load ``presets/<preset_id>.json``; an unknown id names the ones that exist."""
    path = PRESETS_DIR / f"{preset_id}.json"
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", preset_id or "") or not path.is_file():
        raise DatasetError(f"Unknown preset '{preset_id}'. Available: {', '.join(preset_ids())}.")
    return checked_preset(json.loads(path.read_text(encoding="utf-8")), source=path.name)


def list_presets() -> list[Preset]:
    return [load_preset(i) for i in preset_ids()]


def heldout_unavailable(preset: Preset) -> str | None:
    """Why held-out preference accuracy cannot be measured for ``preset``, or None when it can.

    The evidence ranks held-out *pairs*; the report gives null for the accuracy, and this as the reason.
    """
    if preset.heldout_pairs:
        return None
    if preset.unpaired and not pairs_from_thumbs(preset.unpaired)[0]:
        return HELDOUT_UNAVAILABLE + (
            "there are no held-out pairs, and no prompt of the thumbs rows has both a thumbs-up and a thumbs-down "
            "answer to form one from."
        )
    return HELDOUT_UNAVAILABLE + "there are no held-out pairs."
