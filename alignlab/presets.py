"""Preference pairs and presets: types, validation, import and export.

A *preset* (``presets/<id>.json``) bundles the pairs to train on, held-out pairs never trained on,
and the eval prompts whose outputs are compared before and after. Users can also bring their own
pairs in the formats the field uses; :func:`pairs_from_records` turns each into
:class:`PreferencePair` rows:

- TRL *standard*: ``prompt``/``chosen``/``rejected`` strings;
- TRL *conversational*: lists of ``{"role", "content"}`` messages (UltraFeedback-binarized too);
- TRL *implicit prompt* / Anthropic HH-RLHF: ``chosen``/``rejected`` whole transcripts
  (``\\n\\nHuman: ...\\n\\nAssistant: ...``) sharing every turn but the last reply.

Thumbs-up/down feedback comes in TRL's *unpaired preference* format, ``prompt``/``completion``/``label``
(``label`` a boolean: true for a good answer, false for a bad one), standard or conversational, and
becomes :class:`UnpairedRow` rows. A file may mix both kinds of row: each row is read in its own
format. :class:`TrainingData` is the lab's training set as one object (pairs, thumbs rows, or both):
KTO trains on all of it as thumbs rows, the paired methods on its pairs (see
:meth:`TrainingData.paired_for`).

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

from alignlab.methods import METHODS

PRESETS_DIR = Path(__file__).resolve().parent.parent / "presets"

MAX_TEXT_CHARS = 4000  # per field: longer texts are truncated by the model anyway and slow training
MAX_PAIRS = 1000  # per section: a lab run trains on a handful of steps, not a corpus
MAX_EVAL_PROMPTS = 32
MAX_FILE_BYTES = 20 * 1024 * 1024
HELDOUT_FRACTION = 0.25
HELDOUT_UNAVAILABLE = "Held-out preference accuracy is unavailable: "


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


@dataclass(frozen=True)
class UnpairedRow:
    """One thumbs-up/down judgement: ``completion`` is a good (``label`` True) or bad (False) answer to
    ``prompt``. TRL's unpaired preference format, what KTO trains on."""

    prompt: str
    completion: str
    label: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def thumbs_from_pairs(pairs: Iterable[PreferencePair]) -> list[UnpairedRow]:
    """Each pair as two thumbs rows: its chosen answer up, its rejected answer down."""
    rows = []
    for pair in pairs:
        rows += [UnpairedRow(pair.prompt, pair.chosen, True), UnpairedRow(pair.prompt, pair.rejected, False)]
    return rows


def pairs_from_thumbs(rows: Iterable[UnpairedRow]) -> tuple[list[PreferencePair], list[UnpairedRow]]:
    """Pairs formed from thumbs rows, and the rows no pair could use.

    Where a prompt has both a thumbs-up and a thumbs-down answer, each thumbs-up answer is paired with
    each thumbs-down answer (prompts in order of first appearance). A prompt with answers of one label
    only forms no pair: those rows come back as unused.
    """
    by_prompt: dict[str, tuple[list[UnpairedRow], list[UnpairedRow]]] = {}
    for row in rows:
        up, down = by_prompt.setdefault(row.prompt, ([], []))
        (up if row.label else down).append(row)
    pairs: list[PreferencePair] = []
    unused: list[UnpairedRow] = []
    for prompt, (up, down) in by_prompt.items():
        if up and down:
            pairs += [PreferencePair(prompt, good.completion, bad.completion) for good in up for bad in down]
        else:
            unused += up + down
    return pairs, unused


def thumbs_methods() -> list[str]:
    """The methods that train on thumbs rows (their registry entry's data is ``unpaired``)."""
    return [name for name, m in METHODS.items() if m.data == "unpaired"]


