"""The language-model head's projection on a CPU, when nothing needs its gradient.

A head maps a few hidden states (H wide) onto the whole vocabulary (V rows, V >> H): generation
projects one position per prompt at each new token, the evidence a chunk of answer positions at a
time. ``nn.Linear`` computes ``x @ W.T``, and for that shape the CPU BLAS that PyTorch ships picks a
slow path at many row counts. ``W @ x.T`` gives the same numbers (up to float rounding order), the same
greedy answers, and is never slower: at 7 rows, SmolLM2's head (49152 x 576) projects in well under half the
time, a third off each generation of the eval answers (``docs/performance.md``). Training keeps
``nn.Linear``'s own path (and TRL projects through its fused head anyway), as does any device but the CPU.
"""

from __future__ import annotations

import torch
from torch import nn


class CpuProjectionHead(nn.Linear):
    """An ``nn.Linear`` LM head that projects as ``W @ x.T`` on a CPU without autograd."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)):
            return super().forward(x)
        rows = x.reshape(-1, x.shape[-1])
        out = torch.matmul(self.weight, rows.T).T
        if self.bias is not None:
            out = out + self.bias
        return out.contiguous().view(*x.shape[:-1], self.out_features)


def install(model: nn.Module) -> nn.Module:
    """Give ``model``'s output head the CPU projection, in place (same parameters, tied weights and state dict).

    Only a plain ``nn.Linear`` head is changed; any other head (a quantised one, a custom class) stays as it is.
    """
    get = getattr(model, "get_output_embeddings", None)
    head = get() if callable(get) else None
    if head is not None and type(head) is nn.Linear:
        head.__class__ = CpuProjectionHead
    return model
