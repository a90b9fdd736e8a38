"""Each figure of a run in plain words: the one place the CLI, the Compare tab and the comparison panel read.

A reading says what a figure means for the run (held-out accuracy "about chance", KL drift "a moderate,
deliberate move"), in the same words the verdict's findings (:mod:`alignlab.verdict.rules`) use for the same figure; it
reads the figure by attribute from the run's evidence (:class:`alignlab.evidence.figures.Evidence`).
:func:`evidence_readings`, :func:`answer_checks` and :func:`health_markdown` turn a report's ``eval`` and
``health`` blocks into the lines a person reads (the ``eval`` block read back once, by
:meth:`~alignlab.evidence.figures.Evidence.from_dict`); the CLI wraps them for a terminal, the app shows them as
Markdown. Nothing here imports torch or gradio.
"""

from __future__ import annotations

import math
from typing import Any

from alignlab.evidence.degeneration import LOOPING_RATE, Degeneration
from alignlab.evidence.figures import CheckedQuestions, CurvePoint, Evidence, Gain, JudgeCheck, WinRate
from alignlab.evidence.stats import ALPHA, Proportion, finite, interval_text, median, percent_range
from alignlab.registry.methods import SCORERS, Scorer

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
#: Checked answers (:mod:`alignlab.evidence.questions`) lost: this many right answers turned wrong, and the share
#: answered
#: right down by this much (three of the twenty built-in questions), read on the point estimate. A small model holds
#: some answers by a thin margin, and the smallest move that changes anything flips them: IPO at its defaults on
#: seed-lab (KL 0.004 nats/token) turns "Mars" into "Kepler-62f" and Spain's language into Spanish-like words, as
#: every method at its defaults there turns two. A loss is more than that.
CHECKED_LOST = 3
CHECKED_DROP = 0.15


def best_step(curve: list[CurvePoint]) -> int | None:
    """The earliest step where held-out (plus contrast, when measured) accuracy peaks, then held-out margin."""
    points = [p for p in curve if finite(p.accuracy) is not None]
    if not points:
        return None

    def score(p: CurvePoint) -> float:
        return round(p.accuracy + (finite(p.contrast_accuracy) or 0.0), 6)

    top = max(score(p) for p in points)
    return int(min(p.step for p in points if score(p) == top))


#: Wins that go with answers this much longer (or shorter) than the original's, on average, are named.
LENGTH_SHIFT = 0.25


def accuracy_band(ranking: Proportion | None) -> str:
    """'chance' (at or below :data:`CHANCE_ACCURACY`), 'beats_chance' (a one-sided exact test at
    :data:`alignlab.evidence.stats.ALPHA`), 'undecided' (better than even, too few pairs to tell), or 'unknown'."""
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


def heldout_reading(evidence: Evidence) -> str:
    """The held-out figure in words, with its count, interval and test; which score ranked the pairs when it is
    not DPO's implicit reward, and the original model's accuracy and the gain over it under that score."""
    held = evidence.heldout
    ranking = held.proportion
    if ranking is None:
        return HELDOUT_WORDS["unknown"].capitalize() + "."
    margin = margin_text(held.mean_margin, held.margin_interval)
    text = f"Held-out pairs: {_ranking_sentence(ranking, accuracy_band(ranking), HELDOUT_WORDS)} ({margin})."
    scorer = evidence.scorer
    if scorer and scorer != Scorer.IMPLICIT_REWARD:
        before = finite(evidence.heldout_before.accuracy)
        was = f"; the original model ranked {before:.0%} right under it" if before is not None else ""
        text += f" Scored by {SCORERS.get(scorer, scorer)}{was}."
        if before is not None and evidence.gain is not None:
            text += f" {gain_text(evidence.gain)}."
    return text


def gain_text(gain: Gain | None) -> str:
    """The paired test of each held-out margin against the original model's, in words."""
    gain = gain or Gain()
    p = finite(gain.p_value)
    verdict = "a gain over the original model" if gain.shown else "no gain over the original model a test can see"
    p_text = f"{p:.2g}" if p is not None else "1"
    return (
        f"Training widened the margin on {gain.gains} pairs and narrowed it on {gain.losses} (p = {p_text}): {verdict}"
    )