@dataclass
class TrainingData:
    """The lab's training set as one object: preference pairs, thumbs rows, or both.

    A method whose registry entry reads ``unpaired`` data (KTO) trains on :meth:`thumbs`: every pair
    split into its desirable and undesirable answer, plus the thumbs rows. A paired method (DPO, IPO,
    ORPO, SimPO) trains on :meth:`paired_for`: the pairs, plus the pairs that the thumbs rows form
    where a prompt has both a thumbs-up and a thumbs-down answer; with neither, it is refused.
    """

    pairs: list[PreferencePair] = field(default_factory=list)
    unpaired: list[UnpairedRow] = field(default_factory=list)
    """Thumbs rows imported as such (not the ones derived from ``pairs``)."""

    @property
    def empty(self) -> bool:
        return not self.pairs and not self.unpaired

    def thumbs(self) -> list[UnpairedRow]:
        """Every training row as a thumbs row: the pairs' answers (chosen up, rejected down), then the thumbs rows."""
        return thumbs_from_pairs(self.pairs) + list(self.unpaired)

    def formed_pairs(self) -> list[PreferencePair]:
        """The pairs the thumbs rows form (see :func:`pairs_from_thumbs`), less any already among ``pairs``."""
        known = set(self.pairs)
        return [p for p in pairs_from_thumbs(self.unpaired)[0] if p not in known]

    def paired_for(self, method: str) -> list[PreferencePair]:
        """The pairs a paired ``method`` trains on; a clear :class:`DatasetError` when there are none."""
        pairs = list(self.pairs) + self.formed_pairs()
        if len(pairs) > MAX_PAIRS:
            raise DatasetError(
                f"Method {method!r} would train on {len(pairs)} pairs ({len(pairs) - len(self.pairs)} formed from "
                f"thumbs rows, each thumbs-up answer with each thumbs-down answer to its prompt); the lab trains on "
                f"at most {MAX_PAIRS}. Use fewer rows, or {', '.join(thumbs_methods())}, which trains on thumbs rows."
            )
        if pairs:
            return pairs
        if not self.unpaired:
            raise DatasetError("There are no training pairs: add at least one pair before training.")
        thumbs = ", ".join(thumbs_methods()) or "a method for thumbs data"
        raise DatasetError(
            f"Method {method!r} trains on preference pairs, and the {len(self.unpaired)} thumbs rows here form none: "
            f"no prompt has both a thumbs-up and a thumbs-down answer. Use {thumbs}, which trains on thumbs rows."
        )

    def rows_for(self, data: str, method: str) -> list[PreferencePair] | list[UnpairedRow]:
        """The rows a method with registry data format ``data`` (``paired`` or ``unpaired``) trains on."""
        return self.thumbs() if data == "unpaired" else self.paired_for(method)

    def counts(self) -> dict[str, int]:
        """How many pairs, thumbs rows, thumbs up and down (pairs' answers included) and pairs formed."""
        thumbs = self.thumbs()
        up = sum(r.label for r in thumbs)
        return {
            "pairs": len(self.pairs),
            "unpaired": len(self.unpaired),
            "thumbs_up": up,
            "thumbs_down": len(thumbs) - up,
            "formed_pairs": len(self.formed_pairs()),
        }

    def to_dict(self) -> dict[str, Any]:
        return {"pairs": [asdict(p) for p in self.pairs], "unpaired": [r.to_dict() for r in self.unpaired]}

    @classmethod
    def of(cls, data: TrainingData | Iterable[PreferencePair]) -> TrainingData:
        """``data`` itself, or a list of pairs as training data without thumbs rows."""
        return data if isinstance(data, TrainingData) else cls(list(data))


THUMBS: dict[bool, str] = {True: "👍 up", False: "👎 down"}
"""How the thumbs view shows a label (the word too: for screen readers, and where no emoji font is installed)."""
THUMBS_COLUMNS = ["prompt", "answer", "thumbs", "from"]


def thumbs_view(data: TrainingData) -> list[list[str]]:
    """The training data as thumbs rows (``THUMBS_COLUMNS``): each pair's chosen answer 👍 and rejected
    answer 👎, then the thumbs rows, each saying where it comes from (``pair 3``, ``thumbs row 2``)."""
    rows = []
    for i, pair in enumerate(data.pairs, start=1):
        rows.append([pair.prompt, pair.chosen, THUMBS[True], f"pair {i}"])
        rows.append([pair.prompt, pair.rejected, THUMBS[False], f"pair {i}"])
    for i, row in enumerate(data.unpaired, start=1):
        rows.append([row.prompt, row.completion, THUMBS[bool(row.label)], f"thumbs row {i}"])
    return rows


