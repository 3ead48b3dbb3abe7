"""BERT-PKD: patient knowledge distillation.

Sun, Cheng, Gan, Liu, "Patient Knowledge Distillation for BERT Model Compression", EMNLP 2019. The default is
"our implementation of BERT-PKD" of the LAD code base (Lin et al., Sensors 2023, appendix 7.1): full-sequence
MSE against teacher layers j*skip (the last teacher layer included). ``--pkd_loss normalized_cls`` is Sun et
al.'s own loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import UserError
from .layerwise import HiddenPair, LayerwiseKD

PKD_LOSSES = ("hidden_mse", "normalized_cls")
PKD_STRATEGIES = ("skip", "last")


def pkd_teacher_layers(num_teacher_layers: int, num_student_layers: int, strategy: str, count: int) -> list[int]:
    """Teacher layers (1-based) for student layers 1..count. ``skip``: j * (L_t / L_s) (6 of 12: 2, 4, ..., 12);
    ``last``: the top layers, L_t - L_s + j (6 of 12: 7, ..., 12)."""
    if strategy == "skip":
        skip = num_teacher_layers // num_student_layers
        return [j * skip for j in range(1, count + 1)]
    if strategy == "last":
        return [num_teacher_layers - num_student_layers + j for j in range(1, count + 1)]
    raise UserError(f"--pkd_strategy {strategy!r}: choose skip or last")


def normalized_cls_loss(student_cls: torch.Tensor, teacher_cls: torch.Tensor) -> torch.Tensor:
    r"""Sun et al. (2019), eq. (3) for one layer pair, batch mean::

        || h_s / ||h_s||_2 - h_t / ||h_t||_2 ||_2^2     ([CLS] vectors)"""
    s = F.normalize(student_cls.float(), dim=-1)
    t = F.normalize(teacher_cls.float(), dim=-1)
    return (s - t).pow(2).sum(-1).mean()


class PKD(LayerwiseKD):
    r"""BERT-PKD. ``hidden_mse`` (default, the original code): every student layer j matches teacher layer
    j * skip over the full sequence, ``mu * (1/L_s) * sum_j MSE(H_s[j], H_t[j*skip])``.
    ``normalized_cls`` (Sun et al. 2019): student layers 1..L_s-1 (the last one is covered by the logits loss)
    match normalised [CLS] vectors, ``mu * sum_j ||h_s,j/||h_s,j|| - h_t,j/||h_t,j|| ||^2`` (batch mean), PKD-skip
    (``--pkd_strategy skip``: 2, 4, ..., 10 for 6 of 12) or PKD-last (``last``: 7, ..., 11)."""

    name = "pkd"

    def __init__(self, num_student_layers, num_teacher_layers, hard_weight, soft_weight, temperature, mu, *,
                 loss: str = "hidden_mse", strategy: str = "skip", padding: str = "max_length"):
        if loss not in PKD_LOSSES:
            raise UserError(f"--pkd_loss {loss!r}: choose one of {', '.join(PKD_LOSSES)}")
        super().__init__(num_student_layers, num_teacher_layers, hard_weight, soft_weight, temperature, mu, padding)
        self.loss_kind = loss
        count = num_student_layers if loss == "hidden_mse" else num_student_layers - 1
        if count < 1:
            raise UserError("--pkd_loss normalized_cls needs a student with at least 2 layers")
        self.teacher_layers = pkd_teacher_layers(num_teacher_layers, num_student_layers, strategy, count)

    def hidden_pairs(self, student, teacher):
        dev = student.hidden_states[0].device
        return [HiddenPair(j, student.hidden_states[j - 1], teacher.hidden_states[t - 1].to(dev))
                for j, t in enumerate(self.teacher_layers, 1)], {}

    def hidden_loss(self, pairs, mask=None):
        if self.loss_kind == "hidden_mse":  # masked under --padding dynamic
            return super().hidden_loss(pairs, mask)
        # [CLS] only: the same with either padding
        per = {p.layer: self.mu * normalized_cls_loss(p.student[:, 0], p.target[:, 0]) for p in pairs}
        return torch.stack(list(per.values())).sum(), per

    def describe_mapping(self) -> str:
        return ", ".join(f"S{j}<-T{t}" for j, t in enumerate(self.teacher_layers, 1))
