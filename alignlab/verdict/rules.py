"""The verdict's rules: one small function per finding code, and the thresholds they read.

Each rule is a function of :class:`~alignlab.verdict.findings.RunFacts` that returns
:class:`~alignlab.verdict.findings.Finding` s. A rule whose quantity a method does not log, or logs with another
meaning (SimPO's and ORPO's rewards are not relative to a reference), stands aside, and
:func:`rule_method_limits` says which checks could not be made. :data:`RULES` lists them in the order their
findings are listed; :func:`alignlab.verdict.health.read_health` applies them. The rules here read the training log and
the ranked pairs; those on what the policy writes and what it cost are in :mod:`alignlab.verdict.answer_rules`.

A reading of success is decided by a test against chance (:mod:`alignlab.evidence.stats`): held-out pairs "generalise"
only where a coin would rank as many right less than 5% of the time. A reading of harm (no generalisation, a
shortcut, backwards, a capability loss) fires on the point estimate, so that a test never hides it. The rules are
checked against runs whose answer is known (the calibration family: ``bench/calibration.py``,
``tests/test_calibration.py``, ``docs/calibration.md``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from alignlab.evidence.figures import CurvePoint, Evidence
from alignlab.evidence.stats import Proportion
from alignlab.registry.methods import SCORERS, Scorer
from alignlab.verdict.answer_rules import (
    NO_MOVE_KL,
    rule_broken,
    rule_change,
    rule_collapse,
    rule_drift,
    rule_garbage,
    rule_repetition,
    rule_template,
)
from alignlab.verdict.findings import Finding, RunFacts, tail_mean
from alignlab.verdict.readings import (
    BACKWARDS_ACCURACY,
    CAPABILITY_DROP,
    CHANCE_ACCURACY,
    CONTRAST_WORDS,
    HELDOUT_WORDS,
    accuracy_band,
    best_step,
    capability_reading,
    checked_capability_reading,
    checked_loss,
    finite,
    gain_text,
    reward_model_reading,
    win_band,
    win_reading,
)

#: Training reward margin that moved less than this (reward units) did not move.
FLAT_MARGIN = 0.05
#: Held-out margins that agree in sign less than this (|mean| / mean |margin|) carry no signal.
CONSISTENT_MARGINS = 0.3
GRAD_NORM_LIMIT = 100.0
#: Nats of summed log-prob below the reference, per chosen answer, that count as displacement.
DISPLACEMENT_DROP = 1.0
#: Training pairs separated by more than this many nats of log-ratio (margin / beta)...
MEMORISED_NATS = 40.0
#: ...and by more than this many times the held-out margin are memorised.
MEMORISED_GAP = 2.0
#: The held-out curve falling this far below its best point means generalisation was lost.
CURVE_DROP = 0.2

Rule = Callable[[RunFacts], list[Finding]]


def rule_trained(facts: RunFacts) -> list[Finding]:
    if not facts.log_rows:
        return [Finding("no_steps", "failed", "No training step was logged: the run did not train.")]
    return []


def rule_unstable(facts: RunFacts) -> list[Finding]:
    out = []
    for row in facts.log_rows:
        loss = row.get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            out.append(
                Finding(
                    "unstable",
                    "failed",
                    f"Instability: the loss became NaN or infinite at step {row.get('step', '?')}; "
                    "lower the learning rate.",
                )
            )
            break
    # Each row against its own stage's scale: RL's loss sums over whole sampled answers, so its norms run higher.
    over = []
    for row in facts.log_rows:
        if row.get("grad_norm") is None:
            continue
        grad = float(row["grad_norm"])
        limit = facts.entry.stage_of(row.get("stage")).grad_norm_scale or GRAD_NORM_LIMIT
        if not math.isfinite(grad) or grad > limit:
            over.append((grad if math.isfinite(grad) else float("inf"), limit))
    if over:
        worst, limit = max(over)
        out.append(
            Finding(
                "unstable",
                "warning",
                f"Instability: the gradient norm reached {worst:.3g} (above {limit:g}); "
                "the updates are exploding, lower the learning rate.",
            )
        )
    return out


def rule_signal(facts: RunFacts) -> list[Finding]:
    """No learnable signal: a flat training margin at chance, fresh pairs ranked at chance, held-out pairs ranked
    backwards, or held-out margins that disagree in sign (the first of these that holds).

    The training log tells learnt from unlearnt only where its rewards are relative to the reference (a
    policy that learnt nothing scores 0). SimPO's and ORPO's logged rewards are the policy's own ranking,
    the original model's preference included, so for them only the held-out evidence is read here.
    """
    for check in (_flat_training_signal, _fresh_pairs_at_chance, _backwards, _inconsistent_margins):
        found = check(facts)
        if found:
            return found
    return []


def _flat_training_signal(facts: RunFacts) -> list[Finding]:
    relative = facts.entry.rewards_relative
    accuracies = facts.series("accuracy") if relative else []
    margins = facts.series("margin") if relative else []
    if accuracies and margins:
        train_accuracy = tail_mean(accuracies)
        gain = tail_mean(margins) - margins[0]
        if 1 - CHANCE_ACCURACY <= train_accuracy <= CHANCE_ACCURACY and abs(gain) < FLAT_MARGIN:
            return [
                Finding(
                    "no_signal",
                    "failed",
                    f"No learning signal: training reward accuracy stayed near chance ({train_accuracy:.2f}) and "
                    f"the margin moved by only {gain:+.3f}; raise the learning rate or the number of steps.",
                )
            ]
    return []


def _fresh_pairs_at_chance(facts: RunFacts) -> list[Finding]:
    heldout = facts.figures.heldout.proportion
    # Each step's reward accuracy is measured on its batch before the update: in the first epoch those
    # pairs are unseen, so the log itself says whether what was learnt so far carries to new pairs.
    accuracy_key = facts.key("accuracy") if facts.entry.rewards_relative else None
    fresh = [
        float(r[accuracy_key])
        for r in facts.log_rows[1:]
        if accuracy_key is not None
        and finite(r.get(accuracy_key)) is not None
        and (finite(r.get("epoch")) or 0.0) <= 1.0 + 1e-6
    ]
    if len(fresh) >= 3 and sum(fresh) / len(fresh) <= CHANCE_ACCURACY and accuracy_band(heldout) != "beats_chance":
        return [
            Finding(
                "no_signal",
                "failed",
                f"No learning signal: pairs seen for the first time were ranked right only "
                f"{sum(fresh) / len(fresh):.0%} of the time during training (steps 2-{1 + len(fresh)}), about chance"
                + (f", and held-out pairs {heldout.text()}" if heldout is not None else "")
                + ". What one pair teaches does not carry to the next: the pairs may contradict each other (chosen "
                "and rejected swapped on some), or the learning rate is too small to learn anything.",
            )
        ]
    return []


def _backwards(facts: RunFacts) -> list[Finding]:
    heldout = facts.figures.heldout.proportion
    accuracy = heldout.value if heldout is not None else None
    before = finite(facts.figures.heldout_before.accuracy)  # reference-free scorers: the original model's ranking
    backwards = accuracy is not None and accuracy <= BACKWARDS_ACCURACY and (before is None or accuracy < before)
    if backwards and facts.entry.stage.samples_answers:
        # Online RL trains the policy on its own sampled answers, never on the pairs: a backwards ranking says
        # where RL moved the policy's likelihoods, not that the pairs' labels are swapped.
        return [
            Finding(
                "no_signal",
                "warning",
                f"Backwards: the policy's shift ranks held-out pairs the wrong way round ({heldout.text()} right). "
                "It trained on its own sampled answers, scored by the reward model, and those moved it away from "
                "the wording of the chosen answers rather than toward it: the reward model's preference did not "
                "reach the policy as the pairs state it. Online RL learns only from what the policy samples: answers "
                "like the rejected ones that it never writes are never pushed down (DPO learns from them directly). "
                "More RL steps, longer samples or a reward model that generalises may change this.",
            )
        ]
    if backwards:
        return [
            Finding(
                "no_signal",
                "failed",
                f"Backwards: held-out pairs are ranked the wrong way round ({heldout.text()} right). The training "
                "pairs teach the opposite of the held-out labels: check for swapped chosen and rejected answers.",
            )
        ]
    return []


def _inconsistent_margins(facts: RunFacts) -> list[Finding]:
    heldout = facts.figures.heldout.proportion
    held = [m for m in facts.figures.heldout.margins if finite(m) is not None]
    # Margins that point both ways mean "moved, but not in one direction" only when they measure the move
    # (relative to the reference); a reference-free score's margins carry the original model's own ranking.
    if len(held) >= 4 and accuracy_band(heldout) == "chance" and facts.relative_scorer:
        spread = sum(abs(m) for m in held) / len(held)
        agreement = abs(sum(held) / len(held)) / spread if spread > 0 else 0.0
        if agreement < CONSISTENT_MARGINS:
            return [
                Finding(
                    "no_signal",
                    "failed",
                    f"No consistent preference: held-out pairs are ranked right only {heldout.text()} and "
                    f"their margins point both ways (agreement {agreement:.2f}, below {CONSISTENT_MARGINS}). "
                    "The training moved the model, but not in one direction: check that the pairs agree with "
                    "each other (are some chosen and rejected answers swapped?).",
                )
            ]
    return []


def rule_learning(facts: RunFacts) -> list[Finding]:
    margins = facts.series("margin")
    accuracies = facts.series("accuracy")
    if len(margins) >= 2 and tail_mean(margins) - margins[0] > FLAT_MARGIN:
        counted = facts.figures.training
        reached = (
            f" and training reward accuracy reached {counted.text()} over the last half of the steps"
            if counted is not None
            else f" and training reward accuracy reached {tail_mean(accuracies):.2f}"
            if accuracies
            else ""
        )
        return [
            Finding(
                "learning",
                "good",
                f"Learning signal: the training reward margin grew from {margins[0]:+.3f} to {margins[-1]:+.3f}"
                f"{reached}.",
            )
        ]
    return []


def rule_reward(facts: RunFacts) -> list[Finding]:
    """Online RL: whether the reward of the answers the policy sampled rose (its logged ``reward`` axis).

    Each step samples fresh answers to other prompts, so one step is noisy: the last half of the steps
    is compared with the first step, as the margin is in :func:`rule_learning`.
    """
    rewards = facts.series("reward")
    if len(rewards) < 2:
        return []
    first, late = rewards[0], tail_mean(rewards)
    kl = facts.series("kl")
    leash = f"; its KL estimate to the reference ended at {kl[-1]:+.3f} nats/token" if kl else ""
    if late > first:
        return [
            Finding(
                "reward_rising",
                "good",
                f"Reward rising: the reward model scored the policy's sampled answers {first:+.3f} at the first RL "
                f"step and {late:+.3f} on average over the last half{leash}.",
            )
        ]
    return [
        Finding(
            "reward_flat",
            "info",
            f"Reward not rising: the reward model scored the policy's sampled answers {first:+.3f} at the first RL "
            f"step and {late:+.3f} on average over the last half{leash}; more steps or a higher learning rate "
            "may move it.",
        )
    ]


def rule_memorised(facts: RunFacts) -> list[Finding]:
    """Training pairs memorised: separated far beyond the held-out pairs after being seen again, all ranked right
    while held-out pairs sit at chance, or a live curve that peaked and fell once pairs were revisited."""
    return [*_memorised_margin(facts), *_memorised_not_generalised(facts), *_stopped_generalising(facts)]


def _revisited(facts: RunFacts) -> bool:
    """Whether the last logged step was past the first epoch: its pairs had been seen before."""
    return bool(facts.log_rows) and (finite(facts.log_rows[-1].get("epoch")) or 0.0) > 1.0


def _train_accuracy(facts: RunFacts) -> float:
    accuracies = facts.series("accuracy")
    return tail_mean(accuracies) if accuracies else float("nan")


def _memorised_margin(facts: RunFacts) -> list[Finding]:
    margins = facts.series("margin")
    # margin / beta is nats of log-ratio to the reference only where the rewards are relative to it.
    if not (margins and _train_accuracy(facts) >= 0.99 and facts.entry.rewards_relative):
        return []
    # Pairs separated by a huge log-ratio are memorised only if they were seen before (a batch of
    # pairs seen for the first time measures generalisation, not memory: warm-tone's first epoch at the
    # defaults separates fresh pairs by twice the held-out ones) and if unseen pairs are not separated alike.
    train_margin = tail_mean(margins[-2:])
    curve = [p for p in facts.heldout_curve if finite(p.margin) is not None]
    heldout_margin = curve[-1].margin if curve else finite(facts.figures.heldout.mean_margin)
    if not facts.relative_scorer:
        heldout_margin = None  # another unit: no gap to compare
    nats = train_margin / facts.beta
    gap = heldout_margin is None or train_margin > MEMORISED_GAP * max(heldout_margin, 0.0)
    if not (nats > MEMORISED_NATS and gap and _revisited(facts)):
        return []
    unseen = f" against {heldout_margin / facts.beta:.0f} on held-out pairs" if heldout_margin is not None else ""
    return [
        Finding(
            "memorised",
            "warning",
            f"Memorised: the training pairs are separated by {nats:.0f} nats of log-ratio{unseen}; the "
            "loss is near zero and further steps only push these exact answers apart. Train fewer steps "
            "or lower the learning rate.",
        )
    ]


def _memorised_not_generalised(facts: RunFacts) -> list[Finding]:
    heldout = facts.figures.heldout.proportion
    # Only where the log's accuracy and the held-out pairs rank by the policy (rlhf's log is its reward model's).
    if _train_accuracy(facts) >= 0.99 and accuracy_band(heldout) == "chance" and facts.entry.rewards_from_policy:
        return [
            Finding(
                "memorised",
                "warning",
                f"Memorised, not generalised: training pairs are all ranked right but held-out pairs only "
                f"{heldout.text()}, about chance.",
            )
        ]
    return []


def _stopped_generalising(facts: RunFacts) -> list[Finding]:
    curve = [p for p in facts.heldout_curve if finite(p.accuracy) is not None]
    step = best_step(curve)
    # Only re-seen pairs can be memorised: a dip within the first epoch is noise or drift (warm-tone's first
    # epoch at the defaults moves two of its 8 contrast pairs).
    if step is None or len(curve) < 3 or not _revisited(facts):
        return []
    best = next(p for p in curve if p.step == step)
    last = curve[-1]

    def total(p: CurvePoint) -> float:
        return p.accuracy + (finite(p.contrast_accuracy) or 0.0)

    if last.step <= step or total(best) - total(last) < CURVE_DROP:
        return []
    which = "held-out and contrast" if finite(best.contrast_accuracy) is not None else "held-out"
    return [
        Finding(
            "memorised",
            "warning",
            f"Stopped generalising: {which} accuracy peaked at step {step} and fell by the last step "
            f"({total(best):.2f} -> {total(last):.2f} summed); the later steps memorised the training "
            f"pairs. Train about {step} steps instead.",
        )
    ]


def rule_generalises(facts: RunFacts) -> list[Finding]:
    """Whether held-out pairs, never trained on, are ranked right more often than a coin would (a one-sided exact
    binomial test); for a reference-free score, also whether training widened their margins over the original
    model's (a sign test on the same pairs). Below :data:`CHANCE_ACCURACY` the reading is no generalisation
    whatever the count; between, too few pairs to tell, and how many would."""
    if facts.evidence is None:  # the Train tab's reading, before any evidence is gathered
        return []
    heldout = facts.evidence.heldout.proportion
    if heldout is None:
        return [Finding("no_heldout", "info", HELDOUT_WORDS["unknown"].capitalize() + ".")]
    band = accuracy_band(heldout)
    if band == "chance":
        return [
            Finding(
                "no_generalisation",
                "warning",
                f"No generalisation: only {heldout.text()} held-out pairs are ranked right, about chance; the "
                "preference was not learnt beyond the training pairs.",
            )
        ]
    if band == "undecided":
        return [
            Finding(
                "weak_generalisation",
                "warning",
                f"Not shown to generalise: {heldout.text()} held-out pairs are ranked right, "
                f"{heldout.undecided_text()}. Add held-out pairs on the Dataset tab to decide it.",
            )
        ]
    for check in (_moved_nothing, _no_gain, _cue_only):
        found = check(facts, facts.evidence, heldout)
        if found:
            return found
    before = finite(facts.evidence.heldout_before.accuracy)
    was = f"; the original model: {before:.0%}" if before is not None else ""
    return [
        Finding(
            "generalises",
            "good",
            f"Generalises: {heldout.text()} held-out pairs, never trained on, are ranked right "
            f"({heldout.chance_text()}{was}).",
        )
    ]


def _moved_nothing(facts: RunFacts, evidence: Evidence, heldout: Proportion) -> list[Finding]:
    """Held-out pairs ranked right under a relative score by a policy that barely moved."""
    kl = finite(evidence.drift.kl)
    if kl is None or kl >= NO_MOVE_KL or not facts.relative_scorer:
        return []
    # Under a score relative to the original model, the first tiny step in the right direction ranks every pair
    # right: the direction generalises, the size is nothing.
    margin = finite(evidence.heldout.mean_margin)
    return [
        Finding(
            "weak_generalisation",
            "warning",
            f"Held-out pairs: {heldout.text()} ranked right, but by a mean margin of {margin or 0:+.2g} while the "
            f"policy is only {kl:.4f} nats/token from the original: the step went the right way and moved "
            "nothing. Raise the learning rate or train more steps.",
        )
    ]


def _no_gain(facts: RunFacts, evidence: Evidence, heldout: Proportion) -> list[Finding]:
    """A reference-free score that the original model already earned, with no gain a sign test can see."""
    before = finite(evidence.heldout_before.accuracy)
    gain = evidence.gain
    if facts.relative_scorer or before is None or (gain is not None and gain.shown):
        return []
    return [
        Finding(
            "no_gain",
            "info",
            f"Held-out pairs: {heldout.text()} ranked right, but the original model already ranked {before:.0%} "
            "right under the same score (this method has no reference, so the score is the policy's own). "
            f"{gain_text(gain)}: training added no held-out preference of its own.",
        )
    ]


def _cue_only(facts: RunFacts, evidence: Evidence, heldout: Proportion) -> list[Finding]:
    """Held-out pairs ranked right while the contrast pairs show the training answers' cue does the ranking."""
    contrast = evidence.contrast.proportion
    if accuracy_band(contrast) != "chance":
        return []
    return [
        Finding(
            "cue_only",
            "info",
            f"Held-out pairs: {heldout.text()} ranked right, but they share the training answers' surface cue, "
            f"and the contrast pairs ({contrast.text()}) show that the cue, not the preference, does the ranking.",
        )
    ]


