"""``python -m alignlab``: the whole lab headless, for scripts, CI and the curious.

    python -m alignlab lab --model smollm2-135m-instruct --preset seed-lab --out report.json
    python -m alignlab compare --methods dpo,ipo,kto,orpo --preset seed-lab --out runs.json
    python -m alignlab presets
    python -m alignlab tiny-model DIR
    python -m alignlab recipe --preset seed-lab --target-model llama-3.1-8b-instruct --gpus 8 --engine zero3 --out DIR

Bad input ends with one sentence on stderr and exit code 2; nothing is half-written.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import textwrap
from collections.abc import Iterable
from pathlib import Path
from typing import Any

EXIT_BAD_INPUT = 2


class CliError(Exception):
    """Bad input: printed as one clear message, exit code 2."""


#: The flags that set a training setting: the flag -> the :class:`~alignlab.registry.settings.TrainingSettings` field it
#: sets. A flag's type, default, range and help are its field's (:func:`_add_setting`).
SETTING_FLAGS = {
    "--method": "method",
    "--steps": "steps",
    "--beta": "beta",
    "--lr": "learning_rate",
    "--batch-size": "batch_size",
    "--seed": "seed",
    "--loss": "loss_type",
    "--sft-weight": "sft_weight",
    "--max-length": "max_length",
    "--lora": "use_lora",
    "--lora-rank": "lora_rank",
    "--precision": "precision",
}
#: The same flags by their name in ``args`` (``lr``, ``batch_size``) -> the setting each sets.
_SETTING_FLAGS = {flag[2:].replace("-", "_"): name for flag, name in SETTING_FLAGS.items()}


def _add_setting(parser: Any, flag: str, methods: Iterable[str] | None = None, **kwargs: Any) -> None:
    """The flag of a training setting, from its field: type, default (None where each method has its own, which it
    then gets), help with the range or choices (``methods``: the command's), or a switch. A value out of range is
    refused by the settings' own check, with the message the app gives."""
    from alignlab.registry.settings import KNOBS, method_default_text, method_sets

    knob = KNOBS[SETTING_FLAGS[flag]]
    if knob.switch:
        parser.add_argument(flag, action="store_true", help=knob.help, **kwargs)
        return
    own = method_sets(knob.name)
    default = None if own else knob.default
    shown = f"default: {method_default_text(knob.name, methods)}" if own else f"default {default}"
    kind = int if knob.whole else float if knob.number else str
    choices = methods if knob.name == "method" else None
    help_text = knob.doc(shown, choices)
    parser.add_argument(flag, type=kind, default=default, help=help_text.replace("%", "%%"), **kwargs)


def _add_answer_length(parser: argparse.ArgumentParser) -> None:
    from alignlab.registry.settings import GENERATION_KNOBS

    knob = GENERATION_KNOBS["max_new_tokens"]
    parser.add_argument("--max-new-tokens", type=int, default=knob.default, help=knob.doc(f"default {knob.default}"))


def _add_source(parser: argparse.ArgumentParser) -> None:
    """``--preset`` or ``--dataset``, one of them required."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--preset", help="preset id (see `python -m alignlab presets`)")
    source.add_argument("--dataset", help="a preset-format JSON file, or JSON/JSONL/CSV pairs")


def _add_tracking(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--project",
        default=None,
        help="trackio project for the run(s) (default: $ALIGNLAB_TRACKIO_PROJECT, else alignlab)",
    )
    parser.add_argument("--no-track", action="store_true", help="do not record the run(s) in trackio")


def _tracking_project(args: argparse.Namespace) -> tuple[bool, str | None]:
    """(track, project) from ``--no-track`` and ``--project``, the project name checked before any work."""
    from alignlab.takehome.tracking import check_project, project_name

    if args.no_track:
        return False, None
    project = project_name(args.project)
    if project is None:
        return False, None
    try:
        return True, check_project(project)
    except ValueError as exc:
        raise CliError(str(exc)) from exc


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m alignlab",
        description="AlignLab: see preference training (DPO, IPO, KTO, ORPO, SimPO, RLHF) change a model.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_lab_parser(sub)
    _add_compare_parser(sub)
    sub.add_parser("presets", help="list the presets")
    tiny = sub.add_parser("tiny-model", help="save a tiny random model (for tests and demos without weights)")
    tiny.add_argument("directory")
    tiny.add_argument("--base", action="store_true", help="a base model without chat template (like GPT-2)")
    _add_recipe_parser(sub)
    return parser


def _add_lab_parser(sub: Any) -> None:
    """``lab``: the whole lab on one method, every training setting a flag."""
    from alignlab.models.loading import EMBEDDED_DEFAULT

    lab = sub.add_parser("lab", help="run baseline -> train -> compare and print the report")
    lab.add_argument("--model", default=EMBEDDED_DEFAULT, help=f"model spec (default: {EMBEDDED_DEFAULT})")
    _add_source(lab)
    for flag in SETTING_FLAGS:
        _add_setting(lab, flag)
    _add_answer_length(lab)
    _add_tracking(lab)
    lab.add_argument(
        "--judge",
        default="",
        metavar="MODEL",
        help="who judges the win rate: empty (agreement with the data), lab_reward_model (a reward model trained on "
        "the pairs, once per data), or a reward model's Hub id or local folder",
    )
    lab.add_argument(
        "--remedy-of",
        metavar="REPORT.json",
        help="train with the remedy a report names (its health.remedy); give the same --preset or --dataset again; "
        "flags given beside it win",
    )
    lab.add_argument("--out", help="write the report JSON here")
    lab.add_argument("--save-model", metavar="DIR", help="save the aligned model with its model card in DIR")
    lab.add_argument("--overwrite", action="store_true", help="let --save-model replace a folder that is not empty")
    lab.add_argument(
        "--push-to", metavar="OWNER/NAME", help="push the saved model to this Hub repo (private; token: $HF_TOKEN)"
    )


def _add_compare_parser(sub: Any) -> None:
    """``compare``: several methods on the same data, one after another, and their evidence side by side."""
    from alignlab.models.loading import EMBEDDED_DEFAULT
    from alignlab.pipeline.comparison import DEFAULT_METHODS, MAX_METHODS, method_names

    compare = sub.add_parser(
        "compare",
        help="run several methods on the same data and print their evidence side by side",
        description="Load the model and record its answers once, then train and compare each method in turn "
        '(each with its own defaults). Writes {"runs": [report, ...], "table": [...]}.',
    )
    compare.add_argument(
        "--methods",
        default=",".join(DEFAULT_METHODS),
        help=f"comma-separated, up to {MAX_METHODS}: {', '.join(method_names())} "
        f"(a DPO loss variant means DPO with that loss; default {','.join(DEFAULT_METHODS)})",
    )
    compare.add_argument("--model", default=EMBEDDED_DEFAULT, help=f"model spec (default: {EMBEDDED_DEFAULT})")
    _add_source(compare)
    for flag in ("--steps", "--batch-size", "--seed"):  # each run's; the same for every run
        _add_setting(compare, flag)
    _add_answer_length(compare)
    _add_tracking(compare)
    compare.add_argument("--out", help='write {"runs": [report, ...]} here')


def _add_recipe_parser(sub: Any) -> None:
    """``recipe``: the lab's settings and pairs as a folder that launches TRL's own script on a cluster."""
    from alignlab.recipe import DEFAULT_TARGET, ENGINES, KNOWN_TARGETS, PUBLIC_DATASETS, recipe_methods
    from alignlab.registry.settings import KNOBS

    methods = recipe_methods()
    recipe = sub.add_parser(
        "recipe",
        help="export a recipe for a real run (TRL's script under accelerate/DeepSpeed/FSDP)",
        description="Write DIR/train.jsonl, eval.jsonl, config.yaml, run.sh, README.md and accelerate/*.yaml "
        "(rlhf, two stages: also config.reward.yaml for the reward model, train_prompts.jsonl and eval_prompts.jsonl).",
    )
    _add_source(recipe)
    _add_setting(recipe, "--method", methods)
    recipe.add_argument(
        "--target-model",
        default=DEFAULT_TARGET,
        help=f"{', '.join(KNOWN_TARGETS)}, their Hub ids, or a local directory with config.json "
        f"(default {DEFAULT_TARGET})",
    )
    recipe.add_argument("--gpus", type=int, default=1, help="GPUs the run is sized for (default 1)")
    recipe.add_argument("--engine", default="ddp", choices=list(ENGINES), help="launcher (default ddp)")
    recipe.add_argument("--gpu-memory", type=float, default=80.0, help="GiB per GPU (default 80, an H100)")
    adapter = recipe.add_mutually_exclusive_group()
    _add_setting(adapter, "--lora")
    adapter.add_argument("--qlora", action="store_true", help=KNOBS["use_qlora"].help)
    _add_setting(recipe, "--lora-rank")
    recipe.add_argument(
        "--mix",
        action="append",
        choices=list(PUBLIC_DATASETS),
        help="also train on a public preference set (repeatable)",
    )
    recipe.add_argument("--user-repeat", type=int, default=1, help="write your pairs K times in a mixture")
    recipe.add_argument("--target-lr", type=float, default=None, help="the real run's learning rate (default: usual)")
    recipe.add_argument(
        "--as-in-lab",
        action="store_true",
        help="repeat the lab's run exactly (its lr, schedule, steps, batch): to check the recipe against the lab",
    )
    # The lab's settings, as `lab` takes them: beta and the loss carry over; steps and batch set the passes.
    for flag in ("--steps", "--beta", "--lr", "--batch-size", "--seed", "--loss", "--sft-weight"):
        _add_setting(recipe, flag, methods)
    recipe.add_argument("--out", required=True, help="the folder to write")


def _wrap(text: str, indent: str, subsequent: str | None = None) -> str:
    text = " ".join(text.split()) or "(empty)"
    return textwrap.fill(text, width=96, initial_indent=indent, subsequent_indent=subsequent or indent)


def _timings_text(timings: dict[str, float]) -> str:
    return "\n=== Timings (s) ===\n  " + "  ".join(f"{k} {v:.1f}" for k, v in timings.items())


def format_report(report: dict[str, Any]) -> str:
    """The report as a person reads it in a terminal (the words are :mod:`alignlab.verdict.readings`')."""
    from alignlab.verdict.readings import answer_checks, evidence_readings, finding_details, remedy_text, verdict_word

    lines = [f"\n=== Before vs after ({report['changed']} of {len(report['baseline_outputs'])} answers changed) ==="]
    for before, after in zip(report["baseline_outputs"], report["aligned_outputs"]):
        mark = "changed" if before["text"].strip() != after["text"].strip() else "same"
        lines += [
            f"\n> {before['prompt']}  [{mark}]",
            "  before:",
            _wrap(before["text"], "    "),
            "  after:",
            _wrap(after["text"], "    "),
        ]
    lines.append("\n=== Evidence ===")
    lines += [_wrap(reading, "  - ", "    ") for reading in evidence_readings(report["eval"])]
    checks = answer_checks(report["eval"])
    if checks:
        lines.append("\n=== The answers themselves (before -> after) ===")
        for name, before, after, reading in checks:
            line = f"{name}: {before} -> {after} — {reading}" if before else f"{name}: {after} — {reading}"
            lines.append(_wrap(line, "  - ", "    "))
    health = report["health"]
    lines.append(f"\n=== Health: {verdict_word(health)} ===")
    for d in finding_details(health):
        lines.append(_wrap(f"{d['text']} [{d['code']}]" if d.get("code") else d["text"], "  - ", "    "))
    if health.get("best_step") is not None:
        lines.append(f"  best held-out step: {health['best_step']}")
    cure = remedy_text(health)
    if cure:
        lines.append(_wrap(f"Remedy: {cure} Run it with --remedy-of on this report's JSON.", "  ", "    "))
    lines.append(_timings_text(report["timings"]))
    tracked = report.get("tracking")
    if tracked:
        lines.append(_wrap(tracked["dashboard"], "", ""))
        if tracked.get("failed"):
            lines.append(_wrap(f"trackio: {tracked['failed']}; the run went on untracked.", "", ""))
    return "\n".join(lines)


def _show_and_write(text: str, data: dict[str, Any], out: str | None, what: str) -> int:
    """Print the readable form, write the JSON to ``--out`` when given; the command's exit code."""
    print(text)
    if out:
        Path(out).write_text(json.dumps(data, indent=2), encoding="utf-8")
        print(f"\n{what} written to {out}")
    return 0


def settings_from_args(args: argparse.Namespace, **more: Any) -> Any:
    """The training settings the command's flags ask for (:data:`SETTING_FLAGS`, those it has), each method's own
    defaults where a flag is left out, then ``more`` (a recipe's --qlora turns LoRA on); checked by the settings."""
    from alignlab.registry.settings import SettingsError, TrainingSettings

    given = {name: getattr(args, dest) for dest, name in _SETTING_FLAGS.items() if hasattr(args, dest)}
    try:
        return TrainingSettings.for_method(given.pop("method"), **{**given, **more})
    except SettingsError as exc:
        raise CliError(str(exc)) from exc


def given_flags(parser: argparse.ArgumentParser, command: str, argv: list[str]) -> set[str]:
    """The ``dest`` of every option of ``command`` that ``argv`` gives (``--lr 1e-5`` or ``--lr=1e-5``)."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    given = set()
    for action in sub._actions:
        if any(arg == opt or arg.startswith(opt + "=") for opt in action.option_strings for arg in argv):
            given.add(action.dest)
    return given


def _remedy_of(args: argparse.Namespace, preset: Any) -> Any:
    """The settings of ``--remedy-of``'s remedy, with the training flags given beside it applied over them."""
    from alignlab.registry.settings import SettingsError, TrainingSettings
    from alignlab.verdict.remedies import remedy_settings

    path = Path(args.remedy_of)
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CliError(f"--remedy-of: {path} does not exist.") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CliError(f"--remedy-of: {path} is not a readable JSON report ({exc}).") from None
    try:
        settings = remedy_settings(report)
    except ValueError as exc:
        raise CliError(f"--remedy-of {path}: {exc}") from None
    was = (report.get("settings") or {}).get("preset")
    if was and was != preset.id:
        raise CliError(
            f"--remedy-of {path}: that report's run was on {was!r}, not {preset.id!r}: give the same "
            f"--preset or --dataset as its run."
        )
    for dest in args.given & set(_SETTING_FLAGS):
        settings[_SETTING_FLAGS[dest]] = getattr(args, dest)
        if dest == "steps":
            settings["epochs"] = None
    try:
        return TrainingSettings.from_dict(settings)
    except SettingsError as exc:
        raise CliError(f"--remedy-of {path}: {exc}") from exc


def _generation_settings(args: argparse.Namespace) -> Any:
    from alignlab.registry.settings import GenerationSettings, GenerationSettingsError

    try:
        return GenerationSettings(max_new_tokens=args.max_new_tokens)
    except GenerationSettingsError as exc:
        raise CliError(str(exc)) from exc


def _dataset(args: argparse.Namespace) -> Any:
    """The preset or the user's dataset file the flags name."""
    from alignlab.data.importers import load_dataset_file
    from alignlab.data.presets import load_preset

    return load_preset(args.preset) if args.preset else load_dataset_file(args.dataset, seed=args.seed)


class _StepBar:
    """The training's progress bar in the terminal: opened when a run starts training, closed when it ends."""

    def __init__(self) -> None:
        self.bar: Any = None

    def open(self, total: int) -> None:
        from tqdm import tqdm

        # the bar's clock starts with training, so its rate is seconds per step
        self.bar = tqdm(total=total, unit="step", file=sys.stdout, dynamic_ncols=True, disable=False)

    def show(self, step: int, figures: dict[str, Any]) -> None:
        """Draw ``step`` with its own figures."""
        if self.bar is not None:
            self.bar.set_postfix(figures, refresh=False)
            self.bar.update(step - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _lab_inputs(args: argparse.Namespace) -> tuple[Any, Any, Any, dict[str, int]]:
    """The lab's preset, training and generation settings and what the method trains on, each checked before any
    work (a paired method on thumbs rows that form no pair stops here)."""
    from alignlab.training.trl_rows import trained_on

    preset = _dataset(args)
    settings = _remedy_of(args, preset) if args.remedy_of else settings_from_args(args)
    generation = _generation_settings(args)
    used = trained_on(preset.training_data, settings)
    _check_out(args.out)
    return preset, settings, generation, used


def _lab_header(args: argparse.Namespace, preset: Any, settings: Any, used: dict[str, int]) -> None:
    print(
        f"AlignLab: {args.model} on '{preset.id}' ({len(preset.pairs)} pairs, {len(preset.heldout_pairs)} held out), "
        f"method {settings.method_label} "
        f"(beta {settings.beta:g}, lr {settings.learning_rate:g}, {settings.steps} steps)"
    )
    if preset.description and args.dataset:
        print(_wrap(preset.description, "  "))
    if preset.unpaired:
        formed = f", {used['formed_pairs']} of them formed from thumbs rows" if used["formed_pairs"] else ""
        unit = "thumbs rows" if settings.method_entry.stage.reads_thumbs else f"pairs{formed}"
        print(f"  {settings.method_label} trains on {used['rows']} {unit}.")


def _lab_progress(settings: Any, n_pairs: int, bar: _StepBar) -> tuple[Any, Any]:
    """(on_stage, on_event) of the lab: each step's line, then the training's bar with each step's figures."""
    labels = {
        "load_model": "Loading the model",
        "baseline": "Capturing baseline answers",
        "train": f"Training with {settings.method_label}",
        "evaluate": "Comparing before and after",
    }

    def on_stage(name: str) -> None:
        print(f"[{list(labels).index(name) + 1}/4] {labels[name]}...", flush=True)
        if name == "train":
            bar.open(settings.total_steps(n_pairs))

    def on_event(event: Any) -> None:
        if event.kind == "end":
            bar.close()
            return
        # The step's own loss and margin, or, for a stage that logs no margin (RLHF's RL), its reward and KL.
        shown = {"loss": event.row.get("loss", 0.0)}
        for axis in ("margin", "reward", "kl"):
            key = settings.method_entry.key(axis)
            if key is not None and key in event.row:
                shown[axis] = event.row[key]
        if "stage" in event.row:
            shown["stage"] = event.row["stage"]
        bar.show(event.step, {k: v if isinstance(v, str) else f"{v:+.3f}" for k, v in shown.items()})

    return on_stage, on_event


def _run_lab(args: argparse.Namespace) -> int:
    """``lab``: every input checked, then the lab's steps (:func:`alignlab.pipeline.steps.run_lab`'s, the judge checked
    here
    first) with their progress in the terminal; the report printed and written, the model saved where asked."""
    from alignlab.pipeline.steps import check_judge_spec, load_and_baseline, train_and_compare
    from alignlab.takehome.tracking import start_run

    preset, settings, generation, used = _lab_inputs(args)
    track, project = _tracking_project(args)
    _check_save(args)
    check_judge_spec(args.judge)  # a named reward model: where it comes from, what it is, that it fits
    _lab_header(args, preset, settings, used)
    bar = _StepBar()
    on_stage, on_event = _lab_progress(settings, len(preset.pairs), bar)
    tracker = start_run(settings, preset.id, args.model, project=project) if track else None
    try:
        baseline = load_and_baseline(args.model, preset, generation, on_stage)
        report, trained = train_and_compare(
            baseline, preset, settings, on_stage, on_event, tracker=tracker, judge=args.judge
        )
    finally:
        bar.close()
    code = _show_and_write(format_report(report), report, args.out, "Report")
    if args.save_model:
        return max(code, _save_model(args, report, trained.policy))
    return code


def _check_save(args: argparse.Namespace) -> None:
    """--save-model, --push-to: the folder, the repo id and the token checked before any work."""
    import os

    from alignlab.takehome.export import ExportError, check_repo_id, check_target

    if args.push_to and not args.save_model:
        raise CliError("--push-to pushes the folder --save-model writes: give --save-model DIR too.")
    try:
        if args.save_model:
            check_target(args.save_model, args.overwrite)
        if args.push_to:
            check_repo_id(args.push_to)
            if not os.environ.get("HF_TOKEN"):
                raise ExportError("--push-to needs a Hugging Face token with write access in $HF_TOKEN.")
    except ExportError as exc:
        raise CliError(str(exc)) from exc


def _save_model(args: argparse.Namespace, report: dict[str, Any], policy: Any) -> int:
    """Save the run's policy and its card; push it where asked. 1 when the push failed (the folder is kept)."""
    import os

    from alignlab.models.loading import load_model
    from alignlab.takehome.export import ExportError, push_folder, save_model

    folder = save_model(
        report, args.save_model, policy=policy, tokenizer=load_model(args.model).tokenizer, overwrite=True
    )
    print(f"Model saved to {folder} (weights, tokenizer, generation config, model card README.md)")
    if not args.push_to:
        return 0
    try:
        url = push_folder(folder, args.push_to, os.environ.get("HF_TOKEN"))
    except ExportError as exc:
        print(f"error: {exc} The model is saved in {folder}.", file=sys.stderr)
        return 1
    print(f"Pushed to {url}")
    return 0


def _check_out(out: str | None) -> None:
    if out:
        out_dir = Path(out).resolve().parent
        if not out_dir.is_dir():
            raise CliError(f"Cannot write --out {out}: the directory {out_dir} does not exist.")


def format_comparison(result: dict[str, Any]) -> str:
    """The runs side by side, then each prompt's answers: baseline and every run's."""
    from alignlab.verdict.runs_table import markdown_table

    reports = result["runs"]
    lines = ["\n=== Runs side by side ===", markdown_table(result["table"])]
    if reports:
        lines.append("\n=== Answers: baseline, then each run ===")
        for i, row in enumerate(reports[0]["baseline_outputs"]):
            lines += [f"\n> {row['prompt']}", "  baseline:", _wrap(row["text"], "    ")]
            for report, table_row in zip(reports, result["table"]):
                after = report["aligned_outputs"][i]["text"]
                mark = "changed" if after.strip() != row["text"].strip() else "same"
                name = f"{table_row['run']} {table_row['method']}"
                lines += [f"  {name} [{mark}]:", _wrap(after, "    ")]
        lines.append("\n=== Verdicts ===")
        for report, table_row in zip(reports, result["table"]):
            codes = ", ".join(report["health"].get("codes") or []) or "no findings"
            lines.append(f"  {table_row['run']} {table_row['method']}: {table_row['verdict'].upper()} ({codes})")
        tracked = [r["tracking"] for r in reports if r.get("tracking")]
        if tracked:
            names = ", ".join(f"`{t['run']}`" for t in tracked)
            lines.append(_wrap(f"Tracked in trackio: project `{tracked[0]['project']}`, runs {names}.", "", ""))
    lines.append(_timings_text(result["timings"]))
    return "\n".join(lines)


def _compare_progress(n_runs: int, n_pairs: int, bar: _StepBar) -> tuple[Any, Any, Any]:
    """(on_run, on_stage, on_event) of a comparison: each run's line, its steps' lines and its training's bar."""
    current: dict[str, Any] = {}

    def on_run(index: int, run_settings: Any) -> None:
        current["settings"] = run_settings
        print(
            f"\n[run {index + 1}/{n_runs}] {run_settings.method_label} "
            f"(beta {run_settings.beta:g}, lr {run_settings.learning_rate:g}, {run_settings.steps} steps)",
            flush=True,
        )

    def on_stage(name: str) -> None:
        if name == "train":
            bar.open(current["settings"].total_steps(n_pairs))
        elif name in ("load_model", "baseline"):
            print({"load_model": "Loading the model...", "baseline": "Capturing baseline answers..."}[name], flush=True)
        elif name == "evaluate":
            print("  comparing before and after...", flush=True)

    def on_event(event: Any) -> None:
        if event.kind == "end":
            bar.close()
        else:
            bar.show(event.step, {"loss": f"{event.row.get('loss', 0):.3f}"})

    return on_run, on_stage, on_event


def _run_compare(args: argparse.Namespace) -> int:
    """``compare``: every method's settings checked, then each method in turn (:mod:`alignlab.pipeline.comparison`)."""
    from alignlab.pipeline.comparison import comparison_settings, parse_methods, run_comparison
    from alignlab.registry.settings import SettingsError
    from alignlab.training.trl_rows import trained_on

    try:
        names = parse_methods(args.methods)
        settings = comparison_settings(names, steps=args.steps, batch_size=args.batch_size, seed=args.seed)
    except SettingsError as exc:
        raise CliError(str(exc)) from exc
    generation = _generation_settings(args)
    preset = _dataset(args)
    for run_settings in settings:  # a paired method on thumbs rows that form no pair stops here, before any run
        trained_on(preset.training_data, run_settings)
    _check_out(args.out)
    track, project = _tracking_project(args)
    print(
        f"AlignLab: comparing {', '.join(s.method_label for s in settings)} with {args.model} on '{preset.id}' "
        f"({len(preset.pairs)} pairs, {len(preset.heldout_pairs)} held out)"
    )
    bar = _StepBar()
    on_run, on_stage, on_event = _compare_progress(len(settings), len(preset.pairs), bar)
    try:
        result = run_comparison(
            args.model, preset, settings, generation, on_run, on_stage, on_event, track=track, project=project
        )
    finally:
        bar.close()
    return _show_and_write(format_comparison(result), result, args.out, "Comparison")


def _run_recipe(args: argparse.Namespace) -> int:
    from alignlab.recipe import build_recipe, write_recipe

    settings = settings_from_args(args, use_lora=args.lora or args.qlora)
    preset = _dataset(args)
    recipe = build_recipe(
        preset,
        settings,
        target=args.target_model,
        gpus=args.gpus,
        engine=args.engine,
        adapter="qlora" if args.qlora else ("lora" if args.lora else "none"),
        mix=args.mix,
        user_repeat=args.user_repeat,
        scale="lab" if args.as_in_lab else "target",
        gpu_memory_gib=args.gpu_memory,
        learning_rate=args.target_lr,
    )
    out = write_recipe(recipe, args.out)
    print(recipe.summary())
    print(f"\nRecipe written to {out}/ ({', '.join(sorted(recipe.files))}).")
    print(f"Try it small first: {out}/run.sh --cpu --processes 2 --model <a small local model> --max-steps 3")
    print(f"Then on the GPUs:   {out}/run.sh   (README.md says what runs and why)")
    return 0


def _list_presets() -> int:
    from alignlab.data.presets import list_presets

    for preset in list_presets():
        print(
            f"{preset.id:<12} {preset.title}: {len(preset.pairs)} pairs, {len(preset.heldout_pairs)} held out, "
            f"{len(preset.eval_prompts)} eval prompts"
        )
        print(_wrap(preset.description, "             "))
    return 0


def _quiet_libraries() -> None:
    """Keep the terminal for the lab's own progress and report, not library chatter."""
    import warnings

    import datasets
    import transformers

    warnings.filterwarnings("ignore")
    os.environ["TQDM_DISABLE"] = "1"  # TRL's and datasets' own bars; ours passes disable=False
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    logging.getLogger("trl").setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    from alignlab.training.memory import keep_freed_memory

    keep_freed_memory()  # first, before torch's import starts a thread
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "lab":
        args.given = given_flags(parser, "lab", list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    _quiet_libraries()
    from alignlab.data.pairs import DatasetError
    from alignlab.models.loading import ModelLoadError
    from alignlab.recipe import RecipeError

    try:
        if args.command == "presets":
            return _list_presets()
        if args.command == "tiny-model":
            from alignlab.models.tiny import build_tiny_model

            print(build_tiny_model(args.directory, chat=not args.base))
            return 0
        if args.command == "recipe":
            return _run_recipe(args)
        if args.command == "compare":
            return _run_compare(args)
        return _run_lab(args)
    except (CliError, DatasetError, ModelLoadError, RecipeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130
