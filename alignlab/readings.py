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
from alignlab.stats import ALPHA, Proportion, interval_text, median, percent_range

#: Preference accuracy at or below this is "about chance" whatever the count: a reading of harm or of no
#: learning (no generalisation, a shortcut) fires on the point estimate, so that a test never hides it.
CHANCE_ACCURACY = 0.6
#: Held-out accuracy at or below this is backwards: the pairs are ranked the wrong way round.
BACKWARDS_ACCURACY = 0.25
HEAVY_KL = 0.5  # nats per token
HEAVY_PPL_RATIO = 1.5
#: A figure this many times past its line (KL, the perplexity ratio) is a failure, not a warning.
SEVERE_FACTOR = 2.0
#: Capability accuracy falling by this much (and by at least 2 pairs) is a capability loss.
CAPABILITY_DROP = 0.2
#: Checked answers (:mod:`alignlab.questions`) lost: this many right answers turned wrong, and the share answered
#: right down by this much (three of the twenty built-in questions), read on the point estimate. A small model holds
#: some answers by a thin margin, and the smallest move that changes anything flips them: IPO at its defaults on
#: seed-lab (KL 0.004 nats/token) turns "Mars" into "Kepler-62f" and Spain's language into Spanish-like words, as
#: every method at its defaults there turns two. A loss is more than that.
CHECKED_LOST = 3
CHECKED_DROP = 0.15


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


#: Wins that go with answers this much longer (or shorter) than the original's, on average, are named.
LENGTH_SHIFT = 0.25

#: The report's ``eval`` keys of each ranked set: (accuracy, count, margins that count it in older reports).
RANKED_SETS: dict[str, tuple[str, str, str]] = {
    "heldout": ("heldout_reward_accuracy", "heldout_count", "heldout_margins"),
    "contrast": ("contrast_accuracy", "contrast_count", "contrast_margins"),
    "capability_before": ("capability_accuracy_before", "capability_count", "capability_pairs"),
    "capability_after": ("capability_accuracy_after", "capability_count", "capability_pairs"),
    "checked_before": ("checked_capability_before", "checked_capability_count", "checked_capability_count"),
    "checked_after": ("checked_capability_after", "checked_capability_count", "checked_capability_count"),
}


def ranked(evaluation: dict[str, Any], name: str) -> Proportion | None:
    """A set of :data:`RANKED_SETS` as ``k`` of ``n`` ranked right, from a report's ``eval`` block (None: no pairs)."""
    accuracy_key, count_key, fallback = RANKED_SETS[name]
    count = evaluation.get(count_key)
    if count is None:
        older = evaluation.get(fallback)
        count = len(older) if isinstance(older, list) else older
    return Proportion.of(evaluation.get(accuracy_key), count)


def accuracy_band(ranking: Proportion | None) -> str:
    """'chance' (at or below :data:`CHANCE_ACCURACY`), 'beats_chance' (a one-sided exact test at
    :data:`alignlab.stats.ALPHA`), 'undecided' (better than even, too few pairs to tell), or 'unknown'."""
    if ranking is None:
        return "unknown"
    if ranking.value <= CHANCE_ACCURACY:
        return "chance"
    return "beats_chance" if ranking.beats_chance else "undecided"


HELDOUT_WORDS = {
    "chance": "about chance: the preference was not learnt beyond the training pairs",
    "undecided": "more right than wrong, but not yet more than a coin would give",
    "beats_chance": "more pairs it never saw are ranked right than a coin would: the preference generalises",
    "unknown": "no held-out pairs: add some on the Dataset tab to test whether the preference generalises",
}
CONTRAST_WORDS = {
    "chance": "the surface cue of the training answers, not the preference, drives the ranking (a shortcut)",
    "undecided": "the preference may hold when the cue points the other way, but not yet more than a coin would give",
    "beats_chance": "the preference holds even when the surface cue points the other way",
    "unknown": "no contrast pairs in this dataset, so cue-following cannot be told from the preference",
}


def margin_text(margin: Any, interval: Any) -> str:
    """'mean margin +0.123 (95%: +0.051 to +0.195)', the interval left out when there is none."""
    value = finite(margin)
    if value is None:
        return "mean margin —"
    span = interval_text(interval)
    return f"mean margin {value:+.3f}" + (f" (95%: {span})" if span else "")


def _ranking_sentence(ranking: Proportion, band: str, words: dict[str, str]) -> str:
    """'14/14 (78–100%; p = 6.1e-05: a coin does as well under 1% of the time): <words>'."""
    tail = f"; {ranking.undecided_text()}" if band == "undecided" else ""
    return f"{ranking.text()} ranked right ({ranking.chance_text()}): {words[band]}{tail}"


