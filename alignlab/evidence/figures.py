"""The evidence of a run as a tree of small dataclasses, flattened into the report's ``eval`` keys in one place.

What belongs together is one object: a set of pairs ranked (:class:`Ranking`: held-out, contrast, capability before
and after), the drift from the original model (:class:`Drift`), the checked questions (:class:`CheckedQuestions`),
the win rate (:class:`WinRate`) with its judge's check and the run's own reward model's (:class:`JudgeCheck`), the
live curve (:class:`CurvePoint`) and the answers' checks (:class:`alignlab.evidence.degeneration.Degeneration`), all
held by
:class:`Evidence`. The rules (:mod:`alignlab.verdict.rules`, :mod:`alignlab.verdict.answer_rules`) and the readings
(:mod:`alignlab.verdict.readings`) read it by attribute. :meth:`Evidence.to_dict` writes the report's ``eval`` block,
key
for key in the order of ``docs/architecture.md``; :meth:`Evidence.from_dict` reads a report's block back (older
reports and partial blocks too: a missing figure is missing, never an error). Nothing here imports torch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from alignlab.evidence.degeneration import Degeneration
from alignlab.evidence.stats import (
    ALPHA,
    Proportion,
    binomial_tail,
    finite,
    mean_interval,
    paired_gain,
    wilson_interval,
)

NAN = float("nan")


def _number(value: Any) -> float:
    """A reported figure as a float: NaN where it is missing (null) or not a number."""
    number = finite(value)
    return NAN if number is None else number


# --------------------------------------------------------------------------- ranked pairs


@dataclass
class Ranking:
    """A set of pairs ranked by a score: the share ranked right of ``count`` pairs, and the margins
    (chosen minus rejected score). Its interval and its test against a coin follow from the count."""

    accuracy: float = NAN
    count: int = 0
    mean_margin: float = NAN
    margins: list[float] = field(default_factory=list)
    """Each pair's margin, where the report keeps them (held-out and contrast pairs)."""
    chosen: list[float] = field(default_factory=list)
    """Each pair's chosen answer's score, where the report keeps it (held-out pairs)."""
    rejected: list[float] = field(default_factory=list)

    @property
    def proportion(self) -> Proportion | None:
        """``k`` of ``n`` ranked right; None without pairs."""
        return Proportion.of(self.accuracy, self.count)

    @property
    def accuracy_interval(self) -> list[float] | None:
        """The Wilson 95% interval of the accuracy (None without pairs)."""
        ranked = self.proportion
        return list(ranked.interval) if ranked is not None else None

    @property
    def p_value(self) -> float:
        """How often a coin ranks at least as many of these pairs right (one-sided); NaN without pairs."""
        ranked = self.proportion
        return ranked.p_value if ranked is not None else NAN

    @property
    def margin_interval(self) -> list[float] | None:
        """The Student-t 95% interval of the mean margin (None for fewer than two margins)."""
        interval = mean_interval(self.margins)
        return list(interval) if interval else None


@dataclass
class Gain:
    """A sign test of each held-out pair's margin against the original model's on the same pair."""

    gains: int = 0
    losses: int = 0
    p_value: float = NAN

    @classmethod
    def of(cls, after: list[float], before: list[float]) -> Gain:
        return cls(*paired_gain(after, before))

    @property
    def shown(self) -> bool:
        """Whether the gains beat a coin at :data:`alignlab.evidence.stats.ALPHA`."""
        return math.isfinite(self.p_value) and self.p_value < ALPHA

    def to_dict(self) -> dict[str, Any]:
        return {"gains": self.gains, "losses": self.losses, "p_value": self.p_value}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Gain | None:
        if not data:
            return None
        return cls(int(data.get("gains") or 0), int(data.get("losses") or 0), _number(data.get("p_value")))


@dataclass
class Capability:
    """Unrelated questions whose correct answer is chosen, ranked by the policy's own log-probability: before
    (the original model) and after training, on the same pairs."""

    before: Ranking = field(default_factory=Ranking)
    after: Ranking = field(default_factory=Ranking)
    source: str = "preset"
    """Where the pairs come from: ``preset``, ``built-in`` or ``none``."""
    pairs: int = 0


