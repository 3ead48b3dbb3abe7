"""The planners of the training scripts: parsed flags in, a checked :class:`~fine_tune.plan.types.RunPlan` out.

Each resolves what the flags leave open (the task's class count, the teacher's max_seq_len and training split, a
pretrained student's widths, the layers to initialise), checks every input before anything is written, and
records what ``config.json`` will hold. One planner per way a student learns:

* :func:`plan_fine_tune` (``run_fine_tune.py``): a pretrained encoder and a new head on gold labels;
* :func:`plan_offline_distill` (``run_fine_tune_distill.py``): a student from a logits data set;
* :func:`plan_online_distill` (``run_distil.py --method NAME``, the layer-wise scripts): a student beside its
  fine-tuned teacher, with any registered method.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import Any

from .. import config as cfg
from ..batching import micro_batches_per_epoch
from ..engine.device import resolve_placement
from ..engine.optim import OptimiserSettings
from ..engine.protocol import TeacherShape
from ..engine.trainer import TrainSettings
from ..errors import UserError, did_you_mean
from ..experiment import ExperimentDir, roots
from ..io_utils import check_writable, sha256_file
from ..methods import Method, get_method
from ..methods.base import MethodSettings, StudentShape
from ..methods.lad import GateFlags, ProbingFlags, parse_indices
from ..methods.recipe import RecipeFlags
from ..methods.registry import extendable_methods
from ..models.checkpointing import check_gradient_checkpointing
from ..models.classifier import (
    check_same_tokenisation,
    head_note,
    load_pretrained_config,
    load_tokenizer,
    weight_file_hashes,
)
from ..models.families import usable_positions
from ..models.init import check_copyable, teacher_layer_map
from ..models.projection import PretrainedProjection, read_pretrained_projection
from ..recipes.format import Recipe, load_recipe
from ..selection import metric_for_best
from ..settings import ConfigSource, Flags, OptimiserFlags, StudentFlags, needed
from ..tasks import Example, Task, get_task
from ..tasks.logits import check_teacher_unchanged, read_logits
from ..teacher import Teacher, Teachers, open_hf_teacher, open_teacher
from .types import Devices, LayerMapPlan, PretrainedModel, RunPlan, Split, StudentModel, TrainingEvaluation


# -- what every training run resolves ------------------------------------------------------------------------
def _task_and_folder(flags: Flags, task: Task | None = None) -> tuple[Path, Task, ExperimentDir]:
    """The data root, the task (resolved once, unless given: a task of your own from ``<data_root>/<name>/task.json``)
    and the experiment folder (not created), whose root must be writable, as must the folder itself and its
    TensorBoard folder where they exist (a resume, ``--overwrite``); ``--num_class`` checked against the task."""
    data_root, exp_root = roots(flags.paths.data_root, flags.paths.exp_root)
    e = flags.experiment
    task = task or get_task(e.task, data_root)
    exp = ExperimentDir.of(exp_root, e.experiment, e.model, e.task)
    check_writable(exp_root, "--exp_root")
    check_writable(exp.path, "--exp_root", root=exp_root)  # an experiment folder already there (resume, --overwrite)
    check_writable(exp.log_dir, "--exp_root", root=exp_root)
    num_class = flags.classifier.num_class
    if num_class is not None and num_class != task.num_class:
        raise UserError(
            f"--num_class {num_class}: {task.name} has {task.num_class} classes ({', '.join(task.label_names)})"
        )
    return data_root, task, exp


def load_split(task: Task, data_root: Path, split: str, max_examples: int | None) -> Split:
    """A split parsed and hashed (its rows; its file's sha256, an input of the run)."""
    path = task.path(data_root, split)
    examples = task.load(data_root, split, max_examples)
    return Split(split, path, sha256_file(path), examples)


def training_split(task: Task, data_root: Path, split: str, max_examples: int | None) -> Split:
    """The training split (``--dataset``), parsed: a diagnostic split (SuperGLUE's AX-b, AX-g) is never one."""
    task.check_not_diagnostic(split, "--dataset", "training data")
    return load_split(task, data_root, split, max_examples)


def _evaluation(flags: Flags, task: Task, data_root: Path) -> TrainingEvaluation | None:
    """``--eval_dataset``: the split checked (it exists and has labels) and parsed before anything is written."""
    r = flags.run
    metric = metric_for_best(
        task, r.metric_for_best
    )  # checked whether or not this run evaluates (--ckpt best reads it)
    if not r.eval_dataset:
        return None
    task.check_split(r.eval_dataset, "--eval_dataset")
    if r.eval_dataset not in task.labelled:
        raise UserError(
            f"--eval_dataset {r.eval_dataset!r} has no labels to evaluate against; labelled {task.name} "
            f"splits: {', '.join(s for s in task.splits if s in task.labelled)}"
        )
    return TrainingEvaluation(
        load_split(task, data_root, r.eval_dataset, flags.paths.max_examples),
        r.eval_step,
        r.eval_batch_size,
        r.early_stop_patience,
        flags.paths.max_examples,
        metric,
    )


def _inputs(
    task: Task, train: tuple[Path, str], evaluation: TrainingEvaluation | None, *weights: dict[str, str]
) -> dict[str, str]:
    """Every input file of the run and its sha256 (config.json's provenance; checked before a resume): the training
    data, the evaluation split, a task of your own's task.json, pretrained weights."""
    inputs = {str(train[0]): train[1]}
    for w in weights:
        inputs.update(w)
    if evaluation is not None:
        inputs[str(evaluation.split.file)] = evaluation.split.sha256
    if task.definition_file is not None:
        inputs[str(task.definition_file)] = sha256_file(task.definition_file)
    return inputs


def _record(flags: Flags, task: Task, **resolved: Any) -> dict[str, Any]:
    """config.json's fields: every flag, what the planner resolved, a task of your own's definition."""
    record = dict(flags.record(), **resolved)
    if task.definition_file is not None:
        record["task_definition"] = task.definition
    return record


def optimiser_settings(o: OptimiserFlags) -> OptimiserSettings:
    """The engine's settings of the student's optimiser from its flags (``flags.optimiser``)."""
    return OptimiserSettings(
        lr=o.lr,
        total_step=o.total_step,
        warmup_step=o.warmup_step,
        beta1=o.beta1,
        beta2=o.beta2,
        eps=o.eps,
        weight_decay=o.weight_decay,
        max_norm=o.max_norm,
    )


def _number(x: float | Fraction) -> str:
    """A count of epochs for people: whole above 10 (``2,632``), else up to one decimal (``0.5``, ``3``)."""
    return f"{round(x):,}" if x >= 10 else f"{x:.1f}".rstrip("0").rstrip(".")


DEFAULT_TOTAL_STEP = {f.name: f.default for f in dataclasses.fields(OptimiserFlags)}["total_step"]


def resolve_schedule(flags: Flags, rows: int, drop_last: bool = False) -> tuple[Flags, str | None]:
    """The flags with ``--num_epochs`` / ``--warmup_ratio`` resolved into ``--total_step`` / ``--warmup_step`` (what
    config.json records, beside the two as given), and a note (or None) for a run left at the default length.

    An epoch is the ``rows`` rows of the training split (after ``--max_examples``) in micro-batches of
    ``batch_size // accum_step`` (:func:`~fine_tune.batching.micro_batches_per_epoch`; ``drop_last``: the method's
    full micro-batches only), ``accum_step`` of them per optimizer step; the data order runs on across epochs, so
    ``total_step = ceil(N x micro-batches per epoch / accum_step)`` (Hugging Face's num_train_epochs, at least 1)
    and ``warmup_step = ceil(R x total_step)`` (its warmup_ratio), both computed on the decimal values given. Under
    torchrun the batch is the global one (each rank takes its share of every micro-batch: engine/distributed.shard),
    so the world size changes neither."""
    o, b = flags.optimiser, flags.batching
    micro = micro_batches_per_epoch(rows, b.batch_size // b.accum_step, drop_last)
    per_epoch = Fraction(micro, b.accum_step)  # optimizer steps per epoch
    total = o.total_step if o.num_epochs is None else max(1, math.ceil(Fraction(str(o.num_epochs)) * per_epoch))
    warmup = o.warmup_step if o.warmup_ratio is None else math.ceil(Fraction(str(o.warmup_ratio)) * total)
    if warmup > total:  # (--total_step given: refused at parse time; a ratio below 1 never exceeds)
        raise UserError(
            f"--warmup_step {warmup} exceeds the {total} steps of --num_epochs {_number(needed(o.num_epochs, '--num_epochs'))} "
            f"({rows} rows, {_number(float(per_epoch))} steps per epoch): give a smaller --warmup_step, "
            f"or --warmup_ratio"
        )
    note = None
    if o.num_epochs is None and total == DEFAULT_TOTAL_STEP and per_epoch:
        note = (
            f"{total} steps = {_number(total / per_epoch)} epochs of {rows} examples (batch {b.batch_size}); "
            f"--num_epochs or --total_step to choose"
        )
    if (total, warmup) == (o.total_step, o.warmup_step):
        return flags, note
    return flags.replace(optimiser={"total_step": total, "warmup_step": warmup}), note


def _schedule_and_method(flags: Flags, rows: int, build: Callable[[Flags], Method]) -> tuple[Flags, Method, str | None]:
    """The flags with the schedule resolved (:func:`resolve_schedule`), the method ``build(flags)`` built from them
    (its own parameter sets follow the student's schedule: LAD's gates, a width projection) and the schedule's note.
    Built with every row counted, and again where the built method trains full micro-batches only (TinyBERT's
    ``--tinybert_incomplete_batches skip``) and that changes the schedule."""
    resolved, note = resolve_schedule(flags, rows)
    method = build(resolved)
    if method.drop_last:
        again, note = resolve_schedule(flags, rows, drop_last=True)
        if again.optimiser != resolved.optimiser:
            resolved, method = again, build(again)
    return resolved, method, note


def _training(flags: Flags, dataset: str, method: Method) -> TrainSettings:
    """The engine's settings (``dataset``: the training split, resolved, in the scalars' names: README.md,
    "TensorBoard tags"); what the method
    decides of its training (``Method.schedule``, ``Method.drop_last``) resolved into plain settings;
    ``--gradient_checkpointing`` refused for a student family that cannot recompute its layers."""
    b, r, e = flags.batching, flags.run, flags.experiment
    if flags.speed.gradient_checkpointing:
        check_gradient_checkpointing(e.model)
    optimiser = replace(optimiser_settings(flags.optimiser), schedule=method.schedule)
    return TrainSettings(
        optimiser=optimiser,
        batch_size=b.batch_size,
        accum_step=b.accum_step,
        ckpt_step=r.ckpt_step,
        log_step=r.log_step,
        seed=r.seed,
        save_total_limit=r.save_total_limit or 0,
        group_by_length=b.group_by_length,
        compile=flags.speed.compile,
        gradient_checkpointing=flags.speed.gradient_checkpointing,
        tag_prefix=f"{e.task}/{dataset}/{e.model}",
        drop_last=method.drop_last,
    )


def _legacy(exp: ExperimentDir, record: dict[str, Any], rerun: ConfigSource | None = None) -> dict[str, Any]:
    """A run started before a fidelity fix resumes with the rule it started with: the fields of
    config.LEGACY_FIELDS that ``record`` holds and the existing config.json of the same run lacks (read here, so
    the method is built with its rule; the start decision checks it again under the experiment's lock).

    A run re-issued with ``--config`` from such a run's config.json (``rerun``) into a folder of its own is that
    older run again: the fields the file lacks keep their old rule (a file of another method's run says nothing
    about this method's fields; a flag given on the command line with another value than the file's wins), and
    the new config.json lacks them too, so it resumes the same way."""
    if exp.config_path.is_file():
        try:
            old = cfg.load_config(exp.config_path)
        except UserError:
            return {}  # the start refuses it, naming the file
        if not cfg.changed_fields(old, record):
            return cfg.legacy_values(old, record)
    if rerun is None:
        return {}
    try:
        source = cfg.load_config(Path(rerun.config_from))
    except UserError:
        return {}  # read once already by the command line
    if source.get("method") != record.get("method"):
        return {}
    return {k: v for k, v in cfg.legacy_values(source, record).items() if k not in rerun.overrides}


def method_settings(
    flags: Flags,
    task: Task,
    method_cls: type[Method],
    teacher: TeacherShape | None = None,
    legacy: dict[str, Any] | None = None,
    student_projection: PretrainedProjection | None = None,
    teachers: dict[str, TeacherShape] | None = None,
    recipe: Recipe | None = None,
    base: Method | None = None,
) -> MethodSettings:
    """What ``method_cls`` is built from: its settings groups (its own ``flag_groups``, and the distillation
    scripts' ``distil`` and ``layerwise``) and the run's resolved facts (the task's regression, the student's and
    the teacher's shapes, the padding, the student's optimiser, a resumed run's legacy rules, the projection a
    pretrained student's weights hold: :func:`student_projection`; a recipe's teachers' shapes by name, and the
    recipe as the plan read it, and the method built for its ``method:``)."""
    st, b = flags.student if flags.has("student") else None, flags.batching
    keys = ("distil", "layerwise", *(g.key for g in method_cls.flag_groups))
    return MethodSettings(
        groups={key: getattr(flags, key) for key in keys if flags.has(key)},
        num_class=task.num_class if flags.classifier.num_class is None else flags.classifier.num_class,
        regression=task.regression,
        student=StudentShape(st.num_hidden_layers, st.d_model, st.num_attention_heads) if st else None,
        teacher=teacher,
        padding=b.padding,
        max_seq_len=needed(b.max_seq_len, "--max_seq_len"),
        optimiser=optimiser_settings(flags.optimiser),
        legacy=legacy or {},
        student_projection=student_projection,
        teachers=teachers or {},
        recipe=recipe,
        base=base,
    )


def student_projection(flags: Flags, method_cls: type[Method]) -> PretrainedProjection | None:
    """The projection ``--student_ptrain_ver``'s weights hold under the method's ``projection_weights`` name (TinyBERT:
    General TinyBERT's trained ``fit_dense``), read before anything is written; None without one."""
    source = flags.student.student_ptrain_ver if flags.has("student") else None
    if source is None or method_cls.projection_weights is None:
        return None
    return read_pretrained_projection(source, method_cls.projection_weights, "--student_ptrain_ver")


def _plan(
    flags: Flags,
    *,
    data_root: Path,
    task: Task,
    exp: ExperimentDir,
    train: Split,
    tokenizer: Any,
    max_seq_len: int,
    model: PretrainedModel | StudentModel,
    method: Method,
    record: dict[str, Any],
    inputs: dict[str, str],
    evaluation: TrainingEvaluation | None,
    devices: Devices | None = None,
    notes: tuple[str, ...] = (),
    tag_split: str | None = None,
    **extra: Any,
) -> RunPlan:
    """The run's plan; ``tag_split``: the training split the scalars' names give (default: ``train``'s name)."""
    from ..reporting import resolve_reporting

    b = flags.batching
    training = _training(flags, tag_split or train.name, method)
    method.check_training_rows(len(train.examples), training.micro_batch, f"--dataset {train.name!r}")
    if training.optimiser.schedule == "constant" and flags.optimiser.warmup_step:
        notes = (
            *notes,
            f"the learning rate stays constant ({method.name}'s schedule): --warmup_step "
            f"{flags.optimiser.warmup_step} and the linear decay do not apply",
        )
    return RunPlan(
        exp=exp,
        data_root=data_root,
        task=task,
        train=train,
        tokenizer=tokenizer,
        max_seq_len=max_seq_len,
        padding=b.padding,
        padding_free=flags.speed.padding_free == "auto",
        model=model,
        method=method,
        training=training,
        devices=devices or Devices.of(flags.device),
        record=record,
        inputs=inputs,
        overwrite=flags.paths.overwrite,
        evaluation=evaluation,
        notes=tuple(notes),
        reporting=resolve_reporting(flags.run.report_to, exp, task.name),
        **extra,
    )


# -- fine-tuning ---------------------------------------------------------------------------------------------
def plan_fine_tune(flags: Flags) -> RunPlan:
    """``run_fine_tune.py``: a pretrained encoder (``--ptrain_ver``) and a new head, cross-entropy on gold labels."""
    data_root, task, exp = _task_and_folder(flags)
    evaluation = _evaluation(flags, task, data_root)
    e, ptrain_ver = flags.experiment, flags.pretrained.ptrain_ver
    if flags.classifier.num_class is None:  # the task's label set, recorded in config.json
        flags = flags.replace(classifier={"num_class": task.num_class})
    train = training_split(task, data_root, needed(e.dataset, "--dataset"), flags.paths.max_examples)
    pre_config = load_pretrained_config(ptrain_ver, e.model)
    max_seq_len = needed(flags.batching.max_seq_len, "--max_seq_len")
    cfg.check_max_seq_len(max_seq_len, pre_config.max_position_embeddings, f"--ptrain_ver {ptrain_ver!r}")
    tokenizer = load_tokenizer(ptrain_ver, "--ptrain_ver")
    cfg.check_room_for_text(max_seq_len, tokenizer)
    fine_tuning = get_method("fine_tune")
    flags, method, schedule = _schedule_and_method(
        flags, len(train.examples), lambda f: fine_tuning.build(method_settings(f, task, fine_tuning))
    )
    inputs = _inputs(task, (train.file, train.sha256), evaluation, weight_file_hashes(ptrain_ver))
    model = PretrainedModel(ptrain_ver, e.model, task.num_class, flags.classifier.dropout)
    notes = [n for n in (head_note(pre_config, flags.classifier.num_class, "--ptrain_ver", ptrain_ver), schedule) if n]
    return _plan(
        flags,
        data_root=data_root,
        task=task,
        exp=exp,
        train=train,
        tokenizer=tokenizer,
        max_seq_len=max_seq_len,
        model=model,
        method=method,
        record=_record(flags, task),
        inputs=inputs,
        evaluation=evaluation,
        notes=tuple(notes),
    )


# -- the student of distillation -----------------------------------------------------------------------------
def resolve_pretrained_student(flags: Flags, notes: list[str]) -> tuple[Flags, Any]:
    """``--student_ptrain_ver``: checked (a model folder of ``--model``'s family, or a hub name) before anything is
    written, and its shape (width, feed-forward size, heads, layers) recorded in place of the shape flags, which
    do not apply to it (said in ``notes``); ``--max_seq_len`` checked against its positions. Returns the flags
    (unchanged without a pretrained student) and the student's tokenizer (None: the student takes the
    teacher's)."""
    st = flags.student
    if st.student_ptrain_ver is None:
        return flags, None
    config = load_pretrained_config(st.student_ptrain_ver, flags.experiment.model, "--student_ptrain_ver")
    d_ff = getattr(config, "intermediate_size", None) or getattr(config, "hidden_dim", None) or st.d_ff
    shape = {
        "d_model": config.hidden_size,
        "d_ff": d_ff,
        "num_attention_heads": config.num_attention_heads,
        "num_hidden_layers": config.num_hidden_layers,
    }
    if any(getattr(st, k) != v for k, v in shape.items()):
        notes.append(
            f"the student is --student_ptrain_ver {st.student_ptrain_ver} ({config.num_hidden_layers} layers, "
            f"width {config.hidden_size}, {config.num_attention_heads} heads): --d_model/--d_ff/"
            f"--num_attention_heads/--num_hidden_layers do not apply"
        )
    head = head_note(config, flags.classifier.num_class, "--student_ptrain_ver", st.student_ptrain_ver)
    notes += [head] if head else []
    cfg.check_max_seq_len(
        needed(flags.batching.max_seq_len, "--max_seq_len"),
        usable_positions(config),
        f"the student {st.student_ptrain_ver}",
    )
    tokenizer = load_tokenizer(st.student_ptrain_ver, "--student_ptrain_ver")
    return flags.replace(student=shape), tokenizer


def check_initialisation(
    pairs: list[tuple[int, int]], source: str | None, model: str, student: StudentFlags, missing: str
) -> None:
    """Before anything is written: the pretrained model to copy ``pairs`` from exists and fits the student's
    widths (``missing``: the error when no source is recorded)."""
    if not pairs:
        return
    if not source:
        raise UserError(missing)
    check_copyable(load_pretrained_config(source, model), student.d_model, student.d_ff, student.init_attn_only)


def _student(
    flags: Flags, *, vocab_size: int, max_positions: int, source: str | None, pairs: list[tuple[int, int]]
) -> StudentModel:
    st = flags.student
    return StudentModel(
        family=flags.experiment.model,
        num_class=needed(flags.classifier.num_class, "--num_class"),
        dropout=flags.classifier.dropout,
        d_model=st.d_model,
        d_ff=st.d_ff,
        d_emb=st.d_emb,
        num_attention_heads=st.num_attention_heads,
        num_hidden_layers=st.num_hidden_layers,
        type_vocab_size=st.type_vocab_size,
        vocab_size=vocab_size,
        max_positions=max_positions,
        pretrained=st.student_ptrain_ver,
        init_source=source if pairs else None,
        init_pairs=tuple(pairs),
        init_attn_only=st.init_attn_only,
        init_embeddings=st.init_embeddings,
    )


# -- offline distillation ------------------------------------------------------------------------------------
def plan_offline_distill(flags: Flags) -> RunPlan:
    """``run_fine_tune_distill.py``: a student learns from a logits data set (``--dataset NAME[:split]``); the
    teacher's logits travel in the batch."""
    data_root, task, exp = _task_and_folder(flags)
    evaluation = _evaluation(flags, task, data_root)
    e = flags.experiment
    dataset = needed(e.dataset, "--dataset")
    logits = read_logits(data_root, dataset, e.task)
    meta = logits.meta
    task.check_not_diagnostic(
        str(meta.get("split")), f"--dataset {dataset}: the logits data set's split", "training data"
    )  # a set made before the diagnostics were refused as one
    task.check_trained_labels(meta, f"the logits data set {dataset!r}")
    check_teacher_unchanged(meta, exp.root, dataset)
    classes = logits.logits.shape[1]
    if flags.classifier.num_class is None:  # resolved from the logits data set, recorded in config.json
        if classes != task.num_class:
            raise UserError(f"the logits data set {dataset!r} has {classes} classes, {e.task} has {task.num_class}")
        flags = flags.replace(classifier={"num_class": classes})
    elif flags.classifier.num_class != classes:
        raise UserError(f"--num_class {flags.classifier.num_class}: the logits data set has {classes} classes")
    # the student: built from its flags with the logits set's tokenizer (of any family: the teacher's tokenizer
    # only turns text into ids), or --student_ptrain_ver with its own tokenizer (logits are per row, so any
    # tokenisation learns from them)
    notes: list[str] = []
    flags, student_tokenizer = resolve_pretrained_student(flags, notes)
    st = flags.student
    max_examples = flags.paths.max_examples
    examples = logits.examples[:max_examples] if max_examples else logits.examples
    flags, schedule = resolve_schedule(flags, len(examples))  # (every row trains: offline KD drops none)
    notes += [schedule] if schedule else []
    max_seq_len = needed(flags.batching.max_seq_len, "--max_seq_len")
    max_positions: int = (
        max(512, max_seq_len) if meta.get("max_position_embeddings") is None else meta["max_position_embeddings"]
    )
    if student_tokenizer is None:  # a pretrained student's positions were checked by resolve_pretrained_student
        cfg.check_max_seq_len(max_seq_len, max_positions, "the student (teacher's position table)")
    record = _record(
        flags,
        task,
        ptrain_ver=meta.get("ptrain_ver"),
        teacher_experiment=meta.get("teacher_experiment"),
        teacher_checkpoint=meta.get("checkpoint"),
        logits_split=meta.get("split"),
    )
    tokenizer = student_tokenizer or load_tokenizer(logits.tokenizer_dir)
    cfg.check_room_for_text(max_seq_len, tokenizer)
    source = meta.get("ptrain_ver")
    if st.init_embeddings and st.init_start is None:
        raise UserError("--init_embeddings belongs to the layer initialisation: give --init_start/--init_end too")
    pairs: list[tuple[int, int]] = []
    if st.init_start is not None:  # checked (and the pretrained folder found) before anything is written
        if not source:
            raise UserError("--init_start: the logits data set records no pretrained teacher (ptrain_ver) to copy from")
        pre_config = load_pretrained_config(source, e.model)
        layers = teacher_layer_map(
            st.init_start,
            needed(st.init_end, "--init_end"),
            st.init_step,
            st.num_hidden_layers,
            pre_config.num_hidden_layers,
        )
        pairs = list(enumerate(layers, 1))
        check_copyable(pre_config, st.d_model, st.d_ff, st.init_attn_only)
    offline = get_method("offline_logits_kd")
    method = offline.build(method_settings(flags, task, offline))
    train = Split(dataset, logits.data_file, meta["logits_sha256"], examples)
    inputs = _inputs(
        task,
        (train.file, train.sha256),
        evaluation,
        weight_file_hashes(source) if pairs else {},
        weight_file_hashes(st.student_ptrain_ver) if st.student_ptrain_ver else {},
    )
    student = _student(
        flags,
        vocab_size=meta.get("vocab_size") or len(tokenizer),
        max_positions=max_positions,
        source=source,
        pairs=pairs,
    )
    return _plan(
        flags,
        data_root=data_root,
        task=task,
        exp=exp,
        train=train,
        tokenizer=tokenizer,
        max_seq_len=max_seq_len,
        model=student,
        method=method,
        record=record,
        inputs=inputs,
        evaluation=evaluation,
        teacher_logits=logits.logits[: len(examples)],
        notes=tuple(notes),
        tag_split=str(meta.get("split") or task.train_split),
    )  # the split the set's rows are, not its name


# -- online distillation -------------------------------------------------------------------------------------
def resolve_from_teacher(flags: Flags, teacher: Teacher, task: Task) -> Flags:
    """The flags with max_seq_len, num_class and the training split filled in from the teacher's config where
    not given (a Hugging Face teacher records none: --max_seq_len is then required); a num_class other than the
    teacher's is an error."""
    rec = teacher.record
    num_class = flags.classifier.num_class
    if num_class is None:
        num_class = rec.get("num_class", teacher.hf_config.num_labels)
    elif num_class != teacher.hf_config.num_labels:
        raise UserError(
            f"--num_class {num_class}: the teacher {teacher.name} has {teacher.hf_config.num_labels} classes"
        )
    max_seq_len = flags.batching.max_seq_len or rec.get("max_seq_len")
    if max_seq_len is None:
        raise UserError(
            f"--teacher_hf {teacher.name!r}: give --max_seq_len (a teacher fine-tuned elsewhere records none)"
        )
    dataset = flags.experiment.dataset or rec.get("dataset") or task.train_split
    return flags.replace(
        classifier={"num_class": num_class}, batching={"max_seq_len": max_seq_len}, experiment={"dataset": dataset}
    )


def check_shapes(flags: Flags, teacher: Teacher, method_cls: type[Method]) -> None:
    """The student has at most the teacher's layers, and divides them for the methods that skip L_t / L_s
    teacher layers exactly (LAD-NO, partial LAD; the others spread ceil(j L_t / L_s)); widths may differ (a learned
    projection, models/projection.py)."""
    st = flags.student
    if st.num_hidden_layers > teacher.num_layers:
        raise UserError(f"--num_hidden_layers {st.num_hidden_layers} exceeds the teacher's {teacher.num_layers} layers")
    if method_cls.needs_layer_multiple and teacher.num_layers % st.num_hidden_layers:
        raise UserError(
            f"--num_hidden_layers {st.num_hidden_layers}: the teacher's {teacher.num_layers} layers are "
            f"not a multiple of the student's"
        )


def _recipe(flags: Flags) -> Recipe | None:
    """``--recipe FILE``, read once (its teachers are opened by the plan, its terms built into the method)."""
    path = flags.group(RecipeFlags).recipe if flags.has("recipe") else None
    return None if path is None else load_recipe(Path(path))


def _base_method(recipe: Recipe | None) -> type[Method] | None:
    """The registered online method a recipe's ``method:`` names (not a recipe); refused in one line otherwise.
    None: no recipe, or one without ``method:``."""
    if recipe is None or recipe.method is None:
        return None
    online = extendable_methods()
    if recipe.method not in online:
        raise UserError(
            f"recipe {recipe.path}: method: {recipe.method!r} is not a distillation method terms can be "
            f"added to; {did_you_mean(recipe.method, online)}methods: {', '.join(online)}"
        )
    return get_method(recipe.method)


def open_recipe_teachers(recipe: Recipe, exp_root: Path, task: Task, data_root: Path) -> Teachers:
    """The teachers a recipe names (``teachers:``), each opened and checked as ``--teacher_exp``/``--teacher_hf``
    opens one (``ckpt: last``: its newest checkpoint); a refusal names the recipe's entry."""
    members = []
    for i, spec in enumerate(recipe.teachers):
        try:
            if spec.hf is not None:
                member = open_hf_teacher(spec.hf, task, None)
            else:
                experiment, model, ckpt = spec.experiment, spec.model, spec.ckpt
                # (the format reads experiment, model and ckpt for every teacher without hf:)
                assert experiment is not None and model is not None and ckpt is not None
                if ckpt == "last":
                    steps = ExperimentDir.of(exp_root, experiment, model, task.name, "--teacher_exp").checkpoints()
                    ckpt = max(steps) if steps else 0  # none: open_teacher names what is missing
                member = open_teacher(exp_root, experiment, model, task.name, ckpt, choose=(task, data_root))
        except UserError as e:
            raise UserError(f"recipe {recipe.path}: teachers[{i}] ({spec.name}): {e}") from None
        members.append((spec.name, member, spec.weight))
    return Teachers(tuple(members))


def check_teacher_set(
    teachers: Teachers, task: Task, max_seq_len: int, examples: list[Example], recipe_path: str
) -> None:
    """Every teacher of a set after the primary (the first, checked as the run's one teacher is) reads the same
    batches as the primary: the same task and classes, room for ``max_seq_len`` positions, and the primary's token
    ids for the run's text (compared as the student's tokenisation is)."""
    (first, primary, _), *others = teachers.members
    for i, (name, member, _) in enumerate(others, 1):
        where = f"recipe {recipe_path}: teachers[{i}] ({name})"
        try:
            task.check_trained_labels(member.record, f"the teacher {member.name}")
            if task.name != member.record.get("task", task.name):
                raise UserError(f"it was fine-tuned on {member.record.get('task')}, the run's task is {task.name}")
            if member.hf_config.num_labels != primary.hf_config.num_labels:
                raise UserError(f"{member.hf_config.num_labels} outputs; {first} has {primary.hf_config.num_labels}")
            cfg.check_max_seq_len(max_seq_len, usable_positions(member.hf_config), f"the teacher {member.name}")
        except UserError as e:
            raise UserError(f"{where}: {e}") from None
        try:
            check_same_tokenisation(primary.tokenizer, member.tokenizer, examples, first, name)
        except UserError:
            raise UserError(
                f"{where}: tokenises the run's text differently from {first}: the teachers read the "
                f"same token ids (use teachers of one tokenizer)"
            ) from None


def open_any_teacher(flags: Flags, exp_root: Path, task: Task, data_root: Path | None = None) -> Teacher:
    """``--teacher_exp``/``--tckpt`` (a toolkit experiment; ``--tckpt best`` chosen by its evaluation of the task's
    dev split under ``data_root``) or ``--teacher_hf`` (a Hugging Face classifier)."""
    t, e = flags.teacher, flags.experiment
    if t.teacher_hf is not None:
        return open_hf_teacher(t.teacher_hf, task, t.teacher_label_map)
    experiment, ckpt = t.teacher_exp, t.tckpt
    if experiment is None or ckpt is None:  # (refused as the flags are parsed: TeacherFlags)
        raise UserError("the teacher: give --teacher_exp and --tckpt, or --teacher_hf")
    return open_teacher(exp_root, experiment, t.tmodel, e.task, ckpt, choose=(task, data_root))


def dev_split(task: Task) -> str | None:
    """The task's first labelled split other than the training split (val for BoolQ, dev for QQP)."""
    for split in task.splits:
        if split in task.labelled and split != task.train_split:
            return split
    return None


def _layer_map(flags: Flags, task: Task, data_root: Path, method: Method, notes: list[str]) -> LayerMapPlan | None:
    """The heat-map's dev rows (the first ``--map_examples``), parsed before anything is written; none without a
    dev split (a note says so) or when the method draws no map."""
    lw, caption = flags.layerwise, method.map_caption
    if not (lw.map_examples and lw.mu and caption):
        return None
    split = dev_split(task)
    path = task.path(data_root, split) if split else None
    if split is None or path is None or not path.is_file():
        notes.append(f"no {split or 'dev'} split at {path}: no layer-contribution map")
        return None
    return LayerMapPlan(split, task.load(data_root, split, lw.map_examples), caption)


def plan_online_distill(flags: Flags, method_name: str) -> RunPlan:
    """A student beside its fine-tuned teacher, distilled with the registered method ``method_name``; max_seq_len,
    num_class and the training split come from the teacher's config unless given."""
    method_cls = get_method(method_name)
    data_root, exp_root = roots(flags.paths.data_root, flags.paths.exp_root)
    e, t = flags.experiment, flags.teacher
    task = get_task(e.task, data_root)
    recipe = _recipe(flags)
    # a recipe's teachers (several: run as one set; the first, the primary, decides what one teacher decides)
    teachers = open_recipe_teachers(recipe, exp_root, task, data_root) if recipe and recipe.teachers else None
    teacher = teachers.primary if teachers else open_any_teacher(flags, exp_root, task, data_root)
    # a recipe's method: NAME: the built-in method its terms are added to (its class decides the layer shapes, the
    # pretrained projection, the schedule)
    base_cls = _base_method(recipe)
    task.check_trained_labels(teacher.record, f"the teacher {teacher.name}")
    flags = resolve_from_teacher(flags, teacher, task)
    notes: list[str] = []
    if t.tckpt == "best" and teachers is None:  # the student's config.json records the step it resolved to
        flags = flags.replace(teacher={"tckpt": teacher.step})
        notes.append(f"--tckpt best: {teacher.name} model-{teacher.step}.pt, its best checkpoint on {task.dev_split}")
    flags, student_tokenizer = resolve_pretrained_student(flags, notes)
    e, st = flags.experiment, flags.student
    data_root, task, exp = _task_and_folder(flags, task)
    evaluation = _evaluation(flags, task, data_root)
    if task.name != teacher.record.get("task", task.name):
        raise UserError(f"--task {e.task}: the teacher was fine-tuned on {teacher.record.get('task')}")
    max_seq_len = needed(flags.batching.max_seq_len, "--max_seq_len")
    cfg.check_max_seq_len(max_seq_len, usable_positions(teacher.hf_config), f"the teacher {teacher.name}")
    cfg.check_room_for_text(max_seq_len, teacher.tokenizer)
    check_shapes(flags, teacher, base_cls or method_cls)
    student_indices = flags.group(ProbingFlags).student_indices if flags.has("probing") else None
    if student_indices is not None:
        given = parse_indices(student_indices, "--student_indices")
        if given != list(range(1, st.num_hidden_layers + 1)):
            notes.insert(
                0,
                f"--student_indices {student_indices} is ignored by partial LAD: every student layer learns",
            )
    shape = TeacherShape(teacher.num_layers, teacher.hidden_size, teacher.num_heads)
    shapes = (
        {}
        if teachers is None
        else {name: TeacherShape(m.num_layers, m.hidden_size, m.num_heads) for name, m, _ in teachers.members}
    )
    projection = student_projection(flags, base_cls or method_cls)
    train = training_split(task, data_root, needed(e.dataset, "--dataset"), flags.paths.max_examples)
    if teachers is not None and recipe is not None:
        check_teacher_set(teachers, task, max_seq_len, train.examples, str(recipe.path))
    # its mapping (and a pretrained student's projection) checked here, before any write; the schedule in epochs
    # resolved for the method's epochs (the gates' and the projection's follow the student's)

    def build(f: Flags, legacy: dict[str, Any] | None = None) -> Method:
        base = (
            None if base_cls is None else base_cls.build(method_settings(f, task, base_cls, shape, legacy, projection))
        )
        return method_cls.build(method_settings(f, task, method_cls, shape, legacy, projection, shapes, recipe, base))

    flags, method, schedule = _schedule_and_method(flags, len(train.examples), build)
    notes += [schedule] if schedule else []
    for _, member, _ in teachers.members if teachers is not None else ((None, teacher, None),):
        method.check_models(member.hf_config, student_family=e.model)
    if student_tokenizer is not None:  # token-level losses need one tokenisation
        check_same_tokenisation(
            teacher.tokenizer, student_tokenizer, train.examples, teacher.name, str(st.student_ptrain_ver)
        )
    ptrain_ver = teacher.record.get("ptrain_ver")
    init_range = None if st.init_start is None else (st.init_start, needed(st.init_end, "--init_end"), st.init_step)
    pairs = method.init_pairs(init_range, st.student_ptrain_ver is not None)  # checked below, before any write
    if pairs and teacher.hf_config.model_type != e.model:
        if st.init_start is not None:
            raise UserError(
                f"--init_start: the teacher's pretrained layers are {teacher.hf_config.model_type!r} "
                f"layers, the student a {e.model!r} model"
            )
        notes.append(
            f"the student ({e.model}) cannot take the {teacher.hf_config.model_type} teacher's pretrained "
            f"layers: they start random (--student_ptrain_ver gives a pretrained student)"
        )
        pairs = []
    if pairs and not ptrain_ver and st.init_start is None:
        notes.append(
            f"{teacher.name} records no pretrained model (ptrain_ver) to copy the student's layers from: "
            f"they start random (--student_ptrain_ver gives a pretrained student)"
        )
        pairs = []
    if (
        method.needs_projection
        and st.d_model != teacher.hidden_size
        and st.student_ptrain_ver is None
        and st.init_start is None
    ):
        notes.append(
            f"the student's width {st.d_model} differs from the teacher's {teacher.hidden_size}: its layers "
            f"start random (no teacher layer fits), and its hidden states reach the teacher's width through a "
            f"learned projection"
        )
    check_initialisation(
        pairs,
        ptrain_ver,
        teacher.hf_config.model_type,
        st,
        f"{teacher.name}: no ptrain_ver recorded to initialise the student from (give "
        f"--student_ptrain_ver, or a student of the teacher's family started from --init_start)",
    )
    gate_device_id = flags.group(GateFlags).gate_device_id if flags.has("gate") else None
    for flag_name, device_id in (("--tdevice_id", t.tdevice_id), ("--gate_device_id", gate_device_id)):
        # a CUDA index (or, under torchrun, a per-rank slot) the machine lacks: refused before anything is written
        resolve_placement(device_id, flag_name, None, flags.device.device_id, quiet=True)
    record = _record(
        flags,
        task,
        method=method.name,
        ptrain_ver=ptrain_ver,
        teacher_experiment=teacher.name,
        teacher_checkpoint=teacher.checkpoint_name(),
        teacher_layers=teacher.num_layers,
        teacher_label_order=teacher.label_order,
        hidden_mapping=method.describe_mapping(),
        **method.record(),
    )
    if teachers is not None:  # each teacher's weights as resolved (ckpt best / last: the step)
        record["teachers"] = [
            {"name": name, "checkpoint": m.checkpoint_name(), "layers": m.num_layers, "weight": weight}
            for name, m, weight in teachers.members
        ]
    if t.teacher_hf is not None:
        record["tmodel"] = teacher.hf_config.model_type
    legacy = _legacy(exp, record, flags.rerun if flags.has("rerun") else None)
    if legacy:  # a run started before a fidelity fix: its method keeps the rule it started with
        method = build(flags, legacy)
        record = dict(record, **method.record())
    inputs = _inputs(
        task,
        (train.file, train.sha256),
        evaluation,
        (teachers or teacher).input_hashes(),
        weight_file_hashes(ptrain_ver) if pairs else {},
        weight_file_hashes(st.student_ptrain_ver) if st.student_ptrain_ver else {},
    )
    student = _student(
        flags,
        vocab_size=teacher.hf_config.vocab_size,
        max_positions=teacher.hf_config.max_position_embeddings,
        source=ptrain_ver,
        pairs=pairs,
    )
    notes += method.notes()
    layer_map = _layer_map(flags, task, data_root, method, notes)
    return _plan(
        flags,
        data_root=data_root,
        task=task,
        exp=exp,
        train=train,
        tokenizer=student_tokenizer or teacher.tokenizer,  # the same tokenisation (checked above)
        max_seq_len=max_seq_len,
        model=student,
        method=method,
        record=record,
        inputs=inputs,
        evaluation=evaluation,
        devices=Devices.of(flags.device, t.tdevice_id, gate_device_id),
        teacher=teachers or teacher,
        layer_map=layer_map,
        notes=tuple(notes),
        legacy=legacy,
    )
