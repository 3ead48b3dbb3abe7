"""The layer-contribution heat-map of the layer-wise methods, drawn at each checkpoint from a fixed dev sample."""

from __future__ import annotations

import sys

import numpy as np
import torch

from ..batching import Collator, cached_features
from ..engine.trainer import to_device
from ..models.forward import forward
from ..methods.layerwise import LayerwiseKD
from ..plots import write_layer_map


def dev_split(task) -> str | None:
    """The task's first labelled split other than the training split (val for BoolQ, dev for QQP)."""
    for split in task.splits:
        if split in task.labelled and split != task.train_split:
            return split
    return None


class LayerMapWriter:
    """At each checkpoint: the method's [L_s, L_t] contribution map averaged over a fixed sample of dev
    examples (the first ``map_examples`` rows), as PNG + JSON in the experiment folder and a TensorBoard image."""

    def __init__(self, method: LayerwiseKD, collator: Collator, count: int, teacher: torch.nn.Module,
                 student: torch.nn.Module, device: torch.device, teacher_device: torch.device, precision, folder,
                 tag: str, title: str, caption: str):
        self.method, self.collator, self.count = method, collator, count
        self.teacher, self.student = teacher, student
        self.device, self.teacher_device, self.precision = device, teacher_device, precision
        self.folder, self.tag, self.title, self.caption = folder, tag, title, caption

    @torch.no_grad()
    def matrix(self) -> np.ndarray:
        was_training = self.student.training
        self.student.eval()
        self.method.train(False)
        total, rows = None, 0
        try:
            for start in range(0, self.count, 32):
                idx = np.arange(start, min(self.count, start + 32))
                batch = to_device(self.collator(idx), self.device)
                tb = batch if self.teacher_device == self.device else to_device(batch, self.teacher_device)
                with self.precision.autocast():
                    s = forward(self.student, batch, True)
                    t = forward(self.teacher, tb, True)
                    m = self.method.layer_map(s, t) * len(idx)
                total = m if total is None else total + m
                rows += len(idx)
        finally:
            self.student.train(was_training)
            self.method.train(True)
        return total / rows

    def __call__(self, step: int, writer) -> None:
        m = self.matrix()
        labels = self.method.describe_mapping().replace("<-", " <- ").split(", ")
        if len(labels) != m.shape[0]:
            labels = [str(j) for j in range(1, m.shape[0] + 1)]
        write_layer_map(self.folder, step, m, f"{self.title} (step {step})", self.caption, labels, writer, self.tag)


def layer_map_hook(method: LayerwiseKD, flags, task, p, tokenizer, teacher_model, teacher_device):
    """A ``make_hook`` for :func:`fine_tune.workflows.training.run_training`: the heat-map writer over the first
    ``--map_examples`` dev rows, batched as in training."""
    split = dev_split(task)
    path = task.path(p.data_root, split) if split else None
    if path is None or not path.is_file():
        print(f"note: no {split or 'dev'} split at {path}: no layer-contribution map", file=sys.stderr)
        return None
    b, e = flags.batching, flags.experiment
    dev = task.load(p.data_root, split, flags.layerwise.map_examples)
    features = cached_features(p.data_root / "cache", tokenizer, dev, b.max_seq_len)
    collator = Collator(features, tokenizer.pad_token_id, b.max_seq_len, b.padding)  # as in training

    def make(trainer):
        return LayerMapWriter(method, collator, len(features), teacher_model, trainer.student, p.device,
                              teacher_device, p.precision, p.exp.path, f"{e.task}/{e.dataset}/{e.model}/layer_map",
                              f"{p.exp.name}: teacher-layer contributions ({split} sample)", method.map_caption)
    return make