@dataclass
class Drift:
    """How far the policy moved from the original model: KL per answer token, and perplexity on neutral text."""

    kl: float = NAN
    """KL(pi_theta || pi_ref) per answer token on the eval answers, in nats."""
    perplexity_before: float = NAN
    perplexity_after: float = NAN


@dataclass
class CheckedQuestions:
    """The checked questions (:mod:`alignlab.evidence.questions`), answered greedily before and after training and
    checked
    by matching: the answers right before and after, and those right before and wrong after."""

    before: Proportion
    after: Proportion
    lost: int = 0
    answers: list[dict[str, Any]] = field(default_factory=list)
    """Each question: its accepted answers, both answers, and which were right."""

    @property
    def count(self) -> int:
        return self.before.n


# --------------------------------------------------------------------------- judges and the win rate


@dataclass
class JudgeCheck:
    """Whether a judge can tell the held-out pairs apart: ``k`` of ``n`` ranked right, and its test against chance;
    for a judge that must also rank the contrast pairs (the lab's reward model), ``contrast`` is that count.
    A run's own reward model is checked the same way (the report's ``eval.reward_model``)."""

    k: int
    n: int
    contrast: JudgeCheck | None = None
    note: str = ""
    """Why the judge spoke in place of the one asked for, when it did."""

    @property
    def proportion(self) -> Proportion | None:
        """The held-out pairs it ranks right; None without pairs."""
        return Proportion(self.k, self.n) if self.n else None

    @property
    def usable(self) -> bool:
        beats = self.n > 0 and Proportion(self.k, self.n).beats_chance
        return beats and (self.contrast is None or self.contrast.usable)

    def to_dict(self) -> dict[str, Any]:
        proportion = self.proportion
        out: dict[str, Any] = {
            "heldout_accuracy": self.k / self.n if self.n else None,
            "heldout_count": self.n,
            "heldout_interval": list(proportion.interval) if proportion else None,
            "heldout_p_value": proportion.p_value if proportion else None,
            "usable": self.usable,
        }
        if self.contrast is not None:
            contrast = self.contrast.to_dict()
            out.update({key.replace("heldout", "contrast"): contrast[key] for key in contrast if key != "usable"})
        if self.note:
            out["note"] = self.note
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> JudgeCheck | None:
        """A check as :meth:`to_dict` wrote it (``eval.judge``, ``eval.reward_model``); None when there is none."""
        if not data:
            return None
        held = Proportion.of(data.get("heldout_accuracy"), data.get("heldout_count"))
        contrast = None
        if "contrast_count" in data:
            ranked = Proportion.of(data.get("contrast_accuracy"), data.get("contrast_count"))
            contrast = cls(ranked.k, ranked.n) if ranked is not None else cls(0, 0)
        return cls(held.k if held else 0, held.n if held else 0, contrast, data.get("note") or "")


