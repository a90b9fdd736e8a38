"""The method registry and every method it holds, trained for real on TRL's own trainers (tiny model).

Each method trains a few steps and must log its own keys, move the policy and leave the reference
untouched. KTO's and RLHF's reference must be the model in memory, not the weights on disk (DESIGN.md §3:
TRL reloads it from ``config._name_or_path`` when none is passed, and RLOO always does). RLHF runs two
stages, a reward model then online RL against it, streamed as one run.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import math
from dataclasses import fields

import pytest
import torch

from alignlab.data.pairs import TrainingData
from alignlab.evidence.degeneration import Degeneration
from alignlab.evidence.figures import Evidence, curve_of
from alignlab.models.loading import LoadedModel, copy_for_training
from alignlab.pipeline import plots
from alignlab.registry.methods import AXES, METHODS, PRODUCTS, RELATIVE_SCORERS, SCORERS, get_method, method_choices
from alignlab.registry.settings import SettingsError, TrainingSettings, curve_scores_step
from alignlab.serving import gpu
from alignlab.training.run import CancelToken, stream_training, train_policy
from alignlab.training.trainer import build_trainer, reward_model_from
from alignlab.training.trl_rows import stage_dataset, stage_rows
from alignlab.verdict.findings import RunFacts
from alignlab.verdict.health import read_health

FAST = {"steps": 2, "batch_size": 2, "learning_rate": 1e-3, "max_length": 64}


def _class(path: str):
    module, name = path.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("name", list(METHODS))
def test_each_entry_names_real_trl_classes_and_consistent_keys(name):
    method = METHODS[name]
    for stage in method.stages:
        trainer, config = _class(stage.trainer), _class(stage.config)
        assert trainer.__name__.endswith("Trainer") and config.__name__.endswith("Config")
        names = {f.name for f in fields(config)}
        assert set(stage.options) <= names, f"{name}: options not in {config.__name__}"
        assert stage.data in ("paired", "unpaired", "prompts") and stage.reference in ("frozen", "none")
        assert stage.trains in PRODUCTS
    made = [stage.trains for stage in method.stages]
    assert made[-1] == "policy" and len(set(made)) == len(made)  # the last stage trains the policy
    for i, stage in enumerate(method.stages):  # a stage takes only what an earlier stage made
        assert set(stage.inputs.values()) <= set(made[:i]), f"{name}: {stage.trains} takes {stage.inputs}"
        config = _class(stage.config)
        assert set(stage.options) <= {f.name for f in fields(config)}
    assert set(method.axes) <= set(AXES)
    assert all(key == "loss" or key in method.logged for key in method.axes.values())
    assert method.scorer in SCORERS
    assert (method.scorer in RELATIVE_SCORERS) == method.has_reference  # reference-free methods say what they use
    if method.script is not None:
        assert importlib.util.find_spec(method.script) is not None
    assert (
        {"learning_rate", "beta", "steps"} <= set(method.defaults) <= {"learning_rate", "beta", "steps", "sft_weight"}
    )
    assert "sft_weight" not in method.defaults or method.loss_variants  # DPO's SFT term, only where DPO's loss runs
    TrainingSettings.for_method(name)  # the defaults are valid settings


@pytest.mark.parametrize("name", list(METHODS))
def test_each_method_trains_logs_its_keys_moves_the_policy_and_not_the_reference(tiny_chat, pairs, name):
    settings = TrainingSettings.for_method(name, **FAST)
    method = settings.method_entry
    before = {k: v.clone() for k, v in tiny_chat.model.state_dict().items()}
    result = train_policy(tiny_chat, pairs, settings)
    rows = result.step_rows
    assert len(rows) == 2 * len(method.stages)  # every stage runs the lab's steps
    assert all(math.isfinite(r["loss"]) for r in rows)
    logged = set().union(*rows)
    assert set(method.logged) <= logged, f"{name} did not log {set(method.logged) - logged}"
    trained = result.policy.state_dict()
    assert any(not torch.equal(trained[k].cpu(), before[k]) for k in before), "the policy did not change"
    for k, v in tiny_chat.model.state_dict().items():  # the reference (the loaded model) did not
        assert torch.equal(v, before[k]), k


def test_ipo_is_dpo_with_the_ipo_loss():
    settings = TrainingSettings.for_method("ipo")
    assert (settings.method, settings.loss_type) == ("dpo", "ipo")
    assert TrainingSettings(loss_type="ipo").method_label == "IPO"
    assert settings.method_label == "IPO + SFT×2"  # IPO's defaults carry DPO's SFT term (see its registry entry)
    assert TrainingSettings(loss_type="hinge").method_label == "DPO (hinge loss)"
    assert TrainingSettings.from_dict(settings.to_dict()) == settings
    with pytest.raises(SettingsError, match="cannot also take loss_type 'hinge'"):
        TrainingSettings(method="ipo", loss_type="hinge")


def test_kto_is_measured_against_the_policy_in_memory_not_the_weights_on_disk(tiny_chat, pairs, tmp_path):
    """The trap of DESIGN.md §3: a KTO trainer left to find its own reference reloads it from disk.

    The model in memory is perturbed (its disk copy is not). Our KTO run must start from a policy equal
    to its reference (step-1 rewards and KL exactly 0, measured before the first update); TRL's own
    fallback, on the same data and config, visibly scores against the other weights.
    """
    model = copy.deepcopy(tiny_chat.model)
    with torch.no_grad():
        generator = torch.Generator().manual_seed(0)
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    perturbed = LoadedModel(tiny_chat.spec, model, tiny_chat.tokenizer, tiny_chat.source)
    settings = TrainingSettings.for_method("kto", steps=1, batch_size=2, learning_rate=1e-6, max_length=64)

    first = train_policy(perturbed, pairs, settings).step_rows[0]
    for key in ("rewards/chosen", "rewards/rejected", "kl"):
        assert first[key] == pytest.approx(0.0, abs=1e-6), (key, first)

    from trl import KTOTrainer

    trap = KTOTrainer(  # no ref_model: TRL loads one from config._name_or_path (the unperturbed disk weights)
        model=copy_for_training(perturbed),
        args=settings.trainer_config(tmp_path, perturbed.device),
        train_dataset=stage_dataset(perturbed, TrainingData(pairs), settings),
        processing_class=perturbed.tokenizer,
    )
    trap.train()
    reloaded = [r for r in trap.state.log_history if "loss" in r][0]
    assert abs(reloaded["rewards/chosen"]) > 1e-3 or abs(reloaded["kl"]) > 1e-3  # the trap is real, and caught above


def test_kto_trainer_gets_an_explicit_reference(tiny_chat, pairs, tmp_path):
    trainer = build_trainer(tiny_chat, pairs, TrainingSettings.for_method("kto", **FAST), tmp_path)
    assert trainer.ref_model is not None
    shared = {id(p) for p in tiny_chat.model.parameters()}
    assert all(id(p) in shared for p in trainer.ref_model.parameters())  # the loaded model's own tensors


def test_unpaired_rows_are_thumbs_and_each_kl_neighbour_answers_another_prompt(tiny_chat, pairs):
    def kto_rows(seed: int) -> list[dict]:
        settings = TrainingSettings.for_method("kto", batch_size=2, seed=seed)
        return stage_rows(tiny_chat.is_chat, TrainingData(pairs), settings, settings.method_entry.stage)

    rows = kto_rows(seed=1)
    assert len(rows) == 2 * len(pairs)
    assert sorted(r["label"] for r in rows) == [False] * 4 + [True] * 4
    by_answer = {}
    for p in pairs:
        by_answer[p.chosen] = (p.prompt, True)
        by_answer[p.rejected] = (p.prompt, False)
    for r in rows:
        prompt, label = by_answer[r["completion"][0]["content"]]
        assert r["prompt"][0]["content"] == prompt and r["label"] is label
    for start in range(0, len(rows), 4):  # TRL rotates each batch's answers by one for the KL term
        batch = rows[start : start + 4]
        rotated = [batch[-1]] + batch[:-1]
        for row, other in zip(batch, rotated):
            assert by_answer[other["completion"][0]["content"]][0] != row["prompt"][0]["content"]
    assert kto_rows(seed=1) == rows and kto_rows(seed=2) != rows


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "ppo"}, "method must be one of dpo, ipo, kto, orpo, simpo"),
        ({"method": "kto", "loss_type": "hinge"}, "loss_type is DPO's"),
        ({"method": "orpo", "sft_weight": 1.0}, "sft_weight is DPO's"),
        ({"method": "dpo", "beta": 2.0}, "beta must be between 0.01 and 1.0"),
        ({"method": "orpo", "use_lora": True, "use_qlora": True}, "use_qlora: method 'orpo'"),
    ],
)
def test_method_settings_are_validated_with_named_fields(kwargs, message):
    with pytest.raises(SettingsError, match=message):
        TrainingSettings(**kwargs)


def test_unknown_method_lists_the_known_ones():
    with pytest.raises(SettingsError, match=r"Unknown method 'ppo'\. Known methods: dpo, ipo, kto, orpo, simpo"):
        TrainingSettings.for_method("ppo")
    with pytest.raises(ValueError, match="Known methods"):
        get_method("ppo")


def test_method_defaults_and_overrides():
    simpo = TrainingSettings.for_method("simpo")
    assert simpo.beta == METHODS["simpo"].defaults["beta"]
    assert TrainingSettings.for_method("simpo", beta=None, steps=3).steps == 3  # None keeps the method's default
    assert (
        TrainingSettings.for_method("kto", batch_size=3)
        .trainer_config("/tmp/x", torch.device("cpu"))
        .per_device_train_batch_size
        == 6
    )
    config = TrainingSettings.for_method("simpo").trainer_config("/tmp/x", torch.device("cpu"))
    assert (config.loss_type, config.cpo_alpha, config.beta) == ("simpo", 0.0, simpo.beta)


def _rows(**values):
    return [
        {"step": i + 1, "loss": 0.5, "epoch": 0.25 * (i + 1), **{k: v[i] for k, v in values.items()}} for i in range(4)
    ]


def test_health_reads_each_methods_keys_and_says_what_it_cannot_check():
    # KTO logs no accuracy: the fresh-pair accuracy check must not fire, and the reading says so.
    kto = _rows(**{"rewards/margins": [0.0, 0.1, 0.3, 0.5], "rewards/chosen": [0, 0.1, 0.2, 0.3], "kl": [0] * 4})
    health = read_health(RunFacts(kto, beta=0.1, method="kto"))
    assert "no_signal" not in health.codes and "learning" in health.codes and "not_logged" in health.codes
    # SimPO's rewards are beta x mean log-prob (always negative): no displacement from them.
    simpo = _rows(
        **{
            "rewards/chosen": [-17.0, -16.0, -15.0, -14.0],
            "rewards/rejected": [-17.5, -17.0, -16.5, -16.0],
            "rewards/margins": [0.5, 1.0, 1.5, 2.0],
            "rewards/accuracies": [0.5, 1.0, 1.0, 1.0],
        }
    )
    assert "displacement" in read_health(RunFacts(simpo, beta=2.0, method="dpo")).codes  # read as DPO it would fire
    health = read_health(RunFacts(simpo, beta=2.0, method="simpo"))
    assert "displacement" not in health.codes and "not_logged" in health.codes
    # A reference-free held-out score that is no better than the original model's is not credited.
    evidence = {
        "heldout_reward_accuracy": 1.0,
        "heldout_count": 12,
        "heldout_reward_accuracy_before": 1.0,
        "heldout_gain": {"gains": 6, "losses": 6, "p_value": 0.61},
        "heldout_scorer": "mean_logprob",
    }
    health = read_health(RunFacts(simpo, beta=2.0, method="simpo", evidence=Evidence.from_dict(evidence)))
    assert "no_gain" in health.codes and "generalises" not in health.codes and "heldout_scorer" in health.codes


def test_plots_follow_each_methods_axes():
    kto = _rows(**{"rewards/margins": [0.0, 0.1, 0.3, 0.5], "kl": [0.0, 0.01, 0.02, 0.03]})
    assert plots.accuracy_frame(kto, "kto").empty and plots.margin_frame(kto, "kto")["margin"].tolist()[-1] == 0.5
    table = plots.log_table(kto, method="kto")
    assert table["KL estimate"].tolist() == [0.0, 0.01, 0.02, 0.03] and table["accuracy"].isna().all()
    assert "log-odds ratio" in plots.log_columns("orpo") and "KL estimate" not in plots.log_columns("dpo")


def test_picking_a_method_on_the_train_tab_sets_its_own_defaults():
    from alignlab.ui.train_tab import method_defaults_ui

    beta, lr, steps, loss, sft = method_defaults_ui("simpo")
    assert (beta.value, lr.value, steps.value) == tuple(
        METHODS["simpo"].defaults[k] for k in ("beta", "learning_rate", "steps")
    )
    assert (loss.value, loss.interactive) == ("sigmoid", False)  # no loss variants outside DPO
    assert (sft.value, sft.interactive) == (0.0, False)  # nor DPO's SFT term
    ipo, dpo = method_defaults_ui("ipo"), method_defaults_ui("dpo")
    assert ipo[3].value == "ipo" and dpo[3].interactive
    assert ipo[4].value == METHODS["ipo"].defaults.get("sft_weight", 0.0) and ipo[4].interactive
    assert dpo[4].value == 0.0
    # the settings the widgets make: an empty SFT weight takes the method's own, and a label that says so
    from alignlab.ui.inputs import settings_from_values

    chosen = {"beta": None, "learning_rate": None, "steps": None, "batch_size": 2.0, "seed": 0.0, "sft_weight": None}
    settings = settings_from_values({**chosen, "method": "ipo"})
    assert settings.sft_weight == METHODS["ipo"].defaults.get("sft_weight", 0.0)
    assert settings_from_values({**chosen, "sft_weight": 0.5}).method_label == "DPO + SFT×0.5"


def test_gpu_estimate_follows_the_methods_cost():
    pairs = [{"prompt": "p", "chosen": "c", "rejected": "r"}] * 8
    cost = {
        name: gpu.train_duration("smollm2-135m-instruct", pairs, {"batch_size": 8, "steps": 60, "method": name})
        for name in ("kto", "dpo", "orpo")
    }
    assert cost["kto"] > cost["dpo"] > cost["orpo"]


def _perturbed(loaded: LoadedModel) -> LoadedModel:
    """``loaded`` with its weights changed in memory only: its disk copy (``source``) stays the original."""
    model = copy.deepcopy(loaded.model)
    with torch.no_grad():
        generator = torch.Generator().manual_seed(0)
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    return LoadedModel(loaded.spec, model, loaded.tokenizer, loaded.source)


def test_rlhf_streams_a_reward_model_then_online_rl_against_it(tiny_chat, pairs):
    settings = TrainingSettings.for_method("rlhf", **FAST)
    before = {k: v.clone() for k, v in tiny_chat.model.state_dict().items()}
    events = list(stream_training(tiny_chat, pairs, settings))
    logs, end = [e for e in events if e.kind == "log"], events[-1]
    assert end.kind == "end" and [e.kind for e in events[:-1]] == ["log"] * 4
    # one run, numbered throughout: the reward model's steps 1-2, then the policy's 3-4
    assert [(e.step, e.total_steps, e.row["stage"]) for e in logs] == [
        (1, 4, "reward_model"),
        (2, 4, "reward_model"),
        (3, 4, "policy"),
        (4, 4, "policy"),
    ]
    reward_rows, rl_rows = [e.row for e in logs[:2]], [e.row for e in logs[2:]]
    assert all({"accuracy", "margin", "mean_reward"} <= set(r) for r in reward_rows)
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in reward_rows)
    assert all({"reward", "kl", "rewards/reward_model/mean"} <= set(r) for r in rl_rows)
    assert not {"reward", "kl"} & set().union(*reward_rows)  # each stage logs its own figures
    # step 1 of RL samples from a policy equal to its reference: RLOO's KL estimate is exactly 0, then it moves
    assert rl_rows[0]["kl"] == pytest.approx(0.0, abs=1e-6) and rl_rows[1]["kl"] != 0.0
    result = end.result
    assert (result.steps_done, result.total_steps, result.stopped_early) == (4, 4, False)
    assert [r["stage"] for r in result.step_rows] == ["reward_model"] * 2 + ["policy"] * 2
    assert [r["step"] for r in result.step_rows] == [1, 2, 3, 4]
    # the report's log history says which stage each row (the summaries too) belongs to
    assert all(r["stage"] in ("reward_model", "policy") for r in result.log_history)
    assert type(result.policy) is type(tiny_chat.model) and "forward" not in vars(result.policy)
    trained = result.policy.state_dict()
    assert any(not torch.equal(trained[k], before[k]) for k in before), "RL did not move the policy"
    for k, v in tiny_chat.model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_rlhf_reward_model_starts_from_the_policys_own_backbone(tiny_chat):
    scorer = reward_model_from(tiny_chat)
    assert scorer.config.num_labels == 1 and scorer.score.out_features == 1
    for name, value in tiny_chat.model.model.state_dict().items():  # the same weights, copied (not shared)
        own = scorer.model.state_dict()[name]
        assert torch.equal(own, value) and own.data_ptr() != value.data_ptr(), name
    ids = tiny_chat.tokenizer("Sure! Boil it.", return_tensors="pt")
    assert scorer(**ids).logits.shape == (1, 1)


def test_rlhf_is_measured_against_the_model_in_memory_not_the_weights_on_disk(tiny_chat, pairs, tmp_path):
    """The trap of DESIGN.md §3: RLOO takes no ref_model and, with beta > 0, loads its reference from
    ``config._name_or_path``. The model in memory is perturbed (its disk copy is not): our RL stage must
    start with a KL of 0 to its reference; TRL's own reference, on the same data and config, does not."""
    perturbed = _perturbed(tiny_chat)
    settings = TrainingSettings.for_method("rlhf", steps=1, batch_size=2, learning_rate=1e-6, max_length=64)
    rl = settings.method_entry.stage
    inputs = {"reward_model": reward_model_from(perturbed)}

    trainer = build_trainer(perturbed, pairs, settings, tmp_path, stage=rl, inputs=inputs)
    reference = trainer.ref_model.state_dict()
    for k, v in perturbed.model.state_dict().items():  # the weights in memory, not those TRL read from disk
        assert torch.equal(reference[k], v), k
    trainer.train()
    first = [r for r in trainer.state.log_history if "loss" in r][0]
    assert first["kl"] == pytest.approx(0.0, abs=1e-6), first

    from trl import RLOOTrainer

    trap = RLOOTrainer(  # the trainer left to itself: the reference is reloaded from disk (the unperturbed weights)
        model=copy_for_training(perturbed),
        reward_funcs=reward_model_from(perturbed),
        args=settings.trainer_config(tmp_path, perturbed.device, rl),
        train_dataset=stage_dataset(perturbed, TrainingData(pairs), settings, rl),
        processing_class=perturbed.tokenizer,
        reward_processing_classes=perturbed.tokenizer,
    )
    trap.train()
    reloaded = [r for r in trap.state.log_history if "loss" in r][0]
    assert abs(reloaded["kl"]) > 1e-3, reloaded  # the trap is real, and caught above


