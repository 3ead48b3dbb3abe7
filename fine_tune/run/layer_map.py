"""The layer-contribution heat-map of the layer-wise methods, drawn at each checkpoint from a fixed dev sample."""

from __future__ import annotations

import numpy as np
import torch

from ..batching import Collator, cached_features
from ..engine.trainer import to_device
from ..methods import Method
from ..models.forward import forward
from ..plan import RunPlan
from ..plots import write_layer_map


class LayerMapWriter:
    """At each checkpoint: the method's [L_s, L_t] contribution map averaged over a fixed sample of dev
    examples (the first ``map_examples`` rows), as PNG + JSON in the experiment folder and a TensorBoard image."""

    def __init__(
        self,
        method: Method,
        collator: Collator,
        count: int,
        teacher: torch.nn.Module,
        student: torch.nn.Module,
        device: torch.device,
        teacher_device: torch.device,
        precision,
        folder,
        tag: str,
        title: str,
        caption: str,
    ):
        self.method, self.collator, self.count = method, collator, count
        self.teacher, self.student = teacher, student
        self.device, self.teacher_device, self.precision = device, teacher_device, precision
        self.folder, self.tag, self.title, self.caption = folder, tag, title, caption

    @torch.no_grad()
    def matrix(self) -> np.ndarray:
        was_training = self.student.training
        self.student.eval()
        self.method.train(False)
        total: np.ndarray | None = None
        rows = 0
        try:
            for start in range(0, self.count, 32):
                idx = np.arange(start, min(self.count, start + 32))
                batch = to_device(self.collator(idx), self.device)
                tb = batch if self.teacher_device == self.device else to_device(batch, self.teacher_device)
                with self.precision.autocast():
                    s = forward(self.student, batch, True)
                    t = forward(self.teacher, tb, True)
                    batch_map = self.method.layer_map(s, t)
                    if batch_map is None:
                        raise ValueError(f"{self.method.name} draws no layer map (its map_caption names one)")
                    m = batch_map * len(idx)
                total = m if total is None else total + m
                rows += len(idx)
        finally:
            self.student.train(was_training)
            self.method.train(True)
        if total is None:
            raise ValueError("the layer map has no rows to average (map_examples of an empty split)")
        return total / rows

    def __call__(self, step: int, reporter) -> None:
        m = self.matrix()
        labels = self.method.describe_mapping().replace("<-", " <- ").split(", ")
        if len(labels) != m.shape[0]:
            labels = [str(j) for j in range(1, m.shape[0] + 1)]
        write_layer_map(self.folder, step, m, f"{self.title} (step {step})", self.caption, labels, reporter, self.tag)


def layer_map_writer(
    plan: RunPlan,
    method: Method,
    teacher: torch.nn.Module,
    student: torch.nn.Module,
    device: torch.device,
    teacher_device: torch.device,
    precision,
) -> LayerMapWriter | None:
    """The heat-map writer of the plan's dev rows (the first ``--map_examples``), batched as in training; None when
    the plan draws no map."""
    lm = plan.layer_map
    if lm is None:
        return None
    features = cached_features(
        plan.data_root / "cache", plan.tokenizer, lm.examples, plan.max_seq_len, regression=plan.task.regression
    )
    collator = Collator(features, plan.tokenizer.pad_token_id, plan.max_seq_len, plan.padding)  # as in training
    return LayerMapWriter(
        method,
        collator,
        len(features),
        teacher,
        student,
        device,
        teacher_device,
        precision,
        plan.exp.path,
        f"{plan.training.tag_prefix}/layer_map",
        f"{plan.exp.name}: teacher-layer contributions ({lm.split} sample)",
        lm.caption,
    )
