"""The exported recipe: model shapes, the memory estimate, the files, and a real 2-process run of it."""

from __future__ import annotations

import json
import math
import os
import stat
import subprocess
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from alignlab.cli import main
from alignlab.data.pairs import PreferencePair, TrainingData, UnpairedRow
from alignlab.data.presets import load_preset
from alignlab.recipe import (
    ENGINES,
    GIB,
    KNOWN_TARGETS,
    RecipeError,
    build_recipe,
    estimate_memory,
    estimate_sampling_memory,
    logged_rows,
    recipe_zip,
    resolve_target,
    reward_model_shape,
    write_recipe,
)
from alignlab.registry.methods import METHODS, get_method
from alignlab.registry.model_shapes import ModelShape
from alignlab.registry.settings import TrainingSettings
from alignlab.training.run import train_policy
from alignlab.training.trl_rows import recipe_rows, stage_rows

LLAMA_8B = KNOWN_TARGETS["llama-3.1-8b-instruct"]


@pytest.fixture(scope="module")
def seed_lab():
    return load_preset("seed-lab")


# --------------------------------------------------------------------------- shapes


@pytest.mark.parametrize(
    ("name", "published"),
    [
        ("llama-3.1-8b-instruct", 8_030_261_248),
        ("gpt2", 124_439_808),
        ("smollm2-135m-instruct", 134_515_008),
        ("llama-3.2-1b-instruct", 1_235_814_400),
    ],
)
def test_known_targets_count_their_published_parameters(name, published):
    assert KNOWN_TARGETS[name].parameters() == published


@pytest.mark.parametrize("which", ["tiny_chat_dir", "tiny_base_dir"])
def test_a_local_config_gives_the_exact_parameter_and_lora_counts(which, request):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    directory = request.getfixturevalue(which)
    shape = resolve_target(str(directory))
    model = AutoModelForCausalLM.from_pretrained(directory)
    assert shape.parameters() == sum(p.numel() for p in model.parameters())
    assert shape.chat == (which == "tiny_chat_dir")
    adapted = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    assert shape.lora_parameters(4) == sum(p.numel() for p in adapted.parameters() if p.requires_grad)


def test_unknown_targets_say_what_is_known(tmp_path):
    with pytest.raises(RecipeError, match="Unknown target model 'nope'. Known: llama-3.1-8b-instruct"):
        resolve_target("nope")
    with pytest.raises(RecipeError, match="without config.json"):
        resolve_target(str(tmp_path))
    assert resolve_target("meta-llama/Llama-3.1-8B-Instruct") is LLAMA_8B


# --------------------------------------------------------------------------- memory


def test_zero3_splits_every_state_and_zero2_keeps_weights_whole():
    p = LLAMA_8B.parameters()
    one = estimate_memory(LLAMA_8B, engine="zero3", gpus=1)
    eight = estimate_memory(LLAMA_8B, engine="zero3", gpus=8)
    states = ("weights", "gradients", "optimizer", "reference")
    # bf16 weights and gradients, fp32 master + AdamW moments, bf16 reference: 18 bytes a parameter
    assert sum(one.components[k] for k in states) == pytest.approx(18 * p)
    assert sum(eight.components[k] for k in states) == pytest.approx(18 * p / 8)
    zero2 = estimate_memory(LLAMA_8B, engine="zero2", gpus=8)
    assert zero2.components["weights"] == pytest.approx(2 * p)
    assert zero2.components["optimizer"] == pytest.approx(12 * p / 8)
    # the fixed overhead (context, allocator, buffers) is each GPU's own: sharding does not split it
    assert one.components["overhead"] == eight.components["overhead"] == zero2.components["overhead"] > 0
    assert one.total == pytest.approx(sum(one.components.values()))


def test_an_8b_full_fine_tune_needs_sharding_and_lora_or_qlora_fit_one_gpu():
    assert not estimate_memory(LLAMA_8B, engine="ddp", gpus=8).fits(80)  # 20 B/param replicated
    assert estimate_memory(LLAMA_8B, engine="zero3", gpus=8).fits(80)
    lora = estimate_memory(LLAMA_8B, engine="ddp", adapter="lora")
    qlora = estimate_memory(LLAMA_8B, engine="ddp", adapter="qlora")
    assert qlora.total < lora.total < 40 * GIB and lora.fits(40)
    assert lora.components["reference"] == 0  # the adapter switched off is the reference
    assert lora.trainable_parameters == LLAMA_8B.lora_parameters(16)
    # 16 GB of bf16 weights become ~5 GB with a 4-bit base
    assert 4 * GIB < qlora.components["weights"] < 6 * GIB


