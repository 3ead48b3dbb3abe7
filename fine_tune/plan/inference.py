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

import importlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UserError, closest_name
from ..experiment import ExperimentDir, check_name, default_data_root, default_exp_root, roots
from ..outputs import check_folder_output, check_name_length, check_outputs, out_file, out_folder
from ..selection import Rule, parse_ckpt
from ..settings import Flags, ResultsFlags, needed
from ..tasks import TASKS, Task, get_task
from .types import (
    CheckpointChoice,
    Devices,
    EvalPlan,
    ExportPlan,
    ForeignTeacher,
    LogitsPlan,
    PredictionPlan,
    ResultsPlan,
    SubmissionPlan,
    TrainedExperiment,
)

if TYPE_CHECKING:  # reporting (and its trackers) is imported where it is used
    from ..reporting import Reporting

# -- what the planners check and name for the scripts that use a trained experiment ----------------------------
PACKAGES = ("onnx", "onnxruntime")  # what --format onnx needs (fine_tune/onnx_export.py)


def check_packages() -> None:
    """``--format onnx`` needs onnx and onnxruntime; refused (one line) before anything is read or written."""
    missing = []
    for name in PACKAGES:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise UserError(
            f"--format onnx needs the Python package(s) {', '.join(missing)}: pip install {' '.join(missing)}"
        )


def parse_use(values: list[str] | None) -> dict[str, str]:
    """``--use TASK=FOLDER ...`` -> {task: folder name}."""
    out = {}
    for item in values or []:
        task, eq, folder = item.partition("=")
        if not eq or task not in TASKS or not folder:
            meant = closest_name(task, TASKS) if eq and folder else None
            hint = f"did you mean {meant}={folder}? " if meant else ""
            raise UserError(f"--use {item!r}: {hint}expected TASK=EXPERIMENT_FOLDER with a task of {', '.join(TASKS)}")
        out[task] = check_name(folder, "--use")
    return out


def output_paths(out: Path) -> dict[str, Path]:
    """The files of one results_table.py run: the markdown ``--out`` and, beside it, ``<out without .md>.csv``,
    ``.json``, ``-pareto.png``/``.json`` (``--plot``), ``-curves.png``/``.json`` (``--curves``)."""
    base = out.with_suffix("") if out.suffix == ".md" else out

    def named(tail: str) -> Path:
        return base.with_name(base.name + tail)

    return {
        "md": out,
        "csv": named(".csv"),
        "json": named(".json"),
        "pareto_png": named("-pareto.png"),
        "pareto_json": named("-pareto.json"),
        "curves_png": named("-curves.png"),
        "curves_json": named("-curves.json"),
    }


def _trained_experiment(flags: Flags, require: bool = True) -> TrainedExperiment:
    """The task (once), the split of ``--dataset`` checked, the experiment folder named (and ``require``: holding a
    config.json)."""
    e = flags.experiment
    data_root, exp_root = roots(flags.paths.data_root, flags.paths.exp_root)
    task = get_task(e.task, data_root)
    task.check_split(needed(e.dataset, "--dataset"))
    return _named(flags, data_root, exp_root, task, require)


def _named(flags: Flags, data_root: Path, exp_root: Path, task: Task, require: bool) -> TrainedExperiment:
    e = flags.experiment
    exp = ExperimentDir.of(exp_root, e.experiment, e.model, e.task)
    if require:
        exp.require()
    return TrainedExperiment(data_root, task, exp, e.experiment, e.model)


def _checkpoint_choice(flags: Flags, task: Task) -> CheckpointChoice:
    """``--ckpt`` (a step, ``last`` / not given, ``best``) and ``--select_on``."""
    c = flags.checkpoint
    ckpt = parse_ckpt(str(c.ckpt)) if c.ckpt is not None else None
    select_on = c.select_on or task.dev_split
    task.check_split(select_on, "--select_on")
    task.check_not_diagnostic(select_on, "--select_on", "the split that chooses a checkpoint")
    return CheckpointChoice(ckpt, select_on)


