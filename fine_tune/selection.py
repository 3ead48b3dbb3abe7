"""Which checkpoint a reported number comes from.

``run_fine_tune_eval.py`` writes ``eval-{split}.json`` (one row of metrics per checkpoint) and
``eval-{split}-predictions.npz`` (every checkpoint's per-example predictions) into the experiment folder. The
rules below read them; the results table, ``generate_test_prediction.py --ckpt best`` and the export command
all go through :func:`select`, so a number and the checkpoint it names always agree.

Rules (every table says which one it used):

* ``best``: the checkpoint with the best metric *on the reported split itself* (the original research
  code's rule; optimistic, since the split both chooses and scores);
* ``last``: the latest evaluated checkpoint;
* ``best on S`` (``--select_on S``): the checkpoint with the best metric on split S, reported on another
  split (S = val/dev, reported = test-like held-out data: the honest protocol).

Ties go to the later checkpoint. "Best" is by the experiment's ``--metric_for_best`` (its config.json; default
the task's main metric): higher is better, lower for ``loss`` (:func:`greater_is_better`); every place that decides
a best row (these rules, ``--ckpt best``, ``--tckpt best``, the evaluation tables, the evaluation during training's
keep-best and patience) goes through :func:`best_row`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import UserError, did_you_mean
from .experiment import ExperimentDir
from .io_utils import sha256_file


def eval_path(exp: ExperimentDir, split: str) -> Path:
    return exp.path / f"eval-{split}.json"


def evaluated_rows_changed(
    exp: ExperimentDir, table: dict, task, data_root: Path, split: str, digests: dict | None = None
) -> str | None:
    """Why the evaluation ``table`` of ``split`` no longer describes the split's rows (its data file, the task's
    definition or the rows chosen changed since it was computed: its ``examples_sha256`` against the rows the
    current file gives with its ``max_examples``), or None. A table written before the rows were recorded, or a
    split whose file is not here (tables copied to another machine), is not checked. ``digests``: a cache shared
    by the checks of one command."""
    from .tasks.example import examples_digest

    recorded = table.get("examples_sha256")
    path = task.path(data_root, split)
    if recorded is None or not path.is_file():
        return None
    key = (split, table.get("max_examples"))
    digests = {} if digests is None else digests
    if key not in digests:
        digests[key] = examples_digest(task.load(data_root, split, table.get("max_examples")))
    if digests[key] == recorded:
        return None
    return (
        f"{eval_path(exp, split)} was computed on other rows of {split} than {path} gives now "
        f"({table.get('num_rows')} rows then; the file, the task's definition or --max_examples changed since): "
        f"evaluate again with run_fine_tune_eval.py"
    )


def predictions_path(exp: ExperimentDir, split: str) -> Path:
    return exp.path / f"eval-{split}-predictions.npz"


def read_eval(exp: ExperimentDir, split: str) -> dict | None:
    """The evaluation table of a split, or None when the split was never evaluated."""
    path = eval_path(exp, split)
    if not path.is_file():
        return None
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
        rows = table["rows"]
        from .tasks import TASKS  # every row holds its split's metrics (a diagnostic's own: Task.metrics_for)

        task = TASKS.get(table.get("task"))
        wanted = task.metrics_for(split) if task is not None else ("accuracy",)
        if not rows or not all("ckpt" in r and all(m in r for m in wanted) for r in rows):
            raise KeyError("rows")
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise UserError(f"{path}: not an evaluation table written by run_fine_tune_eval.py ({e})") from None
    return table


def on_disk(exp: ExperimentDir, table: dict) -> tuple[dict | None, list[int]]:
    """An evaluation table with only the rows whose checkpoint is on disk (the others were deleted by
    ``--save_total_limit``, or a kill came between the table and its checkpoint: no number may cite them), and
    the steps of the rows left out; None for the table when no row is left."""
    rows = [r for r in table["rows"] if exp.checkpoint_path(r["ckpt"]).is_file()]
    absent = [r["ckpt"] for r in table["rows"] if r not in rows]
    if not absent:
        return table, []
    return (dict(table, rows=rows) if rows else None), absent


def absent_note(split: str, absent: list[int]) -> str:
    """Says that the evaluations of ``split`` at the steps ``absent`` were skipped, and why."""
    names = ", ".join(f"model-{s}.pt" for s in absent)
    return (
        f"{split} evaluation{'s' if len(absent) > 1 else ''} of {names} skipped: not on disk (deleted by "
        f"--save_total_limit, or a run killed before writing it)"
    )


def require_eval(exp: ExperimentDir, split: str, task: str, model: str, experiment: str) -> dict:
    table = read_eval(exp, split)
    if table is None:
        raise UserError(
            f"{exp.path} has no evaluation on {split!r}; run: python run_fine_tune_eval.py "
            f"--experiment {experiment} --model {model} --task {task} --dataset {split}"
        )
    return table


LOSS = "loss"  # the evaluation's mean cross-entropy (MSE on a regression task) on the split (evaluate.evaluation_loss)


def greater_is_better(metric: str) -> bool:
    """The direction of ``metric``: every metric the tasks compute is higher-is-better; the loss lower-is-better."""
    return metric != LOSS


def best_row(rows: list[dict], metric: str = "accuracy", ties: str = "later") -> dict | None:
    """The row with the best ``metric`` (by :func:`greater_is_better`; None for no rows). Rows are in step order;
    ``ties``: ``later`` (a checkpoint's choice: the later checkpoint) or ``earlier`` (the patience's reference: the
    first evaluation that reached the value)."""
    sign = 1.0 if greater_is_better(metric) else -1.0
    best = None
    for row in rows:
        gain = None if best is None else sign * (row[metric] - best[metric])
        if best is None or gain > 0 or (gain == 0 and ties == "later"):
            best = row
    return best


def _best_of_table(rows: list[dict], metric: str) -> dict:
    """:func:`best_row` of an evaluation table's rows, which are never empty (:func:`read_eval` refuses a table
    without rows, :func:`on_disk` gives None for a table with none left)."""
    row = best_row(rows, metric)
    assert row is not None, "an evaluation table has rows"
    return row


def metric_for_best(task, name: str | None, source: str = "--metric_for_best") -> str:
    """The metric that decides "best" for ``task``: ``name`` (one of the task's metrics, or ``loss``; anything else
    refused in one line naming ``source``, with the closest name) or, None, the task's main metric."""
    if name is None:
        return task.main_metric
    choices = (*task.metrics, LOSS)
    if name not in choices:
        raise UserError(
            f"{source} {name!r}: not a metric of {task.name}; {did_you_mean(name, choices)}its metrics: "
            f"{', '.join(choices)}"
        )
    return name