def test_checkpointing_and_batch_move_the_activations():
    small = estimate_memory(LLAMA_8B, per_device_batch=1, max_length=1024)
    big = estimate_memory(LLAMA_8B, per_device_batch=4, max_length=1024)
    plain = estimate_memory(LLAMA_8B, per_device_batch=1, max_length=1024, gradient_checkpointing=False)
    assert big.components["activations"] == pytest.approx(4 * small.components["activations"])
    assert plain.components["activations"] > 10 * small.components["activations"]


def test_estimate_rejects_bad_arguments():
    with pytest.raises(RecipeError, match="engine must be one of"):
        estimate_memory(LLAMA_8B, engine="megatron")
    with pytest.raises(RecipeError, match="gpus must be"):
        estimate_memory(LLAMA_8B, gpus=0)


# --------------------------------------------------------------------------- data and files


def _lab_rows(loaded, pairs, method, stage=-1, **settings):
    """The rows the lab's trainer trains ``method``'s stage on."""
    chosen = TrainingSettings.for_method(method, **settings)
    return stage_rows(loaded.is_chat, TrainingData(list(pairs)), chosen, chosen.method_entry.stages[stage])


def test_rows_are_the_labs_own_training_rows(tiny_chat, tiny_base, pairs):
    dpo = METHODS["dpo"].stage
    for loaded in (tiny_chat, tiny_base):
        assert recipe_rows(dpo, pairs, loaded.is_chat) == _lab_rows(loaded, pairs, "dpo")
    implicit = recipe_rows(dpo, pairs[:1], chat=True, implicit_prompt=True)[0]
    assert implicit["chosen"][0] == {"role": "user", "content": pairs[0].prompt}
    assert implicit["chosen"][1]["content"] == pairs[0].chosen and "prompt" not in implicit


def _parse_with_trl(directory: Path, *extra: str, script: str = "dpo", config: str = "config.yaml"):
    """A config file through TRL's own script parser, as run.sh --cpu launches it (unknown keys fail)."""
    import importlib

    make_parser = importlib.import_module(f"trl.scripts.{script}").make_parser

    cwd = os.getcwd()
    os.chdir(directory)
    try:
        args = ["--config", config, "--use_cpu", "true", "--bf16", "false", *extra]
        return make_parser().parse_args_and_config(args)
    finally:
        os.chdir(cwd)


def test_recipe_files_map_the_lab_settings_and_trl_reads_them(tmp_path, seed_lab):
    settings = TrainingSettings(beta=0.25, loss_type="ipo", use_lora=True, lora_rank=8, seed=7)
    recipe = build_recipe(seed_lab, settings, target="llama-3.1-8b-instruct", gpus=4, engine="zero3")
    out = write_recipe(recipe, tmp_path / "recipe")
    expected = {"train.jsonl", "eval.jsonl", "config.yaml", "run.sh", "README.md"}
    assert expected | {f"accelerate/{e}.yaml" for e in ENGINES} == set(recipe.files)
    assert os.access(out / "run.sh", os.X_OK)
    assert len((out / "train.jsonl").read_text().splitlines()) == len(seed_lab.pairs)
    assert len((out / "eval.jsonl").read_text().splitlines()) == len(seed_lab.heldout_pairs)

    script, config, model, _ = _parse_with_trl(out, "--dataset_name", str(out))
    assert config.beta == 0.25 and config.loss_type == ["ipo"] and config.seed == 7
    assert model.model_name_or_path == "meta-llama/Llama-3.1-8B-Instruct"
    assert model.use_peft and model.lora_r == 8 and model.lora_alpha == 16
    assert config.learning_rate == 5e-6  # an adapter's rate on a real run, not the lab's 2e-5
    assert config.lr_scheduler_type == "cosine" and config.gradient_checkpointing
    assert config.per_device_train_batch_size * 4 * config.gradient_accumulation_steps == recipe.plan.global_batch
    assert script.dataset_test_split == "test" and config.eval_strategy == "steps"

    for name, engine in ENGINES.items():
        launcher = yaml.safe_load((out / "accelerate" / f"{name}.yaml").read_text())
        assert launcher["num_processes"] == 4
        assert launcher["distributed_type"] == {"ddp": "MULTI_GPU", "fsdp": "FSDP"}.get(name, "DEEPSPEED")
        if name.startswith("zero"):
            assert launcher["deepspeed_config"]["zero_stage"] == int(name[-1])
        assert engine.title in (out / "README.md").read_text() or name != "zero3"


def test_the_folder_is_a_dataset_with_train_and_test_splits(tmp_path, seed_lab):
    import datasets

    out = write_recipe(build_recipe(seed_lab, TrainingSettings(), target="gpt2"), tmp_path / "a" / "recipe")
    splits = datasets.load_dataset(str(out))
    assert splits["train"].num_rows == len(seed_lab.pairs) and splits["test"].num_rows == len(seed_lab.heldout_pairs)
    assert splits["train"][0]["prompt"].startswith("Question: ")  # GPT-2 has no chat template: plain text
    # `datasets` caches by folder name: another folder of the same name with other pairs must not read this cache
    other = write_recipe(
        build_recipe(seed_lab, TrainingSettings(), target="smollm2-135m-instruct"), tmp_path / "recipe"
    )
    assert datasets.load_dataset(str(other))["train"][0]["prompt"] == [
        {"role": "user", "content": seed_lab.pairs[0].prompt}
    ]


