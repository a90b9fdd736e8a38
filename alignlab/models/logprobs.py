"""Answers' log-probabilities under a model, in bounded memory, and the reference's kept per process.

:func:`sequence_logps` gives summed ``log pi(completion | prompt)`` for many rows at once. Rows are batched by
length; each prompt runs once, its KV cache copied to its answers (a pair's chosen and rejected answer share
it); prompts that open alike (a chat template's system prompt) run their common opening once per batch; and the
vocabulary is read a chunk of positions at a time, so that no ``(batch, length, vocabulary)`` log-softmax
tensor is ever built: a 300-pair dataset scores in bounded memory. :func:`scored_batches` is that machinery for
callers that need more than the sum (the KL drift in :mod:`alignlab.evidence.evaluation`).

The reference is never trained, so :data:`REFERENCE_SCORES` remembers its log-probs for the life of the
process, checked against a digest of its weights.
"""

from __future__ import annotations

import copy
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from alignlab.models.loading import LoadedModel

#: Tokens per forward batch when scoring (rows are grouped by length, so little of it is padding).
TOKENS_PER_BATCH = 4096
#: Positions whose vocabulary-wide logits exist at once: chunk x vocabulary floats (SmolLM2: 100 MB).
POSITIONS_PER_CHUNK = 512
#: Scoring keeps at most this many tokens of prompt + answer (the prompt is cut from the left).
MAX_SCORED_TOKENS = 1024
#: Reference log-probs remembered per process (one float and its prompt/answer key each).
REFERENCE_CACHE_ROWS = 50_000
#: :func:`weights_digest` reads every this-many-th value of each parameter.
DIGEST_STRIDE = 31


# --------------------------------------------------------------------------- log-probs


#: Rows whose token ids are kept per tokenizer (:func:`encode_pair`): the live probe scores the same
#: held-out rows after every step, and the chat template and tokenizer cost more than the forward on a GPU.
ENCODED_ROWS_KEPT = 20_000
_encoded: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_encoded_lock = threading.Lock()


def encode_pair(loaded: LoadedModel, prompt: str, completion: str) -> tuple[list[int], int]:
    """Token ids of prompt+completion, as TRL builds them, and where the completion starts (remembered
    per tokenizer: the same row is encoded once; callers must not change the list)."""
    key = (
        loaded.is_chat,
        MAX_SCORED_TOKENS,
        getattr(loaded.model.config, "max_position_embeddings", None),
        prompt,
        completion,
    )
    with _encoded_lock:
        rows = _encoded.setdefault(loaded.tokenizer, OrderedDict())
        if key in rows:
            rows.move_to_end(key)
            return rows[key]
    value = _encode_uncached(loaded, prompt, completion)
    with _encoded_lock:
        rows[key] = value
        while len(rows) > ENCODED_ROWS_KEPT:
            rows.popitem(last=False)
    return value


def _encode_uncached(loaded: LoadedModel, prompt: str, completion: str) -> tuple[list[int], int]:
    """Token ids of prompt+completion, as TRL builds them, and where the completion starts.

    A sequence longer than :data:`MAX_SCORED_TOKENS` (or the model's positions) loses the start of its
    prompt, never its answer.
    """
    tok = loaded.tokenizer
    special = not loaded.is_chat  # the chat template already carries its special tokens
    prompt_text = loaded.format_prompt(prompt)
    prompt_ids = tok(prompt_text, add_special_tokens=special)["input_ids"]
    full_ids = tok(prompt_text + loaded.format_completion(completion), add_special_tokens=special)["input_ids"]
    start = 0
    while start < min(len(prompt_ids), len(full_ids)) and prompt_ids[start] == full_ids[start]:
        start += 1
    start = max(start, 1)  # the first token has no prediction to score
    limit = min(MAX_SCORED_TOKENS, getattr(loaded.model.config, "max_position_embeddings", None) or MAX_SCORED_TOKENS)
    excess = len(full_ids) - limit
    if excess > 0:
        cut = min(excess, start - 1)
        full_ids, start = full_ids[cut:], start - cut
        full_ids = full_ids[:limit]
    return full_ids, start


def _plain_head(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module] | None:
    """(decoder, LM head) when logits are exactly ``head(decoder(x))``; None for models that post-process."""
    config = getattr(model, "config", None)
    if any(getattr(config, name, None) for name in ("final_logit_softcapping", "logit_scale", "output_multiplier")):
        return None
    try:
        head = model.get_output_embeddings()
        decoder = model.get_decoder()
    except (AttributeError, NotImplementedError, ValueError):
        return None
    if head is None or decoder is None or decoder is model:
        return None
    return decoder, head


