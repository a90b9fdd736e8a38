"""Held-out, contrast and capability pairs scored: does the policy rank answers the way the pairs say?

:class:`PreferenceProbe` scores its sets in one pass per model, the reference's once per process
(:data:`alignlab.models.logprobs.REFERENCE_SCORES`). The method's held-out scorer (:data:`SCORER_FUNCTIONS`) ranks
held-out and contrast pairs: DPO's implicit reward ``beta * (log pi_theta - log pi_ref)`` for methods with a
reference, IPO's per answer token, the policy's mean log-probability per answer token for reference-free ones
(SimPO, ORPO). The policy's own log-probability ranks capability pairs (before: the reference's; after: the
policy's). After every logged step the live curve (:meth:`PreferenceProbe.curve_point`) scores the held-out
and contrast pairs, and the final evidence on the same policy reuses its last scores.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import torch

from alignlab.data.pairs import PreferencePair
from alignlab.evidence.figures import CurvePoint, Ranking
from alignlab.models import logprobs
from alignlab.models.loading import LoadedModel
from alignlab.models.logprobs import REFERENCE_SCORES, answer_tokens
from alignlab.registry.methods import RELATIVE_SCORERS, Scorer
from alignlab.registry.settings import LIVE_PROBE_PAIRS


def implicit_rewards(policy_logps: torch.Tensor, reference_logps: torch.Tensor, beta: float) -> torch.Tensor:
    """DPO's implicit reward ``beta * (log pi_theta - log pi_ref)``."""
    return beta * (policy_logps - reference_logps)


def mean_implicit_rewards(
    policy_logps: torch.Tensor, reference_logps: torch.Tensor, answer_tokens: torch.Tensor, beta: float
) -> torch.Tensor:
    """IPO's reward as TRL's IPO loss measures it: the implicit reward per answer token."""
    return beta * (policy_logps - reference_logps) / answer_tokens.clamp(min=1)


def mean_logprob_rewards(policy_logps: torch.Tensor, answer_tokens: torch.Tensor, beta: float) -> torch.Tensor:
    """SimPO's reward ``beta * log pi_theta(y|x) / |y|``: the policy's mean log-probability per answer token."""
    return beta * policy_logps / answer_tokens.clamp(min=1)


#: Held-out scorers (see :data:`alignlab.registry.methods.SCORERS`): (policy log-probs, reference log-probs, answer
#: tokens, beta) -> each answer's reward. A reference-free scorer ignores the reference's log-probs.
SCORER_FUNCTIONS = {
    Scorer.IMPLICIT_REWARD: lambda policy, reference, tokens, beta: implicit_rewards(policy, reference, beta),
    Scorer.MEAN_IMPLICIT_REWARD: lambda policy, reference, tokens, beta: mean_implicit_rewards(
        policy, reference, tokens, beta
    ),
    Scorer.MEAN_LOGPROB: lambda policy, reference, tokens, beta: mean_logprob_rewards(policy, tokens, beta),
}