def rule_shortcut(facts: RunFacts) -> list[Finding]:
    """Contrast pairs put the training answers' cue on the worse answer: at chance, a shortcut (read on the point
    estimate); beyond the cue only where they are ranked right more often than a coin would."""
    contrast = facts.figures.contrast.proportion
    if contrast is None:
        if facts.evidence is not None:
            return [Finding("no_contrast", "info", "Contrast: " + CONTRAST_WORDS["unknown"] + ".")]
        return []
    band = accuracy_band(contrast)
    if band == "chance":
        return [
            Finding(
                "shortcut",
                "warning",
                f"Shortcut: with the training answers' surface cue moved to the worse answer, only {contrast.text()} "
                "contrast pairs are ranked right; the model learnt the cue (a greeting, a sign-off, a length), not "
                "the preference behind it.",
            )
        ]
    if band == "undecided":
        return [
            Finding(
                "partial_cue",
                "info",
                f"Contrast: {contrast.text()} pairs ranked right with the cue on the worse answer, "
                f"{contrast.undecided_text()}; whether the preference goes beyond the cue is not decided.",
            )
        ]
    return [
        Finding(
            "beyond_cue",
            "good",
            f"Beyond the cue: {contrast.text()} contrast pairs are ranked right even with the cue on the worse answer "
            f"({contrast.chance_text()}).",
        )
    ]