def heldout_reading(evaluation: dict[str, Any]) -> str:
    """The held-out figure in words, with its count, interval and test; which score ranked the pairs when it is
    not DPO's implicit reward, and the original model's accuracy and the gain over it under that score."""
    ranking = ranked(evaluation, "heldout")
    if ranking is None:
        return HELDOUT_WORDS["unknown"].capitalize() + "."
    margin = margin_text(evaluation.get("heldout_mean_margin"), evaluation.get("heldout_margin_interval"))
    text = f"Held-out pairs: {_ranking_sentence(ranking, accuracy_band(ranking), HELDOUT_WORDS)} ({margin})."
    scorer = evaluation.get("heldout_scorer")
    if scorer and scorer != Scorer.IMPLICIT_REWARD:
        before = finite(evaluation.get("heldout_reward_accuracy_before"))
        was = f"; the original model ranked {before:.0%} right under it" if before is not None else ""
        text += f" Scored by {SCORERS.get(scorer, scorer)}{was}."
        gain = evaluation.get("heldout_gain") or {}
        if before is not None and gain:
            text += f" {gain_text(gain)}."
    return text


def gain_text(gain: dict[str, Any]) -> str:
    """The paired test of each held-out margin against the original model's, in words."""
    gains, losses, p = gain.get("gains", 0), gain.get("losses", 0), finite(gain.get("p_value"))
    shown = p is not None and p < ALPHA
    verdict = "a gain over the original model" if shown else "no gain over the original model a test can see"
    p_text = f"{p:.2g}" if p is not None else "1"
    return f"Training widened the margin on {gains} pairs and narrowed it on {losses} (p = {p_text}): {verdict}"


def contrast_reading(evaluation: dict[str, Any]) -> str:
    ranking = ranked(evaluation, "contrast")
    if ranking is None:
        return "Contrast: " + CONTRAST_WORDS["unknown"] + "."
    sentence = _ranking_sentence(ranking, accuracy_band(ranking), CONTRAST_WORDS)
    return f"Contrast pairs (cue on the wrong side): {sentence}."


def capability_reading(evaluation: dict[str, Any]) -> str:
    before, after = ranked(evaluation, "capability_before"), ranked(evaluation, "capability_after")
    if before is None or after is None:
        return "Capability could not be measured (no capability pairs)."
    origin = " (the built-in general set)" if evaluation.get("capability_source") == "built-in" else ""
    if after.value < before.value - CAPABILITY_DROP + 1e-9:
        words = "knowledge unrelated to the preference got worse: an alignment tax"
    elif after.value < before.value:
        words = "a slight dip on unrelated facts"
    else:
        words = "knowledge unrelated to the preference is intact"
    return f"Capability{origin}: correct answer preferred {before.text()} -> {after.text()} — {words}."


def win_band(evaluation: dict[str, Any]) -> str:
    """'win' (the policy's answers preferred, a sign test at :data:`ALPHA`), 'loses' (the original's preferred,
    the same test the other way), 'no_win' (neither), 'blind' (the judge cannot tell the held-out pairs apart) or
    'unknown' (nothing judged)."""
    judge = evaluation.get("judge") or {}
    if not evaluation.get("win_count"):
        return "unknown"
    if not judge.get("usable"):
        return "blind"
    ahead, behind = finite(evaluation.get("win_p_value")), finite(evaluation.get("win_p_value_behind"))
    if ahead is not None and ahead < ALPHA:
        return "win"
    if behind is not None and behind < ALPHA:
        return "loses"
    return "no_win"


def judge_text(evaluation: dict[str, Any]) -> str:
    """Which judge spoke, what it measures, and how well it tells the held-out pairs apart."""
    judge = evaluation.get("judge") or {}
    check = Proportion.of(judge.get("heldout_accuracy"), judge.get("heldout_count"))
    told = f"; it ranks {check.text()} of the held-out pairs right ({check.chance_text()})" if check else ""
    contrast = Proportion.of(judge.get("contrast_accuracy"), judge.get("contrast_count"))
    if contrast is not None:
        told += (
            f" and {contrast.text()} of the contrast pairs ({contrast.chance_text()}); it is read only where both "
            "beat chance"
        )
    note = f"; {judge['note']}" if judge.get("note") else ""
    return f"judge: {judge.get('source', '?')}, measuring {judge.get('measures', '?')}{told}{note}"


