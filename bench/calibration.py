"""The calibration matrix: runs whose right verdict we know, on the embedded model (issue 8).

Each case is a real lab run (``alignlab.lab.run_lab``) with a preset, settings and sometimes a
deliberately broken dataset, and the verdict a person should get. ``make bench`` prints the matrix
with every figure behind each verdict; ``tests/test_calibration.py`` (slow) asserts the same cases,
so the verdict's thresholds cannot drift away from runs where the answer is known.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from alignlab.methods import METHODS
from alignlab.presets import PreferencePair, Preset, preset_ids


@dataclass(frozen=True)
class Case:
    """One calibration run and what its verdict must say."""

    name: str
    preset: str
    settings: dict[str, Any] = field(default_factory=dict)
    """Settings fields that differ from the method's own defaults."""
    method: str = "dpo"
    swap_half: bool = False
    """Swap chosen and rejected on every other pair (training and held-out alike): labels that contradict."""
    verdicts: tuple[str, ...] = ("healthy",)
    """Acceptable verdicts."""
    codes: tuple[str, ...] = ()
    """Codes that must be among the findings."""
    forbidden: tuple[str, ...] = ()
    """Codes that must not be."""
    min_changed: int = 0
    why: str = ""

    def dataset(self) -> Preset:
        from alignlab.presets import load_preset

        preset = load_preset(self.preset)
        if not self.swap_half:
            return preset

        def swap(pairs: list[PreferencePair]) -> list[PreferencePair]:
            return [PreferencePair(p.prompt, p.rejected, p.chosen) if i % 2 else p for i, p in enumerate(pairs)]

        return dataclasses.replace(
            preset, id=f"{preset.id}-swapped", pairs=swap(preset.pairs), heldout_pairs=swap(preset.heldout_pairs)
        )

    def check(self, report: dict[str, Any]) -> list[str]:
        """What the report gets wrong for this case (empty: the verdict is calibrated)."""
        health = report["health"]
        wrong = []
        if health["verdict"] not in self.verdicts:
            wrong.append(f"verdict {health['verdict']}, expected {' or '.join(self.verdicts)}")
        wrong += [f"missing code {c}" for c in self.codes if c not in health["codes"]]
        wrong += [f"unexpected code {c}" for c in self.forbidden if c in health["codes"]]
        if report["changed"] < self.min_changed:
            wrong.append(f"{report['changed']} answers changed, expected at least {self.min_changed}")
        return wrong


CASES: list[Case] = [
    Case(
        "seed-lab at lr 5e-4 for 20 steps",
        "seed-lab",
        {"learning_rate": 5e-4, "steps": 20},
        verdicts=("failed",),
        codes=("collapse",),
        why="every answer becomes the cue phrase 'Sure! Hope that helps!'",
    ),
    Case(
        "seed-lab at the default lr for 30 steps",
        "seed-lab",
        {"steps": 30},
        verdicts=("warning", "failed"),
        why="far past the point where held-out evidence stops improving: memorising",
    ),
    Case(
        "seed-lab with half the labels swapped",
        "seed-lab",
        swap_half=True,
        verdicts=("failed",),
        codes=("no_signal",),
        why="the pairs contradict each other, so there is no preference to learn",
    ),
    Case(
        "seed-lab at lr 1e-7 (too small to move)",
        "seed-lab",
        {"learning_rate": 1e-7},
        verdicts=("warning", "failed"),
        codes=("no_change",),
        why="a run that changed nothing must not read healthy",
    ),
    *[
        Case(
            f"{preset} at the defaults",
            preset,
            verdicts=("healthy",),
            forbidden=("repetition", "collapse"),
            min_changed=1,
            why="a shipped preset at the defaults is the lab's own demo",
        )
        for preset in ("seed-lab", "concise", "warm-tone")
    ],
]


def _demo_case(method: str, settings: dict[str, Any] | None = None, why: str = "") -> Case:
    """A method on seed-lab that must read like the lab's own demo: healthy, an answer changed, no loops."""
    label = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in (settings or {}).items())
    return Case(
        f"{method} on seed-lab at " + (label or "its defaults"),
        "seed-lab",
        dict(settings or {}),
        method=method,
        verdicts=("healthy",),
        forbidden=("repetition", "collapse"),
        min_changed=1,
        why=why or f"{method}'s defaults are the method's demo in a comparison",
    )


#: Every method but DPO (whose default case is above) at its own defaults on seed-lab: the lab's demo of each.
#: RLHF is the exception, measured: its reward rises and answers change, but online RL never samples answers like
#: the pairs' rejected ones, so the policy's shift ranks held-out pairs backwards (0.17) and must not read healthy.
CASES += [_demo_case(name) for name in METHODS if name not in ("dpo", "rlhf")]
CASES.append(
    Case(
        "rlhf on seed-lab at its defaults",
        "seed-lab",
        method="rlhf",
        verdicts=("warning",),
        codes=("no_signal", "reward_rising"),
        forbidden=("repetition", "collapse"),
        min_changed=1,
        why="the reward rises, but the policy's shift ranks held-out pairs backwards: not healthy, not a failure",
    )
)

