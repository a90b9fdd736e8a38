"""A recipe's files as text: ``run.sh`` and ``README.md`` rendered from their templates, and the folder written.

``templates/run.sh`` launches each stage's TRL script in order, under accelerate or, with ``--cpu``, over gloo
on CPU processes; ``templates/README.md`` says what runs and why: each setting's mapping from the lab, the memory
per GPU by component for every engine and adapter, and the mixing of public datasets. The templates hold the
layout; this module computes what goes in it.
"""

from __future__ import annotations

import io
import json
import re
import stat
import zipfile
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alignlab.data.presets import Preset
from alignlab.recipe.folder import Recipe, StageRecipe
from alignlab.recipe.memory import ENGINES, GIB, Adapter, MemoryEstimate, reward_model_shape
from alignlab.recipe.stages import PUBLIC_DATASETS, SAMPLING_NO_MIX, RecipeStage, mixable
from alignlab.recipe.targets import RecipeError
from alignlab.registry.model_shapes import count_text
from alignlab.registry.settings import TrainingSettings

if TYPE_CHECKING:
    import jinja2

TEMPLATES = Path(__file__).resolve().parent / "templates"


@cache
def _environment() -> jinja2.Environment:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 - shell and Markdown, not HTML
        undefined=jinja2.StrictUndefined,
    )


def render(template: str, **context: Any) -> str:
    """A template of ``templates/`` with ``context`` filled in; a name missing from it is an error."""
    return _environment().get_template(template).render(**context)


def _run_sh_help_lines(stage_lines: str) -> int:
    """Lines of run.sh's help (its header comment, which ``--help`` prints): the template's, plus the stages'."""
    source = (TEMPLATES / "run.sh").read_text(encoding="utf-8")
    return source.split("set -euo pipefail")[0].count("\n") + stage_lines.count("\n")


# --------------------------------------------------------------------------- run.sh


def run_sh(stages: list[StageRecipe], engine: str, gpus: int, adapter: str, mixed: bool) -> str:
    """run.sh: each stage's TRL script in order, under accelerate, or over gloo on CPU processes with ``--cpu``."""
    several = len(stages) > 1
    scripts = [f"`{s.stage.script}`" for s in stages]
    saved_to: dict[str, str] = {}  # product -> the folder its stage saves it to
    stage_lines, launches = "", ""
    for number, stage in enumerate(stages, 1):
        m, plan = stage.stage, stage.plan
        args = [] if mixed else ['--dataset_name "$HERE"']  # a mixture names its data in the config
        # An earlier stage's product reaches this one as the folder it was saved to (RLOO's reward model).
        args += [f"--{argument} {saved_to[product]}" for argument, product in m.inputs.items()]
        given = "".join(f", the {product.replace('_', ' ')} from {saved_to[product]}/" for product in m.inputs.values())
        saved_to[m.trains] = m.output_dir
        if several:
            stage_lines += f"#   {number}. the {m.product}: {m.script} with {m.config_file}{given} -> {m.output_dir}/\n"
            launches += f"# Stage {number} of {len(stages)}: the {m.product}{given} -> {m.output_dir}/\n"
        numbers = [plan.global_batch, plan.per_device_batch, plan.batch_multiple, plan.per_device_eval_batch or 0]
        launches += " ".join(["launch", m.script, m.config_file, m.unit, *map(str, numbers), *args]) + "\n"
    if several:
        stage_lines = "# The stages, in order (the run stops at a stage that fails):\n" + stage_lines + "#\n"
    return render(
        "run.sh",
        what="TRL's own " + ", then ".join(scripts) + ("," if several else ""),
        gpus=gpus,
        batches=", ".join(
            f"{s.plan.global_batch} {s.stage.unit}" + (f" ({s.stage.product})" if several else "") for s in stages
        ),
        each=" in each stage" if several else "",
        s="s" if several else "",
        scripts="each stage's TRL script" if several else "the TRL script",
        engine=engine,
        stage_lines=stage_lines,
        help_end=_run_sh_help_lines(stage_lines),
        # Local data only: without this, `datasets` may wait minutes for the Hub (docs/architecture.md).
        offline="" if mixed else "export HF_DATASETS_OFFLINE=1  # the data are local files\n",
        cpu_extra="--load_in_4bit false " if adapter == Adapter.QLORA else "",
        qlora_note="; QLoRA's 4-bit base needs CUDA, so it trains as LoRA" if adapter == Adapter.QLORA else "",
        launches=launches,
    )


