"""Student initialisation from the teacher's *pretrained* layers.

``--init_start S --init_end E --init_step K`` copies teacher layers ``range(S, E + 1, K)`` (1-based,
inclusive; the original's start/end/step) into student layers 1..n, plus the pooler. With
``--init_attn_only`` only the self-attention projections (query, key, value) are copied (the original's
"attn_W only" runs). Embeddings are not copied. The source is the teacher's own ``ptrain_ver`` (the original's
2021-era layer-wise code always took bert-base-uncased; its 2020-era code had no such copy, only a fixed student
tokenizer; see doc/methods.md, "Models").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from transformers import AutoModel

from ..errors import UserError
from .families import family_of

if TYPE_CHECKING:  # importing it loads transformers' modeling utilities (seconds): a model built loads them
    from transformers import PretrainedConfig, PreTrainedModel


def teacher_layer_map(start: int, end: int, step: int, num_student_layers: int, num_teacher_layers: int) -> list[int]:
    """1-based teacher layers for student layers 1..n."""
    if step <= 0:
        raise UserError(f"--init_step must be positive, got {step}")
    layers = list(range(start, end + 1, step))
    if not layers or layers[0] < 1 or layers[-1] > num_teacher_layers:
        raise UserError(f"--init_start {start} --init_end {end}: teacher layers must lie in 1..{num_teacher_layers}")
    if len(layers) != num_student_layers:
        raise UserError(
            f"--init_start {start} --init_end {end} --init_step {step} select {len(layers)} teacher "
            f"layers {layers}, but the student has {num_student_layers} layers"
        )
    return layers


def check_copyable(pretrained_config: PretrainedConfig, d_model: int, d_ff: int, attn_only: bool) -> None:
    """Refuse, before anything is written, a student whose layers cannot take the pretrained teacher's weights."""
    if d_model != pretrained_config.hidden_size:
        raise UserError(
            f"cannot copy teacher layers: student --d_model {d_model} differs from the "
            f"teacher's hidden size {pretrained_config.hidden_size}"
        )
    if not attn_only and d_ff != pretrained_config.intermediate_size:
        raise UserError(
            f"cannot copy teacher layers: student --d_ff {d_ff} differs from the teacher's feed-forward "
            f"size {pretrained_config.intermediate_size} (or pass --init_attn_only)"
        )


def copy_teacher_layers(
    student: PreTrainedModel,
    pretrained: PreTrainedModel | str,
    layers: list[int],
    attn_only: bool = False,
    embeddings: bool = False,
) -> list[tuple[int, int]]:
    """Copy pretrained teacher layers ``layers`` into student layers 1..n; returns the (student, teacher) pairs."""
    return copy_teacher_layers_at(student, pretrained, list(enumerate(layers, 1)), attn_only, embeddings)


def copy_teacher_layers_at(
    student: PreTrainedModel,
    pretrained: PreTrainedModel | str,
    pairs: list[tuple[int, int]],
    attn_only: bool = False,
    embeddings: bool = False,
) -> list[tuple[int, int]]:
    """Copy pretrained teacher layer t into student layer j for every (j, t) pair (1-based), plus the pooler
    unless ``attn_only``, plus the embedding block (word, position and token-type tables and their LayerNorm;
    ALBERT: also the embedding projection's input size) with ``embeddings`` (``--init_embeddings``; the original
    leaves the student's embeddings random). Student layers not named keep their random initialisation."""
    if isinstance(pretrained, str):
        from .classifier import quiet_hf

        with quiet_hf():
            loaded: PreTrainedModel = AutoModel.from_pretrained(pretrained)
        pretrained = loaded
    # the base models: their modules (layers, pooler, embeddings) are the family's own
    s_base: Any = getattr(student, student.base_model_prefix)
    t_base: Any = getattr(pretrained, pretrained.base_model_prefix, pretrained)
    if s_base.config.hidden_size != t_base.config.hidden_size:
        raise UserError(
            f"cannot copy teacher layers: student --d_model {s_base.config.hidden_size} differs from the "
            f"teacher's hidden size {t_base.config.hidden_size}"
        )
    if student.config.model_type != pretrained.config.model_type:
        raise UserError(
            f"cannot copy teacher layers: the student is a {student.config.model_type!r} model, the "
            f"pretrained teacher a {pretrained.config.model_type!r} one"
        )
    family = family_of(student)
    s_layers, t_layers = family.layers(s_base), family.layers(t_base)
    with torch.no_grad():
        for j, t in pairs:
            if family.shared_layers:  # ALBERT: every student layer is the one shared layer
                src, dst = t_layers[0], s_layers[min(j - 1, len(s_layers) - 1)]
            else:
                if not 1 <= t <= len(t_layers):
                    raise UserError(
                        f"teacher layer {t} does not exist (the pretrained model has {len(t_layers)} layers)"
                    )
                src, dst = t_layers[t - 1], s_layers[j - 1]
            _copy_module(src, dst, family.attention_only_prefixes() if attn_only else None)
        if (
            not attn_only
            and getattr(s_base, "pooler", None) is not None
            and getattr(t_base, "pooler", None) is not None
        ):
            _copy_module(t_base.pooler, s_base.pooler, None)
        if embeddings:
            _copy_module(t_base.embeddings, s_base.embeddings, None)
    return list(pairs)


def _copy_module(src: torch.nn.Module, dst: torch.nn.Module, prefixes: tuple[str, ...] | None) -> None:
    src_state = src.state_dict()
    for name, tensor in dst.state_dict().items():
        if prefixes is not None and not name.startswith(prefixes):
            continue
        if name not in src_state or src_state[name].shape != tensor.shape:
            raise UserError(
                f"cannot copy teacher weight {name}: shape {tuple(src_state.get(name, torch.empty(0)).shape)} "
                f"vs student {tuple(tensor.shape)} (--d_ff / --num_attention_heads must match the teacher)"
            )
        tensor.copy_(src_state[name])
