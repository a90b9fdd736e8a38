"""The compare step on a dataset file, timed in this fresh process with the ``alignlab`` of the checkout it runs in.

Standalone (it imports no bench module): :mod:`bench.evidence` runs it with the working directory and
``PYTHONPATH`` at a checkout, this one or a git worktree of another revision, so that it measures that
checkout's code. It imports only what every revision has: ``load_model``, the dataset file read as the CLI's
``--dataset`` reads it, greedy ``generate``, and ``alignlab.evaluation.gather_evidence(policy, loaded,
heldout_pairs, eval_prompts, aligned, beta)``; where a name moved, the newer module is tried first. What a
revision's compare step does beyond those six arguments (the contrast and capability probes, the verdict) runs
where the revision has it.

The policy is the model with a fixed, seeded perturbation of its weights (scoring costs the same whatever the
weights). Its answers are generated, then the evidence is gathered; then once more for another policy in the
same process, as a second run on the same data does.

    PYTHONPATH=CHECKOUT python -P bench/compare_step.py SPEC DATASET RESULT_JSON   (from CHECKOUT)
"""

from __future__ import annotations

import copy
import importlib
import inspect
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

#: The evidence figures every revision computes.
FIGURES = ("heldout_reward_accuracy", "heldout_mean_margin", "kl_to_reference", "perplexity_after")


def find(*paths: str, required: bool = True) -> Any:
    """The first ``module:name`` of ``paths`` that this checkout has (None when there is none and not ``required``)."""
    for path in paths:
        module, name = path.split(":")
        try:
            found = importlib.import_module(module)
        except ModuleNotFoundError as error:
            if not (module == error.name or module.startswith(f"{error.name}.")):  # there, but fails to import
                raise
            continue
        if hasattr(found, name):
            return getattr(found, name)
    if required:
        raise ImportError(f"this checkout has none of {', '.join(paths)}")
    return None


def peak_rss_mib() -> float:
    """This process's resident-set high-water mark (Linux ``VmHWM``), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def probe_sets(preset: Any, gather_evidence: Any) -> dict[str, Any]:
    """The contrast and capability pairs of the revision's compare step, where its ``gather_evidence`` takes them."""
    capability_probe = find(
        "alignlab.data.presets:capability_probe", "alignlab.presets:capability_probe", required=False
    )
    if capability_probe is None or "capability_pairs" not in inspect.signature(gather_evidence).parameters:
        return {}
    capability, source = capability_probe(preset)
    return {"contrast_pairs": preset.contrast_pairs, "capability_pairs": capability, "capability_source": source}


def verdict(evidence: Any, aligned: list[str], beta: float) -> str | None:
    """The revision's verdict on this evidence (one logged step), where it has one."""
    report = find(
        "alignlab.evidence.degeneration:degeneration_report",
        "alignlab.degeneration:degeneration_report",
        required=False,
    )
    read_health = find("alignlab.verdict.health:read_health", "alignlab.health:read_health", required=False)
    run_facts = find(
        "alignlab.verdict.findings:RunFacts", "alignlab.findings:RunFacts", "alignlab.health:RunFacts", required=False
    )
    if report is None or read_health is None or run_facts is None:
        return None
    typed = (
        find("alignlab.evidence.figures:Evidence", "alignlab.evidence:Evidence", required=False) is not None
    )  # the facts hold the evidence itself
    degeneration = report(aligned, aligned)
    facts = run_facts(
        log_rows=[{"step": 1, "loss": 0.69}],
        beta=beta,
        evidence=evidence if typed else evidence.to_dict(),
        degeneration=degeneration if typed else degeneration.to_dict(),
        changed=0,
        answers=len(aligned),
    )
    return read_health(facts).verdict


def measure(spec: str, dataset: str) -> dict[str, Any]:
    keep_freed_memory = find(
        "alignlab.training.memory:keep_freed_memory", "alignlab.memory:keep_freed_memory", required=False
    )
    if keep_freed_memory is not None:
        keep_freed_memory()  # what the revision's app and CLI do first at start-up
    import torch

    load_model = find("alignlab.models.loading:load_model", "alignlab.models:load_model")
    load_dataset_file = find(
        "alignlab.data.importers:load_dataset_file",
        "alignlab.importers:load_dataset_file",
        "alignlab.presets:load_dataset_file",
    )
    generation_settings = find(
        "alignlab.registry.settings:GenerationSettings",
        "alignlab.settings:GenerationSettings",
        "alignlab.generation:GenerationSettings",
    )
    training_settings = find(
        "alignlab.registry.settings:TrainingSettings",
        "alignlab.settings:TrainingSettings",
        "alignlab.training:TrainingSettings",
    )
    generate = find("alignlab.models.generation:generate", "alignlab.generation:generate")
    gather_evidence = find("alignlab.evidence.evaluation:gather_evidence", "alignlab.evaluation:gather_evidence")

    loaded = load_model(spec)
    preset = load_dataset_file(dataset, seed=0)

    def perturbed(seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        model = copy.deepcopy(loaded.model)
        with torch.no_grad():
            for param in model.parameters():
                param.add_(1e-3 * torch.randn_like(param))
        return model

    policy = perturbed(0)
    rss_before = peak_rss_mib()
    beta = training_settings().beta
    started = time.perf_counter()
    aligned = generate(loaded, preset.eval_prompts, generation_settings(), model=policy)
    generated = time.perf_counter()
    probes = probe_sets(preset, gather_evidence)

    def gather(model: torch.nn.Module) -> Any:
        return gather_evidence(model, loaded, preset.heldout_pairs, preset.eval_prompts, aligned, beta, **probes)

    evidence = gather(policy)
    read = verdict(evidence, aligned, beta)
    ended = time.perf_counter()
    second = perturbed(1)  # another policy, the same reference and data
    again = time.perf_counter()
    gather(second)
    repeated = time.perf_counter()
    return {
        "pairs": {
            "train": len(preset.pairs),
            "heldout": len(preset.heldout_pairs),
            "eval_prompts": len(preset.eval_prompts),
        },
        "generate_seconds": generated - started,
        "evidence_seconds": ended - generated,
        "repeat_seconds": repeated - again,
        "peak_rss_mib": peak_rss_mib(),  # the whole process, the second evaluation included
        "rss_before_mib": rss_before,
        "figures": {key: evidence.to_dict()[key] for key in FIGURES},
        "verdict": read,
        "capability_source": probes.get("capability_source"),
        "capability_pairs": len(probes.get("capability_pairs", [])),
    }


if __name__ == "__main__":
    spec, dataset, out = sys.argv[1:4]
    Path(out).write_text(json.dumps(measure(spec, dataset)))