# --------------------------------------------------------------------------- README


def _data_text(preset: Preset) -> str:
    thumbs = f" and {len(preset.unpaired)} thumbs rows" if preset.unpaired else ""
    return f"{len(preset.pairs)} pairs{thumbs}"


def _value_text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return ", ".join(_value_text(v) for v in value)
    return str(value)


def _gib(value: float) -> str:
    return f"{value / GIB:.1f}"


def _memory_table(memory: MemoryEstimate, gpus: int, gpu_memory_gib: float) -> str:
    lines = ["| component | GiB per GPU | how it is counted |", "|---|---:|---|"]
    for key, value in memory.components.items():
        lines.append(f"| {key} | {_gib(value)} | {memory.notes.get(key, '')} |")
    lines.append(f"| **total** | **{_gib(memory.total)}** | {gpus} x {gpu_memory_gib:g} GiB GPUs |")
    return "\n".join(lines)


def _alternatives_table(recipe: Recipe) -> str:
    """Every engine x adapter at this GPU count, so that the reader sees what else would fit."""
    cells: dict[str, list[str]] = {}
    for name, _, estimate in recipe.alternatives():
        mark = "" if estimate.fits(recipe.gpu_memory_gib) else " (too big)"
        cells.setdefault(name, []).append(f"{_gib(estimate.total)}{mark}")
    lines = ["| engine | full fine-tuning | LoRA | QLoRA |", "|---|---:|---:|---:|"]
    lines += [f"| {ENGINES[name].title} | " + " | ".join(row) + " |" for name, row in cells.items()]
    return "\n".join(lines)


def _verdict(total: float, gpu_memory_gib: float, where: str = "") -> str:
    if total <= gpu_memory_gib * GIB:
        return f"**Fits**: about {_gib(total)} GiB of {gpu_memory_gib:g} GiB per GPU{where}."
    return (
        f"**Does not fit**: about {_gib(total)} GiB per GPU{where} against {gpu_memory_gib:g} GiB. "
        "Pick a row below that fits: more GPUs with ZeRO-3/FSDP, or LoRA/QLoRA."
    )


def _stage_memory_text(recipe: Recipe, stage: StageRecipe, number: int) -> str:
    """One stage's memory: what it holds, then the table (a method of several stages)."""
    m, plan, memory = stage.stage, stage.plan, stage.memory
    if m.samples:
        reference = (
            "no reference copy (the adapter switched off is the reference)"
            if recipe.adapter != Adapter.FULL
            else "the frozen reference the KL penalty compares with"
        )
        what = (
            f"The policy with its gradients and optimizer states, {reference}, the reward model of stage "
            f"{number - 1} (frozen), and sampling: {plan.per_device_batch} answer(s) per GPU per micro-batch, "
            f"{plan.per_device_batch * plan.gradient_accumulation} sampled at once per GPU (a whole step's), each at "
            "most "
            f"{plan.prompt_tokens} prompt tokens (its bytes) + {plan.max_completion_length} answer tokens"
        )
    else:
        scorer = reward_model_shape(recipe.shape)
        what = (
            f"The reward model, the target's backbone under a one-output score head ({count_text(scorer.parameters())} "
            f"parameters: no LM head), with its gradients and optimizer states and no reference; "
            f"{plan.per_device_batch} pair(s) per GPU at {plan.max_length} tokens"
        )
    checkpointing = "on" if plan.gradient_checkpointing else "off"
    return (
        f"### Stage {number}: the {m.product} (`{m.script}`): about {_gib(memory.total)} GiB per GPU\n\n"
        f"{what}, gradient checkpointing {checkpointing}:\n\n"
        + _memory_table(memory, recipe.gpus, recipe.gpu_memory_gib)
    )


