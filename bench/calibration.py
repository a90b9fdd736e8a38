"""The calibration family: runs whose right verdict we know, generated, on the embedded model.

Each case is a real lab run (``alignlab.pipeline.steps.run_lab``) on one of the family's sources (each shipped preset
and
the shared HH-RLHF sample), clean or with half its labels swapped at random, over-trained or moved too little,
or another method at its defaults, beside the verdict a person should get. ``make bench ARGS="--only
calibration"`` runs the family, prints every figure behind each verdict, and writes the confusion matrix
(expected reading against verdict) and every case to ``docs/calibration.md`` (:func:`markdown`), with the
targets the family must meet (:data:`TARGETS`); ``tests/test_calibration.py`` (slow) asserts the core cases
(:data:`GUARDS`), so the verdict's rules cannot drift away from runs where the answer is known.
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignlab.data.pairs import PreferencePair
from alignlab.data.presets import Preset, preset_ids
from alignlab.registry.methods import METHODS
from alignlab.verdict.readings import settings_text
from bench.protocol import ROOT, run_worker

#: Where the family's matrix on the embedded model is written.
DOC = ROOT / "docs" / "calibration.md"
#: The shared HH-RLHF sample (``../shared/data``): real preference data the rules were never fitted to.
HH_RLHF = ROOT.parent / "shared" / "data" / "hh-rlhf-harmless-test-300.jsonl"
HH_SOURCE = "hh-rlhf"
#: The sample's first rows the family uses: a quarter held out (24 pairs), the rest to train on.
HH_ROWS = 96
#: The family's sources: each shipped preset, then the HH-RLHF sample.
PRESETS = ("seed-lab", "concise", "warm-tone")
SOURCES = (*PRESETS, HH_SOURCE)
#: The two random patterns of swapped labels on each source.
SWAP_SEEDS = (1, 2)
#: The preset the app opens on (*Run the whole lab*): at the defaults it must read healthy with a real win over the
#: original model's answers and the contrast pairs ranked beyond the cue; its clean case guards that in make test.
OPENING = "warm-tone"
#: Where the guards' other cases run (swapped labels, over-training, each method's demo): the lab's first preset,
#: whose preference (politeness) the embedded instruct model already has, so its win rate reads no_win.
GUARDED = "seed-lab"
NOT_HEALTHY = ("warning", "failed")


def source_dataset(source: str) -> Preset:
    """A family source as a lab dataset: a shipped preset, or the HH-RLHF sample's first :data:`HH_ROWS` rows."""
    from alignlab.data.importers import load_dataset_file
    from alignlab.data.presets import load_preset

    if source != HH_SOURCE:
        return load_preset(source)
    if not HH_RLHF.is_file():
        raise FileNotFoundError(f"the HH-RLHF sample is not at {HH_RLHF}")
    lines = HH_RLHF.read_text().splitlines()[:HH_ROWS]
    with tempfile.TemporaryDirectory(prefix="calibration-hh-") as folder:
        path = Path(folder) / f"{HH_SOURCE}.jsonl"
        path.write_text("\n".join(lines) + "\n")
        preset = load_dataset_file(path, seed=0)
    return dataclasses.replace(preset, id=HH_SOURCE, title="HH-RLHF sample", description="")


