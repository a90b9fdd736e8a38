"""The calibration cases that guard the verdict, on the embedded model: the opening preset (warm-tone) at the defaults
reads healthy with a real win, collapse fails, contradicting labels read no_signal, and every method at its defaults on
seed-lab reads as the lab's own demo (RLHF, read from its reward
model: warning; with half its labels swapped, not healthy). The whole matrix, with long runs, runs that change
nothing and the other presets, is ``make bench ARGS="--only calibration"`` (docs/calibration.md).

Slow: each case is a real lab run on SmolLM2-135M (one to three minutes on a CPU core); the cases run in worker
processes while the rest of the suite runs, each worker on one loaded model and one baseline per source (the
``embedded_runs`` fixture, :mod:`embedded_cases`).
"""

import json

import pytest

from bench.calibration import GUARDS, summary

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("case", GUARDS, ids=[c.name for c in GUARDS])
def test_verdict_is_calibrated(case, embedded_runs, output_dir):
    report = embedded_runs(case)
    row = {"method": case.method, "settings": report["settings"], **summary(case, report)}
    # every figure behind the verdict, kept for the reader of a CI run (test-output/calibration-*.json)
    (output_dir / f"calibration-{case.slug}.json").write_text(json.dumps(row, indent=2))
    assert not row["wrong"], (row["wrong"], row)
    # every figure behind the verdict is present and finite
    for key in ("heldout_accuracy", "kl_to_reference", "final_loss"):
        assert row[key] is not None, key
    assert row["capability_accuracy"][0] is not None and row["capability_accuracy"][1] is not None
