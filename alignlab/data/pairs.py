"""The lab's data: preference pairs, thumbs-up/down rows, and the training set as one object.

A :class:`PreferencePair` says that for a prompt one answer is preferred over another (TRL's preference
format); an :class:`UnpairedRow` says that an answer is good or bad (TRL's unpaired format, what KTO trains
on). :class:`TrainingData` is the lab's training set: pairs, thumbs rows, or both. KTO trains on all of it as
thumbs rows, the paired methods on its pairs and on the pairs its thumbs rows form (see
:meth:`TrainingData.paired_for`). Each type has one ``to_dict``/``from_dict``: the form it crosses a process,
a session, a file or the API in.

Validation lives here too: every problem of a list of pairs or thumbs rows as a sentence that names its row
and field. Presets (:mod:`alignlab.data.presets`) and file formats (:mod:`alignlab.data.importers`) build on this.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from alignlab.registry.methods import METHODS, paired_methods, thumbs_methods

MAX_TEXT_CHARS = 4000  # per field: longer texts are truncated by the model anyway and slow training
MAX_PAIRS = 1000  # per section: a lab run trains on a handful of steps, not a corpus


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

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, row: Any, where: str = "pair") -> PreferencePair:
        """A pair from ``{"prompt", "chosen", "rejected"}``; a :class:`DatasetError` naming ``where`` otherwise."""
        _require(row, ("prompt", "chosen", "rejected"), where)
        return cls(row["prompt"], row["chosen"], row["rejected"])


@dataclass(frozen=True)
class UnpairedRow:
    """One thumbs-up/down judgement: ``completion`` is a good (``label`` True) or bad (False) answer to
    ``prompt``. TRL's unpaired preference format, what KTO trains on."""

    prompt: str
    completion: str
    label: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, row: Any, where: str = "thumbs row", text_labels: bool = False) -> UnpairedRow:
        """A thumbs row from ``{"prompt", "completion", "label"}``; ``text_labels`` also reads the words true and
        false (a CSV cell). A :class:`DatasetError` naming ``where`` otherwise."""
        _require(row, ("prompt", "completion", "label"), where)
        return cls(row["prompt"], row["completion"], read_label(row["label"], where, text_labels))


def _require(row: Any, names: tuple[str, ...], where: str) -> None:
    """A row must be an object holding every one of ``names``; otherwise say which are missing."""
    if not isinstance(row, dict):
        raise DatasetError(f"{where}: expected an object with {', '.join(names[:-1])} and {names[-1]}.")
    missing = [k for k in names if k not in row]
    if missing:
        raise DatasetError(f"{where}: missing {', '.join(repr(m) for m in missing)}.")


def read_label(value: Any, where: str, text: bool = False) -> bool:
    """A thumbs row's label: a boolean (``text``: also the words true/false, as a CSV cell holds them)."""
    if isinstance(value, bool):
        return value
    if text and isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    shown = f"the text {value!r}" if isinstance(value, str) else repr(value)
    raise DatasetError(f"{where}: 'label' must be true or false (a JSON boolean), found {shown}.")


def pairs_to_dicts(pairs: Iterable[PreferencePair]) -> list[dict[str, str]]:
    return [p.to_dict() for p in pairs]


def pairs_from_dicts(rows: Iterable[Any], section: str = "pairs") -> list[PreferencePair]:
    return [PreferencePair.from_dict(row, f"{section} row {i}") for i, row in enumerate(rows, 1)]


def thumbs_to_dicts(rows: Iterable[UnpairedRow]) -> list[dict[str, Any]]:
    return [r.to_dict() for r in rows]


def thumbs_from_dicts(rows: Iterable[Any], section: str = "thumbs rows") -> list[UnpairedRow]:
    return [UnpairedRow.from_dict(row, f"{section} row {i}") for i, row in enumerate(rows, 1)]


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


@dataclass
class TrainingData:
    """The lab's training set as one object: preference pairs, thumbs rows, or both.

    A method whose policy's stage reads thumbs rows (KTO) trains on :meth:`thumbs`: every pair
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
        return {"pairs": pairs_to_dicts(self.pairs), "unpaired": thumbs_to_dicts(self.unpaired)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingData:
        return cls(pairs_from_dicts(data.get("pairs") or []), thumbs_from_dicts(data.get("unpaired") or []))

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
    paired = ", ".join(METHODS[name].title for name in paired_methods())
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
