"""Preference pairs and presets: types, validation, import and export.

A *preset* (``presets/<id>.json``) bundles the pairs to train on, held-out pairs never trained on,
and the eval prompts whose outputs are compared before and after. Users can also bring their own
pairs in the formats the field uses; :func:`pairs_from_records` turns each into
:class:`PreferencePair` rows:

- TRL *standard*: ``prompt``/``chosen``/``rejected`` strings;
- TRL *conversational*: lists of ``{"role", "content"}`` messages (UltraFeedback-binarized too);
- TRL *implicit prompt* / Anthropic HH-RLHF: ``chosen``/``rejected`` whole transcripts
  (``\\n\\nHuman: ...\\n\\nAssistant: ...``) sharing every turn but the last reply.

Earlier turns of a multi-turn conversation are kept, flattened into the prompt as
``User: ...`` / ``Assistant: ...`` lines, so every pair stays one editable row.
"""

from __future__ import annotations

import csv
import io
import json
import random
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PRESETS_DIR = Path(__file__).resolve().parent.parent / "presets"

MAX_TEXT_CHARS = 4000  # per field: longer texts are truncated by the model anyway and slow training
MAX_PAIRS = 1000  # per section: a lab run trains on a handful of steps, not a corpus
MAX_EVAL_PROMPTS = 32
MAX_FILE_BYTES = 20 * 1024 * 1024
HELDOUT_FRACTION = 0.25


