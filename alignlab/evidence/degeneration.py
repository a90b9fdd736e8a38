"""Output-level checks on the answers before and after training: did the model degenerate?

A run can drive its loss down and its rewards apart while its answers fall apart: every prompt
answered with the same sentence (*collapse*), answers that loop (*repetition*), a phrase from the
training answers stamped onto every reply (*template capture*), or broken text (*garbage*). These
figures are read from the generated text, the same way before and after, and from the original model's
surprise at each answer (*garbled*: words that no longer make sense to it), so a reading is a comparison with
the model's own baseline, not with an absolute ideal.

:func:`degeneration_report` gives the report's ``eval.degeneration`` block; the readings and
thresholds that turn it into findings live in :mod:`alignlab.verdict.rules`.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from alignlab.evidence.stats import median

#: Two answers whose word-bigram sets overlap this much (Jaccard) count as the same answer.
NEAR_DUPLICATE = 0.7
#: Word n-gram size for the repetition rate (a loop repeats its phrases word for word).
REPEAT_N = 3
#: A phrase counts as template when it is in at least this share of the answers after training...
TEMPLATE_SHARE = 0.5
#: ...and was in at most this share before.
TEMPLATE_BEFORE_SHARE = 0.25
#: Share of an answer's characters that may be symbols before it reads as garbage.
SYMBOL_SHARE = 0.25
#: An answer surprises the original model by this many nats per token more than its own typical answer (the
#: median of its baseline answers): garbled, each token about 3.5 times less likely to it. On SmolLM2-135M and
#: the calibration family (``docs/calibration.md``), fluent answers a trained policy drifted to sit at most
#: 0.8 nats above the baseline's median; over-trained nonsense ("What can I build a small project at a time and
#: build one thing at a time?", "1. Open send. 2. Send it to friends. 3. Encourage."), 1.3 to 3.5 above.
GARBLED_NATS = 1.25

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_RUN = re.compile(r"(\S)\1{5,}")  # the same non-space character 6+ times in a row


def words(text: str) -> list[str]:
    """Lower-cased words (letters and digits), punctuation dropped."""
    return _WORD.findall(text.lower())


def _ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def similarity(a: str, b: str) -> float:
    """Jaccard overlap of word bigrams (unigrams for very short texts); 1.0 for identical wording."""
    wa, wb = words(a), words(b)
    n = 2 if min(len(wa), len(wb)) >= 2 else 1
    sa, sb = set(_ngrams(wa, n)), set(_ngrams(wb, n))
    if not sa and not sb:
        return 1.0 if a.strip() == b.strip() else 0.0
    return len(sa & sb) / len(sa | sb)


def distinct_answers(texts: list[str], threshold: float = NEAR_DUPLICATE) -> int:
    """How many answers remain when near-duplicates (similarity >= threshold) count once."""
    representatives: list[str] = []
    for text in texts:
        if not any(similarity(text, r) >= threshold for r in representatives):
            representatives.append(text)
    return len(representatives)


def repeated_ngram_rate(text: str, n: int = REPEAT_N) -> float:
    """Share of the word n-grams of ``text`` that repeat an earlier one in the same text (0 = none)."""
    grams = _ngrams(words(text), n)
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def is_garbage(text: str) -> bool:
    """Broken text: replacement characters, long runs of one symbol, or mostly symbols and emoji."""
    stripped = text.strip()
    if not stripped:
        return False
    if "\ufffd" in stripped or _RUN.search(stripped):
        return True
    symbols = sum(
        1 for c in stripped if not (c.isalnum() or c.isspace() or unicodedata.category(c) in ("Po", "Pd", "Ps", "Pe"))
    )
    return symbols / len(stripped) > SYMBOL_SHARE


def is_garbled(text: str, surprise: float | None, typical: float) -> bool:
    """Words that no longer make sense: the original model's surprise at the answer (mean nats per token) is at
    least :data:`GARBLED_NATS` above its surprise at its own typical answer (``typical``). An empty answer has
    no words to garble."""
    if surprise is None or not math.isfinite(surprise) or not math.isfinite(typical) or not words(text):
        return False
    return surprise >= typical + GARBLED_NATS


def _answer_shares(texts: list[str], n: int) -> Counter:
    """For each word n-gram, in how many of ``texts`` it appears (once per text)."""
    counts: Counter = Counter()
    for text in texts:
        counts.update(set(_ngrams(words(text), n)))
    return counts


def new_common_phrases(before: list[str], after: list[str], sizes: tuple[int, ...] = (6, 5, 4, 3)) -> list[str]:
    """Phrases (3-6 words) now in at least half of the answers that were in at most a quarter before.

    Longest first; a phrase inside one already found is not listed again.
    """
    if len(after) < 2:
        return []
    found: list[str] = []
    for n in sizes:
        now, then = _answer_shares(after, n), _answer_shares(before, n)
        for gram, count in sorted(now.items(), key=lambda kv: (-kv[1], kv[0])):
            if count / len(after) < TEMPLATE_SHARE or then.get(gram, 0) / max(1, len(before)) > TEMPLATE_BEFORE_SHARE:
                continue
            phrase = " ".join(gram)
            if not any(phrase in longer for longer in found):
                found.append(phrase)
    return found[:5]


def template_share(after: list[str], phrases: list[str]) -> float:
    """Share of the answers' words that belong to the given phrases (how much of each reply is template)."""
    total = sum(len(words(t)) for t in after)
    if not total or not phrases:
        return 0.0
    covered = 0
    for text in after:
        joined = " ".join(words(text))
        covered += sum(len(p.split()) * joined.count(p) for p in phrases)
    return min(1.0, covered / total)