def experiment_metric(exp: ExperimentDir, task) -> str:
    """The metric that decides an experiment's best checkpoint: its config.json's ``metric_for_best`` (checked), else
    the task's main metric (an experiment without a config.json too)."""
    name = None
    if exp.config_path.is_file():
        from .config import load_config

        name = load_config(exp.config_path).get("metric_for_best")
    return metric_for_best(task, name, f"{exp.config_path}: metric_for_best")


def check_has_metric(table: dict, metric: str, path: Path) -> None:
    """An evaluation table whose rows lack ``metric`` (a loss asked of a table written before evaluations recorded
    it) cannot choose by it: one line saying how to evaluate again."""
    if not all(metric in r for r in table["rows"]):
        raise UserError(
            f"{path} records no {metric} of its checkpoints (written before evaluations recorded it); "
            f"evaluate the split again with run_fine_tune_eval.py"
        )


@dataclass(frozen=True)
class Rule:
    """``kind`` is ``best`` or ``last``; ``select_on`` is the split that chooses (None: the reported split)."""

    kind: str = "best"
    select_on: str | None = None

    def __post_init__(self):
        if self.kind not in ("best", "last"):
            raise UserError(f"unknown checkpoint rule {self.kind!r} (choose best or last)")

    def label(self, reported: str | None = None) -> str:
        if self.kind == "last":
            return "last evaluated checkpoint"
        if self.select_on is None or self.select_on == reported:
            return "best checkpoint on the reported split (the original's rule)"
        return f"best checkpoint on {self.select_on}"

    def chooser(self, reported: str) -> str:
        return self.select_on or reported


