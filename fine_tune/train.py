"""Training workflows behind the entry scripts: teacher fine-tuning and offline logits distillation.

Each workflow validates flags, prepares the experiment folder (config with provenance, model config and
tokenizer), builds the model, tokenises through the cache and hands everything to the one engine.
"""

from __future__ import annotations

import argparse
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import config as cfg
from .batching import Collator, cached_features
from .engine import distributed
from .engine.device import Precision, resolve_device, resolve_precision
from .engine.trainer import Trainer, TrainSettings
from .errors import UserError
from .experiment import ExperimentDir, default_data_root, default_exp_root
from .io_utils import check_writable, sha256_file
from .methods import HardLabel, Method, OfflineLogitsKD
from .models.classifier import (build_from_config, build_pretrained_classifier, load_pretrained_config,
                                load_tokenizer, save_model_dir, student_config)
from .models.init import check_copyable, copy_teacher_layers, teacher_layer_map
from .provenance import collect
from .tasks import get_task
from .tasks.logits import read_logits


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def roots(args: argparse.Namespace) -> tuple[Path, Path]:
    data_root = Path(args.data_root) if args.data_root else default_data_root()
    exp_root = Path(args.exp_root) if args.exp_root else default_exp_root()
    return data_root, exp_root


@dataclass
class Prepared:
    exp: ExperimentDir
    data_root: Path
    device: torch.device | None = None
    precision: Precision | None = None

    def resolve_device(self, args: argparse.Namespace) -> None:
        """After every input has been checked, so an error is never preceded by device warnings."""
        self.device = resolve_device(args.device_id, args.num_gpu)
        self.precision = resolve_precision(args.amp, args.amp_dtype, self.device)


def prepare(args: argparse.Namespace) -> Prepared:
    cfg.validate_training(args)
    task = get_task(args.task)
    data_root, exp_root = roots(args)
    exp = ExperimentDir.of(exp_root, args.experiment, args.model, args.task)
    check_writable(exp_root, "--exp_root")
    if args.num_class != task.num_class:
        raise UserError(f"--num_class {args.num_class}: {task.name} has {task.num_class} classes")
    return Prepared(exp, data_root)


@dataclass
class Start:
    run: bool  # False: this exact run already finished
    resume_step: int | None = None  # continue from this checkpoint


def clear_outputs(exp: ExperimentDir) -> None:
    """``--overwrite``: delete everything the old run left in its folder (checkpoints, resume states, method
    files, heat-maps, eval tables and predictions, submissions, the model folder, leftover temporary files of a
    killed write) and its TensorBoard folder; only ``config.json`` stays, to be replaced by the new run's. Both
    folders are this experiment's own, and both are checked to lie inside the experiment root."""
    import shutil

    root = exp.root.resolve()
    for folder in (exp.path, exp.log_dir):
        if folder.resolve().parent not in (root, root / "log"):
            raise UserError(f"--overwrite: {folder} is not inside the experiment root {exp.root}; nothing deleted")
    for entry in exp.path.iterdir():
        if entry.name == "config.json":
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    shutil.rmtree(exp.log_dir, ignore_errors=True)


def start_experiment(p: Prepared, args: argparse.Namespace, record: dict, data_files: dict[str, str]) -> Start:
    """Write config.json (after the guard) and decide how to start: a new run, the continuation of a killed
    run with the same config (from its latest checkpoint with a resume state), or nothing when the run
    already finished. ``--overwrite`` with a different config deletes the old run's outputs first.
    Under torchrun rank 0 decides (and writes); every rank follows its decision."""
    start = distributed.broadcast_from_main(lambda: _start_experiment(p, args, record, data_files))
    if p.device is None:
        p.resolve_device(args)
    return start


