"""``python -m bench``: where the lab's time goes, as a table and a JSON file (``make bench``).

Sections (``--only`` picks some): ``generation`` (batched vs one prompt at a time), ``training``
(seconds per DPO step: AlignLab vs a plain DPOTrainer script vs a bare PyTorch loop, and the
loss-agreement check), ``lab`` (the whole lab, cold and cached, first call and warm, with peak
memory), ``shift`` (steps and seconds until held-out accuracy reaches 0.75), ``evidence`` (the
compare step on the 300-pair HH-RLHF sample, time and peak memory; ``--evidence-against REV`` sets
another revision's code beside it), ``calibration`` (the verdict on runs whose answer is known:
collapse, contradicting labels, memorising, the shipped presets and the methods at their defaults;
written as ``docs/calibration.md``), ``correctness`` (the tiny model's losses against the bare loop
in fp32), ``scale`` (a 1.1B model: LoRA vs full fine-tuning, GPU only) and ``candidates`` (candidate
training settings against the defaults; slow, so only with ``--candidates`` or ``--only candidates``)
and ``room`` (N = 1, 3, 8 API clients running the whole lab at once on a real server, distinct and
identical requests; slow, so only with ``--only room``) and ``methods`` (DPO, IPO, KTO and ORPO
compared from one click on a real server, and each method's seconds per step and peak memory beside a
plain TRL script of it; only with ``--only methods``) and ``method_defaults`` (the sweep each method's
defaults were chosen from: settings around them, each a real lab run on seed-lab held to the demo's
bar; only with ``--only method_defaults``, ``--methods`` picks methods).
Every figure is a median with its min-max and sample count; ratios come from the same process.
Nothing here passes or fails: the targets are goals, reported as met or not.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the bench never needs a model hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench import (  # noqa: E402 - after the environment above, which the libraries read on import
    calibration,
    candidates,
    correctness,
    evidence,
    generation,
    lab,
    methods,
    room,
    scale,
    shift,
    training,
)

SECTIONS = (
    "correctness",
    "generation",
    "training",
    "lab",
    "shift",
    "evidence",
    "calibration",
    "scale",
    "candidates",
    "room",
    "methods",
    "method_defaults",
)
DEFAULT_SECTIONS = ("generation", "training", "lab", "shift", "evidence", "calibration")
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from alignlab.registry.model_shapes import EMBEDDED_DEFAULT

    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, 1 repeat, 2 timed steps: a smoke test")
    parser.add_argument(
        "--model",
        help=f"model spec, or tiny / tiny-base / gpt2-sized (built locally); default {EMBEDDED_DEFAULT}",
    )
    parser.add_argument("--repeats", type=int, help="runs per figure (default 3; --quick 1)")
    parser.add_argument("--generation-repeats", type=int, help="runs of each generation mode (default 5; --quick 1)")
    parser.add_argument("--timed-steps", type=int, help="DPO steps timed per trainer after 1 warm-up (default 6)")
    parser.add_argument("--device", choices=["cpu", "cuda"], help="default: CUDA when present")
    parser.add_argument("--only", help=f"comma-separated sections out of {', '.join(SECTIONS)}")
    parser.add_argument("--candidates", action="store_true", help="also measure the candidate settings (slow)")
    parser.add_argument("--candidate-names", help="comma-separated subset of the candidates")
    parser.add_argument("--calibration-cases", help="comma-separated subset of the calibration cases (by name)")
    parser.add_argument(
        "--evidence-against",
        metavar="REV",
        help="evidence section: the same measurement with a git revision's code beside this checkout's",
    )
    parser.add_argument(
        "--trl-budget", type=float, default=60.0, help="seconds until plain DPOTrainer stops (min 2 steps)"
    )
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"], help="training section only")
    parser.add_argument("--max-new-tokens", type=int, help="generation section (default: the lab's, 64)")
    parser.add_argument(
        "--warm-runs", type=int, help="labs after the first in each lab process (default 1 on CUDA, 0 on CPU)"
    )
    parser.add_argument("--scale-size", default="1b", choices=["1b", "tiny"], help="scale section's model")
    parser.add_argument("--room-sizes", help="room section: clients per room (default 1,3,8; --quick 1,3)")
    parser.add_argument("--room-steps", type=int, help="room section: DPO steps per lab (default 6)")
    parser.add_argument("--room-tokens", type=int, help="room section: max new tokens per answer (default 64)")
    parser.add_argument(
        "--methods",
        help="methods and method_defaults sections: comma-separated methods (default dpo,ipo,kto,orpo; all)",
    )
    parser.add_argument("--method-steps", type=int, help="methods section: steps per run (default: each method's)")
    parser.add_argument("--out", help="JSON path (default bench/results/<timestamp>.json + latest.json)")
    args = parser.parse_args(argv)
    args.model = args.model or ("tiny" if args.quick else EMBEDDED_DEFAULT)
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.generation_repeats = args.generation_repeats or (1 if args.quick else 5)
    args.timed_steps = args.timed_steps or (2 if args.quick else 6)
    args.room_sizes = [int(n) for n in (args.room_sizes or ("1,3" if args.quick else "1,3,8")).split(",")]
    args.room_steps = args.room_steps or (2 if args.quick else 6)
    args.room_tokens = args.room_tokens or (8 if args.quick else 64)
    sections = args.only.split(",") if args.only else list(DEFAULT_SECTIONS)
    if args.candidates and "candidates" not in sections:
        sections.append("candidates")
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    args.sections = [s for s in SECTIONS if s in sections]
    return args


def _say(text: str) -> None:
    print(f"{datetime.now(UTC):%H:%M:%S} {text}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from alignlab.models.loading import load_model, pick_device
    from alignlab.registry.model_shapes import EMBEDDED_DEFAULT
    from alignlab.registry.settings import GenerationSettings
    from bench.common import BUILT_MODELS, build_model, load_seed_lab, machine, machine_words, quiet

    quiet()

    started = time.perf_counter()
    device = torch.device(args.device) if args.device else pick_device()
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but torch sees no CUDA device")
    workdir = Path(tempfile.mkdtemp(prefix="bench-models-"))
    spec = build_model(args.model, workdir)
    preset = load_seed_lab()
    max_new_tokens = args.max_new_tokens or GenerationSettings().max_new_tokens
    results: dict[str, Any] = {
        "machine": machine(),
        "config": {
            "model": args.model,
            "model_source": spec,
            "device": str(device),
            "repeats": args.repeats,
            "timed_steps": args.timed_steps,
            "sections": args.sections,
            "preset": preset.id,
            "started_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        },
    }
    if "lab" in args.sections:
        # First, before this process has trained anything: a lab worker started after the training
        # section runs its training slower, and no user's lab runs beside a process that trained.
        _say("[bench] lab: the whole lab in fresh processes (cold, then cached) ...")
        on_gpu = device.type == "cuda"
        warm_runs = args.warm_runs if args.warm_runs is not None else (1 if on_gpu else 0)
        results["lab"] = lab.run(spec, args.device, args.repeats, cold_loads=min(args.repeats, 2), warm_runs=warm_runs)
    if "correctness" in args.sections:
        _say("[bench] correctness: tiny model, fp32, AlignLab (TRL) vs the bare loop ...")
        results["correctness"] = correctness.run(device, preset.pairs)
    needs_model = any(s in args.sections for s in ("generation", "training", "shift"))
    loaded = load_model(spec, device=device) if needs_model else None
    if loaded is not None:
        results["config"]["parameters"] = loaded.num_parameters

    if "generation" in args.sections:
        _say("[bench] generation: batched vs one prompt at a time ...")
        results["generation"] = generation.run(
            loaded,
            preset.eval_prompts[:6],
            args.generation_repeats,
            max_new_tokens,
            full_length=args.model in BUILT_MODELS,  # random weights stop at once unless held to the length
        )
    if "training" in args.sections:
        _say("[bench] training: AlignLab vs plain DPOTrainer vs bare loop ...")
        results["training"] = training.run(loaded, preset.pairs, args.timed_steps, args.precision, args.trl_budget)
    if "shift" in args.sections:
        _say("[bench] shift: held-out accuracy after every step ...")
        results["shift"] = shift.run(loaded, preset)
        if "lab" in results:
            step = results["shift"]["shift_step"]
            results["shift"]["seconds_in_lab_runs"] = shift.seconds_in_lab_runs(
                step, results["lab"]["step_elapsed"]
            ).to_dict()
    if "evidence" in args.sections:
        against = f", and with the code of {args.evidence_against}" if args.evidence_against else ""
        _say(f"[bench] evidence: the compare step on 300 HH-RLHF pairs{against} ...")
        repeats = 1 if args.quick else 2
        results["evidence"] = evidence.run(spec, args.device, repeats, against=args.evidence_against)
    if "calibration" in args.sections:
        _say("[bench] calibration: the verdict on runs whose answer is known ...")
        names = args.calibration_cases.split(",") if args.calibration_cases else None
        results["calibration"] = calibration.run(spec, args.device, names)
        # The whole matrix on the embedded model is docs/calibration.md; any other run's goes beside the JSON.
        whole = names is None and args.model == EMBEDDED_DEFAULT
        doc = calibration.DOC if whole else _beside(args.out, "calibration.md")
        calibration.write_markdown(results["calibration"], machine_words(results["machine"]), doc)
        results["calibration"]["markdown"] = str(doc)
    if "scale" in args.sections:
        _say(f"[bench] scale: a {args.scale_size} Llama-shaped model, LoRA vs full fine-tuning ...")
        results["scale"] = scale.run(device, preset.pairs, size=args.scale_size, steps=args.timed_steps)
    if "room" in args.sections:
        _say(f"[bench] room: {args.room_sizes} clients at once on a real server, in a fresh process ...")
        progress = _beside(args.out, "room.partial.json")
        options = {
            "sizes": args.room_sizes,
            "steps": args.room_steps,
            "max_new_tokens": args.room_tokens,
            "progress": str(progress.resolve()),
        }
        results["room"] = room.run(spec, args.device, options)
    if "methods" in args.sections:
        chosen = tuple(args.methods.split(",")) if args.methods else methods.METHODS
        steps = args.method_steps or (2 if args.quick else None)
        _say(f"[bench] methods: {', '.join(chosen)} compared from one click, then each beside plain TRL ...")
        results["methods"] = methods.run(spec, args.device, chosen, steps)
    if "method_defaults" in args.sections:
        _say("[bench] method_defaults: each method around its defaults, a whole lab run each ...")
        results["method_defaults"] = calibration.sweep(
            spec, args.device, args.methods.split(",") if args.methods else None
        )
    if "candidates" in args.sections:
        _say("[bench] candidates: one probed training run each, in fresh processes ...")
        names = args.candidate_names.split(",") if args.candidate_names else None
        progress = _beside(args.out, "candidates.partial.json")
        results["candidates"] = candidates.run(spec, args.device, names, progress)
    shutil.rmtree(workdir, ignore_errors=True)
    results["targets"] = targets(results)
    results["bench_seconds"] = time.perf_counter() - started
    return results


def _beside(out: str | None, name: str) -> Path:
    """A file beside the JSON output (``b.json`` -> ``b.<name>``), or ``bench/results/<name>``."""
    path = Path(out).with_suffix(f".{name}") if out else RESULTS_DIR / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _median(results: dict[str, Any], *path: str) -> float | None:
    node: Any = results
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node.get("median") if isinstance(node, dict) else node


#: The bench's goals: (what, where its figure is in the results, comparison, goal, the setup it names): "any"
#: setup, a GPU, the embedded model on a CPU ("embedded", its 2-core targets) or the GPT-2-size model on a GPU.
TARGETS: list[tuple[str, str, str, float, str]] = [
    ("batched generation >= 3x one-at-a-time (6 prompts)", "generation.speedup", ">=", 3.0, "any"),
    ("AlignLab step <= 1.1x plain DPOTrainer", "training.ratio_alignlab_vs_trl_default", "<=", 1.1, "any"),
    ("AlignLab step <= 1.2x bare PyTorch loop (on GPU)", "training.ratio_alignlab_vs_bare", "<=", 1.2, "gpu"),
    ("seed-lab on embedded default, cached, < 90 s (2 CPU cores)", "lab.figures.total_cached", "<", 90.0, "embedded"),
    ("cached model load < 5 s", "lab.figures.load_cached_fresh_process", "<", 5.0, "any"),
    ("GPT-2-size whole lab < 15 s (H100/H200)", "lab.figures.total_cached", "<", 15.0, "gpt2"),
    ("GPT-2-size training < 5 s (H100/H200)", "lab.figures.train", "<", 5.0, "gpt2"),
    ("GPT-2-size whole lab, first call in a fresh process < 5 s (H100)", "lab.figures.total_cached", "<", 5.0, "gpt2"),
    ("GPT-2-size whole lab, warm call < 2 s (H100)", "lab.figures.total_warm", "<", 2.0, "gpt2"),
]


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The bench's targets, each with the figure it reads and whether this run's setup is the one it names."""
    from alignlab.registry.model_shapes import EMBEDDED_DEFAULT

    config, info = results["config"], results["machine"]
    on_gpu = config["device"].startswith("cuda")
    embedded_2_cores = config["model"] == EMBEDDED_DEFAULT and not on_gpu
    setups = {
        "any": True,
        "gpu": on_gpu,
        "embedded": embedded_2_cores,
        "gpt2": config["model"] == "gpt2-sized" and on_gpu,
    }
    rows = [
        (name, _median(results, *path.split(".")), op, goal, setups[setup]) for name, path, op, goal, setup in TARGETS
    ]
    ms = results.get("methods")
    if ms:
        four = sorted(ms["comparison"].get("methods", "").split(",")) == ["dpo", "ipo", "kto", "orpo"]
        rows.append(
            (
                "four-method comparison (dpo, ipo, kto, orpo), click to table < 240 s (embedded, 2 CPU cores)",
                ms["comparison"]["click_to_table_seconds"],
                "<",
                240.0,
                embedded_2_cores and four,
            )
        )
    rm = results.get("room")
    if rm:
        distinct = [r["ratio"] for n, r in rm["distinct"].items() if int(n) > 1]
        identical = rm["identical"].get(str(max(int(n) for n in rm["identical"])), {})
        clicks = [
            c for kind in ("distinct", "identical") for r in rm[kind].values() for c in r.get("wrong_click_seconds", [])
        ]
        rows += [
            ("distinct requests: makespan <= 1.15x serial sum", max(distinct) if distinct else None, "<=", 1.15, True),
            (
                f"{identical.get('n', '?')} identical requests: makespan <= 1.2x one run",
                identical.get("ratio"),
                "<=",
                1.2,
                True,
            ),
            ("wrong clicks answered < 1 s while the room waits", max(clicks) if clicks else None, "<", 1.0, True),
        ]
    out = []
    for name, value, op, goal, applies in rows:
        met = None
        if value is not None:
            met = value >= goal if op == ">=" else (value <= goal if op == "<=" else value < goal)
        out.append({"target": name, "value": value, "goal": f"{op} {goal:g}", "met": met, "applies_here": applies})
    if info.get("cores") and info["cores"] != 2 and embedded_2_cores:
        out[3]["note"] = f"this machine has {info['cores']} cores, the target names 2"
    return out


