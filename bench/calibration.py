"""The calibration matrix: runs whose right verdict we know, on the embedded model.

Each case is a real lab run (``alignlab.lab.run_lab``) with a preset, settings and sometimes a
deliberately broken dataset, and the verdict a person should get. ``make bench ARGS="--only calibration"``
prints the matrix with every figure behind each verdict and writes it as ``docs/calibration.md``
(:func:`markdown`); ``tests/test_calibration.py`` (slow) asserts the same cases, so the verdict's
thresholds cannot drift away from runs where the answer is known.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignlab.methods import METHODS
from alignlab.pairs import PreferencePair
from alignlab.presets import Preset, preset_ids
from bench.protocol import ROOT, run_worker

#: Where the matrix on the embedded model is written.
DOC = ROOT / "docs" / "calibration.md"


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
    guards: bool = False
    """One of the cases that guard the verdict in ``make test`` (``tests/test_calibration.py``); the others run
    in ``make bench`` only."""

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

    @property
    def slug(self) -> str:
        """The name as a file name's part (``seed-lab-at-the-defaults``)."""
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")

    def check(self, verdict: str, codes: list[str], changed: int) -> list[str]:
        """What a run's verdict, codes and changed answers get wrong for this case (empty: calibrated)."""
        wrong = []
        if verdict not in self.verdicts:
            wrong.append(f"verdict {verdict}, expected {' or '.join(self.verdicts)}")
        wrong += [f"missing code {c}" for c in self.codes if c not in codes]
        wrong += [f"unexpected code {c}" for c in self.forbidden if c in codes]
        if changed < self.min_changed:
            wrong.append(f"{changed} answers changed, expected at least {self.min_changed}")
        return wrong


CASES: list[Case] = [
    Case(
        "seed-lab at lr 5e-4 for 20 steps",
        "seed-lab",
        {"learning_rate": 5e-4, "steps": 20},
        verdicts=("failed",),
        codes=("collapse",),
        why="every answer becomes the cue phrase 'Sure! Hope that helps!'",
        guards=True,
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
        guards=True,
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
            codes=("generalises",),
            forbidden=("repetition", "collapse"),
            min_changed=1,
            why="a shipped preset at the defaults is the lab's own demo",
            guards=preset == "seed-lab",  # DPO's demo; the other presets in make bench
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
        guards=not settings,  # each method's demo at its defaults; the sweep around them in make bench
    )


#: Every method but DPO (whose default case is above) at its own defaults on seed-lab: the lab's demo of each.
#: RLHF is the exception: its reward rises and answers change, but online RL never samples answers like the
#: pairs' rejected ones, so the policy's shift ranks held-out pairs backwards and must not read healthy.
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
        guards=True,
    )
)

#: The cases that guard the verdict in ``make test``: collapse, contradicting labels, and every method's demo
#: at its defaults on seed-lab (DPO's is the lab's own).
GUARDS: list[Case] = [case for case in CASES if case.guards]

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
        "wrong": case.check(health["verdict"], health["codes"], report["changed"]),
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
    from alignlab.settings import TrainingSettings

    report, _ = run_lab(spec, case.dataset(), TrainingSettings.for_method(case.method, **case.settings))
    return {"method": case.method, "settings": report["settings"], **summary(case, report)}


def in_process(spec: str, options: dict[str, Any]) -> dict[str, Any]:
    """The worker's mode: the case (``options['case']``) or sweep run (``options['sweep']``) with that index."""
    return run_case(spec, SWEEP[options["sweep"]] if "sweep" in options else CASES[options["case"]])


def run(spec: str, device: str | None, names: list[str] | None = None) -> dict[str, Any]:
    """Every case (or the named ones), each in a fresh process."""
    assert {c.preset for c in CASES} <= set(preset_ids())
    rows = []
    for index, case in enumerate(CASES):
        if names and case.name not in names:
            continue
        rows.append(run_worker("calibrate", spec, device, json.dumps({"case": index})))
    return {"model": spec, "cases": rows, "calibrated": all(not r["wrong"] for r in rows)}