@dataclass
class Degeneration:
    """The report's ``eval.degeneration`` block (``docs/architecture.md``), plus per-answer detail."""

    distinct_answers_before: int = 0
    distinct_answers_after: int = 0
    repeated_ngram_rate_before: float = 0.0
    repeated_ngram_rate_after: float = 0.0
    mean_words_before: float = 0.0
    mean_words_after: float = 0.0
    new_common_phrases: list[str] = field(default_factory=list)
    answers: int = 0
    template_share: float = 0.0
    looping_answers_before: int = 0
    looping_answers_after: int = 0
    repetitive_answers_before: int = 0
    repetitive_answers_after: int = 0
    garbage_answers_before: int = 0
    garbage_answers_after: int = 0
    repeated_ngram_rates_after: list[float] = field(default_factory=list)
    surprise_before: list[float] = field(default_factory=list)
    """The original model's surprise at each answer before training (mean nats per token; empty: not measured)."""
    surprise_after: list[float] = field(default_factory=list)
    garbled_answers_before: int = 0
    garbled_answers_after: int = 0
    broken_answers_before: int = 0
    """Answers that loop, are garbage or are garbled (each counted once)."""
    broken_answers_after: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Degeneration | None:
        """A report's ``eval.degeneration`` block read back (None where it has none); a missing figure is 0."""
        if not data:
            return None
        names = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})


#: An answer whose repeated n-gram rate is at least this loops. Calibrated on SmolLM2-135M's greedy 64-token
#: answers (``docs/calibration.md``): answers that repeat a phrase while still moving on ("remove the wheel from
#: the wheel cylinder ...") sit below it, every answer a reader would call a loop above it.
LOOPING_RATE = 0.3
#: At or above this (and below :data:`LOOPING_RATE`) an answer is repetitive: said, not a loop.
REPETITIVE_RATE = 0.2


def degeneration_report(
    before: list[str],
    after: list[str],
    surprise_before: list[float] | None = None,
    surprise_after: list[float] | None = None,
) -> Degeneration:
    """Every output-level figure, before and after, on the same prompts.

    ``surprise_before`` / ``surprise_after``: the original model's surprise at each answer
    (:func:`alignlab.evidence.evaluation.answer_surprise`); without them no answer reads as garbled.
    """

    def mean(values: list[float]) -> float:
        return sum(values) / len(values) if values else 0.0

    rates_before = [repeated_ngram_rate(t) for t in before]
    rates_after = [repeated_ngram_rate(t) for t in after]
    phrases = new_common_phrases(before, after)
    surprise_before, surprise_after = list(surprise_before or []), list(surprise_after or [])
    typical = median(surprise_before)

    def broken(texts: list[str], rates: list[float], surprise: list[float]) -> tuple[int, int]:
        """(garbled answers, answers that loop, are garbage or are garbled)."""
        garbled = [is_garbled(t, s, typical) for t, s in zip(texts, surprise)] if surprise else [False] * len(texts)
        flags = [g or r >= LOOPING_RATE or is_garbage(t) for t, r, g in zip(texts, rates, garbled)]
        return sum(garbled), sum(flags)

    garbled_before, broken_before = broken(before, rates_before, surprise_before)
    garbled_after, broken_after = broken(after, rates_after, surprise_after)
    return Degeneration(
        distinct_answers_before=distinct_answers(before),
        distinct_answers_after=distinct_answers(after),
        repeated_ngram_rate_before=round(mean(rates_before), 4),
        repeated_ngram_rate_after=round(mean(rates_after), 4),
        mean_words_before=round(mean([len(words(t)) for t in before]), 2),
        mean_words_after=round(mean([len(words(t)) for t in after]), 2),
        new_common_phrases=phrases,
        answers=len(after),
        template_share=round(template_share(after, phrases), 4),
        looping_answers_before=sum(r >= LOOPING_RATE for r in rates_before),
        looping_answers_after=sum(r >= LOOPING_RATE for r in rates_after),
        repetitive_answers_before=sum(REPETITIVE_RATE <= r < LOOPING_RATE for r in rates_before),
        repetitive_answers_after=sum(REPETITIVE_RATE <= r < LOOPING_RATE for r in rates_after),
        garbage_answers_before=sum(is_garbage(t) for t in before),
        garbage_answers_after=sum(is_garbage(t) for t in after),
        repeated_ngram_rates_after=[round(r, 4) for r in rates_after],
        surprise_before=surprise_before,
        surprise_after=surprise_after,
        garbled_answers_before=garbled_before,
        garbled_answers_after=garbled_after,
        broken_answers_before=broken_before,
        broken_answers_after=broken_after,
    )
