"""The one optimiser description: AdamW, its weight-decay rule, gradient clipping and its learning-rate schedule
(linear warmup / decay, or constant). The student and every extra parameter set a method adds (LAD gates) are
described by an :class:`OptimiserSettings` each; the engine builds them all the same way."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from transformers import get_linear_schedule_with_warmup

# The original's no-decay rule, by parameter *name*: the student's optimiser exempts names containing "bias" or
# "LayerNorm.weight" (so ALBERT's full_layer_layer_norm.weight is decayed, as in the original); the original's
# gate optimiser also exempts "layernorm.weight", the gates' own LayerNorm.
STUDENT_NO_DECAY = ("bias", "LayerNorm.weight")
GATE_NO_DECAY = ("bias", "LayerNorm.weight", "layernorm.weight")
# the learning-rate schedules (OptimiserSettings.schedule): "linear" warmup then decay (every script's); "constant",
# no warmup (TinyBERT's released intermediate stage, BertAdam's schedule 'none')
SCHEDULES = ("linear", "constant")


@dataclass(frozen=True)
class OptimiserSettings:
    """AdamW + its learning-rate schedule + gradient clipping for one parameter set.

    ``schedule="linear"``: ``lr(step) = lr * step / warmup_step`` for ``step < warmup_step``, then
    ``lr * (total_step - step) / (total_step - warmup_step)``; ``schedule="constant"``: ``lr(step) = lr`` at every
    step (``warmup_step`` does not apply); gradients clipped to ``max_norm`` (over the whole
    set, or per module with ``clip_per_module``, as the original clips each LAD gate); no weight decay on
    parameters whose name contains one of ``no_decay``."""

    lr: float
    total_step: int
    warmup_step: int
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.01
    max_norm: float = 1.0
    no_decay: tuple[str, ...] = STUDENT_NO_DECAY
    clip_per_module: bool = False
    schedule: str = "linear"  # one of SCHEDULES

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule {self.schedule!r}: expected one of {SCHEDULES}")


def decays(name: str, no_decay: tuple[str, ...]) -> bool:
    """Whether the parameter ``name`` gets weight decay: not when it contains one of ``no_decay``."""
    return not any(nd in name for nd in no_decay)


def param_groups(
    named: Iterable[tuple[str, torch.nn.Parameter]], weight_decay: float, no_decay: tuple[str, ...] = STUDENT_NO_DECAY
) -> list[dict[str, Any]]:
    """Two AdamW groups, as the original: decayed parameters, then those :func:`decays` exempts."""
    decay: list[torch.nn.Parameter] = []
    exempt: list[torch.nn.Parameter] = []
    for name, p in named:
        if p.requires_grad:
            (decay if decays(name, no_decay) else exempt).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": exempt, "weight_decay": 0.0}]


def build_adamw(
    named: Iterable[tuple[str, torch.nn.Parameter]], settings: OptimiserSettings, device: torch.device
) -> torch.optim.AdamW:
    """AdamW with the fused kernel on CUDA and CPU (the same update up to float rounding; doc/performance.md)."""
    groups = param_groups(named, settings.weight_decay, settings.no_decay)
    kwargs = {"fused": True} if device.type in ("cuda", "cpu") else {}
    return torch.optim.AdamW(groups, lr=settings.lr, betas=(settings.beta1, settings.beta2), eps=settings.eps, **kwargs)


def linear_schedule(
    optimizer: torch.optim.Optimizer, warmup_step: int, total_step: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """lr(step) = peak * step / warmup for step < warmup, then peak * (total - step) / (total - warmup)."""
    # transformers leaves the function unannotated; it returns a LambdaLR
    schedule: torch.optim.lr_scheduler.LambdaLR = get_linear_schedule_with_warmup(  # type: ignore[no-untyped-call]
        optimizer, num_warmup_steps=warmup_step, num_training_steps=total_step
    )
    return schedule


def _constant(step: int) -> float:
    return 1.0


def constant_schedule(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    """lr(step) = peak at every step, no warmup (BertAdam's ``schedule='none'``). A LambdaLR like the linear one, so
    the resume state holds the same kind of scheduler state."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, _constant)


def lr_schedule(optimizer: torch.optim.Optimizer, settings: OptimiserSettings) -> torch.optim.lr_scheduler.LambdaLR:
    """The schedule ``settings.schedule`` names, over ``optimizer``."""
    if settings.schedule == "constant":
        return constant_schedule(optimizer)
    return linear_schedule(optimizer, settings.warmup_step, settings.total_step)
