"""Everything that runs a trained checkpoint: the evaluation sweep, logits generation and test predictions.

Evaluation runs in length-sorted batches (little padding) and restores file order before anything is
computed or written.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from . import config as cfg
from .batching import Collator, Features, cached_features, sequential_batches, tokenizer_fingerprint
from .engine import distributed
from .engine.allocator import tune_malloc_for_training
from .engine.checkpoint import load_checkpoint_into
from .engine.device import Precision
from .engine.trainer import to_device
from .errors import UserError
from .experiment import ExperimentDir
from .io_utils import (
    TMP_PREFIX,
    atomic_write,
    atomic_write_json,
    atomic_write_text,
    check_writable,
    remove_inside,
    sha256_file,
)
from .locking import lock_folder, releases_locks
from .models.classifier import build_from_config, check_checkpoint, load_model_dir
from .models.forward import forward
from .plan.types import applies_devices
from .progress import progress, say
from .selection import LOSS, best_row, experiment_metric, predictions_path, resolve_ckpt
from .tasks import Task
from .tasks.diagnostics import check_whole_pairs
from .tasks.example import examples_digest
from .tasks.logits import check_logits_target, logits_dir, write_logits

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel

    from .plan.types import CheckpointChoice, Devices, EvalPlan, LogitsPlan, PredictionPlan, TrainedExperiment


@dataclass
class LoadedExperiment:
    exp: ExperimentDir
    config: dict
    model: PreTrainedModel
    tokenizer: Any  # a Hugging Face tokenizer, of the model's family
    task: Task
    device: torch.device | None
    precision: Precision | None
    data_root: Path

    def resolve_device(self, devices: Devices) -> tuple[torch.device, Precision]:
        """After every input has been checked, so an error is never preceded by device warnings. Returns them."""
        self.device, self.precision = device, precision = devices.resolve()
        return device, precision


def open_experiment(target: TrainedExperiment) -> LoadedExperiment:
    """The planned experiment (its split and folder checked by the plan): its config and the labels it was trained
    with checked, the model built from its own config and tokenizer."""
    data_root, task, exp = target.data_root, target.task, target.exp
    config = cfg.load_config(exp.config_path, required=("max_seq_len",))
    task.check_trained_labels(config, str(exp.path))
    model_config, tokenizer = load_model_dir(exp.model_dir)
    model = build_from_config(model_config)
    return LoadedExperiment(exp, config, model, tokenizer, task, None, None, data_root)


def load_split(le: LoadedExperiment, split: str, max_examples: int | None, before_tokenizing=None):
    """Parse a split, then (after ``before_tokenizing(le, path, examples)``, which may refuse) tokenise it through the cache."""
    path = le.task.path(le.data_root, split)
    examples = le.task.load(le.data_root, split, max_examples)
    if before_tokenizing is not None:
        before_tokenizing(le, path, examples)
    features = cached_features(
        le.data_root / "cache", le.tokenizer, examples, le.config["max_seq_len"], regression=le.task.regression
    )
    return path, examples, features


@torch.inference_mode()
def predict_logits(
    model: torch.nn.Module,
    features: Features,
    pad_token_id: int,
    max_seq_len: int,
    batch_size: int,
    device: torch.device,
    precision: Precision,
    desc: str = "predicting",
) -> np.ndarray:
    """Logits of every row, in file order (batches are formed in length order, then un-permuted). Under
    torchrun rank r predicts batches r, r + N, ... and every rank receives all of them: no row twice. A bar
    (``desc``, rows; rank 0's share under torchrun) shows the pass and is cleared when it ends (``leave=False``:
    the command's own line reports it; during training it sits under the training bar, which it leaves as it was)."""
    if device.type == "cpu":
        tune_malloc_for_training()
    model.to(device).eval()
    collator = Collator(features, pad_token_id, max_seq_len, "dynamic")
    # a classifier's config (torch types a Module's attributes as Tensor | Module); it names its classes
    num_labels = cast("PretrainedConfig", model.config).num_labels
    assert num_labels is not None, "a classifier's config names its classes (id2label)"
    out = np.zeros((len(features), num_labels), dtype=np.float32)
    w = distributed.world()
    mine = []
    batches = sequential_batches(len(features), batch_size, features.lengths())[w.rank :: w.size]
    with progress(total=sum(map(len, batches)), desc=desc, unit="rows", leave=False) as bar:
        for rows in batches:
            batch = to_device(collator(rows), device)
            with precision.autocast():
                logits = forward(model, batch, hidden=False).logits
            mine.append((rows, logits.float().cpu().numpy()))
            bar.update(len(rows))
    seen = np.zeros(len(features), dtype=np.int64)
    for rows, part in distributed.gather_batches(mine):
        out[rows] = part
        seen[rows] += 1
    assert (seen == 1).all(), "every row is predicted exactly once"
    return out


def metrics(
    task: Task, labels: np.ndarray, preds: np.ndarray, split: str | None = None, examples=None
) -> dict[str, float]:
    """The metrics (fine_tune/tasks/metrics.py) of ``preds`` against ``labels``: the task's, or ``split``'s (a
    diagnostic's own: ``Task.metrics_for``); ``examples``: the rows, whose groups (AX-g's minimal pairs) the pair
    metrics read."""
    from .tasks.metrics import compute

    groups = None if examples is None else np.asarray([ex.group for ex in examples], dtype=object)
    return compute(task.metrics if split is None else task.metrics_for(split), labels, preds, groups)


def evaluation_loss(task: Task, labels: np.ndarray, logits: np.ndarray) -> float:
    """The evaluation loss (``--metric_for_best loss``), the fine-tuning loss on the split: the mean cross-entropy
    ``-1/n sum_i log softmax(z_i)[y_i]`` of a classification task, the MSE ``1/n sum_i (z_i - y_i)^2`` of a
    regression one (its one output ``z_i``), in float64."""
    z = np.asarray(logits, dtype=np.float64)
    if task.regression:
        return float(np.mean((z[:, 0] - np.asarray(labels, dtype=np.float64)) ** 2))
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-np.mean(log_p[np.arange(len(z)), np.asarray(labels, dtype=np.int64)]))


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def write_predictions(path: Path, examples, logits: np.ndarray, label_names: Sequence[str]) -> None:
    """One row per example: id, gold label, prediction and (classification) the class probabilities. Classes are
    written by the task's label names (Hugging Face's, as its ``run_glue.py`` writes its predictions: QQP
    ``duplicate``, BoolQ ``True``), the probability columns ``prob_<name>`` in the model's output order."""
    if logits.shape[1] == 1:  # regression: the predicted score
        lines = ["idx\tlabel\tprediction"] + [
            f"{ex.idx}\t{'' if ex.label is None else ex.label}\t{float(x[0]):.6f}" for ex, x in zip(examples, logits)
        ]
        atomic_write_text(path, "\n".join(lines) + "\n")
        return
    probs = softmax(logits)
    header = "idx\tlabel\tprediction\t" + "\t".join(f"prob_{name}" for name in label_names)
    lines = [header]
    for ex, p in zip(examples, probs):
        label = "" if ex.label is None else label_names[int(ex.label)]
        lines.append(f"{ex.idx}\t{label}\t{label_names[int(p.argmax())]}\t" + "\t".join(f"{x:.6f}" for x in p))
    atomic_write_text(path, "\n".join(lines) + "\n")