def test_rlhf_stage_needs_the_reward_model_of_the_stage_before(tiny_chat, pairs, tmp_path):
    settings = TrainingSettings.for_method("rlhf", **FAST)
    with pytest.raises(SettingsError, match="trains on the reward_model of an earlier stage"):
        build_trainer(tiny_chat, pairs, settings, tmp_path)  # the RL stage alone, with no reward model
    rows = stage_dataset(tiny_chat, TrainingData(pairs + pairs[:1]), settings).to_list()  # distinct prompts, once
    assert [r["prompt"][0]["content"] for r in rows] == [p.prompt for p in pairs]
    assert set(rows[0]) == {"prompt"}


def test_rlhf_cancel_in_the_reward_model_stage_skips_the_rl_stage(tiny_chat, pairs):
    cancel = CancelToken()
    seen = []

    def on_event(event):
        seen.append(event)
        if event.kind == "log":
            cancel.cancel()

    settings = TrainingSettings.for_method("rlhf", **(FAST | {"steps": 5}))
    result = train_policy(tiny_chat, pairs, settings, on_event=on_event, cancel=cancel)
    assert result.stopped_early and (result.steps_done, result.total_steps) == (1, 10)
    assert {r["stage"] for r in result.step_rows} == {"reward_model"}
    assert [(e.kind, e.step) for e in seen] == [("log", 1), ("end", 1)]
    original = tiny_chat.model.state_dict()  # the policy's stage never ran: the policy is the original
    assert all(torch.equal(v, original[k]) for k, v in result.policy.state_dict().items())


