"""A 1B-class model through the lab's own ``train_policy``: full fine-tuning, LoRA and QLoRA, time and peak memory.

A Llama-shaped 1.1B model (TinyLlama-1.1B's dimensions) with random weights, built on the GPU
from its config (no hub), held as the lab holds a model (fp32 weights, the cached
model as the reference, a private copy trained under bf16 autocast). One untimed 1-step run first
compiles the kernels for this shape; then each variant trains ``steps`` steps on the seed lab's
pairs and reports its total seconds, its median step after the first, its measured peak CUDA
memory, and the estimate :func:`alignlab.recipe.lab_memory_estimate` computes for it. QLoRA (where
bitsandbytes is installed) loads its 4-bit base from disk as TRL does in the lab, so the model is
saved once in bf16 before that row; its peak includes the lab's resident fp32 model, as in the lab.

Off a GPU the 1.1B row is skipped (fp32 weights, their copy, gradients and AdamW states need
about 20 GB and each step minutes on a CPU); ``size='tiny'`` runs the same code on a tiny shape.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import replace
from typing import Any

import torch

from alignlab.data.pairs import PreferencePair
from alignlab.models.loading import LoadedModel, prepare_tokenizer
from alignlab.models.tiny import build_tokenizer
from alignlab.recipe import bytes_text, lab_memory_estimate
from alignlab.registry.model_shapes import ModelShape, count_text
from alignlab.registry.settings import TrainingSettings
from alignlab.training.run import train_policy
from alignlab.training.trainer import qlora_unavailable

SHAPES: dict[str, dict[str, int]] = {
    "1b": {
        "hidden_size": 2048,
        "intermediate_size": 5632,
        "num_hidden_layers": 22,
        "num_attention_heads": 32,
        "num_key_value_heads": 4,
        "vocab_size": 32000,
    },
    "tiny": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 1024,
    },
}
VARIANTS = {
    "full": {},
    "lora_r16": {"use_lora": True, "lora_rank": 16},
    "qlora_r16": {"use_lora": True, "lora_rank": 16, "use_qlora": True},
}


def build(size: str, device: torch.device) -> tuple[LoadedModel, ModelShape]:
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = prepare_tokenizer(build_tokenizer(chat=True, vocab_size=1024))
    dims = SHAPES[size]
    config = LlamaConfig(
        **dims,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    with torch.device(device):  # initialised where it runs: 1.1B random weights on a CPU take long
        model = LlamaForCausalLM(config).float().eval()
    spec = f"llama-{size}-random"
    loaded = LoadedModel(spec=spec, model=model, tokenizer=tokenizer, source=spec)
    shape = ModelShape.from_config(config.to_dict(), spec, chat=True)
    return loaded, shape


def run(device: torch.device, pairs: list[PreferencePair], size: str = "1b", steps: int = 6) -> dict[str, Any]:
    if size == "1b" and device.type != "cuda":
        return {
            "skipped": "the 1.1B LoRA-vs-full row needs a CUDA GPU: fp32 weights, their copy, gradients and "
            "AdamW states take ~20 GB and minutes per step on a CPU"
        }
    precision = "bf16" if device.type == "cuda" else "fp32"
    started = time.perf_counter()
    loaded, shape = build(size, device)
    out: dict[str, Any] = {
        "size": size,
        "parameters": shape.parameters(),
        "precision": precision,
        "steps": steps,
        "build_seconds": time.perf_counter() - started,
    }
    mark = time.perf_counter()
    train_policy(loaded, pairs, TrainingSettings(steps=1, precision=precision))  # compiles this shape's kernels
    out["compile_run_seconds"] = time.perf_counter() - mark
    scratch = tempfile.TemporaryDirectory(prefix="bench-scale-")
    for name, overrides in VARIANTS.items():
        if overrides.get("use_qlora"):
            if reason := qlora_unavailable():
                out[name] = {"skipped": reason}
                continue
            # TRL loads QLoRA's 4-bit base from disk (as the lab does from the model's source), so the
            # random model is saved first, in bf16; the lab's fp32 copy stays resident, as in the lab.
            mark = time.perf_counter()
            loaded.model.save_pretrained(
                scratch.name, state_dict={k: v.to(torch.bfloat16) for k, v in loaded.model.state_dict().items()}
            )
            loaded = replace(loaded, source=scratch.name)
            out["qlora_save_seconds"] = time.perf_counter() - mark
        settings = TrainingSettings(steps=steps, precision=precision, **overrides)
        marks: list[float] = []

        def on_event(event, marks=marks) -> None:  # noqa: ANN001
            if event.kind == "log":
                if device.type == "cuda":
                    torch.cuda.synchronize()
                marks.append(event.elapsed)

        try:
            result = train_policy(loaded, pairs, settings, on_event=on_event)
        except Exception as error:  # noqa: BLE001 - a row that failed says why; the other rows stand
            if not settings.use_qlora:
                raise
            out[name] = {"failed": f"{type(error).__name__}: {error}"[:500]}
            continue
        step_seconds = [b - a for a, b in zip(marks, marks[1:])]
        out[name] = {
            "seconds": result.seconds,
            "first_step_seconds": marks[0] if marks else None,
            "step_seconds_median": statistics.median(step_seconds) if step_seconds else None,
            "peak_memory_mib": result.peak_memory_bytes / 2**20 if result.peak_memory_bytes else None,
            "estimate_mib": lab_memory_estimate(shape, settings, on_gpu=device.type == "cuda") / 2**20,
            "trainable_parameters": result.trainable_parameters,
            "final_loss": result.step_rows[-1]["loss"] if result.step_rows else None,
            "losses": [row.get("loss") for row in result.step_rows],
        }
        del result
        if device.type == "cuda":
            torch.cuda.empty_cache()
    del loaded
    scratch.cleanup()
    return out


def table_rows(sc: dict[str, Any]) -> list[tuple[str, str]]:
    """The bench table's rows: each variant's seconds, peak memory and estimate."""
    if "skipped" in sc:
        return [("scale: 1.1B LoRA vs full fine-tuning", "skipped: " + sc["skipped"])]
    rows: list[tuple[str, str]] = []
    for name in ("full", "lora_r16", "qlora_r16"):
        v = sc.get(name)
        if v is None:
            continue
        label = f"scale: {count_text(sc['parameters'])} params, {sc['precision']}, {name}, {sc['steps']} steps"
        if "skipped" in v or "failed" in v:
            rows.append((label, "skipped: " + v["skipped"] if "skipped" in v else "FAILED: " + v["failed"]))
            continue
        peak = bytes_text(v["peak_memory_mib"] * 2**20) if v["peak_memory_mib"] else "n/a (no CUDA)"
        rows.append(
            (
                label,
                f"{v['seconds']:.2f} s (first step {v['first_step_seconds']:.2f} s, then "
                f"{v['step_seconds_median']:.3f} s/step); peak {peak}, estimate "
                f"{bytes_text(v['estimate_mib'] * 2**20)}; {count_text(v['trainable_parameters'])} trained",
            )
        )
    return rows
