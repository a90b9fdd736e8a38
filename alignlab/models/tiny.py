"""A tiny random causal LM with a locally trained tokenizer, for tests and GPU correctness checks.

It needs no network: the tokenizer is a byte-level BPE trained in a second on the presets' text,
and the model is a 2-layer Llama (or GPT-2) with random weights. ``chat=True`` gives it a ChatML
chat template, like SmolLM2's; ``chat=False`` makes a base model without template or pad token,
like GPT-2. It is saved with ``save_pretrained``, so loading it exercises the same local-path code
as any user's model.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from alignlab.data.presets import PRESETS_DIR

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _corpus() -> list[str]:
    texts = ["Question: Answer: User: Assistant: The quick brown fox jumps over the lazy dog. 0123456789"]
    for path in sorted(PRESETS_DIR.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        texts += data.get("eval_prompts", [])
        for pair in data.get("pairs", []) + data.get("heldout_pairs", []):
            texts += [pair["prompt"], pair["chosen"], pair["rejected"]]
    return texts


def build_tokenizer(chat: bool = True, vocab_size: int = 512) -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator(_corpus(), trainer=trainer)
    if chat:
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|im_end|>", bos_token="<|im_start|>"
        )
        tokenizer.chat_template = CHATML_TEMPLATE
    else:  # like GPT-2: one special token, no pad token, no template
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=backend, eos_token="<|endoftext|>", bos_token="<|endoftext|>"
        )
    return tokenizer


def build_tiny_model(directory: str | Path, chat: bool = True, seed: int = 0, hidden: int = 64) -> Path:
    """Save a tiny random model and its tokenizer to ``directory`` and return the path."""
    directory = Path(directory)
    tokenizer = build_tokenizer(chat=chat)
    torch.manual_seed(seed)
    common = {
        "vocab_size": len(tokenizer),
        "eos_token_id": tokenizer.eos_token_id,
        "bos_token_id": tokenizer.bos_token_id,
    }
    if chat:
        config = LlamaConfig(
            hidden_size=hidden,
            intermediate_size=hidden * 2,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=1024,
            pad_token_id=tokenizer.pad_token_id,
            tie_word_embeddings=True,
            initializer_range=0.3,  # peaked random logits: varied text rather than one repeated token
            **common,
        )
        model = LlamaForCausalLM(config)
    else:
        config = GPT2Config(n_embd=hidden, n_layer=2, n_head=4, n_positions=1024, initializer_range=0.3, **common)
        model = GPT2LMHeadModel(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def build_gpt2_sized_model(directory: str | Path, tokenizer_chat: bool = False, seed: int = 0) -> Path:
    """A GPT-2-size (124M) random model from GPT-2's config, for timings on machines with no hub."""
    directory = Path(directory)
    tokenizer = build_tokenizer(chat=tokenizer_chat, vocab_size=1024)
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=50257, eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id)
    GPT2LMHeadModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