@applies_devices
def run_eval(plan: EvalPlan) -> dict:
    """``run_fine_tune_eval.py``: every checkpoint from ``--ckpt`` on, in step order, on one (labelled) split."""
    le = open_experiment(plan.target)
    split, first, batch_size = plan.split, plan.first_ckpt, plan.batch_size
    steps = [s for s in le.exp.checkpoints() if s >= first]
    if not steps:
        have = ", ".join(map(str, le.exp.checkpoints())) or "none"
        raise UserError(f"no checkpoint at or after --ckpt {first} in {le.exp.path}; checkpoints there: {have}")
    for step in list(steps):  # every checkpoint readable and of this model before anything is written
        if not _still_there(le, step, lambda path: check_checkpoint(le.model.config, path)):
            steps.remove(step)
    check_writable(le.exp.path, "--exp_root", root=le.exp.root)
    check_writable(le.exp.log_dir, "--exp_root", root=le.exp.root)
    pairs = "gender_parity" in le.task.metrics_for(split)

    def whole_pairs(le_, path, rows):  # AX-g: --max_examples keeps both rows of every pair, before any write
        if pairs:
            check_whole_pairs(rows, path, plan.max_examples)

    _, examples, features = load_split(le, split, plan.max_examples, whole_pairs)
    device, precision = le.resolve_device(plan.devices)
    from .engine.reporting import Reporter

    main = distributed.is_main()  # under torchrun every rank predicts its share; rank 0 writes
    # --report_to (default: where the run reported): rank 0's trackers, started before the first checkpoint
    reporter = plan.reporting.open() if plan.reporting is not None else Reporter()
    rows = []
    predictions: dict[str, np.ndarray] = {}
    metric_names = list(le.task.metrics_for(split))
    diagnostic = split in le.task.diagnostics
    print(
        f"{le.exp.name}: {split} ({len(examples)} rows"
        f"{f', {len(examples) // 2} minimal pairs' if pairs else ''}), {len(steps)} checkpoint(s) on {le.device}"
        f"{'; a diagnostic: scored, never choosing a checkpoint' if diagnostic else ''}"
    )
    print("ckpt\t" + "\t".join(metric_names))
    failed = True
    try:
        reporter.start(None)
        reporter.log_params(le.config)
        for step in steps:
            if not _still_there(le, step, lambda path: load_checkpoint_into(le.model, path)):
                continue
            start = time.perf_counter()
            logits = predict_logits(
                le.model,
                features,
                le.tokenizer.pad_token_id,
                le.config["max_seq_len"],
                batch_size,
                device,
                precision,
                desc=f"{split} model-{step}.pt",
            )
            seconds = time.perf_counter() - start
            preds = le.task.predictions(logits)
            predictions[f"pred_{step}"] = preds.astype(np.float32 if le.task.regression else np.int16)
            row = {
                "ckpt": step,
                **metrics(le.task, features.labels, preds, split, examples),
                LOSS: evaluation_loss(le.task, features.labels, logits),
                "examples_per_s": round(len(examples) / max(seconds, 1e-9), 2),
            }
            rows.append(row)
            print(f"{step}\t" + "\t".join(f"{row[m]:.6f}" for m in metric_names), flush=True)
            if not main:
                continue
            # accuracy, f1, mcc, macro_f1, ..., loss: the metrics' names, as the evaluation table names them
            reporter.log_scalars({f"{le.task.name}/{split}/{m}": row[m] for m in (*metric_names, LOSS)}, step)
            if plan.save_predictions:
                write_predictions(
                    le.exp.path / f"predictions-{split}-{step}.tsv", examples, logits, le.task.label_names
                )
        if not rows:
            raise UserError(
                f"every checkpoint of {le.exp.path} from --ckpt {first} on was deleted while this "
                f"evaluation ran; nothing evaluated"
            )
        metric = experiment_metric(le.exp, le.task)
        table = write_eval_table(
            le.exp,
            le.task,
            split,
            examples,
            features.labels,
            rows,
            predictions,
            inference_record(device, precision, batch_size),
            write=main,
            max_examples=plan.max_examples,
            metric_for_best=metric,
        )
        reporter.log_final(best_metrics(f"{le.task.name}/{split}", table))
        failed = False
    finally:
        reporter.close(failed)
    if diagnostic:  # reported at the checkpoint the dev split chooses (results_table.py), never choosing one
        print(
            f"{split} is a diagnostic of {le.task.name}: results_table.py reports it at the checkpoint chosen on "
            f"{le.task.dev_split}"
        )
        return table
    for m in table["best"]:
        print(f"best {m}: {table['best'][m]['value']:.6f} at model-{table['best'][m]['ckpt']}.pt")
    best = table["best"][metric]
    print(
        f"best checkpoint on {split} by {metric} (the experiment's metric for best; ties go to the later "
        f"checkpoint): model-{best['ckpt']}.pt"
    )
    return table


