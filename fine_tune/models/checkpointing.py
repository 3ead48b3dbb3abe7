"""Gradient checkpointing of the student (``--gradient_checkpointing``): each encoder layer keeps only its input
for the backward pass and runs again there to rebuild what its backward reads, so a step holds the activations of
one layer at a time instead of every layer's, for about one more forward pass per step.

Both training forwards recompute through ``torch.utils.checkpoint`` without re-entrance (``use_reentrant=False``):
the toolkit's own forward (``models/padding_free.PaddingFree``) layer by layer with :func:`checkpointed`, a model
running Hugging Face's forward through its ``gradient_checkpointing_enable`` (:func:`enable_hf_checkpointing`). The
checkpoint stashes the random state before a layer runs (the CPU generator, and the CUDA generator of the layer's
device) and restores it for the recomputation, and replays the autocast state, so dropout draws the same masks
(``models/dropout.py``'s CPU masks come from the global generator too) and the gradients are the plain forward's,
bit for bit (tests/test_memory.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.checkpoint import checkpoint

from ..errors import UserError
from .families import get_family

if TYPE_CHECKING:  # importing it loads transformers' modeling utilities (seconds): a model built loads them
    from transformers import PreTrainedModel


def checkpointed(layer: Callable[..., torch.Tensor], *args: Any, record: list[Any] | None = None) -> torch.Tensor:
    """``layer(*args, record)`` whose activations are recomputed in the backward pass instead of kept. ``record``
    (the attention-reading methods' list of projections, which ``layer`` appends to) gets the forward's appends
    only: a recomputation appends to a list of its own, dropped with it."""
    if torch.compiler.is_compiling():  # the compiled backward recomputes inside its own graph, not by calling layer
        return checkpoint(layer, *args, record, use_reentrant=False)
    first = [True]

    def run(*inputs: Any) -> torch.Tensor:
        own = record if first[0] or record is None else []
        first[0] = False
        return layer(*inputs, own)

    return checkpoint(run, *args, use_reentrant=False)


def check_gradient_checkpointing(model: str, flag: str = "--model") -> None:
    """Refuse ``--gradient_checkpointing`` for a student family whose Hugging Face forward cannot recompute its
    layers (its record's ``gradient_checkpointing``; ALBERT, whose one shared layer transformers never
    checkpoints). The toolkit's own forward serves BERT only, which Hugging Face's checkpoints too."""
    family = get_family(model, flag)
    if not family.gradient_checkpointing:
        raise UserError(
            f"--gradient_checkpointing: {flag} {model}'s Hugging Face forward has no gradient "
            f"checkpointing (transformers does not support it for {model}); train without it"
        )


def enable_hf_checkpointing(model: PreTrainedModel) -> None:
    """Hugging Face's own gradient checkpointing of ``model``'s layers (in training mode), without re-entrance
    (``activation_checkpointing_enable`` where transformers has it; its older name before)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
