"""The method interface the training engine drives."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class ModelOutputs:
    """What a forward pass hands to a loss: logits, hidden states (without the embedding output,
    layer 1..L) when asked for, and the attention mask of the batch."""

    logits: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attention_mask: torch.Tensor | None = None


@dataclass
class ExtraParameters:
    """Trainable parameters a method adds (e.g. LAD gates), with their own optimiser settings."""

    name: str
    modules: list[torch.nn.Module]
    lr: float
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.01
    max_norm: float = 1.0
    total_step: int = 1
    warmup_step: int = 0
    clip_per_module: bool = True
    extra: dict = field(default_factory=dict)


class Method:
    """Base class. Subclasses set ``needs_hidden_states`` and implement :meth:`losses`.

    ``losses`` returns a dict of scalar tensors; key ``"loss"`` is what is back-propagated, every other key
    is logged as ``{task}/{dataset}/{model}/{key}``.
    """

    name = "method"
    needs_hidden_states = False
    uses_teacher = False
    # True when no loss term looks at padding positions, so the engine may run the padding-free forward
    # (models/padding_free.py); False for the original's full-sequence hidden MSE and the fixed-length LAD gate
    ignores_padding = True

    def extra_parameters(self) -> list[ExtraParameters]:
        return []

    def checkpoint_state(self) -> dict[str, dict]:
        """Extra state saved beside each ``model-{step}.pt``: file stem -> state_dict (``{stem}-{step}.pt``)."""
        return {}

    def load_checkpoint_state(self, states: dict[str, dict]) -> None:
        """Restore what :meth:`checkpoint_state` returned (resume)."""

    def train(self, mode: bool = True) -> None:
        """Switch the method's own modules (e.g. gates) between training and evaluation mode."""

    def losses(self, batch: dict, student: ModelOutputs, teacher: ModelOutputs | None) -> dict[str, torch.Tensor]:
        raise NotImplementedError
