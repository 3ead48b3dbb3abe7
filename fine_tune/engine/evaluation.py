"""Evaluation during training (``--eval_dataset SPLIT --eval_step N --early_stop_patience P``): when the engine
evaluates, what it remembers (every evaluation, the best checkpoint, the evaluations without improvement), and
what it writes (``training-eval-{split}.json`` in the experiment folder; the scalars go to TensorBoard).

The engine knows no task: a workflow hands it an :class:`Evaluator`, which computes the metrics of the student on
the split (every rank takes part under torchrun; each row is predicted once) and writes the task's evaluation
table at checkpoints (``eval-{split}.json``, where ``--ckpt best`` and ``results_table.py`` read). The metric for
best (``--metric_for_best``, default the task's main metric) decides the best checkpoint and the patience, in its
direction (higher is better, lower for the loss: fine_tune/selection.best_row, the one rule of "best").

What a resumed run does: the history, the best checkpoint and the patience count are part of the resume state, so
a run resumed from checkpoint ``k`` drops whatever a killed run evaluated after ``k`` and evaluates those steps
again: no evaluation is repeated in the files, none is lost.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from ..io_utils import atomic_write_json
from ..selection import best_row


@dataclass(frozen=True)
class EvalSettings:
    split: str
    every: int | None  # evaluate every N optimizer steps (None: at checkpoints only); checkpoints always
    patience: int | None  # stop after P evaluations without a better main metric (None: never)
    metric: str  # the metric for best (selection.greater_is_better: its direction)
    tag_prefix: str  # "{task}/{split}": TensorBoard tags "{tag_prefix}/{tag}", as run_fine_tune_eval.py writes
    logged: tuple[str, ...] = ()  # the metrics logged, each as "{tag_prefix}/{name}" (accuracy, f1, ..., loss)

    def due(self, step: int, checkpoint: bool) -> bool:
        return checkpoint or (self.every is not None and step % self.every == 0)


class Evaluator(Protocol):
    """What a workflow gives the engine to evaluate its student (``fine_tune.evaluate.TrainingEvaluator``)."""

    settings: EvalSettings

    def evaluate(self, model: torch.nn.Module, step: int) -> dict[str, float]:
        """The task's metrics of ``model`` on the split (called on every rank), plus ``examples_per_s``."""

    def write_table(self, rows: list[dict[str, Any]]) -> None:
        """Rank 0, after evaluating a checkpoint (and on a resume): write the task's evaluation table of the
        checkpoint rows of ``rows`` (and their predictions)."""

    def state_dict(self) -> dict[str, Any]:
        """What the evaluator must keep across a resume (the checkpoints' predictions)."""

    def load_state_dict(self, state: dict[str, Any], steps: list[int]) -> None:
        """Restore :meth:`state_dict`, keeping the checkpoints in ``steps`` only."""


