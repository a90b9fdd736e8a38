"""A minimal DPO loop in plain PyTorch: the practical floor for the lab's training step.

Policy + frozen reference, chosen and rejected rows in one forward pass, completion-only summed
log-probs, the sigmoid DPO loss ``-logsigmoid(beta * ((pc - rc) - (pr - rr)))`` and AdamW.
It mirrors what TRL does for the same settings, so its losses can be checked against TRL's:
- tokens: :func:`alignlab.models.logprobs.encode_pair` (TRL's rule: the completion starts where the
  tokenised prompt and prompt+completion diverge), cut to ``max_length`` from the start;
- data order: per epoch ``randperm(n)`` from a generator seeded ``seed + epoch`` (accelerate's
  seedable sampler, which TRL's Trainer uses), batches of ``batch_size``, the last one short;
- optimiser: AdamW without weight decay, gradient norm clipped at 1.0 (the Trainer's default),
  constant learning rate (AlignLab's schedule), dropout off (TRL's ``disable_dropout``).
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from alignlab.data.pairs import PreferencePair
from alignlab.models.loading import LoadedModel, copy_for_training
from alignlab.models.logprobs import encode_pair
from alignlab.registry.settings import TrainingSettings
from bench.common import sync


@dataclass
class EncodedPair:
    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]


def encode_pairs(loaded: LoadedModel, pairs: list[PreferencePair]) -> list[EncodedPair]:
    """Prompt / chosen / rejected token ids, split where TRL splits them."""
    out = []
    for pair in pairs:
        chosen_full, chosen_start = encode_pair(loaded, pair.prompt, pair.chosen)
        rejected_full, rejected_start = encode_pair(loaded, pair.prompt, pair.rejected)
        prompt_len = min(chosen_start, rejected_start)
        out.append(EncodedPair(chosen_full[:prompt_len], chosen_full[prompt_len:], rejected_full[prompt_len:]))
    return out


def collate(rows: list[EncodedPair], pad_id: int, max_length: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Rows [chosen_1..chosen_B, rejected_1..rejected_B], right-padded: ids, attention, completion mask."""
    seqs, masks = [], []
    for kind in ("chosen_ids", "rejected_ids"):
        for row in rows:
            completion = getattr(row, kind)
            seqs.append((row.prompt_ids + completion)[:max_length])
            masks.append(([0] * len(row.prompt_ids) + [1] * len(completion))[:max_length])
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(seqs), width), dtype=torch.long)
    completion = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, (seq, mask) in enumerate(zip(seqs, masks)):
        ids[i, : len(seq)] = torch.tensor(seq)
        attention[i, : len(seq)] = 1
        completion[i, : len(mask)] = torch.tensor(mask)
    return {
        "input_ids": ids.to(device),
        "attention_mask": attention.to(device),
        "completion_mask": completion.to(device),
    }


def sequence_logps(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed log-prob of each row's completion tokens, shape (2B,)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
    logits = logits[:, :-1].float()  # (2B, T-1, V): position t predicts token t+1
    targets = batch["input_ids"][:, 1:]
    token_logps = -F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # (2B, T-1)
    return (token_logps * batch["completion_mask"][:, 1:]).sum(-1)


def batch_order(n: int, batch_size: int, steps: int, seed: int) -> list[list[int]]:
    """Indices of each step's pairs, epoch after epoch (accelerate's seedable random sampler)."""
    batches: list[list[int]] = []
    epoch = 0
    while len(batches) < steps:
        generator = torch.Generator().manual_seed(seed + epoch)
        order = torch.randperm(n, generator=generator).tolist()
        batches += [order[i : i + batch_size] for i in range(0, n, batch_size)]
        epoch += 1
    return batches[:steps]


@dataclass
class BareRun:
    step_seconds: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    chosen_logps: list[float] = field(default_factory=list)  # mean over the step's pairs, like TRL's log
    rejected_logps: list[float] = field(default_factory=list)
    grad_norms: list[float] = field(default_factory=list)
    max_tokens: int = 0


def train_bare(
    loaded: LoadedModel,
    pairs: list[PreferencePair],
    steps: int,
    batch_size: int,
    learning_rate: float,
    beta: float,
    seed: int,
    max_length: int,
    bf16: bool = False,
) -> BareRun:
    """Run ``steps`` DPO steps on a copy of ``loaded.model`` (which stays the frozen reference)."""
    device = loaded.device
    policy = copy_for_training(loaded)
    for module in policy.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    policy.train()
    reference = loaded.model
    reference.eval()
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.0, fused=device.type == "cuda")
    encoded = encode_pairs(loaded, pairs)
    pad_id = loaded.tokenizer.pad_token_id
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    run = BareRun()
    for indices in batch_order(len(encoded), batch_size, steps, seed):
        sync(device)
        started = time.perf_counter()
        batch = collate([encoded[i] for i in indices], pad_id, max_length, device)
        run.max_tokens = max(run.max_tokens, batch["input_ids"].shape[1])
        with autocast:
            policy_logps = sequence_logps(policy, batch)
            with torch.no_grad():
                reference_logps = sequence_logps(reference, batch)
        pc, pr = policy_logps.chunk(2)
        rc, rr = reference_logps.chunk(2)
        loss = -F.logsigmoid(beta * ((pc - rc) - (pr - rr))).mean()
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        run.losses.append(loss.item())  # .item() waits for the step, as TRL's per-step logging does
        sync(device)
        run.step_seconds.append(time.perf_counter() - started)
        run.chosen_logps.append(pc.detach().mean().item())
        run.rejected_logps.append(pr.detach().mean().item())
        run.grad_norms.append(float(grad_norm))
    del policy, optimizer
    return run


def train_bare_as(
    loaded: LoadedModel, pairs: list[PreferencePair], settings: TrainingSettings, steps: int | None = None
) -> BareRun:
    """:func:`train_bare` with the lab's settings (batch, rate, beta, seed, length, precision on this device)."""
    return train_bare(
        loaded,
        pairs,
        steps=steps if steps is not None else settings.steps,
        batch_size=settings.batch_size,
        learning_rate=settings.learning_rate,
        beta=settings.beta,
        seed=settings.seed,
        max_length=settings.max_length,
        bf16=settings.use_bf16(loaded.device),
    )