def rule_capability(facts: RunFacts) -> list[Finding]:
    """Capability loss is read on the point estimate (a fall of :data:`CAPABILITY_DROP` and of two pairs or more),
    with both intervals shown."""
    capability = facts.figures.capability
    before, after = capability.before.proportion, capability.after.proportion
    if before is None or after is None:
        return []
    dropped = before.value - after.value
    if dropped >= CAPABILITY_DROP - 1e-9 and before.k - after.k >= 2:
        return [
            Finding(
                "capability_loss",
                "warning",
                f"Capability loss: on unrelated questions the correct answer is preferred {after.text()}, down from "
                f"{before.text()}; training cost knowledge it was not about. Raise β or train fewer steps.",
            )
        ]
    return [Finding("capability_kept", "good", capability_reading(facts.figures))]


def rule_checked_capability(facts: RunFacts) -> list[Finding]:
    """Capability in what the model writes: checked answers that were right turned wrong
    (:func:`alignlab.verdict.readings.checked_loss`, on the point estimate, both intervals shown)."""
    checked = facts.figures.checked
    if checked_loss(checked):
        return [
            Finding(
                "capability_loss",
                "warning",
                checked_capability_reading(checked)
                + " Training cost facts it was not about; raise β or train fewer steps.",
            )
        ]
    return []


