"""Batched, deterministic generation: the same prompts give the same outputs before and after.

All prompts go through the model in one left-padded batch (the padding sits before the prompt, so
every row's answer starts at the same column). Greedy decoding is the default because the Compare
tab must show a change caused by training, not by sampling noise; seeded sampling is available.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from alignlab.models import LoadedModel

MAX_NEW_TOKENS_LIMIT = 512


class GenerationSettingsError(ValueError):
    """A generation setting is out of range; the message names it."""


@dataclass
class GenerationSettings:
    """How eval prompts are answered."""

    max_new_tokens: int = 64
    """Answer length cap in tokens (1-512). Longer answers cost time linearly."""
    do_sample: bool = False
    """False: greedy decoding (deterministic). True: seeded sampling."""
    temperature: float = 0.7
    """Sampling temperature (0.05-2.0); used only when sampling."""
    top_p: float = 0.9
    """Nucleus sampling mass (0.05-1.0); used only when sampling."""
    seed: int = 0
    """Seed for sampling, so that a sampled run can be repeated exactly."""
    batch_size: int = 16
    """Prompts per forward batch (1-64)."""
    min_new_tokens: int = 0
    """Answer length floor in tokens (0 to max_new_tokens): the end-of-turn token is held back until then.
    0 for the lab; the bench sets it to max_new_tokens so that a random-weight model, which tends to stop
    at once, generates its full length."""

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise GenerationSettingsError(" ".join(problems))

    def problems(self) -> list[str]:
        out = []
        if not isinstance(self.max_new_tokens, int) or not 1 <= self.max_new_tokens <= MAX_NEW_TOKENS_LIMIT:
            out.append(
                f"max_new_tokens must be a whole number from 1 to {MAX_NEW_TOKENS_LIMIT} (got {self.max_new_tokens!r})."
            )
        if not 0.05 <= float(self.temperature) <= 2.0:
            out.append(f"temperature must be between 0.05 and 2.0 (got {self.temperature!r}).")
        if not 0.05 <= float(self.top_p) <= 1.0:
            out.append(f"top_p must be between 0.05 and 1.0 (got {self.top_p!r}).")
        if not isinstance(self.batch_size, int) or not 1 <= self.batch_size <= 64:
            out.append(f"batch_size must be from 1 to 64 (got {self.batch_size!r}).")
        ceiling = self.max_new_tokens if isinstance(self.max_new_tokens, int) else MAX_NEW_TOKENS_LIMIT
        if not isinstance(self.min_new_tokens, int) or not 0 <= self.min_new_tokens <= ceiling:
            out.append(f"min_new_tokens must be from 0 to max_new_tokens (got {self.min_new_tokens!r}).")
        return out


@torch.inference_mode()
def generate(
    loaded: LoadedModel,
    prompts: list[str],
    settings: GenerationSettings | None = None,
    model: torch.nn.Module | None = None,
) -> list[str]:
    """Answer each prompt; returns the new text only, in the prompts' order.

    ``model`` overrides ``loaded.model`` (the trained policy shares the tokenizer and formatting).
    """
    settings = settings or GenerationSettings()
    model = model if model is not None else loaded.model
    tokenizer = loaded.tokenizer
    tokenizer.padding_side = "left"
    was_training = model.training
    model.eval()
    outputs: list[str] = []
    try:
        for start in range(0, len(prompts), settings.batch_size):
            chunk = [loaded.format_prompt(p) for p in prompts[start : start + settings.batch_size]]
            batch = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=not loaded.is_chat)
            batch = {k: v.to(next(model.parameters()).device) for k, v in batch.items()}
            kwargs = {
                "max_new_tokens": settings.max_new_tokens,
                "pad_token_id": tokenizer.pad_token_id,
                "eos_token_id": tokenizer.eos_token_id,
            }
            if settings.min_new_tokens:
                kwargs["min_new_tokens"] = settings.min_new_tokens
            if settings.do_sample:
                torch.manual_seed(settings.seed + start)
                kwargs.update(do_sample=True, temperature=settings.temperature, top_p=settings.top_p, top_k=0)
            else:
                kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            generated = model.generate(**batch, **kwargs)
            new_tokens = generated[:, batch["input_ids"].shape[1] :]
            outputs += [t.strip() for t in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
    finally:
        model.train(was_training)
    return outputs
