import torch
import torch.nn.functional as F

from alignlab.models import cpu_head
from alignlab.models.cpu_head import CpuProjectionHead
from alignlab.models.generation import generate
from alignlab.registry.settings import GenerationSettings


def test_loaded_models_project_with_the_cpu_head_and_keep_their_tied_weights(tiny_chat):
    head = tiny_chat.model.get_output_embeddings()
    assert type(head) is CpuProjectionHead
    if tiny_chat.model.config.tie_word_embeddings:
        assert head.weight is tiny_chat.model.get_input_embeddings().weight
    assert "lm_head.weight" in tiny_chat.model.state_dict() or tiny_chat.model.config.tie_word_embeddings


def test_the_cpu_head_gives_linears_numbers_with_and_without_autograd():
    torch.manual_seed(0)
    plain = torch.nn.Linear(24, 500, bias=True)
    head = torch.nn.Linear(24, 500, bias=True)
    head.load_state_dict(plain.state_dict())
    cpu_head.install(torch.nn.Module())  # a model without a head is left alone
    head.__class__ = CpuProjectionHead
    for shape in ((1, 24), (7, 24), (2, 3, 24)):
        x = torch.randn(*shape)
        with torch.inference_mode():
            got = head(x)
        assert got.shape == (*shape[:-1], 500)
        assert torch.allclose(got, F.linear(x, plain.weight, plain.bias), atol=1e-5)
    x = torch.randn(5, 24, requires_grad=True)  # training: nn.Linear's own path, gradients intact
    head(x).sum().backward()
    assert x.grad is not None and head.weight.grad is not None


def test_answers_are_the_same_through_either_head(tiny_chat):
    settings = GenerationSettings(max_new_tokens=12)
    prompts = ["Hi", "Tell me about rivers.", "Why?"]
    fast = generate(tiny_chat, prompts, settings)
    head = tiny_chat.model.get_output_embeddings()
    head.__class__ = torch.nn.Linear
    try:
        plain = generate(tiny_chat, prompts, settings)
    finally:
        head.__class__ = CpuProjectionHead
    assert fast == plain