def _forward(
    model: torch.nn.Module, split: tuple[torch.nn.Module, torch.nn.Module] | None, **inputs: Any
) -> tuple[torch.Tensor, Any]:
    """(final hidden states, or logits for models that post-process them; the KV cache if asked for)."""
    if split is not None:
        out = split[0](**inputs)
        return out.last_hidden_state, getattr(out, "past_key_values", None)
    out = model(**inputs)
    return out.logits, getattr(out, "past_key_values", None)


def _select_rows(cache: Any, index: torch.Tensor) -> Any:
    """A new KV cache of ``cache``'s batch rows picked (and repeated) by ``index``; ``cache`` stays as it is
    (a forward on top of a cache appends to it, and a prompt's cache serves several batches of answers)."""
    from transformers import DynamicCache

    if isinstance(cache, DynamicCache):
        picked = []
        for keys, values, *rest in cache:  # (keys, values[, sliding window])
            extra = tuple(x for x in rest if x is not None)
            picked.append((keys.index_select(0, index), values.index_select(0, index), *extra))
        return DynamicCache(ddp_cache_data=picked)
    if hasattr(cache, "reorder_cache"):
        cache = copy.deepcopy(cache)
        cache.reorder_cache(index)
        return cache
    return tuple(tuple(t.index_select(0, index) for t in layer) for layer in cache)


@dataclass
class ScoredBatch:
    """A scored batch: every completion token's predicting state, its target and its row."""

    rows: list[int]  # indices into the caller's rows
    states: torch.Tensor  # (n_tokens, hidden) or (n_tokens, vocabulary)
    targets: torch.Tensor  # (n_tokens,)
    owner: torch.Tensor  # (n_tokens,) position of the token's row in ``rows``
    head: torch.nn.Module | None


def scored_batches(
    model: torch.nn.Module, loaded: LoadedModel, encoded: list[tuple[list[int], int]], max_tokens: int
) -> Iterator[ScoredBatch]:
    """Run ``model`` over encoded rows, each shared prompt once.

    Rows whose prompt tokens are identical (a pair's chosen and rejected answer) form a group: the
    prompt runs once, its KV cache is copied to each of the group's rows, and only the answers run
    on top of it. Groups are batched by length so that padding stays small.
    """
    device = next(model.parameters()).device
    pad_id = loaded.tokenizer.pad_token_id
    split = _plain_head(model)
    head = split[1] if split is not None else None
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, (ids, begin) in enumerate(encoded):
        groups.setdefault(tuple(ids[:begin]), []).append(i)
    prefixes = list(groups)
    cost = [len(p) + max(len(encoded[r][0]) - len(p) for r in groups[p]) for p in prefixes]
    weight = [len(groups[p]) for p in prefixes]
    order = sorted(range(len(prefixes)), key=lambda g: (-len(prefixes[g]), -cost[g]))
    batch_floor = _min_batch_tokens(device)
    batches: list[list[int]] = []
    for g in order:  # rows x (longest prompt + longest answer) <= max_tokens; prompts of like length together
        if batches:
            current = batches[-1]
            rows = sum(weight[h] for h in current) + weight[g]
            fits = rows * max(cost[h] for h in current + [g]) <= max_tokens
            if fits and not _starts_new_run(len(current), len(prefixes[current[0]]), len(prefixes[g]), batch_floor):
                current.append(g)
                continue
        batches.append([g])
    for batch in batches:
        prompts = [prefixes[g] for g in batch]
        prompt_states, cache, prompt_mask = _prompts_forward(model, split, prompts, pad_id, device)
        last = prompt_states[:, -1]  # (G, H): predicts each answer's first token
        members = [(r, j) for j, g in enumerate(batch) for r in groups[prefixes[g]]]
        members.sort(key=lambda m: -_answer_length(encoded, m))  # longest answer first
        runs: list[list[tuple[int, int]]] = []
        for m in members:  # answers of like length together, so that little of each forward is padding
            length = _answer_length(encoded, m)
            if runs and not _starts_new_run(len(runs[-1]), _answer_length(encoded, runs[-1][0]), length, batch_floor):
                runs[-1].append(m)
            else:
                runs.append([m])
        for run in runs:
            yield _answers_batch(model, split, head, encoded, run, prompt_mask, last, cache, pad_id, device)


#: Prompts of a batch that open with this many tokens in common (a chat template's system prompt) run them once.
MIN_SHARED_PREFIX = 8


