"""The calibration matrix (bench/calibration.py) on the embedded model: the verdict must be right
on runs whose answer we know — collapse fails, contradicting labels read no_signal, long runs and
runs that change nothing do not read healthy, and every shipped preset reads healthy at its defaults.

Slow: each case is a real lab run on SmolLM2-135M (about a minute on 2 CPU cores).
"""

import json
import re

import pytest

from bench.calibration import CASES, run_case

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_verdict_is_calibrated(case, output_dir):
    row = run_case("smollm2-135m-instruct", case)
    # every figure behind the verdict, kept for the reader of a CI run (test-output/calibration-*.json)
    name = re.sub(r"[^a-z0-9]+", "-", case.name.lower()).strip("-")
    (output_dir / f"calibration-{name}.json").write_text(json.dumps(row, indent=2))
    assert not row["wrong"], (row["wrong"], row)
    # every figure behind the verdict is present and finite
    for key in ("heldout_accuracy", "kl_to_reference", "final_loss"):
        assert row[key] is not None, key
    assert row["capability_accuracy"][0] is not None and row["capability_accuracy"][1] is not None
