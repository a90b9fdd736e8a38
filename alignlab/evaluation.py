"""Before/after evidence that a DPO run changed the model, and what it cost.

Everything here is computed from the models and TRL's log history, nothing is assumed:

- :func:`count_changed`: eval prompts whose greedy answer differs after training;
- :func:`heldout_preference`: on pairs never trained on, DPO's implicit reward
  ``r(x, y) = beta * (log pi_theta(y|x) - log pi_ref(y|x))`` of ``chosen`` vs ``rejected``;
- :func:`mean_token_kl`: KL(pi_theta || pi_ref) per completion token on the eval answers, and
  :func:`perplexity` on a fixed neutral text -- the *alignment tax*;
- :func:`read_health`: a reading of ``log_history`` that tells a healthy run from alignment theater.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from alignlab.models import LoadedModel
from alignlab.presets import PreferencePair

#: A neutral paragraph, unrelated to any preset, on which the policy's perplexity is measured
#: before and after training: if it rises a lot, the run damaged general language ability.
NEUTRAL_TEXT = (
    "The river rises in the hills to the north of the town and flows south through farmland "
    "before it reaches the sea. In spring the water is high and fast, and in late summer it is "
    "slow and shallow enough to cross on foot. The old stone bridge near the market was built "
    "more than two hundred years ago and is still used by people walking into town every day."
)

# Health thresholds (documented in each finding's wording).
CHANCE_BAND = (0.4, 0.6)
FLAT_MARGIN = 0.05
GRAD_NORM_LIMIT = 100.0
HEAVY_KL = 0.5  # nats per token
HEAVY_PPL_RATIO = 1.5
DISPLACEMENT_DROP = 1.0  # nats of summed log-prob below the reference, per chosen answer


# --------------------------------------------------------------------------- log-probs


def _encode_pair(loaded: LoadedModel, prompt: str, completion: str) -> tuple[list[int], int]:
    """Token ids of prompt+completion, as TRL builds them, and where the completion starts."""
    tok = loaded.tokenizer
    special = not loaded.is_chat  # the chat template already carries its special tokens
    prompt_text = loaded.format_prompt(prompt)
    prompt_ids = tok(prompt_text, add_special_tokens=special)["input_ids"]
    full_ids = tok(prompt_text + loaded.format_completion(completion), add_special_tokens=special)["input_ids"]
    start = 0
    while start < min(len(prompt_ids), len(full_ids)) and prompt_ids[start] == full_ids[start]:
        start += 1
    return full_ids, max(start, 1)  # the first token has no prediction to score


def _batched_logits(
    model: torch.nn.Module, sequences: list[list[int]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded forward pass: (logits (B, T, V), attention mask (B, T))."""
    device = next(model.parameters()).device
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, seq in enumerate(sequences):
        ids[i, : len(seq)] = torch.tensor(seq)
        mask[i, : len(seq)] = 1
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
    return logits, mask.to(device)


@torch.inference_mode()
def completion_logps(
    model: torch.nn.Module,
    loaded: LoadedModel,
    prompts: list[str],
    completions: list[str],
    batch_size: int = 8,
) -> torch.Tensor:
    """Summed log pi(completion | prompt) for each row, shape (N,)."""
    model.eval()
    pad_id = loaded.tokenizer.pad_token_id
    out = []
    for start in range(0, len(prompts), batch_size):
        encoded = [
            _encode_pair(loaded, p, c)
            for p, c in zip(prompts[start : start + batch_size], completions[start : start + batch_size])
        ]
        logits, _ = _batched_logits(model, [ids for ids, _ in encoded], pad_id)
        logps = F.log_softmax(logits[:, :-1], dim=-1)  # (B, T-1, V): position t predicts token t+1
        for i, (ids, begin) in enumerate(encoded):
            targets = torch.tensor(ids[begin:], device=logps.device)
            rows = logps[i, begin - 1 : len(ids) - 1]
            out.append(rows.gather(-1, targets[:, None]).sum())
    return torch.stack(out).cpu() if out else torch.zeros(0)


def implicit_rewards(policy_logps: torch.Tensor, reference_logps: torch.Tensor, beta: float) -> torch.Tensor:
    """DPO's implicit reward ``beta * (log pi_theta - log pi_ref)``."""
    return beta * (policy_logps - reference_logps)


