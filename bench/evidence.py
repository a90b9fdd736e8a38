"""Evidence at scale: the compare step on a real 300-pair dataset, and the same with another revision's code.

Anthropic HH-RLHF (``shared/data/hh-rlhf-harmless-test-300.jsonl``, multi-turn prompts of a few hundred
tokens) loaded as the CLI's ``--dataset`` does: 224 training pairs (one has an empty reply), 75 held out,
6 eval prompts. :mod:`bench.compare_step` measures it in a fresh process, so that its peak memory is its own:
the answers' generation, the evidence (the compare step's figures, probes and verdict), time and peak memory,
and a second evaluation for another policy in the same process, as a second run on the same data does.

``against`` (``--evidence-against REV``): the same measurement with REV's own code, in a git worktree of REV
(removed afterwards, also on failure), each of its runs beside one of this checkout's so that a slow spell of
the machine hits both; the two are reported side by side, with how far the figures both compute agree.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from bench.common import Figure, figure_text
from bench.protocol import ROOT, child_env, failure

HH_RLHF = ROOT.parent / "shared" / "data" / "hh-rlhf-harmless-test-300.jsonl"
SCRIPT = Path(__file__).with_name("compare_step.py")
NOW = "now"


def _git(*args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"git {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout.strip()


@contextmanager
def worktree(revision: str) -> Iterator[tuple[Path, str]]:
    """A detached git worktree of ``revision`` in a new temporary folder, and its commit; removed afterwards."""
    try:
        commit = _git("rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}")
    except RuntimeError:
        raise RuntimeError(f"{revision!r} names no commit of this repository") from None
    folder = Path(tempfile.mkdtemp(prefix="bench-evidence-"))
    tree = folder / "checkout"
    try:
        _git("worktree", "add", "--detach", str(tree), commit)
        yield tree, commit
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        _git("worktree", "prune")  # forgets the worktree whose folder is gone


def measure(checkout: Path, spec: str, device: str | None, dataset: Path) -> dict[str, Any]:
    """:mod:`bench.compare_step` with ``checkout``'s code, in a fresh process (its working directory and PYTHONPATH)."""
    # The checkout first; then whatever this process was given (bench/gpu.sh's wheels, say).
    path = os.pathsep.join(filter(None, [str(checkout), os.environ.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory(prefix="bench-compare-step-") as scratch:
        out = Path(scratch) / "result.json"
        proc = subprocess.run(
            # -P: the script's own folder (bench/) is not put on sys.path; only the checkout is, by PYTHONPATH
            [sys.executable, "-P", str(SCRIPT), spec, str(dataset), str(out)],
            cwd=checkout,
            env=child_env(device, {"PYTHONPATH": path}),
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode or not out.is_file():
            raise failure(f"the compare step with the code in {checkout}", proc)
        return json.loads(out.read_text())


def run(
    spec: str, device: str | None, repeats: int = 1, dataset: Path = HH_RLHF, against: str | None = None
) -> dict[str, Any]:
    if not dataset.is_file():
        return {"skipped": f"{dataset} is not here (shared/ travels only with the project's own checkout)"}
    with ExitStack() as stack:
        checkouts = {NOW: ROOT}
        if against:
            tree, commit = stack.enter_context(worktree(against))
            checkouts[against] = tree
        runs: dict[str, list[dict[str, Any]]] = {label: [] for label in checkouts}
        for _ in range(repeats):
            for label, checkout in checkouts.items():  # interleaved, so that a slow spell of the machine hits both
                runs[label].append(measure(checkout, spec, device, dataset))
    out = {"dataset": dataset.name, "pairs": runs[NOW][0]["pairs"], NOW: _side(runs[NOW])}
    if against:
        out["against"] = {"revision": against, "commit": commit, **_side(runs[against])}
        out["speedup"] = _ratios(runs[against], runs[NOW], "evidence_seconds")
        out["repeat_speedup"] = _ratios(runs[against], runs[NOW], "repeat_seconds")
        out["agreement"] = {key: [out["against"]["figures"][key], value] for key, value in out[NOW]["figures"].items()}
    return out


def _side(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One checkout's runs: each figure over the runs, and what the first run computed."""
    first = runs[0]

    def figure(key: str, unit: str = "s") -> dict[str, Any]:
        return Figure([r[key] for r in runs], unit).to_dict()

    return {
        "evidence_seconds": figure("evidence_seconds"),
        "repeat_seconds": figure("repeat_seconds"),
        "generate_seconds": figure("generate_seconds"),
        "peak_rss": figure("peak_rss_mib", "MiB"),
        "rss_before_evaluation": figure("rss_before_mib", "MiB"),
        "figures": first["figures"],
        "verdict": first["verdict"],
        "capability_source": first["capability_source"],
        "capability_pairs": first["capability_pairs"],
    }


def _ratios(theirs: list[dict[str, Any]], ours: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """Run-by-run ``theirs / ours`` of a time (runs side by side, so a slow spell hits both alike)."""
    return Figure([a[key] / b[key] for a, b in zip(theirs, ours)], unit="x").to_dict()


def table_rows(section: dict[str, Any]) -> list[tuple[str, str]]:
    if "skipped" in section:
        return [("evidence: HH-RLHF 300 pairs", "skipped: " + section["skipped"])]

    p = section["pairs"]
    rows = [
        (
            "evidence: dataset",
            f"{section['dataset']}: {p['train']} train, {p['heldout']} held out, {p['eval_prompts']} prompts",
        )
    ]
    sides = {NOW: section[NOW]}
    against = section.get("against")
    if against:
        sides[f"at {against['revision']} ({against['commit'][:10]})"] = against
    for label, side in sides.items():
        capability = (
            f"{side['capability_source']} ({side['capability_pairs']} pairs)" if side["capability_pairs"] else "none"
        )
        rows += [
            (f"evidence: scoring, {label}", figure_text(side["evidence_seconds"])),
            (f"evidence: a second evaluation in the same process, {label}", figure_text(side["repeat_seconds"])),
            (f"evidence: peak RSS of the evaluation process, {label}", figure_text(side["peak_rss"])),
            (f"evidence: generation of the answers, {label}", figure_text(side["generate_seconds"])),
            (f"evidence: verdict; capability probe, {label}", f"{side['verdict'] or '-'}; {capability}"),
        ]
    if against:
        revision = against["revision"]
        agree = ", ".join(
            f"{k} {a:.4f} vs {b:.4f}" for k, (a, b) in section["agreement"].items() if a is not None and b is not None
        )
        rows += [
            (f"evidence: scoring speed-up ({revision} / now)", figure_text(section["speedup"])),
            (f"evidence: second evaluation speed-up ({revision} / now)", figure_text(section["repeat_speedup"])),
            (f"evidence: figures both compute ({revision} vs now)", agree),
        ]
    return rows
