"""Evidence at scale: the compare step on a real 300-pair dataset, the code before issue 8 vs now.

Anthropic HH-RLHF (``shared/data/hh-rlhf-harmless-test-300.jsonl``, multi-turn prompts of a few
hundred tokens) loaded as the CLI's ``--dataset`` does: 225 training pairs, 75 held out, 6 eval
prompts. Each implementation runs in its own fresh process (:mod:`bench.worker`), so that its peak
memory is its own, on the same policy (the reference with a fixed, seeded perturbation of its
weights: scoring costs the same whatever the weights): the after-answers are generated, then
the evidence is gathered. ``legacy`` is :mod:`bench.legacy_evidence` (the code before issue 8),
``current`` is :func:`alignlab.lab.compare` plus the output-level checks and the verdict. Both
must agree on the figures they share. ``current`` then gathers the evidence once more for another
policy in the same process, as a second run on the same data does (the reference's scores are
kept per process, :class:`alignlab.evaluation.ReferenceScores`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.common import Figure, run_worker

HH_RLHF = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh-rlhf-harmless-test-300.jsonl"


def run(spec: str, device: str | None, repeats: int = 1, dataset: Path = HH_RLHF) -> dict[str, Any]:
    if not dataset.is_file():
        return {"skipped": f"{dataset} is not here (shared/ travels only with the project's own checkout)"}
    runs: dict[str, list[dict[str, Any]]] = {"legacy": [], "current": []}
    for _ in range(repeats):
        for impl in runs:  # interleaved, so that a slow spell of the machine hits both
            runs[impl].append(run_worker("evidence", spec, device, json.dumps({"impl": impl, "dataset": str(dataset)})))
    figures = {
        impl: {
            "evidence_seconds": Figure([r["evidence_seconds"] for r in rs]).to_dict(),
            "generate_seconds": Figure([r["generate_seconds"] for r in rs]).to_dict(),
            "peak_rss": Figure([r["peak_rss_mib"] for r in rs], unit="MiB").to_dict(),
            "rss_before_evaluation": Figure([r["rss_before_mib"] for r in rs], unit="MiB").to_dict(),
        }
        for impl, rs in runs.items()
    }
    legacy, current = runs["legacy"][0], runs["current"][0]
    speedup = Figure(
        [lg["evidence_seconds"] / cu["evidence_seconds"] for lg, cu in zip(runs["legacy"], runs["current"])], unit="x"
    )
    repeat = [r["extra"].get("repeat_evidence_seconds") for r in runs["current"]]
    repeat = [x for x in repeat if x is not None]
    extra_figures = {}
    if repeat:
        extra_figures = {
            "repeat_seconds": Figure(repeat).to_dict(),
            "repeat_speedup": Figure(
                [lg["evidence_seconds"] / x for lg, x in zip(runs["legacy"], repeat)], unit="x"
            ).to_dict(),
        }
    return {
        **extra_figures,
        "dataset": str(dataset.name),
        "pairs": current["pairs"],
        "figures": figures,
        "speedup": speedup.to_dict(),
        "agreement": {
            key: [legacy["figures"][key], current["figures"][key]]
            for key in ("heldout_reward_accuracy", "heldout_mean_margin", "kl_to_reference", "perplexity_after")
        },
        "current_extra": current["extra"],
    }


def table_rows(section: dict[str, Any]) -> list[tuple[str, str]]:
    from bench.common import Figure as F

    if "skipped" in section:
        return [("evidence: HH-RLHF 300 pairs", "skipped: " + section["skipped"])]

    def fig(d: dict[str, Any]) -> str:
        return F(d["samples"], d["unit"]).text()

    p = section["pairs"]
    head = f"evidence ({section['dataset']}: {p['train']} train, {p['heldout']} held out, {p['eval_prompts']} prompts)"
    rows = []
    for impl, label in (("legacy", "before issue 8"), ("current", "now")):
        f = section["figures"][impl]
        rows += [
            (f"{head}: scoring, {label}", fig(f["evidence_seconds"])),
            (f"evidence: peak RSS of the evaluation process, {label}", fig(f["peak_rss"])),
        ]
    rows.append(("evidence: scoring speed-up (before / now)", fig(section["speedup"])))
    repeats = section.get("repeat_seconds")
    if repeats:
        rows.append(("evidence: a second run on the same data, same process (reference scores kept)", fig(repeats)))
        rows.append(("evidence: speed-up of that second run (before / now)", fig(section["repeat_speedup"])))
    rows.append(
        (
            "evidence: generation of the after-answers (same code both)",
            fig(section["figures"]["current"]["generate_seconds"]),
        )
    )
    agree = ", ".join(
        f"{k} {a:.4f} vs {b:.4f}" for k, (a, b) in section["agreement"].items() if a is not None and b is not None
    )
    rows.append(("evidence: figures both compute (before vs now)", agree))
    return rows