def preference_accuracy(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> tuple[float, float]:
    """(fraction of pairs where chosen strictly beats rejected, mean margin chosen - rejected)."""
    if len(chosen_rewards) == 0:
        return float("nan"), float("nan")
    margins = chosen_rewards - rejected_rewards
    return float((margins > 0).float().mean()), float(margins.mean())


@dataclass
class HeldoutResult:
    accuracy: float
    mean_margin: float
    chosen_rewards: list[float]
    rejected_rewards: list[float]


def heldout_preference(
    policy: torch.nn.Module, reference: torch.nn.Module, loaded: LoadedModel, pairs: list[PreferencePair], beta: float
) -> HeldoutResult:
    """Held-out preference accuracy and mean margin under DPO's implicit reward."""
    prompts = [p.prompt for p in pairs]
    chosen, rejected = [p.chosen for p in pairs], [p.rejected for p in pairs]
    r_chosen = implicit_rewards(
        completion_logps(policy, loaded, prompts, chosen), completion_logps(reference, loaded, prompts, chosen), beta
    )
    r_rejected = implicit_rewards(
        completion_logps(policy, loaded, prompts, rejected),
        completion_logps(reference, loaded, prompts, rejected),
        beta,
    )
    accuracy, margin = preference_accuracy(r_chosen, r_rejected)
    return HeldoutResult(accuracy, margin, r_chosen.tolist(), r_rejected.tolist())


@torch.inference_mode()
def mean_token_kl(
    policy: torch.nn.Module, reference: torch.nn.Module, loaded: LoadedModel, prompts: list[str], completions: list[str]
) -> float:
    """Mean over completion tokens of KL(pi_theta || pi_ref) over the whole vocabulary, in nats."""
    policy.eval()
    reference.eval()
    encoded = [_encode_pair(loaded, p, c) for p, c in zip(prompts, completions)]
    if not encoded:
        return float("nan")
    pad_id = loaded.tokenizer.pad_token_id
    total, count = 0.0, 0
    for start in range(0, len(encoded), 8):
        chunk = encoded[start : start + 8]
        seqs = [ids for ids, _ in chunk]
        logp_policy = F.log_softmax(_batched_logits(policy, seqs, pad_id)[0][:, :-1], dim=-1)
        logp_ref = F.log_softmax(_batched_logits(reference, seqs, pad_id)[0][:, :-1], dim=-1)
        kl = (logp_policy.exp() * (logp_policy - logp_ref)).sum(-1)  # (B, T-1)
        for i, (ids, begin) in enumerate(chunk):
            positions = kl[i, begin - 1 : len(ids) - 1]
            total += float(positions.sum())
            count += positions.numel()
    return total / count if count else float("nan")


@torch.inference_mode()
def perplexity(model: torch.nn.Module, loaded: LoadedModel, text: str = NEUTRAL_TEXT) -> float:
    """exp(mean negative log-likelihood per token) of ``text``."""
    model.eval()
    ids = loaded.tokenizer(text, return_tensors="pt")["input_ids"].to(next(model.parameters()).device)
    loss = model(input_ids=ids, labels=ids).loss
    return float(torch.exp(loss.float()))


def count_changed(before: list[str], after: list[str]) -> int:
    """How many eval prompts' answers differ (whitespace at the ends ignored)."""
    return sum(a.strip() != b.strip() for a, b in zip(before, after))


# --------------------------------------------------------------------------- evidence


@dataclass
class Evidence:
    """The report's ``eval`` block (DESIGN.md §6)."""

    heldout_reward_accuracy: float
    heldout_mean_margin: float
    kl_to_reference: float
    perplexity_before: float
    perplexity_after: float
    heldout_chosen_rewards: list[float] = field(default_factory=list)
    heldout_rejected_rewards: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def gather_evidence(
    policy: torch.nn.Module,
    loaded: LoadedModel,
    heldout_pairs: list[PreferencePair],
    eval_prompts: list[str],
    aligned_outputs: list[str],
    beta: float,
) -> Evidence:
    """All numeric evidence; ``loaded.model`` is the untouched reference."""
    reference = loaded.model
    if heldout_pairs:
        held = heldout_preference(policy, reference, loaded, heldout_pairs, beta)
    else:
        held = HeldoutResult(float("nan"), float("nan"), [], [])
    return Evidence(
        heldout_reward_accuracy=held.accuracy,
        heldout_mean_margin=held.mean_margin,
        kl_to_reference=mean_token_kl(policy, reference, loaded, eval_prompts, aligned_outputs),
        perplexity_before=perplexity(reference, loaded),
        perplexity_after=perplexity(policy, loaded),
        heldout_chosen_rewards=held.chosen_rewards,
        heldout_rejected_rewards=held.rejected_rewards,
    )


# --------------------------------------------------------------------------- health


@dataclass
class Health:
    """``verdict`` is 'healthy', 'warning' or 'failed'; ``findings`` are plain sentences."""

    verdict: str
    findings: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "findings": list(self.findings)}


def _series(rows: list[dict[str, Any]], key: str) -> list[float]:
    return [float(r[key]) for r in rows if key in r and r[key] is not None]


