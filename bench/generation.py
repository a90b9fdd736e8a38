"""Batched generation (the lab's) vs one prompt at a time, on the same prompts and token budget.

Both call ``alignlab.models.generation.generate`` with the same greedy settings; "one at a time" passes
one prompt per call, as the seed lab's loop did. One untimed batched call warms the model first.
Greedy decoding stops a row at its end-of-turn token, so the two modes may generate different
token counts; both counts are reported, as is how many answers came out identical.

A model with random weights (the bench's own GPT-2-size one) stops after 0-1 tokens, which times
overheads, not generation. With ``full_length`` every answer
is held to ``max_new_tokens`` (``min_new_tokens``), and the decoding steps are counted from the
model's forward calls (a random model's tokens need not decode to text the tokenizer knows).
"""

from __future__ import annotations

from typing import Any

import torch

from alignlab.models.generation import generate
from alignlab.models.loading import LoadedModel
from alignlab.registry.settings import GenerationSettings
from bench.common import Figure, figure_text, ratio, timed


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


class ForwardCounter:
    """Counts a model's forward calls: one per decoding step (the first one is the prompt's)."""

    def __init__(self, model: torch.nn.Module):
        self.calls = 0
        self._handle = model.register_forward_hook(self._count)

    def _count(self, *args: Any) -> None:
        self.calls += 1

    def take(self) -> int:
        calls, self.calls = self.calls, 0
        return calls

    def close(self) -> None:
        self._handle.remove()


def run(
    loaded: LoadedModel, prompts: list[str], repeats: int, max_new_tokens: int, full_length: bool = False
) -> dict[str, Any]:
    settings = GenerationSettings(max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens if full_length else 0)
    generate(loaded, prompts[:1], settings)  # warm-up: first-call allocations, kernels
    batched, single = Figure(), Figure()
    batched_out: list[str] = []
    single_out: list[str] = []
    counter = ForwardCounter(loaded.model)
    steps = {"batched": 0, "one_at_a_time": 0}
    for _ in range(repeats):  # interleaved, so that a noisy neighbour hits both modes alike
        with timed(batched, loaded.device):
            batched_out = generate(loaded, prompts, settings)
        steps["batched"] = counter.take()
        with timed(single, loaded.device):
            single_out = [generate(loaded, [p], settings)[0] for p in prompts]
        steps["one_at_a_time"] = counter.take()
    counter.close()
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
        "full_length": full_length,
        # Forward calls of one repeat: batched = the longest answer's tokens; one at a time = the sum of all.
        "decoding_steps": steps,
        "identical_answers": sum(a == b for a, b in zip(batched_out, single_out)),
    }


def table_rows(g: dict[str, Any]) -> list[tuple[str, str]]:
    """The bench table's rows: both modes' seconds, their answers, the decoding steps."""
    n, t = g["prompts"], g["max_new_tokens"]
    return [
        (f"generation: batched, {n} prompts x {t} new tokens", figure_text(g["batched_seconds"])),
        ("generation: one prompt at a time", figure_text(g["one_at_a_time_seconds"])),
        ("generation: speedup (one-at-a-time / batched)", figure_text(g["speedup"])),
        (
            "generation: identical answers / tokens of the decoded answers (batched, single)",
            f"{g['identical_answers']}/{n}; {g['new_tokens']['batched']}, {g['new_tokens']['one_at_a_time']}",
        ),
        (
            "generation: decoding steps per repeat (batched = longest answer, single = sum)"
            + (", held to full length" if g.get("full_length") else ""),
            f"{g['decoding_steps']['batched']}, {g['decoding_steps']['one_at_a_time']}",
        ),
        ("generation: one decoding step, batch 1", figure_text(g["decode_step_seconds"]["batch_1"])),
        (f"generation: one decoding step, batch {n}", figure_text(g["decode_step_seconds"][f"batch_{n}"])),
        (
            f"generation: speedup bound, {n} x step(1) / step({n})",
            f"{g['speedup_bound_from_decode_steps']:.2f} x",
        ),
    ]