def test_qlora_and_a_mixture_reach_trls_model_and_dataset_arguments(tmp_path, seed_lab):
    recipe = build_recipe(
        seed_lab, TrainingSettings(), adapter="qlora", mix=["ultrafeedback", "hh-rlhf"], user_repeat=3, engine="fsdp"
    )
    out = write_recipe(recipe, tmp_path / "q")
    _, config, model, mixture = _parse_with_trl(out)
    assert model.load_in_4bit and model.bnb_4bit_quant_type == "nf4" and model.bnb_4bit_quant_storage == "bfloat16"
    paths = [d.path for d in mixture.datasets]
    assert paths == ["json", "trl-lib/ultrafeedback_binarized", "trl-lib/hh-rlhf-helpful-base"]
    assert config.eval_strategy == "no" and config.num_train_epochs == 1.0
    rows = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert len(rows) == 3 * len(seed_lab.pairs) and set(rows[0]) == {"chosen", "rejected"}  # the public sets' shape
    readme = (out / "README.md").read_text()
    assert "trl-lib/hh-rlhf-helpful-base" in readme and "--user-repeat" in readme


def test_bad_recipes_are_clear_errors(seed_lab):
    settings = TrainingSettings()
    with pytest.raises(RecipeError, match="Unknown method 'ppo'"):
        build_recipe(seed_lab, settings, method="ppo")
    with pytest.raises(RecipeError, match="no chat template"):
        build_recipe(seed_lab, settings, target="gpt2", mix=["ultrafeedback"])
    with pytest.raises(RecipeError, match="Unknown public dataset"):
        build_recipe(seed_lab, settings, mix=["c4"])
    with pytest.raises(RecipeError, match="cannot be split evenly over 4 GPUs"):
        build_recipe(seed_lab, settings, gpus=4, scale="lab")


def test_thumbs_rows_are_the_labs_own_kto_rows(tiny_chat, tiny_base, pairs):
    for loaded in (tiny_chat, tiny_base):
        ours = recipe_rows(METHODS["kto"].stage, pairs, loaded.is_chat)
        lab = _lab_rows(loaded, pairs, "kto", batch_size=2, seed=0)
        key = lambda row: json.dumps(row, sort_keys=True)  # noqa: E731 - the lab shuffles; the rows are the same
        assert sorted(map(key, ours)) == sorted(map(key, lab))
        assert [r["label"] for r in ours] == [True] * len(pairs) + [False] * len(pairs)
        # neighbours answer other prompts (KTO's KL term pairs each row with its neighbour's answer)
        prompts = [json.dumps(r["prompt"]) for r in ours]
        assert len(set(prompts)) == len(pairs) > 2
        assert all(a != b for a, b in zip(prompts, prompts[1:] + prompts[:1]))


def test_a_kto_recipe_runs_trls_kto_script_on_thumbs_rows(tmp_path, seed_lab):
    thumbs = [UnpairedRow("Is the sky green?", "No: it looks blue because air scatters blue light most.", True)]
    data = replace(seed_lab, unpaired=thumbs)
    settings = TrainingSettings.for_method("kto", beta=0.2, seed=3)
    recipe = build_recipe(data, settings, target="llama-3.1-8b-instruct", gpus=2)
    assert recipe.stages[-1].stage.script == get_method("kto").script == "trl.scripts.kto"  # the registry's script
    out = write_recipe(recipe, tmp_path / "kto")
    rows = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * len(seed_lab.pairs) + 1 and set(rows[0]) == {"prompt", "completion", "label"}
    assert rows[-1]["completion"] == [{"role": "assistant", "content": thumbs[0].completion}]
    assert sum(r["label"] for r in rows) == len(seed_lab.pairs) + 1
    _, config, _, _ = _parse_with_trl(out, "--dataset_name", str(out), script="kto")
    assert type(config).__name__ == "KTOConfig" and config.beta == 0.2 and config.seed == 3
    assert recipe.plan.global_batch == 2 * settings.batch_size  # a batch of the lab's pairs is 2 rows each
    readme = (out / "README.md").read_text()
    assert "# KTO recipe" in readme and "trl.scripts.kto" in readme
    assert (
        "-m trl.scripts.kto"
        in subprocess.run([str(out / "run.sh"), "--dry-run"], capture_output=True, text=True, check=True).stdout
    )
    # mixed with the public sets (pairs), the user's pairs are written as pairs too: TRL's KTO script unpairs them
    mixed = build_recipe(seed_lab, settings, mix=["ultrafeedback"])
    assert set(json.loads(mixed.files["train.jsonl"].splitlines()[0])) == {"chosen", "rejected"}
    assert "TRL's unpaired preference format" in readme
    assert "TRL's paired preference format" in mixed.files["README.md"]