def contrast_reading(evidence: Evidence) -> str:
    ranking = evidence.contrast.proportion
    if ranking is None:
        return "Contrast: " + CONTRAST_WORDS["unknown"] + "."
    sentence = _ranking_sentence(ranking, accuracy_band(ranking), CONTRAST_WORDS)
    return f"Contrast pairs (cue on the wrong side): {sentence}."


def capability_reading(evidence: Evidence) -> str:
    capability = evidence.capability
    before, after = capability.before.proportion, capability.after.proportion
    if before is None or after is None:
        return "Capability could not be measured (no capability pairs)."
    origin = " (the built-in general set)" if capability.source == "built-in" else ""
    if after.value < before.value - CAPABILITY_DROP + 1e-9:
        words = "knowledge unrelated to the preference got worse: an alignment tax"
    elif after.value < before.value:
        words = "a slight dip on unrelated facts"
    else:
        words = "knowledge unrelated to the preference is intact"
    return f"Capability{origin}: correct answer preferred {before.text()} -> {after.text()} — {words}."


def win_band(win: WinRate | None) -> str:
    """'win' (the policy's answers preferred, a sign test at :data:`ALPHA`), 'loses' (the original's preferred,
    the same test the other way), 'no_win' (neither), 'blind' (the judge cannot tell the held-out pairs apart) or
    'unknown' (nothing judged)."""
    if win is None or not win.count:
        return "unknown"
    if not win.check.usable:
        return "blind"
    if win.p_value < ALPHA:
        return "win"
    if win.p_value_behind < ALPHA:
        return "loses"
    return "no_win"


def judge_text(win: WinRate) -> str:
    """Which judge spoke, what it measures, and how well it tells the held-out pairs apart."""
    check = win.check.proportion
    told = f"; it ranks {check.text()} of the held-out pairs right ({check.chance_text()})" if check else ""
    contrast = win.check.contrast.proportion if win.check.contrast is not None else None
    if contrast is not None:
        told += (
            f" and {contrast.text()} of the contrast pairs ({contrast.chance_text()}); it is read only where both "
            "beat chance"
        )
    note = f"; {win.check.note}" if win.check.note else ""
    return f"judge: {win.source}, measuring {win.measures}{told}{note}"


def win_reading(win: WinRate | None) -> str:
    """The win rate against the original model in one paragraph: count, interval, test, lengths, judge."""
    band = win_band(win)
    if band == "unknown":
        return "No win rate: there are no held-out prompts to judge the answers on."
    if band == "blind":
        return (
            "The judge cannot tell the held-out pairs apart (or, the lab's reward model, the contrast pairs), so its "
            f"win rate is not read ({judge_text(win)})."
        )
    judged = "prompts (held-out and eval)" if win.eval_count else "held-out prompts"
    head = (
        f"Win rate against the original model: the policy's answer won {win.wins} of {win.count} {judged}, "
        f"{win.ties} tied -> {win.rate:.0%} ({percent_range(tuple(win.interval or (0.0, 1.0)))}), "
        f"p = {win.p_value:.2g}"
    )
    if band == "win":
        words = "the answers it writes agree with the preference better than the original model's"
    elif band == "loses":
        words = "the original model's answers agree with the preference better: training moved what it writes away"
    else:
        decide = Proportion(round(win.wins + win.ties / 2), win.count).pairs_to_decide if win.rate > 0.5 else None
        more = f"; about {decide} prompts at this rate would decide it" if decide else ""
        words = f"no win a test can see{more}"
    text = f"{head} — {words}."
    shift = finite(win.length_shift)
    if band == "win" and shift is not None and abs(shift) >= LENGTH_SHIFT:
        longer = "longer" if shift > 0 else "shorter"
        text += f" Its wins go with answers {abs(shift):.0%} {longer} than the original's: length may be what won."
    before, after = finite(win.mean_words_original), finite(win.mean_words_policy)
    if before is not None and after is not None:
        text += f" Mean length {before:.0f} -> {after:.0f} words."
    judge = judge_text(win)
    return f"{text} ({judge[0].upper()}{judge[1:]}.)"


