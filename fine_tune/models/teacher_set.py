"""Several frozen teachers run as one module (a distillation recipe's ``teachers:``, doc/methods.md "Several
teachers"): the engine runs its one teacher forward, and each member's outputs reach the method by name
(``ModelOutputs.members``; :func:`fine_tune.models.forward.forward` converts them).

The members run one after another on the same batch under the caller's ``torch.no_grad()``; each gets the inputs
its family reads (token type ids only where it has a token type table of more than one type). A member may be
wrapped for training (the padding-free forward, attention capture: ``models/padding_free.training_forwards``)
through :meth:`TeacherSet.map` (same weights, new wrappers)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .forward import reads_token_types


@dataclass
class TeacherSetOutput:
    """Each member's own model output, by name, in the recipe's order."""

    members: dict[str, Any]


class TeacherSet(torch.nn.Module):
    """The named teachers (``{name: model}``, at least two; the first is the run's primary teacher: its
    tokenizer, sequence length and pretrained layers are the run's)."""

    def __init__(self, members: dict[str, torch.nn.Module]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"a teacher set holds at least two teachers, got {len(members)}")
        self.members = torch.nn.ModuleDict(members)
        self.token_types = {name: reads_token_types(m) for name, m in members.items()}

    def map(self, wrap: Callable[[torch.nn.Module], torch.nn.Module]) -> TeacherSet:
        """A set of the same teachers, each wrapped by ``wrap`` (e.g. its training forward)."""
        return TeacherSet({name: wrap(m) for name, m in self.members.items()})

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> TeacherSetOutput:
        out: dict[str, Any] = {}
        for name, model in self.members.items():
            types = {"token_type_ids": token_type_ids} if token_type_ids is not None and self.token_types[name] else {}
            out[name] = model(input_ids=input_ids, attention_mask=attention_mask, **types, **kwargs)
        return TeacherSetOutput(out)