def test_rlhf_cancel_in_the_rl_stage_stops_within_one_step(tiny_chat, pairs):
    cancel = CancelToken()

    def on_event(event):
        if event.kind == "log" and event.row.get("stage") == "policy":
            cancel.cancel()

    settings = TrainingSettings.for_method("rlhf", **(FAST | {"steps": 3}))
    result = train_policy(tiny_chat, pairs, settings, on_event=on_event, cancel=cancel)
    assert result.stopped_early and (result.steps_done, result.total_steps) == (4, 6)
    assert [r["stage"] for r in result.step_rows] == ["reward_model"] * 3 + ["policy"]


def _rlhf_rows(rl_grad: float = 250.0) -> list[dict]:
    reward_model = [
        {"step": i + 1, "stage": "reward_model", "loss": 0.6 - 0.2 * i, "grad_norm": 20.0, "accuracy": a, "margin": m}
        for i, (a, m) in enumerate([(0.5, 0.0), (1.0, 1.5), (1.0, 3.0)])
    ]
    policy = [
        {"step": 4 + i, "stage": "policy", "loss": 0.0, "grad_norm": rl_grad, "reward": r, "kl": k}
        for i, (r, k) in enumerate([(0.2, 0.0), (0.5, 0.01), (0.9, 0.03)])
    ]
    return reward_model + policy