def plan_eval(flags: Flags) -> EvalPlan:
    target = _trained_experiment(flags)
    split = needed(flags.experiment.dataset, "--dataset")
    if not target.task.has_labels(split):
        why = target.task.unlabelled_why.get(split)
        raise UserError(
            f"--dataset {split!r} has no labels to evaluate against: {why}"
            if why
            else f"--dataset {split!r} has no labels to evaluate against; use generate_test_prediction.py for {split}"
        )
    return EvalPlan(
        target,
        split,
        flags.paths.max_examples,
        flags.sweep.ckpt,
        flags.sweep.save_predictions,
        flags.inference.batch_size,
        Devices.of(flags.device),
        _eval_reporting(flags, target),
    )


def _eval_reporting(flags: Flags, target: TrainedExperiment) -> Reporting:
    """``run_fine_tune_eval.py --report_to``: as given, else where the run reported (its config.json's
    ``report_to``; tensorboard for a run that records none), its trackers' packages checked."""
    from ..config import load_config
    from ..reporting import resolve_reporting

    value, source = flags.reporting.report_to, ""
    if value is None:
        recorded = load_config(target.exp.config_path).get("report_to")
        value = recorded if recorded is not None else ("tensorboard",)
        source = f" (the run's, {target.exp.config_path})" if recorded is not None else ""
    return resolve_reporting(value, target.exp, target.task.name, job="eval", source=source)


def prediction_path(exp: ExperimentDir, task: Task, split: str, max_examples: int | None) -> Path:
    """Where ``generate_test_prediction.py`` writes: the split's official submission file name in the experiment
    folder (``BoolQ.jsonl``); with ``--max_examples N`` never that name but ``<name>.partial-N.<ext>``
    (``BoolQ.partial-5.jsonl``), so a partial file never stands in for the whole split (make_submission.py takes
    official names only)."""
    name = Path(task.submission_name(split))
    if max_examples is not None:
        name = name.with_name(f"{name.stem}.partial-{max_examples}{name.suffix}")
    return exp.path / name.name


PREDICT_FILE_COMMAND = "generate_test_prediction.py --predict_file"  # owner of its files (fine_tune/outputs.py)
TOOLKIT_FOLDERS = (
    ("meta.json", "a logits data set"),
    ("export.json", "an export"),
    ("config.json", "an experiment folder"),
)  # folders the toolkit writes whole: their marks


def predict_file_output(source: Path, given: str | None) -> Path:
    """Where ``--predict_file``'s predictions go: ``--out``, else ``<stem>.predictions.<ext>`` beside the file."""
    return out_file(given, "--out", source.with_name(f"{source.stem}.predictions{source.suffix}"))


