"""AdamW parameter groups and the linear warmup / linear decay schedule."""

from __future__ import annotations

from typing import Iterable

import torch
from transformers import get_linear_schedule_with_warmup

NO_DECAY = ("bias", "LayerNorm.weight")


def param_groups(named: Iterable[tuple[str, torch.nn.Parameter]], weight_decay: float) -> list[dict]:
    """Two groups, as the original: no weight decay on parameters whose *name* contains ``bias`` or
    ``LayerNorm.weight`` (so ALBERT's ``full_layer_layer_norm.weight`` is decayed)."""
    decay, no_decay = [], []
    for name, p in named:
        if not p.requires_grad:
            continue
        (no_decay if any(nd in name for nd in NO_DECAY) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def no_decay_names(named: Iterable[tuple[str, torch.nn.Parameter]]) -> list[str]:
    return [n for n, _ in named if any(nd in n for nd in NO_DECAY)]


def build_adamw(named: Iterable[tuple[str, torch.nn.Parameter]], *, lr: float, beta1: float, beta2: float,
                eps: float, weight_decay: float, device: torch.device) -> torch.optim.AdamW:
    """AdamW with the fused kernel on CUDA and CPU (same update up to float rounding). On this project's 2-core
    CPU, one step over MiniLM's 22M parameters took 0.17 s fused vs 1.1 s for the per-tensor loop and 3.5 s for
    ``foreach`` (measured with the three settings side by side in one process)."""
    groups = param_groups(named, weight_decay)
    kwargs = {"fused": True} if device.type in ("cuda", "cpu") else {}
    return torch.optim.AdamW(groups, lr=lr, betas=(beta1, beta2), eps=eps, **kwargs)


def linear_schedule(optimizer: torch.optim.Optimizer, warmup_step: int, total_step: int):
    """lr(step) = peak * step / warmup for step < warmup, then peak * (total - step) / (total - warmup)."""
    return get_linear_schedule_with_warmup(optimizer, num_warmup_steps=warmup_step, num_training_steps=total_step)
