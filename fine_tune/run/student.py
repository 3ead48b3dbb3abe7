"""The model a run trains, built from its plan: a pretrained encoder with a new head (fine-tuning), or a student
from its widths with its layers initialised from pretrained teacher layers (distillation); rank 0 saves its model
folder (Hugging Face config and tokenizer) in the experiment."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from ..engine import distributed
from ..experiment import ExperimentDir
from ..methods import Method
from ..models.classifier import (
    build_from_config,
    build_pretrained_classifier,
    save_model_dir,
    set_task_labels,
    student_config,
)
from ..models.init import copy_teacher_layers_at
from ..plan import PretrainedModel, StudentModel
from ..progress import say


def print_notes(notes: Iterable[str]) -> None:
    """What the plan decided for the user, printed once every check passed and the run starts (a refused command
    prints its one error line only)."""
    for note in notes:
        say(f"note: {note}")


def build_model(
    spec: PretrainedModel | StudentModel,
    method: Method,
    tokenizer: Any,
    exp: ExperimentDir,
    device: torch.device,
    method_device: torch.device | None = None,
    *,
    label_names: tuple[str, ...],
) -> torch.nn.Module:
    """The model of ``spec`` (after the seed is set), then the method's own parameters (LAD gates, on
    ``method_device``; a width projection, on ``device``), then the pretrained layers ``spec.init_pairs`` copied
    from ``spec.init_source``; rank 0 saves the model folder. The order fixes what each draws from the seeded
    generator. A pretrained student (``--student_ptrain_ver``) is loaded with a new head instead. The model's
    outputs are named by the task's ``label_names`` (a classifier folder's own labels are another task's)."""
    if isinstance(spec, PretrainedModel):
        model = build_pretrained_classifier(spec.source, spec.family, spec.num_class, spec.dropout, "--ptrain_ver")
    elif spec.pretrained is not None:
        model = build_pretrained_classifier(
            spec.pretrained, spec.family, spec.num_class, spec.dropout, "--student_ptrain_ver"
        )
    else:
        config = student_config(
            spec.family,
            vocab_size=spec.vocab_size,
            num_class=spec.num_class,
            d_model=spec.d_model,
            d_ff=spec.d_ff,
            num_attention_heads=spec.num_attention_heads,
            num_hidden_layers=spec.num_hidden_layers,
            type_vocab_size=spec.type_vocab_size,
            dropout=spec.dropout,
            max_position_embeddings=spec.max_positions,
            pad_token_id=tokenizer.pad_token_id,
            d_emb=spec.d_emb,
        )
        model = build_from_config(config)
    method.create_parameters(method_device, device)
    if isinstance(spec, StudentModel) and spec.init_pairs and spec.init_source is not None:
        copy_teacher_layers_at(
            model,
            spec.init_source,
            list(spec.init_pairs),
            attn_only=spec.init_attn_only,
            embeddings=spec.init_embeddings,
        )
        say(
            f"initialised student layers from {spec.init_source}: " + ", ".join(f"{s}<-{t}" for s, t in spec.init_pairs)
        )
    set_task_labels(model.config, label_names)
    if distributed.is_main():
        save_model_dir(exp.model_dir, model.config, tokenizer)
    return model
