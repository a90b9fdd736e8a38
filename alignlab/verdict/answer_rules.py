"""The verdict's rules on what the policy now writes and what it cost: behaviour change, drift from the original
model, collapse, loops, stamped-on templates and broken text.

Each is a rule of :mod:`alignlab.verdict.rules` (listed in its :data:`~alignlab.verdict.rules.RULES`), read from the
run's evidence
(its drift) and its answers' checks (:class:`alignlab.evidence.degeneration.Degeneration`). A finding's severity rises
with how far past its line the figure is: KL or the perplexity ratio at :data:`SEVERE_FACTOR` times its line, or
half the answers or more looping, garbled or collapsed, is a failure.
"""

from __future__ import annotations

import math

from alignlab.evidence.degeneration import GARBLED_NATS, LOOPING_RATE, REPETITIVE_RATE
from alignlab.evidence.stats import finite, median
from alignlab.verdict.findings import Finding, RunFacts
from alignlab.verdict.readings import HEAVY_KL, HEAVY_PPL_RATIO, SEVERE_FACTOR

#: A policy closer than this (nats per token) to the reference has not moved.
NO_MOVE_KL = 0.002
#: Template phrases making up more than this share of the answers' words is template capture.
TEMPLATE_WORDS = 0.4


def rule_change(facts: RunFacts) -> list[Finding]:
    if facts.changed is None:
        return []
    if facts.changed == 0:
        return [
            Finding(
                "no_change",
                "warning",
                "No behaviour change: every eval prompt gives the same answer as before training.",
            )
        ]
    kl = finite(facts.figures.drift.kl)
    if kl is not None and kl < NO_MOVE_KL:
        return [
            Finding(
                "no_change",
                "warning",
                f"No real change: the policy is only {kl:.4f} nats/token from the original (below {NO_MOVE_KL}); the "
                f"{facts.changed} answer(s) that differ are near-ties that rounding tipped, not a learnt shift. Raise "
                "the learning rate or train more steps.",
            )
        ]
    of = f" of {facts.answers}" if facts.answers else ""
    return [Finding("behaviour_changed", "good", f"Behaviour changed on {facts.changed}{of} eval prompt(s).")]


def rule_drift(facts: RunFacts) -> list[Finding]:
    """KL from the reference and the perplexity ratio on neutral text: a warning past their lines, a failure at
    :data:`SEVERE_FACTOR` times the line or more."""
    out = []
    drift = facts.figures.drift
    kl = finite(drift.kl)
    if kl is not None and kl > HEAVY_KL:
        if kl >= SEVERE_FACTOR * HEAVY_KL:
            out.append(
                Finding(
                    "heavy_drift",
                    "failed",
                    f"Severe drift: {kl:.2f} nats/token of KL from the reference, {kl / HEAVY_KL:.1f} times the "
                    f"{HEAVY_KL} line; the model no longer writes like itself. Lower the learning rate, raise β or "
                    "train fewer steps.",
                )
            )
        else:
            out.append(
                Finding(
                    "heavy_drift",
                    "warning",
                    f"Heavy drift: {kl:.2f} nats/token of KL from the reference (above {HEAVY_KL}); raise β or train "
                    "fewer steps to pay less alignment tax.",
                )
            )
    before, after = finite(drift.perplexity_before), finite(drift.perplexity_after)
    if before and after and after / before > HEAVY_PPL_RATIO:
        ratio = after / before
        severe = ratio >= SEVERE_FACTOR * HEAVY_PPL_RATIO
        out.append(
            Finding(
                "heavy_drift",
                "failed" if severe else "warning",
                f"{'Severe' if severe else 'Heavy'} drift: perplexity on neutral text rose from {before:.1f} to "
                f"{after:.1f} (x{ratio:.2f}"
                + (f", {ratio / HEAVY_PPL_RATIO:.1f} times the x{HEAVY_PPL_RATIO} line" if severe else "")
                + "); the run hurt general language ability.",
            )
        )
    return out


def _half_or_more(count: int, n: int) -> bool:
    return n > 0 and count >= n / 2