def sweep(spec: str, device: str | None, methods: list[str] | None = None) -> dict[str, Any]:
    """The defaults sweep (:data:`SWEEP`; only the named methods'), each run in a fresh process."""
    rows = [
        run_worker("calibrate", spec, device, json.dumps({"sweep": index}))
        for index, case in enumerate(SWEEP)
        if not methods or case.method in methods
    ]
    return {"model": spec, "cases": rows}


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _change(pair: list[Any], digits: int | None = 2) -> str:
    """``before->after``."""
    return "->".join(str(v) if digits is None else _num(v, digits) for v in pair)


#: The figures behind a verdict: (the bench table's label, the column of docs/calibration.md, the row's value).
FIGURES: list[tuple[str, str, Callable[[dict[str, Any]], str]]] = [
    ("changed", "answers changed", lambda r: f"{r['changed']}/{r['answers']}"),
    ("distinct", "distinct answers", lambda r: _change(r["distinct"], None)),
    ("repeats", "repeated-phrase rate", lambda r: _change(r["repeated_ngram_rate"])),
    ("held-out", "held-out", lambda r: _num(r["heldout_accuracy"])),
    ("contrast", "contrast", lambda r: _num(r["contrast_accuracy"])),
    ("capability", "capability", lambda r: _change(r["capability_accuracy"])),
    ("KL", "KL", lambda r: _num(r["kl_to_reference"], 3)),
    ("ppl", "perplexity", lambda r: _change(r["perplexity"], 1)),
    ("best step", "best step", lambda r: str(r["best_step"])),
]


def _ok(row: dict[str, Any]) -> str:
    return "ok" if not row["wrong"] else "WRONG: " + "; ".join(row["wrong"])


def table_rows(section: dict[str, Any], label: str = "calibration") -> list[tuple[str, str]]:
    """The bench table's rows: one per case, its verdict and every figure behind it."""
    return [
        (
            f"{label}: {r['case']}",
            f"{r['verdict']} {r['codes']} ({_ok(r)}); "
            + ", ".join(f"{name} {value(r)}" for name, _, value in FIGURES)
            + f", final loss {_num(r['final_loss'])}",
        )
        for r in section["cases"]
    ]


HEADER = """# The calibration matrix

Runs whose right verdict is known: each case is a real lab run (`alignlab.lab.run_lab`) with a preset, settings
and sometimes a deliberately broken dataset, beside the verdict a person should get. The cases are defined in
`bench/calibration.py`; `tests/test_calibration.py` asserts the ones that guard the verdict in `make test`
(*guard* in the last column: collapse, contradicting labels, every method's demo at its defaults), so that the verdict's
rules (`alignlab/rules.py`) cannot drift away from runs where the answer is known.

Written by the bench: `make bench ARGS="--only calibration"` runs every case afresh and rewrites this file.
Model: {model}.
Machine: {machine}.

*expected*: the verdicts a person should get; *codes*: the findings' codes, worst first; *ok*: whether the
verdict, the codes and the answers changed are what the case asks (else WRONG, and why). The figures: eval
answers changed after training; distinct answers and the repeated-phrase rate (the share of an answer's
3-word phrases that repeat an earlier one) before->after; held-out and contrast preference accuracy after
training; capability accuracy on general pairs before->after; KL per answer token to the reference;
perplexity on a neutral text before->after; the step at which the live held-out curve peaked.
"""


def _model_words(spec: str) -> str:
    from alignlab.model_shapes import EMBEDDED_DEFAULT, known_shape

    shape = known_shape(spec)
    words = f"`{spec}`" + (f" ({shape.hub_id})" if shape else "")
    return words + (", the lab's embedded model" if spec == EMBEDDED_DEFAULT else "")


def markdown(section: dict[str, Any], machine: str) -> str:
    """The matrix as ``docs/calibration.md``: a short header, then one table row per case."""
    columns = ["case", "why", "expected", "verdict", "codes", "ok", *(column for _, column, _ in FIGURES), "make test"]
    lines = [
        HEADER.format(model=_model_words(section["model"]), machine=machine),
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
    ]
    guards = {case.name for case in GUARDS}
    for r in section["cases"]:
        cells = [r["case"], r["why"], " or ".join(r["expected"]), r["verdict"], ", ".join(r["codes"]), _ok(r)]
        cells += [value(r) for _, _, value in FIGURES]
        cells.append("guard" if r["case"] in guards else "")
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def write_markdown(section: dict[str, Any], machine: str, path: Path = DOC) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(markdown(section, machine))
    return path
