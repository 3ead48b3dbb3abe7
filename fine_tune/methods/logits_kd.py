"""Fine-tuning with gold labels and logits knowledge distillation.

Hinton, Vinyals, Dean, "Distilling the Knowledge in a Neural Network" (2015); the weighted form is the LAD
code base's (Lin et al., Sensors 2023).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from ..engine.protocol import ModelOutputs
from ..errors import UserError
from ..settings import DistilFlags
from .base import Method, MethodSettings


def logits_kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    labels: torch.Tensor | None,
    hard_weight: float,
    soft_weight: float,
    temperature: float,
    regression: bool = False,
) -> dict[str, torch.Tensor]:
    r"""Weighted logits loss (batch mean)::

        L = hard_weight * CE(s, y) + soft_weight * T^2 * KL(softmax(t / T) || softmax(s / T))

    with ``s`` the student and ``t`` the teacher logits. The 2020-era offline loss
    ``CE(s, y) - sum softmax(t) log softmax(s)`` has the same gradients as hard_weight = soft_weight = 1,
    T = 1 (KL and soft cross-entropy differ by the teacher's entropy, a constant in the student).
    Computed in fp32 whatever the autocast dtype. **Regression** (``regression``: the task's, one output, STS-B):
    both terms are mean squared
    errors, of the student's score against the gold score and against the teacher's, and no temperature applies::

        L = hard_weight * MSE(s, y) + soft_weight * MSE(s, t)
    """
    s = student_logits.float()
    parts: dict[str, torch.Tensor] = {}
    total = s.new_zeros(())
    if regression:
        if labels is not None and hard_weight:
            parts["hard_loss"] = F.mse_loss(s[:, 0], labels.float())
            total = total + hard_weight * parts["hard_loss"]
        if teacher_logits is not None and soft_weight:
            parts["soft_loss"] = F.mse_loss(s[:, 0], teacher_logits.float()[:, 0])
            total = total + soft_weight * parts["soft_loss"]
        parts["logits_loss"] = total
        return parts
    if labels is not None and hard_weight:
        parts["hard_loss"] = F.cross_entropy(s, labels)
        total = total + hard_weight * parts["hard_loss"]
    if teacher_logits is not None and soft_weight:
        t = teacher_logits.float()
        log_p_s = F.log_softmax(s / temperature, dim=-1)
        log_p_t = F.log_softmax(t / temperature, dim=-1)
        kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
        parts["soft_loss"] = kl * temperature**2
        total = total + soft_weight * parts["soft_loss"]
    parts["logits_loss"] = total
    return parts


def check_temperature(regression: bool, temperature: float, soft_loss: str = "the MSE to the teacher's score") -> None:
    """Regression (one output) has no softmax, so no temperature: one other than the default is refused;
    ``soft_loss`` says what the method's soft loss is instead."""
    if regression and temperature != 1.0:
        raise UserError(
            f"--softmax_temp {temperature:g}: a regression task (one output) has no softmax to soften; "
            f"the soft loss is {soft_loss} (leave --softmax_temp at 1)"
        )


class HardLabel(Method):
    """Teacher fine-tuning: cross-entropy with the gold labels, ``L = CE(s, y)``; for regression (one output,
    STS-B) the mean squared error ``L = MSE(s, y)``, as Hugging Face's ``num_labels=1``."""

    name = "fine_tune"
    needs_labels = True

    def __init__(self, regression: bool = False):
        self.regression = regression

    @classmethod
    def build(cls, settings: MethodSettings) -> HardLabel:
        return cls(settings.regression)

    def losses(
        self, batch: Mapping[str, Any], student: ModelOutputs, teacher: ModelOutputs | None = None
    ) -> dict[str, torch.Tensor]:
        logits = student.logits.float()
        if self.regression:
            return {"loss": F.mse_loss(logits[:, 0], batch["labels"].float())}
        return {"loss": F.cross_entropy(logits, batch["labels"])}


class OfflineLogitsKD(Method):
    """Distillation from a logits data set (``run_fine_tune_distill.py``): the teacher's logits travel in
    the batch as ``teacher_logits``; loss as :func:`logits_kd_loss`."""

    name = "offline_logits_kd"
    needs_labels = False  # a logits data set of an unlabelled split trains on the soft loss alone

    def __init__(
        self, hard_weight: float = 1.0, soft_weight: float = 1.0, temperature: float = 1.0, regression: bool = False
    ):
        self.hard_weight, self.soft_weight, self.temperature = hard_weight, soft_weight, temperature
        self.regression = regression

    @classmethod
    def build(cls, settings: MethodSettings) -> OfflineLogitsKD:
        d = settings.group(DistilFlags)
        if not (d.hard_weight or d.soft_weight):
            raise UserError("--hard_weight and --soft_weight are both 0: the student would learn nothing")
        check_temperature(settings.regression, d.softmax_temp)
        return cls(d.hard_weight, d.soft_weight, d.softmax_temp, settings.regression)

    def losses(
        self, batch: Mapping[str, Any], student: ModelOutputs, teacher: ModelOutputs | None = None
    ) -> dict[str, torch.Tensor]:
        parts = logits_kd_loss(
            student.logits,
            batch["teacher_logits"],
            batch.get("labels"),
            self.hard_weight,
            self.soft_weight,
            self.temperature,
            self.regression,
        )
        parts["loss"] = parts["logits_loss"]
        return parts