def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def describe_training_data(data: TrainingData) -> str:
    """What each kind of method trains on from ``data``, with the counts, in one or two sentences."""
    c = data.counts()
    parts = []
    if c["pairs"]:
        parts.append(f"{2 * c['pairs']} from {_count(c['pairs'], 'pair')} (chosen up, rejected down)")
    if c["unpaired"]:
        parts.append(f"{c['unpaired']} imported")
    thumbs = ", ".join(METHODS[name].title for name in thumbs_methods())
    paired = ", ".join(m.title for m in METHODS.values() if m.data == "paired")
    text = (
        f"{_count(c['thumbs_up'] + c['thumbs_down'], 'thumbs row')} "
        f"({c['thumbs_up']} {THUMBS[True]}, {c['thumbs_down']} {THUMBS[False]}): "
        f"{' and '.join(parts or ['none'])}; {thumbs} trains on all of them."
    )
    formed = "formed from thumbs rows whose prompt has both a thumbs-up and a thumbs-down answer"
    if not c["pairs"] and not c["formed_pairs"]:
        if not c["unpaired"]:
            return text
        why = "no prompt has both a thumbs-up and a thumbs-down answer"
        return text + f" {paired} cannot train on this data: {why} ({thumbs} can)."
    uses = [_count(c["pairs"], "pair")] if c["pairs"] else []
    if c["formed_pairs"]:
        uses.append(f"{_count(c['formed_pairs'], 'pair')} {formed}")
    return text + f" {paired} train on {' and '.join(uses)}."


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
    unpaired: list[UnpairedRow] = field(default_factory=list)
    """Thumbs rows to train on beside ``pairs`` (TRL's unpaired format; the preset file's optional ``unpaired``)."""

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
            **{section: [asdict(p) for p in getattr(self, section)] for section in PAIR_SECTIONS},
            "unpaired": [r.to_dict() for r in self.unpaired],
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
            unpaired=[UnpairedRow(**r) for r in data.get("unpaired") or []],
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
        problems += _text_problems(pair, ("prompt", "chosen", "rejected"), where)
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


def _text_problems(item: Any, names: tuple[str, ...], where: str) -> list[str]:
    """Each text field of a pair or a thumbs row that is not text, empty or too long, as a sentence."""
    problems = []
    for name in names:
        value = getattr(item, name)
        if not isinstance(value, str):
            problems.append(f"{where}: '{name}' must be text, not {type(value).__name__}.")
        elif not value.strip():
            problems.append(f"{where}: '{name}' is empty.")
        elif len(value) > MAX_TEXT_CHARS:
            problems.append(f"{where}: '{name}' is {len(value)} characters long; the limit is {MAX_TEXT_CHARS}.")
    return problems


def validate_unpaired(rows: list[UnpairedRow], section: str = "thumbs rows") -> list[str]:
    """Every problem in thumbs rows as a sentence naming the row (1-based) and the field."""
    problems: list[str] = []
    if len(rows) > MAX_PAIRS:
        problems.append(f"{section}: {len(rows)} rows is too many; keep at most {MAX_PAIRS}.")
    seen: dict[tuple[str, str], tuple[int, bool]] = {}
    for row_no, row in enumerate(rows, start=1):
        where = f"{section} row {row_no}"
        problems += _text_problems(row, ("prompt", "completion"), where)
        if not isinstance(row.label, bool):
            problems.append(f"{where}: 'label' must be true or false, not {row.label!r}.")
            continue
        key = (str(row.prompt).strip(), str(row.completion).strip())
        if key in seen and all(key):
            earlier, label = seen[key]
            if label == row.label:
                problems.append(f"{where}: duplicate of row {earlier}.")
            else:
                problems.append(f"{where}: the same answer as row {earlier} with the opposite label.")
        seen.setdefault(key, (row_no, row.label))
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


def _require(row: Any, names: tuple[str, ...], where: str) -> None:
    """A row must be an object holding every one of ``names``; otherwise say which are missing."""
    if not isinstance(row, dict):
        raise DatasetError(f"{where}: expected an object with {', '.join(names[:-1])} and {names[-1]}.")
    missing = [k for k in names if k not in row]
    if missing:
        raise DatasetError(f"{where}: missing {', '.join(repr(m) for m in missing)}.")


def _pair_from_mapping(row: Any, where: str) -> PreferencePair:
    _require(row, ("prompt", "chosen", "rejected"), where)
    return PreferencePair(row["prompt"], row["chosen"], row["rejected"])