def _stages_text(recipe: Recipe) -> str:
    """What each stage of a method of several does, costs and hands on (empty for one stage)."""
    if len(recipe.stages) == 1:
        return ""
    saved_to: dict[str, str] = {}
    items = []
    for number, stage in enumerate(recipe.stages, 1):
        m = stage.stage
        train, evaluate = m.data_files
        data = "the pairs' prompts" if m.samples else "the pairs"
        given = "".join(
            f" `run.sh` hands it the {product.replace('_', ' ')} saved by the stage before "
            f"(`--{argument} {saved_to[product]}`)."
            for argument, product in m.inputs.items()
        )
        saved_to[m.trains] = m.output_dir
        items.append(
            f"{number}. **The {m.product}**: `{m.script}` (TRL's `{m.trainer_class}`) with "
            f"`{m.config_file}`, on {data} (`{train}`, held out: `{evaluate}`): {m.purpose}{given} It is saved to "
            f"`{m.output_dir}/`; about {_gib(stage.memory.total)} GiB per GPU "
            f"({stage.plan.global_batch} {m.unit} per step)."
        )
    return (
        f"\n## The {len(recipe.stages)} stages\n\n`run.sh` runs them in order and stops at a stage that fails; "
        "`--model`, `--max-steps` and `-- ARGS` go to each.\n\n" + "\n".join(items) + "\n"
    )


def _dataset_card(recipe: Recipe) -> str:
    """README.md's YAML header: the folder as a dataset, one config per stage's data (the first is the default)."""
    configs = ""
    for number, stage in enumerate(recipe.stages):
        train, evaluate = stage.stage.data_files
        default = "  default: true\n" if number == 0 else ""
        configs += (
            f"- config_name: {stage.dataset_config}\n{default}  data_files:\n  - split: train\n    path: {train}\n"
            f"  - split: test\n    path: {evaluate}\n"
        )
    first_train, first_eval = recipe.stages[0].stage.data_files
    others = "".join(
        f"\n# Config {s.dataset_config} holds {s.stage.data_files[0]}/{s.stage.data_files[1]} "
        f"({s.stage.config_file} names it)."
        for s in recipe.stages[1:]
    )
    return (
        "---\n"
        f"# This header is also a dataset card: `datasets.load_dataset(<this folder>)` reads {first_train} as the\n"
        f"# train split and {first_eval} as the test split (run.sh passes the folder as --dataset_name).{others}\n"
        f"configs:\n{configs}---\n"
    )


def _adapter_text(adapter: str, settings: TrainingSettings, method: RecipeStage) -> str:
    text = {
        "none": "full fine-tuning",
        "lora": f"LoRA (rank {settings.lora_rank}, all linear layers)",
        "qlora": f"QLoRA (4-bit NF4 base, LoRA rank {settings.lora_rank})",
    }[adapter]
    if adapter != Adapter.FULL and method.lora_task_type:
        text += f", task {method.lora_task_type}: the score head trains whole"
    return text