def best_metrics(prefix: str, table: dict) -> dict[str, float]:
    """An evaluation table's final metrics: each metric's best value over the checkpoints and its step, as
    ``{prefix}/best_{metric}`` and ``{prefix}/best_{metric}_step`` (the training's own: Trainer._final_metrics)."""
    out = {}
    for m, best in table["best"].items():
        out[f"{prefix}/best_{m}"] = best["value"]
        out[f"{prefix}/best_{m}_step"] = best["ckpt"]
    return out


def inference_record(device, precision: Precision, batch_size: int) -> dict:
    return {
        "device": str(device),
        "precision": precision.describe(),
        "batch_size": batch_size,
        "note": "median over the checkpoints of rows/s of the forward passes (length-sorted batches), "
        "tokenisation and checkpoint loading excluded",
    }


def write_eval_table(
    exp: ExperimentDir,
    task: Task,
    split: str,
    examples,
    labels,
    rows: list[dict],
    predictions: dict[str, np.ndarray],
    inference: dict,
    write: bool = True,
    selection: str = "best on this split; ties go to the later checkpoint",
    max_examples: int | None = None,
    metric_for_best: str | None = None,
) -> dict:
    """``eval-{split}.json`` (a row of metrics per checkpoint, the best per metric) and its predictions file, as
    ``run_fine_tune_eval.py`` and the evaluation during training write them. ``write=False``: the table only.
    The table records the identity of the rows it was computed on (``examples_sha256``, ``max_examples``): a reader
    choosing a checkpoint by it (``--ckpt best``, results tables) refuses it once the split's rows changed
    (selection.evaluated_rows_changed). A diagnostic's table (SuperGLUE's AX-b, AX-g) holds its own metrics and says
    that it chooses no checkpoint. ``best``: each metric's best row (and the loss's, lowest, where the rows hold
    it); ``metric_for_best``: the one the experiment's best checkpoint is chosen by (selection.experiment_metric).
    """
    metric_names = list(task.metrics_for(split)) + ([LOSS] if all(LOSS in r for r in rows) else [])
    best: dict[str, dict] = {}
    for m in metric_names:
        row = best_row(rows, m)
        assert row is not None, "an evaluation table has rows (run_eval refuses none; training writes at a checkpoint)"
        best[m] = row
    if split in task.diagnostics:
        selection = (
            f"a diagnostic: scored at every checkpoint, never choosing one (results tables report it at the "
            f"checkpoint chosen on {task.dev_split}); best: each metric's best row, for reference"
        )
    table = {
        "experiment": exp.name,
        "task": task.name,
        "split": split,
        "num_rows": len(examples),
        "examples_sha256": examples_digest(examples),
        "max_examples": max_examples,
        "rows": rows,
        "best": {m: {"ckpt": best[m]["ckpt"], "value": best[m][m]} for m in metric_names},
        "selection": selection,
        "metric_for_best": metric_for_best or task.main_metric,
        "inference": {"examples_per_s": statistics.median(r["examples_per_s"] for r in rows), **inference},
    }
    if not write:
        return table
    # the predictions first, then the table naming their sha256: a reader never combines the two of different
    # evaluations (selection.read_predictions checks it)
    with atomic_write(predictions_path(exp, split)) as f:
        np.savez(
            f,
            idx=np.asarray([ex.idx for ex in examples], dtype=np.int64),
            labels=np.asarray(labels, dtype=np.float32 if task.regression else np.int16),
            **predictions,  # type: ignore[arg-type]  # pred_<step> arrays: never numpy's allow_pickle flag
        )
    table["predictions_sha256"] = sha256_file(predictions_path(exp, split))
    atomic_write_json(exp.path / f"eval-{split}.json", table)
    return table


