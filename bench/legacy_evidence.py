"""The evidence code as it was before issue 8, kept only to be measured against (``make bench``).

It scores with a full-vocabulary log-softmax over each padded batch of 8 rows in input order,
scores the reference again for every pair set, and computes KL over whole padded batches.
``bench/evidence.py`` times it side by side with :mod:`alignlab.evaluation` on the same data.
Nothing in the app or the CLI uses it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from alignlab.evaluation import NEUTRAL_TEXT, perplexity
from alignlab.models import LoadedModel
from alignlab.presets import PreferencePair

__all__ = ["NEUTRAL_TEXT", "gather_evidence", "perplexity"]


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