def _start_experiment(p: Prepared, args: argparse.Namespace, record: dict, data_files: dict[str, str]) -> Start:
    from .engine.checkpoint import resume_steps

    old = cfg.guard_experiment(p.exp.config_path, record, args.overwrite)
    p.resolve_device(args)
    same = old is not None and not cfg.differing_fields(old, record)
    start = Start(True)
    # The resume state is written last at every checkpoint (Trainer.save), and the previous one is deleted only
    # after it: a last checkpoint whose resume state is missing while an older one exists is a run killed while
    # writing it (resumed below). With no resume state at all (deleted to save space), model-{total} means done.
    ready = [s for s in resume_steps(p.exp.path) if p.exp.checkpoint_path(s).is_file()] if same else []
    if same and p.exp.checkpoint_path(args.total_step).is_file() and (not ready or ready[-1] == args.total_step):
        print(f"{p.exp.path}: already finished (model-{args.total_step}.pt exists); nothing to do")
        return Start(False)
    if same:
        if ready:
            start = Start(True, ready[-1])
            print(f"{p.exp.name}: resuming from model-{ready[-1]}.pt (same config; pass --overwrite with "
                  f"another config to start over)", file=sys.stderr)
        elif p.exp.checkpoints():
            print(f"{p.exp.name}: checkpoints {p.exp.checkpoints()} have no resume state; starting over",
                  file=sys.stderr)
    if old is not None and not same:  # --overwrite: start over, drop every output of the old run
        clear_outputs(p.exp)
    record = dict(record, provenance=collect(p.device, data_files))
    p.exp.path.mkdir(parents=True, exist_ok=True)
    cfg.save_config(p.exp.config_path, record)
    return start


def args_compile(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "compile", False))


def settings(args: argparse.Namespace, dataset_tag: str) -> TrainSettings:
    return TrainSettings(total_step=args.total_step, batch_size=args.batch_size, accum_step=args.accum_step,
                         lr=args.lr, beta1=args.beta1, beta2=args.beta2, eps=args.eps, weight_decay=args.weight_decay,
                         max_norm=args.max_norm, warmup_step=args.warmup_step, ckpt_step=args.ckpt_step,
                         log_step=args.log_step, seed=args.seed, save_total_limit=args.save_total_limit or 0,
                         padding_free=getattr(args, "padding_free", "off") == "auto",
                         compile=args_compile(args),
                         group_by_length=bool(getattr(args, "group_by_length", False)),
                         tag_prefix=f"{args.task}/{dataset_tag}/{args.model}")


def run_training(p: Prepared, model, method: Method, tokenizer, examples, source_hash: str, args,
                 dataset_tag: str, teacher_logits: np.ndarray | None = None, teacher=None, teacher_device=None,
                 make_hook=None, resume_step: int | None = None) -> dict:
    """Tokenise (through the cache), build the collator and run the one engine. ``make_hook(trainer)`` may
    return an ``on_checkpoint(step, writer)`` callback (e.g. the layer-contribution heat-map)."""
    features = cached_features(p.data_root / "cache", tokenizer, examples, args.max_seq_len, source_hash)
    if features.labels is None and (method.name == "fine_tune" or teacher is not None):
        raise UserError(f"--dataset {args.dataset!r} has no labels; train on a labelled split")
    collator = Collator(features, tokenizer.pad_token_id, args.max_seq_len, args.padding, teacher_logits)
    trainer = Trainer(model, method, collator, len(features), settings(args, dataset_tag), p.exp, p.device,
                      p.precision, teacher=teacher, teacher_device=teacher_device, lengths=features.lengths())
    if make_hook is not None:
        trainer.on_checkpoint = make_hook(trainer)
    print(f"{p.exp.name}: {len(features)} examples, {args.total_step} steps of {args.batch_size} "
          f"({args.accum_step} x {args.batch_size // args.accum_step}), {p.device}, {p.precision.describe()}"
          f"{', padding-free forward' if trainer.padding_free else ''}"
          f"{', own BERT forward over the padded batch' if trainer.model_forward == 'grid' else ''}{', torch.compile' if args_compile(args) else ''}",
          file=sys.stderr)
    summary = trainer.train(resume_step)
    print(f"{p.exp.name}: trained {summary['steps_run']} steps in {summary['seconds']:.1f} s "
          f"({summary['examples_per_s']:.1f} examples/s); checkpoints in {p.exp.path}")
    return summary