def reward_model_reading(check: JudgeCheck | None) -> str:
    """The run's own reward model on pairs it never trained on, in one line."""
    heldout = check.proportion if check is not None else None
    contrast = check.contrast.proportion if check is not None and check.contrast is not None else None
    if heldout is None and contrast is None:
        return "The reward model could not be checked: there are no held-out or contrast pairs."
    parts = []
    if heldout is not None:
        parts.append(f"held-out pairs {heldout.text()} ranked right ({heldout.chance_text()})")
    if contrast is not None:
        parts.append(f"contrast pairs, the cue on the worse answer, {contrast.text()} ({contrast.chance_text()})")
    return "The reward model, on pairs it never trained on: " + "; ".join(parts) + "."


def checked_loss(checked: CheckedQuestions | None) -> bool:
    """Knowledge lost in what the model writes, on the point estimate: at least :data:`CHECKED_LOST` checked answers
    that were right turned wrong, and the share answered right fell by :data:`CHECKED_DROP` or more."""
    if checked is None:
        return False
    return checked.lost >= CHECKED_LOST and checked.before.value - checked.after.value >= CHECKED_DROP - 1e-9


def checked_capability_reading(checked: CheckedQuestions | None) -> str:
    """The checked questions in one line: answered right before -> after, and what turned wrong."""
    if checked is None:
        return "Checked answers could not be measured (no checked questions)."
    lost = checked.lost
    if checked_loss(checked):
        words = f"{lost} answers that were right turned wrong: knowledge lost in what it writes"
    elif lost:
        words = (
            f"{lost} answer(s) that were right turned wrong, as answers held by a thin margin do under any training; "
            "knowledge kept in what it writes"
        )
    else:
        words = "no answer that was right turned wrong: knowledge kept in what it writes"
    return f"Checked answers: right {checked.before.text()} -> {checked.after.text()} — {words}."


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


def _curve_at(point: CurvePoint) -> str:
    """One curve point's held-out count (and contrast count), as the curve's sentence names it."""
    held = point.heldout
    text = held.text() if held else f"{point.accuracy:.0%}"
    contrast = point.contrast
    if contrast is not None:
        text += f" (contrast {contrast.text()})"
    elif finite(point.contrast_accuracy) is not None:
        text += f" (contrast {point.contrast_accuracy:.0%})"
    return text


def curve_reading(curve: list[CurvePoint]) -> str:
    """The live held-out curve in one sentence: the steps it scored, where it started, peaked and ended, and how
    far apart it held the held-out pairs (the mean margin with its interval) at its last point."""
    points = [p for p in curve if finite(p.accuracy) is not None]
    if not points:
        return "No held-out curve: the run had no held-out or contrast pairs to score during training."
    first, last = points[0], points[-1]
    step = best_step(points)
    best = next(p for p in points if p.step == step)
    steps = ", ".join(str(p.step) for p in points)
    text = f"The live curve, scored after steps {steps}: held-out {_curve_at(first)} at step {first.step}"
    if step not in (first.step, last.step):
        text += f", best {_curve_at(best)} at step {step}"
    if last is not first:
        text += f", {_curve_at(last)} at step {last.step}"
    return text + f"; {margin_text(last.margin, last.margin_interval)} at the end."


Row = tuple[str, str, str, str]


def degeneration_readings(d: Degeneration | None) -> list[Row]:
    """(figure, before, after, reading) rows for the output-level checks."""
    if d is None:
        return []
    rows = [_distinct_row(d), _repeats_row(d), _length_row(d), _phrases_row(d), _garbage_row(d)]
    if d.surprise_after:
        before, after = d.garbled_answers_before, d.garbled_answers_after
        rows.append(
            (
                "answers that no longer make sense (the original model's surprise, nats/token)",
                f"{before} (median {median(d.surprise_before or []):.2f})",
                f"{after} (median {median(d.surprise_after):.2f})",
                "new garbled answers" if after > before else "none new",
            )
        )
    return rows


def _distinct_row(d: Degeneration) -> Row:
    n, before, after = d.answers or 0, d.distinct_answers_before, d.distinct_answers_after
    if after < before and after <= math.ceil(n / 2):
        reading = "collapsed: many prompts get the same answer"
    elif after < before:
        reading = "some answers became near-duplicates"
    else:
        reading = "every prompt still gets its own answer"
    return ("distinct answers", f"{before} of {n}", f"{after} of {n}", reading)


