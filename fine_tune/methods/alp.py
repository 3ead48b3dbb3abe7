"""ALP-KD: attention-based layer projection.

Passban, Wu, Rezagholizadeh, Liu, "ALP-KD: Attention-Based Layer Projection for Knowledge Distillation",
AAAI 2021; the three variants are the LAD code base's (Lin et al., Sensors 2023, §5.3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from ..engine.protocol import ModelOutputs
from ..errors import UserError
from ..layer_mapping import uniform_layers
from ..settings import flag
from .base import MethodSettings
from .layerwise import HiddenPair, LayerwiseKD, attention_mask_of

ALP_MODES = ("alp-kd", "alp-kd-hidden", "alp-kd-hidden-v2")


def alp_weights(student_h: torch.Tensor, teacher_stack: torch.Tensor, visible: int | None = None) -> torch.Tensor:
    r"""Attention of one student layer over the teacher layers::

        score_k = <H_t[k], H_s[j]> / sqrt(D),   w = softmax_k(score)   (stable: max subtracted; fp32, autocast off)

    ``student_h`` [B, S, D] (or [B, D] for [CLS] only), ``teacher_stack`` [K, B, S, D] (or [K, B, D]); returns
    w of shape [B, S, K] (or [B, K]). ``visible``: only teacher layers 1..visible may be attended to (v2).
    The original computed exp / sum without the max subtraction, which overflows for large scores."""
    d = student_h.shape[-1]
    with fp32(student_h):
        scores = torch.einsum("...d,k...d->...k", student_h.float(), teacher_stack.float()) / math.sqrt(d)
        if visible is not None and visible < scores.shape[-1]:
            scores = scores.masked_fill(torch.arange(scores.shape[-1], device=scores.device) >= visible, float("-inf"))
        return torch.softmax(scores, dim=-1)


def alp_target(weights: torch.Tensor, teacher_stack: torch.Tensor) -> torch.Tensor:
    """sum_k w_k H_t[k]: [B, S, D] (or [B, D]), in fp32 whatever the autocast dtype."""
    with fp32(weights):
        return torch.einsum("...k,k...d->...d", weights.float(), teacher_stack.float())


def fp32(x: torch.Tensor) -> torch.autocast:
    """Autocast off on ``x``'s device: under ``--amp`` autocast would run the einsums in fp16/bf16 whatever their
    inputs' dtype (the ``.float()`` casts alone do not keep them in fp32)."""
    return torch.autocast(device_type=x.device.type, enabled=False)


@dataclass(frozen=True)
class AlpFlags:
    key: ClassVar[str] = "alp"
    alp_exp: str = flag("alp-kd-hidden", "ALP-KD variant", choices=("alp-kd", "alp-kd-hidden", "alp-kd-hidden-v2"))


class ALPKD(LayerwiseKD):
    r"""ALP-KD: student layer j learns ``sum_k w_jk H_t[k]``, ``w_j = softmax_k(<H_t[k], H_s[j]> / sqrt(D))``.

    ``alp-kd``: [CLS] vectors only (weights and MSE on position 0). ``alp-kd-hidden``: token-wise, every
    position has its own weights. ``alp-kd-hidden-v2``: token-wise, student layer j may only attend to teacher
    layers 1..j*skip (the last sees all). Weights carry gradient to the student (no learned parameters).
    ``padding="dynamic"``: each token's weights are computed as always (they depend on that token alone); only
    the MSE is masked to the real tokens."""

    name = "alp"
    flag_groups = (AlpFlags,)
    map_caption = (
        "Mean ALP-KD attention of each student layer over the teacher layers (non-padding tokens of the dev sample)."
    )

    @classmethod
    def own_arguments(cls, settings: MethodSettings) -> dict[str, Any]:
        return {"mode": settings.group(AlpFlags).alp_exp}

    def __init__(
        self,
        num_student_layers: int,
        num_teacher_layers: int,
        hard_weight: float,
        soft_weight: float,
        temperature: float,
        mu: float,
        *,
        mode: str,
        padding: str = "max_length",
        **common: Any,
    ) -> None:
        if mode not in ALP_MODES:
            raise UserError(f"--alp_exp {mode!r}: choose one of {', '.join(ALP_MODES)}")
        super().__init__(
            num_student_layers, num_teacher_layers, hard_weight, soft_weight, temperature, mu, padding, **common
        )
        self.mode = mode

    def visible(self, j: int) -> int | None:
        return uniform_layers(self.ls, self.lt)[j - 1] if self.mode == "alp-kd-hidden-v2" and j < self.ls else None

    def _weights(
        self, student: ModelOutputs, teacher: ModelOutputs
    ) -> tuple[torch.Tensor, list[tuple[int, torch.Tensor, torch.Tensor]]]:
        assert student.hidden_states is not None and teacher.hidden_states is not None  # needs_hidden_states
        cls = self.mode == "alp-kd"
        th = teacher.hidden_states
        stack = torch.stack([h[:, 0] if cls else h for h in th]).to(student.hidden_states[0].device)
        out = []
        for j, hs in enumerate(student.hidden_states, 1):
            s = hs[:, 0] if cls else hs
            w = alp_weights(s, stack, self.visible(j))
            out.append((j, s, w))
        return stack, out

    def hidden_pairs(
        self, student: ModelOutputs, teacher: ModelOutputs
    ) -> tuple[list[HiddenPair], dict[str, torch.Tensor]]:
        stack, rows = self._weights(student, teacher)
        return [HiddenPair(j, s, alp_target(w, stack)) for j, s, w in rows], {}

    def layer_map(self, student: ModelOutputs, teacher: ModelOutputs) -> np.ndarray:
        _, rows = self._weights(self.in_teacher_space(student), teacher)
        mask = attention_mask_of(teacher).to(rows[0][2].device).float()
        out = []
        for _, _, w in rows:
            if w.dim() == 2:  # [CLS]: [B, K]
                out.append(w.mean(0))
            else:  # [B, S, K]: mean over non-padding tokens
                out.append((w * mask[..., None]).sum((0, 1)) / mask.sum().clamp_min(1))
        return torch.stack(out).cpu().numpy().astype(np.float64)

    def describe_mapping(self) -> str:
        return ", ".join(f"S{j}<-attn(T1..T{self.visible(j) or self.lt})" for j in range(1, self.ls + 1))