def run_fine_tune(args: argparse.Namespace) -> dict | None:
    """Teacher fine-tuning (``run_fine_tune.py``): pretrained encoder + head, cross-entropy on gold labels."""
    p = prepare(args)
    task = get_task(args.task)
    data_file = task.path(p.data_root, args.dataset)
    examples = task.load(p.data_root, args.dataset, args.max_examples)
    pre_config = load_pretrained_config(args.ptrain_ver, args.model)
    cfg.check_max_seq_len(args.max_seq_len, pre_config.max_position_embeddings, f"--ptrain_ver {args.ptrain_ver!r}")
    tokenizer = load_tokenizer(args.ptrain_ver, "--ptrain_ver")
    source_hash = sha256_file(data_file)
    start = start_experiment(p, args, cfg.to_record(args), {str(data_file): source_hash})
    if not start.run:
        return None
    seed_everything(args.seed)
    model = build_pretrained_classifier(args.ptrain_ver, args.model, args.num_class, args.dropout)
    if distributed.is_main():
        save_model_dir(p.exp.model_dir, model.config, tokenizer)
    return run_training(p, model, HardLabel(), tokenizer, examples, source_hash, args, args.dataset,
                        resume_step=start.resume_step)


def run_offline_distill(args: argparse.Namespace) -> dict | None:
    """Student distillation from a logits data set (``run_fine_tune_distill.py``)."""
    cfg.validate_student(args)
    p = prepare(args)
    logits = read_logits(p.data_root, args.dataset, args.task)
    meta = logits.meta
    if logits.logits.shape[1] != args.num_class:
        raise UserError(f"--num_class {args.num_class}: the logits data set has {logits.logits.shape[1]} classes")
    if meta.get("model") != args.model:
        raise UserError(f"--model {args.model}: the logits data set's teacher tokenizer is for {meta.get('model')!r}")
    examples = logits.examples[: args.max_examples] if args.max_examples else logits.examples
    teacher_logits = logits.logits[: len(examples)]
    max_positions = max(512, args.max_seq_len) if meta.get("max_position_embeddings") is None else meta["max_position_embeddings"]
    cfg.check_max_seq_len(args.max_seq_len, max_positions, "the student (teacher's position table)")
    record = cfg.to_record(args)
    record.update(ptrain_ver=meta.get("ptrain_ver"), teacher_experiment=meta.get("teacher_experiment"),
                  teacher_checkpoint=meta.get("checkpoint"), logits_split=meta.get("split"))
    source_hash = meta["logits_sha256"]
    tokenizer = load_tokenizer(logits.tokenizer_dir)
    layers, source = None, meta.get("ptrain_ver")
    if args.init_embeddings and args.init_start is None:
        raise UserError("--init_embeddings belongs to the layer initialisation: give --init_start/--init_end too")
    if args.init_start is not None:  # checked (and the pretrained folder found) before anything is written
        if not source:
            raise UserError("--init_start: the logits data set records no pretrained teacher (ptrain_ver) to copy from")
        pre_config = load_pretrained_config(source, args.model)
        layers = teacher_layer_map(args.init_start, args.init_end, args.init_step, args.num_hidden_layers,
                                   pre_config.num_hidden_layers)
        check_copyable(pre_config, args.d_model, args.d_ff, args.init_attn_only)
    start = start_experiment(p, args, record, {str(logits.data_file): source_hash})
    if not start.run:
        return None
    seed_everything(args.seed)
    config = student_config(args.model, vocab_size=meta.get("vocab_size") or len(tokenizer), num_class=args.num_class,
                            d_model=args.d_model, d_ff=args.d_ff, num_attention_heads=args.num_attention_heads,
                            num_hidden_layers=args.num_hidden_layers, type_vocab_size=args.type_vocab_size,
                            dropout=args.dropout, max_position_embeddings=max_positions,
                            pad_token_id=tokenizer.pad_token_id, d_emb=args.d_emb)
    model = build_from_config(config)
    if layers is not None:
        pairs = copy_teacher_layers(model, source, layers, attn_only=args.init_attn_only,
                                    embeddings=args.init_embeddings)
        print(f"initialised student layers from {source}: " + ", ".join(f"{s}<-{t}" for s, t in pairs), file=sys.stderr)
    if distributed.is_main():
        save_model_dir(p.exp.model_dir, model.config, tokenizer)
    method = OfflineLogitsKD(args.hard_weight, args.soft_weight, args.softmax_temp)
    return run_training(p, model, method, tokenizer, examples, source_hash, args, args.dataset,
                        teacher_logits=teacher_logits, resume_step=start.resume_step)
