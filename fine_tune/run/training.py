"""What every training run does once its model and method are built: tokenise through the cache, build the
collator, choose the training forward, run the one engine."""

from __future__ import annotations

import torch

from .. import config as cfg
from ..batching import Collator, cached_features
from ..engine.device import Precision
from ..engine.trainer import Trainer
from ..errors import UserError
from ..methods import Method
from ..models.forward import forward
from ..models.padding_free import training_forwards
from ..plan import RunPlan
from ..progress import say


def training_evaluator(plan: RunPlan, tokenizer, device: torch.device, precision: Precision):
    """``--eval_dataset``: the evaluation during training of the student (tokenised as it trains), or None."""
    ev = plan.evaluation
    if ev is None:
        return None
    from ..evaluate import TrainingEvaluator

    features = cached_features(
        plan.data_root / "cache", tokenizer, ev.split.examples, plan.max_seq_len, regression=plan.task.regression
    )
    return TrainingEvaluator(
        plan.exp,
        plan.task,
        ev.split.name,
        ev.split.examples,
        features,
        tokenizer.pad_token_id,
        plan.max_seq_len,
        ev.batch_size,
        device,
        precision,
        ev.every,
        ev.patience,
        ev.max_examples,
        ev.metric,
    )


def run_training(
    plan: RunPlan,
    model: torch.nn.Module,
    method: Method,
    device: torch.device,
    precision: Precision,
    teacher=None,
    teacher_device=None,
    on_checkpoint=None,
    resume_step: int | None = None,
    config_sha256: str | None = None,
) -> dict:
    """Tokenise (through the cache), build the collator and run the one engine, reporting where the plan says
    (``--report_to``: the run's config.json as parameters); ``on_checkpoint(step, reporter)``
    runs at each checkpoint (e.g. the layer-contribution heat-map); ``config_sha256`` goes into each resume state
    (the digest of the config.json the run wrote: run/start.py)."""
    tokenizer, exp, s = plan.tokenizer, plan.exp, plan.training
    features = cached_features(
        plan.data_root / "cache", tokenizer, plan.train.examples, plan.max_seq_len, regression=plan.task.regression
    )
    if features.labels is None and method.needs_labels:
        raise UserError(f"--dataset {plan.train.name!r} has no labels; train on a labelled split")
    forwards = training_forwards(
        model,
        teacher,
        enabled=plan.padding_free,
        ignores_padding=method.ignores_padding,
        device_type=device.type,
        compile=s.compile,
        student_record=method.recorded_layers("student"),
        teacher_record=method.recorded_layers("teacher"),
        gradient_checkpointing=s.gradient_checkpointing,
    )
    # the padding-free forward's packing built on the host from the collator's lengths (no host-device sync)
    collator = Collator(
        features,
        tokenizer.pad_token_id,
        plan.max_seq_len,
        plan.padding,
        plan.teacher_logits,
        layout=forwards.layout if forwards.takes_layout else None,
        pin_memory=device.type == "cuda",
    )
    reporter = plan.reporting.open() if plan.reporting is not None else None  # --report_to (starts with training)
    trainer = Trainer(
        model,
        method,
        collator,
        len(features),
        s,
        exp,
        device,
        precision,
        teacher=teacher,
        teacher_device=teacher_device,
        lengths=features.lengths(),
        student_forward=forwards.student,
        teacher_forward=forwards.teacher,
        evaluator=training_evaluator(plan, tokenizer, device, precision),
        forward=forward,
        on_checkpoint=on_checkpoint,
        config_sha256=config_sha256,
        reporter=reporter,
        run_params=cfg.load_config(exp.config_path) if reporter is not None else None,
    )
    say(
        f"{exp.name}: {len(features)} examples, {s.total_step} steps of {s.batch_size} "
        f"({s.accum_step} x {s.micro_batch}), {device}, {precision.describe()}{forwards.describe()}"
        f"{', torch.compile' if s.compile else ''}{', gradient checkpointing' if s.gradient_checkpointing else ''}"
        f"{', attention projections recorded' if method.reads_attention else ''}"
    )
    if trainer.evaluator is not None and plan.evaluation is not None:  # (the trainer evaluates what the plan says)
        es = trainer.evaluator.settings
        say(
            f"{exp.name}: evaluating on {es.split} ({len(plan.evaluation.split.examples)} rows) "
            f"{f'every {es.every} steps and ' if es.every else ''}at each checkpoint"
            f"{f', stopping after {es.patience} evaluations without a better {es.metric}' if es.patience else ''}"
        )
    elif s.save_total_limit:
        say(
            f"note: {exp.name}: --save_total_limit {s.save_total_limit} keeps the newest checkpoints "
            f"whether or not they are the best; with --eval_dataset SPLIT the best one on SPLIT is kept too"
        )
    summary = trainer.train(resume_step)
    print(
        f"{exp.name}: trained {summary['steps_run']} steps in {summary['seconds']:.1f} s "
        f"({summary['examples_per_s']:.1f} examples/s); checkpoints in {exp.path}"
    )
    return summary
