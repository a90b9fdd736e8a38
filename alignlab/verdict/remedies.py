"""A remedy a person can apply: the most severe finding that has a cure, as concrete settings and one sentence why.

Each cure is an entry of :data:`CURES`, keyed by a finding's code: a function of the run's settings and evidence
that returns the settings to change (``learning_rate``, ``steps``, ``beta``, ``sft_weight`` ...), or None where
this run's case of the finding has no cure in the settings (the data must change: swapped labels, a cue, too few
pairs). :func:`remedy` walks the findings worst first and names the first cure; the report carries it as
``health.remedy`` (``{"settings": {...}, "changes": {...}, "because": "...", "code": "..."}`` or null), the CLI
applies it with ``lab --remedy-of REPORT.json`` and the Compare tab with *Try the remedy*. ``settings`` are the run's
whole training settings with the cure applied, so that a new run with them is that run changed in what the cure
says; ``changes`` are the settings the cure changed alone, each a parameter of the API's ``/train``. The bench
(``bench/calibration.py``) applies every remedy the calibration family's cases get and records whether the
verdict got better (``docs/calibration.md``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from alignlab.evidence.figures import Evidence
from alignlab.evidence.stats import finite
from alignlab.registry.methods import METHODS
from alignlab.registry.settings import KNOBS, TrainingSettings
from alignlab.verdict.answer_rules import NO_MOVE_KL
from alignlab.verdict.findings import Finding, Health


@dataclass(frozen=True)
class Remedy:
    """Settings to change and why; ``code`` is the finding it cures."""

    settings: dict[str, Any]
    changes: dict[str, Any]
    because: str
    code: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "settings": dict(self.settings),
            "changes": dict(self.changes),
            "because": self.because,
            "code": self.code,
        }


Cure = Callable[[TrainingSettings, Evidence, int | None], tuple[dict[str, Any], str] | None]


def _clamped(name: str, value: float) -> float:
    knob = KNOBS[name]
    value = min(max(value, knob.low), knob.high)
    return int(round(value)) if knob.whole else float(f"{value:.3g}")


def _smaller_step(factor: float, why: str) -> Cure:
    """The learning rate divided by ``factor``, and at most the method's own default where the run's was above it
    (the defaults are the highest rates at which no preset's answers loop, measured by the bench)."""

    def cure(settings: TrainingSettings, evidence: Evidence, best: int | None) -> tuple[dict[str, Any], str]:
        default = float(settings.method_entry.defaults.get("learning_rate", settings.learning_rate))
        rate = _clamped("learning_rate", settings.learning_rate / factor)
        if settings.learning_rate > default and rate > default:
            rate = default
        words = " (the method's own default)" if rate == default else ""
        return (
            {"learning_rate": rate},
            f"{why}: a learning rate of {rate:g}{words} instead of {settings.learning_rate:g}.",
        )

    return cure


def _fewer_steps_or_smaller(why: str) -> Cure:
    """Stop at the held-out curve's best step where it came before the end; else half the learning rate."""

    def cure(settings: TrainingSettings, evidence: Evidence, best: int | None) -> tuple[dict[str, Any], str]:
        steps = settings.steps
        one_stage = len(settings.method_entry.stages) == 1  # a later stage's steps are numbered after the first's
        if one_stage and best is not None and steps is not None and 1 <= best < steps:
            return {"steps": best}, f"{why}: held-out pairs were ranked best at step {best}, so stop there."
        return _smaller_step(2, why)(settings, evidence, best)

    return cure


def _closer_leash(why: str) -> Cure:
    """Twice the β of a method held to its reference through the loss (within its range); else half the learning
    rate. An online method (RLHF's RL stage) samples its own answers and pays β only as a KL penalty on their
    reward, which a short run barely feels: its step size is what moves it, so it gets the smaller step."""

    def cure(settings: TrainingSettings, evidence: Evidence, best: int | None) -> tuple[dict[str, Any], str]:
        entry = settings.method_entry
        low, high = entry.beta_range
        if entry.has_reference and not entry.stage.samples_answers and settings.beta * 2 <= high:
            beta = float(f"{max(low, settings.beta * 2):.3g}")
            return {"beta": beta}, f"{why}: β {beta:g} instead of {settings.beta:g} holds it closer to the original."
        return _smaller_step(2, why)(settings, evidence, best)

    return cure


def _sft_term(settings: TrainingSettings, evidence: Evidence, best: int | None) -> tuple[dict[str, Any], str]:
    entry = METHODS.get(settings.method)
    if entry is not None and entry.loss_variants and settings.sft_weight < 1.0:
        return (
            {"sft_weight": 1.0},
            "The margin grew by pushing the chosen answers down too: an SFT term of weight 1 keeps their likelihood "
            "up while the preference moves.",
        )
    return _smaller_step(2, "The chosen answers were pushed down along with the rejected ones")(
        settings, evidence, best
    )


def _bigger_step(settings: TrainingSettings, evidence: Evidence, best: int | None) -> tuple[dict[str, Any], str]:
    """The method's own learning rate where the run's was below it, else ten times the run's."""
    default = float(settings.method_entry.defaults.get("learning_rate", KNOBS["learning_rate"].low))
    rate = default if settings.learning_rate < default else _clamped("learning_rate", settings.learning_rate * 10)
    return (
        {"learning_rate": rate},
        f"The policy barely moved from the original: a learning rate of {rate:g} instead of "
        f"{settings.learning_rate:g} lets the steps change it.",
    )


def _bigger_step_if_unmoved(
    settings: TrainingSettings, evidence: Evidence, best: int | None
) -> tuple[dict[str, Any], str] | None:
    kl = finite(evidence.drift.kl)
    if kl is not None and kl < NO_MOVE_KL:
        return _bigger_step(settings, evidence, best)
    return None  # moved, but too few held-out pairs to decide: the data needs more pairs, not other settings


#: Each finding code's cure. Codes that name a problem of the data (:data:`DATA_PROBLEMS`) have none: no setting
#: makes contradicting or cue-laden pairs teach a preference.
CURES: dict[str, Cure] = {
    "unstable": _smaller_step(10, "The updates exploded"),
    "collapse": _smaller_step(4, "Too large a step: the answers converged on one"),
    "repetition": _smaller_step(4, "Too large a step: answers began to loop"),
    "garbage": _smaller_step(4, "Too large a step: answers broke into garbage"),
    "garbled": _smaller_step(4, "Too large a step: answers stopped making sense to the original model"),
    "broken": _smaller_step(4, "Too large a step: many answers loop, break or stop making sense"),
    "heavy_drift": _closer_leash("The policy drifted far from the original"),
    "memorised": _fewer_steps_or_smaller("The later steps memorised the training pairs"),
    "capability_loss": _closer_leash("Training cost knowledge it was not about"),
    "loses": _fewer_steps_or_smaller("What the policy writes moved away from the preference"),
    "displacement": _sft_term,
    "no_change": _bigger_step,
    "weak_generalisation": _bigger_step_if_unmoved,
}


#: Findings that say the data cannot teach this preference (labels that contradict each other, a cue in place of
#: the preference, a reward model that learnt nothing or a cue): while one stands, no setting is a remedy.
DATA_PROBLEMS = frozenset(
    {
        "no_signal",
        "no_generalisation",
        "shortcut",
        "cue_only",
        "template",
        "reward_model_chance",
        "reward_model_cue",
    }
)


def remedy(health: Health, settings: TrainingSettings, evidence: Evidence) -> Remedy | None:
    """The cure of the most severe failed or warning finding that has one (findings are listed worst first); none
    while a failed or warning finding is a problem of the data (:data:`DATA_PROBLEMS`): the data must change first."""
    problems = _worst_first(health.details)
    if any(f.code in DATA_PROBLEMS for f in problems):
        return None
    for finding in problems:
        cure = CURES.get(finding.code)
        found = cure(settings, evidence, health.best_step) if cure is not None else None
        if found is not None:
            changed, because = found
            return Remedy({**settings.to_dict(), **changed}, changed, because, finding.code)
    return None


def _worst_first(details: list[Finding]) -> list[Finding]:
    order = {"failed": 0, "warning": 1}
    return sorted((f for f in details if f.severity in order), key=lambda f: order[f.severity])


def remedy_settings(report: dict[str, Any]) -> dict[str, Any]:
    """A report's remedy as training settings (its ``health.remedy.settings``); a clear error where it has none."""
    if not isinstance(report, dict) or not isinstance(report.get("health"), dict):
        raise ValueError("This is not an AlignLab report: it has no 'health' block.")
    found = report["health"].get("remedy")
    if not found:
        verdict = report["health"].get("verdict", "?")
        raise ValueError(
            f"This report ({verdict}) names no remedy: none of its findings has a cure in the settings "
            "(a healthy run, or one whose data must change)."
        )
    if not isinstance(found, dict) or not isinstance(found.get("settings"), dict):
        raise ValueError("The report's health.remedy has no 'settings' object.")
    return dict(found["settings"])