def rule_collapse(facts: RunFacts) -> list[Finding]:
    d = facts.degeneration
    if d is None or not d.answers:
        return []
    n, before, after = d.answers, d.distinct_answers_before, d.distinct_answers_after
    if after < before and after <= math.ceil(n / 2):
        return [
            Finding(
                "collapse",
                "failed",
                f"Collapse: the {n} eval prompts now get only {after} distinct answer(s) (before: {before}); the model "
                "answers everything the same way, whatever is asked. The loss and rewards can look perfect while this "
                "happens: lower the learning rate or train fewer steps.",
            )
        ]
    if after < before:
        return [
            Finding(
                "collapse",
                "warning",
                f"Answers converging: {n - after} answer(s) became near-duplicates of others ({before} -> {after} "
                "distinct).",
            )
        ]
    return []


def rule_repetition(facts: RunFacts) -> list[Finding]:
    d = facts.degeneration
    if d is None or not d.answers:
        return []
    n, before, after = d.answers, d.looping_answers_before, d.looping_answers_after
    if after <= before:
        more = d.repetitive_answers_after - d.repetitive_answers_before
        if more > 0:
            return [
                Finding(
                    "repetitive",
                    "info",
                    f"Repetitive phrasing: {more} more answer(s) repeat a phrase ({REPETITIVE_RATE:.0%}-"
                    f"{LOOPING_RATE:.0%} of their 3-word phrases) but still move on; not a loop. Worth a look in the "
                    "table below.",
                )
            ]
        return []
    severity = "failed" if _half_or_more(after, n) else "warning"
    return [
        Finding(
            "repetition",
            severity,
            f"Repetition: {after} of {n} answers now loop (at least {LOOPING_RATE:.0%} of their 3-word phrases repeat; "
            f"before: {before}); mean repeated-phrase rate {d.repeated_ngram_rate_before:.0%} -> "
            f"{d.repeated_ngram_rate_after:.0%}.",
        )
    ]


def rule_template(facts: RunFacts) -> list[Finding]:
    d = facts.degeneration
    phrases = (d.new_common_phrases if d is not None else None) or []
    if not phrases:
        return []
    share = d.template_share
    quoted = ", ".join(f"“{p}”" for p in phrases[:3])
    if share > TEMPLATE_WORDS:
        return [
            Finding(
                "template",
                "warning",
                f"Template capture: {quoted} now fill {share:.0%} of the answers' words; the replies are mostly a "
                "stamped-on phrase from the training answers.",
            )
        ]
    return [
        Finding(
            "template",
            "info",
            f"New common phrasing: {quoted} now appear(s) in most answers ({share:.0%} of their words); expected "
            "when the training answers share a phrase, a problem only if it crowds out the content.",
        )
    ]


def rule_garbage(facts: RunFacts) -> list[Finding]:
    """Broken text: symbol runs and invalid characters (*garbage*), or words that no longer make sense to the
    original model (*garbled*, :func:`alignlab.evidence.degeneration.is_garbled`). Half the answers or more: failed."""
    d = facts.degeneration
    if d is None or not d.answers:
        return []
    n, out = d.answers, []
    before, after = d.garbage_answers_before, d.garbage_answers_after
    if after > before:
        out.append(
            Finding(
                "garbage",
                "failed" if _half_or_more(after, n) else "warning",
                f"Garbage: {after} of {n} answers are broken text (symbol runs, emoji or invalid characters; before: "
                f"{before}).",
            )
        )
    before, after = d.garbled_answers_before, d.garbled_answers_after
    if after > before:
        typical = median(d.surprise_before or [])
        out.append(
            Finding(
                "garbled",
                "failed" if _half_or_more(after, n) else "warning",
                f"Garbled: {after} of {n} answers no longer make sense to the original model (before: {before}); it "
                f"is surprised by them {GARBLED_NATS:g} nats per token or more beyond its own typical answer "
                f"({typical:.2f}). The words are there, the meaning is not: lower the learning rate or train fewer "
                "steps.",
            )
        )
    return out


def rule_broken(facts: RunFacts) -> list[Finding]:
    """Half the answers or more loop, are garbage or are garbled, counted together: failed, where no one kind
    alone already made it a failure."""
    d = facts.degeneration
    if d is None or not d.answers:
        return []
    n = d.answers
    before, after = d.broken_answers_before, d.broken_answers_after
    alone = max(d.looping_answers_after, d.garbage_answers_after, d.garbled_answers_after)
    if after <= before or not _half_or_more(after, n) or _half_or_more(alone, n):
        return []
    return [
        Finding(
            "broken",
            "failed",
            f"Broken answers: {after} of {n} answers loop, are broken text or no longer make sense (before: "
            f"{before}); together, half the answers or more. Lower the learning rate or train fewer steps.",
        )
    ]
