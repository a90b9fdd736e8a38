"""Candidate training settings, each measured against the defaults (``--candidates``).

Every candidate is one probed training run (:mod:`bench.probe`) in a fresh process, so that its
peak RSS is its own: seconds per step (median after the warm-up step, held-out scoring left
out) and per pair trained, set-up seconds, peak memory, held-out accuracy after every step
(hence the step at which it first reaches 0.75), and drift at the end (KL per token to the
reference on the held-out chosen answers, perplexity on neutral text before and after).
Only the named fields differ from the defaults.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alignlab.registry.settings import TrainingSettings
from bench.common import Figure
from bench.protocol import run_worker

#: name -> the TrainingSettings fields that differ from the defaults
CANDIDATES: dict[str, dict[str, Any]] = {
    "defaults": {},
    "precomputed_reference": {"precompute_ref_log_probs": True},
    "lora_r16": {"use_lora": True},
    "lora_r16_lr5e-4": {"use_lora": True, "learning_rate": 5e-4},
    # bf16 autocast on a CPU without native bf16 takes minutes per step: 1 warm-up + 2 timed steps.
    "bf16": {"precision": "bf16", "steps": 3},
    "batch_size_1": {"batch_size": 1},
    "batch_size_4": {"batch_size": 4},
    "batch_size_8": {"batch_size": 8},
    "steps_3": {"steps": 3},
    "lr_2e-5": {"learning_rate": 2e-5},
    "lr_1e-5": {"learning_rate": 1e-5},
    # Longer runs: held-out accuracy and drift after every step show how many steps each rate needs.
    "lr_5e-5_12_steps": {"learning_rate": 5e-5, "steps": 12},
    "lr_1e-4_12_steps": {"learning_rate": 1e-4, "steps": 12},
    "lr_2e-4_12_steps": {"learning_rate": 2e-4, "steps": 12},
}


def run(spec: str, device: str | None, names: list[str] | None = None, progress: Path | None = None) -> dict[str, Any]:
    """Candidates in the order named (all by default); each result is saved to ``progress`` as it comes."""
    unknown = sorted(set(names or []) - set(CANDIDATES))
    if unknown:
        raise ValueError(f"unknown candidate(s) {', '.join(unknown)}; known: {', '.join(CANDIDATES)}")
    out: dict[str, Any] = {}
    for name in names or list(CANDIDATES):
        overrides = CANDIDATES[name]
        print(f"{datetime.now(UTC):%H:%M:%S} [bench]   candidate {name} ...", file=sys.stderr, flush=True)
        settings = TrainingSettings.from_dict(overrides)
        options = {"settings": settings.to_dict(), "every_step": True}
        try:
            probe = run_worker("probe", spec, device, json.dumps(options))
        except RuntimeError as exc:  # one failing candidate should not cost the others
            out[name] = {"error": str(exc)[-2000:]}
            continue
        out[name] = {
            "overrides": overrides,
            "pairs_per_step": probe["pairs_per_step"],
            "step_seconds": Figure(probe["step_seconds"][1:]).to_dict(),
            # Steps of different sizes (an epoch's last batch is short): per pair compares them fairly.
            "seconds_per_pair": sum(probe["step_seconds"][1:]) / max(1, sum(probe["pairs_per_step"][1:])),
            "setup_seconds": probe["setup_seconds"],
            "train_seconds": probe["setup_seconds"] + sum(probe["step_seconds"]),
            "peak_rss_mib": probe["peak_rss_mib"],
            "cuda_peak_mib": probe["cuda_peak_mib"],
            "shift_step": probe["shift_step"],
            "shift_train_seconds": probe["shift_train_seconds"],
            "heldout_accuracy_per_step": probe["heldout_accuracy"],
            "kl_per_step": probe["kl_per_step"],
            "perplexity_per_step": probe["perplexity_per_step"],
            "final_heldout_accuracy": probe.get("final_heldout_accuracy"),
            "final_heldout_margin": probe.get("final_heldout_margin"),
            "kl_heldout_chosen": probe.get("kl_heldout_chosen"),
            "perplexity_before": probe.get("perplexity_before"),
            "perplexity_after": probe.get("perplexity_after"),
            "losses": probe["losses"],
        }
        if progress is not None:
            progress.write_text(json.dumps(out, indent=2))
    return out


def table_rows(cand: dict[str, Any]) -> list[tuple[str, str]]:
    """The bench table's rows: one per candidate."""
    rows: list[tuple[str, str]] = []
    for name, c in cand.items():
        if "error" in c:
            rows.append((f"candidate {name}", "failed: " + c["error"].splitlines()[-1]))
            continue
        shift_text = f"shift at step {c['shift_step']}" if c["shift_step"] else "no shift"
        rows.append(
            (
                f"candidate {name}",
                f"{c['seconds_per_pair']:.2f} s/pair, setup {c['setup_seconds']:.1f} s, "
                f"train {c['train_seconds']:.1f} s; RSS {c['peak_rss_mib']:.0f} MiB; {shift_text}; final acc "
                f"{c['final_heldout_accuracy']:.2f}; KL {c['kl_heldout_chosen']:.3f}; "
                f"ppl {c['perplexity_before']:.1f}->{c['perplexity_after']:.1f}",
            )
        )
    return rows
