"""Before/after evidence that a run changed the model's preference, and what it cost.

Everything here is computed from the models, nothing is assumed:

- :func:`sequence_logps`: summed ``log pi(completion | prompt)`` for many rows at once, batched by
  length and scored a chunk of positions at a time, so that no ``(batch, length, vocabulary)``
  log-softmax tensor is ever built (a 300-pair dataset scores in bounded memory);
- :class:`PreferenceProbe`: held-out, contrast and capability pairs scored in one pass per model,
  the reference scored once per process (:class:`ReferenceScores`); the method's held-out scorer
  (:data:`SCORER_FUNCTIONS`) ranks held-out and contrast pairs -- DPO's implicit reward
  ``beta * (log pi_theta - log pi_ref)`` for methods with a reference, the policy's mean
  log-probability per answer token for reference-free ones (SimPO, ORPO) -- and the policy's own
  log-probability ranks capability pairs (before: the reference's; after: the policy's);
- :func:`mean_token_kl`: KL(pi_theta || pi_ref) per completion token on the eval answers (or
  :func:`generated_token_kl`, from what the policy predicted while it generated them: only the
  reference runs again), and :func:`perplexity` on a fixed neutral text -- the *alignment tax*;
- :func:`count_changed`: eval prompts whose answer differs after training.

The output-level checks live in :mod:`alignlab.degeneration`, and the verdict in :mod:`alignlab.health`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from alignlab.generation import ScoredAnswers
from alignlab.methods import RELATIVE_SCORERS, SCORERS
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

#: Tokens per forward batch when scoring (rows are grouped by length, so little of it is padding).
TOKENS_PER_BATCH = 4096
#: Positions whose vocabulary-wide logits exist at once: chunk x vocabulary floats (SmolLM2: 100 MB).
POSITIONS_PER_CHUNK = 512
#: Scoring keeps at most this many tokens of prompt + answer (the prompt is cut from the left).
MAX_SCORED_TOKENS = 1024
#: The live curve scores at most this many held-out and contrast pairs after each step.
LIVE_PROBE_PAIRS = 24
#: Reference log-probs remembered per process (one float and its prompt/answer key each).
REFERENCE_CACHE_ROWS = 50_000
#: :func:`weights_digest` reads every this-many-th value of each parameter.
DIGEST_STRIDE = 31


# --------------------------------------------------------------------------- log-probs


#: Rows whose token ids are kept per tokenizer (:func:`_encode_pair`): the live probe scores the same
#: held-out rows after every step, and the chat template and tokenizer cost more than the forward on a GPU.
ENCODED_ROWS_KEPT = 20_000
_encoded: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_encoded_lock = threading.Lock()


def _encode_pair(loaded: LoadedModel, prompt: str, completion: str) -> tuple[list[int], int]:
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
    value = _encode_pair_uncached(loaded, prompt, completion)
    with _encoded_lock:
        rows[key] = value
        while len(rows) > ENCODED_ROWS_KEPT:
            rows.popitem(last=False)
    return value


def _encode_pair_uncached(loaded: LoadedModel, prompt: str, completion: str) -> tuple[list[int], int]:
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


def length_batches(lengths: list[int], max_tokens: int = TOKENS_PER_BATCH) -> list[list[int]]:
    """Row indices grouped by length (longest first) so that rows x longest <= ``max_tokens``."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        width = lengths[current[0]] if current else lengths[i]
        if current and (len(current) + 1) * width > max_tokens:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


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
class _Batch:
    """A scored batch: every completion token's predicting state, its target and its row."""

    rows: list[int]  # indices into the caller's rows
    states: torch.Tensor  # (n_tokens, hidden) or (n_tokens, vocabulary)
    targets: torch.Tensor  # (n_tokens,)
    owner: torch.Tensor  # (n_tokens,) position of the token's row in ``rows``
    head: torch.nn.Module | None


def _scored_batches(
    model: torch.nn.Module, loaded: LoadedModel, encoded: list[tuple[list[int], int]], max_tokens: int
) -> Iterator[_Batch]:
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
) -> _Batch:
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
    return _Batch(rows, states[keep], answer_ids[keep], owner[keep], head)


