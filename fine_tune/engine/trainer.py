"""The one training loop every script and every method runs through.

Per optimizer step: ``accum_step`` micro-batches of ``batch_size // accum_step`` rows each; for each, the
student forward (and the teacher forward under ``torch.no_grad()`` when the method uses one) under
autocast, the method's losses, ``loss / accum_step`` back-propagated (through the GradScaler for fp16);
then gradients are unscaled, clipped (``max_norm``; extra parameter sets such as LAD gates clipped with
their own norm), every optimiser and its linear warmup schedule step together. Checkpoints every
``ckpt_step`` and at the end; TensorBoard scalars every ``log_step``.
"""

from __future__ import annotations

import math
import os
import re
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

from ..batching import Collator, MicroBatchStream
from ..experiment import ExperimentDir
from ..methods.base import ExtraParameters, Method, ModelOutputs
from ..io_utils import atomic_torch_save
from .checkpoint import save_model_checkpoint
from .device import Precision
from .optim import build_adamw, linear_schedule

INPUT_KEYS = ("input_ids", "token_type_ids", "attention_mask")


@dataclass
class TrainSettings:
    total_step: int
    batch_size: int
    accum_step: int
    lr: float
    beta1: float
    beta2: float
    eps: float
    weight_decay: float
    max_norm: float
    warmup_step: int
    ckpt_step: int
    log_step: int
    seed: int
    tag_prefix: str  # "{task}/{dataset}/{model}"

    @property
    def micro_batch(self) -> int:
        return self.batch_size // self.accum_step


@dataclass
class _Optimised:
    name: str
    params: list[torch.nn.Parameter]
    modules: list[torch.nn.Module]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    max_norm: float
    clip_per_module: bool


def forward(model: torch.nn.Module, batch: dict, hidden: bool) -> ModelOutputs:
    out = model(**{k: batch[k] for k in INPUT_KEYS}, output_hidden_states=hidden, return_dict=True)
    return ModelOutputs(logits=out.logits, hidden_states=tuple(out.hidden_states[1:]) if hidden else None,
                        attention_mask=batch["attention_mask"])


def to_device(batch: dict, device: torch.device) -> dict:
    nb = device.type == "cuda"
    return {k: v.to(device, non_blocking=nb) for k, v in batch.items()}


