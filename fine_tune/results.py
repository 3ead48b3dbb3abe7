"""Results tables from an experiment root, in the seed documents' style, with explicit checkpoint selection.

Each experiment folder contributes its ``config.json`` and the evaluation tables ``run_fine_tune_eval.py``
wrote (``eval-{split}.json``, ``eval-{split}-predictions.npz``). A row shows, per reported split, the accuracy
(and F1 for QQP) with the checkpoint it comes from, chosen by one :class:`~fine_tune.selection.Rule` named in
the table's caption; the student's parameters and checkpoint size next to its teacher's; the evaluation's
inference throughput; and the hyper-parameters that differ between the rows. Experiments whose configs differ
only in ``--seed`` (and name) are one row: mean ± sample std over the n seeds.

:func:`paired_bootstrap` compares two experiments' per-example predictions on one split (Efron & Tibshirani
1993; Koehn 2004 for its use in NLP): resample the examples with replacement B times, keeping each example's
pair of outcomes together, and take the 2.5 / 97.5 percentiles of the accuracy difference.
"""

from __future__ import annotations

import fnmatch
import math
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import RUNTIME_FIELDS, load_config
from .errors import UserError
from .experiment import CKPT_RE, ExperimentDir, check_name, default_exp_root
from .io_utils import atomic_write_text
from .selection import Rule, read_eval, read_predictions, select_row
from .tasks.metrics import SHORT
from .tasks import get_task

# Config fields that never make two experiments different as science (names, provenance, where it ran).
IGNORED_FIELDS = RUNTIME_FIELDS | {"experiment", "seed", "provenance", "command", "max_examples"}


@dataclass
class Experiment:
    exp: ExperimentDir
    config: dict
    tables: dict[str, dict]  # split -> evaluation table

    @property
    def name(self) -> str:
        return self.exp.name


def scan(exp_root: Path, task: str, patterns: list[str] | None = None) -> list[Experiment]:
    """Every experiment folder of ``task`` under ``exp_root`` (matching a ``--experiments`` glob when given)
    that has at least one evaluation table."""
    exp_root = Path(exp_root)
    if not exp_root.is_dir():
        raise UserError(f"--exp_root {exp_root}: folder not found")
    found = []
    for folder in sorted(exp_root.iterdir()):
        if not (folder / "config.json").is_file():
            continue
        config = load_config(folder / "config.json")
        if config.get("task") != task:
            continue
        if patterns and not any(fnmatch.fnmatch(folder.name, p) or fnmatch.fnmatch(str(config.get("experiment")), p)
                                for p in patterns):
            continue
        exp = ExperimentDir(exp_root, folder.name)
        tables = {split: t for split in get_task(task).labelled if (t := read_eval(exp, split)) is not None}
        if tables:
            found.append(Experiment(exp, config, tables))
    return found


def science_key(config: dict) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in config.items() if k not in IGNORED_FIELDS))


def group_by_seed(experiments: list[Experiment]) -> list[list[Experiment]]:
    """Experiments whose configs differ only by seed (and name, paths, devices) form one group."""
    groups: dict[tuple, list[Experiment]] = {}
    for e in experiments:
        groups.setdefault(science_key(e.config), []).append(e)
    return [sorted(g, key=lambda e: (e.config.get("seed") is None, e.config.get("seed"), e.name))
            for g in groups.values()]


def group_name(members: list[Experiment]) -> str:
    names = [str(m.config.get("experiment", m.name)) for m in members]
    if len(names) == 1:
        return names[0]
    prefix = os.path.commonprefix(names).rstrip("_-.s")
    seeds = ",".join(str(m.config.get("seed")) for m in members)
    return f"{prefix or names[0]} (seeds {seeds})"


def varying_fields(experiments: list[Experiment]) -> list[str]:
    """Fields whose value differs between at least two experiments that both have the field (a field only
    one kind of run has, e.g. the student shape of a distillation next to a teacher, is left out)."""
    keys = sorted({k for e in experiments for k in e.config} - IGNORED_FIELDS)
    return [k for k in keys if len({repr(e.config[k]) for e in experiments if k in e.config}) > 1]


def mean_std(values: list[float], digits: int = 4) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f} (n={len(values)})"


def checkpoint_params(path: Path) -> int:
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return sum(t.numel() for t in state.values())


def teacher_of(e: Experiment) -> ExperimentDir | None:
    """The teacher experiment: ``--teacher_exp`` of a layer-wise run, or the logits data set's source."""
    c = e.config
    if c.get("teacher_exp"):
        return ExperimentDir.of(e.exp.root, c["teacher_exp"], c.get("tmodel", "bert"), c["task"])
    source = str(c.get("dataset") or "").split(":")[0]
    if source and (e.exp.root / source / "config.json").is_file() and source != e.name:
        return ExperimentDir(e.exp.root, source)
    return None