def preference_accuracy(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> tuple[float, float]:
    """(fraction of pairs where chosen strictly beats rejected, mean margin chosen - rejected)."""
    if len(chosen_rewards) == 0:
        return float("nan"), float("nan")
    margins = chosen_rewards - rejected_rewards
    return float((margins > 0).float().mean()), float(margins.mean())


# --------------------------------------------------------------------------- probes


@dataclass
class PairScores:
    """One probe set's result: accuracy, mean margin and each pair's chosen and rejected score."""

    accuracy: float
    mean_margin: float
    chosen: list[float] = field(default_factory=list)
    rejected: list[float] = field(default_factory=list)

    @property
    def margins(self) -> list[float]:
        return [c - r for c, r in zip(self.chosen, self.rejected)]

    @property
    def count(self) -> int:
        return len(self.chosen)

    def ranking(self) -> Ranking:
        """These scores as evidence: accuracy and count (with their interval and test), margins."""
        return Ranking(
            self.accuracy, self.count, self.mean_margin, self.margins, list(self.chosen), list(self.rejected)
        )

    @classmethod
    def empty(cls) -> PairScores:
        return cls(float("nan"), float("nan"))

    @classmethod
    def from_scores(cls, chosen: torch.Tensor, rejected: torch.Tensor) -> PairScores:
        accuracy, margin = preference_accuracy(chosen, rejected)
        return cls(accuracy, margin, chosen.tolist(), rejected.tolist())


#: The probe sets, and those the live curve scores after each step.
PROBE_SETS = ("heldout", "contrast", "capability")
LIVE_SETS = ("heldout", "contrast")


class PreferenceProbe:
    """Held-out, contrast and capability pairs, scored in one pass per model.

    ``scorer`` (a key of :data:`SCORER_FUNCTIONS`, the method's ``scorer``) ranks held-out and contrast
    pairs. A reference-free scorer also ranks them with the reference (``before``), since the policy's
    own ranking includes what the original model already preferred.

    The reference (``loaded.model``, never trained) is scored when the probe is built, through
    :data:`REFERENCE_SCORES` (so only pairs it has never scored in this process cost a pass). The
    live curve (:meth:`curve_point`) scores the policy on the held-out and contrast pairs (at most
    :data:`LIVE_PROBE_PAIRS` of each) after every logged step and keeps those scores, so that the
    final evidence on the same policy (:meth:`score` with ``reuse_step``) pays only for the
    capability pairs.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        beta: float,
        heldout: list[PreferencePair],
        contrast: list[PreferencePair] | None = None,
        capability: list[PreferencePair] | None = None,
        scorer: str = Scorer.IMPLICIT_REWARD,
    ) -> None:
        self.loaded = loaded
        self.beta = beta
        if scorer not in SCORER_FUNCTIONS:
            raise ValueError(f"Unknown held-out scorer {scorer!r}; known: {', '.join(SCORER_FUNCTIONS)}.")
        self.scorer = scorer
        self.sets = {"heldout": list(heldout), "contrast": list(contrast or []), "capability": list(capability or [])}
        self.tokens = {
            name: (
                answer_tokens(loaded, [p.prompt for p in pairs], [p.chosen for p in pairs]),
                answer_tokens(loaded, [p.prompt for p in pairs], [p.rejected for p in pairs]),
            )
            for name, pairs in self.sets.items()
            if name in LIVE_SETS
        }
        self.reference = self._pass(
            loaded.model, {name: len(pairs) for name, pairs in self.sets.items()}, score_rows=REFERENCE_SCORES.logps
        )
        self.last_step: int | None = None
        self._last: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def reference_logps(self) -> torch.Tensor:
        """Every set's reference log-probs, chosen then rejected, set by set (for tests and tools)."""
        parts = [t for name in PROBE_SETS for t in self.reference[name]]
        return torch.cat(parts) if parts else torch.zeros(0)

    def _pass(
        self, model: torch.nn.Module, sizes: dict[str, int], score_rows: Any = None
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """One scoring pass over the first ``sizes[name]`` pairs of each named set: (chosen, rejected) log-probs.

        ``score_rows``: how rows are scored (default :func:`sequence_logps`; the reference goes through
        :data:`REFERENCE_SCORES`, which scores only the rows it has not seen).
        """
        prompts: list[str] = []
        completions: list[str] = []
        for name, n in sizes.items():
            pairs = self.sets[name][:n]
            prompts += [p.prompt for p in pairs] * 2
            completions += [p.chosen for p in pairs] + [p.rejected for p in pairs]
        score = score_rows or logprobs.sequence_logps  # looked up here, so that a test can count the calls
        logps = score(model, self.loaded, prompts, completions) if prompts else torch.zeros(0)
        out, start = {}, 0
        for name, n in sizes.items():
            n = min(n, len(self.sets[name]))
            out[name] = (logps[start : start + n], logps[start + n : start + 2 * n])
            start += 2 * n
        return out

    def _rank(self, name: str, pc: torch.Tensor, pr: torch.Tensor) -> PairScores:
        """Set ``name``'s first ``len(pc)`` pairs ranked by the scorer, from their (chosen, rejected) log-probs."""
        n = len(pc)
        rc, rr = (t[:n] for t in self.reference[name])
        tc, tr = (t[:n] for t in self.tokens[name])
        reward = SCORER_FUNCTIONS[self.scorer]
        return PairScores.from_scores(reward(pc, rc, tc, self.beta), reward(pr, rr, tr, self.beta))

    @property
    def relative(self) -> bool:
        """Whether the scorer is relative to the reference (then the reference itself scores every margin 0)."""
        return self.scorer in RELATIVE_SCORERS

    def before(self) -> dict[str, PairScores]:
        """Held-out and contrast pairs ranked by the reference under the same scorer (reference-free scorers
        only: a relative scorer gives the reference a margin of 0 on every pair, so there is nothing to say)."""
        if self.relative:
            return {name: PairScores.empty() for name in LIVE_SETS}
        return {
            name: self._rank(name, *self.reference[name]) if len(self.sets[name]) else PairScores.empty()
            for name in LIVE_SETS
        }

    def _scores(self, logps: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, PairScores]:
        scores: dict[str, PairScores] = {}
        for name in LIVE_SETS:
            if name not in logps or not len(logps[name][0]):
                scores[name] = PairScores.empty()
                continue
            scores[name] = self._rank(name, *logps[name])
        for tag, source in (("capability_before", self.reference), ("capability_after", logps)):
            chosen, rejected = source.get("capability", (torch.zeros(0), torch.zeros(0)))
            scores[tag] = PairScores.from_scores(chosen, rejected) if len(chosen) else PairScores.empty()
        return scores

    def score(self, policy: torch.nn.Module, reuse_step: int | None = None) -> dict[str, PairScores]:
        """Held-out and contrast under the implicit reward; capability before (reference) and after (policy).

        ``reuse_step``: the policy is the one the live curve scored at that step (the run's last), so its
        held-out and contrast scores are reused where the curve covered the whole set.
        """
        reusable = {
            name: logps
            for name, logps in self._last.items()
            if reuse_step is not None and reuse_step == self.last_step and len(logps[0]) == len(self.sets[name])
        }
        todo = {name: len(pairs) for name, pairs in self.sets.items() if name not in reusable}
        return self._scores({**self._pass(policy, todo), **reusable})

    def last_scores(self) -> dict[str, Any] | None:
        """The live curve's last scores as plain data, for a compare step in another call or process (the app's
        compare job loads the saved policy; scoring it again cost about 3 s a run on the embedded model).

        Only sets the curve scored whole are kept, each with a digest of its pairs; ``None`` before any step.
        """
        if self.last_step is None:
            return None
        sets = {
            name: {"pairs": _pairs_digest(self.sets[name]), "chosen": chosen.tolist(), "rejected": rejected.tolist()}
            for name, (chosen, rejected) in self._last.items()
            if len(chosen) == len(self.sets[name])
        }
        return {"step": self.last_step, "sets": sets}

    def reuse_scores(self, saved: dict[str, Any] | None) -> bool:
        """Take :meth:`last_scores` of a probe on the same policy; a set whose pairs differ is scored afresh.

        Returns whether any set was taken. :meth:`score` reuses them when called with ``reuse_step`` equal to
        the saved step (the policy the curve last scored).
        """
        if not saved or saved.get("step") is None:
            return False
        taken = {}
        for name, entry in (saved.get("sets") or {}).items():
            pairs = self.sets.get(name)
            if not pairs or name not in LIVE_SETS or entry.get("pairs") != _pairs_digest(pairs):
                continue
            chosen, rejected = entry.get("chosen") or [], entry.get("rejected") or []
            if len(chosen) == len(rejected) == len(pairs):
                taken[name] = (torch.tensor(chosen, dtype=torch.float32), torch.tensor(rejected, dtype=torch.float32))
        if taken:
            self._last, self.last_step = taken, int(saved["step"])
        return bool(taken)

    def curve_point(self, policy: torch.nn.Module, step: int) -> dict[str, Any]:
        """One point of the live held-out curve (``eval.heldout_curve``)."""
        self._last = self._pass(policy, {name: min(len(self.sets[name]), LIVE_PROBE_PAIRS) for name in LIVE_SETS})
        self.last_step = step
        scores = self._scores(self._last)
        return CurvePoint.of(step, scores["heldout"].ranking(), scores["contrast"].ranking()).to_dict()


def _pairs_digest(pairs: list[PreferencePair]) -> str:
    """Which pairs, in which order: a probe's saved scores apply only to the very same pairs."""
    text = json.dumps([[p.prompt, p.chosen, p.rejected] for p in pairs], ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def live_probe(
    loaded: LoadedModel,
    beta: float,
    heldout: list[PreferencePair],
    contrast: list[PreferencePair] | None = None,
    scorer: str = Scorer.IMPLICIT_REWARD,
) -> PreferenceProbe | None:
    """The probe the live curve runs after each step (no capability set: the Compare step scores it)."""
    if not heldout and not contrast:
        return None
    return PreferenceProbe(loaded, beta, heldout, contrast, scorer=scorer)