def test_ipo_and_dpos_sft_term_reach_the_dpo_script(tmp_path, seed_lab):
    recipe = build_recipe(seed_lab, TrainingSettings.for_method("ipo"))
    out = write_recipe(recipe, tmp_path / "ipo")
    _, config, _, _ = _parse_with_trl(out, "--dataset_name", str(out))
    ipo = get_method("ipo").defaults
    assert config.beta == ipo["beta"] and config.loss_type == ["ipo", "sft"]  # IPO's defaults carry DPO's SFT term
    assert config.loss_weights == [1.0, ipo["sft_weight"]]
    assert "# IPO recipe" in (out / "README.md").read_text()
    out = write_recipe(build_recipe(seed_lab, TrainingSettings(sft_weight=0.5)), tmp_path / "sft")
    _, config, _, _ = _parse_with_trl(out, "--dataset_name", str(out))
    assert config.loss_type == ["sigmoid", "sft"] and config.loss_weights == [1.0, 0.5]


def test_methods_without_a_recipe_say_why(seed_lab):
    for method, message in [
        ("orpo", "TRL 1.16 ships no training script for ORPO"),
        ("simpo", "TRL 1.16 ships no training script for SimPO"),
    ]:
        with pytest.raises(RecipeError, match=message):
            build_recipe(seed_lab, TrainingSettings.for_method(method))
    thumbs = replace(seed_lab, unpaired=[UnpairedRow("Q?", "A.", False)])
    with pytest.raises(RecipeError, match=r"1 thumbs rows, which DPO cannot train on .* \(KTO\)"):
        build_recipe(thumbs, TrainingSettings())


# --------------------------------------------------------------------------- RLHF: two stages


def test_prompt_rows_are_the_labs_own_rl_rows(tiny_chat, tiny_base, pairs):
    repeated = [*pairs, PreferencePair(pairs[0].prompt, "Another answer.", "Nope.")]  # a prompt asked twice
    for loaded in (tiny_chat, tiny_base):
        rl = METHODS["rlhf"].stage
        assert recipe_rows(rl, repeated, loaded.is_chat) == _lab_rows(loaded, repeated, "rlhf")
        assert len(recipe_rows(rl, repeated, loaded.is_chat)) == len(pairs)


def test_an_rlhf_recipe_runs_trls_reward_script_then_its_rloo_script(tmp_path, seed_lab):
    import datasets

    settings = TrainingSettings.for_method("rlhf", beta=0.1, seed=5, max_length=384)
    recipe = build_recipe(seed_lab, settings, target="llama-3.1-8b-instruct", gpus=2)
    out = write_recipe(recipe, tmp_path / "rlhf")
    data = {"train.jsonl", "eval.jsonl", "train_prompts.jsonl", "eval_prompts.jsonl"}
    assert data | {"config.reward.yaml", "config.yaml", "run.sh", "README.md"} | {
        f"accelerate/{e}.yaml" for e in ENGINES
    } == set(recipe.files)
    assert [s.stage.script for s in recipe.stages] == ["trl.scripts.reward", get_method("rlhf").script]
    # stage 1 trains on the rows DPO's recipe writes; stage 2 on the pairs' distinct prompts
    reward_rows = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert reward_rows == recipe_rows(METHODS["rlhf"].stages[0], seed_lab.pairs, chat=True)
    assert reward_rows == recipe_rows(METHODS["dpo"].stage, seed_lab.pairs, chat=True)
    prompts = [json.loads(line) for line in (out / "train_prompts.jsonl").read_text().splitlines()]
    assert [p["prompt"][0]["content"] for p in prompts] == list(dict.fromkeys(p.prompt for p in seed_lab.pairs))

    script, reward, model, _ = _parse_with_trl(
        out, "--dataset_name", str(out), script="reward", config="config.reward.yaml"
    )
    assert type(reward).__name__ == "RewardConfig" and script.dataset_config is None  # the folder's default: pairs
    assert reward.output_dir == "output/reward_model" and reward.seed == 5 and reward.max_length == 384
    assert reward.learning_rate == 1e-5  # a reward model's usual rate, not the lab's 5e-5 nor the policy's
    assert reward.per_device_train_batch_size * 2 * reward.gradient_accumulation_steps == settings.batch_size
    assert model.model_name_or_path == "meta-llama/Llama-3.1-8B-Instruct"

    script, rloo, model, _ = _parse_with_trl(out, "--dataset_name", str(out), script="rloo")
    assert type(rloo).__name__ == "RLOOConfig"
    assert script.reward_model_name_or_path == reward.output_dir  # stage 1's product is stage 2's reward model
    assert rloo.beta == 0.1 and rloo.num_generations == 4 and rloo.disable_dropout and rloo.seed == 5
    assert rloo.max_completion_length == 384  # whole answers up to the lab's max_length, not the lab's 24 tokens
    assert rloo.learning_rate == 1e-6 and rloo.output_dir == "output"
    # the batch counts answers: the lab's 2 prompts x 4 answers, in whole groups, and eval batches of whole groups
    assert rloo.per_device_train_batch_size * 2 * rloo.gradient_accumulation_steps == settings.batch_size * 4
    assert rloo.per_device_eval_batch_size * 2 % rloo.num_generations == 0
    assert model.model_name_or_path == "meta-llama/Llama-3.1-8B-Instruct"
    assert recipe.stages[1].plan.global_batch == 8 and recipe.stages[0].plan.global_batch == 2

    # the folder is both datasets: the pairs by default, the prompts under the config stage 2 names
    pairs, rl = datasets.load_dataset(str(out)), datasets.load_dataset(str(out), name=script.dataset_config)
    assert pairs["train"].num_rows == len(seed_lab.pairs) and set(pairs["train"].column_names) == {
        "prompt",
        "chosen",
        "rejected",
    }
    assert rl["train"].column_names == ["prompt"] and rl["train"].num_rows == len(prompts)
    assert rl["test"].num_rows == len({p.prompt for p in seed_lab.heldout_pairs})

    readme = (out / "README.md").read_text()
    assert "# RLHF recipe" in readme and "## The 2 stages" in readme
    assert readme.index("trl.scripts.reward") < readme.index("trl.scripts.rloo")
    for stage in recipe.stages:  # each stage's computed estimate is in its own section
        assert f"the {stage.stage.product} (`{stage.stage.script}`): about {stage.memory.total / GIB:.1f} GiB" in readme
    assert "`--mix" not in readme.split("## Mixing public datasets")[1]  # no advice the recipe would refuse


