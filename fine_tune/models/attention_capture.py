"""The forward of a Hugging Face model that keeps only what a method reads (models/padding_free.py does the same
in its own forward): each recorded layer's query, key and value projections (the methods that read attention:
TinyBERT, MiniLM), and the hidden states of the layers the method declared (engine/protocol.LayerRecord).

Forward hooks on every layer's query/key/value linear layers (their names per family: ``models/families.py``)
record the outputs [B, S, D] of the recorded layers, counting calls (call order is layer order; ALBERT's one shared
layer is called once per layer). The attention scores and distributions are recomputed from them in fp32 by the
losses (``methods/tinybert.py``, ``methods/minilm.py``), so the model keeps its fast attention kernel (no
``output_attentions``, which would force the eager one) and the other methods run exactly as before: only a run
whose method restricts what it reads wraps its models here. DeBERTa's scores hold relative-position terms beyond
Q K^T and cannot be recomputed from the projections; the methods refuse it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import torch
from torch.utils.hooks import RemovableHandle

from ..engine.protocol import EVERY_LAYER, LayerRecord
from .families import family_of

if TYPE_CHECKING:  # importing it loads transformers' modeling utilities (seconds): a model built loads them
    from transformers import PreTrainedModel


@dataclass
class CapturedOutput:
    logits: torch.Tensor
    hidden_states: tuple[torch.Tensor | None, ...] | None  # None at a layer the record does not keep
    attention_inputs: tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None, ...] | None


class AttentionCapture(torch.nn.Module):
    """Wraps a Hugging Face sequence classifier (its parameters, not copies); called like it, it returns
    :class:`CapturedOutput` with ``attention_inputs``: per layer (query, key, value), each [B, S, D], for the layers
    ``record`` records (None at the others; None throughout when it records none), and the hidden states it
    keeps (None at the others)."""

    def __init__(self, model: torch.nn.Module, record: LayerRecord = EVERY_LAYER) -> None:
        super().__init__()
        self.model = model
        self.record = record
        self._records: dict[str, list[torch.Tensor | None]] = {"q": [], "k": [], "v": []}
        self._active = False  # the hooks record only inside this wrapper's forward (the model may run elsewhere)
        self._handles: list[RemovableHandle] = []
        if not record.reads_attention:
            return
        family = family_of(model)
        hf = cast("PreTrainedModel", model)  # a Hugging Face model: its base model is found by its prefix
        base = getattr(hf, hf.base_model_prefix)
        seen: set[int] = set()
        for attention in family.attention_modules(base):
            if id(attention) in seen:  # ALBERT: one shared layer
                continue
            seen.add(id(attention))
            for key, name in zip("qkv", family.qkv):
                self._handles.append(getattr(attention, name).register_forward_hook(self._recorder(key)))

    def _recorder(self, key: str) -> Callable[[torch.nn.Module, Any, torch.Tensor], None]:
        def hook(module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> None:
            if self._active:
                calls = self._records[key]  # this call's layer: one more than the calls before it
                calls.append(output if self.record.records_attention(len(calls) + 1) else None)

        return hook

    @property
    def config(self):
        return self.model.config

    def forward(self, *args: Any, **kwargs: Any) -> CapturedOutput:
        for values in self._records.values():
            values.clear()
        self._active = True
        try:
            out = self.model(*args, **kwargs)
            qkv = (
                tuple(
                    None if q is None or k is None or v is None else (q, k, v)  # (one layer's: all or none)
                    for q, k, v in zip(self._records["q"], self._records["k"], self._records["v"])
                )
                if self.record.reads_attention
                else None
            )
        finally:
            self._active = False
            for values in self._records.values():
                values.clear()
        hidden = out.hidden_states
        if hidden is not None and not self.record.keeps_every_hidden_state:  # the others freed now, not at step end
            hidden = tuple(h if self.record.keeps_hidden(i) else None for i, h in enumerate(hidden))
        return CapturedOutput(out.logits, hidden, qkv)

    def remove(self) -> None:
        """Detach the hooks (the wrapped model runs as before)."""
        for h in self._handles:
            h.remove()
        self._handles = []
