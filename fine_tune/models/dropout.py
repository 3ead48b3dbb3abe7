"""Dropout with cheaper random masks on CPU, for the padding-free forward.

Dropout (Srivastava et al., "Dropout: a simple way to prevent neural networks from overfitting", JMLR 2014)
keeps each element with probability 1 - p and scales the kept ones, so the expectation is unchanged::

    y = x * m / (1 - p),    m ~ Bernoulli(1 - p) element-wise;    dL/dx = dL/dy * m / (1 - p)

On CPU, PyTorch draws m with ``bernoulli_``, one generator call per element (a noticeable share of a BERT
training step, most of it on the attention probabilities). Here each 64-bit
word of one ``random_`` call gives four independent uniform 16-bit integers u, and m = [u >= round(p * 2^16)]:
the same Bernoulli masks with p rounded to a multiple of 2^-16 (0.1 -> 0.100006), the scale taken from that
rounded p so that E[y] = x exactly (measured against ``F.dropout``: doc/performance.md). Other devices keep
``torch.nn.functional.dropout`` (CUDA's fused Philox kernel is already cheap), and so does a forward compiled
with ``--compile`` (whose tracer cannot capture the in-place ``random_``). Draws come from the global torch
generator, so a seeded run repeats itself and a resumed run continues its random stream.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

_LEVELS = 1 << 16


def keep_mask(
    shape: torch.Size | tuple[int, ...], p: float, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, float]:
    """A bool mask of ``shape`` that is True with probability 1 - p' and the scale 1 / (1 - p'), where
    p' = round(p * 2^16) / 2^16."""
    n = math.prod(shape)
    cut = round(p * _LEVELS)
    if cut >= _LEVELS:
        return torch.zeros(shape, dtype=torch.bool, device=device), 0.0
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_(-(1 << 63), (1 << 63) - 1)
    u = words.view(torch.int16)[:n].view(shape)  # uniform in [-2^15, 2^15): u + 2^15 uniform in [0, 2^16)
    return u >= cut - (1 << 15), _LEVELS / (_LEVELS - cut)


class _Dropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, p):
        keep, scale = keep_mask(x.shape, p, x.device)
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return torch.where(keep, x, 0.0).mul_(scale)

    @staticmethod
    def backward(ctx, grad):
        (keep,) = ctx.saved_tensors
        return torch.where(keep, grad, 0.0).mul_(ctx.scale), None


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """``F.dropout(x, p, training)``, with the cheaper masks on CPU."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0 or torch.compiler.is_compiling():  # compiled: the traceable kernel
        return F.dropout(x, p, True)
    return _Dropout.apply(x, p)