def _shared_prefix(prompts: list[tuple[int, ...]]) -> int:
    """Tokens every prompt starts with, leaving each at least one of its own (its last state predicts the answer)."""
    if len(prompts) < 2:
        return 0
    limit = min(len(p) for p in prompts) - 1
    first = prompts[0]
    shared = 0
    while shared < limit and all(p[shared] == first[shared] for p in prompts):
        shared += 1
    return shared if shared >= MIN_SHARED_PREFIX else 0


def _prompts_forward(
    model: torch.nn.Module,
    split: tuple[torch.nn.Module, torch.nn.Module] | None,
    prompts: list[tuple[int, ...]],
    pad_id: int,
    device: torch.device,
) -> tuple[torch.Tensor, Any, torch.Tensor]:
    """The prompts of a batch through ``model``: (their states, their KV cache, their attention mask).

    Their common opening (:func:`_shared_prefix`) runs once and its cache is copied to every row; the rest of
    each prompt follows it, left-padded, so that every prompt ends in the last column:
    ``[shared prefix][padding][rest of the prompt]``.
    """
    shared = _shared_prefix(prompts)
    rests = [p[shared:] for p in prompts]
    width = max(len(r) for r in rests)
    prompt_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    prompt_mask = torch.zeros((len(prompts), shared + width), dtype=torch.long)
    prompt_mask[:, :shared] = 1
    for j, rest in enumerate(rests):
        prompt_ids[j, width - len(rest) :] = torch.tensor(rest)
        prompt_mask[j, shared + width - len(rest) :] = 1
    prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)
    past = None
    if shared:
        prefix = torch.tensor([prompts[0][:shared]], dtype=torch.long, device=device)
        _, prefix_cache = _forward(model, split, input_ids=prefix, use_cache=True)
        past = _select_rows(prefix_cache, torch.zeros(len(prompts), dtype=torch.long, device=device))
    positions = (prompt_mask.cumsum(-1) - 1).clamp(min=0)[:, shared:]
    states, cache = _forward(
        model,
        split,
        input_ids=prompt_ids,
        attention_mask=prompt_mask,
        position_ids=positions,
        past_key_values=past,
        use_cache=True,
    )
    return states, cache, prompt_mask


def _answer_length(encoded: list[tuple[list[int], int]], member: tuple[int, int]) -> int:
    return len(encoded[member[0]][0]) - encoded[member[0]][1]


#: A batch holds rows of like length (the next row at least this share of the batch's longest), once it holds
#: enough tokens for an efficient forward: padding is pure waste on a CPU, while a GPU wants few, large batches.
LIKE_LENGTH = 0.8
MIN_BATCH_TOKENS = {"cpu": 192, "cuda": 4096}


def _min_batch_tokens(device: torch.device) -> int:
    return MIN_BATCH_TOKENS.get(device.type, MIN_BATCH_TOKENS["cuda"])


def _starts_new_run(rows: int, longest: int, length: int, floor: int) -> bool:
    """Whether a row of ``length`` tokens starts a new batch after ``rows`` rows led by one of ``longest``."""
    return rows * longest >= floor and length < LIKE_LENGTH * longest


def _answers_batch(
    model: torch.nn.Module,
    split: tuple[torch.nn.Module, torch.nn.Module] | None,
    head: torch.nn.Module | None,
    encoded: list[tuple[list[int], int]],
    run: list[tuple[int, int]],
    prompt_mask: torch.Tensor,
    last: torch.Tensor,
    cache: Any,
    pad_id: int,
    device: torch.device,
) -> ScoredBatch:
    """The answers of ``run`` ((row, prompt's place in the batch) pairs) on top of their prompts' KV cache."""
    rows = [r for r, _ in run]
    row_group = torch.tensor([j for _, j in run], device=device)
    answers = [encoded[r][0][encoded[r][1] :] for r in rows]
    answer_width = max(len(a) for a in answers)
    answer_ids = torch.full((len(rows), answer_width), pad_id, dtype=torch.long)
    answer_mask = torch.zeros((len(rows), answer_width), dtype=torch.long)
    for k, answer in enumerate(answers):  # right-padded after the shared prompt
        answer_ids[k, : len(answer)] = torch.tensor(answer)
        answer_mask[k, : len(answer)] = 1
    answer_ids, answer_mask = answer_ids.to(device), answer_mask.to(device)
    states = last.index_select(0, row_group)[:, None]  # (R, 1, H)
    if answer_width > 1:
        lengths = prompt_mask.sum(-1).index_select(0, row_group)
        answer_states, _ = _forward(
            model,
            split,
            input_ids=answer_ids[:, :-1],  # the last answer token predicts nothing we score
            attention_mask=torch.cat([prompt_mask.index_select(0, row_group), answer_mask[:, :-1]], dim=1),
            position_ids=lengths[:, None] + torch.arange(answer_width - 1, device=device)[None],
            past_key_values=_select_rows(cache, row_group),
            use_cache=False,
        )
        states = torch.cat([states, answer_states], dim=1)  # (R, answer_width, H)
    keep = answer_mask.bool()
    owner = torch.arange(len(rows), device=device)[:, None].expand_as(answer_ids)
    return ScoredBatch(rows, states[keep], answer_ids[keep], owner[keep], head)