def test_rlhf_run_sh_runs_the_reward_stage_first_and_hands_its_model_on(tmp_path, seed_lab):
    recipe = build_recipe(seed_lab, TrainingSettings.for_method("rlhf"), gpus=8, engine="zero3")
    out = write_recipe(recipe, tmp_path / "r")

    def launch(*args: str) -> list[str]:
        run = subprocess.run([str(out / "run.sh"), "--dry-run", *args], capture_output=True, text=True, check=True)
        return [line for line in run.stdout.splitlines() if "trl.scripts." in line]

    def batch(line: str) -> int:
        words = line.split()
        per, accum = (
            int(words[words.index(flag) + 1])
            for flag in ("--per_device_train_batch_size", "--gradient_accumulation_steps")
        )
        return per * accum

    first, second = launch()
    assert "-m trl.scripts.reward --config config.reward.yaml" in first
    assert "-m trl.scripts.rloo --config config.yaml" in second
    reward_dir = yaml.safe_load((out / "config.reward.yaml").read_text())["output_dir"]
    assert f"--reward_model_name_or_path {reward_dir}" in second and "--reward_model_name_or_path" not in first
    for processes in (1, 2, 3, 5, 8, 16):
        first, second = launch("--processes", str(processes))
        # RLOO's generation batch must hold whole groups of 4 answers per prompt, whatever the process count
        assert batch(second) * processes % 4 == 0 and batch(second) * processes >= 8
        words = second.split()
        assert int(words[words.index("--per_device_eval_batch_size") + 1]) * processes % 4 == 0
    cpu = launch("--cpu", "--processes", "2", "--model", "m", "--max-steps", "3", "--", "--logging_steps", "2")
    assert len(cpu) == 2 and all(
        line.endswith("--model_name_or_path m --max_steps 3 --logging_steps 2") for line in cpu
    )
    assert all("--use_cpu true" in line for line in cpu)
    dry_run = subprocess.run(
        [str(out / "run.sh"), "--dry-run", "--cpu", "--processes", "2"], capture_output=True, text=True
    )
    assert dry_run.stdout.count("torch.distributed.run --nproc_per_node 2") == 2


