"""What every training workflow does once its model and method are built: tokenise through the cache, build
the collator, choose the training forward, run the one engine."""

from __future__ import annotations

import sys

import numpy as np

from ..batching import Collator, cached_features
from ..engine.trainer import Trainer, TrainSettings
from ..errors import UserError
from ..methods import Method
from ..models.forward import forward
from ..models.padding_free import training_forwards
from .start import Prepared


def train_settings(flags, dataset: str) -> TrainSettings:
    """The engine's settings from a training script's flags (``dataset``: the training split, resolved)."""
    b, r = flags.batching, flags.run
    e = flags.experiment
    return TrainSettings(optimiser=flags.optimiser.settings(), batch_size=b.batch_size, accum_step=b.accum_step,
                         ckpt_step=r.ckpt_step, log_step=r.log_step, seed=r.seed,
                         save_total_limit=r.save_total_limit or 0, group_by_length=b.group_by_length,
                         compile=flags.speed.compile, tag_prefix=f"{e.task}/{dataset}/{e.model}")


def training_evaluator(p: Prepared, flags, tokenizer):
    """``--eval_dataset``: the evaluation during training of the student (tokenised as it trains), or None."""
    r = flags.run
    if not r.eval_dataset:
        return None
    from ..evaluate import TrainingEvaluator

    features = cached_features(p.data_root / "cache", tokenizer, p.eval_examples, flags.batching.max_seq_len)
    return TrainingEvaluator(p.exp, p.task, r.eval_dataset, p.eval_examples, features,
                             tokenizer.pad_token_id, flags.batching.max_seq_len, r.eval_batch_size, p.device,
                             p.precision, r.eval_step, r.early_stop_patience)


def run_training(p: Prepared, flags, model, method: Method, tokenizer, examples,
                 teacher_logits: np.ndarray | None = None, teacher=None, teacher_device=None, make_hook=None,
                 resume_step: int | None = None) -> dict:
    """Tokenise (through the cache), build the collator and run the one engine. ``make_hook(trainer)`` may
    return an ``on_checkpoint(step, writer)`` callback (e.g. the layer-contribution heat-map)."""
    b = flags.batching
    dataset = flags.experiment.dataset
    features = cached_features(p.data_root / "cache", tokenizer, examples, b.max_seq_len)
    if features.labels is None and method.needs_labels:
        raise UserError(f"--dataset {dataset!r} has no labels; train on a labelled split")
    forwards = training_forwards(model, teacher, enabled=flags.speed.padding_free == "auto",
                                 ignores_padding=method.ignores_padding, device_type=p.device.type,
                                 compile=flags.speed.compile, record_attention=method.reads_attention)
    # the padding-free forward's packing built on the host from the collator's lengths (no host-device sync)
    collator = Collator(features, tokenizer.pad_token_id, b.max_seq_len, b.padding, teacher_logits,
                        layout=forwards.layout if forwards.takes_layout else None,
                        pin_memory=p.device.type == "cuda")
    settings = train_settings(flags, dataset)
    trainer = Trainer(model, method, collator, len(features), settings, p.exp, p.device, p.precision,
                      teacher=teacher, teacher_device=teacher_device, lengths=features.lengths(),
                      student_forward=forwards.student, teacher_forward=forwards.teacher,
                      evaluator=training_evaluator(p, flags, tokenizer), forward=forward)
    if make_hook is not None:
        trainer.on_checkpoint = make_hook(trainer)
    print(f"{p.exp.name}: {len(features)} examples, {settings.total_step} steps of {b.batch_size} "
          f"({b.accum_step} x {settings.micro_batch}), {p.device}, {p.precision.describe()}{forwards.describe()}"
          f"{', torch.compile' if settings.compile else ''}"
          f"{', attention projections recorded' if method.reads_attention else ''}", file=sys.stderr)
    if trainer.evaluator is not None:
        es = trainer.evaluator.settings
        print(f"{p.exp.name}: evaluating on {es.split} ({len(p.eval_examples)} rows) "
              f"{f'every {es.every} steps and ' if es.every else ''}at each checkpoint"
              f"{f', stopping after {es.patience} evaluations without a better {es.metric}' if es.patience else ''}",
              file=sys.stderr)
    elif flags.run.save_total_limit:
        print(f"note: {p.exp.name}: --save_total_limit {flags.run.save_total_limit} keeps the newest checkpoints "
              f"whether or not they are the best; with --eval_dataset SPLIT the best one on SPLIT is kept too",
              file=sys.stderr)
    summary = trainer.train(resume_step)
    print(f"{p.exp.name}: trained {summary['steps_run']} steps in {summary['seconds']:.1f} s "
          f"({summary['examples_per_s']:.1f} examples/s); checkpoints in {p.exp.path}")
    return summary