def _settings_table(recipe: Recipe, stage: StageRecipe, number: int, settings: TrainingSettings) -> str:
    """How the lab's settings map onto one stage's config, with the reason for each value."""
    m, plan, config = stage.stage, stage.plan, stage.config
    lab_steps = f"{settings.steps} steps" if settings.steps is not None else f"{settings.epochs:g} epochs"
    first = (
        ("stage", f"{number}. the {m.product}", f"`{m.script}` ({m.config_class}, `{m.config_file}`): {m.purpose}")
        if len(recipe.stages) > 1
        else ("method", m.title, f"`{m.script}`; {m.purpose}")
    )
    rows = [
        first,
        *[(key, _value_text(config[key]), "as in the lab") for key in m.config_keys(settings) if key in config],
        ("learning rate", f"{plan.learning_rate:g}", plan.reasons.get("learning_rate", "as in the lab")),
        ("schedule", f"{plan.lr_scheduler_type}, warm-up {plan.warmup_ratio:.0%}", "lab: constant, no warm-up"),
        (
            "length",
            f"{plan.num_train_epochs:g} epoch(s)" if plan.max_steps < 0 else f"{plan.max_steps} steps",
            plan.reasons.get("epochs", f"lab: {lab_steps}"),
        ),
        (
            "batch",
            f"{plan.global_batch} {m.unit}/step = {plan.per_device_batch} per GPU x {recipe.gpus} GPU(s) x "
            f"{plan.gradient_accumulation} accumulation",
            plan.reasons.get("global_batch", "as in the lab")
            + f"; lab: {settings.batch_size} {'prompts' if m.samples else 'pairs'}/step",
        ),
    ]
    if "max_length" in config:
        rows.append(("max_length", str(plan.max_length), plan.reasons.get("max_length", "as in the lab")))
    if plan.max_completion_length is not None:
        rows.append(
            (
                "max_completion_length",
                str(plan.max_completion_length),
                plan.reasons.get("max_completion_length", "as in the lab"),
            )
        )
    rows += [
        ("weights", f"{_adapter_text(recipe.adapter, settings, m)}, {plan.dtype}", plan.reasons.get("dtype", "")),
        ("seed", str(settings.seed), "as in the lab"),
    ]
    return "\n".join(["| setting | this run | why |", "|---|---|---|"] + [f"| {a} | {b} | {c} |" for a, b, c in rows])


def readme(
    recipe: Recipe, preset: Preset, settings: TrainingSettings, mix: list[str], user_repeat: int, scale: str
) -> str:
    """The folder's README.md (``templates/README.md``): what runs, how each setting maps, memory, mixing, files."""
    several = len(recipe.stages) > 1
    scale_note = (
        "\n> This recipe repeats the lab's own run (`scale='lab'`): the lab's learning rate, schedule, steps and batch."
        " It exists to check the recipe against the lab; export without it for a real run.\n"
        if scale == "lab"
        else ""
    )
    if several:
        tables = "\n\n".join(
            f"### Stage {number}: the {stage.stage.product}\n\n{_settings_table(recipe, stage, number, settings)}"
            for number, stage in enumerate(recipe.stages, 1)
        )
    else:
        tables = _settings_table(recipe, recipe.stages[0], 1, settings)
    batches = " and ".join(
        f"{s.plan.global_batch} {s.stage.unit}" + (f" ({s.stage.product})" if several else "") for s in recipe.stages
    )
    checkpoints = "step to `output/train.log`; checkpoints (with `trainer_state.json`, the full log) go to " + (
        "`output/checkpoint-*`"
        + "".join(f" (the {s.stage.product}'s to `{s.stage.output_dir}/checkpoint-*`)" for s in recipe.stages[:-1])
        + "."
    )
    return render(
        "README.md",
        dataset_card=_dataset_card(recipe),
        title=recipe.method.title,
        target=recipe.shape.name,
        preset=preset.id,
        runs=_runs_text(recipe),
        scale_note=scale_note,
        gpus=recipe.gpus,
        engine=recipe.engine,
        engine_title=ENGINES[recipe.engine].title,
        batches=batches,
        checkpoints=checkpoints,
        stages_text=_stages_text(recipe),
        data_line=_data_line(recipe, mix),
        hub_id=recipe.shape.hub_id,
        parameters=count_text(recipe.shape.parameters()),
        tables=tables,
        gpu_memory=f"{recipe.gpu_memory_gib:g}",
        adapter_text=_adapter_text(recipe.adapter, settings, recipe.stages[-1].stage),
        memory_text=_memory_text(recipe),
        alternatives_table=_alternatives_table(recipe),
        mix_text="\n".join(_mix_lines(recipe, preset, mix, user_repeat)),
        files_table="\n".join(_files_rows(recipe)),
    )


def _rows_in(recipe: Recipe, name: str) -> int:
    return recipe.files[name].count("\n")