def test_health_reads_rlhf_logs_by_stage():
    health = read_health(RunFacts(_rlhf_rows(), beta=0.05, method="rlhf"))
    # RL's pre-clipping gradient norms run to hundreds (a loss summed over sampled answers): not instability
    assert "unstable" not in health.codes and "reward_rising" in health.codes and "learning" in health.codes
    text = " ".join(health.findings)
    assert "reward model's scores" in text and "has no reference model" not in text
    rows = _rlhf_rows()
    rows[1]["grad_norm"] = 250.0  # the same norm in the reward model's stage is instability
    assert "unstable" in read_health(RunFacts(rows, beta=0.05, method="rlhf")).codes
    assert "unstable" in read_health(RunFacts(_rlhf_rows(rl_grad=1e4), beta=0.05, method="rlhf")).codes
    # the reward model ranks its training pairs perfectly while the policy's held-out ranking is at chance:
    # not "memorised" (they are different models' scores), but the held-out pairs still speak
    evidence = {
        "heldout_reward_accuracy": 0.5,
        "heldout_count": 10,
        "heldout_mean_margin": 0.0,
        "heldout_scorer": "implicit_reward",
    }
    health = read_health(RunFacts(_rlhf_rows(), beta=0.05, method="rlhf", evidence=Evidence.from_dict(evidence)))
    assert "memorised" not in health.codes and "no_generalisation" in health.codes
    # a backwards held-out ranking is where RL moved the policy, not swapped labels: the policy never saw the pairs
    evidence = {
        "heldout_reward_accuracy": 0.0,
        "heldout_count": 10,
        "heldout_mean_margin": -0.1,
        "heldout_scorer": "implicit_reward",
    }
    health = read_health(RunFacts(_rlhf_rows(), beta=0.05, method="rlhf", evidence=Evidence.from_dict(evidence)))
    backwards = next(d for d in health.details if d.code == "no_signal")
    assert "swapped" not in backwards.text and "sampled answers" in backwards.text
    assert backwards.severity == "info"  # RLHF's verdict is read from its reward model (tests/test_health.py)
    as_dpo = read_health(RunFacts(_rlhf_rows(), beta=0.1, method="dpo", evidence=Evidence.from_dict(evidence)))
    assert "swapped" in " ".join(as_dpo.findings)
    falling = [dict(r, reward=-r["reward"]) if "reward" in r else r for r in _rlhf_rows()]
    assert "reward_flat" in read_health(RunFacts(falling, beta=0.05, method="rlhf")).codes


