"""Batched generation (the lab's) vs one prompt at a time, on the same prompts and token budget.

Both call ``alignlab.generation.generate`` with the same greedy settings; "one at a time" passes
one prompt per call, as the seed lab's loop did. One untimed batched call warms the model first.
Greedy decoding stops a row at its end-of-turn token, so the two modes may generate different
token counts; both counts are reported, as is how many answers came out identical.
"""

from __future__ import annotations

from typing import Any

import torch

from alignlab.generation import GenerationSettings, generate
from alignlab.models import LoadedModel
from bench.common import Figure, ratio, timed


def _new_tokens(loaded: LoadedModel, texts: list[str]) -> int:
    return sum(len(loaded.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)


@torch.inference_mode()
def decode_step_seconds(loaded: LoadedModel, batch: int, prompt_tokens: int = 40, steps: int = 16) -> Figure:
    """One cached decoding step (one new token per row) at a batch size: the unit generation repeats.

    Six prompts one at a time cost six batch-1 steps per token; batched, one batch-6 step. So
    ``6 * t(1) / t(6)`` bounds the speedup that batching can give on this hardware.
    """
    model = loaded.model.eval()
    device = next(model.parameters()).device
    ids = torch.randint(0, loaded.tokenizer.vocab_size, (batch, prompt_tokens), device=device)
    cache = model(ids, use_cache=True).past_key_values
    step = ids[:, -1:]
    figure = Figure()
    for _ in range(steps):
        with timed(figure, device):
            cache = model(step, past_key_values=cache, use_cache=True).past_key_values
    return figure


def run(loaded: LoadedModel, prompts: list[str], repeats: int, max_new_tokens: int) -> dict[str, Any]:
    settings = GenerationSettings(max_new_tokens=max_new_tokens)
    generate(loaded, prompts[:1], settings)  # warm-up: first-call allocations, kernels
    batched, single = Figure(), Figure()
    batched_out: list[str] = []
    single_out: list[str] = []
    for _ in range(repeats):  # interleaved, so that a noisy neighbour hits both modes alike
        with timed(batched, loaded.device):
            batched_out = generate(loaded, prompts, settings)
        with timed(single, loaded.device):
            single_out = [generate(loaded, [p], settings)[0] for p in prompts]
    step_1 = decode_step_seconds(loaded, 1)
    step_n = decode_step_seconds(loaded, len(prompts))
    bound = len(prompts) * step_1.median / step_n.median
    return {
        "prompts": len(prompts),
        "decode_step_seconds": {"batch_1": step_1.to_dict(), f"batch_{len(prompts)}": step_n.to_dict()},
        "speedup_bound_from_decode_steps": bound,
        "max_new_tokens": max_new_tokens,
        "batched_seconds": batched.to_dict(),
        "one_at_a_time_seconds": single.to_dict(),
        "speedup": ratio(single, batched).to_dict(),
        "new_tokens": {"batched": _new_tokens(loaded, batched_out), "one_at_a_time": _new_tokens(loaded, single_out)},
        "identical_answers": sum(a == b for a, b in zip(batched_out, single_out)),
        "_figures": {"batched": batched, "one_at_a_time": single},
    }