def select_row(tables: dict[str, dict], reported: str, rule: Rule, metric: str = "accuracy") -> tuple[int, dict]:
    """(checkpoint step, the reported split's row for it) under ``rule``. ``tables`` maps split -> eval table.
    Raises UserError when the choosing split's table is missing or the chosen checkpoint was not evaluated on
    the reported split."""
    chooser = rule.chooser(reported)
    if chooser not in tables:
        raise UserError(f"no evaluation on {chooser!r} to choose the checkpoint")
    rows = tables[chooser]["rows"]
    step = rows[-1]["ckpt"] if rule.kind == "last" else _best_of_table(rows, metric)["ckpt"]
    if reported not in tables:
        raise UserError(f"no evaluation on {reported!r}")
    by_step = {r["ckpt"]: r for r in tables[reported]["rows"]}
    if step not in by_step:
        raise UserError(f"checkpoint {step} (chosen on {chooser}) was not evaluated on {reported}")
    return step, by_step[step]


def parse_ckpt(value: str) -> int | str:
    """``--ckpt``: a step, ``best`` or ``last``."""
    if value in ("best", "last"):
        return value
    try:
        return int(value)
    except ValueError:
        raise UserError(f"--ckpt must be a checkpoint step, 'best' or 'last', got {value!r}") from None


def resolve_ckpt(
    exp: ExperimentDir,
    ckpt: int | str | None,
    select_on: str,
    *,
    task,
    model: str,
    experiment: str,
    data_root: Path | None = None,
    flag: str = "--ckpt",
) -> tuple[int, str]:
    """The step ``--ckpt`` names and a label saying why: a number as given; ``last`` (or None) = the newest
    checkpoint on disk; ``best`` = the best checkpoint on ``select_on`` by the experiment's metric for best
    (:func:`experiment_metric`; from its evaluation, among the checkpoints still on disk: :func:`on_disk`), the
    evaluation refused once the split's rows under ``data_root`` changed since (:func:`evaluated_rows_changed`).
    ``task``: the :class:`~fine_tune.tasks.task.Task`; ``flag``: the flag errors name (``--tckpt`` for a teacher)."""
    if isinstance(ckpt, int):
        exp.require_checkpoint(ckpt)
        return ckpt, f"model-{ckpt}.pt"
    if ckpt in (None, "last"):
        have = exp.checkpoints()
        if not have:
            raise UserError(f"no checkpoint in {exp.path}")
        return have[-1], f"model-{have[-1]}.pt (latest)"
    metric = experiment_metric(exp, task)
    evaluated = require_eval(exp, select_on, task.name, model, experiment)
    why = None if data_root is None else evaluated_rows_changed(exp, evaluated, task, data_root, select_on)
    if why:
        raise UserError(f"{flag} best: {why}")
    check_has_metric(evaluated, metric, eval_path(exp, select_on))
    table, absent = on_disk(exp, evaluated)
    if table is None:
        raise UserError(
            f"no checkpoint evaluated on {select_on} is on disk in {exp.path} (model-{absent[-1]}.pt and "
            f"the others evaluated were deleted); evaluate the checkpoints there with run_fine_tune_eval.py"
        )
    row = best_row(table["rows"], metric)
    assert row is not None, "on_disk gives None for a table without rows"
    skipped = f"; {absent_note(select_on, absent)}" if absent else ""
    return row["ckpt"], f"model-{row['ckpt']}.pt (best {select_on} {metric} {row[metric]:.4f}{skipped})"


def read_predictions(
    exp: ExperimentDir, split: str, step: int, table: dict | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(idx, labels, predictions) of checkpoint ``step`` on ``split``, in file order. With the split's evaluation
    ``table``: the predictions file must be the one that evaluation wrote (its recorded sha256)."""
    path = predictions_path(exp, split)
    if not path.is_file():
        raise UserError(f"{path} not found; evaluate the experiment with run_fine_tune_eval.py first")
    recorded = (table or {}).get("predictions_sha256")
    if recorded and sha256_file(path) != recorded:
        raise UserError(
            f"{path} is not the predictions file of {eval_path(exp, split).name} (a killed or concurrent "
            f"evaluation); evaluate {split} again with run_fine_tune_eval.py"
        )
    with np.load(path) as z:
        key = f"pred_{step}"
        if key not in z:
            have = sorted(int(k[5:]) for k in z.files if k.startswith("pred_"))
            raise UserError(f"{path} has no predictions of checkpoint {step}; it has {have}")
        return z["idx"], z["labels"], z[key]
