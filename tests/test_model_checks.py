"""What a model is and whether this server may load it, found before any weight is fetched or loaded."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import psutil
import pytest
from transformers import LlamaConfig, T5Config

from alignlab.models import loading
from alignlab.models.loading import ModelLoadError
from alignlab.serving import downloads, model_checks
from alignlab.serving.model_checks import check, check_source, inspect


@pytest.fixture
def public(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALIGNLAB_PUBLIC", "1")
    monkeypatch.delenv("ALIGNLAB_ALLOWED_PATHS", raising=False)
    monkeypatch.delenv("ALIGNLAB_DEFAULT_MODEL", raising=False)


def config_only(directory: Path, config) -> Path:  # noqa: ANN001
    config.save_pretrained(directory)
    assert [p.name for p in directory.iterdir()] == ["config.json"]
    return directory


def test_in_public_mode_a_local_path_is_refused_before_anything_is_read(
    public, tiny_chat_dir: Path, tmp_path: Path
) -> None:
    visitors_policy = tmp_path / "a-visitor" / "policy"
    shutil.copytree(tiny_chat_dir, visitors_policy)
    for spec in (str(visitors_policy), "/etc", "./models/x", "~/secret", "/no/such/folder"):
        with pytest.raises(ModelLoadError, match="public Space: a local path as the model is refused"):
            check(spec)
    assert not loading.is_loaded(str(visitors_policy))
    with pytest.raises(ModelLoadError, match="local path as the recipe target"):
        check_source(str(visitors_policy), "recipe target")
    check_source("openai-community/gpt2")  # Hub ids and the list's names pass this check
    check_source("smollm2-135m-instruct")


def test_the_owner_allows_folders(public, monkeypatch: pytest.MonkeyPatch, tiny_chat_dir: Path, tmp_path: Path) -> None:
    monkeypatch.setenv("ALIGNLAB_DEFAULT_MODEL", str(tiny_chat_dir))
    assert check(str(tiny_chat_dir)).parameters > 0
    other = config_only(tmp_path / "other", LlamaConfig(hidden_size=16, num_hidden_layers=1, intermediate_size=32,
                                                         num_attention_heads=2, vocab_size=64))  # fmt: skip
    with pytest.raises(ModelLoadError, match="refused"):
        check(str(other))
    monkeypatch.setenv("ALIGNLAB_ALLOWED_PATHS", f"/nowhere:{tmp_path}")
    assert check(str(other)).source == str(other)
    escape = tmp_path / "link-out"
    escape.symlink_to(tiny_chat_dir.parent)  # a link inside an allowed folder that points out of it
    monkeypatch.setenv("ALIGNLAB_DEFAULT_MODEL", "")
    with pytest.raises(ModelLoadError, match="refused"):
        check(str(escape / tiny_chat_dir.name))


def test_a_70b_config_is_refused_by_its_size_in_under_a_second_without_taking_memory(tmp_path: Path) -> None:
    directory = config_only(
        tmp_path / "llama-70b",
        LlamaConfig(hidden_size=8192, num_hidden_layers=80, intermediate_size=28672, num_attention_heads=64,
                    num_key_value_heads=8, vocab_size=128256, architectures=["LlamaForCausalLM"]),
    )  # fmt: skip
    process = psutil.Process()
    rss = process.memory_info().rss
    started = time.perf_counter()
    with pytest.raises(ModelLoadError) as refused:
        check(str(directory))
    seconds = time.perf_counter() - started
    message = str(refused.value)
    assert seconds < 1.0, f"the size check took {seconds:.2f} s"
    assert process.memory_info().rss - rss < 200 * 2**20
    limit, described = model_checks.machine_memory()
    assert "70.6 B parameters" in message and f"the limit is {limit / 2**30:,.1f} GiB" in message
    assert described in message and "recipe" in message


def test_the_size_comes_from_the_config_as_the_loaded_model_counts_it(tiny_chat_dir: Path, tiny_chat) -> None:  # noqa: ANN001
    facts = inspect(str(tiny_chat_dir))
    assert facts.parameters == tiny_chat.num_parameters
    assert facts.architecture == type(tiny_chat.model).__name__
    assert facts.download_bytes == 0 and facts.is_local
    assert 0 < facts.memory_bytes < facts.full_memory_bytes


def test_a_memory_limit_refuses_what_would_not_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    assert check("smollm2-135m-instruct").parameters == 134_515_008
    monkeypatch.setenv("ALIGNLAB_MEMORY_LIMIT_GB", "1")
    with pytest.raises(ModelLoadError, match=r"135 M parameters .* the limit is 1\.0 GiB"):
        check("smollm2-135m-instruct")


def test_models_the_lab_cannot_run_are_named_for_what_they_are(tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "config.json").write_text(
        json.dumps({"model_type": "my-own-arch", "auto_map": {"AutoModelForCausalLM": "modeling.MyModel"}})
    )
    with pytest.raises(ModelLoadError, match="needs its own code"):
        check(str(remote))
    t5 = config_only(tmp_path / "t5", T5Config(d_model=16, d_ff=32, num_layers=1, num_heads=2, vocab_size=64))
    with pytest.raises(ModelLoadError, match="encoder-decoder"):
        check(str(t5))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="config.json could not be read"):
        check(str(broken))


def test_offline_a_hub_id_not_in_the_cache_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="HF_HUB_OFFLINE=1 is set"):
        check("no-such-owner/no-such-model-xyz")


def test_a_download_is_refused_when_the_disk_lacks_room(tmp_path: Path) -> None:
    free = downloads.free_bytes(tmp_path)
    with pytest.raises(ModelLoadError, match=r"Not enough free disk to fetch 'big/model'"):
        downloads.check_free_disk("big/model", free + 1, tmp_path)
    downloads.check_free_disk("small/model", 1024, tmp_path)