def _unpaired_from_mapping(row: Any, where: str) -> UnpairedRow:
    _require(row, ("prompt", "completion", "label"), where)
    return UnpairedRow(row["prompt"], row["completion"], _label(row["label"], where))


def preset_from_dict(data: Any, source: str = "preset") -> Preset:
    """A :class:`Preset` from the JSON object of a preset file, validated.

    ``pairs`` may be left out when the file brings thumbs rows (``unpaired``) instead.
    """
    if not isinstance(data, dict):
        raise DatasetError(f"{source}: a preset file holds one JSON object.")
    missing = [k for k in ("eval_prompts", "pairs") if k not in data and not (k == "pairs" and "unpaired" in data)]
    if missing:
        raise DatasetError(f"{source}: missing {', '.join(missing)}.")
    for key in ("eval_prompts", *PAIR_SECTIONS, "unpaired"):
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
        unpaired=[
            _unpaired_from_mapping(r, f"{source}: thumbs rows row {i}")
            for i, r in enumerate(data.get("unpaired") or [], 1)
        ],
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


def _label(value: Any, where: str, text: bool = False) -> bool:
    """A thumbs row's label: a boolean (``text``: also the words true/false, as a CSV cell holds them)."""
    if isinstance(value, bool):
        return value
    if text and isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    shown = f"the text {value!r}" if isinstance(value, str) else repr(value)
    raise DatasetError(f"{where}: 'label' must be true or false (a JSON boolean), found {shown}.")


def unpaired_from_record(record: Any, where: str, text_labels: bool = False) -> UnpairedRow:
    """One record in TRL's unpaired preference format (standard or conversational) -> a thumbs row."""
    if not isinstance(record, dict):
        raise DatasetError(f"{where}: expected an object, found {type(record).__name__}.")
    missing = [k for k in ("prompt", "completion", "label") if k not in record]
    if missing:
        raise DatasetError(
            f"{where}: a thumbs row needs 'prompt', 'completion' and 'label'; missing {', '.join(map(repr, missing))}."
        )
    label = _label(record["label"], where, text_labels)
    prompt, completion = record["prompt"], record["completion"]
    if _is_messages(completion):
        completion = _last_reply(completion, where, "completion")
    elif not isinstance(completion, str):
        raise DatasetError(f"{where}: 'completion' must be text or a list of messages.")
    if _is_messages(prompt):
        prompt = _flatten_history(prompt)
    elif not isinstance(prompt, str):
        raise DatasetError(f"{where}: 'prompt' must be text or a list of messages.")
    return UnpairedRow(prompt, completion, label)


_PAIR_FIELDS = ("chosen", "rejected")
_THUMBS_FIELDS = ("completion", "label")


def row_from_record(record: Any, where: str, text_labels: bool = False) -> PreferencePair | UnpairedRow:
    """One record -> a pair (``chosen``/``rejected``) or a thumbs row (``completion``/``label``)."""
    if isinstance(record, dict):
        paired = any(k in record for k in _PAIR_FIELDS)
        thumbs = any(k in record for k in _THUMBS_FIELDS)
        if paired and thumbs:
            raise DatasetError(
                f"{where}: has both pair fields ('chosen', 'rejected') and thumbs fields ('completion', 'label'); "
                "a row is one or the other."
            )
        if thumbs:
            return unpaired_from_record(record, where, text_labels)
        if not paired:
            raise DatasetError(
                f"{where}: needs 'chosen' and 'rejected' (a pair) or 'completion' and 'label' (a thumbs row); "
                f"found {', '.join(map(repr, record)) or 'no fields'}."
            )
    return pair_from_record(record, where)


def _csv_record(record: dict[str, Any]) -> dict[str, Any]:
    """A CSV row has every column of the file: drop the other kind's empty cells in a mixed file."""
    filled = {k for k, v in record.items() if v not in (None, "")}
    if filled & set(_PAIR_FIELDS) and not filled & set(_THUMBS_FIELDS):
        return {k: v for k, v in record.items() if k not in _THUMBS_FIELDS}
    if filled & set(_THUMBS_FIELDS) and not filled & set(_PAIR_FIELDS):
        return {k: v for k, v in record.items() if k not in _PAIR_FIELDS}
    return record


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
    """Pairs and thumbs rows read from a file, and the rows left out with the reason for each."""

    pairs: list[PreferencePair]
    skipped: list[str]
    unpaired: list[UnpairedRow] = field(default_factory=list)

    @property
    def training_data(self) -> TrainingData:
        return TrainingData(list(self.pairs), list(self.unpaired))

    def summary(self, name: str) -> str:
        if self.unpaired:
            up = sum(r.label for r in self.unpaired)
            thumbs = f"{len(self.unpaired)} thumbs rows ({up} up, {len(self.unpaired) - up} down)"
            text = f"Imported {len(self.pairs)} pairs and {thumbs} from {name}."
        else:
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