class DatasetError(ValueError):
    """A dataset or preset is unusable; ``problems`` lists each issue with where it is."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        shown = self.problems[:10]
        more = len(self.problems) - len(shown)
        super().__init__("\n".join(shown) + (f"\n... and {more} more problems." if more > 0 else ""))


@dataclass(frozen=True)
class PreferencePair:
    """One preference: for ``prompt``, ``chosen`` is preferred over ``rejected``."""

    prompt: str
    chosen: str
    rejected: str


@dataclass
class Preset:
    """A complete lab dataset (see DESIGN.md §6 for the file format)."""

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

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "eval_prompts": list(self.eval_prompts),
            **{section: [asdict(p) for p in getattr(self, section)] for section in PAIR_SECTIONS},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preset:
        """The inverse of :meth:`to_dict` (no validation: see :func:`preset_from_dict` for files)."""
        return cls(
            id=str(data.get("id", "custom")),
            title=str(data.get("title", data.get("id", "custom"))),
            description=str(data.get("description", "")),
            eval_prompts=list(data.get("eval_prompts", [])),
            **{section: [PreferencePair(**p) for p in data.get(section) or []] for section in PAIR_SECTIONS},
        )


#: The pair lists of a preset file, with how problems name them.
PAIR_SECTIONS: dict[str, str] = {
    "pairs": "pairs",
    "heldout_pairs": "held-out pairs",
    "contrast_pairs": "contrast pairs",
    "capability_pairs": "capability pairs",
}


# --------------------------------------------------------------------------- validation


def validate_pairs(pairs: list[PreferencePair], section: str = "pairs") -> list[str]:
    """Every problem in ``pairs`` as a sentence naming the row (1-based) and the field."""
    problems: list[str] = []
    if len(pairs) > MAX_PAIRS:
        problems.append(f"{section}: {len(pairs)} rows is too many; keep at most {MAX_PAIRS}.")
    seen: dict[tuple[str, str, str], int] = {}
    for row, pair in enumerate(pairs, start=1):
        where = f"{section} row {row}"
        for name in ("prompt", "chosen", "rejected"):
            value = getattr(pair, name)
            if not isinstance(value, str):
                problems.append(f"{where}: '{name}' must be text, not {type(value).__name__}.")
            elif not value.strip():
                problems.append(f"{where}: '{name}' is empty.")
            elif len(value) > MAX_TEXT_CHARS:
                problems.append(f"{where}: '{name}' is {len(value)} characters long; the limit is {MAX_TEXT_CHARS}.")
        if (
            isinstance(pair.chosen, str)
            and isinstance(pair.rejected, str)
            and pair.chosen.strip()
            and pair.chosen.strip() == pair.rejected.strip()
        ):
            problems.append(f"{where}: 'chosen' and 'rejected' are identical, so there is nothing to prefer.")
        key = (str(pair.prompt).strip(), str(pair.chosen).strip(), str(pair.rejected).strip())
        if key in seen and all(key):
            problems.append(f"{where}: duplicate of row {seen[key]}.")
        seen.setdefault(key, row)
    return problems


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
    if require_training_pairs and not preset.pairs:
        problems.append("pairs: there are no training pairs; add at least one.")
    for section, label in PAIR_SECTIONS.items():
        problems += validate_pairs(getattr(preset, section), label)
    problems += validate_eval_prompts(preset.eval_prompts)
    trained = {(p.prompt.strip(), p.chosen.strip(), p.rejected.strip()) for p in preset.pairs}
    for section in ("heldout_pairs", "contrast_pairs", "capability_pairs"):
        for row, pair in enumerate(getattr(preset, section), start=1):
            if (pair.prompt.strip(), pair.chosen.strip(), pair.rejected.strip()) in trained:
                problems.append(
                    f"{PAIR_SECTIONS[section]} row {row}: also a training pair, so it cannot measure generalisation."
                )
    return problems


# --------------------------------------------------------------------------- presets on disk


def _pair_from_mapping(row: Any, where: str) -> PreferencePair:
    if not isinstance(row, dict):
        raise DatasetError(f"{where}: expected an object with prompt, chosen and rejected.")
    missing = [k for k in ("prompt", "chosen", "rejected") if k not in row]
    if missing:
        raise DatasetError(f"{where}: missing {', '.join(repr(m) for m in missing)}.")
    return PreferencePair(row["prompt"], row["chosen"], row["rejected"])


def preset_from_dict(data: Any, source: str = "preset") -> Preset:
    """A :class:`Preset` from the JSON object of a preset file, validated."""
    if not isinstance(data, dict):
        raise DatasetError(f"{source}: a preset file holds one JSON object.")
    missing = [k for k in ("eval_prompts", "pairs") if k not in data]
    if missing:
        raise DatasetError(f"{source}: missing {', '.join(missing)}.")
    for key in ("eval_prompts", *PAIR_SECTIONS):
        if key in data and data[key] is not None and not isinstance(data[key], list):
            raise DatasetError(f"{source}: '{key}' must be a list.")
    preset = Preset(
        id=str(data.get("id") or Path(source).stem),
        title=str(data.get("title") or data.get("id") or Path(source).stem),
        description=str(data.get("description", "")),
        eval_prompts=list(data["eval_prompts"]),
        **{
            section: [
                _pair_from_mapping(r, f"{source}: {label} row {i}") for i, r in enumerate(data.get(section) or [], 1)
            ]
            for section, label in PAIR_SECTIONS.items()
        },
    )
    problems = validate_preset(preset)
    if problems:
        raise DatasetError([f"{source}: {p}" for p in problems])
    return preset


#: The built-in capability probe, for datasets that bring none of their own.
GENERAL_CAPABILITY_FILE = PRESETS_DIR / "probes" / "general-capability.json"


def general_capability_pairs() -> list[PreferencePair]:
    """Unrelated facts and arithmetic (a correct and a wrong answer each), for imported datasets."""
    data = json.loads(GENERAL_CAPABILITY_FILE.read_text(encoding="utf-8"))
    return [
        _pair_from_mapping(r, f"{GENERAL_CAPABILITY_FILE.name} row {i}")
        for i, r in enumerate(data["capability_pairs"], 1)
    ]


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
    return preset_from_dict(json.loads(path.read_text(encoding="utf-8")), source=path.name)


def list_presets() -> list[Preset]:
    return [load_preset(i) for i in preset_ids()]


# --------------------------------------------------------------------------- import formats

_TURN_RE = re.compile(r"\n\n(Human|Assistant):[ ]?")


def _parse_transcript(text: str) -> list[dict[str, str]]:
    """``\\n\\nHuman: a\\n\\nAssistant: b`` -> messages. Text before the first marker is ignored."""
    parts = _TURN_RE.split("\n\n" + text.lstrip("\n") if not text.startswith("\n\n") else text)
    messages = []
    for i in range(1, len(parts) - 1, 2):
        role = "user" if parts[i] == "Human" else "assistant"
        messages.append({"role": role, "content": parts[i + 1].strip()})
    return messages


def _flatten_history(messages: list[dict[str, str]]) -> str:
    """Messages before the reply -> one prompt string (a single user turn stays as it is)."""
    if len(messages) == 1 and messages[0].get("role") == "user":
        return str(messages[0].get("content", ""))
    labels = {"user": "User", "assistant": "Assistant", "system": "System"}
    return "\n".join(f"{labels.get(m.get('role'), m.get('role'))}: {m.get('content', '')}" for m in messages)


def _is_messages(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(m, dict) and "content" in m for m in value)


def _last_reply(messages: list[dict[str, str]], where: str, name: str) -> str:
    if not messages or messages[-1].get("role") != "assistant":
        raise DatasetError(f"{where}: '{name}' must end with an assistant message.")
    return str(messages[-1].get("content", ""))


def pair_from_record(record: Any, where: str) -> PreferencePair:
    """One record in any supported format -> a pair (see the module docstring)."""
    if not isinstance(record, dict):
        raise DatasetError(f"{where}: expected an object, found {type(record).__name__}.")
    if "chosen" not in record or "rejected" not in record:
        raise DatasetError(
            f"{where}: needs 'chosen' and 'rejected' (found {', '.join(map(repr, record)) or 'no fields'})."
        )
    prompt, chosen, rejected = record.get("prompt"), record["chosen"], record["rejected"]
    if _is_messages(chosen) and _is_messages(rejected):
        if prompt is None:  # implicit prompt: both conversations share everything but the last reply
            prompt_msgs = chosen[:-1]
        elif _is_messages(prompt):
            prompt_msgs = prompt
        elif isinstance(prompt, str):
            prompt_msgs = [{"role": "user", "content": prompt}]
        else:
            raise DatasetError(f"{where}: 'prompt' must be text or a list of messages.")
        # UltraFeedback-binarized repeats the prompt at the head of chosen/rejected
        chosen_reply = _last_reply(chosen, where, "chosen")
        rejected_reply = _last_reply(rejected, where, "rejected")
        return PreferencePair(_flatten_history(prompt_msgs), chosen_reply, rejected_reply)
    if isinstance(chosen, str) and isinstance(rejected, str):
        if prompt is None:
            if "Human:" in chosen and "Assistant:" in chosen:
                c_msgs, r_msgs = _parse_transcript(chosen), _parse_transcript(rejected)
                if not c_msgs or c_msgs[-1]["role"] != "assistant":
                    raise DatasetError(f"{where}: the 'chosen' transcript does not end with an Assistant turn.")
                if not r_msgs or r_msgs[-1]["role"] != "assistant":
                    raise DatasetError(f"{where}: the 'rejected' transcript does not end with an Assistant turn.")
                return PreferencePair(_flatten_history(c_msgs[:-1]), c_msgs[-1]["content"], r_msgs[-1]["content"])
            raise DatasetError(f"{where}: has no 'prompt' and is not a Human/Assistant transcript.")
        if not isinstance(prompt, str):
            raise DatasetError(f"{where}: 'prompt' must be text when chosen and rejected are text.")
        return PreferencePair(prompt, chosen, rejected)
    raise DatasetError(f"{where}: 'chosen' and 'rejected' must both be text or both be message lists.")


def pairs_from_records(records: Iterable[Any], source: str = "file") -> list[PreferencePair]:
    """Convert every record, collecting all problems (each with its row) before failing."""
    pairs, problems = [], []
    for row, record in enumerate(records, start=1):
        try:
            pairs.append(pair_from_record(record, f"{source} row {row}"))
        except DatasetError as exc:
            problems += exc.problems
        if len(problems) > 50:
            break
    if problems:
        raise DatasetError(problems)
    return pairs


@dataclass
class ImportResult:
    """Pairs read from a file, and the rows left out with the reason for each."""

    pairs: list[PreferencePair]
    skipped: list[str]

    def summary(self, name: str) -> str:
        text = f"Imported {len(self.pairs)} pairs from {name}."
        if self.skipped:
            text += f" Skipped {len(self.skipped)} unusable rows: " + " ".join(self.skipped[:5])
            if len(self.skipped) > 5:
                text += f" ... and {len(self.skipped) - 5} more."
        return text


def _read_records(text: str, name: str) -> Any:
    """Parse JSON, JSONL or CSV text into Python data (a preset dict or a list of records)."""
    suffix = Path(name).suffix.lower()
    if suffix == ".csv":
        try:
            return list(csv.DictReader(io.StringIO(text)))
        except csv.Error as exc:
            raise DatasetError(f"{name}: not valid CSV ({exc}).") from exc
    stripped = text.lstrip()
    if suffix == ".json" or (suffix != ".jsonl" and stripped[:1] in "[{" and not _looks_like_jsonl(stripped)):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{name}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}).") from exc
        return data
    records = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{name}: line {line_no} is not valid JSON ({exc.msg}).") from exc
    return records


def _looks_like_jsonl(text: str) -> bool:
    first = text.split("\n", 1)[0].strip()
    if not first.startswith("{"):
        return False
    try:
        json.loads(first)
    except json.JSONDecodeError:
        return False
    return "\n{" in text.strip()


def read_text_file(path: str | Path) -> str:
    """A dataset file's text, refusing binary and oversized files with a clear message."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"There is no file '{path}'.")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise DatasetError(f"{path.name} is {size / 1e6:.0f} MB; the limit is {MAX_FILE_BYTES / 1e6:.0f} MB.")
    raw = path.read_bytes()
    if b"\x00" in raw[:4096]:
        raise DatasetError(f"{path.name} is a binary file; upload JSON, JSONL or CSV text.")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path.name} is not UTF-8 text (byte {exc.start}); save it as UTF-8.") from exc


