"""LAD gate blocks: the learned aggregation of consecutive teacher layers.

Lin, Chen, Kao, "LAD: Layer-Wise Adaptive Distillation for BERT Model Compression", Sensors 23(3):1483, 2023,
after the highway networks of Srivastava, Greff, Schmidhuber (2015).
"""

from __future__ import annotations

import torch
from torch import nn


class GateBlock(nn.Module):
    r"""One LAD gate::

        gate(prev, cur) = cur                                          if prev is all zeros
                        = LayerNorm_[S, D]( cur * g + prev * (1 - g) ),  g = sigmoid(W prev + b)  otherwise

    ``W`` is D x D (Xavier-uniform, bias with PyTorch's default initialisation), the LayerNorm normalises each
    example over its whole [max_seq_len, D] block jointly (affine parameters of shape [S, D]; eps 1e-5), which
    is why LAD pads every batch to ``max_seq_len``. ``prev=None`` is the all-zeros case without the
    data-dependent check (the chain uses it for its first element).
    """

    def __init__(self, d_model: int, seq_len: int):
        super().__init__()
        self.linear = nn.Linear(d_model, d_model)
        self.layernorm = nn.LayerNorm([seq_len, d_model])
        nn.init.xavier_uniform_(self.linear.weight)

    def gate_value(self, prev: torch.Tensor) -> torch.Tensor:
        """g = sigmoid(W prev + b), shape [B, S, D]."""
        return torch.sigmoid(self.linear(prev))

    def mix(self, prev: torch.Tensor, cur: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The gated case without the all-zeros check (no host sync): (LayerNorm(cur g + prev (1 - g)), g)."""
        g = self.gate_value(prev)
        return self.layernorm(cur * g + prev * (1 - g)), g

    def forward(self, prev: torch.Tensor | None, cur: torch.Tensor) -> torch.Tensor:
        if prev is not None and prev.shape != cur.shape:
            raise ValueError(f"gate inputs differ in shape: {tuple(prev.shape)} vs {tuple(cur.shape)}")
        if prev is None or not bool(torch.any(prev != 0)):
            return cur
        return self.mix(prev, cur)[0]


def make_gates(count: int, d_model: int, seq_len: int) -> nn.ModuleList:
    return nn.ModuleList(GateBlock(d_model, seq_len) for _ in range(count))


def aggregate_chain(gates: nn.ModuleList, teacher_hidden: tuple[torch.Tensor, ...], upto: int | None = None,
                    gate_values: list | None = None) -> list[torch.Tensor]:
    r"""LAD's recurrent aggregation over teacher layers 1..upto (default all)::

        A_1 = H_t[1],    A_k = gate_k(A_{k-1}, H_t[k])  for k = 2..upto

    Returns ``[A_1, ..., A_upto]`` (index k-1 holds A_k). Gate k is ``gates[k-1]``; gate 1 exists (as in the
    original, which starts from an all-zeros ``prev``) but is never applied. When ``gate_values`` is a list,
    the gate value g_k of every applied gate is appended to it (None for k = 1).
    """
    upto = len(teacher_hidden) if upto is None else upto
    agg = [teacher_hidden[0]]
    if gate_values is not None:
        gate_values.append(None)
    for k in range(1, upto):
        out, g = gates[k].mix(agg[-1], teacher_hidden[k])  # A_{k-1} is never all zeros: LayerNorm output or H_t[1]
        agg.append(out)
        if gate_values is not None:
            gate_values.append(g)
    return agg