def _data_line(recipe: Recipe, mix: list[str]) -> str:
    """The data files, their rows and their format (a mixture is written in the public sets' paired shape)."""
    first = recipe.stages[0].stage
    train, evaluate = first.data_files
    data_format = "paired" if mix else first.stage.data
    fmt = "conversational (the model's chat template is applied by TRL)" if recipe.shape.chat else "plain text"
    line = (
        f"Data: `{train}` ({_rows_in(recipe, train)} rows), `{evaluate}` ({_rows_in(recipe, evaluate)} rows), TRL's "
        f"{data_format} preference format,\n{fmt}."
    )
    for stage in recipe.stages[1:]:
        train, evaluate = stage.stage.data_files
        line += (
            f" `{train}` ({_rows_in(recipe, train)} rows), `{evaluate}` "
            f"({_rows_in(recipe, evaluate)} rows): their distinct prompts, TRL's prompt-only format."
        )
    return line


def _mix_lines(recipe: Recipe, preset: Preset, mix: list[str], user_repeat: int) -> list[str]:
    """How the user's pairs mix with the public preference sets (or why they do not)."""
    if mix:
        n_train = _rows_in(recipe, recipe.stages[0].stage.data_files[0])
        total = n_train + sum(PUBLIC_DATASETS[name].rows for name in mix)
        return [
            f"This recipe trains on your {len(preset.pairs)} pairs"
            + (f" (written {user_repeat} times)" if user_repeat > 1 else "")
            + " together with:",
            "",
            *[
                f"- `{PUBLIC_DATASETS[n].hub_id}`: {PUBLIC_DATASETS[n].what} (~{PUBLIC_DATASETS[n].rows:,} rows)"
                for n in mix
            ],
            "",
            "TRL's script concatenates them (`datasets:` in config.yaml, the public sets fetched from the Hub), so "
            f"your pairs are about {n_train / total:.2%} of the ~{total:,} rows. Your pairs decide *what* the model "
            "learns about your preference only in proportion to that share: to weigh them more, re-export with "
            "`--user-repeat K` (each pair is written K times; more than a few passes over a small set makes the model "
            "memorise it, see the lab's health check), or write more pairs. The public sets are conversations with the "
            "prompt inside (`chosen`/`rejected` message lists), so your pairs are written in that shape too.",
            "",
            "TRL's script takes an evaluation split only from `dataset_name`, so a mixed recipe does not evaluate "
            "while it trains; `eval.jsonl` holds your held-out pairs for the evaluation afterwards.",
        ]
    if not mixable(recipe.method):
        prompts_only = (
            " (the stage that samples answers, on their prompts)" if any(s.stage.samples for s in recipe.stages) else ""
        )
        return [
            f"This recipe trains on your {_data_text(preset)} alone and evaluates on your "
            f"{len(preset.heldout_pairs)} held-out pairs{prompts_only} every 50 steps. The public preference sets "
            f"are not mixed into {recipe.method.title}'s recipe: {SAMPLING_NO_MIX}. For a bigger dataset of your own, "
            "replace the data files with rows in the same formats.",
        ]
    return [
        f"This recipe trains on your {_data_text(preset)} alone and evaluates on your "
        f"{len(preset.heldout_pairs)} held-out pairs every 50 steps. A real run usually mixes them into a public "
        "preference set, so that the model learns your preference without forgetting the general one. Re-export "
        "with `--mix ultrafeedback` and/or `--mix hh-rlhf`:",
        "",
        *[f"- `{d.hub_id}`: {d.what} (~{d.rows:,} rows)" for d in PUBLIC_DATASETS.values()],
        "",
        "For a bigger dataset of your own, replace train.jsonl/eval.jsonl with rows in the same format.",
    ]