class Trainer:
    """Runs one training job. The engine never knows which method runs; a method never touches an
    optimiser or a file."""

    def __init__(self, student: torch.nn.Module, method: Method, collator: Collator, num_rows: int,
                 settings: TrainSettings, exp: ExperimentDir, device: torch.device, precision: Precision,
                 teacher: torch.nn.Module | None = None, teacher_device: torch.device | None = None,
                 on_checkpoint: Callable[[int, SummaryWriter], None] | None = None, progress: bool = True):
        self.student = student.to(device)
        self.method = method
        self.collator = collator
        self.num_rows = num_rows
        self.s = settings
        self.exp = exp
        self.device = device
        self.precision = precision
        self.teacher = teacher
        self.teacher_device = teacher_device or device
        self.on_checkpoint = on_checkpoint
        self.progress = progress
        if teacher is not None:
            teacher.to(self.teacher_device).eval()
            for p in teacher.parameters():
                p.requires_grad_(False)
        s = settings
        student_opt = build_adamw(student.named_parameters(), lr=s.lr, beta1=s.beta1, beta2=s.beta2, eps=s.eps,
                                  weight_decay=s.weight_decay, device=device)
        self.parts: list[_Optimised] = [_Optimised(
            "student", [p for p in student.parameters() if p.requires_grad], [student], student_opt,
            linear_schedule(student_opt, s.warmup_step, s.total_step), s.max_norm, False)]
        for extra in method.extra_parameters():
            self.parts.append(self._extra(extra))
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision.use_scaler)
        self.stream = MicroBatchStream(num_rows, s.micro_batch, s.seed)
        self.step = 0

    def _extra(self, e: ExtraParameters) -> _Optimised:
        named = [(f"{i}.{n}", p) for i, m in enumerate(e.modules) for n, p in m.named_parameters()]
        opt = build_adamw(named, lr=e.lr, beta1=e.beta1, beta2=e.beta2, eps=e.eps, weight_decay=e.weight_decay,
                          device=self.device)
        return _Optimised(e.name, [p for _, p in named], list(e.modules), opt,
                          linear_schedule(opt, e.warmup_step, e.total_step), e.max_norm, e.clip_per_module)

    # -- one optimizer step -------------------------------------------------------------------------
    def _micro_step(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        batch = to_device(self.collator(rows), self.device)
        with self.precision.autocast():
            student_out = forward(self.student, batch, self.method.needs_hidden_states)
            teacher_out = None
            if self.teacher is not None and self.method.uses_teacher:
                tb = batch if self.teacher_device == self.device else to_device(batch, self.teacher_device)
                with torch.no_grad():
                    teacher_out = forward(self.teacher, tb, self.method.needs_hidden_states)
                if self.teacher_device != self.device:
                    teacher_out = ModelOutputs(
                        teacher_out.logits.to(self.device),
                        None if teacher_out.hidden_states is None else tuple(h.to(self.device) for h in teacher_out.hidden_states),
                        batch["attention_mask"])
            parts = self.method.losses(batch, student_out, teacher_out)
        self.scaler.scale(parts["loss"] / self.s.accum_step).backward()
        return {k: v.detach() for k, v in parts.items()}

    def _optimizer_step(self) -> torch.Tensor:
        grad_norm = None
        for part in self.parts:
            self.scaler.unscale_(part.optimizer)
            if part.clip_per_module:
                for m in part.modules:
                    torch.nn.utils.clip_grad_norm_(m.parameters(), part.max_norm)
            else:
                norm = torch.nn.utils.clip_grad_norm_(part.params, part.max_norm)
                if part.name == "student":
                    grad_norm = norm
        for part in self.parts:
            self.scaler.step(part.optimizer)
        self.scaler.update()
        for part in self.parts:
            part.scheduler.step()
            part.optimizer.zero_grad(set_to_none=True)
        return grad_norm

    # -- the loop -----------------------------------------------------------------------------------
    def train(self) -> dict:
        s = self.s
        self.exp.log_dir.mkdir(parents=True, exist_ok=True)
        writer = SummaryWriter(log_dir=str(self.exp.log_dir))
        self.student.train()
        self.method.train(True)
        self.writer = writer
        sums: dict[str, torch.Tensor] = {}
        grad_norm_sum = torch.zeros((), device=self.device)
        window_steps, window_examples, window_start = 0, 0, time.perf_counter()
        start = time.perf_counter()
        last: dict[str, float] = {}
        bar = tqdm(total=s.total_step, initial=self.step, desc=self.exp.name, unit="step", disable=(not self.progress) or os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true"),
                   dynamic_ncols=True)
        try:
            while self.step < s.total_step:
                for _ in range(s.accum_step):
                    rows = self.stream.next()
                    window_examples += len(rows)
                    for k, v in self._micro_step(rows).items():
                        sums[k] = sums[k] + v / s.accum_step if k in sums else v / s.accum_step
                gn = self._optimizer_step()
                if gn is not None:
                    grad_norm_sum += gn.float()
                self.step += 1
                window_steps += 1
                bar.update(1)
                if self.step % s.log_step == 0 or self.step == s.total_step:
                    elapsed = time.perf_counter() - window_start
                    last = {k: (v / window_steps).item() for k, v in sums.items()}
                    for k, v in last.items():
                        writer.add_scalar(f"{s.tag_prefix}/{k}", v, self.step)
                    for part in self.parts:
                        tag = "lr" if part.name == "student" else f"{part.name}_lr"
                        writer.add_scalar(f"{s.tag_prefix}/{tag}", part.scheduler.get_last_lr()[0], self.step)
                    writer.add_scalar(f"{s.tag_prefix}/grad_norm", (grad_norm_sum / window_steps).item(), self.step)
                    writer.add_scalar(f"{s.tag_prefix}/examples_per_s", window_examples / max(elapsed, 1e-9), self.step)
                    bar.set_postfix(progress_fields(last, {part.name: part.scheduler.get_last_lr()[0] for part in self.parts}),
                                    refresh=False)
                    if not all(map(math.isfinite, last.values())):
                        writer.flush()
                    sums, grad_norm_sum = {}, torch.zeros((), device=self.device)
                    window_steps, window_examples, window_start = 0, 0, time.perf_counter()
                if self.step % s.ckpt_step == 0 or self.step == s.total_step:
                    self.save(self.step)
                    writer.flush()
        finally:
            bar.close()
            writer.close()
        seconds = time.perf_counter() - start
        return {"steps": self.step, "seconds": seconds,
                "examples_per_s": self.step * s.batch_size / max(seconds, 1e-9), "last_losses": last}

    def save(self, step: int) -> None:
        save_model_checkpoint(self.student, self.exp.checkpoint_path(step))
        for stem, state in self.method.checkpoint_state().items():
            atomic_torch_save({k: v.detach().to("cpu", copy=True) for k, v in state.items()},
                              self.exp.path / f"{stem}-{step}.pt")
        if self.on_checkpoint is not None:
            self.on_checkpoint(step, self.writer)


_PER_LAYER = re.compile(r"^(.*)_(\d+)$")


def progress_fields(losses: dict[str, float], lrs: dict[str, float]) -> dict[str, str]:
    """The progress bar's fields: every loss part, per-layer parts (``hidden_loss_3``, ``gate_mean_5``) grouped
    as one list each (``hidden_loss=[.12 .10 ...]``), then the learning rates."""
    fields: dict[str, str] = {}
    groups: dict[str, list[tuple[int, float]]] = {}
    for k, v in losses.items():
        m = _PER_LAYER.match(k)
        if m:
            groups.setdefault(m.group(1), []).append((int(m.group(2)), v))
        else:
            fields[k] = f"{v:.4f}"
    for name, vals in groups.items():
        fields[name] = "[" + " ".join(f"{v:.3g}" for _, v in sorted(vals)) + "]"
    for name, lr in lrs.items():
        fields["lr" if name == "student" else f"{name}_lr"] = f"{lr:.2e}"
    return fields
