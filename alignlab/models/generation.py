"""Batched, deterministic generation: the same prompts give the same outputs before and after.

All prompts go through the model in one left-padded batch (the padding sits before the prompt, so
every row's answer starts at the same column). Greedy decoding is the default because the Compare
tab must show a change caused by training, not by sampling noise; seeded sampling is available.

:func:`generate_scored` also keeps what the generating model predicted at each answer token (its
log-probabilities over the whole vocabulary): the trained policy's answers are generated anyway, so
the drift from the reference (:func:`alignlab.evidence.evaluation.generated_token_kl`) needs only the
reference's forward over them, not the policy's again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from alignlab.models.loading import LoadedModel
from alignlab.models.logprobs import ANSWER_SURPRISE
from alignlab.registry.settings import GenerationSettings

#: :func:`generate_scored` keeps the answers' vocabulary-wide log-probabilities up to this size (rows x answer
#: tokens x vocabulary floats: 7 answers of 64 tokens over SmolLM2's vocabulary take 88 MB); past it, none are kept.
KEPT_LOGPS_BYTES = 256 * 2**20


@dataclass
class ScoredAnswers:
    """Generated answers, with what the generating model predicted at each of their tokens.

    Per row: ``prompt_ids`` (the prompt as the model saw it), ``answer_ids`` (the generated tokens, up to and
    including the end-of-turn token when the model stopped) and, when kept, ``logps[i]`` of shape
    ``(len(answer_ids[i]), vocabulary)``: log-softmax of the model's raw logits at each answer token.
    """

    texts: list[str]
    prompt_ids: list[list[int]] = field(default_factory=list)
    answer_ids: list[list[int]] = field(default_factory=list)
    logps: list[torch.Tensor] | None = None

    def surprise(self) -> list[float] | None:
        """The generating model's own surprise at each answer: mean negative log-likelihood per answer token, in
        nats (NaN for an empty answer); None when the log-probabilities were not kept."""
        if self.logps is None:
            return None
        out = []
        for ids, logps in zip(self.answer_ids, self.logps):
            if not ids:
                out.append(float("nan"))
                continue
            taken = logps.gather(-1, torch.tensor(ids, device=logps.device)[:, None])
            out.append(round(float(-taken.double().mean()), 4))
        return out


def _answer_length(tokens: torch.Tensor, stop_ids: set[int]) -> int:
    """Generated tokens that belong to the answer: up to and including the first stop token (padding follows it)."""
    for k, token in enumerate(tokens.tolist()):
        if token in stop_ids:
            return k + 1
    return len(tokens)


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
    return generate_scored(loaded, prompts, settings, model, keep_logps=False).texts


def generate_baseline(loaded: LoadedModel, prompts: list[str], settings: GenerationSettings | None = None) -> list[str]:
    """The original model's answers (:func:`generate`), its surprise at each remembered as it writes them
    (:data:`alignlab.models.logprobs.ANSWER_SURPRISE`): the compare step reads how far the trained policy's answers
    surprise it beyond its own without scoring these again."""
    answers = generate_scored(loaded, prompts, settings)
    surprise = answers.surprise()
    if surprise is not None:
        kept = [i for i, value in enumerate(surprise) if math.isfinite(value)]
        ANSWER_SURPRISE.remember(
            loaded.model,
            loaded,
            [prompts[i] for i in kept],
            [answers.texts[i] for i in kept],
            [surprise[i] for i in kept],
        )
    return answers.texts


@torch.inference_mode()
def generate_scored(
    loaded: LoadedModel,
    prompts: list[str],
    settings: GenerationSettings | None = None,
    model: torch.nn.Module | None = None,
    keep_logps: bool = True,
) -> ScoredAnswers:
    """:func:`generate`, keeping each answer's token ids and (``keep_logps``, within :data:`KEPT_LOGPS_BYTES`)
    the model's log-probabilities at each of them; ``logps`` is None when they were not kept."""
    settings = settings or GenerationSettings()
    model = model if model is not None else loaded.model
    tokenizer = loaded.tokenizer
    tokenizer.padding_side = "left"
    was_training = model.training
    model.eval()
    outputs: list[str] = []
    head = model.get_output_embeddings()
    vocabulary = head.weight.shape[0] if head is not None else 0
    keep = keep_logps and 0 < len(prompts) * settings.max_new_tokens * vocabulary * 4 <= KEPT_LOGPS_BYTES
    eos = tokenizer.eos_token_id
    stop_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
    answers = ScoredAnswers([], logps=[] if keep else None)
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
            if keep:
                kwargs.update(return_dict_in_generate=True, output_logits=True)
            generated = model.generate(**batch, **kwargs)
            sequences = generated.sequences if keep else generated
            new_tokens = sequences[:, batch["input_ids"].shape[1] :]
            outputs += [t.strip() for t in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
            logits = torch.stack(generated.logits, dim=1) if keep else None  # (rows, new tokens, vocabulary), raw
            for row in range(new_tokens.shape[0]):
                length = _answer_length(new_tokens[row], stop_ids)
                answers.prompt_ids.append(batch["input_ids"][row][batch["attention_mask"][row].bool()].tolist())
                answers.answer_ids.append(new_tokens[row, :length].tolist())
                if logits is not None:
                    answers.logps.append(torch.log_softmax(logits[row, :length].float(), dim=-1).cpu())
    finally:
        model.train(was_training)
    answers.texts = outputs
    return answers
