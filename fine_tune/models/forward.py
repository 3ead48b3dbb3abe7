"""One forward pass of any sequence classifier on a collated batch, as every loss reads it (ModelOutputs): the
training engine, evaluation and the layer-map probe all run models through :func:`forward`."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, cast

import torch

from ..engine.protocol import ModelOutputs, RecordedLayers

INPUT_KEYS = ("input_ids", "token_type_ids", "attention_mask")


def reads_token_types(model: torch.nn.Module) -> bool:
    """Whether ``model`` (or the model inside a DDP / torch.compile / forward wrapper) has a token type table of
    more than one type: RoBERTa's single type, DistilBERT's and DeBERTa's none are not given the collator's ids."""
    while not hasattr(model, "config") and (hasattr(model, "module") or hasattr(model, "_orig_mod")):
        model = cast(torch.nn.Module, getattr(model, "module", None) or model._orig_mod)  # the wrapped model
    config = getattr(model, "config", None)
    return config is None or (getattr(config, "type_vocab_size", 0) or 0) > 1


def forward(model: torch.nn.Module, batch: dict[str, Any], hidden: bool) -> ModelOutputs:
    """The model on a batch; ``batch["model_kwargs"]`` (the collator's extra inputs for the model, e.g. the
    padding-free forward's host-built packing) is handed to it as it is. A model's output may carry
    ``attention_inputs`` (the attention-capturing forward of TinyBERT and MiniLM, models/attention_capture.py).
    Hidden states and attention inputs come as :class:`RecordedLayers`: a layer the forward did not keep (its
    method did not declare it) raises when read. Several teachers (a :class:`~fine_tune.models.teacher_set.TeacherSet`):
    each member's outputs by name in ``members``, the first member's at the top level."""
    keys = INPUT_KEYS if reads_token_types(model) else ("input_ids", "attention_mask")
    out = model(
        **{k: batch[k] for k in keys}, **batch.get("model_kwargs", {}), output_hidden_states=hidden, return_dict=True
    )
    members = getattr(out, "members", None)  # several teachers (models/teacher_set.TeacherSet)
    if members is not None:
        outs = {name: _outputs(o, batch, hidden) for name, o in members.items()}
        return replace(next(iter(outs.values())), members=outs)
    return _outputs(out, batch, hidden)


def _outputs(out: Any, batch: dict[str, Any], hidden: bool) -> ModelOutputs:
    """One model's output as a loss reads it."""
    states = RecordedLayers(out.hidden_states, "hidden states", first=0) if hidden else None
    attention = getattr(out, "attention_inputs", None)
    return ModelOutputs(
        logits=out.logits,
        hidden_states=states[1:] if states is not None else None,
        attention_mask=batch["attention_mask"],
        embeddings=states[0] if states is not None and states.kept(0) else None,
        attention_inputs=None if attention is None else RecordedLayers(attention, "attention inputs"),
    )
