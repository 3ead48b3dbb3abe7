"""The plans of the scripts that use a trained experiment or the tables: evaluation (``run_fine_tune_eval.py``),
logits (``run_fine_tune_gen_logits.py``), test predictions (``generate_test_prediction.py``), export
(``export_model.py``), the submission zip (``make_submission.py``) and the results table (``results_table.py``).

One planner per script turns its parsed :class:`~fine_tune.settings.Flags` into a frozen plan: the roots, the task
(resolved once: ``get_task(name, data_root)``), the experiment folder, the split(s) (checked), the checkpoint
choice, the batch size and row limit, the device settings (resolved to torch devices only after every input has
been checked, so an error is never preceded by device warnings), the output paths and ``--overwrite``. Every check
of a flag's value runs here, in the order the scripts always ran them, before anything is read beyond the
experiment folder's name and before anything is written; what only the run can check (the experiment's config,
its checkpoints, the data files) is checked as it is read, still before the first write. Below the plan no
function takes the parsed flags: ``run_eval(plan)``, ``run_gen_logits(plan)``, ``run_test_prediction(plan)``
(fine_tune/evaluate.py), ``run_export(plan)`` (fine_tune/export.py), ``run_submission(plan)``
(fine_tune/submission.py), ``run_results(plan)`` (fine_tune/results.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..experiment import ExperimentDir, default_data_root, default_exp_root, roots
from ..selection import Rule, parse_ckpt
from ..tasks import Task, get_task


@dataclass(frozen=True)
class InferenceDevices:
    """``--device_id``/``--num_gpu``/``--amp``/``--amp_dtype`` as given: resolved to a torch device and a
    precision (``LoadedExperiment.resolve_device``) once every input has been checked."""

    device_id: int | None
    num_gpu: int | None
    amp: bool
    amp_dtype: str


@dataclass(frozen=True)
class TrainedExperiment:
    """The experiment a script reads: its folder (named, and for a toolkit experiment required to hold a
    config.json), its task and the data root the task's files live under."""

    data_root: Path
    task: Task
    exp: ExperimentDir
    experiment: str  # --experiment as given (the commands that error lines suggest name it)
    model: str  # --model


@dataclass(frozen=True)
class CheckpointChoice:
    """``--ckpt`` parsed (a step, ``best``, ``last`` or None: the newest checkpoint) and the split that chooses
    ``best`` (``--select_on``, default the task's dev split; checked). The step itself is resolved from the
    experiment folder when the run reads it (``evaluate._checkpoint``)."""

    ckpt: int | str | None
    select_on: str


@dataclass(frozen=True)
class ForeignTeacher:
    """``run_fine_tune_gen_logits.py --teacher_hf``: a classifier fine-tuned elsewhere."""

    source: str  # a Hugging Face folder or hub name
    label_map: str | None  # --teacher_label_map as given (checked when the teacher is opened)
    max_seq_len: int


@dataclass(frozen=True)
class EvalPlan:
    """``run_fine_tune_eval.py``: every checkpoint from ``first_ckpt`` on, on one labelled split."""

    target: TrainedExperiment
    split: str
    max_examples: int | None
    first_ckpt: int
    save_predictions: bool
    batch_size: int
    devices: InferenceDevices


@dataclass(frozen=True)
class PredictionPlan:
    """``generate_test_prediction.py``: one checkpoint's predictions on a split, as the task's submission file."""

    target: TrainedExperiment
    split: str
    max_examples: int | None
    checkpoint: CheckpointChoice
    batch_size: int
    devices: InferenceDevices


@dataclass(frozen=True)
class LogitsPlan:
    """``run_fine_tune_gen_logits.py``: one checkpoint's (or with ``teacher`` a foreign classifier's) logits on a
    split, written as the logits data set named after the experiment."""

    target: TrainedExperiment  # with a foreign teacher: the folder names the data set only (it need not exist)
    split: str
    max_examples: int | None
    checkpoint: CheckpointChoice | None  # None with a foreign teacher
    teacher: ForeignTeacher | None
    batch_size: int
    devices: InferenceDevices
    overwrite: bool