def chunks(n: int, size: int | None = None) -> Iterator[slice]:
    size = size or POSITIONS_PER_CHUNK
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def log_probs(states: torch.Tensor, head: torch.nn.Module | None) -> torch.Tensor:
    """log-softmax over the vocabulary for a chunk of positions: (n, V), float32."""
    logits = head(states) if head is not None else states
    return torch.log_softmax(logits.float(), dim=-1)


@torch.inference_mode()
def sequence_logps(
    model: torch.nn.Module,
    loaded: LoadedModel,
    prompts: list[str],
    completions: list[str],
    max_tokens: int = TOKENS_PER_BATCH,
) -> torch.Tensor:
    """Summed log pi(completion | prompt) for each row, shape (N,), in bounded memory."""
    was_training = model.training
    model.eval()
    encoded = [encode_pair(loaded, p, c) for p, c in zip(prompts, completions)]
    out = torch.zeros(len(encoded), dtype=torch.float64)
    try:
        for batch in scored_batches(model, loaded, encoded, max_tokens):
            sums = torch.zeros(len(batch.rows), dtype=torch.float64, device=batch.states.device)
            for part in chunks(len(batch.targets)):
                token_logps = log_probs(batch.states[part], batch.head).gather(-1, batch.targets[part, None])
                sums.index_add_(0, batch.owner[part], token_logps.squeeze(-1).double())
            out[batch.rows] = sums.cpu()
    finally:
        model.train(was_training)
    return out.float()


@torch.no_grad()
def weights_digest(model: torch.nn.Module) -> tuple[float, float]:
    """(sum, sum of norms) of a strided sample of every parameter (every 31st value).

    Training, a LoRA merge or any in-place edit moves every weight it touches, so the sample moves
    too; it reads a fraction of the weights (a 135M model in well under a second on one CPU core).
    """
    sums, norms = [], []
    for param in model.parameters():
        data = param.detach().reshape(-1)[::DIGEST_STRIDE]
        data = data if data.is_floating_point() else data.float()  # packed 4-bit weights
        sums.append(data.sum(dtype=torch.float32))
        norms.append(torch.linalg.vector_norm(data, dtype=torch.float32))
    if not sums:
        return 0.0, 0.0
    return float(torch.stack(sums).double().sum()), float(torch.stack(norms).double().sum())


class ReferenceScores:
    """``log pi_ref(completion | prompt)`` remembered per reference model for the life of the process.

    The reference is never trained, so a pair it has scored needs no second pass: a learner who
    retrains on the same data, or a room of visitors on one preset, pays the reference's half of
    the evidence once. The model's :func:`weights_digest` is checked on every use, so a model
    changed in place is scored afresh rather than served stale figures. At most ``max_rows``
    answers are kept per model (least recently used out first); a model that is gone takes its
    scores with it.

    ``score`` computes the rows not yet known (default :func:`sequence_logps`); :meth:`remember` takes rows
    already computed elsewhere (the original model's surprise at the answers it generated).
    """

    def __init__(self, max_rows: int = REFERENCE_CACHE_ROWS, score: Any = None) -> None:
        self.max_rows = max_rows
        self.score = score
        self._tables: weakref.WeakKeyDictionary[torch.nn.Module, tuple[tuple[float, float], OrderedDict]] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        with self._lock:
            return sum(len(table) for _, table in self._tables.values())

    def clear(self) -> None:
        with self._lock:
            self._tables.clear()
            self.hits = self.misses = 0

    def _table(self, model: torch.nn.Module, digest: tuple[float, float]) -> OrderedDict:
        """The model's rows, emptied when its weights changed (call with the lock held)."""
        known_digest, table = self._tables.get(model, (None, None))
        if table is None or known_digest != digest:
            table = OrderedDict()
            self._tables[model] = (digest, table)
        return table

    @staticmethod
    def _keys(loaded: LoadedModel, prompts: list[str], completions: list[str]) -> list[tuple]:
        context = (id(loaded.tokenizer), loaded.is_chat, MAX_SCORED_TOKENS)
        return [(context, p, c) for p, c in zip(prompts, completions)]

    def remember(
        self,
        model: torch.nn.Module,
        loaded: LoadedModel,
        prompts: list[str],
        completions: list[str],
        values: list[float],
    ) -> None:
        """Keep rows computed elsewhere for ``model`` as it is now."""
        digest = weights_digest(model)
        with self._lock:
            table = self._table(model, digest)
            for key, value in zip(self._keys(loaded, prompts, completions), values):
                table[key] = float(value)
                table.move_to_end(key)
            while len(table) > self.max_rows:
                table.popitem(last=False)

    def logps(
        self, model: torch.nn.Module, loaded: LoadedModel, prompts: list[str], completions: list[str]
    ) -> torch.Tensor:
        """:func:`sequence_logps` of the reference (or this table's ``score``), each row computed once per process."""
        digest = weights_digest(model)
        keys = self._keys(loaded, prompts, completions)
        with self._lock:
            table = self._table(model, digest)
            found = {key: table[key] for key in keys if key in table}
        missing = list(dict.fromkeys(key for key in keys if key not in found))
        if missing:
            score = self.score or sequence_logps  # looked up here, so that a test can count the calls
            scored = score(model, loaded, [k[1] for k in missing], [k[2] for k in missing]).tolist()
            found.update(zip(missing, scored))
        with self._lock:
            self.hits += len(keys) - len(missing)
            self.misses += len(missing)
            for key in keys:
                table[key] = found[key]
                table.move_to_end(key)
            while len(table) > self.max_rows:
                table.popitem(last=False)
        return torch.tensor([found[key] for key in keys], dtype=torch.float32)


