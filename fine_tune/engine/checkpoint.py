"""Where checkpoints are written: ``model-{step}.pt`` (a plain state_dict of CPU tensors), atomically."""

from __future__ import annotations

from pathlib import Path

import torch

from ..io_utils import atomic_torch_save


def cpu_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def save_model_checkpoint(module: torch.nn.Module, path: Path) -> None:
    atomic_torch_save(cpu_state_dict(module), path)