class TrainingEvaluator:
    """The evaluation during training of one run (``--eval_dataset``): the student's metrics on the split (every
    rank predicts its share, each row once: :func:`predict_logits`), and at checkpoints the same evaluation table
    ``run_fine_tune_eval.py`` writes (``eval-{split}.json`` and its predictions), so ``--ckpt best`` and
    ``results_table.py`` find the best checkpoint. An engine :class:`~fine_tune.engine.evaluation.Evaluator`."""

    def __init__(
        self,
        exp: ExperimentDir,
        task: Task,
        split: str,
        examples,
        features: Features,
        pad_token_id: int,
        max_seq_len: int,
        batch_size: int,
        device,
        precision: Precision,
        every: int | None,
        patience: int | None,
        max_examples: int | None = None,
        metric: str | None = None,
    ):
        from .engine.evaluation import EvalSettings

        self.exp, self.task, self.split, self.examples, self.features = exp, task, split, examples, features
        self.pad_token_id, self.max_seq_len, self.batch_size = pad_token_id, max_seq_len, batch_size
        self.device, self.precision, self.max_examples = device, precision, max_examples
        self.settings = EvalSettings(
            split=split,
            every=every,
            patience=patience,
            metric=metric or task.main_metric,
            tag_prefix=f"{task.name}/{split}",
            logged=(*task.metrics, LOSS),
        )
        self.predictions: dict[int, np.ndarray] = {}  # step -> predictions, of the checkpoints and the latest

    def evaluate(self, model: torch.nn.Module, step: int) -> dict[str, float]:
        start = time.perf_counter()
        logits = predict_logits(
            model,
            self.features,
            self.pad_token_id,
            self.max_seq_len,
            self.batch_size,
            self.device,
            self.precision,
            desc=f"evaluating {self.split} at step {step}",
        )
        seconds = time.perf_counter() - start
        preds = self.task.predictions(logits)
        self.predictions[step] = preds.astype(np.float32 if self.task.regression else np.int16)
        labels = self.features.labels
        assert labels is not None, "--eval_dataset is a labelled split (checked by the plan)"
        return {
            **metrics(self.task, labels, preds, self.split, self.examples),
            LOSS: evaluation_loss(self.task, labels, logits),
            "examples_per_s": round(len(self.examples) / max(seconds, 1e-9), 2),
        }

    def _keep(self, steps: list[int]) -> None:
        self.predictions = {s: p for s, p in self.predictions.items() if s in steps}

    def write_table(self, rows: list[dict]) -> None:
        ckpt_rows = [
            {"ckpt": r["step"], **{k: v for k, v in r.items() if k not in ("step", "checkpoint")}}
            for r in rows
            if r["checkpoint"]
        ]
        self._keep([r["ckpt"] for r in ckpt_rows])
        write_eval_table(
            self.exp,
            self.task,
            self.split,
            self.examples,
            self.features.labels,
            ckpt_rows,
            {f"pred_{s}": p for s, p in sorted(self.predictions.items())},
            inference_record(self.device, self.precision, self.batch_size),
            selection="best on this split; ties go to the later checkpoint (evaluated during training)",
            max_examples=self.max_examples,
            metric_for_best=self.settings.metric,
        )

    def state_dict(self) -> dict:
        return {"predictions": {str(s): torch.from_numpy(p.copy()) for s, p in self.predictions.items()}}

    def load_state_dict(self, state: dict, steps: list[int]) -> None:
        self.predictions = {int(s): t.numpy() for s, t in state["predictions"].items() if int(s) in steps}


