import pytest

from alignlab.models.generation import generate
from alignlab.registry.settings import GenerationSettings, GenerationSettingsError

PROMPTS = ["How do I boil an egg?", "Hi", "Tell me something about rivers and the sea, please."]


@pytest.mark.parametrize("fixture", ["tiny_chat", "tiny_base"])
def test_batched_equals_one_at_a_time(request, fixture):
    loaded = request.getfixturevalue(fixture)
    settings = GenerationSettings(max_new_tokens=12)
    batched = generate(loaded, PROMPTS, settings)
    single = [generate(loaded, [p], settings)[0] for p in PROMPTS]
    assert batched == single
    assert all(isinstance(t, str) for t in batched)
    assert any(batched)  # a random model still emits tokens


def test_greedy_is_deterministic_and_sampling_is_seeded(tiny_chat):
    greedy = GenerationSettings(max_new_tokens=10)
    assert generate(tiny_chat, PROMPTS, greedy) == generate(tiny_chat, PROMPTS, greedy)
    sampled = [
        generate(tiny_chat, PROMPTS, GenerationSettings(max_new_tokens=10, do_sample=True, seed=s)) for s in (1, 1, 2)
    ]
    assert sampled[0] == sampled[1]
    assert sampled[0] != sampled[2]


def test_max_new_tokens_bounds_the_answer(tiny_chat):
    (short,) = generate(tiny_chat, ["Hi"], GenerationSettings(max_new_tokens=3))
    assert len(tiny_chat.tokenizer(short, add_special_tokens=False)["input_ids"]) <= 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_new_tokens": 0}, "max_new_tokens must be a whole number from 1 to 512"),
        ({"max_new_tokens": 10_000}, "max_new_tokens"),
        ({"temperature": 0}, "temperature must be between"),
        ({"top_p": 1.5}, "top_p must be between"),
    ],
)
def test_settings_are_validated(kwargs, message):
    with pytest.raises(GenerationSettingsError, match=message):
        GenerationSettings(**kwargs)