def _training_records(data: dict[str, Any]) -> list[Any]:
    """A preset file's training rows (its pairs, then its thumbs rows); any other object is one record."""
    if "pairs" not in data and "unpaired" not in data:
        return [data]
    rows: list[Any] = []
    for key in ("pairs", "unpaired"):
        value = data.get(key) or []
        rows += value if isinstance(value, list) else [value]
    return rows


def import_pairs(path: str | Path) -> ImportResult:
    """Pairs and thumbs rows from a JSON/JSONL/CSV file in any supported format.

    A file may mix pairs and thumbs rows: each row is read in its own format. Real datasets have a
    few broken rows (HH-RLHF has an empty reply): those rows are left out and each is named in
    ``skipped``. A thumbs row that cannot be read (a field missing, a label that is not true/false) is
    an error for the whole file, each such row named: no guess at what a label meant is safe, and
    leaving the row out would train on part of the user's feedback without saying so. A file that is not
    a dataset at all, or has no usable row, is an error.
    """
    path = Path(path)
    is_csv = path.suffix.lower() == ".csv"
    data = _read_records(read_text_file(path), path.name)
    if isinstance(data, dict):
        data = _training_records(data)
    if not isinstance(data, list) or not data:
        raise DatasetError(f"{path.name}: no preference pairs or thumbs rows found.")
    pairs: list[PreferencePair] = []
    unpaired: list[UnpairedRow] = []
    skipped: list[str] = []
    unreadable: list[str] = []  # thumbs rows that cannot be read: an error for the whole file
    seen_pairs: set[PreferencePair] = set()
    seen_thumbs: dict[tuple[str, str], tuple[int, bool]] = {}
    for row, record in enumerate(data, start=1):
        where = f"{path.name} row {row}"
        if is_csv and isinstance(record, dict):
            record = _csv_record(record)
        try:
            item = row_from_record(record, where, text_labels=is_csv)
        except DatasetError as exc:
            thumbs_row = isinstance(record, dict) and any(k in record for k in _THUMBS_FIELDS)
            (unreadable if thumbs_row else skipped).extend(exc.problems)
            continue
        if isinstance(item, UnpairedRow):
            problems = [p.replace("thumbs rows row 1", where) for p in validate_unpaired([item])]
            key = (item.prompt.strip(), item.completion.strip())
            if key in seen_thumbs and not problems:
                earlier, label = seen_thumbs[key]
                same = label == item.label
                problems.append(
                    f"{where}: duplicate of row {earlier}."
                    if same
                    else f"{where}: the same answer as row {earlier} with the opposite label; kept row {earlier}."
                )
            if problems:
                skipped += problems
                continue
            seen_thumbs[key] = (row, item.label)
            unpaired.append(item)
            continue
        problems = [p.replace("pairs row 1", where) for p in validate_pairs([item])]
        if item in seen_pairs:
            problems.append(f"{where}: duplicate of an earlier row.")
        if problems:
            skipped += problems
            continue
        seen_pairs.add(item)
        pairs.append(item)
    if unreadable:
        raise DatasetError(unreadable)
    if not pairs and not unpaired:
        raise DatasetError(skipped or f"{path.name}: no preference pairs or thumbs rows found.")
    for rows, what in ((pairs, "pairs"), (unpaired, "thumbs rows")):
        if len(rows) > MAX_PAIRS:
            raise DatasetError(f"{path.name}: {len(rows)} {what} is too many; keep at most {MAX_PAIRS}.")
    return ImportResult(pairs, skipped, unpaired)


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