def rule_reward_model(facts: RunFacts) -> list[Finding]:
    """A method that trains a reward model (RLHF) is read from it: whether it ranks held-out pairs, never trained
    on, right more often than a coin would, and contrast pairs too (or whether it learnt the training answers' cue).
    The policy is only as right as the reward it was trained against."""
    if not facts.entry.judged_by_reward_model or facts.evidence is None:
        return []
    check = facts.evidence.reward_model
    heldout = check.proportion if check is not None else None
    contrast = check.contrast.proportion if check is not None and check.contrast is not None else None
    reading = reward_model_reading(check)
    if heldout is None:
        return [Finding("reward_model_unchecked", "info", reading + " Add held-out pairs to check it.")]
    out = []
    band = accuracy_band(heldout)
    if band == "chance":
        out.append(
            Finding(
                "reward_model_chance",
                "warning",
                f"{reading} It ranks pairs it never saw about as a coin would: it did not learn the preference, so "
                "the policy was trained against noise. Check the labels (chosen and rejected swapped on some?) or "
                "give the reward model more pairs.",
            )
        )
    elif band == "undecided":
        out.append(
            Finding(
                "reward_model_undecided",
                "warning",
                f"{reading} Whether it learnt the preference is not shown: {heldout.undecided_text()}.",
            )
        )
    if accuracy_band(contrast) == "chance":
        out.append(
            Finding(
                "reward_model_cue",
                "warning",
                f"{reading} With the cue on the worse answer it ranks them about as a coin would: the reward model "
                "learnt the training answers' surface cue, and the policy was rewarded for that cue.",
            )
        )
    if not out:
        out.append(Finding("reward_model_right", "good", reading))
    return out


