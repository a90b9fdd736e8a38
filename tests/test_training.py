import pickle

import pytest
import torch

from alignlab.data.pairs import TrainingData
from alignlab.models.loading import reference_view
from alignlab.registry.methods import LOSS_TYPES
from alignlab.registry.settings import SettingsError, TrainingSettings
from alignlab.training.run import CancelToken, stream_training, train_policy
from alignlab.training.trl_rows import stage_rows

FAST = {"steps": 3, "batch_size": 2, "learning_rate": 1e-3, "max_length": 64}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"beta": 0}, "beta must be between 0.01 and 1.0 \\(got 0\\)"),
        ({"beta": -1}, "beta must be"),
        ({"learning_rate": 1.0}, "learning_rate must be between 1e-8 and 1e-3"),
        ({"steps": 0}, "steps must be a whole number from 1 to 500"),
        ({"steps": None}, "Give either steps or epochs"),
        ({"epochs": 2.0}, "Give either steps or epochs"),
        ({"loss_type": "magic"}, "loss_type must be one of sigmoid"),
        ({"batch_size": 0}, "batch_size must be"),
        ({"beta": float("nan")}, "beta must be"),
    ],
)
def test_settings_are_validated_with_named_fields(kwargs, message):
    with pytest.raises(SettingsError, match=message):
        TrainingSettings(**kwargs)


def test_settings_round_trip_and_reject_unknown_keys():
    settings = TrainingSettings(beta=0.2, steps=None, epochs=2.0, batch_size=4)
    assert TrainingSettings.from_dict(settings.to_dict()) == settings
    with pytest.raises(SettingsError, match="Unknown setting\\(s\\): bogus"):
        TrainingSettings.from_dict({"bogus": 1})
    assert settings.total_steps(n_pairs=10) == 6  # ceil(10/4) * 2


def test_dpo_config_is_built_for_a_short_visible_run():
    config = TrainingSettings(**FAST, loss_type="ipo").trainer_config("/tmp/x", torch.device("cpu"))
    assert config.logging_steps == 1
    assert config.loss_type == ["ipo"]
    assert config.max_steps == 3 and config.learning_rate == 1e-3
    assert config.use_cpu and not config.bf16 and not config.gradient_checkpointing
    assert not config.precompute_ref_log_probs  # the reference scores each batch (see reference_view)
    precomputed = TrainingSettings(**FAST, precompute_ref_log_probs=True)
    assert precomputed.trainer_config("/tmp/x", torch.device("cpu")).precompute_ref_log_probs