@dataclass
class WinRate:
    """The policy's answers against the original model's, prompt by prompt, as one judge read them.

    Each row of ``per_prompt``: ``prompt``, ``winner`` (``policy``, ``original`` or ``tie``), ``margin``, ``set``
    (``heldout`` or ``eval``), and while judging each answer's words (``words_original``, ``words_policy``)."""

    source: str
    measures: str
    check: JudgeCheck
    per_prompt: list[dict[str, Any]] = field(default_factory=list)
    mean_words_original: float = NAN
    mean_words_policy: float = NAN
    length_shift: float | None = None
    """Among the prompts the policy won, how much longer its answers were than the original's (a share)."""

    @property
    def wins(self) -> int:
        return sum(r["winner"] == "policy" for r in self.per_prompt)

    @property
    def losses(self) -> int:
        return sum(r["winner"] == "original" for r in self.per_prompt)

    @property
    def ties(self) -> int:
        return sum(r["winner"] == "tie" for r in self.per_prompt)

    @property
    def count(self) -> int:
        return len(self.per_prompt)

    @property
    def eval_count(self) -> int:
        """The eval prompts judged besides the held-out ones (a reward-model judge's)."""
        return sum(r.get("set") == "eval" for r in self.per_prompt)

    @property
    def rate(self) -> float:
        """The share the policy wins, ties counting half."""
        return (self.wins + self.ties / 2) / self.count if self.count else NAN

    @property
    def interval(self) -> list[float] | None:
        interval = wilson_interval(self.wins + self.ties / 2, self.count) if self.count else None
        return list(interval) if interval else None

    @property
    def p_value(self) -> float:
        """One-sided sign test against 50%, ties left out: how often a coin gives the policy this many wins."""
        return binomial_tail(self.wins, self.wins + self.losses)

    @property
    def p_value_behind(self) -> float:
        """The same test the other way: how often a coin gives the original model this many wins."""
        return binomial_tail(self.losses, self.wins + self.losses)

    def to_dict(self) -> dict[str, Any]:
        """The report's ``eval`` fields of the win rate."""
        return {
            "judge": {"source": self.source, "measures": self.measures, **self.check.to_dict()},
            "win_rate": self.rate,
            "win_count": self.count,
            "win_interval": self.interval,
            "win_p_value": self.p_value if self.count else None,
            "win_p_value_behind": self.p_value_behind if self.count else None,
            "wins": self.wins,
            "win_losses": self.losses,
            "win_ties": self.ties,
            "win_per_prompt": [{k: r[k] for k in ("prompt", "winner", "margin", "set")} for r in self.per_prompt],
            "win_eval_count": self.eval_count,
            "win_length_shift": self.length_shift,
            "mean_words_original": self.mean_words_original,
            "mean_words_policy": self.mean_words_policy,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WinRate | None:
        """The win rate of a report's ``eval`` block (None where nothing was judged)."""
        if "win_count" not in data and "judge" not in data:
            return None
        judge = data.get("judge") or {}
        return cls(
            judge.get("source", "?"),
            judge.get("measures", "?"),
            JudgeCheck.from_dict(judge) or JudgeCheck(0, 0),
            [dict(row) for row in data.get("win_per_prompt") or []],
            mean_words_original=_number(data.get("mean_words_original")),
            mean_words_policy=_number(data.get("mean_words_policy")),
            length_shift=finite(data.get("win_length_shift")),
        )


# --------------------------------------------------------------------------- the live curve


@dataclass
class CurvePoint:
    """One point of the live held-out curve (``eval.heldout_curve``): the held-out and contrast pairs scored after
    a step, each as accuracy, count and interval, mean margin and interval."""

    step: int
    accuracy: float | None = None
    count: int | None = None
    accuracy_interval: list[float] | None = None
    margin: float | None = None
    margin_interval: list[float] | None = None
    contrast_accuracy: float | None = None
    contrast_count: int | None = None
    contrast_accuracy_interval: list[float] | None = None
    contrast_margin: float | None = None
    contrast_margin_interval: list[float] | None = None

    @classmethod
    def of(cls, step: int, heldout: Ranking, contrast: Ranking) -> CurvePoint:
        """The point of ``step`` from the held-out and contrast pairs' rankings then."""
        return cls(
            step,
            heldout.accuracy,
            heldout.count,
            heldout.accuracy_interval,
            heldout.mean_margin,
            heldout.margin_interval,
            contrast.accuracy,
            contrast.count,
            contrast.accuracy_interval,
            contrast.mean_margin,
            contrast.margin_interval,
        )

    @property
    def heldout(self) -> Proportion | None:
        return Proportion.of(self.accuracy, self.count)

    @property
    def contrast(self) -> Proportion | None:
        return Proportion.of(self.contrast_accuracy, self.contrast_count)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CurvePoint:
        names = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})


def curve_of(points: list[dict[str, Any]] | None) -> list[CurvePoint]:
    """A curve kept as plain data (a training run's ``heldout_curve``, a report's) as its points."""
    return [CurvePoint.from_dict(point) for point in points or []]


# --------------------------------------------------------------------------- the whole evidence