class EvalHistory:
    """Every evaluation of a run, the best checkpoint on the metric for best, and the patience count."""

    def __init__(self, settings: EvalSettings):
        self.s = settings
        self.rows: list[dict[str, Any]] = []  # {"step", "checkpoint", metrics...} in step order
        self.stopped_at: int | None = None

    @property
    def best(self) -> dict[str, Any] | None:
        """The evaluation with the best metric (the patience's reference: ties keep the earlier one)."""
        return best_row(self.rows, self.s.metric, ties="earlier")

    @property
    def without_improvement(self) -> int:
        """How many evaluations came after the best one."""
        best = self.best
        return 0 if best is None else len(self.rows) - 1 - self.rows.index(best)

    def add(self, step: int, metrics: dict[str, float], checkpoint: bool) -> bool:
        """Record one evaluation; True when the patience has run out (the run should stop here)."""
        self.rows.append({"step": step, "checkpoint": checkpoint, **metrics})
        return self.s.patience is not None and self.without_improvement >= self.s.patience

    def mark_checkpoint(self, step: int) -> None:
        """The evaluation at ``step`` became a checkpoint's (the run stops early there and saves it)."""
        for row in self.rows:
            if row["step"] == step:
                row["checkpoint"] = True

    def best_checkpoint(self) -> dict[str, Any] | None:
        """The checkpoint row with the best metric (ties: the later checkpoint, as the evaluation tables)."""
        return best_checkpoint_row(self.rows, self.s.metric)

    def describe_best(self, on_disk: Callable[[int], bool], limit: int) -> str:
        """What the best is and why its checkpoint is the one kept, exactly: the metric, its best value and the first
        step that reached it; the later evaluations that tied it (ties go to the later checkpoint); a first one that
        was an evaluation between checkpoints (no file), or whose checkpoint ``--save_total_limit`` (``limit``)
        pruned (``on_disk(step)``: whether model-{step}.pt is there); and the best checkpoint, with its own value
        where it is lower than the best evaluation's."""
        m, top, ckpt = self.s.metric, self.best, self.best_checkpoint()
        if top is None:
            return f"no evaluation on {self.s.split}"
        value = top[m]
        ties = [r["step"] for r in self.rows if r[m] == value and r["step"] > top["step"]]
        first = (
            f"first at step {top['step']}, tied at {', '.join(map(str, ties))}" if ties else f"at step {top['step']}"
        )
        text = f"best {self.s.split} {m} {value:.6f} {first}"
        if ckpt is None:
            return f"{text}: no checkpoint evaluated"
        if ckpt["step"] == top["step"]:
            return f"{text}: best checkpoint model-{ckpt['step']}.pt"
        why = []
        if not top["checkpoint"]:
            why.append(f"step {top['step']} was an evaluation between checkpoints: no model-{top['step']}.pt")
        elif not on_disk(top["step"]):
            why.append(f"model-{top['step']}.pt was pruned by --save_total_limit {limit}")
        if ckpt[m] == value:
            why.insert(0, "ties go to the later checkpoint")
            return f"{text} ({'; '.join(why)}): best checkpoint model-{ckpt['step']}.pt"
        return f"{text} ({'; '.join(why)}): best checkpoint model-{ckpt['step']}.pt ({m} {ckpt[m]:.6f})"

    def record(self) -> dict[str, Any]:
        best = self.best_checkpoint()
        return {
            "split": self.s.split,
            "metric": self.s.metric,
            "every": self.s.every,
            "patience": self.s.patience,
            "rows": self.rows,
            "best_checkpoint": None if best is None else {"ckpt": best["step"], "value": best[self.s.metric]},
            "best": None if self.best is None else {"step": self.best["step"], "value": self.best[self.s.metric]},
            "evaluations_without_improvement": self.without_improvement,
            "stopped_early_at": self.stopped_at,
        }

    def write(self, folder: Path) -> None:
        atomic_write_json(Path(folder) / training_eval_name(self.s.split), self.record())

    def state_dict(self) -> dict[str, Any]:
        return {"split": self.s.split, "rows": [dict(r) for r in self.rows], "stopped_at": self.stopped_at}

    def load_state_dict(self, state: dict[str, Any]) -> bool:
        """Restore a resumed run's history; False (nothing restored) when it evaluated another split."""
        if state.get("split") != self.s.split:
            return False
        self.rows = [dict(r) for r in state["rows"]]
        self.stopped_at = state["stopped_at"]
        return True


def best_checkpoint_row(rows: list[dict[str, Any]], metric: str) -> dict[str, Any] | None:
    """Of an :class:`EvalHistory`'s rows, the checkpoint row with the best ``metric`` (ties: the later one)."""
    return best_row([row for row in rows if row["checkpoint"]], metric)


def training_eval_name(split: str) -> str:
    return f"training-eval-{split}.json"


EARLY_STOP_FILE = "early-stop.json"  # written once a run stopped early: the run is finished (run/start.py)