@dataclass(frozen=True)
class ExportPlan:
    """``export_model.py``: one checkpoint as a Hugging Face folder or (``format`` onnx) an ONNX model."""

    target: TrainedExperiment
    checkpoint: CheckpointChoice
    format: str  # hf | onnx
    quantize: str | None  # int8 (onnx only)
    out: Path | None  # None: <experiment folder>/hf-model-<step> (onnx-model-<step>), once the step is known
    check_split: str | None  # onnx: the labelled split the export is checked on (the task's dev split)
    max_examples: int | None  # rows of check_split
    overwrite: bool


@dataclass(frozen=True)
class SubmissionPlan:
    """``make_submission.py``: the benchmark's zip from the experiments under ``exp_root``."""

    exp_root: Path
    benchmark: str
    use: dict  # task -> experiment folder name (--use TASK=FOLDER)
    out: Path
    data_root: Path | None = None  # where each file's split is checked against its record


@dataclass(frozen=True)
class ResultsPlan:
    """``results_table.py``: the table of ``task`` under ``exp_root`` and the files it writes."""

    exp_root: Path
    task: Task
    rule: Rule
    splits: list | None  # reported splits (checked); None: every evaluated labelled split
    experiments: list | None  # --experiments globs; None: every evaluated experiment
    out: Path  # the markdown file; paths: it and the files beside it (results.output_paths)
    paths: dict
    compare: tuple | None  # two experiment folder names
    compare_split: str | None  # with compare: its split (checked)
    resamples: int
    bootstrap_seed: int
    commands: bool
    plot: bool
    curves: tuple | None  # --curves globs (at least one)
    data_root: Path | None = None  # the task's files: each evaluation table is checked against its split's rows


def _devices(device) -> InferenceDevices:
    return InferenceDevices(device.device_id, device.num_gpu, device.amp, device.amp_dtype)


def _trained_experiment(flags, require: bool = True) -> TrainedExperiment:
    """The task (once), the split of ``--dataset`` checked, the experiment folder named (and ``require``: holding a
    config.json)."""
    e = flags.experiment
    data_root, exp_root = roots(flags.paths.data_root, flags.paths.exp_root)
    task = get_task(e.task, data_root)
    task.check_split(e.dataset)
    return _named(flags, data_root, exp_root, task, require)


def _named(flags, data_root: Path, exp_root: Path, task: Task, require: bool) -> TrainedExperiment:
    e = flags.experiment
    exp = ExperimentDir.of(exp_root, e.experiment, e.model, e.task)
    if require:
        exp.require()
    return TrainedExperiment(data_root, task, exp, e.experiment, e.model)


def _checkpoint_choice(flags, task: Task) -> CheckpointChoice:
    """``--ckpt`` (a step, ``last`` / not given, ``best``) and ``--select_on``."""
    c = flags.checkpoint
    ckpt = parse_ckpt(str(c.ckpt)) if c.ckpt is not None else None
    select_on = c.select_on or task.dev_split
    task.check_split(select_on, "--select_on")
    return CheckpointChoice(ckpt, select_on)


def plan_eval(flags) -> EvalPlan:
    target = _trained_experiment(flags)
    split = flags.experiment.dataset
    if split not in target.task.labelled:
        raise UserError(f"--dataset {split!r} has no labels to evaluate against; "
                        f"use generate_test_prediction.py for {split}")
    return EvalPlan(target, split, flags.paths.max_examples, flags.sweep.ckpt, flags.sweep.save_predictions,
                    flags.inference.batch_size, _devices(flags.device))


def plan_prediction(flags) -> PredictionPlan:
    target = _trained_experiment(flags)
    return PredictionPlan(target, flags.experiment.dataset, flags.paths.max_examples,
                          _checkpoint_choice(flags, target.task), flags.inference.batch_size, _devices(flags.device))