def ranking(rule: Rule) -> Rule:
    """A rule on how the policy's implicit reward ranks held-out and contrast pairs. A method judged by its reward
    model (:attr:`alignlab.registry.methods.Method.judged_by_reward_model`) never optimises that score, so for it these
    findings are information; its verdict comes from :func:`rule_reward_model`, the win rate and the drift."""

    def read(facts: RunFacts) -> list[Finding]:
        found = rule(facts)
        if not facts.entry.judged_by_reward_model:
            return found
        note = f" (Information only: {facts.entry.title} is read from its reward model and the win rate.)"
        return [Finding(f.code, "info", f.text + note) for f in found]

    read.__name__, read.__doc__ = rule.__name__, rule.__doc__
    return read


def rule_displacement(facts: RunFacts) -> list[Finding]:
    # Rewards are beta x (policy - reference) log-probability on the step's own pairs, so they compare
    # like with like; raw ``logps/*`` move with which pairs a batch drew (short or long answers). A method
    # whose rewards are not relative to a reference (SimPO, ORPO) says nothing about displacement here.
    if not facts.entry.rewards_relative:
        return []
    chosen, rejected = facts.series("chosen"), facts.series("rejected")
    if len(chosen) >= 2 and len(rejected) >= 2:
        chosen_drop, rejected_drop = -tail_mean(chosen) / facts.beta, -tail_mean(rejected) / facts.beta
        if chosen_drop > DISPLACEMENT_DROP and rejected_drop > 0:
            return [
                Finding(
                    "displacement",
                    "warning",
                    f"Likelihood displacement: the chosen answers' log-probability fell {chosen_drop:.2f} nats "
                    f"below the reference's, along with the rejected ones' ({rejected_drop:.2f}); the margin grew "
                    "by pushing both down.",
                )
            ]
    return []