def import_pairs(path: str | Path) -> ImportResult:
    """Pairs from a JSON/JSONL/CSV file in any supported format.

    Real datasets have a few broken rows (HH-RLHF has an empty reply): those rows are left out and
    each is named in ``skipped``. A file that is not a dataset at all, or has no usable row, is
    an error.
    """
    path = Path(path)
    data = _read_records(read_text_file(path), path.name)
    if isinstance(data, dict):
        data = data.get("pairs", [data])  # a preset file: take its training pairs
    if not isinstance(data, list) or not data:
        raise DatasetError(f"{path.name}: no preference pairs found.")
    pairs: list[PreferencePair] = []
    skipped: list[str] = []
    seen: set[PreferencePair] = set()
    for row, record in enumerate(data, start=1):
        where = f"{path.name} row {row}"
        try:
            pair = pair_from_record(record, where)
        except DatasetError as exc:
            skipped += exc.problems
            continue
        problems = [p.replace("pairs row 1", where) for p in validate_pairs([pair])]
        if pair in seen:
            problems.append(f"{where}: duplicate of an earlier row.")
        if problems:
            skipped += problems
            continue
        seen.add(pair)
        pairs.append(pair)
    if not pairs:
        raise DatasetError(skipped or f"{path.name}: no preference pairs found.")
    if len(pairs) > MAX_PAIRS:
        raise DatasetError(f"{path.name}: {len(pairs)} pairs is too many; keep at most {MAX_PAIRS}.")
    return ImportResult(pairs, skipped)


