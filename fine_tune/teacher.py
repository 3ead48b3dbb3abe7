"""The fine-tuned teacher of online distillation: ``{teacher_exp}_{tmodel}_{task}/model-{tckpt}.pt`` with the
teacher experiment's config.json (max_seq_len, num_class, training split, ptrain_ver) and its model folder
(Hugging Face config and tokenizer)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from . import config as cfg
from .errors import UserError
from .experiment import ExperimentDir, closest_experiments
from .engine.checkpoint import load_checkpoint_into
from .models.classifier import build_from_config, check_checkpoint, load_model_dir


@dataclass
class Teacher:
    exp: ExperimentDir
    record: dict  # the teacher experiment's config.json
    hf_config: object
    tokenizer: object
    checkpoint: Path
    step: int

    @property
    def num_layers(self) -> int:
        return self.hf_config.num_hidden_layers

    @property
    def hidden_size(self) -> int:
        return self.hf_config.hidden_size

    def build(self) -> torch.nn.Module:
        """The teacher model with the checkpoint's weights, in eval mode, every parameter frozen."""
        model = build_from_config(self.hf_config)
        load_checkpoint_into(model, self.checkpoint)
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        return model


def open_teacher(exp_root: Path, teacher_exp: str, tmodel: str, task: str, tckpt: int) -> Teacher:
    """Check the teacher folder, its config and checkpoint (readable, of the teacher's shape); clear errors name
    what is missing and what exists."""
    exp = ExperimentDir.of(exp_root, teacher_exp, tmodel, task, "--teacher_exp")
    if not exp.config_path.is_file():
        root = Path(exp_root)
        count = sum((p / "config.json").is_file() for p in root.iterdir()) if root.is_dir() else 0
        close = closest_experiments(root, exp.path.name)
        n = f"{count} experiment{'s' if count != 1 else ''}"
        hint = (f"; did you mean {', '.join(close)}? ({n} in {root})" if close
                else f"; {root} holds {n}, none with a similar name" if count
                else f"; {root} holds no experiment")
        raise UserError(f"--teacher_exp {teacher_exp} --tmodel {tmodel}: teacher folder {exp.path} not found{hint}")
    record = cfg.load_config(exp.config_path, required=("max_seq_len", "task"))
    ckpt = exp.checkpoint_path(tckpt)
    if not ckpt.is_file():
        have = ", ".join(map(str, exp.checkpoints())) or "none"
        raise UserError(f"--tckpt {tckpt}: teacher checkpoint {ckpt} not found; checkpoints there: {have}")
    hf_config, tokenizer = load_model_dir(exp.model_dir)
    if hf_config.model_type != tmodel:
        raise UserError(f"--tmodel {tmodel}: {exp.path} holds a {hf_config.model_type!r} model")
    check_checkpoint(hf_config, ckpt)  # a truncated or foreign checkpoint is refused before anything is written
    return Teacher(exp, record, hf_config, tokenizer, ckpt, tckpt)
