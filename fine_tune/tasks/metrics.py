"""The metrics of the GLUE and SuperGLUE tasks, from scikit-learn and SciPy.

- ``accuracy``: the share of rows predicted right.
- ``f1``: F1 of class 1 (MRPC, QQP: "equivalent", "duplicate"), 0 when nothing is predicted positive.
- ``macro_f1``: the unweighted mean of the per-class F1 (SuperGLUE's CB).
- ``mcc``: Matthews correlation coefficient (CoLA), 0 when a prediction or label column is constant.
- ``pearson`` / ``spearman``: correlations of predicted and gold scores (STS-B), 0 when either is constant.
- ``gender_parity``: the share of minimal pairs whose two rows are predicted alike (SuperGLUE's AX-g; a metric of
  pairs, not of rows: :data:`PAIR_METRICS`, scored on a split only, never a task's own metric).

Each task names its metrics and its *main* metric (``Task.main_metric``), the one that picks the best checkpoint
(doc/methods.md, "Tasks and their metrics").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def accuracy(labels: np.ndarray, preds: np.ndarray) -> float:
    return float(np.mean(np.asarray(labels) == np.asarray(preds)))


def f1(labels: np.ndarray, preds: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(labels, preds, zero_division=0))


def macro_f1(labels: np.ndarray, preds: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(labels, preds, average="macro", zero_division=0))


def mcc(labels: np.ndarray, preds: np.ndarray) -> float:
    from sklearn.metrics import matthews_corrcoef

    return float(matthews_corrcoef(labels, preds))


def _correlation(fn: Callable[[np.ndarray, np.ndarray], Any], labels: np.ndarray, preds: np.ndarray) -> float:
    labels, preds = np.asarray(labels, dtype=np.float64), np.asarray(preds, dtype=np.float64)
    if len(labels) < 2 or labels.std() == 0 or preds.std() == 0:
        return 0.0
    return float(fn(labels, preds)[0])


def pearson(labels: np.ndarray, preds: np.ndarray) -> float:
    from scipy.stats import pearsonr

    return _correlation(pearsonr, labels, preds)


def spearman(labels: np.ndarray, preds: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return _correlation(spearmanr, labels, preds)


def gender_parity(labels: np.ndarray, preds: np.ndarray, groups: np.ndarray) -> float:
    """Wang et al. 2019 (SuperGLUE, §3.2): the gender parity score of AX-g, the share of minimal pairs for which
    the two predictions are the same, GP = #{pairs (i, j): ŷ_i = ŷ_j} / #pairs, as jiant's ``GenderParity``
    (``same_preds / (same_preds + diff_preds)``; a fraction, as every metric here). ``groups``: each row's pair
    (``Example.group``), two rows each (:mod:`fine_tune.tasks.diagnostics`); the labels do not enter it."""
    groups, preds = np.asarray(groups), np.asarray(preds)
    pairs: dict[Any, list[Any]] = {}
    for g, p in zip(groups.tolist(), preds.tolist()):
        pairs.setdefault(g, []).append(p)
    if not pairs or any(len(v) != 2 for v in pairs.values()):
        raise ValueError("gender parity needs rows in pairs (tasks/diagnostics.check_whole_pairs)")
    return float(np.mean([v[0] == v[1] for v in pairs.values()]))


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": accuracy,
    "f1": f1,
    "macro_f1": macro_f1,
    "mcc": mcc,
    "pearson": pearson,
    "spearman": spearman,
}
# metrics of groups of rows: (labels, preds, groups) -> value
PAIR_METRICS: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], float]] = {"gender_parity": gender_parity}

REGRESSION_METRICS = ("pearson", "spearman")  # of scores; the others are of classes
TWO_CLASS_METRICS = ("f1",)  # of class 1 against class 0 (scikit-learn's average="binary")


def unsuitable(name: str, regression: bool, num_class: int) -> str | None:
    """Why the metric ``name`` cannot score a task (a regression task when ``regression``, else one of
    ``num_class`` classes), or None when it can: a correlation needs scores, the class metrics need classes, F1
    of class 1 needs exactly two classes."""
    if regression and name not in REGRESSION_METRICS:
        return f"a metric of classes; a regression task takes {', '.join(REGRESSION_METRICS)}"
    if not regression and name in REGRESSION_METRICS:
        return (
            f"a metric of scores (regression); a classification task takes "
            f"{', '.join(m for m in METRICS if m not in REGRESSION_METRICS)}"
        )
    if not regression and name in TWO_CLASS_METRICS and num_class != 2:
        return f"a metric of two classes (F1 of class 1); the task has {num_class} labels: use macro_f1"
    return None


# column titles of the results tables
SHORT = {
    "accuracy": "acc",
    "f1": "F1",
    "macro_f1": "macro-F1",
    "mcc": "MCC",
    "pearson": "Pearson",
    "spearman": "Spearman",
    "gender_parity": "gender parity",
}
# The scalars' names are the metrics' own (``{task}/{split}/f1``, as eval-{split}.json names them); runs before issue
# 32 logged F1 as "f1_score": the readers of TensorBoard logs (result_plots.py --curves) read those too
OLD_TAGS = {"f1": "f1_score"}


def compute(
    names: tuple[str, ...], labels: np.ndarray, preds: np.ndarray, groups: np.ndarray | None = None
) -> dict[str, float]:
    """``{name: value}`` for each metric in ``names``; ``groups``: each row's group, for :data:`PAIR_METRICS`."""
    values: dict[str, float] = {}
    for name in names:
        if name in PAIR_METRICS:
            # a pair metric is only a diagnostic split's own, whose callers pass the rows' groups (evaluate.metrics)
            assert groups is not None, f"{name} scores pairs of rows: pass each row's group"
            values[name] = PAIR_METRICS[name](labels, preds, groups)
        else:
            values[name] = METRICS[name](labels, preds)
    return values