def _size(exp: ExperimentDir, step: int | None) -> tuple[int, int] | None:
    """(parameters, bytes) of a checkpoint (the latest one when ``step`` is None)."""
    if step is None:
        have = exp.checkpoints()
        if not have:
            return None
        step = have[-1]
    path = exp.checkpoint_path(step)
    if not path.is_file():
        return None
    return checkpoint_params(path), path.stat().st_size


def _human(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(int(n))


@dataclass
class Table:
    task: str
    splits: list[str]
    rule: Rule
    columns: list[str]
    rows: list[list[str]]
    hyper: list[str]

    def caption(self) -> str:
        parts = [f"{s}: {self.rule.label(s)}" for s in self.splits]
        return ("Checkpoint per reported split — " + "; ".join(parts) + ". Groups of seeds: mean ± sample std "
                "over n runs; ckpt lists each run's checkpoint. params/size: the student checkpoint (teacher's in "
                "brackets). infer ex/s: median rows/s of the evaluation's forward passes on the device named.")

    def markdown(self) -> str:
        lines = [f"**{self.task}** — {self.caption()}", "", "|" + "|".join(self.columns) + "|",
                 "|" + "|".join("-" for _ in self.columns) + "|"]
        lines += ["|" + "|".join(r) + "|" for r in self.rows]
        return "\n".join(lines) + "\n"


def build_table(experiments: list[Experiment], task: str, rule: Rule, splits: list[str] | None = None) -> Table:
    t = get_task(task)
    if splits is None:
        splits = [s for s in t.splits if s in t.labelled and any(s in e.tables for e in experiments)]
    if rule.select_on is not None:
        t.check_split(rule.select_on, "--select_on")
    metric_cols = [m for m in t.metrics]
    hyper = varying_fields(experiments)
    columns = ["ex"]
    for s in splits:
        for m in metric_cols:
            columns.append(f"{s} {SHORT[m]}")
        columns.append(f"{s} ckpt")
    columns += ["params", "size", "infer ex/s", *hyper]
    rows = []
    for members in group_by_seed(experiments):
        cells = [group_name(members)]
        chosen_steps: list[int] = []
        for s in splits:
            values: dict[str, list[float]] = {m: [] for m in metric_cols}
            steps = []
            for e in members:
                try:
                    step, row = select_row(e.tables, s, rule, t.main_metric)
                except UserError:
                    continue
                steps.append(step)
                for m in metric_cols:
                    values[m].append(row[m])
            if not steps:
                cells += ["—"] * (len(metric_cols) + 1)
                continue
            for m in metric_cols:
                cells.append(mean_std(values[m]))
            cells.append(",".join(str(x) for x in steps))
            chosen_steps = chosen_steps or steps
        first = members[0]
        size = _size(first.exp, chosen_steps[0] if chosen_steps else None)
        teacher = teacher_of(first)
        tsize = _size(teacher, first.config.get("tckpt")) if teacher is not None else None
        if size is None:
            cells += ["—", "—"]
        else:
            p = _human(size[0]) + (f" ({_human(tsize[0])}, {size[0] / tsize[0]:.2f}×)" if tsize else "")
            d = f"{size[1] / 2**20:.1f} MiB" + (f" ({tsize[1] / 2**20:.1f} MiB)" if tsize else "")
            cells += [p, d]
        rates = []
        for e in members:
            table = e.tables.get(splits[-1]) if splits else None
            if table and table.get("inference"):
                rates.append((table["inference"]["examples_per_s"], table["inference"]["device"]))
        cells.append(f"{statistics.median(r for r, _ in rates):.0f} ({rates[0][1]})" if rates else "—")
        for k in hyper:
            vals = sorted({str(e.config[k]) if k in e.config else "—" for e in members})
            cells.append("/".join(vals))
        rows.append(cells)
    return Table(task, splits, rule, columns, rows, hyper)


@dataclass
class Bootstrap:
    split: str
    n: int
    acc_a: float
    acc_b: float
    low: float
    high: float
    resamples: int
    p_not_better: float  # share of resamples where A - B <= 0
    metric: str = "accuracy"

    @property
    def diff(self) -> float:
        return self.acc_a - self.acc_b

    def describe(self, a: str, b: str) -> str:
        return (f"{a} − {b} {self.metric} on {self.split}: {self.diff:+.4f} (95% CI [{self.low:+.4f}, {self.high:+.4f}]; "
                f"{a} {self.acc_a:.4f}, {b} {self.acc_b:.4f}; paired bootstrap, {self.resamples} resamples of "
                f"n={self.n}; share of resamples with difference <= 0: {self.p_not_better:.4f})")


def paired_bootstrap(correct_a: np.ndarray, correct_b: np.ndarray, resamples: int = 10000, seed: int = 0,
                     split: str = "") -> Bootstrap:
    """Percentile interval of acc(A) - acc(B) over ``resamples`` paired resamples of the examples.

    With d_i = 1[A right on i] - 1[B right on i], the statistic of resample r is (1/n) sum_i c_{r,i} d_i where
    c_r ~ Multinomial(n, 1/n); the interval is [q_0.025, q_0.975] of those B values."""
    a = np.asarray(correct_a, dtype=np.float64)
    b = np.asarray(correct_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise UserError("paired bootstrap needs two non-empty prediction vectors of the same examples")
    n = len(a)
    d = a - b
    rng = np.random.default_rng(seed)
    stats = np.empty(resamples)
    chunk = max(1, 2_000_000 // n)
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=stop - start)
        stats[start:stop] = counts @ d / n
    low, high = np.percentile(stats, [2.5, 97.5])
    return Bootstrap(split, n, float(a.mean()), float(b.mean()), float(low), float(high), resamples,
                     float((stats <= 0).mean()))


def paired_bootstrap_metric(labels: np.ndarray, preds_a: np.ndarray, preds_b: np.ndarray, metric: str,
                            resamples: int = 10000, seed: int = 0, split: str = "") -> Bootstrap:
    """Percentile interval of m(A) - m(B) for a metric m that is not a mean over rows (MCC, F1, macro-F1): each
    of ``resamples`` paired resamples draws n row indices with replacement and computes m of both on them."""
    from .tasks.metrics import METRICS

    fn = METRICS[metric]
    labels, preds_a, preds_b = (np.asarray(x) for x in (labels, preds_a, preds_b))
    n = len(labels)
    if n == 0 or preds_a.shape != labels.shape or preds_b.shape != labels.shape:
        raise UserError("paired bootstrap needs two non-empty prediction vectors of the same examples")
    rng = np.random.default_rng(seed)
    stats = np.empty(resamples)
    for r in range(resamples):
        i = rng.integers(0, n, n)
        stats[r] = fn(labels[i], preds_a[i]) - fn(labels[i], preds_b[i])
    low, high = np.percentile(stats, [2.5, 97.5])
    return Bootstrap(split, n, fn(labels, preds_a), fn(labels, preds_b), float(low), float(high), resamples,
                     float((stats <= 0).mean()), metric)


def compare(exp_root: Path, task: str, name_a: str, name_b: str, split: str, rule: Rule,
            resamples: int = 10000, seed: int = 0) -> Bootstrap:
    """Paired bootstrap of the task's main metric between two experiments (folder names), each at its checkpoint
    chosen by ``rule``."""
    correct, predicted = [], []
    idx_seen = None
    for name in (name_a, name_b):
        exp = ExperimentDir(Path(exp_root), check_name(name, "--compare"))
        if not exp.config_path.is_file():
            raise UserError(f"--compare {name}: no experiment folder {exp.path}")
        tables = {s: t for s in get_task(task).labelled if (t := read_eval(exp, s)) is not None}
        step, _ = select_row(tables, split, rule, get_task(task).main_metric)
        idx, labels, preds = read_predictions(exp, split, step, tables.get(split))
        if idx_seen is not None and not np.array_equal(idx, idx_seen):
            raise UserError(f"--compare: {name_a} and {name_b} were evaluated on different rows of {split}")
        idx_seen = idx
        correct.append(preds == labels)
        predicted.append(preds)
    metric = get_task(task).main_metric
    if metric == "accuracy":
        return paired_bootstrap(correct[0], correct[1], resamples, seed, split)
    return paired_bootstrap_metric(labels, predicted[0], predicted[1], metric, resamples, seed, split)


def run_results(args) -> str:
    """``results_table.py``: print the table (and the comparison), write them as markdown. ``args``: the
    script's ``ResultsFlags``."""
    exp_root = Path(args.exp_root) if args.exp_root else default_exp_root()
    from .tasks.download import default_data_root
    from .tasks.registry import add_user_root

    add_user_root(Path(args.data_root) if args.data_root else default_data_root())
    get_task(args.task)  # an unknown task is refused before anything is scanned
    rule = Rule(args.rule, args.select_on)
    splits = args.splits.split(",") if args.splits else None
    if splits:
        for s in splits:
            get_task(args.task).check_split(s, "--splits")
    experiments = scan(exp_root, args.task, args.experiments.split(",") if args.experiments else None)
    if not experiments:
        raise UserError(f"no evaluated {args.task} experiment in {exp_root} (run run_fine_tune_eval.py first)")
    table = build_table(experiments, args.task, rule, splits)
    text = table.markdown()
    if args.compare:
        a, b = args.compare
        split = args.compare_split or get_task(args.task).dev_split
        get_task(args.task).check_split(split, "--compare_split")
        text += "\n" + compare(exp_root, args.task, a, b, split, rule, args.resamples, args.bootstrap_seed).describe(a, b) + "\n"
    out = Path(args.out) if args.out else exp_root / f"results-{args.task}.md"
    atomic_write_text(out, text)
    print(text, end="")
    print(f"(written to {out})")
    return text
