"""The forward of the methods that read attention (TinyBERT, MiniLM): the model's own forward, plus each layer's
query, key and value projections.

Forward hooks on every layer's query/key/value linear layers (their names per family: ``models/families.py``)
record their outputs [B, S, D] in call order, which is layer order (ALBERT's one shared layer is called once per
layer). The attention scores and distributions are recomputed from them in fp32 by the losses
(``methods/tinybert_losses.py``, ``methods/minilm_losses.py``), so the model keeps its fast attention kernel (no
``output_attentions``, which would force the eager one) and the other methods run exactly as before: only a run
of these methods wraps its models here. DeBERTa's scores hold relative-position terms beyond Q K^T and cannot be
recomputed from the projections; the methods refuse it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .families import family_of


@dataclass
class CapturedOutput:
    logits: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...] | None
    attention_inputs: tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], ...]


class AttentionCapture(torch.nn.Module):
    """Wraps a Hugging Face sequence classifier (its parameters, not copies); called like it, it returns
    :class:`CapturedOutput` with ``attention_inputs``: per layer (query, key, value), each [B, S, D]."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        family = family_of(model)
        base = getattr(model, model.base_model_prefix)
        self._records: dict[str, list[torch.Tensor]] = {"q": [], "k": [], "v": []}
        self._active = False  # the hooks record only inside this wrapper's forward (the model may run elsewhere)
        self._handles = []
        seen: set[int] = set()
        for attention in family.attention_modules(base):
            if id(attention) in seen:  # ALBERT: one shared layer
                continue
            seen.add(id(attention))
            for key, name in zip("qkv", family.qkv):
                self._handles.append(getattr(attention, name).register_forward_hook(self._recorder(key)))

    def _recorder(self, key: str):
        def hook(module, inputs, output):
            if self._active:
                self._records[key].append(output)
        return hook

    @property
    def config(self):
        return self.model.config

    def forward(self, *args, **kwargs) -> CapturedOutput:
        for values in self._records.values():
            values.clear()
        self._active = True
        try:
            out = self.model(*args, **kwargs)
            qkv = tuple(zip(self._records["q"], self._records["k"], self._records["v"]))
        finally:
            self._active = False
            for values in self._records.values():
                values.clear()
        return CapturedOutput(out.logits, out.hidden_states, qkv)

    def remove(self) -> None:
        """Detach the hooks (the wrapped model runs as before)."""
        for h in self._handles:
            h.remove()
        self._handles = []
