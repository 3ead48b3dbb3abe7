"""The student of offline and online distillation: its config from the flags, its layers initialised from
pretrained teacher layers, and its model folder (Hugging Face config and tokenizer) in the experiment."""

from __future__ import annotations

import sys

import torch

from ..engine import distributed
from ..methods import Method
from ..models.classifier import (build_from_config, build_pretrained_classifier, load_pretrained_config, load_tokenizer,
                                save_model_dir, student_config)
from ..models.init import check_copyable, copy_teacher_layers_at
from ..errors import UserError
from .start import Prepared


def print_notes(notes: list[str]) -> None:
    """What a run decided for the user, printed once every check passed and the run starts (a refused command
    prints its one error line only)."""
    for note in notes:
        print(f"note: {note}", file=sys.stderr)


def check_initialisation(pairs: list[tuple[int, int]], source: str | None, model: str, student, missing: str) -> None:
    """Before anything is written: the pretrained model to copy ``pairs`` from exists and fits the student's
    widths (``missing``: the error when no source is recorded)."""
    if not pairs:
        return
    if not source:
        raise UserError(missing)
    check_copyable(load_pretrained_config(source, model), student.d_model, student.d_ff, student.init_attn_only)


def resolve_pretrained_student(flags, notes: list[str] | None = None):
    """``--student_ptrain_ver``: checked (a model folder of ``--model``'s family, or a hub name) before anything is
    written, and its shape (width, feed-forward size, heads, layers) recorded in place of the shape flags, which
    do not apply to it (said in ``notes``, printed once the run starts); ``--max_seq_len`` checked against its
    positions. Returns the flags (unchanged without a
    pretrained student) and the student's tokenizer (None: the student takes the teacher's)."""
    st = flags.student
    if st.student_ptrain_ver is None:
        return flags, None
    config = load_pretrained_config(st.student_ptrain_ver, flags.experiment.model, "--student_ptrain_ver")
    d_ff = getattr(config, "intermediate_size", None) or getattr(config, "hidden_dim", None) or st.d_ff
    shape = {"d_model": config.hidden_size, "d_ff": d_ff, "num_attention_heads": config.num_attention_heads,
             "num_hidden_layers": config.num_hidden_layers}
    if any(getattr(st, k) != v for k, v in shape.items()) and notes is not None:
        notes.append(f"the student is --student_ptrain_ver {st.student_ptrain_ver} ({config.num_hidden_layers} layers, "
                     f"width {config.hidden_size}, {config.num_attention_heads} heads): --d_model/--d_ff/"
                     f"--num_attention_heads/--num_hidden_layers do not apply")
    from .. import config as cfg
    from ..models.families import usable_positions

    cfg.check_max_seq_len(flags.batching.max_seq_len, usable_positions(config), f"the student {st.student_ptrain_ver}")
    tokenizer = load_tokenizer(st.student_ptrain_ver, "--student_ptrain_ver")
    return flags.replace(student=shape), tokenizer


def build_student(p: Prepared, flags, *, vocab_size: int, num_class: int, max_positions: int, tokenizer,
                  source: str | None, pairs: list[tuple[int, int]], method: Method,
                  method_device: torch.device | None = None) -> torch.nn.Module:
    """Build the student of ``flags.student`` (after the seed is set), then the method's own parameters (LAD
    gates, on ``method_device``; a width projection), then copy the pretrained layers ``pairs`` ((student,
    teacher) layer pairs, 1-based) from ``source``; rank 0 saves the model folder. The order fixes what each draws
    from the seeded generator. A ``--student_ptrain_ver`` student is loaded with a new head instead."""
    st, model = flags.student, flags.experiment.model
    if st.student_ptrain_ver is not None:
        student = build_pretrained_classifier(st.student_ptrain_ver, model, num_class, flags.classifier.dropout)
    else:
        config = student_config(model, vocab_size=vocab_size, num_class=num_class, d_model=st.d_model, d_ff=st.d_ff,
                                num_attention_heads=st.num_attention_heads, num_hidden_layers=st.num_hidden_layers,
                                type_vocab_size=st.type_vocab_size, dropout=flags.classifier.dropout,
                                max_position_embeddings=max_positions, pad_token_id=tokenizer.pad_token_id,
                                d_emb=st.d_emb)
        student = build_from_config(config)
    method.create_parameters(method_device, p.device)
    if pairs:
        copy_teacher_layers_at(student, source, pairs, attn_only=st.init_attn_only, embeddings=st.init_embeddings)
        print(f"initialised student layers from {source}: " + ", ".join(f"{s}<-{t}" for s, t in pairs),
              file=sys.stderr)
    if distributed.is_main():
        save_model_dir(p.exp.model_dir, student.config, tokenizer)
    return student
