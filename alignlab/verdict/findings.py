"""What a verdict is made of: the facts of a run the rules read, and the findings they write.

:class:`RunFacts` holds a run's log rows and its evidence (:class:`alignlab.evidence.figures.Evidence`, read by
attribute);
it reads the log through the method's registry entry (:mod:`alignlab.registry.methods`), whose common axes (``margin``,
``accuracy``, ``chosen``, ...) name the key each method logs. A :class:`Finding` has a stable *code* (part of the
report contract, listed in the README and ``docs/architecture.md``), a *severity* (failed, warning, info, good) and
a sentence; :class:`Health` is the verdict with its findings.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from alignlab.evidence.degeneration import Degeneration
from alignlab.evidence.figures import CurvePoint, Evidence
from alignlab.evidence.stats import finite
from alignlab.registry.methods import DEFAULT_METHOD, METHODS, RELATIVE_SCORERS, Method

SEVERITY_ORDER = {"failed": 3, "warning": 2, "info": 1, "good": 0}


@dataclass
class Finding:
    """One reading: a stable ``code``, a ``severity`` (failed, warning, info, good) and a sentence."""

    code: str
    severity: str
    text: str


@dataclass
class Health:
    """``verdict`` is 'healthy', 'warning' or 'failed'; each finding carries its code and severity."""

    verdict: str
    details: list[Finding]
    best_step: int | None = None
    remedy: dict[str, Any] | None = None
    """The cure of the most severe finding that has one (:mod:`alignlab.verdict.remedies`), set where the run's settings
    are known; None otherwise."""

    @property
    def findings(self) -> list[str]:
        return [f.text for f in self.details]

    @property
    def codes(self) -> list[str]:
        return list(dict.fromkeys(f.code for f in self.details))

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "findings": self.findings,
            "codes": self.codes,
            "best_step": self.best_step,
            "details": [asdict(f) for f in self.details],
            "remedy": self.remedy,
        }


@dataclass
class RunFacts:
    """Everything the rules read. Only ``log_rows`` and ``beta`` are needed; the rest sharpen the reading."""

    log_rows: list[dict[str, Any]]
    beta: float
    evidence: Evidence | None = None
    """The compared run's evidence; None for the Train tab's reading, made before any is gathered."""
    degeneration: Degeneration | None = None
    heldout_curve: list[CurvePoint] = field(default_factory=list)
    changed: int | None = None
    answers: int | None = None
    method: str = DEFAULT_METHOD
    """The run's method (a key of :data:`alignlab.registry.methods.METHODS`): which keys its log rows carry."""

    @property
    def figures(self) -> Evidence:
        """:attr:`evidence`, or before it is gathered an empty one: every figure missing, every set without pairs."""
        return self.evidence if self.evidence is not None else Evidence()

    @property
    def entry(self) -> Method:
        return METHODS.get(self.method) or METHODS[DEFAULT_METHOD]

    def key(self, axis: str) -> str | None:
        """The log key behind a common axis for this run's method (None: the method does not log it)."""
        return self.entry.key(axis)

    def series(self, axis: str) -> list[float]:
        """The finite values of a common axis over the logged steps (empty when the method does not log it)."""
        key = self.key(axis)
        return series_of(self.log_rows, key) if key is not None else []

    @property
    def relative_scorer(self) -> bool:
        """Whether the held-out margins are relative to the reference (a policy unchanged scores 0)."""
        return (self.figures.scorer or self.entry.scorer) in RELATIVE_SCORERS


def series_of(rows: list[dict[str, Any]], key: str) -> list[float]:
    return [v for v in (finite(r.get(key)) for r in rows) if v is not None]


def tail_mean(values: list[float]) -> float:
    """The mean of the last half of ``values`` (a noisy per-step series, read once it has settled)."""
    tail = values[len(values) // 2 :] or values
    return sum(tail) / len(tail) if tail else float("nan")