def test_rlhf_memory_counts_each_stage_from_the_shape(tiny_chat_dir):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, LlamaConfig

    # the reward model is the backbone under a 1-output head: no LM head (an untied model's second embedding)
    config = LlamaConfig(
        vocab_size=300,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=False,
        num_labels=1,
    )
    shape = ModelShape.from_config(config.to_dict(), "untied", chat=False)
    scorer = AutoModelForSequenceClassification.from_config(config)
    assert reward_model_shape(shape).parameters() + 32 == sum(p.numel() for p in scorer.parameters())  # + score head
    assert reward_model_shape(LLAMA_8B).parameters() == LLAMA_8B.parameters() - 128256 * 4096

    # the generation component's KV cache is the cache a real forward pass keeps (fp32 under DDP: 4 bytes)
    tiny = resolve_target(str(tiny_chat_dir))
    model = AutoModelForCausalLM.from_pretrained(tiny_chat_dir)
    with torch.no_grad():
        output = model(torch.ones(3, 7 + 5, dtype=torch.long), use_cache=True)
    cache = getattr(output, "cache", None) or output.past_key_values
    measured = sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers)
    estimate = estimate_sampling_memory(tiny, per_device_batch=3, accumulation=1, prompt_tokens=7, completion_tokens=5)
    assert estimate.components["generation"] == measured

    full = estimate_sampling_memory(LLAMA_8B, engine="zero3", gpus=8, per_device_batch=2, accumulation=4)
    lora = estimate_sampling_memory(
        LLAMA_8B, engine="zero3", gpus=8, adapter="lora", per_device_batch=2, accumulation=4
    )
    assert full.components["reference"] > 0 and lora.components["reference"] == 0  # LoRA: the adapter switched off
    assert full.components["reward model"] == pytest.approx(2 * reward_model_shape(LLAMA_8B).parameters() / 8)
    assert full.components["generation"] > 2 * LLAMA_8B.parameters() * 7 / 8  # ZeRO-3 gathers the policy to sample
    ddp = estimate_sampling_memory(LLAMA_8B, engine="ddp", gpus=8, adapter="lora", per_device_batch=2, accumulation=4)
    assert ddp.components["generation"] < GIB  # no gathering: the KV cache alone
    longer = estimate_sampling_memory(LLAMA_8B, completion_tokens=512, per_device_batch=2, accumulation=4)
    shorter = estimate_sampling_memory(LLAMA_8B, completion_tokens=256, per_device_batch=2, accumulation=4)
    kv_per_token = 2 * 32 * 8 * 128 * 4  # keys and values, 32 layers, 8 KV heads of 128, fp32 (DDP, full)
    assert longer.components["generation"] - shorter.components["generation"] == 8 * 256 * kv_per_token

    recipe = build_recipe(load_preset("seed-lab"), TrainingSettings.for_method("rlhf"), gpus=1, engine="ddp")
    assert not recipe.fits() and "does NOT fit" in recipe.summary() and "LoRA with" in recipe.summary()
    for name, _, estimate in recipe.alternatives():  # the larger stage decides
        assert estimate.total == max(
            s.estimate(recipe.shape, name, 1, estimate.adapter, 16).total for s in recipe.stages
        )