def _plan_file_prediction(flags: Flags, target: TrainedExperiment) -> PredictionPlan:
    """``--predict_file FILE [--out OUT]``: every check of the two paths before anything is read or written. The
    file: an existing, readable .csv, .tsv or .jsonl file (its rows are checked as they are read). The output: a
    .csv, .tsv or .jsonl name that is not the file itself, not one of the task's data files, not inside a folder
    the toolkit writes whole (an experiment, a logits data set, an export), and not a file this option did not
    write (unless ``--overwrite``; the owner is ``--predict_file``'s own, so a submission file is never replaced)."""
    from ..settings import PREDICTION_FORMATS

    p, task = flags.prediction, target.task
    formats = ", ".join(PREDICTION_FORMATS)
    source = Path(needed(p.predict_file, "--predict_file"))
    if source.suffix.lower() not in PREDICTION_FORMATS:
        raise UserError(f"--predict_file {source}: not a {formats} file (the format is read from the extension)")
    if not source.exists():
        raise UserError(f"--predict_file {source}: no such file")
    if not source.is_file():
        raise UserError(f"--predict_file {source}: not a file")
    try:
        with open(source, "rb"):
            pass
    except OSError as e:
        raise UserError(f"--predict_file {source}: cannot be read ({e.strerror or e})") from None
    if flags.experiment.dataset != "test":  # PredictionExperimentFlags.dataset's default
        raise UserError(f"--dataset {flags.experiment.dataset} and --predict_file {source} name two inputs; give one")
    if flags.paths.max_examples is not None:
        raise UserError(
            f"--max_examples limits a split's rows; --predict_file {source} predicts every row of the "
            f"file (cut the file instead)"
        )
    out = predict_file_output(source, p.out)
    flag = "--out" if p.out is not None else "--predict_file"
    shown = out if p.out is not None else source
    if out.suffix.lower() not in PREDICTION_FORMATS:
        raise UserError(f"--out {out}: not a {formats} name (the format is taken from the extension)")
    if out.resolve() == source.resolve() or (out.exists() and os.path.samefile(out, source)):
        raise UserError(f"{flag} {shown}: the predictions would replace the file they predict; name another --out")
    its = "" if p.out is not None else f"its predictions {out}: "
    for split in task.splits:
        if out.resolve() == task.path(target.data_root, split).resolve():
            raise UserError(
                f"{flag} {shown}: {its}the {task.name} {split} data file; predictions never replace a "
                f"data file: name another --out"
            )
    for mark, what in TOOLKIT_FOLDERS:
        if (out.parent / mark).is_file():
            raise UserError(
                f"{flag} {shown}: {its}{out.parent} is {what} (it holds {mark}), which the toolkit "
                f"writes and checks whole; write the predictions elsewhere (--out)"
            )
    check_outputs([out], PREDICT_FILE_COMMAND, flags.paths.overwrite, flag, shown)
    return PredictionPlan(
        target,
        None,
        None,
        _checkpoint_choice(flags, task),
        flags.inference.batch_size,
        Devices.of(flags.device),
        out,
        predict_file=source,
    )


def plan_prediction(flags: Flags) -> PredictionPlan:
    from ..submission import record_path

    if flags.prediction.predict_file is not None:  # no split: the task need not have a test split
        e = flags.experiment
        data_root, exp_root = roots(flags.paths.data_root, flags.paths.exp_root)
        return _plan_file_prediction(flags, _named(flags, data_root, exp_root, get_task(e.task, data_root), True))
    target = _trained_experiment(flags)
    split, max_examples, overwrite = (
        needed(flags.experiment.dataset, "--dataset"),
        flags.paths.max_examples,
        flags.paths.overwrite,
    )
    out = prediction_path(target.exp, target.task, split, max_examples)
    check_outputs([out, record_path(out)], "generate_test_prediction.py", overwrite)
    return PredictionPlan(
        target,
        split,
        max_examples,
        _checkpoint_choice(flags, target.task),
        flags.inference.batch_size,
        Devices.of(flags.device),
        out,
    )


def plan_gen_logits(flags: Flags) -> LogitsPlan:
    f, dataset = flags.foreign, needed(flags.experiment.dataset, "--dataset")
    if f.teacher_hf is None:
        target = _trained_experiment(flags)
        target.task.check_not_diagnostic(dataset, "--dataset", "a logits data set to train on")
        checkpoint, teacher = _checkpoint_choice(flags, target.task), None
    else:
        e = flags.experiment
        data_root, exp_root = roots(flags.paths.data_root, flags.paths.exp_root)
        task = get_task(e.task, data_root)
        task.check_split(dataset)
        task.check_not_diagnostic(dataset, "--dataset", "a logits data set to train on")
        if flags.checkpoint.ckpt is not None or flags.checkpoint.select_on is not None:
            raise UserError("--ckpt/--select_on choose an experiment's checkpoint; --teacher_hf is the teacher itself")
        target = _named(flags, data_root, exp_root, task, require=False)  # names the data set
        max_seq_len = needed(f.max_seq_len, "--max_seq_len")
        checkpoint, teacher = None, ForeignTeacher(f.teacher_hf, f.teacher_label_map, max_seq_len)
    return LogitsPlan(
        target,
        dataset,
        flags.paths.max_examples,
        checkpoint,
        teacher,
        flags.inference.batch_size,
        Devices.of(flags.device),
        flags.paths.overwrite,
    )