def swapped_half(preset: Preset, seed: int) -> Preset:
    """``preset`` with chosen and rejected swapped on half of its training and of its held-out pairs, the pairs
    picked at random (``seed``), unrelated to any feature of the answers: labels that contradict each other."""
    rng = random.Random(seed)

    def swap(pairs: list[PreferencePair]) -> list[PreferencePair]:
        flipped = set(rng.sample(range(len(pairs)), len(pairs) // 2))
        return [PreferencePair(p.prompt, p.rejected, p.chosen) if i in flipped else p for i, p in enumerate(pairs)]

    return dataclasses.replace(
        preset, id=f"{preset.id}-swapped-{seed}", pairs=swap(preset.pairs), heldout_pairs=swap(preset.heldout_pairs)
    )


@dataclass(frozen=True)
class Case:
    """One calibration run and what its verdict must say."""

    name: str
    source: str
    """A shipped preset's id, or :data:`HH_SOURCE`."""
    kind: str
    """The case's family: ``clean``, ``swapped``, ``over-trained``, ``too small a step`` or ``method demo``."""
    settings: dict[str, Any] = field(default_factory=dict)
    """Settings fields that differ from the method's own defaults."""
    method: str = "dpo"
    swap_seed: int | None = None
    """Swap chosen and rejected on a random half of the pairs (training and held-out alike) with this seed."""
    verdicts: tuple[str, ...] = ("healthy",)
    """Acceptable verdicts."""
    codes: tuple[str, ...] = ()
    """Codes that must be among the findings."""
    forbidden: tuple[str, ...] = ()
    """Codes that must not be."""
    min_changed: int = 0
    why: str = ""
    guards: bool = False
    """One of the core cases ``make test`` runs (``tests/test_calibration.py``); the family runs in ``make bench``."""

    def dataset(self) -> Preset:
        preset = source_dataset(self.source)
        return preset if self.swap_seed is None else swapped_half(preset, self.swap_seed)

    @property
    def expected(self) -> str:
        """The reading a person should get, as the confusion matrix's row: 'healthy', 'not healthy', 'failed', ..."""
        if set(self.verdicts) == set(NOT_HEALTHY):
            return "not healthy"
        return " or ".join(self.verdicts)

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


def _clean(source: str) -> Case:
    if source == OPENING:
        return Case(
            f"{source} at the defaults",
            source,
            "clean",
            codes=("generalises", "beyond_cue", "win"),
            forbidden=("repetition", "collapse", "garbled", "capability_loss"),
            min_changed=1,
            why="the app's opening preset at the defaults: a behaviour the model lacks, learnt beyond its cue, "
            "with a real win over the original answers and no knowledge lost",
            guards=True,
        )
    if source == GUARDED:
        return Case(
            f"{source} at the defaults",
            source,
            "clean",
            codes=("generalises", "no_win"),
            forbidden=("repetition", "collapse", "garbled", "win"),
            min_changed=1,
            why="clean labels for a preference (politeness) the instruct model already has: pairs ranked right, "
            "no win over answers that were polite already",
        )
    return Case(
        f"{source} at the defaults",
        source,
        "clean",
        codes=("generalises",),
        forbidden=("repetition", "collapse", "garbled"),
        min_changed=1,
        why="clean labels at the defaults: the lab's own demo"
        if source != HH_SOURCE
        else "real preference data, clean labels, at the defaults; the clean target allows it to miss: six steps of"
        " two pairs are few for HH harmlessness, whose chosen and rejected answers differ in little but stance",
    )


def _swapped(source: str, seed: int) -> Case:
    return Case(
        f"{source} with half the labels swapped (pattern {seed})",
        source,
        "swapped",
        swap_seed=seed,
        verdicts=NOT_HEALTHY,
        forbidden=("generalises",),
        why="a random half of the pairs contradict the rest: there is no preference to learn",
        guards=source == GUARDED and seed == SWAP_SEEDS[0],
    )


def _over_trained(preset: str) -> Case:
    return Case(
        f"{preset} at lr 5e-4 for 20 steps",
        preset,
        "over-trained",
        {"learning_rate": 5e-4, "steps": 20},
        verdicts=("failed",),
        why="far too large a step for far too long: the answers collapse, loop or stop making sense",
        guards=preset == GUARDED,
    )


def _too_small(preset: str) -> Case:
    return Case(
        f"{preset} at lr 1e-8",
        preset,
        "too small a step",
        {"learning_rate": 1e-8},
        verdicts=NOT_HEALTHY,
        codes=("no_change",),
        forbidden=("generalises",),
        why="a step too small to move the model: nothing changed, and nothing may read as learnt",
    )


def _method_demo(method: str, preset: str = GUARDED) -> Case:
    """A method at its own defaults on a preset: the lab's demo of that method in a comparison (RLHF on the
    guarded preset: see below). Those on the guarded preset guard the verdict."""
    if method == "rlhf" and preset == GUARDED:
        # RLHF is read from its reward model and the win rate. Its reward model ranks pairs it never saw right and
        # the reward rises; online RL samples its own answers, and to seed-lab's prompts those were polite already,
        # so they do not beat the original's (no_win), as DPO's do not.
        return Case(
            f"rlhf on {GUARDED} at its defaults",
            GUARDED,
            "method demo",
            method="rlhf",
            codes=("reward_model_right", "reward_rising", "no_win"),
            forbidden=("repetition", "collapse", "garbled", "win"),
            min_changed=1,
            why="read from its reward model, which is right, and from what the policy writes, which does not beat "
            "answers that were polite already: healthy, with no win",
            guards=True,
        )
    return Case(
        f"{method} on {preset} at its defaults",
        preset,
        "method demo",
        method=method,
        forbidden=("repetition", "collapse", "garbled"),
        min_changed=1,
        why=f"{method}'s defaults are the method's demo in a comparison",
        guards=preset == GUARDED,
    )


def _rlhf_swapped(seed: int) -> Case:
    return Case(
        f"rlhf on {GUARDED} with half the labels swapped (pattern {seed})",
        GUARDED,
        "swapped",
        method="rlhf",
        swap_seed=seed,
        verdicts=NOT_HEALTHY,
        forbidden=("reward_model_right", "win"),
        why="a random half of the pairs contradict the rest: its reward model has no preference to learn, and the "
        "policy none to take on",
        guards=seed == SWAP_SEEDS[0],
    )


def family() -> list[Case]:
    """The generated family: each source clean and with half its labels swapped (two random patterns each);
    over-training and too small a step on two presets; each method but DPO at its defaults on each preset (DPO's
    are the presets' clean cases); RLHF, judged by its reward model, with half the labels swapped."""
    cases = []
    for source in SOURCES:
        cases.append(_clean(source))
        cases += [_swapped(source, seed) for seed in SWAP_SEEDS]
    cases += [_over_trained(preset) for preset in (GUARDED, "warm-tone")]
    cases += [_too_small(preset) for preset in (GUARDED, "concise")]
    cases += [_method_demo(method, preset) for preset in PRESETS for method in METHODS if method != "dpo"]
    cases.append(_rlhf_swapped(SWAP_SEEDS[0]))
    return cases


CASES: list[Case] = family()

#: The core cases that guard the verdict in ``make test``: the opening preset clean (its win), the guarded preset with
#: swapped labels and over-trained, and every other method's demo on it.
GUARDS: list[Case] = [case for case in CASES if case.guards]


@dataclass(frozen=True)
class Target:
    """A promise the family keeps: among its cases of ``kinds`` (and ``sources``), at most ``allowed`` read
    otherwise than ``verdicts``."""

    text: str
    kinds: tuple[str, ...]
    verdicts: tuple[str, ...]
    allowed: int = 0
    sources: tuple[str, ...] = SOURCES

    def misses(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            r
            for r in rows
            if r["kind"] in self.kinds and r["source"] in self.sources and r["verdict"] not in self.verdicts
        ]

    def met(self, rows: list[dict[str, Any]]) -> bool:
        return len(self.misses(rows)) <= self.allowed


TARGETS: list[Target] = [
    Target("no healthy verdict for swapped labels", ("swapped",), NOT_HEALTHY),
    Target("no healthy verdict for over-training (collapse)", ("over-trained",), NOT_HEALTHY),
    Target("no healthy verdict for a run that changed nothing", ("too small a step",), NOT_HEALTHY),
    Target("the clean cases healthy in all but at most one", ("clean",), ("healthy",), allowed=1),
]


def _demo_case(method: str, settings: dict[str, Any], why: str = "") -> Case:
    """A method on the guarded preset held to the demo's bar (the defaults sweep's cases)."""
    label = settings_text(settings)
    return Case(
        f"{method} on {GUARDED} at {label}",
        GUARDED,
        "method demo",
        dict(settings),
        method=method,
        forbidden=("repetition", "collapse"),
        min_changed=1,
        why=why or f"{method} around its defaults",
    )


#: The measurements each method's defaults were chosen from (``--only method_defaults``): settings around the
#: defaults, each a real lab run on the guarded preset held to the demo's bar. Kept so a change of defaults can be
#: re-measured.
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


def _counted(ev: dict[str, Any], accuracy: str, count: str) -> dict[str, Any]:
    return {"accuracy": ev.get(accuracy), "count": ev.get(count)}


def summary(case: Case, report: dict[str, Any]) -> dict[str, Any]:
    """The figures behind a case's verdict (one bench table row)."""
    ev, deg, health = report["eval"], report["eval"]["degeneration"], report["health"]
    return {
        "case": case.name,
        "source": case.source,
        "kind": case.kind,
        "why": case.why,
        "verdict": health["verdict"],
        "codes": health["codes"],
        "best_step": health["best_step"],
        "expected": list(case.verdicts),
        "expected_reading": case.expected,
        "wrong": case.check(health["verdict"], health["codes"], report["changed"]),
        "changed": report["changed"],
        "answers": len(report["aligned_outputs"]),
        "distinct": [deg["distinct_answers_before"], deg["distinct_answers_after"]],
        "repeated_ngram_rate": [deg["repeated_ngram_rate_before"], deg["repeated_ngram_rate_after"]],
        "looping_answers": [deg["looping_answers_before"], deg["looping_answers_after"]],
        "garbled_answers": [deg.get("garbled_answers_before", 0), deg.get("garbled_answers_after", 0)],
        "mean_words": [deg["mean_words_before"], deg["mean_words_after"]],
        "new_common_phrases": deg["new_common_phrases"],
        "heldout_accuracy": ev["heldout_reward_accuracy"],
        "heldout": _counted(ev, "heldout_reward_accuracy", "heldout_count"),
        "heldout_p_value": ev.get("heldout_p_value"),
        "contrast_accuracy": ev["contrast_accuracy"],
        "contrast": _counted(ev, "contrast_accuracy", "contrast_count"),
        "capability_accuracy": [ev["capability_accuracy_before"], ev["capability_accuracy_after"]],
        "checked": [
            _counted(ev, "checked_capability_before", "checked_capability_count"),
            _counted(ev, "checked_capability_after", "checked_capability_count"),
        ],
        "win": {
            key: ev.get(key) for key in ("win_rate", "win_count", "wins", "win_ties", "win_interval", "win_p_value")
        }
        | {"usable": (ev.get("judge") or {}).get("usable")},
        "reward_model": ev.get("reward_model"),
        "kl_to_reference": ev["kl_to_reference"],
        "perplexity": [ev["perplexity_before"], ev["perplexity_after"]],
        "final_loss": next((r["loss"] for r in reversed(report["log_history"]) if "loss" in r), None),
        "seconds": report["timings"].get("total"),
        "answers_after": [row["text"] for row in report["aligned_outputs"]],
    }


#: Verdicts from best to worst: a remedy made a run better when its verdict moved left.
VERDICT_RANK = {"healthy": 0, "warning": 1, "failed": 2}


def remedy_row(spec: str, dataset: Preset, report: dict[str, Any]) -> dict[str, Any] | None:
    """The report's remedy (``health.remedy``) applied: a second real run on the same data with its settings, and
    whether the verdict got better (None where the report names no remedy)."""
    from alignlab.pipeline.steps import run_lab
    from alignlab.registry.settings import TrainingSettings

    found = report["health"].get("remedy")
    if not found:
        return None
    after, _ = run_lab(spec, dataset, TrainingSettings.from_dict(found["settings"]))
    before_verdict, after_verdict = report["health"]["verdict"], after["health"]["verdict"]
    return {
        "code": found["code"],
        "changes": found["changes"],
        "because": found["because"],
        "verdict_before": before_verdict,
        "verdict_after": after_verdict,
        "codes_after": after["health"]["codes"],
        "better": VERDICT_RANK[after_verdict] < VERDICT_RANK[before_verdict],
    }


def run_case(spec: str, case: Case, remedies: bool = True) -> dict[str, Any]:
    """Run one case in this process, then its remedy where the verdict names one; returns its summary."""
    from alignlab.pipeline.steps import run_lab
    from alignlab.registry.settings import TrainingSettings

    dataset = case.dataset()
    report, _ = run_lab(spec, dataset, TrainingSettings.for_method(case.method, **case.settings))
    row = {"method": case.method, "settings": report["settings"], **summary(case, report)}
    row["remedy"] = remedy_row(spec, dataset, report) if remedies else None
    return row


def in_process(spec: str, options: dict[str, Any]) -> dict[str, Any]:
    """The worker's mode: the case (``options['case']``) or sweep run (``options['sweep']``) with that index."""
    if "sweep" in options:
        return run_case(spec, SWEEP[options["sweep"]], remedies=False)
    return run_case(spec, CASES[options["case"]])


def run(spec: str, device: str | None, names: list[str] | None = None) -> dict[str, Any]:
    """Every case of the family (or the named ones), each in a fresh process; the HH-RLHF cases are skipped, and
    said to be, where the shared sample is not on this machine."""
    assert {c.source for c in CASES} - {HH_SOURCE} <= set(preset_ids())
    rows, skipped = [], []
    started = time.perf_counter()
    for index, case in enumerate(CASES):
        if names and case.name not in names:
            continue
        if case.source == HH_SOURCE and not HH_RLHF.is_file():
            skipped.append(f"{case.name}: the HH-RLHF sample is not at {HH_RLHF}")
            continue
        rows.append(run_worker("calibrate", spec, device, json.dumps({"case": index})))
    return {
        "model": spec,
        "cases": rows,
        "skipped": skipped,
        "seconds": round(time.perf_counter() - started, 1),
        "calibrated": all(not r["wrong"] for r in rows),
        "targets": [
            {"target": t.text, "met": t.met(rows), "misses": [r["case"] for r in t.misses(rows)]} for t in TARGETS
        ]
        + [remedy_target(rows)],
    }


#: The remedies' promise: applied to the family's cases that get one, the verdict gets better in this share.
REMEDY_TARGET = 0.8


def remedy_target(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Whether the remedies made the verdict better in at least :data:`REMEDY_TARGET` of the cases that got one."""
    tried = [r for r in rows if r.get("remedy")]
    better = [r for r in tried if r["remedy"]["better"]]
    return {
        "target": f"a remedy makes the verdict better in at least 4 of 5 cases that get one ({len(better)} of "
        f"{len(tried)})",
        "met": bool(tried) and len(better) >= REMEDY_TARGET * len(tried),
        "misses": [r["case"] for r in tried if not r["remedy"]["better"]],
    }


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


def _ranked(counted: dict[str, Any] | None, accuracy: float | None) -> str:
    """'12/14 (60–96%)' where the count is known, else the accuracy."""
    from alignlab.evidence.stats import Proportion

    ranking = Proportion.of((counted or {}).get("accuracy"), (counted or {}).get("count"))
    return ranking.text() if ranking is not None else _num(accuracy)


def _win(win: dict[str, Any]) -> str:
    """'10/14 won, 71% (45–88%), p = 0.09' (ties count half), or why it is not read."""
    from alignlab.evidence.stats import percent_range

    if not win.get("win_count"):
        return "-"
    if not win.get("usable"):
        return "judge blind"
    text = f"{win['wins']}/{win['win_count']} won"
    if win.get("win_ties"):
        text += f", {win['win_ties']} tied"
    return f"{text}, {win['win_rate']:.0%} ({percent_range(tuple(win['win_interval']))}), p = {win['win_p_value']:.2g}"


def _reward_model(judged: dict[str, Any] | None) -> str:
    """A reward model's held-out / contrast ranking, or '-' for a method without one."""
    if not judged:
        return "-"
    return " / ".join(
        _ranked({"accuracy": judged.get(f"{name}_accuracy"), "count": judged.get(f"{name}_count")}, None)
        for name in ("heldout", "contrast")
    )


#: The figures behind a verdict: (the bench table's label, the column of docs/calibration.md, the row's value).
FIGURES: list[tuple[str, str, Callable[[dict[str, Any]], str]]] = [
    ("changed", "answers changed", lambda r: f"{r['changed']}/{r['answers']}"),
    ("distinct", "distinct answers", lambda r: _change(r["distinct"], None)),
    ("repeats", "repeated-phrase rate", lambda r: _change(r["repeated_ngram_rate"])),
    ("held-out", "held-out", lambda r: _ranked(r.get("heldout"), r["heldout_accuracy"])),
    ("contrast", "contrast", lambda r: _ranked(r.get("contrast"), r["contrast_accuracy"])),
    ("garbled", "garbled answers", lambda r: _change(r.get("garbled_answers", [0, 0]), None)),
    ("capability", "capability", lambda r: _change(r["capability_accuracy"])),
    ("checked", "checked answers", lambda r: "->".join(_ranked(c, None) for c in r.get("checked") or [{}, {}])),
    ("win rate", "win rate", lambda r: _win(r.get("win") or {})),
    ("reward model", "reward model", lambda r: _reward_model(r.get("reward_model"))),
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


HEADER = """# The calibration family

Runs whose right verdict is known, generated by `bench/calibration.py`: each shipped preset and the shared
HH-RLHF sample (its first {hh_rows} pairs), clean and with half the labels swapped at random (two patterns each,
training and held-out pairs alike); over-training (lr 5e-4 for 20 steps) and too small a step (lr 1e-8) on two
presets; each method at its defaults on each preset, and RLHF with half the labels swapped. Each case is a real
lab run (`alignlab.pipeline.steps.run_lab`) beside the reading a person should get. `tests/test_calibration.py`
asserts the core cases in `make test` (*guard* in the last column), so that the verdict's rules
(`alignlab/verdict/rules.py`) cannot
drift away from runs where the answer is known; the rules decide success by tests against chance
(`alignlab/evidence/stats.py`), not by fractions fitted to these cases.

Written by the bench: `make bench ARGS="--only calibration"` runs the family afresh and rewrites this file.
Model: {model}.
Machine: {machine}.
The family took {minutes:.0f} minutes ({cases} cases, each in a fresh process).
"""

LEGEND = """*expected*: the verdicts a person should get; *codes*: the findings' codes, worst first; *ok*: whether the
verdict, the codes and the answers changed are what the case asks (else WRONG, and why). The figures: eval
answers changed after training; distinct answers and the repeated-phrase rate (the share of an answer's 3-word
phrases that repeat an earlier one) before->after; held-out and contrast pairs ranked right after training, with
the count and the 95% interval; answers the original model finds garbled before->after; capability accuracy on
general pairs before->after; the checked questions answered right before->after; the win rate against the
original model on the held-out prompts (the agreement judge; ties count half; the p-value of a one-sided sign
test against 50%); a reward-model method's own reward model on held-out / contrast pairs; KL per answer token to
the reference; perplexity on a neutral text before->after; the step at which the live held-out curve peaked.
"""

#: The confusion matrix's columns, in order.
VERDICTS = ("healthy", "warning", "failed")


def confusion(rows: list[dict[str, Any]]) -> list[str]:
    """Expected reading against verdict: a Markdown table of counts, with the codes behind each cell."""
    expected = list(dict.fromkeys(r["expected_reading"] for r in rows))
    lines = ["| expected \\ verdict | " + " | ".join(VERDICTS) + " |", "|---|" + "---|" * len(VERDICTS)]
    for reading in expected:
        cells = []
        for verdict in VERDICTS:
            hits = [r for r in rows if r["expected_reading"] == reading and r["verdict"] == verdict]
            cells.append(str(len(hits)) if hits else "")
        lines.append(f"| {reading} | " + " | ".join(cells) + " |")
    return lines


def targets_lines(section: dict[str, Any]) -> list[str]:
    lines = []
    for target in section.get("targets") or []:
        misses = f" (otherwise: {', '.join(target['misses'])})" if target["misses"] else ""
        lines.append(f"- {'met' if target['met'] else 'NOT MET'}: {target['target']}{misses}")
    lines += [f"- skipped: {note}" for note in section.get("skipped") or []]
    return lines


def _model_words(spec: str) -> str:
    from alignlab.registry.model_shapes import EMBEDDED_DEFAULT, known_shape

    shape = known_shape(spec)
    words = f"`{spec}`" + (f" ({shape.hub_id})" if shape else "")
    return words + (", the lab's embedded model" if spec == EMBEDDED_DEFAULT else "")


def markdown(section: dict[str, Any], machine: str) -> str:
    """The family as ``docs/calibration.md``: a short header, the confusion matrix, the targets, then one table
    row per case."""
    rows = section["cases"]
    columns = ["case", "why", "expected", "verdict", "codes", "ok", *(column for _, column, _ in FIGURES), "make test"]
    header = HEADER.format(
        hh_rows=HH_ROWS,
        model=_model_words(section["model"]),
        machine=machine,
        minutes=(section.get("seconds") or 0) / 60,
        cases=len(rows),
    )
    lines = [header, "## Expected reading against verdict", "", *confusion(rows), "", "## Targets", ""]
    lines += [*targets_lines(section), "", "## Remedies", "", REMEDY_LEGEND, *remedy_lines(rows)]
    lines += ["", "## Win rate at each method's defaults", "", WIN_LEGEND, *win_lines(rows)]
    lines += ["", "## Every case", "", LEGEND]
    lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    guards = {case.name for case in GUARDS}
    for r in rows:
        cells = [r["case"], r["why"], " or ".join(r["expected"]), r["verdict"], ", ".join(r["codes"]), _ok(r)]
        cells += [value(r) for _, _, value in FIGURES]
        cells.append("guard" if r["case"] in guards else "")
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


REMEDY_LEGEND = """Each case whose verdict names a remedy (`health.remedy`: the cure of its most severe finding that has
one, none while the data itself is the problem), run again on the same data with the remedy's settings: the verdict
before and after, and whether it got better.
"""


def remedy_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The remedies' table: one row per case that got one."""
    tried = [r for r in rows if r.get("remedy")]
    if not tried:
        return ["No case got a remedy."]
    columns = ["case", "finding", "remedy", "why", "verdict before", "verdict after", "codes after", "better"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in tried:
        cure = r["remedy"]
        changes = settings_text(cure["changes"])
        cells = [
            r["case"],
            cure["code"],
            changes,
            cure["because"],
            cure["verdict_before"],
            cure["verdict_after"],
            ", ".join(cure["codes_after"]),
            "better" if cure["better"] else "NOT better",
        ]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return lines


WIN_LEGEND = """What each method writes at its own defaults against what the original model wrote, on each preset's
held-out prompts (the agreement judge; ties count half; the p-value of a one-sided sign test against 50%): DPO's
are the presets' clean cases, the others' their method demos.
"""


def win_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Method x preset: the win rate of each method's run at its defaults."""
    at_defaults = {(r["method"], r["source"]): r for r in rows if r["kind"] in ("clean", "method demo")}
    sources = [s for s in SOURCES if any(src == s for _, src in at_defaults)]
    lines = ["| method | " + " | ".join(sources) + " |", "|---|" + "---|" * len(sources)]
    for method in METHODS:
        found = [at_defaults.get((method, s)) for s in sources]
        cells = [_win(r.get("win") or {}) if r else "-" for r in found]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def write_markdown(section: dict[str, Any], machine: str, path: Path = DOC) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(markdown(section, machine))
    return path