#: The measurements each method's defaults were chosen from (``--only method_defaults``): settings around the
#: defaults, each a real lab run on seed-lab held to the demo's bar. Kept so a change of defaults can be re-measured.
SWEEP: list[Case] = [
    *[_demo_case("ipo", {"beta": beta, "learning_rate": 2e-5, "sft_weight": 0.0}) for beta in (0.1, 0.25, 0.5, 1.0)],
    *[
        _demo_case("ipo", {"beta": beta, "learning_rate": lr, "sft_weight": sft})
        for beta, lr, sft in ((0.5, 1e-5, 1.0), (0.5, 1e-5, 2.0), (0.5, 2e-6, 1.0), (0.5, 5e-6, 2.0), (1.0, 5e-6, 1.0))
    ],
    *[_demo_case("orpo", {"learning_rate": lr, "beta": 0.1}) for lr in (2e-5, 1e-5, 5e-6)],
    _demo_case("orpo", {"learning_rate": 1e-5, "beta": 0.5}),
    *[_demo_case("rlhf", {"learning_rate": lr}) for lr in (2e-5, 5e-5, 1e-4)],
]


def summary(case: Case, report: dict[str, Any]) -> dict[str, Any]:
    """The figures behind a case's verdict (one bench table row)."""
    ev, deg, health = report["eval"], report["eval"]["degeneration"], report["health"]
    return {
        "case": case.name,
        "why": case.why,
        "verdict": health["verdict"],
        "codes": health["codes"],
        "best_step": health["best_step"],
        "expected": list(case.verdicts),
        "wrong": case.check(report),
        "changed": report["changed"],
        "answers": len(report["aligned_outputs"]),
        "distinct": [deg["distinct_answers_before"], deg["distinct_answers_after"]],
        "repeated_ngram_rate": [deg["repeated_ngram_rate_before"], deg["repeated_ngram_rate_after"]],
        "looping_answers": [deg["looping_answers_before"], deg["looping_answers_after"]],
        "mean_words": [deg["mean_words_before"], deg["mean_words_after"]],
        "new_common_phrases": deg["new_common_phrases"],
        "heldout_accuracy": ev["heldout_reward_accuracy"],
        "contrast_accuracy": ev["contrast_accuracy"],
        "capability_accuracy": [ev["capability_accuracy_before"], ev["capability_accuracy_after"]],
        "kl_to_reference": ev["kl_to_reference"],
        "perplexity": [ev["perplexity_before"], ev["perplexity_after"]],
        "final_loss": next((r["loss"] for r in reversed(report["log_history"]) if "loss" in r), None),
        "seconds": report["timings"].get("total"),
        "answers_after": [row["text"] for row in report["aligned_outputs"]],
    }


def run_case(spec: str, case: Case) -> dict[str, Any]:
    """Run one case in this process; returns its summary."""
    from alignlab.lab import run_lab
    from alignlab.training import TrainingSettings

    report, _ = run_lab(spec, case.dataset(), TrainingSettings.for_method(case.method, **case.settings))
    return {"method": case.method, "settings": report["settings"], **summary(case, report)}


def run(spec: str, device: str | None, names: list[str] | None = None) -> dict[str, Any]:
    """Every case (or the named ones), each in a fresh process."""
    from bench.common import run_worker

    assert set(p for c in CASES for p in [c.preset]) <= set(preset_ids())
    rows = []
    for index, case in enumerate(CASES):
        if names and case.name not in names:
            continue
        rows.append(run_worker("calibrate", spec, device, json.dumps({"case": index})))
    return {"model": spec, "cases": rows, "calibrated": all(not r["wrong"] for r in rows)}


def sweep(spec: str, device: str | None, methods: list[str] | None = None) -> dict[str, Any]:
    """The defaults sweep (:data:`SWEEP`; only the named methods'), each run in a fresh process."""
    from bench.common import run_worker

    rows = [
        run_worker("calibrate", spec, device, json.dumps({"sweep": index}))
        for index, case in enumerate(SWEEP)
        if not methods or case.method in methods
    ]
    return {"model": spec, "cases": rows}


def table_rows(section: dict[str, Any], label: str = "calibration") -> list[tuple[str, str]]:
    def pct(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    rows = []
    for r in section["cases"]:
        ok = "ok" if not r["wrong"] else "WRONG: " + "; ".join(r["wrong"])
        rows.append(
            (
                f"{label}: {r['case']}",
                f"{r['verdict']} {r['codes']} ({ok}); changed {r['changed']}/{r['answers']}, distinct "
                f"{r['distinct'][0]}->{r['distinct'][1]}, repeats {r['repeated_ngram_rate'][0]:.2f}->"
                f"{r['repeated_ngram_rate'][1]:.2f}, held-out {pct(r['heldout_accuracy'])}, contrast "
                f"{pct(r['contrast_accuracy'])}, capability {pct(r['capability_accuracy'][0])}->"
                f"{pct(r['capability_accuracy'][1])}, KL {pct(r['kl_to_reference'])}, ppl "
                f"{pct(r['perplexity'][0])}->{pct(r['perplexity'][1])}, best step {r['best_step']}, "
                f"final loss {pct(r['final_loss'])}",
            )
        )
    return rows
