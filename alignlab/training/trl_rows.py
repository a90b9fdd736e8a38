"""The lab's data as TRL's rows: the one place where a pair, a thumbs row or a prompt becomes a dataset row.

TRL reads three row formats, and a method's stage (:class:`alignlab.registry.methods.Stage`) names the one it trains on:

- *preference* rows for a stage that reads pairs (``prompt``, ``chosen``, ``rejected``);
- *unpaired* rows for a stage that reads thumbs rows (``prompt``, ``completion``, ``label``): each pair as its
  chosen answer (desirable) and its rejected answer (undesirable), then the thumbs rows;
- *prompt-only* rows for a stage that samples its own answers (online RL): the data's distinct prompts.

A chat model gets TRL's *conversational* rows, so that TRL applies the same chat template that generation uses;
a base model gets the *standard* rows with the lab's plain-text prompt
(:data:`alignlab.models.loading.PLAIN_PROMPT_TEMPLATE`),
each answer after a space. The lab's trainer (:func:`stage_dataset`) and the exported recipe
(:func:`recipe_rows`) both build their rows here, so a recipe trains on exactly the lab's rows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from alignlab.data.pairs import PreferencePair, TrainingData, UnpairedRow
from alignlab.models.loading import PLAIN_PROMPT_TEMPLATE

if TYPE_CHECKING:
    from datasets import Dataset

    from alignlab.models.loading import LoadedModel
    from alignlab.registry.methods import Stage
    from alignlab.registry.settings import TrainingSettings


def _user(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


def _assistant(answer: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": answer}]


def preference_row(pair: PreferencePair, chat: bool) -> dict[str, Any]:
    """One row of TRL's preference format."""
    if chat:
        return {"prompt": _user(pair.prompt), "chosen": _assistant(pair.chosen), "rejected": _assistant(pair.rejected)}
    return {
        "prompt": PLAIN_PROMPT_TEMPLATE.format(prompt=pair.prompt),
        "chosen": " " + pair.chosen.strip(),
        "rejected": " " + pair.rejected.strip(),
    }


def thumbs_row(prompt: str, answer: str, label: bool, chat: bool) -> dict[str, Any]:
    """One row of TRL's unpaired format."""
    if chat:
        return {"prompt": _user(prompt), "completion": _assistant(answer), "label": label}
    return {"prompt": PLAIN_PROMPT_TEMPLATE.format(prompt=prompt), "completion": " " + answer.strip(), "label": label}


def prompt_row(prompt: str, chat: bool) -> dict[str, Any]:
    """One row of TRL's prompt-only format (TRL adds a chat model's generation prompt)."""
    return {"prompt": _user(prompt) if chat else PLAIN_PROMPT_TEMPLATE.format(prompt=prompt)}


def distinct_prompts(data: TrainingData) -> list[str]:
    """The data's distinct prompts (its pairs', then its thumbs rows'), in order of first appearance."""
    return list(dict.fromkeys([p.prompt for p in data.pairs] + [r.prompt for r in data.unpaired]))


# --------------------------------------------------------------------------- the lab's trainer


def stage_rows(chat: bool, data: TrainingData, settings: TrainingSettings, stage: Stage) -> list[dict[str, Any]]:
    """The rows ``stage`` of ``settings``' method trains on in the lab.

    A stage that reads thumbs rows gets every row as one (:func:`kto_layout`); a stage that samples answers,
    the distinct prompts; a stage that reads pairs, the pairs with those the thumbs rows form
    (:meth:`TrainingData.paired_for`, which refuses data that forms none).
    """
    if stage.reads_thumbs:
        return [thumbs_row(r.prompt, r.completion, r.label, chat) for r in kto_layout(data, settings)]
    if stage.samples_answers:
        return [prompt_row(prompt, chat) for prompt in distinct_prompts(data)]
    return [preference_row(p, chat) for p in data.paired_for(settings.method)]


def stage_dataset(
    loaded: LoadedModel, data: TrainingData, settings: TrainingSettings, stage: Stage | None = None
) -> Dataset:
    """:func:`stage_rows` as the trainer's dataset (default stage: the policy's)."""
    from datasets import Dataset

    return Dataset.from_list(stage_rows(loaded.is_chat, data, settings, stage or settings.method_entry.stage))