def _chunks(n: int, size: int | None = None) -> Iterator[slice]:
    size = size or POSITIONS_PER_CHUNK
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def _log_probs(states: torch.Tensor, head: torch.nn.Module | None) -> torch.Tensor:
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
    encoded = [_encode_pair(loaded, p, c) for p, c in zip(prompts, completions)]
    out = torch.zeros(len(encoded), dtype=torch.float64)
    try:
        for batch in _scored_batches(model, loaded, encoded, max_tokens):
            sums = torch.zeros(len(batch.rows), dtype=torch.float64, device=batch.states.device)
            for part in _chunks(len(batch.targets)):
                token_logps = _log_probs(batch.states[part], batch.head).gather(-1, batch.targets[part, None])
                sums.index_add_(0, batch.owner[part], token_logps.squeeze(-1).double())
            out[batch.rows] = sums.cpu()
    finally:
        model.train(was_training)
    return out.float()


#: The earlier name, kept for callers outside the package.
completion_logps = sequence_logps


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
    """

    def __init__(self, max_rows: int = REFERENCE_CACHE_ROWS) -> None:
        self.max_rows = max_rows
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

    def logps(
        self, model: torch.nn.Module, loaded: LoadedModel, prompts: list[str], completions: list[str]
    ) -> torch.Tensor:
        """:func:`sequence_logps` of the reference, each row computed once per process."""
        digest = weights_digest(model)
        context = (id(loaded.tokenizer), loaded.is_chat, MAX_SCORED_TOKENS)
        keys = [(context, p, c) for p, c in zip(prompts, completions)]
        with self._lock:
            known_digest, table = self._tables.get(model, (None, None))
            if table is None or known_digest != digest:
                table = OrderedDict()
                self._tables[model] = (digest, table)
            found = {key: table[key] for key in keys if key in table}
        missing = list(dict.fromkeys(key for key in keys if key not in found))
        if missing:
            scored = sequence_logps(model, loaded, [k[1] for k in missing], [k[2] for k in missing]).tolist()
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


#: Held-out scorers (see :data:`alignlab.methods.SCORERS`): (policy log-probs, reference log-probs, answer
#: tokens, beta) -> each answer's reward. A reference-free scorer ignores the reference's log-probs.
SCORER_FUNCTIONS = {
    "implicit_reward": lambda policy, reference, tokens, beta: implicit_rewards(policy, reference, beta),
    "mean_implicit_reward": lambda policy, reference, tokens, beta: mean_implicit_rewards(
        policy, reference, tokens, beta
    ),
    "mean_logprob": lambda policy, reference, tokens, beta: mean_logprob_rewards(policy, tokens, beta),
}


def answer_tokens(loaded: LoadedModel, prompts: list[str], completions: list[str]) -> torch.Tensor:
    """Scored tokens of each answer (as :func:`sequence_logps` scores them), shape (N,)."""
    counts = []
    for p, c in zip(prompts, completions):
        ids, start = _encode_pair(loaded, p, c)
        counts.append(len(ids) - start)
    return torch.tensor(counts, dtype=torch.float32)


def preference_accuracy(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> tuple[float, float]:
    """(fraction of pairs where chosen strictly beats rejected, mean margin chosen - rejected)."""
    if len(chosen_rewards) == 0:
        return float("nan"), float("nan")
    margins = chosen_rewards - rejected_rewards
    return float((margins > 0).float().mean()), float(margins.mean())


# --------------------------------------------------------------------------- probes


@dataclass
class PairScores:
    """One probe set's result: accuracy, mean margin and each pair's margin."""

    accuracy: float
    mean_margin: float
    chosen: list[float] = field(default_factory=list)
    rejected: list[float] = field(default_factory=list)

    @property
    def margins(self) -> list[float]:
        return [c - r for c, r in zip(self.chosen, self.rejected)]

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
        scorer: str = "implicit_reward",
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
        score = score_rows or sequence_logps
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
        return {
            "step": step,
            "accuracy": scores["heldout"].accuracy,
            "margin": scores["heldout"].mean_margin,
            "contrast_accuracy": scores["contrast"].accuracy,
            "contrast_margin": scores["contrast"].mean_margin,
        }


def _pairs_digest(pairs: list[PreferencePair]) -> str:
    """Which pairs, in which order: a probe's saved scores apply only to the very same pairs."""
    text = json.dumps([[p.prompt, p.chosen, p.rejected] for p in pairs], ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def live_probe(
    loaded: LoadedModel,
    beta: float,
    heldout: list[PreferencePair],
    contrast: list[PreferencePair] | None = None,
    scorer: str = "implicit_reward",
) -> PreferenceProbe | None:
    """The probe the live curve runs after each step (no capability set: the Compare step scores it)."""
    if not heldout and not contrast:
        return None
    return PreferenceProbe(loaded, beta, heldout, contrast, scorer=scorer)


# --------------------------------------------------------------------------- drift


@torch.inference_mode()
def mean_token_kl(
    policy: torch.nn.Module,
    reference: torch.nn.Module,
    loaded: LoadedModel,
    prompts: list[str],
    completions: list[str],
    max_tokens: int = TOKENS_PER_BATCH,
) -> float:
    """Mean over completion tokens of KL(pi_theta || pi_ref) over the whole vocabulary, in nats."""
    encoded = [_encode_pair(loaded, p, c) for p, c in zip(prompts, completions)]
    if not encoded:
        return float("nan")
    policy_was, reference_was = policy.training, reference.training
    policy.eval()
    reference.eval()
    total, count = 0.0, 0
    try:
        batches = zip(
            _scored_batches(policy, loaded, encoded, max_tokens),
            _scored_batches(reference, loaded, encoded, max_tokens),
        )
        for mine, theirs in batches:  # the same rows in the same order: the batching depends on lengths only
            for part in _chunks(len(mine.targets)):
                logp_p = _log_probs(mine.states[part], mine.head)
                logp_r = _log_probs(theirs.states[part].to(mine.states.device), theirs.head)
                total += float((logp_p.exp() * (logp_p - logp_r)).sum())
                count += logp_p.shape[0]
    finally:
        policy.train(policy_was)
        reference.train(reference_was)
    return total / count if count else float("nan")


@torch.inference_mode()
def generated_token_kl(
    reference: torch.nn.Module, loaded: LoadedModel, answers: ScoredAnswers, max_tokens: int = TOKENS_PER_BATCH
) -> float:
    """:func:`mean_token_kl` on generated answers whose policy log-probabilities were kept while generating
    (:func:`alignlab.generation.generate_scored`): the same KL per answer token, from the reference's forward
    alone. The tokens are the generated ones, up to and including the end-of-turn token."""
    if answers.logps is None:
        raise ValueError("these answers were generated without keeping their log-probabilities")
    rows = [i for i, ids in enumerate(answers.answer_ids) if ids]
    if not rows:
        return float("nan")
    encoded = [(answers.prompt_ids[i] + answers.answer_ids[i], len(answers.prompt_ids[i])) for i in rows]
    was_training = reference.training
    reference.eval()
    total, count = 0.0, 0
    try:
        for batch in _scored_batches(reference, loaded, encoded, max_tokens):
            mine = torch.cat([answers.logps[rows[r]] for r in batch.rows]).to(batch.states.device)
            for part in _chunks(len(batch.targets)):
                logp_p = mine[part]
                logp_r = _log_probs(batch.states[part], batch.head)
                total += float((logp_p.exp() * (logp_p - logp_r)).sum())
                count += logp_p.shape[0]
    finally:
        reference.train(was_training)
    return total / count if count else float("nan")


@torch.inference_mode()
def perplexity(model: torch.nn.Module, loaded: LoadedModel, text: str = NEUTRAL_TEXT) -> float:
    """exp(mean negative log-likelihood per token) of ``text``."""
    was_training = model.training
    model.eval()
    try:
        ids = loaded.tokenizer(text, return_tensors="pt")["input_ids"].to(next(model.parameters()).device)
        loss = model(input_ids=ids, labels=ids).loss
    finally:
        model.train(was_training)
    return float(torch.exp(loss.float()))


def count_changed(before: list[str], after: list[str]) -> int:
    """How many eval prompts' answers differ (whitespace at the ends ignored)."""
    return sum(a.strip() != b.strip() for a, b in zip(before, after))


# --------------------------------------------------------------------------- evidence


@dataclass
class Evidence:
    """The numeric part of the report's ``eval`` block (DESIGN.md §6)."""

    heldout_reward_accuracy: float
    heldout_mean_margin: float
    kl_to_reference: float
    perplexity_before: float
    perplexity_after: float
    heldout_scorer: str = "implicit_reward"
    """Which score ranked held-out and contrast pairs (a key of :data:`alignlab.methods.SCORERS`)."""
    heldout_scorer_text: str = ""
    """The same in words, for a reader of the report."""
    heldout_reward_accuracy_before: float = float("nan")
    """The original model's held-out accuracy under the same score (reference-free scorers only)."""
    contrast_accuracy_before: float = float("nan")
    contrast_accuracy: float = float("nan")
    contrast_mean_margin: float = float("nan")
    capability_accuracy_before: float = float("nan")
    capability_accuracy_after: float = float("nan")
    capability_margin_before: float = float("nan")
    capability_margin_after: float = float("nan")
    capability_source: str = "preset"
    capability_pairs: int = 0
    heldout_chosen_rewards: list[float] = field(default_factory=list)
    heldout_rejected_rewards: list[float] = field(default_factory=list)
    heldout_margins: list[float] = field(default_factory=list)
    contrast_margins: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def gather_evidence(
    policy: torch.nn.Module,
    loaded: LoadedModel,
    heldout_pairs: list[PreferencePair],
    eval_prompts: list[str],
    aligned_outputs: list[str],
    beta: float,
    contrast_pairs: list[PreferencePair] | None = None,
    capability_pairs: list[PreferencePair] | None = None,
    capability_source: str = "preset",
    probe: PreferenceProbe | None = None,
    reuse_step: int | None = None,
    scorer: str = "implicit_reward",
    scored_answers: ScoredAnswers | None = None,
) -> Evidence:
    """All numeric evidence; ``loaded.model`` is the untouched reference.

    ``probe``: the run's own probe (built on these same pairs), whose reference scores and, at
    ``reuse_step``, last live-curve scores are reused instead of computed again. ``scorer``: how
    held-out and contrast pairs are ranked (the method's; a given probe brings its own).
    ``scored_answers``: ``aligned_outputs`` as the policy generated them, with its log-probabilities
    (:func:`alignlab.generation.generate_scored`); the KL then needs only the reference's forward.
    """
    reference = loaded.model
    if probe is None:
        probe = PreferenceProbe(loaded, beta, heldout_pairs, contrast_pairs, capability_pairs, scorer=scorer)
    scores = probe.score(policy, reuse_step=reuse_step)
    before = probe.before()
    held = scores["heldout"]
    return Evidence(
        heldout_reward_accuracy=held.accuracy,
        heldout_mean_margin=held.mean_margin,
        kl_to_reference=(
            generated_token_kl(reference, loaded, scored_answers)
            if scored_answers is not None and scored_answers.logps is not None
            else mean_token_kl(policy, reference, loaded, eval_prompts, aligned_outputs)
        ),
        perplexity_before=perplexity(reference, loaded),
        perplexity_after=perplexity(policy, loaded),
        heldout_scorer=probe.scorer,
        heldout_scorer_text=SCORERS[probe.scorer],
        heldout_reward_accuracy_before=before["heldout"].accuracy,
        contrast_accuracy_before=before["contrast"].accuracy,
        contrast_accuracy=scores["contrast"].accuracy,
        contrast_mean_margin=scores["contrast"].mean_margin,
        capability_accuracy_before=scores["capability_before"].accuracy,
        capability_accuracy_after=scores["capability_after"].accuracy,
        capability_margin_before=scores["capability_before"].mean_margin,
        capability_margin_after=scores["capability_after"].mean_margin,
        capability_source=capability_source if capability_pairs else "none",
        capability_pairs=len(capability_pairs or []),
        heldout_chosen_rewards=held.chosen,
        heldout_rejected_rewards=held.rejected,
        heldout_margins=held.margins,
        contrast_margins=scores["contrast"].margins,
    )