@pytest.mark.parametrize("loss", list(LOSS_TYPES))
def test_every_loss_type_trains_a_step_on_trl(tiny_chat, pairs, loss):
    # DPOConfig accepts any loss name (a bogus one fails only inside training), so train one step,
    # as TRL's own tests do, and check that the step produced a finite loss and moved the weights.
    before = {n: p.detach().clone() for n, p in tiny_chat.model.named_parameters()}
    result = train_policy(tiny_chat, pairs, TrainingSettings(**(FAST | {"steps": 1, "loss_type": loss})))
    (row,) = result.step_rows
    assert torch.isfinite(torch.tensor(row["loss"])), row
    moved = [n for n, p in result.policy.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert moved, f"{loss}: one step left every weight where it was"


def test_an_unknown_loss_type_is_refused_before_trl_sees_it():
    with pytest.raises(SettingsError, match="loss_type must be one of"):
        TrainingSettings(loss_type="bogus")


def test_chat_models_get_conversational_data_and_base_models_plain_text(tiny_chat, tiny_base, pairs):
    dpo = TrainingSettings()
    chat_row = stage_rows(tiny_chat.is_chat, TrainingData(pairs), dpo, dpo.method_entry.stage)[0]
    assert chat_row["prompt"] == [{"role": "user", "content": pairs[0].prompt}]
    base_row = stage_rows(tiny_base.is_chat, TrainingData(pairs), dpo, dpo.method_entry.stage)[0]
    assert base_row["prompt"] == f"Question: {pairs[0].prompt}\nAnswer:"
    assert base_row["chosen"] == " " + pairs[0].chosen


def test_training_changes_weights_streams_each_step_and_keeps_reference(tiny_chat, pairs):
    reference_before = {k: v.clone() for k, v in tiny_chat.model.state_dict().items()}
    events = []
    result = train_policy(tiny_chat, pairs, TrainingSettings(**FAST), on_event=events.append)
    logs = [e for e in events if e.kind == "log"]
    assert [e.step for e in logs] == [1, 2, 3]
    assert [e.row["step"] for e in logs] == [r["step"] for r in result.step_rows]
    assert all("loss" in e.row and "rewards/margins" in e.row for e in logs)
    assert logs[-1].steps_left == 0 and logs[0].steps_left == 2
    assert events[-1].kind == "end" and events[-1].result is result
    assert result.steps_done == 3 and not result.stopped_early
    trained = result.policy.state_dict()
    assert any(not torch.equal(trained[k], reference_before[k]) for k in reference_before)
    # the cached model is the reference and must not move
    assert all(torch.equal(v, reference_before[k]) for k, v in tiny_chat.model.state_dict().items())


def test_reference_view_shares_the_cached_weights_and_takes_trls_patches_itself(tiny_chat, pairs):
    view = reference_view(tiny_chat)
    assert view is not tiny_chat.model
    cached = dict(tiny_chat.model.named_parameters())
    assert all(p is cached[name] for name, p in view.named_parameters())  # shared, not copied
    flags = {name: p.requires_grad for name, p in cached.items()}
    train_policy(tiny_chat, pairs, TrainingSettings(**FAST))
    # TRL replaces the reference's forward with a fused-LM-head one; that must not reach the cached model
    assert "forward" not in vars(tiny_chat.model)
    assert {name: p.requires_grad for name, p in tiny_chat.model.named_parameters()} == flags


def test_shared_and_precomputed_references_give_the_same_run(tiny_chat, pairs):
    shared = train_policy(tiny_chat, pairs, TrainingSettings(**FAST, seed=3))
    precomputed = train_policy(tiny_chat, pairs, TrainingSettings(**FAST, seed=3, precompute_ref_log_probs=True))
    for a, b in zip(shared.step_rows, precomputed.step_rows, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
        assert a["rewards/margins"] == pytest.approx(b["rewards/margins"], abs=1e-4)


def test_base_model_trains_on_plain_text(tiny_base, pairs):
    result = train_policy(tiny_base, pairs, TrainingSettings(**FAST))
    assert len(result.step_rows) == 3


def test_same_seed_same_run(tiny_chat, pairs):
    first = train_policy(tiny_chat, pairs, TrainingSettings(**FAST, seed=7))
    second = train_policy(tiny_chat, pairs, TrainingSettings(**FAST, seed=7))
    assert [r["loss"] for r in first.step_rows] == [r["loss"] for r in second.step_rows]
    for (name, a), (_, b) in zip(first.policy.named_parameters(), second.policy.named_parameters()):
        assert torch.equal(a, b), name


def test_cancel_stops_within_one_step(tiny_chat, pairs):
    cancel = CancelToken()
    seen = []

    def on_event(event):
        seen.append(event)
        if event.kind == "log" and event.step == 2:
            cancel.cancel()

    result = train_policy(
        tiny_chat, pairs, TrainingSettings(**(FAST | {"steps": 50})), on_event=on_event, cancel=cancel
    )
    assert result.stopped_early
    assert result.steps_done == 2
    assert result.total_steps == 50


def test_stream_yields_while_training_and_stops_when_closed(tiny_chat, pairs):
    stream = stream_training(tiny_chat, pairs, TrainingSettings(**(FAST | {"steps": 50})))
    first = next(stream)
    assert first.kind == "log" and first.step == 1
    stream.close()  # the consumer went away: training must stop, not run 49 more steps in the background
    events = list(stream_training(tiny_chat, pairs, TrainingSettings(**FAST)))
    assert [e.kind for e in events] == ["log", "log", "log", "end"]


def test_stream_reraises_training_errors(tiny_chat):
    with pytest.raises(SettingsError, match="no training pairs"):
        list(stream_training(tiny_chat, [], TrainingSettings(**FAST)))


def test_lora_trains_an_adapter_and_returns_it_merged_into_a_plain_model(tiny_chat, pairs):
    from alignlab.recipe import resolve_target

    base_before = {n: p.detach().clone() for n, p in tiny_chat.model.named_parameters()}
    result = train_policy(tiny_chat, pairs, TrainingSettings(**FAST, use_lora=True, lora_rank=4))
    assert len(result.step_rows) == 3
    assert result.trainable_parameters == resolve_target(tiny_chat.source).lora_parameters(4)
    assert type(result.policy) is type(tiny_chat.model)  # merged: no PeftModel, no lora_ layers left
    assert not any("lora_" in n for n, _ in result.policy.named_parameters())
    trained, cached = result.policy.state_dict(), tiny_chat.model.state_dict()
    # the adapter moved the linear layers it sits on, and nothing else
    assert not torch.equal(
        trained["model.layers.0.self_attn.q_proj.weight"], cached["model.layers.0.self_attn.q_proj.weight"]
    )
    assert torch.equal(trained["model.embed_tokens.weight"], cached["model.embed_tokens.weight"])
    # and the cached model, the reference, is bit-for-bit what it was before the run
    for name, param in tiny_chat.model.named_parameters():
        assert torch.equal(param.detach(), base_before[name]), name


def test_the_trained_policy_is_a_plain_model_without_the_trainers_wrappers(tiny_chat, pairs):
    result = train_policy(tiny_chat, pairs, TrainingSettings(**FAST))
    policy = result.policy
    # TRL's fused LM head and accelerate's wrapper both live on the instance's forward; both are gone
    assert "forward" not in vars(policy) and "_original_forward" not in vars(policy)
    assert not policy.is_gradient_checkpointing and not policy.training
    assert result.trainable_parameters == tiny_chat.num_parameters
    # measured: the process's resident memory on a CPU (CUDA's allocator on a GPU), said which
    assert result.peak_memory_kind == "process_rss" and result.peak_memory_bytes > 50 * 2**20
    # it behaves as the same weights in a fresh model would
    fresh = type(policy)(policy.config)
    fresh.load_state_dict(policy.state_dict())
    ids = torch.tensor([[1, 5, 9, 13]])
    torch.testing.assert_close(policy(ids).logits, fresh.eval()(ids).logits)


def test_qlora_needs_lora_and_says_why_it_cannot_run_here(tiny_chat, pairs):
    from alignlab.training.trainer import qlora_unavailable

    with pytest.raises(SettingsError, match="use_qlora needs use_lora"):
        TrainingSettings(use_qlora=True)
    reason = qlora_unavailable()
    if reason is None:
        pytest.skip("this machine can run QLoRA (CUDA and bitsandbytes present)")
    assert "CUDA" in reason or "bitsandbytes" in reason
    with pytest.raises(SettingsError, match="QLoRA"):
        train_policy(tiny_chat, pairs, TrainingSettings(**FAST, use_lora=True, use_qlora=True))


def test_events_and_settings_are_picklable(tiny_chat, pairs):
    """ZeroGPU pickles what crosses its boundary; local runs never do, so check it here."""
    settings = TrainingSettings(**FAST)
    assert pickle.loads(pickle.dumps(settings)) == settings
    events = []
    train_policy(tiny_chat, pairs, TrainingSettings(**(FAST | {"steps": 1})), on_event=events.append)
    log = pickle.loads(pickle.dumps(events[0]))
    assert log.row == events[0].row


def test_a_saved_policy_loads_back_as_the_same_plain_model(tiny_chat, pairs, tmp_path):
    from alignlab.training.trainer import load_policy, save_policy

    result = train_policy(tiny_chat, pairs, TrainingSettings(**FAST))
    loaded_back = load_policy(save_policy(result.policy, tiny_chat.tokenizer, tmp_path / "policy"), tiny_chat)
    ids = torch.tensor([[1, 5, 9, 13]])
    torch.testing.assert_close(loaded_back(ids).logits, result.policy(ids).logits)


def test_every_range_comes_from_the_settings_metadata(capsys) -> None:
    """A setting's field is the one source of its range: the check, the CLI's flags and the API docs read it."""
    from alignlab.cli import main
    from alignlab.registry.settings import KNOBS
    from alignlab.ui.common import api_doc
    from alignlab.ui.train_tab import TRAIN_SETTINGS, train_ui

    for name, knob in KNOBS.items():
        if knob.low is None or name == "epochs":  # beta's range is the method's; epochs is set instead of steps
            continue
        inside = int(knob.high) if knob.whole else knob.high
        outside = inside + 1 if knob.whole else knob.high * 2
        assert not TrainingSettings(**{name: inside}).problems()
        with pytest.raises(SettingsError, match=f"{name} must be"):
            TrainingSettings(**{name: outside})
    assert main(["lab", "--preset", "seed-lab", "--max-length", "5"]) == 2
    assert "max_length must be a whole number from 32 to 2048" in capsys.readouterr().err
    main(["lab", "--preset", "seed-lab", "--lora-rank", "300"])
    assert "lora_rank must be a whole number from 1 to 256" in capsys.readouterr().err
    doc = api_doc(train_ui, KNOBS, TRAIN_SETTINGS)
    assert "steps — Optimizer steps; more = bigger change (1 to 500;" in doc
    assert "lora_rank — LoRA adapter rank; higher = more capacity (1 to 256)." in doc
    assert "simpo: 0.01 to 10" in doc