def plan_export(flags: Flags) -> ExportPlan:
    x = flags.export
    target = _trained_experiment(flags)
    checkpoint = _checkpoint_choice(flags, target.task)
    onnx = x.format == "onnx"
    check_split = None
    if onnx:
        check_packages()
        task = target.task
        check_split = task.dev_split  # the rows the ONNX model is checked on
        if check_split not in task.labelled:
            raise UserError(
                f"--format onnx checks the export on the {task.name} split {check_split!r}, which has no labels"
            )
    out = out_folder(x.out, "--out")  # None: in the experiment folder, named after the step (known later)
    if out is not None:
        check_folder_output(out, "export.json", "an export", "--out", flags.paths.overwrite)
    return ExportPlan(
        target, checkpoint, x.format, x.quantize, out, check_split, flags.paths.max_examples, flags.paths.overwrite
    )


def plan_submission(flags: Flags) -> SubmissionPlan:
    s = flags.submission
    exp_root = Path(s.exp_root) if s.exp_root else default_exp_root()
    use = parse_use(list(s.use or []))
    if not exp_root.is_dir():
        raise UserError(f"--exp_root {exp_root}: no such folder")
    out = out_file(s.out, "--out", exp_root / f"{s.benchmark}-submission.zip")
    if out.suffix != ".zip":
        raise UserError(f"--out {out}: the servers take a .zip file")
    check_outputs([out], "make_submission.py", s.overwrite, "--out")
    data_root = Path(s.data_root) if s.data_root else default_data_root()
    return SubmissionPlan(exp_root, s.benchmark, use, out, data_root)


def plan_results(args: ResultsFlags) -> ResultsPlan:
    """``args``: the script's ``ResultsFlags`` group. An unknown task is refused before anything is scanned, an
    output path that cannot be written (or is a file results_table.py did not write: fine_tune/outputs.py) before
    anything is read."""
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
        task.check_not_diagnostic(rule.select_on, "--select_on", "the split that chooses a checkpoint")
    experiments = args.experiments.split(",") if args.experiments else None
    out = out_file(args.out, "--out", exp_root / f"results-{args.task}.md")
    written = (
        ("md", "csv", "json")
        + (("pareto_png", "pareto_json") if args.plot else ())
        + (("curves_png", "curves_json") if args.curves is not None else ())
    )
    paths = {key: path for key, path in output_paths(out).items() if key in written}
    for key, path in paths.items():
        check_name_length(path, "--out", out)
        if path.is_dir():
            raise UserError(
                f"--out {out}: {path} is a folder (--out names the markdown file; the "
                f"{'table' if key == 'md' else 'files beside it'} would be written there)"
            )
    check_outputs(paths.values(), "results_table.py", args.overwrite, "--out", out)
    compare, split = None, None
    if args.compare:
        compare = tuple(args.compare)
        split = args.compare_split or task.dev_split
        task.check_split(split, "--compare_split")
        task.check_not_diagnostic(
            split, "--compare_split", "the split --compare compares on (the table reports it; compare on a dev split)"
        )
    curves = None
    if args.curves is not None:
        curves = tuple(p.strip() for p in args.curves.split(",") if p.strip())
        if not curves:
            raise UserError(
                f"--curves {args.curves!r}: name at least one experiment folder or name (globs, comma-separated)"
            )
    columns = None
    if args.columns is not None:
        columns = tuple(dict.fromkeys(c.strip() for c in args.columns.split(",") if c.strip()))
        if not columns:
            raise UserError(
                f"--columns {args.columns!r}: name at least one column (comma-separated; --columns list names them)"
            )
    return ResultsPlan(
        exp_root,
        task,
        rule,
        splits,
        experiments,
        out,
        paths,
        compare,
        split,
        args.resamples,
        args.bootstrap_seed,
        args.commands,
        args.plot,
        curves,
        data_root,
        columns,
    )
