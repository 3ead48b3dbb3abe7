"""A built-in method with a recipe's terms added (a recipe's ``method: NAME``, doc/methods.md "Adding terms to a
method"): the loss is the method's own plus the terms'::

    L = L_method + sum_i w_i * term_i(student, teacher)

The two are complete methods built by the run plan (the method from its flags, the terms as a
:class:`~fine_tune.methods.recipe.RecipeKD`); :class:`MethodWithTerms` runs both on the same forwards and answers
every question the engine and the plan ask of a method for both: the forwards keep the layers either reads, the
padding-free forward packs only when neither reads padding, both own parameter sets train and are saved (the
terms' projection as ``recipe_projection``), and how the run trains (schedule, incomplete batches, initialisation,
heat-map) is the method's."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..engine.protocol import ExtraParameters, LayerRecord, ModelOutputs
from .base import Method

if TYPE_CHECKING:
    from transformers import PretrainedConfig


class MethodWithTerms(Method):
    """``base`` (a built-in method) with ``terms`` (a method of recipe terms) added; logged parts are the base's,
    then each term's under its name (``recipe_{name}`` where the base logs that name too)."""

    name = "recipe"
    online = True

    def __init__(self, base: Method, terms: Method):
        self.base, self.terms = base, terms
        self.map_caption = base.map_caption  # type: ignore[misc]  # an instance value where Method has a ClassVar
        self.needs_labels = base.needs_labels  # type: ignore[misc]  # an instance value where Method has a ClassVar
        self.schedule, self.drop_last = base.schedule, base.drop_last
        self.needs_hidden_states = base.needs_hidden_states or terms.needs_hidden_states
        self.uses_teacher = base.uses_teacher or terms.uses_teacher
        self.every_parameter_learns = base.every_parameter_learns or terms.every_parameter_learns
        self.ignores_padding = base.ignores_padding and terms.ignores_padding

    def __getattr__(self, name: str) -> Any:
        """What a method family adds (LAD's ``layer_map``, a projection) is the base's."""
        if name in ("base", "terms"):
            raise AttributeError(name)
        return getattr(self.base, name)

    @property
    def needs_projection(self) -> bool:
        return bool(getattr(self.base, "needs_projection", False) or getattr(self.terms, "needs_projection", False))

    def check_models(self, teacher_config: PretrainedConfig, student_family: str) -> None:
        self.base.check_models(teacher_config, student_family)
        self.terms.check_models(teacher_config, student_family)

    def check_training_rows(self, rows: int, micro_batch: int, source: str) -> None:
        self.base.check_training_rows(rows, micro_batch, source)

    def recorded_layers(self, role: str) -> LayerRecord:
        return self.base.recorded_layers(role).union(self.terms.recorded_layers(role))

    def record(self) -> dict[str, Any]:
        return {**self.base.record(), **self.terms.record()}

    def init_pairs(self, init_range: tuple[int, int, int] | None, pretrained_student: bool) -> list[tuple[int, int]]:
        return self.base.init_pairs(init_range, pretrained_student)

    def create_parameters(self, device: torch.device | None, student_device: torch.device | None = None) -> None:
        self.base.create_parameters(device, student_device)
        self.terms.create_parameters(device, student_device)

    def extra_parameters(self) -> list[ExtraParameters]:
        return [*self.base.extra_parameters(), *self.terms.extra_parameters()]

    def checkpoint_state(self) -> dict[str, dict[str, Any]]:
        return {**self.base.checkpoint_state(), **self.terms.checkpoint_state()}

    def load_checkpoint_state(self, states: dict[str, dict[str, Any]]) -> None:
        self.base.load_checkpoint_state(states)
        self.terms.load_checkpoint_state(states)

    def train(self, mode: bool = True) -> None:
        self.base.train(mode)
        self.terms.train(mode)

    def notes(self) -> list[str]:
        return [*self.base.notes(), *self.terms.notes()]

    def describe_mapping(self) -> str:
        return "; ".join(m for m in (self.base.describe_mapping(), self.terms.describe_mapping()) if m)

    def layer_map(self, student: ModelOutputs, teacher: ModelOutputs) -> np.ndarray | None:
        """The base's map (LAD's gates): the heat-map its caption names."""
        return self.base.layer_map(student, teacher)

    def begin_step(self, step: int) -> None:
        self.base.begin_step(step)
        self.terms.begin_step(step)

    def losses(
        self, batch: Mapping[str, Any], student: ModelOutputs, teacher: ModelOutputs | None
    ) -> dict[str, torch.Tensor]:
        parts = self.base.losses(batch, student, teacher)
        added = self.terms.losses(batch, student, teacher)
        total = added.pop("loss")
        for name, value in added.items():
            parts[f"recipe_{name}" if name in parts else name] = value
        parts["loss"] = parts["loss"] + total
        return parts