def plan_gen_logits(flags) -> LogitsPlan:
    f = flags.foreign
    if f.teacher_hf is None:
        target = _trained_experiment(flags)
        checkpoint, teacher = _checkpoint_choice(flags, target.task), None
    else:
        e = flags.experiment
        data_root, exp_root = roots(flags.paths.data_root, flags.paths.exp_root)
        task = get_task(e.task, data_root)
        task.check_split(e.dataset)
        if flags.checkpoint.ckpt is not None or flags.checkpoint.select_on is not None:
            raise UserError("--ckpt/--select_on choose an experiment's checkpoint; --teacher_hf is the teacher itself")
        target = _named(flags, data_root, exp_root, task, require=False)  # names the data set
        checkpoint, teacher = None, ForeignTeacher(f.teacher_hf, f.teacher_label_map, f.max_seq_len)
    return LogitsPlan(target, flags.experiment.dataset, flags.paths.max_examples, checkpoint, teacher,
                      flags.inference.batch_size, _devices(flags.device), flags.paths.overwrite)


def plan_export(flags) -> ExportPlan:
    x = flags.export
    target = _trained_experiment(flags)
    checkpoint = _checkpoint_choice(flags, target.task)
    onnx = x.format == "onnx"
    check_split = None
    if onnx:
        from ..onnx_export import check_packages

        check_packages()
        task = target.task
        check_split = task.dev_split  # the rows the ONNX model is checked on
        if check_split not in task.labelled:
            raise UserError(f"--format onnx checks the export on the {task.name} split {check_split!r}, which has "
                            f"no labels")
    return ExportPlan(target, checkpoint, x.format, x.quantize, Path(x.out) if x.out else None, check_split,
                      flags.paths.max_examples, flags.paths.overwrite)


def plan_submission(flags) -> SubmissionPlan:
    from ..submission import parse_use

    s = flags.submission
    exp_root = Path(s.exp_root) if s.exp_root else default_exp_root()
    use = parse_use(list(s.use or []))
    if not exp_root.is_dir():
        raise UserError(f"--exp_root {exp_root}: no such folder")
    out = Path(s.out) if s.out else exp_root / f"{s.benchmark}-submission.zip"
    if out.suffix != ".zip":
        raise UserError(f"--out {out}: the servers take a .zip file")
    data_root = Path(s.data_root) if s.data_root else default_data_root()
    return SubmissionPlan(exp_root, s.benchmark, use, out, data_root)


def plan_results(args) -> ResultsPlan:
    """``args``: the script's ``ResultsFlags`` group. An unknown task is refused before anything is scanned, an
    output path that cannot be written before anything is read."""
    from ..io_utils import check_writable
    from ..results import output_paths
    from ..tasks.download import default_data_root

    exp_root = Path(args.exp_root) if args.exp_root else default_exp_root()
    data_root = Path(args.data_root) if args.data_root else default_data_root()
    task = get_task(args.task, data_root)
    rule = Rule(args.rule, args.select_on)
    splits = args.splits.split(",") if args.splits else None
    if splits:
        for s in splits:
            task.check_split(s, "--splits")
    if rule.select_on is not None:
        task.check_split(rule.select_on, "--select_on")
    experiments = args.experiments.split(",") if args.experiments else None
    out = Path(args.out) if args.out else exp_root / f"results-{args.task}.md"
    paths = output_paths(out)
    for key, path in paths.items():
        if path.is_dir():
            raise UserError(f"--out {out}: {path} is a folder (--out names the markdown file; the "
                            f"{'table' if key == 'md' else 'files beside it'} would be written there)")
    check_writable(out.parent, "--out", root=out)
    compare, split = None, None
    if args.compare:
        compare = tuple(args.compare)
        split = args.compare_split or task.dev_split
        task.check_split(split, "--compare_split")
    curves = None
    if args.curves is not None:
        curves = tuple(p.strip() for p in args.curves.split(",") if p.strip())
        if not curves:
            raise UserError(f"--curves {args.curves!r}: name at least one experiment folder or name (globs, "
                            f"comma-separated)")
    return ResultsPlan(exp_root, task, rule, splits, experiments, out, paths, compare, split, args.resamples,
                       args.bootstrap_seed, args.commands, args.plot, curves, data_root)