#: The process's reference scores (see :class:`ReferenceScores`).
REFERENCE_SCORES = ReferenceScores()


def answer_tokens(loaded: LoadedModel, prompts: list[str], completions: list[str]) -> torch.Tensor:
    """Scored tokens of each answer (as :func:`sequence_logps` scores them), shape (N,)."""
    counts = []
    for p, c in zip(prompts, completions):
        ids, start = encode_pair(loaded, p, c)
        counts.append(len(ids) - start)
    return torch.tensor(counts, dtype=torch.float32)


def encode_answer(loaded: LoadedModel, prompt: str, answer: str) -> tuple[list[int], int]:
    """Token ids of a generated answer after its formatted prompt, as the model wrote it (no end-of-turn token
    added: an answer cut at its token limit has none), and where the answer starts."""
    special = not loaded.is_chat
    prompt_ids = loaded.tokenizer(loaded.format_prompt(prompt), add_special_tokens=special)["input_ids"]
    answer_ids = loaded.tokenizer(answer, add_special_tokens=False)["input_ids"]
    return prompt_ids + answer_ids, len(prompt_ids)


@torch.inference_mode()
def mean_surprise(
    model: torch.nn.Module,
    loaded: LoadedModel,
    prompts: list[str],
    answers: list[str],
    max_tokens: int = TOKENS_PER_BATCH,
) -> torch.Tensor:
    """The model's mean negative log-likelihood per token of each answer, in nats, shape (N,); NaN for an empty
    answer. The same measure as a generation's own (:meth:`alignlab.models.generation.ScoredAnswers.surprise`), up to
    the end-of-turn token a finished answer carries there."""
    encoded = [encode_answer(loaded, p, a) for p, a in zip(prompts, answers)]
    rows = [i for i, (ids, start) in enumerate(encoded) if len(ids) > start]
    nll = torch.zeros(len(encoded), dtype=torch.float64)
    tokens = torch.zeros(len(encoded), dtype=torch.float64)
    was_training = model.training
    model.eval()
    try:
        for batch in scored_batches(model, loaded, [encoded[i] for i in rows], max_tokens):
            owners = torch.tensor([rows[r] for r in batch.rows], device=batch.states.device)[batch.owner]
            for part in chunks(len(batch.targets)):
                taken = log_probs(batch.states[part], batch.head).gather(-1, batch.targets[part, None]).squeeze(-1)
                nll.index_add_(0, owners[part].cpu(), -taken.double().cpu())
                tokens.index_add_(0, owners[part].cpu(), torch.ones_like(taken, dtype=torch.float64).cpu())
    finally:
        model.train(was_training)
    return (nll / tokens).float()  # 0/0: NaN for an empty answer


#: The original model's surprise at answers (:func:`mean_surprise`), remembered per model for the life of the
#: process: at its own baseline answers, kept while it generated them
#: (:func:`alignlab.models.generation.generate_baseline`),
#: so that the compare step reads them without a second pass.
ANSWER_SURPRISE = ReferenceScores(score=mean_surprise)
