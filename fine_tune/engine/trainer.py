"""The one training loop every script and every method runs through.

Per optimizer step: ``accum_step`` micro-batches of ``batch_size // accum_step`` rows each; for each, the
student forward (and the teacher forward under ``torch.no_grad()`` when the method uses one) under
autocast, the method's losses, ``loss / accum_step`` back-propagated (through the GradScaler for fp16);
then gradients are unscaled, clipped (``max_norm``; extra parameter sets such as LAD gates clipped with
their own norm), every optimiser and its learning-rate schedule (``OptimiserSettings.schedule``) step together
(under fp16 loss scaling a step whose gradients overflow in any set is skipped by all of them together:
``Trainer._optimizer_step``). Checkpoints every ``ckpt_step`` and at the end; the scalars every ``log_step`` to
the run's reporter (engine/reporting.py: TensorBoard, MLflow, W&B as ``--report_to`` chose), under the tags
``{tag_prefix}/{name}``.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from ..batching import Collator, make_stream
from ..errors import UserError
from ..experiment import ExperimentDir
from ..io_utils import atomic_torch_save, atomic_write_json
from ..progress import progress, say
from . import distributed
from .allocator import tune_malloc_for_training
from .checkpoint import (
    load_checkpoint_into,
    load_resume_state,
    prune_checkpoints,
    rng_state,
    save_model_checkpoint,
    save_resume_state,
    set_rng_state,
)
from .device import Precision, non_blocking, same_device
from .evaluation import EARLY_STOP_FILE, EvalHistory, Evaluator
from .optim import OptimiserSettings, build_adamw, lr_schedule
from .protocol import ModelOutputs, TrainingMethod
from .reporting import Reporter

if TYPE_CHECKING:
    from tqdm.auto import tqdm


@dataclass(frozen=True)
class TrainSettings:
    optimiser: OptimiserSettings  # the student's
    batch_size: int
    accum_step: int
    ckpt_step: int
    log_step: int
    seed: int
    tag_prefix: str  # "{task}/{training split}/{model}": the scalars' names (README.md, "TensorBoard tags")
    save_total_limit: int = 0  # keep only the newest K checkpoints (0: all)
    group_by_length: bool = False  # length-grouped shuffled micro-batches (needs the rows' lengths)
    compile: bool = False  # torch.compile the training forward (and the teacher's)
    gradient_checkpointing: bool = False  # the student's layers recomputed in the backward pass (its forward's choice)
    drop_last: bool = False  # each epoch trains only full micro-batches: its incomplete last one is skipped

    @property
    def total_step(self) -> int:
        return self.optimiser.total_step

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
    settings: OptimiserSettings


def computed_by_host(device: torch.device) -> bool:
    """Whether work on ``device`` runs on the host as it is called (the CPU), rather than queued to run later (a GPU):
    which of two forwards on different devices to call first so that they overlap (copies: engine/device.non_blocking)."""
    return device.type == "cpu"


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The batch's tensors on ``device`` (without blocking the host: engine/device.non_blocking); other entries as
    they are."""
    return {
        k: v.to(device, non_blocking=non_blocking(v.device, device)) if isinstance(v, torch.Tensor) else v
        for k, v in batch.items()
    }


