"""Dataset files: the formats the field uses, read into the lab's pairs and thumbs rows, and written back.

:func:`import_pairs` reads a JSON, JSONL or CSV file row by row, each row in its own format:

- TRL *standard*: ``prompt``/``chosen``/``rejected`` strings;
- TRL *conversational*: lists of ``{"role", "content"}`` messages (UltraFeedback-binarized too);
- TRL *implicit prompt* / Anthropic HH-RLHF: ``chosen``/``rejected`` whole transcripts
  (``\\n\\nHuman: ...\\n\\nAssistant: ...``) sharing every turn but the last reply;
- TRL *unpaired preference* (thumbs up/down): ``prompt``/``completion``/``label`` (``label`` a boolean),
  standard or conversational.

Earlier turns of a multi-turn conversation are kept, flattened into the prompt as ``User: ...`` /
``Assistant: ...`` lines, so every pair stays one editable row. :func:`load_dataset_file` turns a user's
file into a :class:`~alignlab.data.presets.Preset` (a seeded quarter held out), and :func:`export_jsonl` writes
the training data in TRL's formats.
"""

from __future__ import annotations

import csv
import io
import json
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignlab.data.pairs import (
    MAX_PAIRS,
    DatasetError,
    PreferencePair,
    TrainingData,
    UnpairedRow,
    pairs_from_thumbs,
    read_label,
    validate_pairs,
    validate_unpaired,
)
from alignlab.data.presets import HELDOUT_UNAVAILABLE, Preset, checked_preset

MAX_FILE_BYTES = 20 * 1024 * 1024
HELDOUT_FRACTION = 0.25

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


def unpaired_from_record(record: Any, where: str, text_labels: bool = False) -> UnpairedRow:
    """One record in TRL's unpaired preference format (standard or conversational) -> a thumbs row."""
    if not isinstance(record, dict):
        raise DatasetError(f"{where}: expected an object, found {type(record).__name__}.")
    missing = [k for k in ("prompt", "completion", "label") if k not in record]
    if missing:
        raise DatasetError(
            f"{where}: a thumbs row needs 'prompt', 'completion' and 'label'; missing {', '.join(map(repr, missing))}."
        )
    label = read_label(record["label"], where, text_labels)
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
            problems, kept = _thumbs_row_problems(item, row, where, seen_thumbs), unpaired
        else:
            problems, kept = _pair_problems(item, where, seen_pairs), pairs
        if problems:
            skipped += problems
        else:
            kept.append(item)
    _check_kept(path.name, pairs, unpaired, skipped, unreadable)
    return ImportResult(pairs, skipped, unpaired)


def _thumbs_row_problems(
    item: UnpairedRow, row: int, where: str, seen: dict[tuple[str, str], tuple[int, bool]]
) -> list[str]:
    """Why a thumbs row is left out (a field empty, too long or not text, a duplicate, the same answer with the
    opposite label); a row kept is added to ``seen`` (its prompt and answer -> its row and label)."""
    problems = [p.replace("thumbs rows row 1", where) for p in validate_unpaired([item])]
    key = (item.prompt.strip(), item.completion.strip())
    if key in seen and not problems:
        earlier, label = seen[key]
        same = label == item.label
        problems.append(
            f"{where}: duplicate of row {earlier}."
            if same
            else f"{where}: the same answer as row {earlier} with the opposite label; kept row {earlier}."
        )
    if not problems:
        seen[key] = (row, item.label)
    return problems


def _pair_problems(item: PreferencePair, where: str, seen: set[PreferencePair]) -> list[str]:
    """Why a pair is left out (a field empty, too long or not text, identical answers, a duplicate); a pair kept
    is added to ``seen``."""
    problems = [p.replace("pairs row 1", where) for p in validate_pairs([item])]
    if item in seen:
        problems.append(f"{where}: duplicate of an earlier row.")
    if not problems:
        seen.add(item)
    return problems


def _check_kept(
    name: str, pairs: list[PreferencePair], unpaired: list[UnpairedRow], skipped: list[str], unreadable: list[str]
) -> None:
    """A file is an error when a thumbs row could not be read, when no row is usable, or when it holds too many."""
    if unreadable:
        raise DatasetError(unreadable)
    if not pairs and not unpaired:
        raise DatasetError(skipped or f"{name}: no preference pairs or thumbs rows found.")
    for rows, what in ((pairs, "pairs"), (unpaired, "thumbs rows")):
        if len(rows) > MAX_PAIRS:
            raise DatasetError(f"{name}: {len(rows)} {what} is too many; keep at most {MAX_PAIRS}.")


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
        return checked_preset(data, source=path.name)
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
    return [p.to_dict() for p in data.pairs] + [r.to_dict() for r in data.unpaired]


def export_jsonl(data: TrainingData | Iterable[PreferencePair], path: str | Path, fmt: str = "pairs") -> Path:
    """Write training data as JSONL, one JSON object per line (see :func:`export_rows` for ``fmt``)."""
    path = Path(path)
    with path.open("w", encoding="utf-8") as fh:
        for row in export_rows(data, fmt):
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path