def _still_there(le: LoadedExperiment, step: int, read) -> bool:
    """``read(path)`` checkpoint ``step``; False (with a note) when it was deleted meanwhile, as a running training
    run with ``--save_total_limit`` does to its older checkpoints; any other failure is an error."""
    path = le.exp.checkpoint_path(step)
    try:
        read(path)
    except UserError:
        if path.exists():
            raise
        say(
            f"note: {path.name} was deleted while this evaluation ran (--save_total_limit of a running training "
            f"run?); skipped"
        )
        return False
    return True


def _checkpoint(le: LoadedExperiment, target: TrainedExperiment, choice: CheckpointChoice) -> tuple[int, str]:
    """The planned ``--ckpt``: a step, ``last`` / not given (the newest checkpoint) or ``best`` (on
    ``--select_on``), found in the experiment folder. Returns the step and how it was chosen."""
    # best: chosen by an evaluation of the rows the split holds now, or refused
    return resolve_ckpt(
        le.exp,
        choice.ckpt,
        choice.select_on,
        task=le.task,
        model=target.model,
        experiment=target.experiment,
        data_root=le.data_root,
    )


@dataclass
class CheckpointLogits:
    le: LoadedExperiment
    step: int | str  # the checkpoint's step (a --teacher_hf source as given)
    label: str  # how the checkpoint was chosen ("model-4.pt (best val accuracy)")
    path: Path  # the split's data file
    examples: list
    features: Features
    logits: np.ndarray