def split_thumbs_heldout(
    rows: list[UnpairedRow], seed: int = 0, fraction: float = HELDOUT_FRACTION
) -> tuple[list[UnpairedRow], list[PreferencePair], str]:
    """A seeded split of thumbs rows: (training rows, held-out pairs, what was done, in words).

    The evidence ranks held-out *pairs*, so they are formed from prompts that have both a thumbs-up and
    a thumbs-down answer: ``fraction`` of those prompts (at least one) is held out whole, every answer to
    them left out of training, and paired as :func:`pairs_from_thumbs` pairs them. Where no prompt has
    both labels, nothing is held out and the note says that held-out accuracy is unavailable.
    """
    both = list(dict.fromkeys(p.prompt for p in pairs_from_thumbs(rows)[0]))
    if not both:
        why = "no prompt has both a thumbs-up and a thumbs-down answer, so no held-out pair can be formed."
        return list(rows), [], HELDOUT_UNAVAILABLE + why
    order = list(range(len(both)))
    random.Random(seed).shuffle(order)
    held = {both[i] for i in order[: max(1, round(len(both) * fraction))]}
    train = [r for r in rows if r.prompt not in held]
    if not train:
        why = "the only prompt with both a thumbs-up and a thumbs-down answer holds every row, so it is trained on."
        return list(rows), [], HELDOUT_UNAVAILABLE + why
    heldout = pairs_from_thumbs([r for r in rows if r.prompt in held])[0]
    return (
        train,
        heldout,
        f"{len(heldout)} held-out pairs were formed from the thumbs rows of {len(held)} prompts with both a "
        "thumbs-up and a thumbs-down answer; those rows are not trained on.",
    )


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


def load_dataset_file(path: str | Path, seed: int = 0, n_eval_prompts: int = 6) -> Preset:
    """A preset from a user's file.

    A file in the preset format is used as given. A plain list of pairs and/or thumbs rows (any
    supported format) has a seeded quarter of its pairs held out, or, with fewer than two pairs, held-out
    pairs formed from its thumbs rows (:func:`split_thumbs_heldout`); its eval prompts are drawn from
    the training prompts.
    """
    path = Path(path)
    data = _read_records(read_text_file(path), path.name)
    if isinstance(data, dict) and ("pairs" in data or "unpaired" in data):
        return preset_from_dict(data, source=path.name)
    imported = import_pairs(path)
    notes = [imported.summary(path.name)]
    train, unpaired = imported.pairs, imported.unpaired
    if len(train) >= 2 or not unpaired:
        train, heldout = split_heldout(train, seed=seed)
    else:
        unpaired, heldout, note = split_thumbs_heldout(unpaired, seed=seed)
        notes.append(note)
    prompts = list(dict.fromkeys([p.prompt for p in train] + [r.prompt for r in unpaired]))
    random.Random(seed).shuffle(prompts)
    return Preset(
        id=path.stem,
        title=path.stem,
        description=" ".join(notes),
        eval_prompts=prompts[:n_eval_prompts],
        pairs=train,
        heldout_pairs=heldout,
        unpaired=unpaired,
    )


EXPORT_FORMATS: dict[str, str] = {
    "pairs": "TRL's preference format (prompt, chosen, rejected); thumbs rows follow in TRL's unpaired format",
    "thumbs": "TRL's unpaired preference format (prompt, completion, label): pairs split into thumbs up and down",
}


def export_rows(data: TrainingData | Iterable[PreferencePair], fmt: str = "pairs") -> list[dict[str, Any]]:
    """Training data as JSON rows in an :data:`EXPORT_FORMATS` format.

    ``pairs`` keeps pairs as pairs, and writes thumbs rows after them as thumbs rows (nothing is lost;
    AlignLab reads such a mixed file back, while TRL wants one format per dataset). ``thumbs`` writes every
    row as a thumbs row, what TRL's KTO reads.
    """
    if fmt not in EXPORT_FORMATS:
        raise DatasetError(f"Unknown export format {fmt!r}; choose {' or '.join(EXPORT_FORMATS)}.")
    data = TrainingData.of(data)
    if fmt == "thumbs":
        return [r.to_dict() for r in data.thumbs()]
    return [asdict(p) for p in data.pairs] + [r.to_dict() for r in data.unpaired]


def export_jsonl(data: TrainingData | Iterable[PreferencePair], path: str | Path, fmt: str = "pairs") -> Path:
    """Write training data as JSONL, one JSON object per line (see :func:`export_rows` for ``fmt``)."""
    path = Path(path)
    with path.open("w", encoding="utf-8") as fh:
        for row in export_rows(data, fmt):
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path