def table(results: dict[str, Any]) -> str:
    from bench.common import machine_line

    sections = {  # in the table's order
        "generation": generation.table_rows,
        "training": training.table_rows,
        "correctness": correctness.table_rows,
        "scale": scale.table_rows,
        "lab": lab.table_rows,
        "shift": shift.table_rows,
        "evidence": evidence.table_rows,
        "calibration": calibration.table_rows,
        "method_defaults": partial(calibration.table_rows, label="method defaults"),
        "room": room.table_rows,
        "methods": methods.table_rows,
        "candidates": candidates.table_rows,
    }
    lines = [f"machine: {machine_line(results['machine'])}"]
    c = results["config"]
    lines.append(f"model: {c['model']} ({c.get('parameters', '?')} params) on {c['device']}; repeats {c['repeats']}")
    rows = [row for name, section_rows in sections.items() if results.get(name) for row in section_rows(results[name])]
    for t in results.get("targets", []):
        value = "-" if t["value"] is None else f"{t['value']:.3g}"
        state = "n/a here" if not t["applies_here"] else {True: "met", False: "NOT met", None: "not measured"}[t["met"]]
        if not t["applies_here"] and t["met"] is not None:
            state += f" ({'would be met' if t['met'] else 'would not be met'})"
        rows.append((f"target: {t['target']}", f"{value} (goal {t['goal']}): {state}"))
    width = max(len(r[0]) for r in rows) if rows else 0
    lines += [f"{label:<{width}}  {value}" for label, value in rows]
    lines.append(f"bench took {results['bench_seconds']:.0f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    from alignlab.pipeline.steps import json_ready

    results = json_ready(run(args))
    print(table(results))
    text = json.dumps(results, indent=2)
    if args.out:
        path = Path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    else:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        path = RESULTS_DIR / f"{stamp}.json"
        path.write_text(text)
        (RESULTS_DIR / "latest.json").write_text(text)
    _say(f"[bench] wrote {path}")
    return results


if __name__ == "__main__":
    main()