def checkpoint_logits(plan: PredictionPlan | LogitsPlan, before_predicting=None, read_rows=None) -> CheckpointLogits:
    """Open the experiment, load the planned checkpoint (default: latest) and compute its logits on the planned
    split. ``before_predicting(le, step, path, examples)`` may refuse (raise) once the inputs are known, before any
    work. ``read_rows(le)``: other rows than the split's, as (path, examples, features) (``--predict_file``)."""
    le = open_experiment(plan.target)
    assert plan.checkpoint is not None, "a logits plan without a checkpoint has a --teacher_hf (hf_teacher_logits)"
    step, label = _checkpoint(le, plan.target, plan.checkpoint)
    ckpt_path = le.exp.checkpoint_path(step)
    check_checkpoint(le.model.config, ckpt_path)
    refuse = None if before_predicting is None else (lambda le_, path, rows: before_predicting(le_, step, path, rows))
    # before_predicting runs before tokenising: a refused run writes nothing, not even the tokenisation cache
    if read_rows is None:
        assert plan.split is not None, "a prediction plan without a split reads --predict_file (read_rows)"
        path, examples, features = load_split(le, plan.split, plan.max_examples, refuse)
    else:
        path, examples, features = read_rows(le)
    load_checkpoint_into(le.model, ckpt_path)
    device, precision = le.resolve_device(plan.devices)
    logits = predict_logits(
        le.model,
        features,
        le.tokenizer.pad_token_id,
        le.config["max_seq_len"],
        plan.batch_size,
        device,
        precision,
        desc=f"{path.name} model-{step}.pt",
    )
    return CheckpointLogits(le, step, label, path, examples, features, logits)


def hf_teacher_logits(plan: LogitsPlan, before_predicting=None) -> CheckpointLogits:
    """``--teacher_hf``: a Hugging Face classifier's logits on the planned split (its outputs in the task's label
    order), the data set named ``{experiment}_{model}_{task}``. ``before_predicting(le, step, path, examples)`` as in
    :func:`checkpoint_logits` (``step`` is the source as given)."""
    from .teacher import open_hf_teacher

    t, f = plan.target, plan.teacher
    assert f is not None, "run_gen_logits calls it for a --teacher_hf plan"
    task = t.task
    teacher = open_hf_teacher(f.source, task, f.label_map)
    hf_config = teacher.hf_config
    if hf_config.model_type != t.model:
        raise UserError(f"--model {t.model}: --teacher_hf {f.source!r} is a {hf_config.model_type!r} model")
    from .models.families import usable_positions

    cfg.check_max_seq_len(f.max_seq_len, usable_positions(hf_config), f"--teacher_hf {f.source!r}")
    cfg.check_room_for_text(f.max_seq_len, teacher.tokenizer)
    le = LoadedExperiment(
        t.exp,
        {"max_seq_len": f.max_seq_len, "task": task.name},
        None,  # type: ignore[arg-type]  # built below, once the split is read and not refused; nothing reads it before
        teacher.tokenizer,
        task,
        None,
        None,
        t.data_root,
    )
    refuse = (
        None if before_predicting is None else (lambda le_, path, rows: before_predicting(le_, f.source, path, rows))
    )
    path, examples, features = load_split(le, plan.split, plan.max_examples, refuse)
    le.model = cast("PreTrainedModel", teacher.build())  # load_classifier's (Teacher.build types it a Module)
    device, precision = le.resolve_device(plan.devices)
    logits = predict_logits(
        le.model,
        features,
        le.tokenizer.pad_token_id,
        f.max_seq_len,
        plan.batch_size,
        device,
        precision,
        desc=f"{plan.split} {f.source}",
    )
    return CheckpointLogits(le, f.source, f"{f.source} (Hugging Face)", path, examples, features, logits)


