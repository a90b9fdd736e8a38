"""Each figure of a run in plain words: the one place the CLI, the Compare tab and the comparison panel read.

A reading says what a figure means for the run (held-out accuracy "about chance", KL drift "a moderate,
deliberate move"), in the same words the verdict's findings (:mod:`alignlab.rules`) use for the same figure.
:func:`evidence_readings`, :func:`answer_checks` and :func:`health_markdown` turn a report's ``eval`` and
``health`` blocks into the lines a person reads; the CLI wraps them for a terminal, the app shows them as
Markdown. Nothing here imports torch or gradio.
"""

from __future__ import annotations

import math
from typing import Any

from alignlab.degeneration import LOOPING_RATE
from alignlab.methods import SCORERS, Scorer

#: Preference accuracy at or below this is "about chance" (6 held-out pairs: 3 or fewer right).
CHANCE_ACCURACY = 0.6
#: ...and at or above this the preference "generalises".
GENERALISES_ACCURACY = 0.75
HEAVY_KL = 0.5  # nats per token
HEAVY_PPL_RATIO = 1.5
#: Capability accuracy falling by this much (and by at least 2 pairs) is a capability loss.
CAPABILITY_DROP = 0.2


def finite(value: Any) -> float | None:
    """A float that is a real number, or None (missing, NaN, infinite, or not a number at all)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def best_step(curve: list[dict[str, Any]]) -> int | None:
    """The earliest step where held-out (plus contrast, when measured) accuracy peaks, then held-out margin."""
    points = [p for p in curve if finite(p.get("accuracy")) is not None]
    if not points:
        return None

    def score(p: dict[str, Any]) -> tuple[float, float]:
        contrast = finite(p.get("contrast_accuracy"))
        return (round(p["accuracy"] + (contrast or 0.0), 6), finite(p.get("margin")) or 0.0)

    best = max(points, key=lambda p: (score(p)[0],))
    top = score(best)[0]
    return int(min(p["step"] for p in points if score(p)[0] == top))


def accuracy_band(accuracy: float | None) -> str:
    """'chance', 'partial' or 'generalises' for a preference accuracy (None: 'unknown')."""
    if accuracy is None:
        return "unknown"
    if accuracy <= CHANCE_ACCURACY:
        return "chance"
    if accuracy < GENERALISES_ACCURACY:
        return "partial"
    return "generalises"


HELDOUT_WORDS = {
    "chance": "about chance: the preference was not learnt beyond the training pairs",
    "partial": "better than chance, but the preference only partly generalises",
    "generalises": "most pairs it never saw are ranked the right way: the preference generalises",
    "unknown": "no held-out pairs: add some on the Dataset tab to test whether the preference generalises",
}
CONTRAST_WORDS = {
    "chance": "the surface cue of the training answers, not the preference, drives the ranking (a shortcut)",
    "partial": "the preference partly holds when the cue points the other way",
    "generalises": "the preference holds even when the surface cue points the other way",
    "unknown": "no contrast pairs in this dataset, so cue-following cannot be told from the preference",
}


def heldout_reading(accuracy: float | None, margin: float | None, evaluation: dict[str, Any] | None = None) -> str:
    """The held-out figure in words; ``evaluation`` (the report's ``eval``) adds which score ranked the pairs
    when it is not DPO's implicit reward, and the original model's accuracy under it."""
    accuracy, margin = finite(accuracy), finite(margin)
    if accuracy is None:
        return HELDOUT_WORDS["unknown"].capitalize() + "."
    text = (
        f"Held-out preference accuracy {accuracy:.0%} (mean reward margin {margin:+.3f}): "
        f"{HELDOUT_WORDS[accuracy_band(accuracy)]}."
    )
    scorer = (evaluation or {}).get("heldout_scorer")
    if scorer and scorer != Scorer.IMPLICIT_REWARD:
        before = finite((evaluation or {}).get("heldout_reward_accuracy_before"))
        was = f"; the original model ranked {before:.0%} right under it" if before is not None else ""
        text += f" Scored by {SCORERS.get(scorer, scorer)}{was}."
    return text


def contrast_reading(accuracy: float | None) -> str:
    accuracy = finite(accuracy)
    if accuracy is None:
        return "Contrast: " + CONTRAST_WORDS["unknown"] + "."
    return f"Contrast accuracy {accuracy:.0%} (cue on the wrong side): {CONTRAST_WORDS[accuracy_band(accuracy)]}."


def capability_reading(before: float | None, after: float | None, source: str = "preset") -> str:
    before, after = finite(before), finite(after)
    if before is None or after is None:
        return "Capability could not be measured (no capability pairs)."
    origin = " (the built-in general set)" if source == "built-in" else ""
    if after < before - CAPABILITY_DROP + 1e-9:
        words = "knowledge unrelated to the preference got worse: an alignment tax"
    elif after < before:
        words = "a slight dip on unrelated facts"
    else:
        words = "knowledge unrelated to the preference is intact"
    return f"Capability{origin}: correct answer preferred {before:.0%} -> {after:.0%} — {words}."


def kl_reading(kl: float | None) -> str:
    kl = finite(kl)
    if kl is None:
        return "KL drift could not be measured."
    if kl < 0.05:
        words = "the model barely moved from the original"
    elif kl <= HEAVY_KL:
        words = "a moderate, deliberate move away from the original"
    else:
        words = "a large move away from the original: a high alignment tax (raise β or train fewer steps)"
    return f"KL drift {kl:.3f} nats/token — {words}."


def perplexity_reading(before: float | None, after: float | None) -> str:
    before, after = finite(before), finite(after)
    if not before or not after:
        return "Perplexity could not be measured."
    ratio = after / before
    if ratio < 1.1:
        words = "general fluency on unrelated text is intact"
    elif ratio <= HEAVY_PPL_RATIO:
        words = "a small loss of fluency on unrelated text"
    else:
        words = "fluency on unrelated text got much worse: training damaged general ability"
    return f"Perplexity {before:.1f} -> {after:.1f} (x{ratio:.2f}) — {words}."


def curve_reading(curve: list[dict[str, Any]]) -> str:
    """The live held-out curve in one sentence: where it started, peaked and ended."""
    points = [p for p in curve if finite(p.get("accuracy")) is not None]
    if not points:
        return "No held-out curve: the run had no held-out or contrast pairs to score after each step."
    first, last = points[0], points[-1]
    step = best_step(points)
    best = next(p for p in points if p["step"] == step)

    def at(p: dict[str, Any]) -> str:
        contrast = finite(p.get("contrast_accuracy"))
        return f"{p['accuracy']:.0%}" + (f" (contrast {contrast:.0%})" if contrast is not None else "")

    text = f"Held-out accuracy after each step: {at(first)} at step {first['step']}"
    if step not in (first["step"], last["step"]):
        text += f", best {at(best)} at step {step}"
    return text + f", {at(last)} at step {last['step']} (the Train tab's live curve)."


def degeneration_readings(d: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(figure, before, after, reading) rows for the output-level checks."""
    if not d:
        return []
    n = d.get("answers") or 0
    rows = []
    before, after = d["distinct_answers_before"], d["distinct_answers_after"]
    rows.append(
        (
            "distinct answers",
            f"{before} of {n}",
            f"{after} of {n}",
            "collapsed: many prompts get the same answer"
            if after < before and after <= math.ceil(n / 2)
            else (
                "some answers became near-duplicates" if after < before else "every prompt still gets its own answer"
            ),
        )
    )
    rows.append(
        (
            "repeated 3-word phrases (mean)",
            f"{d['repeated_ngram_rate_before']:.0%}",
            f"{d['repeated_ngram_rate_after']:.0%}",
            f"{d['looping_answers_after']} answer(s) loop (>= {LOOPING_RATE:.0%} repeats)"
            if d["looping_answers_after"] > d["looping_answers_before"]
            else "no new loops",
        )
    )
    wb, wa = d["mean_words_before"], d["mean_words_after"]
    change = (wa - wb) / wb if wb else 0.0
    rows.append(
        (
            "mean words per answer",
            f"{wb:.0f}",
            f"{wa:.0f}",
            f"{change:+.0%}" + (" (much shorter)" if change < -0.5 else " (much longer)" if change > 1 else ""),
        )
    )
    phrases = d.get("new_common_phrases") or []
    rows.append(
        (
            "phrases new in most answers",
            "",
            "; ".join(f"“{p}”" for p in phrases) or "none",
            f"template: {d.get('template_share', 0):.0%} of the words" if phrases else "no template capture",
        )
    )
    rows.append(
        (
            "broken or symbol-heavy answers",
            str(d["garbage_answers_before"]),
            str(d["garbage_answers_after"]),
            "new garbage" if d["garbage_answers_after"] > d["garbage_answers_before"] else "none new",
        )
    )
    return rows


# --------------------------------------------------------------------------- a report, read


def evidence_readings(evaluation: dict[str, Any]) -> list[str]:
    """The evidence of a report's ``eval`` block, one sentence per figure (the live curve's when it has one)."""
    lines = [
        heldout_reading(evaluation.get("heldout_reward_accuracy"), evaluation.get("heldout_mean_margin"), evaluation),
        contrast_reading(evaluation.get("contrast_accuracy")),
        capability_reading(
            evaluation.get("capability_accuracy_before"),
            evaluation.get("capability_accuracy_after"),
            evaluation.get("capability_source", "preset"),
        ),
        kl_reading(evaluation.get("kl_to_reference")),
        perplexity_reading(evaluation.get("perplexity_before"), evaluation.get("perplexity_after")),
    ]
    if evaluation.get("heldout_curve"):
        lines.append(curve_reading(evaluation["heldout_curve"]))
    return lines


def answer_checks(evaluation: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """The output-level checks of a report's ``eval`` block: (figure, before, after, reading) rows."""
    return degeneration_readings(evaluation.get("degeneration") or {})


SEVERITY_MARKS = {"failed": "✖", "warning": "⚠", "info": "ℹ", "good": "✔"}
VERDICT_WORDS = {"healthy": "HEALTHY", "warning": "WARNING", "failed": "FAILED"}


def finding_details(health: dict[str, Any]) -> list[dict[str, str]]:
    """A report's ``health`` block as its findings: ``{"code", "severity", "text"}`` each (older reports: text)."""
    return health.get("details") or [{"code": "", "severity": "", "text": t} for t in health.get("findings", [])]


def verdict_word(health: dict[str, Any]) -> str:
    return VERDICT_WORDS.get(health["verdict"], health["verdict"].upper())


def evidence_markdown(evaluation: dict[str, Any]) -> str:
    """The evidence and the output-level checks as Markdown: each figure with what it means."""
    text = "### Evidence\n" + "\n".join(f"- {line}" for line in evidence_readings(evaluation))
    rows = answer_checks(evaluation)
    if rows:
        table = ["| answers | before | after | reading |", "|---|---|---|---|"]
        table += [f"| {name} | {before} | {after} | {reading} |" for name, before, after, reading in rows]
        text += "\n\n### The answers themselves\n" + "\n".join(table)
    return text


def health_markdown(health: dict[str, Any], title: str = "Training health") -> str:
    """The verdict and each finding as Markdown, marked by severity and tagged with its code."""
    lines = "\n".join(
        f"- {SEVERITY_MARKS.get(d['severity'], '')} {d['text']}" + (f" `{d['code']}`" if d.get("code") else "")
        for d in finding_details(health)
    )
    best = health.get("best_step")
    best_line = f"\n\nBest held-out step: **{best}**." if best is not None else ""
    return f"### {title}: {verdict_word(health)}\n{lines}{best_line}"