def kto_layout(data: TrainingData, settings: TrainingSettings) -> list[UnpairedRow]:
    """The training data as thumbs rows, in the order KTO trains on them.

    KTO estimates its KL term by giving each row the answer of its neighbour in the batch (TRL rotates the
    batch's answers by one, and keeps the data order for that), so neighbours should answer other prompts.
    Pairs alone are shuffled with the seed (TRL's sequential order would otherwise always see them in file
    order) and laid out batch by batch as the batch's chosen answers, then its rejected ones: every rotated
    answer then belongs to another prompt whenever a batch holds two pairs or more. With thumbs rows, all the
    rows are shuffled together and each batch of ``2 * batch_size`` rows is ordered to the same end
    (:func:`_deal_batch`).
    """
    import torch

    generator = torch.Generator().manual_seed(settings.seed)
    if data.unpaired:
        thumbs = data.thumbs()
        shuffled = [thumbs[i] for i in torch.randperm(len(thumbs), generator=generator).tolist()]
        rows: list[UnpairedRow] = []
        for start in range(0, len(shuffled), 2 * settings.batch_size):
            rows += _deal_batch(shuffled[start : start + 2 * settings.batch_size])
        return rows
    pairs = [data.pairs[i] for i in torch.randperm(len(data.pairs), generator=generator).tolist()]
    rows = []
    for start in range(0, len(pairs), settings.batch_size):
        batch = pairs[start : start + settings.batch_size]
        rows += [UnpairedRow(p.prompt, p.chosen, True) for p in batch]
        rows += [UnpairedRow(p.prompt, p.rejected, False) for p in batch]
    return rows


def _deal_batch(batch: list[UnpairedRow]) -> list[UnpairedRow]:
    """A batch ordered so that neighbours answer other prompts: grouped by prompt (the largest group first) and
    dealt to the even positions, then the odd ones. No two neighbours, the last and the first included (TRL's
    rotation wraps around), share a prompt unless one prompt holds more than half of the batch."""
    groups: dict[str, list[UnpairedRow]] = {}
    for row in batch:
        groups.setdefault(row.prompt, []).append(row)
    dealt = [row for group in sorted(groups.values(), key=len, reverse=True) for row in group]
    positions = [*range(0, len(dealt), 2), *range(1, len(dealt), 2)]
    laid_out: list[UnpairedRow | None] = [None] * len(dealt)
    for position, row in zip(positions, dealt):
        laid_out[position] = row
    return [row for row in laid_out if row is not None]


def trained_on(data: TrainingData, settings: TrainingSettings) -> dict[str, int]:
    """What ``settings``' method trains on from this data: ``rows`` (the trainer's dataset rows), ``pairs``
    (given as pairs), ``unpaired`` (thumbs rows given as such) and ``formed_pairs`` (pairs formed from them,
    for a paired method). Raises the refusal of :meth:`TrainingData.paired_for` where a paired method has none."""
    if settings.method_entry.stage.reads_thumbs:
        return {"rows": len(data.thumbs()), "pairs": len(data.pairs), "unpaired": len(data.unpaired), "formed_pairs": 0}
    paired = data.paired_for(settings.method)
    formed = len(paired) - len(data.pairs)
    return {"rows": len(paired), "pairs": len(data.pairs), "unpaired": len(data.unpaired), "formed_pairs": formed}


# --------------------------------------------------------------------------- the recipe


def recipe_rows(
    stage: Stage,
    pairs: list[PreferencePair],
    chat: bool,
    implicit_prompt: bool = False,
    unpaired: list[UnpairedRow] | tuple[UnpairedRow, ...] = (),
) -> list[dict[str, Any]]:
    """The rows of a recipe's data file for ``stage``, as the lab trains them.

    ``implicit_prompt`` (a mixture with the public sets, UltraFeedback and HH-RLHF) writes pairs in their shape:
    the user turn at the head of both conversations, so that they can be concatenated; TRL's KTO script unpairs
    such rows itself. Thumbs rows are written as the lab's KTO rows are made: the chosen rows, then the
    rejected ones, then the thumbs rows, so that neighbours answer other prompts.
    """
    if stage.samples_answers:
        return [prompt_row(prompt, chat) for prompt in distinct_prompts(TrainingData(list(pairs)))]
    if implicit_prompt and chat:
        return [
            {"chosen": _user(p.prompt) + _assistant(p.chosen), "rejected": _user(p.prompt) + _assistant(p.rejected)}
            for p in pairs
        ]
    if stage.reads_thumbs and not implicit_prompt:
        return (
            [thumbs_row(p.prompt, p.chosen, True, chat) for p in pairs]
            + [thumbs_row(p.prompt, p.rejected, False, chat) for p in pairs]
            + [thumbs_row(r.prompt, r.completion, r.label, chat) for r in unpaired]
        )
    return [preference_row(p, chat) for p in pairs]