def test_plots_draw_rlhf_reward_and_kl_and_its_reward_models_curves():
    rows = _rlhf_rows()
    rewards = plots.rewards_frame(rows, "rlhf")
    by_series = {label: group["reward"].tolist() for label, group in rewards.groupby("answer")}
    assert by_series == {"sampled answers (reward model)": [0.2, 0.5, 0.9], plots.RL_KL_LABEL: [0.0, 0.01, 0.03]}
    assert rewards["step"].tolist()[:2] == [4, 4]  # on the run's own step axis, after the reward model's steps
    assert plots.margin_frame(rows, "rlhf")["margin"].tolist() == [0.0, 1.5, 3.0]
    assert plots.accuracy_frame(rows, "rlhf")["accuracy"].tolist() == [0.5, 0.75, pytest.approx(2.5 / 3)]
    table = plots.log_table(rows, method="rlhf")
    assert table["RL reward"].tolist()[3:] == [0.2, 0.5, 0.9] and "KL estimate" in table
    assert plots.RL_KL_LABEL not in set(plots.rewards_frame(rows, "kto")["answer"])  # KTO's KL stays in its table


def test_rlhf_is_offered_everywhere_a_method_is_picked():
    assert "rlhf" in [name for _, name in method_choices()]  # the Train tab's dropdown
    assert METHODS["rlhf"].describe()["stage_details"][0]["trainer"] == "trl.RewardTrainer"
    settings = TrainingSettings.for_method("rlhf")
    assert settings.total_steps(13) == 2 * settings.steps
    config = settings.trainer_config("/tmp/x", torch.device("cpu"), settings.method_entry.stage)
    assert config.per_device_train_batch_size == settings.batch_size * config.num_generations
    assert config.beta == settings.beta > 0 and config.disable_dropout
    cost = {
        name: gpu.train_duration("smollm2-135m-instruct", [{}] * 8, {"batch_size": 8, "steps": 60, "method": name})
        for name in ("dpo", "rlhf")
    }
    assert cost["rlhf"] > cost["dpo"]