@dataclass
class Evidence:
    """Every figure of the report's ``eval`` block (``docs/architecture.md``), grouped by what belongs together."""

    heldout: Ranking = field(default_factory=Ranking)
    """Held-out pairs, never trained on, ranked by the method's score (:attr:`scorer`)."""
    heldout_before: Ranking = field(default_factory=Ranking)
    """The original model's ranking of them under the same score (reference-free scorers; else empty)."""
    gain: Gain | None = None
    """Each held-out margin against the original model's (None without held-out pairs)."""
    contrast: Ranking = field(default_factory=Ranking)
    """Contrast pairs (the training answers' cue on the worse answer), ranked by the same score."""
    contrast_before: Ranking = field(default_factory=Ranking)
    capability: Capability = field(default_factory=Capability)
    drift: Drift = field(default_factory=Drift)
    scorer: str = ""
    """Which score ranked held-out and contrast pairs (a key of :data:`alignlab.registry.methods.SCORERS`; empty: not
    said)."""
    scorer_text: str = ""
    checked: CheckedQuestions | None = None
    win: WinRate | None = None
    """The win rate against the original model and its judge (None without held-out prompts)."""
    reward_model: JudgeCheck | None = None
    """A method that trains a reward model: how that model ranks held-out and contrast pairs; None for the others."""
    training: Proportion | None = None
    """The training reward accuracy over the last half of the steps (None where the method logs none)."""
    curve: list[CurvePoint] = field(default_factory=list)
    degeneration: Degeneration | None = None
    heldout_unavailable: str | None = None
    """Why held-out accuracy is missing, when it is."""
    answer_surprise: tuple[list[float], list[float]] | None = None
    """The original model's surprise at each eval answer before and after training; the report carries it in
    ``eval.degeneration``."""

    def to_dict(self) -> dict[str, Any]:
        """The report's ``eval`` block, key for key and in its order."""
        return {
            **self._headline(),
            **self._per_pair(),
            **self._counts(),
            **self._checked(),
            **self._judged(),
            **self._training(),
        }

    def _headline(self) -> dict[str, Any]:
        held, contrast, capability = self.heldout, self.contrast, self.capability
        return {
            "heldout_reward_accuracy": held.accuracy,
            "heldout_mean_margin": held.mean_margin,
            "kl_to_reference": self.drift.kl,
            "perplexity_before": self.drift.perplexity_before,
            "perplexity_after": self.drift.perplexity_after,
            "heldout_scorer": self.scorer,
            "heldout_scorer_text": self.scorer_text,
            "heldout_reward_accuracy_before": self.heldout_before.accuracy,
            "contrast_accuracy_before": self.contrast_before.accuracy,
            "contrast_accuracy": contrast.accuracy,
            "contrast_mean_margin": contrast.mean_margin,
            "capability_accuracy_before": capability.before.accuracy,
            "capability_accuracy_after": capability.after.accuracy,
            "capability_margin_before": capability.before.mean_margin,
            "capability_margin_after": capability.after.mean_margin,
            "capability_source": capability.source,
            "capability_pairs": capability.pairs,
        }

    def _per_pair(self) -> dict[str, Any]:
        return {
            "heldout_chosen_rewards": list(self.heldout.chosen),
            "heldout_rejected_rewards": list(self.heldout.rejected),
            "heldout_margins": list(self.heldout.margins),
            "contrast_margins": list(self.contrast.margins),
        }

    def _counts(self) -> dict[str, Any]:
        held, contrast, capability = self.heldout, self.contrast, self.capability
        return {
            "heldout_count": held.count,
            "heldout_accuracy_interval": held.accuracy_interval,
            "heldout_p_value": held.p_value,
            "heldout_margin_interval": held.margin_interval,
            "heldout_margins_before": list(self.heldout_before.margins),
            "heldout_gain": self.gain.to_dict() if self.gain is not None else {},
            "contrast_count": contrast.count,
            "contrast_accuracy_interval": contrast.accuracy_interval,
            "contrast_p_value": contrast.p_value,
            "contrast_margin_interval": contrast.margin_interval,
            "capability_count": capability.after.count,
            "capability_accuracy_interval_before": capability.before.accuracy_interval,
            "capability_accuracy_interval_after": capability.after.accuracy_interval,
        }

    def _checked(self) -> dict[str, Any]:
        checked = self.checked
        if checked is None:
            before = after = None
        else:
            before, after = checked.before, checked.after
        return {
            "checked_capability_before": before.value if before else NAN,
            "checked_capability_after": after.value if after else NAN,
            "checked_capability_count": checked.count if checked else 0,
            "checked_capability_interval_before": list(before.interval) if before else None,
            "checked_capability_interval_after": list(after.interval) if after else None,
            "checked_capability_lost": checked.lost if checked else 0,
            "checked_capability_answers": [dict(row) for row in checked.answers] if checked else [],
        }

    def _judged(self) -> dict[str, Any]:
        """The reward model's check, and the win rate's fields, which the report also keeps whole as ``judged``."""
        reward_model = self.reward_model.to_dict() if self.reward_model is not None else None
        if reward_model is not None:
            del reward_model["usable"]  # the run's own reward model is read, never chosen or refused as a judge
        if self.win is None:
            return {"judged": {}, "reward_model": reward_model}
        return {"judged": self.win.to_dict(), "reward_model": reward_model, **self.win.to_dict()}

    def _training(self) -> dict[str, Any]:
        training = self.training
        return {
            "training_accuracy": training.value if training else None,
            "training_accuracy_count": training.n if training else 0,
            "training_accuracy_interval": list(training.interval) if training else None,
            "heldout_curve": [point.to_dict() for point in self.curve],
            "degeneration": self.degeneration.to_dict() if self.degeneration is not None else None,
            "heldout_unavailable": self.heldout_unavailable,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Evidence:
        """A report's ``eval`` block read back: the one parser of it (the CLI, the app, the model card)."""
        return cls(
            heldout=Ranking(
                _number(data.get("heldout_reward_accuracy")),
                _count(data, "heldout_count", "heldout_margins"),
                _number(data.get("heldout_mean_margin")),
                list(data.get("heldout_margins") or []),
                list(data.get("heldout_chosen_rewards") or []),
                list(data.get("heldout_rejected_rewards") or []),
            ),
            heldout_before=Ranking(
                _number(data.get("heldout_reward_accuracy_before")),
                margins=list(data.get("heldout_margins_before") or []),
            ),
            gain=Gain.from_dict(data.get("heldout_gain")),
            contrast=Ranking(
                _number(data.get("contrast_accuracy")),
                _count(data, "contrast_count", "contrast_margins"),
                _number(data.get("contrast_mean_margin")),
                list(data.get("contrast_margins") or []),
            ),
            contrast_before=Ranking(_number(data.get("contrast_accuracy_before"))),
            capability=_capability(data),
            drift=Drift(
                _number(data.get("kl_to_reference")),
                _number(data.get("perplexity_before")),
                _number(data.get("perplexity_after")),
            ),
            scorer=data.get("heldout_scorer") or "",
            scorer_text=data.get("heldout_scorer_text") or "",
            checked=_checked(data),
            win=WinRate.from_dict(data),
            reward_model=JudgeCheck.from_dict(data.get("reward_model")),
            training=Proportion.of(data.get("training_accuracy"), data.get("training_accuracy_count")),
            curve=curve_of(data.get("heldout_curve")),
            degeneration=Degeneration.from_dict(data.get("degeneration")),
            heldout_unavailable=data.get("heldout_unavailable"),
        )


def _count(data: dict[str, Any], key: str, fallback: str) -> int:
    """A set's count, or where an older report has none, the length of what counts it (its margins, its pairs)."""
    count = data.get(key)
    if count is None:
        older = data.get(fallback)
        count = len(older) if isinstance(older, list) else older
    try:
        return int(count or 0)
    except (TypeError, ValueError):
        return 0


def _capability(data: dict[str, Any]) -> Capability:
    count = _count(data, "capability_count", "capability_pairs")

    def at(when: str) -> Ranking:
        accuracy, margin = data.get(f"capability_accuracy_{when}"), data.get(f"capability_margin_{when}")
        return Ranking(_number(accuracy), count, _number(margin))

    return Capability(
        before=at("before"),
        after=at("after"),
        source=data.get("capability_source") or "preset",
        pairs=int(data.get("capability_pairs") or 0),
    )


def _checked(data: dict[str, Any]) -> CheckedQuestions | None:
    count = data.get("checked_capability_count")
    before = Proportion.of(data.get("checked_capability_before"), count)
    after = Proportion.of(data.get("checked_capability_after"), count)
    if before is None or after is None:
        return None
    answers = [dict(row) for row in data.get("checked_capability_answers") or []]
    return CheckedQuestions(before, after, int(data.get("checked_capability_lost") or 0), answers)
