"""The types the engine drives a method through: what a forward pass hands to a loss (:class:`ModelOutputs`),
what the engine asks of a method (:class:`TrainingMethod`), the trainable parameters a method adds
(:class:`ExtraParameters`) and what a layer-wise method is told of the teacher (:class:`TeacherShape`).

The engine and the models know these and nothing of ``fine_tune/methods/``: a method
(:class:`fine_tune.methods.base.Method`) satisfies :class:`TrainingMethod`.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any, Generic, Protocol, SupportsIndex, TypeVar, overload

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
    # views of its head-major copies): read them through methods/tinybert.split_heads / full_width. Only the
    # layers the method declared are kept (LayerRecord; here and in hidden_states: RecordedLayers)
    attention_inputs: tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], ...] | None = None
    embeddings: torch.Tensor | None = None  # the embedding layer's output, when a method reads it (TinyBERT)
    # several teachers (a recipe's teachers:): each one's outputs by name; the fields above are the first one's
    members: dict[str, ModelOutputs] | None = None

    def logits_to(self, device: torch.device, non_blocking: bool = False) -> ModelOutputs:
        """These outputs with the logits (each member's too) on ``device``; the rest stays where it is."""
        members = (
            None
            if self.members is None
            else {name: m.logits_to(device, non_blocking) for name, m in self.members.items()}
        )
        return replace(self, logits=self.logits.to(device, non_blocking=non_blocking), members=members)


@dataclass(frozen=True)
class LayerRecord:
    """Which layers' outputs a model's training forward keeps for a method's losses (the method declares them:
    ``Method.recorded_layers``), so that nothing else stays alive for the step. ``hidden``: the hidden states kept
    when hidden states are asked for, 0 the embedding output and 1..L the layers (None: all of them);
    ``attention``: the layers (1..L) whose query/key/value projections are recorded (None: all; empty: none)."""

    hidden: frozenset[int] | None = None
    attention: frozenset[int] | None = frozenset()

    def keeps_hidden(self, layer: int) -> bool:
        return self.hidden is None or layer in self.hidden

    def records_attention(self, layer: int) -> bool:
        return self.attention is None or layer in self.attention

    @property
    def reads_attention(self) -> bool:
        return self.attention is None or bool(self.attention)

    def union(self, other: LayerRecord) -> LayerRecord:
        """The layers either record keeps (None: every layer): what two methods reading one forward need."""

        def both(x: frozenset[int] | None, y: frozenset[int] | None) -> frozenset[int] | None:
            return None if x is None or y is None else x | y

        return LayerRecord(hidden=both(self.hidden, other.hidden), attention=both(self.attention, other.attention))

    @property
    def keeps_every_hidden_state(self) -> bool:
        return self.hidden is None


# a forward's outputs without a method's record: every hidden state (when asked for), no attention inputs
PLAIN_RECORD = LayerRecord()
# every hidden state and every layer's attention inputs (tests, benches)
EVERY_LAYER = LayerRecord(hidden=None, attention=None)


_T = TypeVar("_T")


class RecordedLayers(tuple[_T, ...], Generic[_T]):
    """Per-layer outputs in layer order (hidden states, or attention inputs) of which a forward kept only the layers
    a method declared (:class:`LayerRecord`); the others are None placeholders, so positions are the layers'
    as ever. Reading a placeholder (by index or by iterating) raises :class:`LookupError` naming the layer: a
    method that reads a layer it did not declare fails loudly instead of reading nothing. ``first``: the layer
    number of position 0 (0 for hidden states with the embedding output, 1 for layers 1..L). Typed by what a
    read returns (``RecordedLayers[torch.Tensor]``: a ``tuple[torch.Tensor, ...]`` whose placeholders raise)."""

    what: str
    first: int

    def __new__(cls, items: Iterable[_T | None], what: str, first: int = 1) -> RecordedLayers[_T]:
        # the placeholders are stored as None; every read (__getitem__, __iter__) raises on them
        self = super().__new__(cls, items)  # type: ignore[arg-type]
        self.what, self.first = what, first
        return self

    def kept(self, index: int) -> bool:
        return tuple.__getitem__(self, index) is not None

    @overload
    def __getitem__(self, index: SupportsIndex) -> _T: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[_T, ...]: ...

    def __getitem__(self, index: SupportsIndex | slice) -> _T | tuple[_T, ...]:
        if isinstance(index, slice):
            items = tuple.__getitem__(self, index)
            start = range(len(self))[index]
            return (
                RecordedLayers(items, self.what, self.first + (start[0] if len(start) else 0))
                if index.step in (None, 1)
                else items
            )
        index = operator.index(index)  # an int (the layer's number below), whatever integer type indexed
        item = tuple.__getitem__(self, index)
        if item is None:
            layer = self.first + (index if index >= 0 else len(self) + index)
            kept = [self.first + i for i in range(len(self)) if self.kept(i)]
            raise LookupError(
                f"the {self.what} of layer {layer} were not recorded: the method declared layers "
                f"{kept} (Method.recorded_layers)"
            )
        return item

    def __iter__(self) -> Iterator[_T]:
        return (self[i] for i in range(len(self)))


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

    def begin_step(self, step: int) -> None: ...

    def losses(
        self, batch: dict[str, Any], student: ModelOutputs, teacher: ModelOutputs | None
    ) -> dict[str, torch.Tensor]: ...

    def extra_parameters(self) -> list[ExtraParameters]: ...

    def train(self, mode: bool = True) -> None: ...

    def checkpoint_state(self) -> dict[str, dict[str, torch.Tensor]]: ...

    def load_checkpoint_state(self, states: dict[str, dict[str, torch.Tensor]]) -> None: ...
