"""The types the engine drives a method through: what a forward pass hands to a loss (:class:`ModelOutputs`),
what the engine asks of a method (:class:`TrainingMethod`), the trainable parameters a method adds
(:class:`ExtraParameters`) and what a layer-wise method is told of the teacher (:class:`TeacherShape`).

The engine and the models know these and nothing of ``fine_tune/methods/``: a method
(:class:`fine_tune.methods.base.Method`) satisfies :class:`TrainingMethod`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from .optim import OptimiserSettings


@dataclass
class ModelOutputs:
    """What a forward pass hands to a loss: logits, hidden states (without the embedding output,
    layer 1..L) when asked for, the attention mask of the batch, and what attention-reading methods ask for."""

    logits: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attention_mask: torch.Tensor | None = None
    # per layer (query, key, value) projections, for the methods that read attention (TinyBERT, MiniLM): each
    # [B, S, D], or [B, S, H, d_head] with the heads split (the own BERT forward over the padded grid hands on
    # views of its head-major copies): read them through methods/tinybert.split_heads / full_width
    attention_inputs: tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], ...] | None = None
    embeddings: torch.Tensor | None = None  # the embedding layer's output, when a method reads it (TinyBERT)


@dataclass(frozen=True)
class TeacherShape:
    """What a layer-wise method needs to know of the teacher to lay out its mapping."""

    num_layers: int
    hidden_size: int
    num_heads: int | None = None


@dataclass
class ExtraParameters:
    """Trainable parameters a method adds (e.g. LAD gates), optimised as ``optimiser`` describes."""

    name: str
    modules: list[torch.nn.Module]
    optimiser: OptimiserSettings


class TrainingMethod(Protocol):
    """What the training loop (:class:`fine_tune.engine.trainer.Trainer`) reads and calls on a method; the
    meaning of each is :class:`fine_tune.methods.base.Method`'s."""

    needs_hidden_states: bool
    uses_teacher: bool
    every_parameter_learns: bool

    def losses(self, batch: dict, student: ModelOutputs, teacher: ModelOutputs | None) -> dict[str, torch.Tensor]: ...

    def extra_parameters(self) -> list[ExtraParameters]: ...

    def train(self, mode: bool = True) -> None: ...

    def checkpoint_state(self) -> dict[str, dict]: ...

    def load_checkpoint_state(self, states: dict[str, dict]) -> None: ...