def test_a_recipe_for_a_method_without_a_trl_script_is_a_clear_message_not_a_traceback(capsys):
    from alignlab.cli import main

    assert main(["recipe", "--preset", "seed-lab", "--method", "orpo", "--out", "/tmp/alignlab-no-recipe"]) == 2
    err = capsys.readouterr().err
    assert "TRL 1.16 ships no training script for ORPO" in err and "Recipes exist for DPO, IPO, KTO, RLHF" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("index", range(len(METHODS)), ids=list(METHODS))
def test_each_method_runs_the_whole_lab_and_reports_it(index, tiny_comparison):
    """The whole lab, end to end, for every method: the report names what ran, is JSON without NaN, and its
    verdict is the rules' reading of its own figures. The mechanics on the tiny model; what each method does to
    the embedded model is the calibration matrix's."""
    import json

    report = tiny_comparison["runs"][index]
    name = list(METHODS)[index]
    json.dumps(report, allow_nan=False)  # NaN-free: undefined figures are null
    training = report["settings"]["training"]
    entry = METHODS[name]
    assert (training["method"], training["loss_type"]) == (entry.runs_as, entry.loss_type or "sigmoid")
    assert report["settings"]["method_info"]["trainer"] == entry.stage.trainer
    rows = [r for r in report["log_history"] if "loss" in r and "step" in r]
    assert len(rows) == report["settings"]["steps_done"] == 2 * len(entry.stages)
    assert all(math.isfinite(r["loss"]) for r in rows)
    assert report["eval"]["heldout_scorer"] == entry.scorer and report["eval"]["kl_to_reference"] > 0
    policy_steps = [r["step"] for r in rows if r.get("stage", "policy") == "policy"]
    scored = [s for i, s in enumerate(policy_steps, 1) if curve_scores_step(i, len(policy_steps))]
    assert [p["step"] for p in report["eval"]["heldout_curve"]] == scored  # the policy's stage only
    expected = read_health(
        RunFacts(
            log_rows=rows,
            beta=training["beta"],
            evidence=Evidence.from_dict(report["eval"]),
            degeneration=Degeneration.from_dict(report["eval"]["degeneration"]),
            heldout_curve=curve_of(report["eval"]["heldout_curve"]),
            changed=report["changed"],
            answers=len(report["aligned_outputs"]),
            method=entry.name,
        )
    )
    assert (report["health"]["verdict"], report["health"]["codes"]) == (expected.verdict, expected.codes)


@pytest.mark.slow
def test_rlhf_at_its_defaults_raises_its_reward_and_changes_answers_on_the_embedded_model(embedded_runs):
    """The rlhf method at lab scale on the embedded model: its reward model learns and the reward of the answers the
    policy samples rises (the run is the calibration matrix's RLHF case, shared)."""
    from bench.calibration import GUARDS

    report = embedded_runs(next(c for c in GUARDS if c.method == "rlhf"))
    rows = [r for r in report["log_history"] if "loss" in r and "step" in r]
    assert {r["stage"] for r in rows} == {"reward_model", "policy"}
    accuracy = [r["accuracy"] for r in rows if r["stage"] == "reward_model"]
    assert sum(accuracy[len(accuracy) // 2 :]) / len(accuracy[len(accuracy) // 2 :]) > 0.5  # the reward model learnt
    rewards = [r["reward"] for r in rows if r["stage"] == "policy"]
    late = rewards[len(rewards) // 2 :]
    assert sum(late) / len(late) > rewards[0], rewards  # the reward of sampled answers rose
    assert "reward_rising" in report["health"]["codes"]
    assert report["changed"] >= 1
    assert report["eval"]["heldout_scorer"] == "implicit_reward" and report["eval"]["kl_to_reference"] > 0