def _memory_text(recipe: Recipe) -> str:
    """The memory verdict and each stage's table (the larger stage decides what fits)."""
    if len(recipe.stages) > 1:
        peak = max(recipe.stages, key=lambda s: s.memory.total)
        return (
            _verdict(peak.memory.total, recipe.gpu_memory_gib, f" at its larger stage, the {peak.stage.product}")
            + " Computed from the model's shape, stage by stage (AlignLab's `alignlab.recipe.estimate_memory`, and\n"
            "`estimate_sampling_memory` for the stage that samples answers); the stages run one after the other, so "
            "the larger decides.\n\n"
            + "\n\n".join(_stage_memory_text(recipe, s, n) for n, s in enumerate(recipe.stages, 1))
            + f"\n\nEvery engine and adapter at {recipe.gpus} GPU(s), one row per GPU, the larger stage (GiB per GPU):"
        )
    plan = recipe.plan
    return (
        _verdict(recipe.memory.total, recipe.gpu_memory_gib)
        + " Computed from the model's shape (AlignLab's `alignlab.recipe.estimate_memory`), for\n"
        f"{plan.per_device_batch} pair(s) per GPU at {plan.max_length} tokens, gradient checkpointing\n"
        f"{'on' if plan.gradient_checkpointing else 'off'}:\n\n"
        f"{_memory_table(recipe.memory, recipe.gpus, recipe.gpu_memory_gib)}\n\n"
        f"Every engine and adapter at {recipe.gpus} GPU(s), one pair per GPU (GiB per GPU):"
    )


def _runs_text(recipe: Recipe) -> str:
    """Which of TRL's scripts run, in order."""
    if len(recipe.stages) > 1:
        runs = (
            f"scripts in {len(recipe.stages)} stages, "
            + ", then ".join(f"`{s.stage.script}` (the code of `trl {s.stage.trl_command}`)" for s in recipe.stages)
            + ","
        )
    else:
        policy = recipe.stages[-1].stage
        runs = f"`{policy.script}` script (the code of\n`trl {policy.trl_command}`)"
    return (
        f"It runs TRL's own {runs} under `accelerate` with DDP, DeepSpeed ZeRO-2/ZeRO-3 or FSDP; nothing here is\n"
        "home-made."
    )


def _files_rows(recipe: Recipe) -> list[str]:
    """The README's table of files: each stage's config, then each stage's data."""
    several = len(recipe.stages) > 1
    rows = [
        f"| `{s.stage.config_file}` | arguments of `{s.stage.script}` (`ScriptArguments`, `{s.stage.config_class}`, "
        f"`ModelConfig`)" + (f": stage {n}, the {s.stage.product}" if several else "") + " |"
        for n, s in enumerate(recipe.stages, 1)
    ]
    rows += [
        f"| `{s.stage.data_files[0]}`, `{s.stage.data_files[1]}` | "
        + ("the pairs' distinct prompts" if s.stage.samples else "the pairs")
        + " |"
        for s in recipe.stages
    ]
    return rows


# --------------------------------------------------------------------------- writing


def write_recipe(recipe: Recipe, out_dir: str | Path) -> Path:
    """Write the recipe's files into ``out_dir`` (created; files already there are replaced)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise RecipeError(f"Cannot write the recipe to '{out}': it is a file, not a directory.")
    out.mkdir(parents=True, exist_ok=True)
    for name, text in recipe.files.items():
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    run = out / "run.sh"
    run.chmod(run.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return out


def recipe_zip(recipe: Recipe, path: str | Path, folder: str = "alignlab-recipe") -> Path:
    """The recipe as one zip file, its files under ``folder/`` (run.sh executable)."""
    path = Path(path)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in sorted(recipe.files.items()):
            info = zipfile.ZipInfo(f"{folder}/{name}", date_time=(2026, 1, 1, 0, 0, 0))
            mode = 0o755 if name.endswith(".sh") else 0o644
            info.external_attr = (stat.S_IFREG | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, text)
    path.write_bytes(buffer.getvalue())
    return path


def logged_rows(recipe_dir: str | Path, output_dir: str = "output") -> list[dict[str, Any]]:
    """The per-step rows TRL logged in a recipe's run (its latest checkpoint's ``trainer_state.json``).

    ``output_dir``: the stage's output folder in the recipe (an earlier stage's, e.g. ``output/reward_model``;
    default: the policy's)."""
    output = Path(recipe_dir) / output_dir
    checkpoints = sorted(
        output.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(re.sub(r"\D", "", p.parent.name) or 0)
    )
    if not checkpoints:
        raise RecipeError(f"No checkpoint with trainer_state.json under {output}: has the run finished?")
    state = json.loads(checkpoints[-1].read_text(encoding="utf-8"))
    return [row for row in state.get("log_history", []) if "loss" in row and "step" in row]