def win_reading(evaluation: dict[str, Any]) -> str:
    """The win rate against the original model in one paragraph: count, interval, test, lengths, judge."""
    band = win_band(evaluation)
    if band == "unknown":
        return "No win rate: there are no held-out prompts to judge the answers on."
    if band == "blind":
        return (
            "The judge cannot tell the held-out pairs apart (or, the lab's reward model, the contrast pairs), so its "
            f"win rate is not read ({judge_text(evaluation)})."
        )
    n, wins, ties = evaluation["win_count"], evaluation.get("wins", 0), evaluation.get("win_ties", 0)
    rate = finite(evaluation.get("win_rate")) or 0.0
    interval = evaluation.get("win_interval") or [0.0, 1.0]
    p = finite(evaluation.get("win_p_value")) or 1.0
    judged = "prompts (held-out and eval)" if evaluation.get("win_eval_count") else "held-out prompts"
    head = (
        f"Win rate against the original model: the policy's answer won {wins} of {n} {judged}, {ties} tied "
        f"-> {rate:.0%} ({percent_range(tuple(interval))}), p = {p:.2g}"
    )
    if band == "win":
        words = "the answers it writes agree with the preference better than the original model's"
    elif band == "loses":
        words = "the original model's answers agree with the preference better: training moved what it writes away"
    else:
        decide = Proportion(round(wins + ties / 2), n).pairs_to_decide if rate > 0.5 else None
        more = f"; about {decide} prompts at this rate would decide it" if decide else ""
        words = f"no win a test can see{more}"
    text = f"{head} — {words}."
    shift = finite(evaluation.get("win_length_shift"))
    if band == "win" and shift is not None and abs(shift) >= LENGTH_SHIFT:
        longer = "longer" if shift > 0 else "shorter"
        text += f" Its wins go with answers {abs(shift):.0%} {longer} than the original's: length may be what won."
    before, after = finite(evaluation.get("mean_words_original")), finite(evaluation.get("mean_words_policy"))
    if before is not None and after is not None:
        text += f" Mean length {before:.0f} -> {after:.0f} words."
    judge = judge_text(evaluation)
    return f"{text} ({judge[0].upper()}{judge[1:]}.)"


def reward_model_ranked(evaluation: dict[str, Any], name: str) -> Proportion | None:
    """How the run's own reward model ranks a set (``heldout`` or ``contrast``), from ``eval.reward_model``."""
    judged = evaluation.get("reward_model") or {}
    return Proportion.of(judged.get(f"{name}_accuracy"), judged.get(f"{name}_count"))


def reward_model_reading(evaluation: dict[str, Any]) -> str:
    """The run's own reward model on pairs it never trained on, in one line."""
    heldout, contrast = reward_model_ranked(evaluation, "heldout"), reward_model_ranked(evaluation, "contrast")
    if heldout is None and contrast is None:
        return "The reward model could not be checked: there are no held-out or contrast pairs."
    parts = []
    if heldout is not None:
        parts.append(f"held-out pairs {heldout.text()} ranked right ({heldout.chance_text()})")
    if contrast is not None:
        parts.append(f"contrast pairs, the cue on the worse answer, {contrast.text()} ({contrast.chance_text()})")
    return "The reward model, on pairs it never trained on: " + "; ".join(parts) + "."


def checked_loss(evaluation: dict[str, Any]) -> bool:
    """Knowledge lost in what the model writes, on the point estimate: at least :data:`CHECKED_LOST` checked answers
    that were right turned wrong, and the share answered right fell by :data:`CHECKED_DROP` or more."""
    before, after = ranked(evaluation, "checked_before"), ranked(evaluation, "checked_after")
    if before is None or after is None:
        return False
    lost = int(evaluation.get("checked_capability_lost") or 0)
    return lost >= CHECKED_LOST and before.value - after.value >= CHECKED_DROP - 1e-9


def checked_capability_reading(evaluation: dict[str, Any]) -> str:
    """The checked questions in one line: answered right before -> after, and what turned wrong."""
    before, after = ranked(evaluation, "checked_before"), ranked(evaluation, "checked_after")
    if before is None or after is None:
        return "Checked answers could not be measured (no checked questions)."
    lost = int(evaluation.get("checked_capability_lost") or 0)
    if checked_loss(evaluation):
        words = f"{lost} answers that were right turned wrong: knowledge lost in what it writes"
    elif lost:
        words = (
            f"{lost} answer(s) that were right turned wrong, as answers held by a thin margin do under any training; "
            "knowledge kept in what it writes"
        )
    else:
        words = "no answer that was right turned wrong: knowledge kept in what it writes"
    return f"Checked answers: right {before.text()} -> {after.text()} — {words}."


def kl_reading(kl: float | None) -> str:
    kl = finite(kl)
    if kl is None:
        return "KL drift could not be measured."
    if kl < 0.05:
        words = "the model barely moved from the original"
    elif kl <= HEAVY_KL:
        words = "a moderate, deliberate move away from the original"
    elif kl < SEVERE_FACTOR * HEAVY_KL:
        words = "a large move away from the original: a high alignment tax (raise β or train fewer steps)"
    else:
        words = "far from the original: the model no longer writes like itself (raise β or train fewer steps)"
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
    elif ratio < SEVERE_FACTOR * HEAVY_PPL_RATIO:
        words = "fluency on unrelated text got much worse: training damaged general ability"
    else:
        words = "fluency on unrelated text is broken: training wrecked general ability"
    return f"Perplexity {before:.1f} -> {after:.1f} (x{ratio:.2f}) — {words}."


