"""BERT-PKD: patient knowledge distillation.

Sun, Cheng, Gan, Liu, "Patient Knowledge Distillation for BERT Model Compression", EMNLP 2019. The default is
"our implementation of BERT-PKD" of the LAD code base (Lin et al., Sensors 2023, appendix 7.1): full-sequence
MSE against teacher layers j*skip (the last teacher layer included). ``--pkd_loss normalized_cls`` is Sun et
al.'s own loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from ..engine.protocol import PLAIN_RECORD, LayerRecord, ModelOutputs
from ..errors import UserError
from ..layer_mapping import uniform_layers
from ..settings import flag
from .base import MethodSettings
from .layerwise import HiddenPair, LayerwiseKD

PKD_LOSSES = ("hidden_mse", "normalized_cls")
PKD_STRATEGIES = ("skip", "last")


def pkd_teacher_layers(num_teacher_layers: int, num_student_layers: int, strategy: str, count: int) -> list[int]:
    """Teacher layers (1-based) for student layers 1..count. ``skip``: j * (L_t / L_s) (6 of 12: 2, 4, ..., 12);
    ``last``: the top layers, L_t - L_s + j (6 of 12: 7, ..., 12)."""
    if strategy == "skip":  # ceil(j * L_t / L_s) when L_s does not divide L_t (4 of 6: 2, 3, 5, 6)
        return uniform_layers(num_student_layers, num_teacher_layers, count)
    if strategy == "last":
        return [num_teacher_layers - num_student_layers + j for j in range(1, count + 1)]
    raise UserError(f"--pkd_strategy {strategy!r}: choose skip or last")


def normalized_cls_loss(student_cls: torch.Tensor, teacher_cls: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    r"""Sun et al. (2019), eq. (3), for one layer pair::

        || h_s / ||h_s||_2 - h_t / ||h_t||_2 ||_2^2     ([CLS] vectors [B, D])

    ``reduction="mean"`` (the released code's ``F.mse_loss``): the mean over the batch *and the D dimensions*;
    ``"sum"``: the squared norm summed over D, mean over the batch (the toolkit before the fix: D times larger)."""
    s = F.normalize(student_cls.float(), dim=-1)
    t = F.normalize(teacher_cls.float(), dim=-1)
    squared = (s - t).pow(2)
    return squared.mean() if reduction == "mean" else squared.sum(-1).mean()


@dataclass(frozen=True)
class PkdFlags:
    key: ClassVar[str] = "pkd"
    pkd_loss: str = flag(
        "hidden_mse",
        "hidden_mse: full-sequence MSE on every student layer (the original's "
        "'our implementation'); normalized_cls: Sun et al. 2019, normalised [CLS] "
        "states of student layers 1..L_s-1, averaged as their released code",
        choices=("hidden_mse", "normalized_cls"),
    )
    pkd_strategy: str = flag(
        "skip", "teacher layers: skip (j * L_t/L_s) or last (PKD-last: the top layers)", choices=("skip", "last")
    )


class PKD(LayerwiseKD):
    r"""BERT-PKD. ``hidden_mse`` (default, the original code): every student layer j matches teacher layer
    j * skip over the full sequence, ``mu * (1/L_s) * sum_j MSE(H_s[j], H_t[j*skip])``.

    ``normalized_cls`` (Sun et al. 2019): student layers 1..M-1 (the last one is covered by the logits loss) match
    the teacher's normalised [CLS] vectors, reduced as Sun et al.'s released code (``F.mse_loss`` over the stacked
    [B, M-1, D] tensor)::

        L_PT = mu * 1/((M-1) B D) * sum_{j=1..M-1} sum_b || h_s,j / ||h_s,j|| - h_t,I(j) / ||h_t,I(j)|| ||^2

    so the published beta values (100-500) transfer as ``--mu``. Teacher layers I(j): PKD-skip (``--pkd_strategy
    skip``: 2, 4, ..., 10 for 6 of 12) or PKD-last (``last``: 7, ..., 11). A run started before this reduction
    was fixed continues with the old one (``cls_reduction="sum"``: summed over layers and D, (M-1) D times
    larger)."""

    name = "pkd"
    flag_groups = (PkdFlags,)

    def __init__(
        self,
        num_student_layers: int,
        num_teacher_layers: int,
        hard_weight: float,
        soft_weight: float,
        temperature: float,
        mu: float,
        *,
        loss: str = "hidden_mse",
        strategy: str = "skip",
        padding: str = "max_length",
        cls_reduction: str = "mean",
        **common: Any,
    ) -> None:
        if loss not in PKD_LOSSES:
            raise UserError(f"--pkd_loss {loss!r}: choose one of {', '.join(PKD_LOSSES)}")
        super().__init__(
            num_student_layers, num_teacher_layers, hard_weight, soft_weight, temperature, mu, padding, **common
        )
        self.loss_kind = loss
        self.cls_reduction = cls_reduction
        count = num_student_layers if loss == "hidden_mse" else num_student_layers - 1
        if count < 1:
            raise UserError("--pkd_loss normalized_cls needs a student with at least 2 layers")
        self.teacher_layers = pkd_teacher_layers(num_teacher_layers, num_student_layers, strategy, count)
        # of the teacher only the matched layers' hidden states (L_s of L_t); the student's all (every one matched,
        # or projected to the teacher's width)
        self.records = {"student": PLAIN_RECORD, "teacher": LayerRecord(hidden=frozenset(self.teacher_layers))}

    def recorded_layers(self, role: str) -> LayerRecord:
        return self.records[role]

    @classmethod
    def own_arguments(cls, settings: MethodSettings) -> dict[str, Any]:
        return {
            "loss": settings.group(PkdFlags).pkd_loss,
            "strategy": settings.group(PkdFlags).pkd_strategy,
            "cls_reduction": settings.legacy.get("pkd_cls_reduction", "mean"),
        }

    def record(self) -> dict[str, Any]:
        return {"pkd_cls_reduction": self.cls_reduction} if self.loss_kind == "normalized_cls" else {}

    def hidden_pairs(
        self, student: ModelOutputs, teacher: ModelOutputs
    ) -> tuple[list[HiddenPair], dict[str, torch.Tensor]]:
        assert student.hidden_states is not None and teacher.hidden_states is not None  # needs_hidden_states
        dev = student.hidden_states[0].device
        return [
            HiddenPair(j, student.hidden_states[j - 1], teacher.hidden_states[t - 1].to(dev))
            for j, t in enumerate(self.teacher_layers, 1)
        ], {}

    def hidden_loss(
        self, pairs: list[HiddenPair], mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        if self.loss_kind == "hidden_mse":  # masked under --padding dynamic
            return super().hidden_loss(pairs, mask)
        # [CLS] only: the same with either padding
        scale = self.mu / len(pairs) if self.cls_reduction == "mean" else self.mu
        per = {p.layer: scale * normalized_cls_loss(p.student[:, 0], p.target[:, 0], self.cls_reduction) for p in pairs}
        return torch.stack(list(per.values())).sum(), per

    def describe_mapping(self) -> str:
        return ", ".join(f"S{j}<-T{t}" for j, t in enumerate(self.teacher_layers, 1))
