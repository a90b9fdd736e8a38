"""The verdict: a run's evidence read into findings, each with a stable code, and one verdict.

Every rule of :mod:`alignlab.verdict.rules` is applied to the run's facts; the verdict is the worst severity found:
``failed`` > ``warning`` > ``healthy`` (``info`` and ``good`` findings explain, they never lower a verdict).
The plain-words reading of each figure lives in :mod:`alignlab.verdict.readings`, so the Compare tab, the CLI and the
verdict say the same thing about the same figure.
"""

from __future__ import annotations

from typing import Any

from alignlab.evidence.figures import Evidence, curve_of
from alignlab.registry.methods import DEFAULT_METHOD
from alignlab.registry.settings import TrainingSettings
from alignlab.verdict.findings import SEVERITY_ORDER, Finding, Health, RunFacts
from alignlab.verdict.readings import best_step
from alignlab.verdict.remedies import remedy
from alignlab.verdict.rules import RULES, Rule, rule_trained

VERDICT_OF = {"failed": "failed", "warning": "warning"}


def read_health(facts: RunFacts, rules: list[Rule] | None = None) -> Health:
    """Apply every rule; the verdict is the worst severity, findings listed worst first."""
    if not facts.log_rows:
        return Health("failed", rule_trained(facts))
    found = [f for rule in rules or RULES for f in rule(facts)]
    found.sort(key=lambda f: -SEVERITY_ORDER[f.severity])
    worst = found[0].severity if found else "good"
    verdict = VERDICT_OF.get(worst, "healthy")
    if verdict == "failed":  # true, but no comfort: a falling loss or a learnt margin is not good news here
        found = [Finding(f.code, "info", f.text) if f.severity == "good" else f for f in found]
    if not found:
        found = [Finding("trained", "good", "Training ran without problems.")]
    return Health(verdict, found, best_step(facts.heldout_curve))


def read_training_health(
    log_rows: list[dict[str, Any]], beta: float, heldout_curve: list | None = None, method: str = DEFAULT_METHOD
) -> Health:
    """The Train tab's reading at the end of a run, before any answers are compared; ``heldout_curve`` as the run
    keeps it (plain data)."""
    return read_health(RunFacts(log_rows=log_rows, beta=beta, heldout_curve=curve_of(heldout_curve), method=method))


def read_run(
    evidence: Evidence, log_rows: list[dict[str, Any]], settings: TrainingSettings, changed: int, answers: int
) -> Health:
    """The verdict of a compared run (``changed`` of its ``answers`` eval answers differ), with the remedy of its
    most severe finding (:func:`alignlab.verdict.remedies.remedy`)."""
    facts = RunFacts(
        log_rows=log_rows,
        beta=settings.beta,
        method=settings.method_entry.name,
        evidence=evidence,
        degeneration=evidence.degeneration,
        heldout_curve=list(evidence.curve),
        changed=changed,
        answers=answers,
    )
    health = read_health(facts)
    found = remedy(health, settings, evidence)
    health.remedy = found.to_dict() if found is not None else None
    return health
