"""The one optimiser description: AdamW, its weight-decay rule, gradient clipping and the linear warmup / decay
schedule. The student and every extra parameter set a method adds (LAD gates) are described by an
:class:`OptimiserSettings` each; the engine builds them all the same way."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch
from transformers import get_linear_schedule_with_warmup

# The original's no-decay rule, by parameter *name*: the student's optimiser exempts names containing "bias" or
# "LayerNorm.weight" (so ALBERT's full_layer_layer_norm.weight is decayed, as in the original); the original's
# gate optimiser also exempts "layernorm.weight", the gates' own LayerNorm.
STUDENT_NO_DECAY = ("bias", "LayerNorm.weight")
GATE_NO_DECAY = ("bias", "LayerNorm.weight", "layernorm.weight")


@dataclass(frozen=True)
class OptimiserSettings:
    """AdamW + linear warmup/decay + gradient clipping for one parameter set.

    ``lr(step) = lr * step / warmup_step`` for ``step < warmup_step``, then
    ``lr * (total_step - step) / (total_step - warmup_step)``; gradients clipped to ``max_norm`` (over the whole
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


def decays(name: str, no_decay: tuple[str, ...]) -> bool:
    """Whether the parameter ``name`` gets weight decay: not when it contains one of ``no_decay``."""
    return not any(nd in name for nd in no_decay)


def param_groups(named: Iterable[tuple[str, torch.nn.Parameter]], weight_decay: float,
                 no_decay: tuple[str, ...] = STUDENT_NO_DECAY) -> list[dict]:
    """Two AdamW groups, as the original: decayed parameters, then those :func:`decays` exempts."""
    decay, exempt = [], []
    for name, p in named:
        if p.requires_grad:
            (decay if decays(name, no_decay) else exempt).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": exempt, "weight_decay": 0.0}]


def build_adamw(named: Iterable[tuple[str, torch.nn.Parameter]], settings: OptimiserSettings,
                device: torch.device) -> torch.optim.AdamW:
    """AdamW with the fused kernel on CUDA and CPU (the same update up to float rounding; doc/performance.md)."""
    groups = param_groups(named, settings.weight_decay, settings.no_decay)
    kwargs = {"fused": True} if device.type in ("cuda", "cpu") else {}
    return torch.optim.AdamW(groups, lr=settings.lr, betas=(settings.beta1, settings.beta2), eps=settings.eps,
                             **kwargs)


def linear_schedule(optimizer: torch.optim.Optimizer, warmup_step: int, total_step: int):
    """lr(step) = peak * step / warmup for step < warmup, then peak * (total - step) / (total - warmup)."""
    return get_linear_schedule_with_warmup(optimizer, num_warmup_steps=warmup_step, num_training_steps=total_step)