def _weights_digest(source: str) -> str:
    """One sha256 over a Hugging Face folder's weight files (of the name for a hub model)."""
    import hashlib

    from .models.classifier import weight_file_hashes

    hashes = weight_file_hashes(source)
    text = "\n".join(f"{Path(k).name} {v}" for k, v in sorted(hashes.items())) if hashes else f"hub:{source}"
    return hashlib.sha256(text.encode()).hexdigest()


@releases_locks
@applies_devices
def run_gen_logits(plan: LogitsPlan) -> Path:
    """``run_fine_tune_gen_logits.py``: a checkpoint's logits for a split, stored as a logits data set; or, with
    ``--teacher_hf``, a Hugging Face classifier's."""
    split, overwrite = plan.split, plan.overwrite
    foreign = plan.teacher.source if plan.teacher is not None else None
    identity: dict = {}  # what the set is of; hashed once, checked before predicting and recorded in meta.json

    def refuse_to_replace(le, step, path, examples):
        out = logits_dir(le.data_root, le.exp.name, split)
        digest = _weights_digest(foreign) if foreign else sha256_file(le.exp.checkpoint_path(step))
        identity.update(
            teacher_experiment=None if foreign else le.exp.name,
            checkpoint=step,
            split=split,
            source_sha256=sha256_file(path),
            checkpoint_sha256=digest,
            max_seq_len=le.config["max_seq_len"],
            examples_sha256=examples_digest(examples),
            tokenizer=tokenizer_fingerprint(le.tokenizer),
        )
        check_logits_target(out, identity, overwrite)
        if distributed.is_main():  # one writer per logits data set (rank 0 under torchrun)
            out.mkdir(parents=True, exist_ok=True)
            lock_folder(out, "logits data set")
            check_logits_target(out, identity, overwrite)  # again, under the lock
            for leftover in out.glob(TMP_PREFIX + "*"):  # of a killed write of this set
                remove_inside(leftover, out)

    r = hf_teacher_logits(plan, refuse_to_replace) if foreign else checkpoint_logits(plan, refuse_to_replace)
    le, path = r.le, r.path
    mc = le.model.config
    meta = {
        "name": le.exp.name,
        "task": le.task.name,
        "split": split,
        "model": plan.target.model,
        "teacher_experiment": identity["teacher_experiment"],
        "teacher_hf": foreign,
        "checkpoint": r.step,
        "label_names": list(le.task.label_names),
        "regression": le.task.regression,
        "ptrain_ver": le.config.get("ptrain_ver"),
        "vocab_size": mc.vocab_size,
        "max_position_embeddings": mc.max_position_embeddings,
        "hidden_size": mc.hidden_size,
        "num_hidden_layers": mc.num_hidden_layers,
        "source": str(path),
        **{
            k: identity[k]
            for k in ("source_sha256", "checkpoint_sha256", "max_seq_len", "examples_sha256", "tokenizer")
        },
    }
    out = logits_dir(le.data_root, le.exp.name, split)
    if distributed.is_main():
        write_logits(out, meta, r.examples, r.logits, le.tokenizer, overwrite=overwrite)
    name = le.exp.name if split == le.task.train_split else f"{le.exp.name}:{split}"
    acc = ""
    if r.features.labels is not None:
        m = le.task.main_metric
        acc = f", {m} {metrics(le.task, r.features.labels, le.task.predictions(r.logits))[m]:.4f}"
    print(
        f"wrote logits of {r.label if foreign else f'model-{r.step}.pt'} on {split} ({len(r.examples)} rows{acc}) to {out}; "
        f"use it as --dataset {name}"
    )
    return out


