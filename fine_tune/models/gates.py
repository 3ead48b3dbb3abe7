"""LAD gate blocks: the learned aggregation of consecutive teacher layers.

Lin, Chen, Kao, "LAD: Layer-Wise Adaptive Distillation for BERT Model Compression", Sensors 23(3):1483, 2023,
after the highway networks of Srivastava, Greff, Schmidhuber (2015).
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn


class GateBlock(nn.Module):
    r"""One LAD gate::

        gate(prev, cur) = cur                                          if prev is all zeros
                        = LayerNorm_[S, D]( cur * g + prev * (1 - g) ),  g = sigmoid(W prev + b)  otherwise

    ``W`` is D x D (Xavier-uniform, bias with PyTorch's default initialisation), the LayerNorm normalises each
    example over its whole [max_seq_len, D] block jointly (affine parameters of shape [S, D]; eps 1e-5), which
    is why the original pads every batch to ``max_seq_len``. ``prev=None`` is the all-zeros case without the
    data-dependent check (the chain uses it for its first element).

    With an attention ``mask`` [B, S] (``--padding dynamic``; a deviation from the original, off by default)
    the LayerNorm is masked and works for any batch width S <= max_seq_len: for example b with real
    (non-padding) positions R_b, x = cur * g + prev * (1 - g)::

        mu_b      = 1 / (|R_b| D) * sum_{s in R_b} sum_d x[b, s, d]
        sigma^2_b = 1 / (|R_b| D) * sum_{s in R_b} sum_d (x[b, s, d] - mu_b)^2
        y[b, s, d] = (x[b, s, d] - mu_b) / sqrt(sigma^2_b + eps) * gamma[s, d] + beta[s, d]   for s in R_b
        y[b, s, d] = 0                                                                       otherwise

    gamma, beta are the same [max_seq_len, D] parameters sliced to the batch's width ([:S]), so a gate
    checkpoint loads in either mode; statistics come from the real tokens only, so the padding neither
    influences the real positions nor depends on how far a batch is padded. With no padding in a batch of
    width max_seq_len it is the original LayerNorm.
    """

    def __init__(self, d_model: int, seq_len: int) -> None:
        super().__init__()
        self.linear = nn.Linear(d_model, d_model)
        self.layernorm = nn.LayerNorm([seq_len, d_model])
        nn.init.xavier_uniform_(self.linear.weight)

    def gate_value(self, prev: torch.Tensor) -> torch.Tensor:
        """g = sigmoid(W prev + b), shape [B, S, D]."""
        return torch.sigmoid(self.linear(prev))

    def norm(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The LayerNorm over [S, D] of each example: the original's (``mask`` None, S = max_seq_len) or the
        masked one (see the class docstring)."""
        if mask is None:
            return self.layernorm(x)
        ln = self.layernorm
        return masked_layer_norm(x, mask, ln.weight, ln.bias, ln.eps)

    def mix(
        self, prev: torch.Tensor, cur: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The gated case without the all-zeros check (no host sync): (LayerNorm(cur g + prev (1 - g)), g);
        ``mask`` [B, S]: the masked LayerNorm (``--padding dynamic``)."""
        g = self.gate_value(prev)
        return self.norm(cur * g + prev * (1 - g), mask), g

    def forward(self, prev: torch.Tensor | None, cur: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if prev is not None and prev.shape != cur.shape:
            raise ValueError(f"gate inputs differ in shape: {tuple(prev.shape)} vs {tuple(cur.shape)}")
        if prev is None or not bool(torch.any(prev != 0)):
            return cur
        return self.mix(prev, cur, mask)[0]


def masked_layer_norm(
    x: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5
) -> torch.Tensor:
    r"""LayerNorm of each example of ``x`` [B, S, D] jointly over its real positions (``mask`` [B, S], nonzero =
    real) and all D, affine ``weight``/``bias`` [max_seq_len, D] sliced to [:S]; padding positions are 0.
    Computed in fp32 (as autocast runs ``layer_norm``)::

        y[b, s] = (x[b, s] - mu_b) / sqrt(sigma^2_b + eps) * weight[s] + bias[s]   (s real),   0 (s padding)

    mu_b and sigma^2_b (biased) over the |R_b| * D real values of example b."""
    b, s, d = x.shape
    if mask.shape != (b, s):
        raise ValueError(f"mask of shape {tuple(mask.shape)} for hidden states of shape {tuple(x.shape)}")
    if s > weight.shape[0]:
        raise ValueError(f"batch width {s} exceeds the gate's max_seq_len {weight.shape[0]}")
    real = mask.bool().unsqueeze(-1)  # [B, S, 1]
    x = torch.where(real, x.float(), 0.0)
    count = (real.sum((1, 2), keepdim=True) * d).clamp_min(1).float()  # [B, 1, 1]
    mean = x.sum((1, 2), keepdim=True) / count
    centred = torch.where(real, x - mean, 0.0)
    var = centred.pow(2).sum((1, 2), keepdim=True) / count
    y = centred * torch.rsqrt(var + eps) * weight[:s].float() + bias[:s].float()
    return torch.where(real, y, 0.0)


def make_gates(count: int, d_model: int, seq_len: int) -> nn.ModuleList:
    return nn.ModuleList(GateBlock(d_model, seq_len) for _ in range(count))


def aggregate_chain(
    gates: nn.ModuleList,
    teacher_hidden: tuple[torch.Tensor, ...],
    upto: int | None = None,
    gate_values: list[torch.Tensor | None] | None = None,
    mask: torch.Tensor | None = None,
) -> list[torch.Tensor]:
    r"""LAD's recurrent aggregation over teacher layers 1..upto (default all)::

        A_1 = H_t[1],    A_k = gate_k(A_{k-1}, H_t[k])  for k = 2..upto

    Returns ``[A_1, ..., A_upto]`` (index k-1 holds A_k). Gate k is ``gates[k-1]``; gate 1 exists (as in the
    original, which starts from an all-zeros ``prev``) but is never applied. When ``gate_values`` is a list,
    the gate value g_k of every applied gate is appended to it (None for k = 1). ``mask`` [B, S]: the gates'
    masked LayerNorm (``--padding dynamic``; A_1 = H_t[1] is returned as it is, its padding positions are
    ignored by the masked loss and by the next gate's statistics).
    """
    upto = len(teacher_hidden) if upto is None else upto
    agg = [teacher_hidden[0]]
    if gate_values is not None:
        gate_values.append(None)
    for k in range(1, upto):
        gate = cast(GateBlock, gates[k])  # the chain's gates: make_gates' GateBlocks
        out, g = gate.mix(agg[-1], teacher_hidden[k], mask)  # A_{k-1} is never all zeros: LayerNorm output or H_t[1]
        agg.append(out)
        if gate_values is not None:
            gate_values.append(g)
    return agg