class Trainer:
    """Runs one training job. The engine never knows which method runs; a method never touches an
    optimiser or a file."""

    def __init__(
        self,
        student: torch.nn.Module,
        method: TrainingMethod,
        collator: Collator,
        num_rows: int,
        settings: TrainSettings,
        exp: ExperimentDir,
        device: torch.device,
        precision: Precision,
        teacher: torch.nn.Module | None = None,
        teacher_device: torch.device | None = None,
        on_checkpoint: Callable[[int, Reporter], None] | None = None,
        progress: bool = True,
        lengths: np.ndarray | None = None,
        student_forward: torch.nn.Module | None = None,
        teacher_forward: torch.nn.Module | None = None,
        evaluator: Evaluator | None = None,
        *,
        forward: Callable[[torch.nn.Module, dict[str, Any], bool], ModelOutputs],
        config_sha256: str | None = None,
        reporter: Reporter | None = None,
        run_params: dict[str, Any] | None = None,
    ) -> None:
        """``student`` / ``teacher``: the modules whose weights train (and are saved) / stay frozen.
        ``evaluator``: evaluation during training (engine/evaluation.py), or None. ``forward(model, batch,
        hidden)``: how a model runs on a batch (``fine_tune.models.forward.forward``), chosen by the caller.
        ``student_forward`` / ``teacher_forward``: the modules the training forward runs through (the same
        weights; default: the modules themselves), chosen by whoever built the models (e.g.
        ``models/padding_free.training_forwards``). ``config_sha256``: the digest of the config.json the run wrote
        (config.config_digest), recorded in each resume state so a resume notices a config.json edited since.
        ``reporter``: where the scalars and the final metrics go (engine/reporting.py; default: nowhere; under
        torchrun the caller gives rank 0's only: fine_tune/reporting.Reporting.open), started when training
        starts, with ``run_params`` (the run's config) as the run's parameters, and closed when it ends."""
        if device.type == "cpu" or (teacher_device is not None and teacher_device.type == "cpu"):
            tune_malloc_for_training()  # every step reuses the previous step's pages (engine/allocator.py)
        self.student = student.to(device)
        self.world = distributed.world()
        self.model = student_forward if student_forward is not None else self.student
        # under torchrun: inside DDP's wrapper, unless the method's losses leave some parameters without gradient
        # (hidden losses only: no classifier), which DDP would wait for; then the gradients are averaged after the
        # step's last micro-batch instead (engine/distributed.py)
        self.ddp = self.world.enabled and method.every_parameter_learns
        if self.ddp:
            self.model = distributed.wrap_ddp(self.model, device)
        self.teacher_model = teacher_forward if teacher_forward is not None else teacher
        if settings.compile:
            backend = os.environ.get("FT_COMPILE_BACKEND", "inductor")  # tests: "eager" (no code generation)
            # torch.compile of a module is a module (an OptimizedModule); its stub says any callable
            self.model = cast(torch.nn.Module, torch.compile(self.model, backend=backend, dynamic=True))
            if self.teacher_model is not None:
                self.teacher_model = cast(
                    torch.nn.Module, torch.compile(self.teacher_model, backend=backend, dynamic=True)
                )
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
            # frozen: its linear weights cast to the autocast dtype once, not at every forward
            precision.cast_frozen_linears(teacher, self.teacher_device)
        self.parts: list[_Optimised] = [
            self._optimised("student", [student], settings.optimiser, list(student.named_parameters()))
        ]
        for extra in method.extra_parameters():
            named = [(f"{i}.{n}", p) for i, m in enumerate(extra.modules) for n, p in m.named_parameters()]
            self.parts.append(self._optimised(extra.name, list(extra.modules), extra.optimiser, named))
        # under torchrun, the gradients DDP does not average (an unwrapped student's, the extra parameter sets'):
        # averaged by buckets during the backward of each step's last micro-batch (engine/distributed.py)
        averaged = [p for part in (self.parts[1:] if self.ddp else self.parts) for p in part.params]
        self.average = distributed.BucketedGradientAverage(averaged) if self.world.enabled and averaged else None
        s = settings
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision.use_scaler)
        # the CUDA devices whose random streams the resume state keeps, by role (engine/checkpoint.rng_state)
        self.rng_devices = {"student": device, **({"teacher": self.teacher_device} if teacher is not None else {})}
        self.stream = make_stream(
            num_rows, s.micro_batch, s.seed, lengths if s.group_by_length else None, drop_last=s.drop_last
        )
        self.step = 0
        self.evaluator = evaluator
        self.forward = forward
        self.config_sha256 = config_sha256
        self.reporter = reporter if reporter is not None else Reporter()  # reports nothing
        self.run_params = run_params
        self.log_fields: dict[str, str] = {}  # the last logged window, on the progress bar
        self.history = EvalHistory(evaluator.settings) if evaluator is not None else None
        self.eval_fields: dict[str, str] = {}  # the last evaluation, on the progress bar
        self._eval_files_due = False  # a checkpoint's evaluation, whose files save() writes after the checkpoint

    def _optimised(
        self,
        name: str,
        modules: list[torch.nn.Module],
        settings: OptimiserSettings,
        named: list[tuple[str, torch.nn.Parameter]],
    ) -> _Optimised:
        opt = build_adamw(named, settings, self.device)
        return _Optimised(
            name, [p for _, p in named if p.requires_grad], modules, opt, lr_schedule(opt, settings), settings
        )

    # -- one optimizer step -------------------------------------------------------------------------
    def _micro_step(self, rows: np.ndarray, sync: bool = True) -> dict[str, torch.Tensor]:
        """Forward and backward of one micro-batch (this rank's share of it under torchrun; ``sync=False``
        defers DDP's gradient all-reduce to the last micro-batch of the step)."""
        rows, weight = distributed.shard(rows)
        if self.average is not None and sync:
            self.average.arm()
        if self.ddp and not sync:
            # DDP's no_sync (through torch.compile's wrapper too, which hands attributes on); Module.__getattr__ is
            # typed as a tensor or a module
            no_sync = cast(Callable[[], AbstractContextManager[None]], self.model.no_sync)
            with no_sync():
                return self._forward_backward(rows, weight)
        return self._forward_backward(rows, weight)

    def _forward_backward(self, rows: np.ndarray, weight: float) -> dict[str, torch.Tensor]:
        host = self.collator(rows)
        batch = to_device(host, self.device)
        with self.precision.autocast():
            teacher_out, student_out = self._forwards(host, batch)
            parts = self.method.losses(batch, student_out, teacher_out)
        loss = parts["loss"] / self.s.accum_step
        # torch leaves Tensor.backward unannotated
        self.scaler.scale(loss * weight if weight != 1.0 else loss).backward()  # type: ignore[no-untyped-call]
        # every logged part on the student's device (the one place they are moved: a gate statistic comes from the
        # gates' device, the window sums restored by a resume live here); they carry the shard's weight too, so
        # their mean over ranks (Trainer._log) is the mean over the whole micro-batch, as one process logs it
        return {
            k: (
                v.detach().to(self.device, non_blocking=non_blocking(v.device, self.device)) * weight
                if weight != 1.0
                else v.detach().to(self.device, non_blocking=non_blocking(v.device, self.device))
            )
            for k, v in parts.items()
        }

    def _forwards(self, host: dict[str, Any], batch: dict[str, Any]) -> tuple[ModelOutputs | None, ModelOutputs]:
        """The teacher's outputs (None when the method reads no teacher) and the student's, for the collated batch
        ``host`` (on the host) and ``batch`` (its copy on the student's device).

        One device: the teacher first, so its activations are freed before the student's (kept for backward) are
        made. A teacher on another device overlaps the student: its batch is copied from the host (not through
        the student's device), both forwards are queued before anything crosses (a teacher computed by the host
        itself, on the CPU, runs after the student's forward is queued on its GPU, under it), and then only the
        logits cross to the student's device, each device's queue ordering the copy; the hidden states,
        attention inputs and embeddings stay on the teacher's device, and each method moves the ones it reads,
        once (PKD: L_s of them; LAD: its targets, from the gates' device)."""
        hidden = self.method.needs_hidden_states
        if self.teacher is None or not self.method.uses_teacher:
            return None, self.forward(self.model, batch, hidden)
        if same_device(self.teacher_device, self.device):
            teacher_out = self._teacher_forward(batch)
            return teacher_out, self.forward(self.model, batch, hidden)
        teacher_batch = to_device(host, self.teacher_device)
        if computed_by_host(self.teacher_device) and not computed_by_host(self.device):
            student_out = self.forward(self.model, batch, hidden)
            teacher_out = self._teacher_forward(teacher_batch)
        else:
            teacher_out = self._teacher_forward(teacher_batch)
            student_out = self.forward(self.model, batch, hidden)
        return teacher_out.logits_to(self.device, non_blocking(self.teacher_device, self.device)), student_out

    def _teacher_forward(self, batch: dict[str, Any]) -> ModelOutputs:
        assert self.teacher_model is not None  # called with a teacher only (_forwards): its forward module is set
        with torch.no_grad():
            return self.forward(self.teacher_model, batch, self.method.needs_hidden_states)

    def _optimizer_step(self) -> tuple[torch.Tensor | None, bool]:
        """Unscale, clip, step every optimiser and schedule. Returns the student's gradient norm and whether the
        step was skipped.

        fp16 loss scaling (doc/methods.md, "fp16 loss scaling"): a step whose gradients hold an inf or NaN in
        *any* parameter set is skipped as a whole: no optimiser updates its weights or moments, no schedule
        advances (so the student's and the gates' schedules never drift apart), the loss scale is halved. The
        decision is one host sync per step, the one GradScaler.step itself would make. Without loss scaling
        nothing is skipped and nothing syncs."""
        grad_norm = None
        if self.average is not None:  # DDP averaged the student's gradients (unless it is not wrapped); the others
            self.average.finish()  # were launched during the last backward: wait, and write the averages back
        norms = []
        for part in self.parts:
            self.scaler.unscale_(part.optimizer)
            if part.settings.clip_per_module:
                # a set without gradient (LAD's first gate) has nothing to clip, and clip_grad_norm_'s zero norm
                # for it is a host tensor that fp16's finiteness check below would copy to the device, blocking
                for m in part.modules:
                    if any(p.grad is not None for p in m.parameters()):
                        norms.append(torch.nn.utils.clip_grad_norm_(m.parameters(), part.settings.max_norm))
            else:
                norm = torch.nn.utils.clip_grad_norm_(part.params, part.settings.max_norm)
                norms.append(norm)
                if part.name == "student":
                    grad_norm = norm
        skipped = False
        if self.scaler.is_enabled():
            finite = torch.stack([n.float().to(self.device) for n in norms]).isfinite().all()
            # the step's one host sync: the decision, with the loss scale a skipped step's collapse check reads
            scale = self.scaler._get_scale_async()
            assert scale is not None  # made by the step's scale() calls (the scaler is enabled)
            ok, self._loss_scale = torch.stack([finite.float(), scale.float()]).tolist()
            skipped = not ok
        if not skipped:
            for part in self.parts:
                part.optimizer.step()
            for part in self.parts:
                part.scheduler.step()
        if self.scaler.is_enabled():
            self.scaler.update()
        for part in self.parts:
            part.optimizer.zero_grad(set_to_none=True)
        return grad_norm, skipped

    # -- the loop -----------------------------------------------------------------------------------
    def _reset_window(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.grad_norm_sum = torch.zeros((), device=self.device)  # over the window's applied (not skipped) steps
        self.window_steps, self.window_examples, self.window_start = 0, 0, time.perf_counter()
        self.window_skipped = 0  # fp16 steps skipped for overflowing gradients

    def train(self, resume_step: int | None = None) -> dict[str, Any]:
        """Train to ``total_step``; with ``resume_step``, first restore the run saved at that checkpoint."""
        s = self.s
        self._reset_window()
        self._bad = torch.zeros((), dtype=torch.int64, device=self.device)  # steps with a non-finite loss
        self._first_bad = torch.zeros((), dtype=torch.int64, device=self.device)  # 0: none yet
        self._consecutive_skipped = 0
        if resume_step is not None:
            self.restore(resume_step)
            self._prune()  # a run killed after its last save, before pruning
        if self.history is not None and self.history.stopped_at is not None:  # killed after stopping early
            self._stopped_early()
            self.release()
            self.reporter.close()
            return {
                "steps": self.step,
                "steps_run": 0,
                "seconds": 0.0,
                "examples_per_s": 0.0,
                "last_losses": {},
                "stopped_early_at": self.step,
            }
        self.student.train()
        self.method.train(True)
        start_step, start = self.step, time.perf_counter()
        last: dict[str, float] = {}
        bar = progress(
            total=s.total_step,
            initial=self.step,
            desc=self.exp.name,
            unit="step",
            dynamic_ncols=True,
            enabled=self.progress and self.world.is_main,
        )
        failed = True
        try:
            self.reporter.start(self.step)  # a resumed run: what a killed run logged after this step is logged again
            if self.run_params is not None:
                self.reporter.log_params(self.run_params)
            while self.step < s.total_step:
                loss_finite = torch.ones((), dtype=torch.bool, device=self.device)
                self.method.begin_step(self.step)
                for micro in range(s.accum_step):
                    rows = self.stream.next()
                    self.window_examples += len(rows)
                    for k, v in self._micro_step(rows, sync=micro == s.accum_step - 1).items():
                        self.sums[k] = self.sums[k] + v / s.accum_step if k in self.sums else v / s.accum_step
                        if k == "loss":
                            loss_finite &= torch.isfinite(v)
                gn, skipped = self._optimizer_step()
                if gn is not None and not skipped:
                    self.grad_norm_sum += gn.float().to(self.device)
                bad = (~loss_finite).long()
                self._bad += bad
                self.step += 1
                if skipped:
                    self._skipped_step()
                else:
                    self._consecutive_skipped = 0
                self._first_bad = torch.where((self._first_bad == 0) & (bad > 0), self.step, self._first_bad)
                self.window_steps += 1
                bar.update(1)
                boundary_log = self.step % s.log_step == 0 or self.step == s.total_step
                boundary_ckpt = self.step % s.ckpt_step == 0 or self.step == s.total_step
                if boundary_log or boundary_ckpt:
                    self._check_finite()
                if boundary_log:
                    last = self._log(bar)
                stop = False
                if self.evaluator is not None and self.evaluator.settings.due(self.step, boundary_ckpt):
                    stop = self._evaluate(bar, boundary_ckpt)
                    boundary_ckpt = boundary_ckpt or stop  # a run that stops early ends with a checkpoint
                if boundary_ckpt:
                    self.save(self.step)
                if stop:
                    self._stopped_early()
                    break
            seconds = time.perf_counter() - start
            steps = self.step - start_step
            self.reporter.log_final(self._final_metrics(steps, seconds))
            failed = False
        finally:
            bar.close()
            self.reporter.close(failed)
            self.release()
        if self.history is not None and self.history.stopped_at is None:
            say(f"{self.exp.name}: {self.describe_best()}")
        return {
            "steps": self.step,
            "steps_run": steps,
            "seconds": seconds,
            "examples_per_s": steps * s.batch_size / max(seconds, 1e-9),
            "last_losses": last,
            "stopped_early_at": None if self.history is None else self.history.stopped_at,
        }

    def _final_metrics(self, steps: int, seconds: float) -> dict[str, float]:
        """The run's final metrics: this process's training (steps, seconds, examples/s) and, with evaluation during
        training, the best checkpoint's main metric and its step (``{split tag prefix}/best_{metric}``, ``..._step``,
        as run_fine_tune_eval.py names its bests)."""
        p = self.s.tag_prefix
        final = {
            f"{p}/train_steps": steps,
            f"{p}/train_seconds": seconds,
            f"{p}/train_examples_per_s": steps * self.s.batch_size / max(seconds, 1e-9),
        }
        best = self.history.best_checkpoint() if self.history is not None else None
        if best is not None:
            assert self.evaluator is not None  # a history is kept with an evaluator only (__init__)
            es = self.evaluator.settings
            name = f"{es.tag_prefix}/best_{es.metric}"
            final.update({name: best[es.metric], f"{name}_step": best["step"]})
        return final

    # -- evaluation during training (engine/evaluation.py) ------------------------------------------
    def _evaluate(self, bar: tqdm, checkpoint: bool) -> bool:
        """Evaluate the student now (every rank takes part), record it, log it, write the evaluation files (rank
        0). Returns whether the patience has run out; then this step becomes the run's last checkpoint."""
        ev, history = self.evaluator, self.history
        assert ev is not None and history is not None  # called with evaluation during training only (train)
        es = ev.settings
        with torch.no_grad():
            metrics = ev.evaluate(self.student, self.step)
        self.student.train()
        stop = history.add(self.step, metrics, checkpoint)
        if stop:
            history.stopped_at = self.step
            history.mark_checkpoint(self.step)
        self.reporter.log_scalars(
            {f"{es.tag_prefix}/{name}": value for name, value in metrics.items() if name in es.logged}, self.step
        )
        self.eval_fields = {f"{es.split}_{es.metric}": f"{metrics[es.metric]:.4f}"}
        bar.set_postfix({**self.log_fields, **self.eval_fields}, refresh=False)
        if checkpoint or stop:  # its files are written by save(), once the checkpoint they cite is on disk
            self._eval_files_due = True
        elif self.world.is_main:
            history.write(self.exp.path)
        return stop

    def _stopped_early(self) -> None:
        """Say so, and mark the run finished (``early-stop.json``, after the checkpoint and its resume state)."""
        assert self.history is not None and self.evaluator is not None  # stopped early by an evaluation
        h, es = self.history, self.evaluator.settings
        best, top = h.best_checkpoint(), h.best
        assert best is not None and top is not None  # the evaluations so far, the last one a checkpoint's
        say(
            f"{self.exp.name}: stopped early at step {self.step}: no better {es.split} {es.metric} in "
            f"{es.patience} evaluations; {self.describe_best()}"
        )
        if self.world.is_main:
            atomic_write_json(
                self.exp.path / EARLY_STOP_FILE,
                {
                    "step": self.step,
                    "split": es.split,
                    "metric": es.metric,
                    "patience": es.patience,
                    "best": {"step": top["step"], "value": top[es.metric]},
                    "best_checkpoint": {"ckpt": best["step"], "value": best[es.metric]},
                },
            )

    def describe_best(self) -> str:
        """The evaluation's best and the checkpoint kept for it (EvalHistory.describe_best), as the files are now."""
        assert self.history is not None  # called with evaluation during training only
        return self.history.describe_best(
            lambda step: self.exp.checkpoint_path(step).is_file(), self.s.save_total_limit
        )

    def release(self) -> None:
        """Drop the training wrappers (DDP's, torch.compile's) at the end of a run, so they never outlive the
        process group; the student and teacher modules stay."""
        self.model = self.student
        if self.teacher is not None:
            self.teacher_model = self.teacher
        if self.average is not None:
            self.average.remove()
            self.average = None

    def _log(self, bar: tqdm) -> dict[str, float]:
        s = self.s
        elapsed = time.perf_counter() - self.window_start
        keys = sorted(self.sums)
        if self.world.enabled and keys:  # the mean over ranks of each loss part (every rank takes part)
            stacked = torch.stack([self.sums[k].float() for k in keys])
            distributed.all_reduce_mean_([stacked])
            self.sums = dict(zip(keys, stacked.unbind()))
        last = {k: (v / self.window_steps).item() for k, v in self.sums.items()}
        if not self.world.is_main:
            self._reset_window()
            return last
        scalars = dict(last)
        for part in self.parts:
            # a float (the optimiser's lr is one); the stub allows a tensor
            scalars["lr" if part.name == "student" else f"{part.name}_lr"] = cast(
                float, part.scheduler.get_last_lr()[0]
            )
        applied = self.window_steps - self.window_skipped
        if applied:  # the mean over the steps whose update was applied (a skipped step's norm is inf or NaN)
            scalars["grad_norm"] = (self.grad_norm_sum / applied).item()
        scalars["examples_per_s"] = self.window_examples / max(elapsed, 1e-9)
        fields = progress_fields(last, {part.name: cast(float, part.scheduler.get_last_lr()[0]) for part in self.parts})
        if self.scaler.is_enabled():
            scalars["skipped_steps"] = self.window_skipped
            scalars["loss_scale"] = self.scaler.get_scale()
            if self.window_skipped:
                fields["skipped"] = str(self.window_skipped)
        self.reporter.log_scalars({f"{s.tag_prefix}/{k}": v for k, v in scalars.items()}, self.step)
        self.log_fields = fields
        bar.set_postfix({**fields, **self.eval_fields}, refresh=False)
        self._reset_window()
        return last

    # fp16 loss scaling: below this scale the gradients overflow fp16 even unscaled (diverged, not unlucky)
    MIN_LOSS_SCALE = 1.0

    def _kept(self) -> str:
        good = [c for c in self.exp.checkpoints() if c < self.step]
        return f"the last good checkpoint is model-{good[-1]}.pt" if good else "no checkpoint was written"

    def _skipped_step(self) -> None:
        """Book a step skipped for overflowing fp16 gradients; stop the run when the loss scale has collapsed."""
        self.window_skipped += 1
        self._consecutive_skipped += 1
        scale = self._loss_scale * self.scaler.get_backoff_factor()  # as GradScaler.update() left it: halved
        if scale < self.MIN_LOSS_SCALE:
            raise UserError(
                f"fp16 loss scale collapsed to {scale:g} at step {self.step} of {self.exp.name} "
                f"({self._consecutive_skipped} consecutive steps skipped: the gradients overflow fp16 even "
                f"unscaled): run stopped; {self._kept()} (lower --lr, or use --amp_dtype bf16)"
            )

    def _check_finite(self) -> None:
        """A non-finite loss stops the run before anything is saved (the last checkpoint stays the last good one),
        in every precision: with fp16 loss scaling too (a skipped step has a finite loss and overflowing gradients;
        a non-finite loss is an overflow in the forward itself, e.g. an fp16 teacher)."""
        bad = int(distributed.all_reduce_sum_(self._bad.clone()).item())  # every rank takes the same decision
        if not bad:
            return
        parts = [k for k, v in self.sums.items() if not torch.isfinite(v).all()]
        named = ", ".join(p for p in parts if p != "loss") or "loss"
        first = int(self._first_bad.item())
        hint = (
            "lower --lr, use --amp_dtype bf16, or check the data"
            if self.precision.use_scaler
            else "lower --lr, or check the data"
        )
        raise UserError(
            f"non-finite loss ({named}) at step {first} of {self.exp.name}: run stopped at step {self.step}; "
            f"{self._kept()} ({hint})"
        )

    # -- checkpoints and resume ---------------------------------------------------------------------
    def save(self, step: int) -> None:
        """Write checkpoint ``step``: the model, the method's files (LAD gates), the evaluation files of this
        checkpoint (``eval-{split}.json`` cites only checkpoints already on disk), the checkpoint hook's outputs
        (heat-maps, scalars), the reporter's scalars logged so far (flushed), and last the resume state. The resume
        state is the commit point: a run killed anywhere before it resumes from the previous checkpoint and writes
        this one again, and its last checkpoint does not count as finished while an older resume state is the
        newest one (train._start_experiment). Then ``--save_total_limit`` prunes."""
        if not self.world.is_main:
            return
        save_model_checkpoint(self.student, self.exp.checkpoint_path(step))
        method_state = {
            stem: {k: v.detach().to("cpu", copy=True) for k, v in state.items()}
            for stem, state in self.method.checkpoint_state().items()
        }
        for stem, state in method_state.items():
            atomic_torch_save(state, self.exp.path / f"{stem}-{step}.pt")
        if self._eval_files_due:
            assert self.evaluator is not None and self.history is not None  # due after an evaluation only
            self.evaluator.write_table(self.history.rows)
            self.history.write(self.exp.path)
            self._eval_files_due = False
        if self.on_checkpoint is not None:
            self.on_checkpoint(step, self.reporter)
        self.reporter.flush()  # every step logged up to here is stored before the run can resume from here
        save_resume_state(self.exp.path, step, self.resume_state(method_state))
        self._prune()

    def _prune(self) -> None:
        """``save_total_limit``: keep the newest K checkpoints up to the current step (with their method files)
        and the best one of the evaluation during training. Idempotent: run at every save and when a run resumes,
        so a run killed between a save and its pruning is pruned as the uninterrupted run was."""
        if not self.world.is_main:
            return
        best = self.history.best_checkpoint() if self.history is not None else None
        prune_checkpoints(
            self.exp,
            self.s.save_total_limit,
            self.step,
            None if best is None else best["step"],
            self.method.checkpoint_state(),
        )

    def resume_state(self, method_state: dict[str, dict[str, torch.Tensor]]) -> dict[str, Any]:
        return {
            "step": self.step,
            "stream_position": self.stream.position,
            **({"config_sha256": self.config_sha256} if self.config_sha256 is not None else {}),
            "optimizers": {p.name: p.optimizer.state_dict() for p in self.parts},
            "schedulers": {p.name: p.scheduler.state_dict() for p in self.parts},
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(self.rng_devices),
            "method": method_state,
            "window": {
                "sums": {k: v.detach().cpu() for k, v in self.sums.items()},
                "grad_norm_sum": self.grad_norm_sum.detach().cpu(),
                "steps": self.window_steps,
                "examples": self.window_examples,
                "skipped": self.window_skipped,
            },
            **(
                {"evaluation": {"history": self.history.state_dict(), "evaluator": self.evaluator.state_dict()}}
                if self.history is not None and self.evaluator is not None  # both set or neither (__init__)
                else {}
            ),
        }

    def restore(self, step: int) -> None:
        """Continue the run saved at checkpoint ``step``: weights, optimisers, schedulers, scaler, RNG states,
        data position, the method's state and the open logging window."""
        state = load_resume_state(self.exp.path, step)
        load_checkpoint_into(self.student, self.exp.checkpoint_path(step))
        self.student.to(self.device)
        if state["method"]:
            self.method.load_checkpoint_state(state["method"])
        for part in self.parts:
            part.optimizer.load_state_dict(state["optimizers"][part.name])
            part.scheduler.load_state_dict(state["schedulers"][part.name])
        if state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.stream.position = state["stream_position"]
        self.step = state["step"]
        w = state["window"]
        self.sums = {k: v.to(self.device) for k, v in w["sums"].items()}
        self.grad_norm_sum = w["grad_norm_sum"].to(self.device)
        self.window_steps, self.window_examples = w["steps"], w["examples"]
        self.window_skipped = w.get("skipped", 0)  # resume states written before skipped steps were counted: none
        if self.history is not None:
            self._restore_evaluation(state.get("evaluation"))
        for note in set_rng_state(state["rng"], self.rng_devices):
            say(f"note: {self.exp.name}: resuming at step {step}: {note}")

    def _restore_evaluation(self, state: dict[str, Any] | None) -> None:
        """The evaluations up to the resumed checkpoint; the files lose what a killed run evaluated after it."""
        assert self.evaluator is not None and self.history is not None  # called with evaluation only (restore)
        if state is None or not self.history.load_state_dict(state["history"]):
            say(
                f"note: {self.exp.name}: resuming at step {self.step}: no earlier evaluation on "
                f"{self.evaluator.settings.split} in the resume state; evaluating from here on"
            )
            return
        steps = [r["step"] for r in self.history.rows if r["checkpoint"]]
        self.evaluator.load_state_dict(state["evaluator"], steps)
        if self.world.is_main:  # the checkpoints' table first (what --ckpt best reads), then the history
            if steps:
                self.evaluator.write_table(self.history.rows)
            self.history.write(self.exp.path)


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