def _repeats_row(d: Degeneration) -> Row:
    looping = d.looping_answers_after > d.looping_answers_before
    return (
        "repeated 3-word phrases (mean)",
        f"{d.repeated_ngram_rate_before:.0%}",
        f"{d.repeated_ngram_rate_after:.0%}",
        f"{d.looping_answers_after} answer(s) loop (>= {LOOPING_RATE:.0%} repeats)" if looping else "no new loops",
    )


def _length_row(d: Degeneration) -> Row:
    wb, wa = d.mean_words_before, d.mean_words_after
    change = (wa - wb) / wb if wb else 0.0
    size = " (much shorter)" if change < -0.5 else " (much longer)" if change > 1 else ""
    return ("mean words per answer", f"{wb:.0f}", f"{wa:.0f}", f"{change:+.0%}{size}")


def _phrases_row(d: Degeneration) -> Row:
    phrases = d.new_common_phrases or []
    return (
        "phrases new in most answers",
        "",
        "; ".join(f"“{p}”" for p in phrases) or "none",
        f"template: {d.template_share or 0:.0%} of the words" if phrases else "no template capture",
    )


def _garbage_row(d: Degeneration) -> Row:
    before, after = d.garbage_answers_before, d.garbage_answers_after
    return ("broken or symbol-heavy answers", str(before), str(after), "new garbage" if after > before else "none new")


# --------------------------------------------------------------------------- a report, read


def evidence_lines(evidence: Evidence) -> list[str]:
    """The evidence, one sentence per figure (the live curve's when it has one)."""
    win = evidence.win
    lines = [
        heldout_reading(evidence),
        contrast_reading(evidence),
        capability_reading(evidence),
        *([checked_capability_reading(evidence.checked)] if evidence.checked is not None else []),
        *([win_reading(win)] if win is not None and win.count else []),
        *([reward_model_reading(evidence.reward_model)] if evidence.reward_model is not None else []),
        kl_reading(evidence.drift.kl),
        perplexity_reading(evidence.drift.perplexity_before, evidence.drift.perplexity_after),
    ]
    if evidence.curve:
        lines.append(curve_reading(evidence.curve))
    return lines


def evidence_readings(evaluation: dict[str, Any]) -> list[str]:
    """The evidence of a report's ``eval`` block, one sentence per figure (:func:`evidence_lines`)."""
    return evidence_lines(Evidence.from_dict(evaluation))


def answer_checks(evaluation: dict[str, Any]) -> list[Row]:
    """The output-level checks of a report's ``eval`` block: (figure, before, after, reading) rows."""
    return degeneration_readings(Evidence.from_dict(evaluation).degeneration)


SEVERITY_MARKS = {"failed": "✖", "warning": "⚠", "info": "ℹ", "good": "✔"}
VERDICT_WORDS = {"healthy": "HEALTHY", "warning": "WARNING", "failed": "FAILED"}


def finding_details(health: dict[str, Any]) -> list[dict[str, str]]:
    """A report's ``health`` block as its findings: ``{"code", "severity", "text"}`` each (older reports: text)."""
    return health.get("details") or [{"code": "", "severity": "", "text": t} for t in health.get("findings", [])]


def verdict_word(health: dict[str, Any]) -> str:
    return VERDICT_WORDS.get(health["verdict"], health["verdict"].upper())


def evidence_markdown(evaluation: dict[str, Any]) -> str:
    """A report's evidence and output-level checks as Markdown: each figure with what it means."""
    evidence = Evidence.from_dict(evaluation)
    text = "### Evidence\n" + "\n".join(f"- {line}" for line in evidence_lines(evidence))
    rows = degeneration_readings(evidence.degeneration)
    if rows:
        table = ["| answers | before | after | reading |", "|---|---|---|---|"]
        table += [f"| {name} | {before} | {after} | {reading} |" for name, before, after, reading in rows]
        text += "\n\n### The answers themselves\n" + "\n".join(table)
    win = evidence.win
    if win is not None and win.per_prompt and win_band(win) != "blind":
        sides = {"policy": "after training", "original": "original model", "tie": "tie (same answer)"}
        where = {"heldout": "held-out", "eval": "eval"}
        table = ["| prompt | from | better answer | by |", "|---|---|---|---|"]
        table += [
            f"| {_short(row['prompt'])} | {where.get(row.get('set', 'heldout'), '')} | "
            f"{sides.get(row['winner'], row['winner'])} | {abs(row['margin']):.3f} |"
            for row in win.per_prompt
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