def curve_reading(curve: list[dict[str, Any]]) -> str:
    """The live held-out curve in one sentence: the steps it scored, where it started, peaked and ended, and how
    far apart it held the held-out pairs (the mean margin with its interval) at its last point."""
    points = [p for p in curve if finite(p.get("accuracy")) is not None]
    if not points:
        return "No held-out curve: the run had no held-out or contrast pairs to score during training."
    first, last = points[0], points[-1]
    step = best_step(points)
    best = next(p for p in points if p["step"] == step)

    def at(p: dict[str, Any]) -> str:
        held = Proportion.of(p["accuracy"], p.get("count"))
        text = held.text() if held else f"{p['accuracy']:.0%}"
        contrast = Proportion.of(p.get("contrast_accuracy"), p.get("contrast_count"))
        if contrast is not None:
            text += f" (contrast {contrast.text()})"
        elif finite(p.get("contrast_accuracy")) is not None:
            text += f" (contrast {p['contrast_accuracy']:.0%})"
        return text

    steps = ", ".join(str(p["step"]) for p in points)
    text = f"The live curve, scored after steps {steps}: held-out {at(first)} at step {first['step']}"
    if step not in (first["step"], last["step"]):
        text += f", best {at(best)} at step {step}"
    if last is not first:
        text += f", {at(last)} at step {last['step']}"
    return text + f"; {margin_text(last.get('margin'), last.get('margin_interval'))} at the end."


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
    if d.get("surprise_after"):
        before, after = d.get("garbled_answers_before", 0), d.get("garbled_answers_after", 0)
        rows.append(
            (
                "answers that no longer make sense (the original model's surprise, nats/token)",
                f"{before} (median {median(d.get('surprise_before') or []):.2f})",
                f"{after} (median {median(d['surprise_after']):.2f})",
                "new garbled answers" if after > before else "none new",
            )
        )
    return rows


# --------------------------------------------------------------------------- a report, read


def evidence_readings(evaluation: dict[str, Any]) -> list[str]:
    """The evidence of a report's ``eval`` block, one sentence per figure (the live curve's when it has one)."""
    lines = [
        heldout_reading(evaluation),
        contrast_reading(evaluation),
        capability_reading(evaluation),
        *([checked_capability_reading(evaluation)] if evaluation.get("checked_capability_count") else []),
        *([win_reading(evaluation)] if evaluation.get("win_count") else []),
        *([reward_model_reading(evaluation)] if evaluation.get("reward_model") else []),
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
    judged = evaluation.get("win_per_prompt") or []
    if judged and win_band(evaluation) != "blind":
        sides = {"policy": "after training", "original": "original model", "tie": "tie (same answer)"}
        where = {"heldout": "held-out", "eval": "eval"}
        table = ["| prompt | from | better answer | by |", "|---|---|---|---|"]
        table += [
            f"| {_short(row['prompt'])} | {where.get(row.get('set', 'heldout'), '')} | "
            f"{sides.get(row['winner'], row['winner'])} | {abs(row['margin']):.3f} |"
            for row in judged
        ]
        text += "\n\n### Who won, prompt by prompt\n" + "\n".join(table)
    return text


def _short(text: str, limit: int = 70) -> str:
    text = " ".join(text.split()).replace("|", "/")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def health_markdown(health: dict[str, Any], title: str = "Training health") -> str:
    """The verdict and each finding as Markdown, marked by severity and tagged with its code."""
    lines = "\n".join(
        f"- {SEVERITY_MARKS.get(d['severity'], '')} {d['text']}" + (f" `{d['code']}`" if d.get("code") else "")
        for d in finding_details(health)
    )
    best = health.get("best_step")
    best_line = f"\n\nBest held-out step: **{best}**." if best is not None else ""
    cure = remedy_text(health)
    cure_line = f"\n\n**Remedy:** {cure} Press *Try the remedy* to run it beside this run." if cure else ""
    return f"### {title}: {verdict_word(health)}\n{lines}{best_line}{cure_line}"


def remedy_text(health: dict[str, Any]) -> str:
    """The report's remedy in words: the settings it changes, then why (empty without one)."""
    found = health.get("remedy")
    if not isinstance(found, dict) or not found.get("changes"):
        return ""
    return f"{settings_text(found['changes'])}. {found.get('because', '')}".strip()


def settings_text(settings: dict[str, Any]) -> str:
    """Settings as a person reads them: 'learning_rate 2e-05, steps 6'."""
    return ", ".join(
        f"{name} {value:g}" if isinstance(value, float) else f"{name} {value}" for name, value in settings.items()
    )