def rule_method_limits(facts: RunFacts) -> list[Finding]:
    """Which checks this run's method leaves out, and which score its held-out evidence uses."""
    entry = facts.entry
    out = []
    missing = [axis for axis in ("margin", "accuracy") if entry.key(axis) is None]
    if missing:
        out.append(
            Finding(
                "not_logged",
                "info",
                f"{entry.title} logs no training reward {' or '.join(missing)} (its rows are single answers, not "
                "pairs), so the checks that read them (no signal on fresh pairs, memorised pairs) rest on the "
                "held-out pairs instead.",
            )
        )
    if not entry.rewards_relative:
        whose = f"{entry.title} has no reference model: its" if not entry.has_reference else f"{entry.title}'s"
        out.append(
            Finding(
                "not_logged",
                "info",
                f"{whose} logged rewards are {entry.rewards_are}, so the learning-signal, likelihood-displacement "
                "and memorised-log-ratio checks are not read from them (the held-out pairs speak instead).",
            )
        )
    scorer = facts.figures.scorer
    if scorer and scorer != Scorer.IMPLICIT_REWARD:
        out.append(Finding("heldout_scorer", "info", f"Held-out pairs are scored by {SCORERS.get(scorer, scorer)}."))
    return out


def rule_win(facts: RunFacts) -> list[Finding]:
    """The win rate against the original model (:mod:`alignlab.evidence.judges`): ``win`` where a sign test says the
    policy's answers are preferred, ``loses`` where it says the original's are, ``no_win`` otherwise (also when the
    judge cannot tell the held-out pairs apart, whose win rate is not read)."""
    win = facts.figures.win
    band = win_band(win)
    if band == "unknown":
        return []
    reading = win_reading(win)
    if band == "win":
        return [Finding("win", "good", reading)]
    if band == "loses":
        return [Finding("loses", "warning", reading)]
    return [Finding("no_win", "info", reading)]


#: The rules, in the order their findings are listed (failures are listed first by the verdict).
RULES: list[Rule] = [
    rule_trained,
    rule_unstable,
    ranking(rule_signal),
    rule_collapse,
    rule_repetition,
    rule_garbage,
    rule_broken,
    rule_memorised,
    rule_reward_model,
    ranking(rule_shortcut),
    rule_capability,
    rule_checked_capability,
    rule_template,
    rule_displacement,
    rule_drift,
    rule_change,
    rule_learning,
    rule_reward,
    ranking(rule_generalises),
    rule_win,
    rule_method_limits,
]