def predictions_text(fmt: str, id_column: str | None, examples, logits: np.ndarray, task: Task) -> str:
    """The predictions of ``--predict_file`` as ``fmt`` (``.csv``: Python's csv module, quoting where a cell needs
    it; ``.tsv``: tab-separated without quoting, as the toolkit's tab-separated files; ``.jsonl``: one JSON object
    a line). One row per example, in order, with the same columns in every format: the id (named ``id_column``;
    None: ``row``, the row's number from 0), ``prediction`` (the label name; a regression task: the score) and,
    for a classifier, ``prob_<label>`` for each class in the model's output order (the softmax of the logits).
    Numbers are written in full (``repr`` of the float)."""
    import csv
    import io
    import json

    names = list(task.label_names)
    header = [id_column or "row", "prediction"] + ([] if task.regression else [f"prob_{n}" for n in names])
    if task.regression:
        rows = [[ex.idx, float(x[0])] for ex, x in zip(examples, logits)]
    else:
        rows = [[ex.idx, names[int(p.argmax())], *map(float, p)] for ex, p in zip(examples, softmax(logits))]
    if fmt == ".jsonl":
        return "".join(json.dumps(dict(zip(header, row)), ensure_ascii=False) + "\n" for row in rows)
    if fmt == ".tsv":
        return "".join("\t".join(map(str, row)) + "\n" for row in [header, *rows])
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([header, *rows])
    return buffer.getvalue()


def run_file_prediction(plan: PredictionPlan) -> Path:
    """``generate_test_prediction.py --predict_file FILE``: the planned checkpoint's prediction of every row of
    FILE (read by the task's input columns: tasks/user.parse_rows_to_predict), in input order, as
    :func:`predictions_text` in the format of the output's extension, written atomically where the plan found no
    file this option did not write (fine_tune/outputs.py). Nothing is cached: the rows are tokenised here."""
    from .batching import tokenize
    from .tasks.user import parse_rows_to_predict

    read: dict = {}
    predict_file = plan.predict_file
    assert predict_file is not None, "run_test_prediction calls it for a --predict_file plan"

    def read_rows(le):
        examples, read["id_column"] = parse_rows_to_predict(predict_file, le.task.input_columns)
        return (
            predict_file,
            examples,
            tokenize(le.tokenizer, examples, le.config["max_seq_len"], progress=len(examples) > 20000),
        )

    r = checkpoint_logits(plan, read_rows=read_rows)
    out = plan.out
    if distributed.is_main():
        from .outputs import write_outputs
        from .plan.inference import PREDICT_FILE_COMMAND

        text = predictions_text(out.suffix.lower(), read["id_column"], r.examples, r.logits, r.le.task)
        write_outputs({out: text}, PREDICT_FILE_COMMAND)
    by = f"its {read['id_column']} column" if read["id_column"] else "row number"
    print(f"wrote {len(r.examples)} predictions of {r.label} on {predict_file} (rows named by {by}) to {out}")
    return out


@applies_devices
def run_test_prediction(plan: PredictionPlan) -> Path:
    """``generate_test_prediction.py``: the official submission file of a checkpoint's predictions (with
    ``--max_examples`` a ``.partial-N`` file: plan/inference.prediction_path), where the plan found no file this
    command did not write (fine_tune/outputs.py); with ``--predict_file``, :func:`run_file_prediction`."""
    if plan.predict_file is not None:
        return run_file_prediction(plan)
    r = checkpoint_logits(plan)
    le, dataset, out = r.le, plan.split, plan.out
    assert dataset is not None, "a prediction plan without --predict_file has a split"
    assert isinstance(r.step, int), "checkpoint_logits' step is a checkpoint's"
    if distributed.is_main():
        from .outputs import write_outputs
        from .submission import prediction_record, record_path

        text = le.task.submission_text(r.examples, le.task.predictions(r.logits))
        complete = plan.max_examples is None or len(r.examples) == len(le.task.load(le.data_root, dataset))
        record = prediction_record(
            text,
            {
                "experiment": le.exp.name,
                "checkpoint": f"model-{r.step}.pt",
                "selected": r.label,
                "checkpoint_sha256": sha256_file(le.exp.checkpoint_path(r.step)),
                "split": dataset,
                "data_file": str(r.path),
                "examples_sha256": examples_digest(r.examples),
                "num_rows": len(r.examples),
                "complete": complete,
                "label_names": list(le.task.label_names),
                "max_seq_len": le.config["max_seq_len"],
            },
        )
        # the file and its record as one replacement a kill cannot block (fine_tune/outputs.py)
        write_outputs({out: text, record_path(out): record}, "generate_test_prediction.py")
    print(f"wrote {len(r.examples)} predictions of {r.label} on {dataset} to {out}")
    return out