def _tail_mean(values: list[float]) -> float:
    tail = values[len(values) // 2 :] or values
    return sum(tail) / len(tail) if tail else float("nan")


def read_health(
    log_history: list[dict[str, Any]],
    heldout_accuracy: float | None = None,
    changed: int | None = None,
    kl_to_reference: float | None = None,
    perplexity_before: float | None = None,
    perplexity_after: float | None = None,
    *,
    beta: float,
) -> Health:
    """Read a run's log history (and the evidence, when given) into a verdict and findings.

    ``beta`` is the run's: TRL logs rewards as beta x log-ratio, and the displacement rule reads nats.
    """
    rows = [r for r in log_history if "loss" in r]
    if not rows:
        return Health("failed", ["No training step was logged: the run did not train."])
    failed: list[str] = []
    warnings: list[str] = []
    good: list[str] = []

    losses = _series(rows, "loss")
    if any(not math.isfinite(v) for v in losses):
        step = next(r.get("step", "?") for r in rows if not math.isfinite(float(r["loss"])))
        failed.append(f"Instability: the loss became NaN or infinite at step {step}; lower the learning rate.")
    grads = [g for g in _series(rows, "grad_norm")]
    if any(not math.isfinite(g) or g > GRAD_NORM_LIMIT for g in grads):
        worst = max((g if math.isfinite(g) else float("inf")) for g in grads)
        warnings.append(
            f"Instability: the gradient norm reached {worst:.3g} (above {GRAD_NORM_LIMIT:g}); "
            "the updates are exploding, lower the learning rate."
        )

    accuracies = _series(rows, "rewards/accuracies")
    margins = _series(rows, "rewards/margins")
    train_accuracy = _tail_mean(accuracies)
    if accuracies and margins:
        margin_gain = _tail_mean(margins) - margins[0]
        if CHANCE_BAND[0] <= train_accuracy <= CHANCE_BAND[1] and abs(margin_gain) < FLAT_MARGIN:
            failed.append(
                f"No learning signal: reward accuracy stayed near chance ({train_accuracy:.2f}) and the margin "
                f"moved by only {margin_gain:+.3f}; raise the learning rate or the number of steps."
            )
        elif margin_gain > 0:
            good.append(
                f"Learning signal: the reward margin grew from {margins[0]:+.3f} to {margins[-1]:+.3f} and "
                f"the training reward accuracy reached {train_accuracy:.2f}."
            )

    if heldout_accuracy is not None and math.isfinite(heldout_accuracy):
        if train_accuracy >= 0.99 and heldout_accuracy <= CHANCE_BAND[1]:
            warnings.append(
                f"Memorised, not generalised: training pairs are all ranked right (accuracy {train_accuracy:.2f}) "
                f"but held-out pairs only {heldout_accuracy:.2f}, near chance."
            )
        elif heldout_accuracy <= CHANCE_BAND[1]:
            warnings.append(
                f"No generalisation: only {heldout_accuracy:.0%} of held-out pairs are ranked right, about chance; "
                "the preference was not learnt beyond the training pairs (train longer, or check the pairs agree)."
            )
        else:
            good.append(f"Generalises: {heldout_accuracy:.0%} of held-out pairs, never trained on, are ranked right.")

    # Rewards are beta x (policy - reference) log-probability on the step's own pairs, so they compare
    # like with like; raw ``logps/*`` move with which pairs a batch drew (short or long answers).
    chosen_rewards, rejected_rewards = _series(rows, "rewards/chosen"), _series(rows, "rewards/rejected")
    if len(chosen_rewards) >= 2 and len(rejected_rewards) >= 2:
        chosen_drop = -_tail_mean(chosen_rewards) / beta
        rejected_drop = -_tail_mean(rejected_rewards) / beta
        if chosen_drop > DISPLACEMENT_DROP and rejected_drop > 0:
            warnings.append(
                f"Likelihood displacement: the chosen answers' log-probability fell {chosen_drop:.2f} nats below "
                f"the reference's, along with the rejected ones' ({rejected_drop:.2f}); the margin grew by pushing "
                "both down."
            )

    if changed is not None and changed == 0:
        warnings.append("No behaviour change: every eval prompt gives the same answer as before training.")
    elif changed:
        good.append(f"Behaviour changed on {changed} eval prompt(s).")

    if kl_to_reference is not None and math.isfinite(kl_to_reference) and kl_to_reference > HEAVY_KL:
        warnings.append(
            f"Heavy drift: {kl_to_reference:.2f} nats/token of KL from the reference (above {HEAVY_KL}); "
            "raise beta or train fewer steps to pay less alignment tax."
        )
    if perplexity_before and perplexity_after and perplexity_after / perplexity_before > HEAVY_PPL_RATIO:
        warnings.append(
            f"Heavy drift: perplexity on neutral text rose from {perplexity_before:.1f} to {perplexity_after:.1f} "
            f"(x{perplexity_after / perplexity_before:.2f}); the run hurt general language ability."
        )

    if failed:
        return Health("failed", failed + warnings)
    if warnings:
        return Health("warning", warnings + good)
    return Health("healthy", good or ["Training ran without problems."])