def split_heldout(
    pairs: list[PreferencePair], seed: int = 0, fraction: float = HELDOUT_FRACTION
) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """A seeded split: (training pairs, held-out pairs), holding out ``fraction`` (at least one)."""
    if len(pairs) < 2:
        raise DatasetError("At least two pairs are needed to hold one out for evaluation.")
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    n_heldout = max(1, round(len(pairs) * fraction))
    held = sorted(order[:n_heldout])
    train = sorted(order[n_heldout:])
    return [pairs[i] for i in train], [pairs[i] for i in held]


def load_dataset_file(path: str | Path, seed: int = 0, n_eval_prompts: int = 6) -> Preset:
    """A preset from a user's file.

    A file in the preset format is used as given. A plain list of pairs (any supported format)
    has a seeded quarter held out, and its eval prompts drawn from the training pairs' prompts.
    """
    path = Path(path)
    data = _read_records(read_text_file(path), path.name)
    if isinstance(data, dict) and "pairs" in data:
        return preset_from_dict(data, source=path.name)
    imported = import_pairs(path)
    pairs = imported.pairs
    train, heldout = split_heldout(pairs, seed=seed)
    prompts = list(dict.fromkeys(p.prompt for p in train))
    random.Random(seed).shuffle(prompts)
    return Preset(
        id=path.stem,
        title=path.stem,
        description=imported.summary(path.name),
        eval_prompts=prompts[:n_eval_prompts],
        pairs=train,
        heldout_pairs=heldout,
    )


def export_jsonl(pairs: list[PreferencePair], path: str | Path) -> Path:
    """Write pairs in TRL's standard format, one JSON object per line."""
    path = Path(path)
    with path.open("w", encoding="utf-8") as fh:
        for pair in pairs:
            fh.write(json.dumps(asdict(pair), ensure_ascii=False) + "\n")
    return path