def test_rlhf_recipes_refuse_what_they_cannot_run_and_the_cli_writes_them(tmp_path, seed_lab, capsys):
    settings = TrainingSettings.for_method("rlhf")
    with pytest.raises(RecipeError, match="do not fit RLHF's data: its RL stage samples answers to prompts"):
        build_recipe(seed_lab, settings, mix=["ultrafeedback"])
    with pytest.raises(RecipeError, match=r"1 thumbs rows, which RLHF cannot train on"):
        build_recipe(replace(seed_lab, unpaired=[UnpairedRow("Q?", "A.", False)]), settings)
    with pytest.raises(RecipeError, match="cannot be split evenly over 3 GPUs"):
        build_recipe(seed_lab, settings, gpus=3, scale="lab")
    lora = build_recipe(seed_lab, replace(settings, use_lora=True))
    reward_config = yaml.safe_load(lora.files["config.reward.yaml"])
    assert reward_config["use_peft"] and reward_config["lora_task_type"] == "SEQ_CLS"  # the score head trains too
    assert "lora_task_type" not in lora.config  # the policy's adapter is a causal LM's

    out = tmp_path / "cli"
    assert (
        main(
            ["recipe", "--preset", "seed-lab", "--method", "rlhf", "--gpus", "8", "--engine", "fsdp", "--out", str(out)]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "RLHF on llama-3.1-8b-instruct" in printed and "1. reward model" in printed and "2. policy" in printed
    assert (out / "config.reward.yaml").is_file() and (out / "train_prompts.jsonl").is_file()


def test_run_sh_keeps_the_global_batch_for_any_process_count(tmp_path, seed_lab):
    recipe = build_recipe(seed_lab, TrainingSettings(), gpus=8, engine="zero3", mix=["ultrafeedback"])
    out = write_recipe(recipe, tmp_path / "r")
    assert recipe.plan.global_batch == 64

    def launch(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(out / "run.sh"), "--dry-run", *args], capture_output=True, text=True, check=False)

    def batch(line: str) -> tuple[int, int]:
        words = line.split()
        return (
            int(words[words.index("--per_device_train_batch_size") + 1]),
            int(words[words.index("--gradient_accumulation_steps") + 1]),
        )

    default = launch()
    assert "accelerate.commands.launch --config_file accelerate/zero3.yaml --num_processes 8" in default.stdout
    assert "-m trl.scripts.dpo --config config.yaml" in default.stdout
    per, accum = batch(default.stdout)
    assert per * 8 * accum == 64
    for processes in (1, 2, 16, 64):
        per, accum = batch(launch("--processes", str(processes)).stdout)
        assert per * processes * accum == 64
    uneven = launch("--processes", "3")
    assert "do not split over 3 processes" in uneven.stderr
    cpu = launch("--cpu", "--processes", "2", "--model", "m", "--max-steps", "3", "--", "--beta", "0.2")
    assert "torch.distributed.run --nproc_per_node 2" in cpu.stdout and "--use_cpu true" in cpu.stdout
    assert cpu.stdout.strip().endswith("--model_name_or_path m --max_steps 3 --beta 0.2")
    assert "--dataset_name" not in cpu.stdout  # a mixture names its data in config.yaml
    bad = launch("--processes", "zero")
    assert bad.returncode == 2 and "whole number" in bad.stderr
    assert launch("--engine", "megatron").returncode == 2


def test_zip_holds_the_folder_with_an_executable_run_sh(tmp_path, seed_lab):
    recipe = build_recipe(seed_lab, TrainingSettings())
    with zipfile.ZipFile(recipe_zip(recipe, tmp_path / "r.zip")) as archive:
        names = set(archive.namelist())
        assert {f"alignlab-recipe/{n}" for n in recipe.files} == names
        mode = archive.getinfo("alignlab-recipe/run.sh").external_attr >> 16
        assert mode & stat.S_IXUSR
        assert archive.read("alignlab-recipe/config.yaml").decode() == recipe.files["config.yaml"]


def test_cli_writes_a_recipe_and_explains_bad_input(tmp_path, capsys):
    out = tmp_path / "recipe"
    code = main(["recipe", "--preset", "seed-lab", "--gpus", "8", "--engine", "zero3", "--lora", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "DeepSpeed ZeRO-3" in printed and "LORA" in printed and "GiB per GPU" in printed
    assert (out / "run.sh").is_file() and (out / "accelerate" / "zero3.yaml").is_file()
    for args, message in [
        (["--target-model", "nope"], "Unknown target model 'nope'"),
        (["--gpus", "0"], "gpus must be a whole number"),
        (["--beta", "5"], "beta must be between"),
        (["--target-model", "gpt2", "--mix", "ultrafeedback"], "no chat template"),
    ]:
        assert main(["recipe", "--preset", "seed-lab", *args, "--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err


# --------------------------------------------------------------------------- the real thing


def _run_on_two_cpu_processes(out: Path, model_dir: Path) -> None:
    """The exported run.sh --cpu: TRL's own script under torchrun, 2 CPU processes over gloo, 3 steps."""
    env = {**os.environ, "PYTHON": sys.executable, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    run = subprocess.run(
        [str(out / "run.sh"), "--cpu", "--processes", "2", "--model", str(model_dir), "--max-steps", "3"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]


@pytest.mark.slow
def test_exported_recipe_runs_on_two_processes_and_matches_the_lab(tmp_path, tiny_chat_dir, tiny_chat, seed_lab):
    """TRL's own script under torchrun, 2 CPU processes over gloo, launched by the exported run.sh.

    The recipe repeats the lab's run (``--as-in-lab``) for a ZeRO-3 target on 2 GPUs: 1 pair per
    process x 2 processes is the lab's batch of 2, and accelerate's seeded sampler deals the same
    shuffled pairs out across the processes. So the same pairs meet the same weights at every step,
    and the losses can only differ by float rounding (the gradient is averaged across processes
    instead of over one batch, and each process pads its own row): measured 1e-6 here. The
    tolerance, 1e-4, is 100x that, while a wrong batch, data order, learning rate or reference
    moves the step-2 loss by over 1e-2 (at the lab's default rate the tiny model's loss moves ~0.03 away
    from ln 2 after one update; it need not fall, the tiny model's weights are random).
    """
    out = tmp_path / "recipe"
    code = main(
        [
            "recipe",
            "--preset",
            "seed-lab",
            "--target-model",
            str(tiny_chat_dir),
            "--gpus",
            "2",
            "--engine",
            "zero3",
            "--steps",
            "3",
            "--as-in-lab",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    _run_on_two_cpu_processes(out, tiny_chat_dir)
    assert "--nproc_per_node 2" in (out / "output" / "train.log").read_text()
    rows = logged_rows(out)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert rows[0]["loss"] == pytest.approx(math.log(2), abs=1e-3)

    lab = train_policy(tiny_chat, seed_lab.pairs, TrainingSettings(steps=3)).step_rows
    # The weights moved (the loss left ln 2 after the first update), so the comparison below means something.
    assert abs(rows[1]["loss"] - math.log(2)) > 0.01 and abs(lab[1]["loss"] - math.log(2)) > 0.01
    for ours, theirs in zip(lab, rows, strict=True):
        assert theirs["loss"] == pytest.approx(ours["loss"], abs=1e-4)
        assert theirs["rewards/margins"] == pytest.approx(ours["rewards/margins"], abs=1e-4)


@pytest.mark.slow
def test_exported_kto_recipe_runs_on_two_processes(tmp_path, tiny_chat_dir, tiny_chat, seed_lab):
    """A KTO recipe (TRL's own kto script) under torchrun on 2 CPU processes over gloo, as run.sh --cpu launches it.

    The lab's batch of 2 pairs is 4 thumbs rows, 2 per process. At the first step the policy is the reference, so
    every row's reward is 0 and KTO's loss is 1 - sigmoid(0) = 0.5, in the recipe as in the lab; after it the
    weights have moved and the logged loss leaves 0.5.
    """
    out = tmp_path / "recipe"
    code = main(
        ["recipe", "--method", "kto", "--preset", "seed-lab", "--target-model", str(tiny_chat_dir)]
        + ["--gpus", "2", "--steps", "3", "--lr", "1e-3", "--as-in-lab", "--out", str(out)]
    )
    assert code == 0
    _run_on_two_cpu_processes(out, tiny_chat_dir)
    log = (out / "output" / "train.log").read_text()
    assert "--nproc_per_node 2" in log and "trl.scripts.kto" in log
    rows = logged_rows(out)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert rows[0]["loss"] == pytest.approx(0.5, abs=1e-3)
    assert all("kl" in r and math.isfinite(r["loss"]) for r in rows)
    assert any(abs(r["loss"] - 0.5) > 1e-3 for r in rows[1:])  # the weights moved

    lab = train_policy(tiny_chat, seed_lab.pairs, TrainingSettings.for_method("kto", steps=1)).step_rows
    assert lab[0]["loss"] == pytest.approx(rows[0]["loss"], abs=1e-4)


@pytest.mark.slow
def test_exported_rlhf_recipe_runs_both_stages_on_two_processes(tmp_path, tiny_chat_dir):
    """An RLHF recipe under torchrun on 2 CPU processes over gloo, as run.sh --cpu launches it: TRL's reward script
    trains a reward model on the pairs, then TRL's RLOO script trains the policy on their prompts against it.

    As in the lab (``--as-in-lab``): 3 steps of each stage, 2 pairs per reward-model step (1 per process), 2 prompts
    x 4 sampled answers of 24 tokens per RL step. Checked: each stage's logged rows, that the RL stage scored its
    answers with stage 1's model (TRL names the reward after the model's folder), and that both stages trained.
    """
    from safetensors.torch import load_file

    out = tmp_path / "recipe"
    code = main(
        ["recipe", "--method", "rlhf", "--preset", "seed-lab", "--target-model", str(tiny_chat_dir)]
        + ["--gpus", "2", "--steps", "3", "--as-in-lab", "--out", str(out)]
    )
    assert code == 0
    _run_on_two_cpu_processes(out, tiny_chat_dir)
    log = (out / "output" / "train.log").read_text()
    assert log.count("--nproc_per_node 2") == 2 and log.index("trl.scripts.reward") < log.index("trl.scripts.rloo")

    reward_rows = logged_rows(out, "output/reward_model")
    assert [r["step"] for r in reward_rows] == [1, 2, 3]
    assert all(math.isfinite(r["loss"]) and r["accuracy"] in (0.0, 0.5, 1.0) and "margin" in r for r in reward_rows)
    scorer = json.loads((out / "output" / "reward_model" / "config.json").read_text())
    assert scorer["architectures"] == ["LlamaForSequenceClassification"] and len(scorer["id2label"]) == 1
    base = load_file(tiny_chat_dir / "model.safetensors")
    trained = load_file(out / "output" / "reward_model" / "model.safetensors")
    assert not torch.equal(base["model.layers.0.mlp.up_proj.weight"], trained["model.layers.0.mlp.up_proj.weight"])

    rows = logged_rows(out)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(math.isfinite(r["reward"]) and r["rewards/reward_model/mean"] == r["reward"] for r in rows)
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # step 1: the policy is its own reference
    assert any(abs(r["kl"]) > 1e-6 for r in rows[1:])  # then the updates moved it away
    policy = load_file(out / "output" / "model.safetensors")
    assert not torch.equal(base["model.layers.0.mlp.up_proj.weight"], policy["model.layers.0.mlp.up_proj.weight"])
    # the held-out prompts (the prompts' config of the folder) were evaluated at the end
    state = json.loads((out / "output" / "checkpoint-3" / "trainer_state.json").read_text())
    assert any("eval_reward" in row for row in state["log_history"])
