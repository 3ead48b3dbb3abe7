"""Results tables from an experiment root, in the seed documents' style, with explicit checkpoint selection.

Each experiment folder contributes its ``config.json`` and the evaluation tables ``run_fine_tune_eval.py``
wrote (``eval-{split}.json``, ``eval-{split}-predictions.npz``). A row shows, per reported split, the accuracy
(and F1 for QQP) with the checkpoint it comes from, chosen by one :class:`~fine_tune.selection.Rule` named in
the table's caption; the student's parameters and checkpoint size next to its teacher's; the evaluation's
inference throughput; and the hyper-parameters that differ between the rows. Experiments whose configs differ
only in ``--seed`` (and name) are one row: mean ± sample std over the n seeds (a training ``--max_examples`` is part
of the config). A seed counts once: of several runs with one config and one seed, the newest evaluated one is the
seed's run (:func:`seed_groups`; a note names the others). Evaluations of other rows are never pooled nor folded: a
split evaluated on its first rows only (``run_fine_tune_eval.py --max_examples N``) makes a row of its own, its cells
marked ``(first N rows)`` (:func:`evaluated_rows_key`). A number never cites a checkpoint that is not on disk: such evaluations are skipped, with a note
(:func:`~fine_tune.selection.on_disk`).

One source of truth: :func:`row_record` computes each row's numbers (per split and metric the mean, sample std, n
and per-seed values, the checkpoints, sizes, throughputs, hyper-parameters and commands); the markdown cells are
formatted from those records (the columns ``--columns`` chooses: :mod:`fine_tune.result_columns`), and the same
records are written as CSV and JSON beside the markdown, every field whatever the markdown shows. An ONNX export
of a row's first run (``onnx-model-<step>/export.json``) adds its ONNX Runtime examples/s. The Pareto plot and the
learning curves (``--plot``, ``--curves``) live in :mod:`fine_tune.result_plots`.

:func:`paired_bootstrap` compares two experiments' per-example predictions on one split (Efron & Tibshirani
1993; Koehn 2004 for its use in NLP): resample the examples with replacement B times, keeping each example's
pair of outcomes together, and take the 2.5 / 97.5 percentiles of the accuracy difference.

Diagnostics (SuperGLUE's AX-b and AX-g, splits of ``rte_superglue``: ``Task.diagnostics``) are scored splits of their
own: their metrics (MCC; gender parity and accuracy) fill their own columns, never pooled with a dev split's, and a
diagnostic never chooses the checkpoint it is reported at: under the ``best`` rule that is the checkpoint chosen on
``--select_on``, else on the task's dev split (:func:`split_rule`).
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import RUNTIME_FIELDS, load_config
from .errors import UserError
from .experiment import CKPT_RE, ExperimentDir, check_name
from .outputs import write_outputs
from .result_columns import format_stats
from .selection import (
    Rule,
    absent_note,
    eval_path,
    evaluated_rows_changed,
    on_disk,
    read_eval,
    read_predictions,
    select_row,
)
from .tasks import Task

if TYPE_CHECKING:
    from .plan.types import ResultsPlan

# Config fields that never make two experiments different as science (names, provenance, where it ran). A run's
# training --max_examples is not one of them: runs on 8 and on 48 training rows are two configs, not seeds of one.
IGNORED_FIELDS = RUNTIME_FIELDS | {"experiment", "seed", "provenance", "command"}


@dataclass
class Experiment:
    exp: ExperimentDir
    config: dict
    tables: dict[str, dict]  # split -> evaluation table, its rows of checkpoints on disk only
    absent: dict[str, list[int]] = field(default_factory=dict)  # split -> evaluated steps not on disk (skipped)

    @property
    def name(self) -> str:
        return self.exp.name


def scan(exp_root: Path, task: Task, patterns: list[str] | None = None, evaluated: bool = True) -> list[Experiment]:
    """Every experiment folder of ``task`` under ``exp_root`` (matching a ``--experiments`` glob when given)
    that has at least one evaluation table (``evaluated=False``: every one, evaluated or not). The tables keep the
    rows of checkpoints on disk; the others are in :attr:`Experiment.absent`."""
    exp_root = Path(exp_root)
    if not exp_root.is_dir():
        raise UserError(f"--exp_root {exp_root}: folder not found")
    found = []
    for folder in sorted(exp_root.iterdir()):
        if not (folder / "config.json").is_file():
            continue
        config = load_config(folder / "config.json")
        if config.get("task") != task.name:
            continue
        if patterns and not any(matches(folder.name, config, p) for p in patterns):
            continue
        exp = ExperimentDir(exp_root, folder.name)
        tables, absent = {}, {}
        read = [(split, table) for split in task.scored if (table := read_eval(exp, split)) is not None]
        for split, table in read:
            kept, skipped = on_disk(exp, table)
            if kept is not None:
                tables[split] = kept
            if skipped:
                absent[split] = skipped
        if read or not evaluated:
            found.append(Experiment(exp, config, tables, absent))
    return found


def matches(folder: str, config: dict, pattern: str) -> bool:
    """Whether a glob of ``--experiments`` / ``--curves`` names this experiment (its folder or its name)."""
    return fnmatch.fnmatch(folder, pattern) or fnmatch.fnmatch(str(config.get("experiment")), pattern)


def science_key(config: dict) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in config.items() if k not in IGNORED_FIELDS))


def subset_rows(table: dict) -> int | None:
    """How many rows an evaluation table covers when it was computed on the first rows of its split only
    (``run_fine_tune_eval.py --max_examples N``, recorded in ``eval-{split}.json``; a split with fewer rows than N
    was evaluated whole); None for an evaluation of the whole split."""
    limit, rows = table.get("max_examples"), table.get("num_rows")
    if limit is None or (isinstance(rows, int) and rows < limit):
        return None
    return rows if isinstance(rows, int) else limit


def evaluated_rows_key(e: Experiment) -> tuple:
    """The rows an experiment's evaluations cover, split by split: the splits evaluated on their first rows only
    (:func:`subset_rows`) with their row counts. Runs whose evaluations cover other rows are never pooled into one
    mean nor folded into one seed (:func:`seed_groups`)."""
    return tuple(sorted((s, n) for s, t in e.tables.items() if (n := subset_rows(t)) is not None))


def evaluated_at(e: Experiment) -> int:
    """When ``e`` was last evaluated: the newest modification time (ns) of its evaluation tables (of its
    config.json when it has none)."""
    paths = [eval_path(e.exp, s) for s in sorted(set(e.tables) | set(e.absent))] or [e.exp.config_path]
    return max((p.stat().st_mtime_ns for p in paths if p.is_file()), default=0)


def seed_groups(experiments: list[Experiment]) -> list[tuple[list[Experiment], dict[str, list[str]]]]:
    """Experiments whose configs differ only by seed (and name, paths, devices) and whose evaluations cover the
    same rows (a split evaluated on its first rows only, ``--max_examples``, is another group:
    :func:`evaluated_rows_key`) form one group; a seed counts once. Each group: its runs, one per seed in seed order (of several runs with one seed, the newest evaluated:
    :func:`evaluated_at`, then the last folder name), and for each of them that stands for several runs, its name
    -> every run of its seed (folder names, in order)."""
    groups: dict[tuple, dict] = {}
    for e in experiments:
        groups.setdefault((science_key(e.config), evaluated_rows_key(e)), {}).setdefault(
            repr(e.config.get("seed")), []
        ).append(e)
    result = []
    for by_seed in groups.values():
        members, folded = [], {}
        for runs in by_seed.values():
            counted = max(runs, key=lambda e: (evaluated_at(e), e.name))
            members.append(counted)
            if len(runs) > 1:
                folded[counted.name] = sorted(e.name for e in runs)
        members.sort(key=lambda e: (e.config.get("seed") is None, e.config.get("seed"), e.name))
        result.append((members, folded))
    return result


def group_by_seed(experiments: list[Experiment]) -> list[list[Experiment]]:
    """The runs of each group of :func:`seed_groups` (one per seed)."""
    return [members for members, _ in seed_groups(experiments)]


def folded_note(members: list[Experiment], folded: dict[str, list[str]]) -> str:
    """Which runs of a group count, when some of its seeds have several runs."""
    parts = [
        f"seed {m.config.get('seed')}: {len(folded[m.name])} runs ({', '.join(folded[m.name])}) count once, "
        f"as {m.name} (the newest evaluated)"
        for m in members
        if m.name in folded
    ]
    return "; ".join(parts)


def group_name(members: list[Experiment], folded: dict[str, list[str]] | None = None) -> str:
    """A row's name: the run's (one seed), or the runs' common prefix with the seeds; with how many runs a seed
    that has several stands for (``folded``: :func:`seed_groups`)."""
    names = [str(m.config.get("experiment", m.name)) for m in members]
    runs = "; ".join(
        f"{len(folded[m.name])} runs of seed {m.config.get('seed')}" for m in members if folded and m.name in folded
    )
    if len(names) == 1:
        return names[0] + (f" ({runs})" if runs else "")
    prefix = os.path.commonprefix(names).rstrip("_-.s")
    seeds = ",".join(str(m.config.get("seed")) for m in members)
    return f"{prefix or names[0]} (seeds {seeds}{'; ' + runs if runs else ''})"


def varying_fields(experiments: list[Experiment]) -> list[str]:
    """Fields whose value differs between at least two experiments that both have the field (a field only
    one kind of run has, e.g. the student shape of a distillation next to a teacher, is left out)."""
    from .result_columns import varying

    return varying([e.config for e in experiments], IGNORED_FIELDS)


def stats(values: list[float]) -> dict:
    """The numbers behind a table cell: mean, sample std (None for fewer than two values), n and the values."""
    n = len(values)
    return {
        "mean": statistics.mean(values) if n else None,
        "std": statistics.stdev(values) if n > 1 else None,
        "n": n,
        "values": list(values),
    }


def mean_std(values: list[float], digits: int = 4) -> str:
    return format_stats(stats(values), digits)


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


def _size(exp: ExperimentDir, step: int | None) -> tuple[int, int, int] | None:
    """(parameters, bytes, step) of a checkpoint (the latest one when ``step`` is None)."""
    if step is None:
        have = exp.checkpoints()
        if not have:
            return None
        step = have[-1]
    path = exp.checkpoint_path(step)
    if not path.is_file():
        return None
    return checkpoint_params(path), path.stat().st_size, step


def recorded_command(config: dict) -> str | None:
    """The command line a run's config.json records (``provenance.command``); None for older configs."""
    prov = config.get("provenance")
    command = prov.get("command") if isinstance(prov, dict) else config.get("command")
    return command if isinstance(command, str) and command.strip() else None


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def onnx_speed_record(exp: ExperimentDir) -> dict | None:
    """The newest ONNX export of an experiment (``export_model.py --format onnx`` writes
    ``<folder>/onnx-model-<step>/export.json``; any sub-folder's ``export.json`` with ``"format": "onnx"`` counts),
    newest by the record's modification time, then by step; None when it has none."""
    if not exp.path.is_dir():
        return None
    found = []
    for path in exp.path.glob("*/export.json"):
        ours = path.parent.name.startswith("onnx-model-")
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            if ours:
                raise UserError(
                    f"{path}: not an export record written by export_model.py --format onnx ({type(e).__name__})"
                ) from None
            continue
        if not isinstance(record, dict) or record.get("format") != "onnx":
            continue
        onnx: Any = record.get("onnx")  # a JSON value: a dict wherever rates is one
        rates = onnx.get("examples_per_s") if isinstance(onnx, dict) else None
        if (
            not isinstance(rates, dict)
            or not _number(rates.get("onnxruntime"))
            or not _number(rates.get("pytorch"))
            or not (rates.get("onnxruntime_int8") is None or _number(rates.get("onnxruntime_int8")))
        ):
            raise UserError(
                f"{path}: not an ONNX export record written by export_model.py --format onnx (no "
                f"onnx.examples_per_s with numbers for onnxruntime and pytorch)"
            )
        m = CKPT_RE.match(str(record.get("checkpoint", "")))
        step = int(m.group(1)) if m else None
        found.append(
            (
                path.stat().st_mtime_ns,
                -1 if step is None else step,
                {
                    "export": f"{path.parent.name}/{path.name}",
                    "checkpoint": record.get("checkpoint"),
                    "step": step,
                    "onnxruntime": float(rates["onnxruntime"]),
                    "onnxruntime_int8": None
                    if rates.get("onnxruntime_int8") is None
                    else float(rates["onnxruntime_int8"]),
                    "pytorch": float(rates["pytorch"]),
                    **{k: onnx.get(k) for k in ("split", "rows", "batch_size", "threads", "device")},
                    "metrics": onnx.get("metrics"),
                    "exports": 0,
                },
            )
        )
    if not found:
        return None
    found.sort(key=lambda f: f[:2])
    newest = found[-1][2]
    newest["exports"] = len(found)
    return newest


def split_rule(task: Task, rule: Rule, split: str) -> Rule:
    """The rule that picks the checkpoint reported on ``split``: ``rule``, except that a diagnostic never chooses:
    under ``best`` without ``--select_on`` it is reported at the checkpoint best on the task's dev split."""
    if split in task.diagnostics and rule.kind == "best" and rule.select_on is None:
        return Rule("best", task.dev_split)
    return rule


def headline_split(task: Task, splits: list[str]) -> str | None:
    """The split whose main metric a row is summed up by (throughput, the Pareto plot): the last reported split
    that is not a diagnostic, else the last one."""
    return next((s for s in reversed(splits) if s not in task.diagnostics), splits[-1] if splits else None)


def row_record(
    members: list[Experiment],
    task,
    rule: Rule,
    splits: list[str],
    teachers: set[str],
    folded: dict[str, list[str]] | None = None,
) -> dict:
    """The numbers of one table row (a seed group, one run per seed: ``folded`` names the runs of a seed that
    count once, :func:`seed_groups`): every cell of the markdown row is formatted from them. Each split holds its
    own metrics (``Task.metrics_for``: a diagnostic's), at the checkpoint :func:`split_rule` picks."""
    folded = folded or {}
    record: dict = {
        "group": group_name(members, folded),
        "members": [m.name for m in members],
        "seeds": [m.config.get("seed") for m in members],
        "folded": dict(folded),
        "splits": {},
        "notes": [],
    }
    chosen_steps: list[int] = []
    for s in splits:
        metric_cols = list(task.metrics_for(s))
        split_rule_ = split_rule(task, rule, s)
        evaluated, steps = [], []
        values: dict[str, list[float]] = {m: [] for m in metric_cols}
        for e in members:
            try:
                step, row = select_row(e.tables, s, split_rule_, task.main_metric)
            except UserError:
                chooser = split_rule_.chooser(s)
                if s in task.diagnostics and s in e.tables and chooser not in e.tables:
                    record["notes"].append(
                        f"{e.name}: {s} evaluated but not {chooser}, which chooses the checkpoint "
                        f"{s} is reported at: evaluate {chooser} too"
                    )
                continue
            evaluated.append(e.name)
            steps.append(step)
            for m in metric_cols:
                values[m].append(row[m])
        subset = next((n for e in members if s in e.tables and (n := subset_rows(e.tables[s])) is not None), None)
        record["splits"][s] = {
            "members": evaluated,
            "ckpt": steps,
            "subset_rows": subset,
            "diagnostic": s in task.diagnostics,
            "metrics": {m: stats(values[m]) for m in metric_cols},
        }
        chosen_steps = chosen_steps or steps
    first = members[0]
    size = _size(first.exp, chosen_steps[0] if chosen_steps else None)
    teacher = teacher_of(first)
    tsize = _size(teacher, first.config.get("tckpt")) if teacher is not None else None
    record["size"] = {
        "ckpt": size[2] if size else None,
        "params": size[0] if size else None,
        "bytes": size[1] if size else None,
        "teacher": teacher.name if teacher is not None else None,
        "teacher_ckpt": tsize[2] if tsize else None,
        "teacher_params": tsize[0] if tsize else None,
        "teacher_bytes": tsize[1] if tsize else None,
    }
    rates: list[tuple[str, float, str]] = []  # (experiment, examples/s, device) of each member's evaluation
    how: dict[str, Any] = {}  # the inference record (evaluate.inference_record) of the first member with one
    headline = headline_split(task, splits)
    for e in members:
        table = e.tables.get(headline) if headline is not None else None  # None: no split
        if table and table.get("inference"):
            rates.append((e.name, table["inference"]["examples_per_s"], table["inference"]["device"]))
            how = how or table["inference"]
    record["inference"] = {
        "split": headline,
        "examples_per_s": statistics.median(r for _, r, _ in rates) if rates else None,
        "device": rates[0][2] if rates else None,
        "precision": how.get("precision"),
        "batch_size": how.get("batch_size"),
        "members": [n for n, _, _ in rates],
        "values": [r for _, r, _ in rates],
    }
    record["onnx"] = onnx_speed_record(first.exp)
    record["is_teacher"] = any(m.name in teachers for m in members)
    record["hyper"] = {}  # filled by build_table (the varying fields are known once every row is)
    record["commands"] = [{"member": m.name, "command": recorded_command(m.config)} for m in members]
    return record


# the fixed columns of the CSV after the per-split ones (the varying hyper-parameters and commands follow)
CSV_FIXED = [
    "size ckpt",
    "params",
    "bytes",
    "teacher",
    "teacher ckpt",
    "teacher params",
    "teacher bytes",
    "infer examples/s",
    "infer device",
    "infer values",
    "infer precision",
    "infer batch size",
    "onnx examples/s",
    "onnx int8 examples/s",
    "onnx export torch examples/s",
    "onnx export",
    "is teacher",
]


def _csv_cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)  # floats as repr: they read back exactly


@dataclass
class Table:
    task: str
    splits: list[str]
    rule: Rule
    hyper: list[str]  # the config fields that differ between rows (the CSV's and JSON's hyper-parameters)
    records: list[dict] = field(default_factory=list)  # the numbers of each row (row_record)
    metrics: list[str] = field(default_factory=list)
    main_metric: str = "accuracy"
    notes: list[str] = field(default_factory=list)  # runs of one seed counted once, evaluations skipped
    split_metrics: dict[str, list[str]] = field(default_factory=dict)  # each split's metric columns
    split_rules: dict[str, Rule] = field(default_factory=dict)  # the rule of each split (split_rule)
    diagnostics: list[str] = field(default_factory=list)  # the reported splits that are diagnostics
    headline: str | None = None  # the split a row is summed up by (headline_split)
    configs: list[dict] = field(default_factory=list)  # each row's config.json (its first run's)
    ignored: frozenset = IGNORED_FIELDS  # config fields never shown (names, provenance, devices)
    shown: list = field(default_factory=list)  # the markdown's columns (result_columns.Column), in order

    def metrics_of(self, split: str) -> list[str]:
        return self.split_metrics.get(split, self.metrics)

    def rule_of(self, split: str) -> Rule:
        return self.split_rules.get(split, self.rule)

    def choose(self, spec: tuple[str, ...] | None, roots: list[Path]) -> None:
        """Show the columns ``--columns`` names (None: the default set; fine_tune/result_columns.py); paths in the
        cells relative to ``roots`` (the experiment root, the data root)."""
        from . import result_columns

        self.shown = result_columns.choose(self, spec, roots)
        exported = [r["group"] for r in self.records if r["onnx"] is not None]
        if exported and not any(c.name.startswith("onnx") for c in self.shown):
            self.notes.append(
                f"ONNX exports of {', '.join(exported)}: --columns default,onnx,onnx_speedup shows "
                f"their ONNX Runtime examples/s"
            )

    @property
    def columns(self) -> list[str]:
        """The markdown's header."""
        return [c.header for c in self.shown]

    @property
    def rows(self) -> list[list[str]]:
        """The markdown's cells, row by row."""
        return [list(cells) for cells in zip(*(c.cells for c in self.shown))] if self.shown else []

    def caption(self) -> str:
        names = {c.name for c in self.shown}
        parts = [f"{s}: {self.rule_of(s).label(s)}" for s in self.splits]
        caption = (
            "Checkpoint per reported split — " + "; ".join(parts) + ". Groups of seeds: mean ± sample std "
            "over n seeds, each seed once (of several runs of one config and seed, the newest evaluated); runs whose "
            "evaluations cover other rows are never pooled (\"first N rows\": evaluated with --max_examples N, "
            "a row of its own); ckpt "
            "lists each seed's checkpoint, never one that is not on disk. — : no value (or not a number). "
            "Paths: relative to the experiment root or the data root (…/: the last parts of a path outside "
            "both)."
        )
        if names & {"params", "params_ratio", "size", "teacher_params"}:
            caption += " params, size: the row's first run's checkpoint (the one reported) and its teacher's."
        if "speed" in names:
            caption += (
                " ex/s (PyTorch, evaluation): median rows/s of run_fine_tune_eval.py's forward passes, on "
                "the device, precision and batch size named (in the header when every row shares them)."
            )
        if self.diagnostics:
            caption += (
                f" Diagnostics ({', '.join(self.diagnostics)}): scored with their own metrics in their own "
                f"columns, never pooled with another split's, and never choosing the checkpoint they are "
                f"reported at."
            )
        if any(n.startswith("onnx") for n in names):
            caption += (
                " ONNX Runtime: rows/s of the first run's newest ONNX export (export_model.py --format onnx), "
                "measured by its check; ONNX Runtime ÷ PyTorch: over PyTorch's rows/s in that same check."
            )
        return caption

    def markdown(self) -> str:
        lines = [
            f"**{self.task}** — {self.caption()}",
            "",
            "|" + "|".join(self.columns) + "|",
            "|" + "|".join("-" for _ in self.columns) + "|",
        ]
        lines += ["|" + "|".join(r) + "|" for r in self.rows]
        if self.notes:
            lines += ["", *(f"- note: {n}" for n in self.notes)]
        return "\n".join(lines) + "\n"

    def data(self) -> dict:
        """The table as numbers (the JSON file beside the markdown)."""
        return {
            "task": self.task,
            "caption": self.caption(),
            "rule": {
                "kind": self.rule.kind,
                "select_on": self.rule.select_on,
                "per_split": {s: self.rule_of(s).label(s) for s in self.splits},
            },
            "splits": self.splits,
            "metrics": self.metrics,
            "main_metric": self.main_metric,
            "split_metrics": {s: self.metrics_of(s) for s in self.splits},
            "diagnostics": self.diagnostics,
            "hyper": self.hyper,
            "columns": self.columns,
            "column_names": [c.name for c in self.shown],
            "rows": self.records,
            "notes": self.notes,
        }

    def hyper_column(self, key: str) -> str:
        own = ("group", "members", "seeds", "folded runs", "commands")
        return f"hyper {key}" if key in CSV_FIXED or key in own else key

    def csv_columns(self) -> list[str]:
        cols = ["group", "members", "seeds", "folded runs"]
        for s in self.splits:
            for m in self.metrics_of(s):
                cols += [f"{s} {m} mean", f"{s} {m} std", f"{s} {m} n", f"{s} {m} values"]
            cols += [f"{s} ckpt", f"{s} subset rows"]
        return cols + CSV_FIXED + [self.hyper_column(k) for k in self.hyper] + ["commands"]

    def csv(self) -> str:
        """The table as CSV: one line per row, numbers as numbers (lists as JSON arrays, missing values empty)."""
        import csv
        import io

        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(self.csv_columns())
        for r in self.records:
            line = [r["group"], r["members"], r["seeds"], r["folded"]]
            for s in self.splits:
                split = r["splits"][s]
                for m in self.metrics_of(s):
                    st = split["metrics"][m]
                    line += [st["mean"], st["std"], st["n"], st["values"]]
                line += [split["ckpt"], split.get("subset_rows")]
            size, inference, o = r["size"], r["inference"], r["onnx"] or {}
            line += [
                size["ckpt"],
                size["params"],
                size["bytes"],
                size["teacher"],
                size["teacher_ckpt"],
                size["teacher_params"],
                size["teacher_bytes"],
                inference["examples_per_s"],
                inference["device"],
                inference["values"],
                inference["precision"],
                inference["batch_size"],
                o.get("onnxruntime"),
                o.get("onnxruntime_int8"),
                o.get("pytorch"),
                o.get("export"),
                r["is_teacher"],
            ]
            line += [r["hyper"].get(k) for k in self.hyper]
            line.append([c["command"] for c in r["commands"]])
            writer.writerow([_csv_cell(v) for v in line])
        return buf.getvalue()

    def commands(self) -> str:
        """Each row's exact commands (``--commands``), as a shell block: a run whose config.json predates the
        recorded command line says so."""
        lines = ["Commands (each run's config.json, provenance.command):", "", "```sh"]
        for i, r in enumerate(self.records):
            lines += [""] * (i > 0) + [f"# row: {r['group']}"]
            for c in r["commands"]:
                lines += (
                    [f"# run: {c['member']}", c["command"]]
                    if c["command"]
                    else [f"# run: {c['member']}: (not recorded)"]
                )
        return "\n".join(lines + ["```"]) + "\n"


def build_table(
    experiments: list[Experiment],
    t: Task,
    rule: Rule,
    splits: list[str] | None = None,
    columns: tuple[str, ...] | None = None,
    roots: list[Path] | None = None,
) -> Table:
    """The table of ``experiments``: its rows' numbers (:func:`row_record`), the markdown showing the columns
    ``columns`` names (None: the default set; ``("list",)``: none chosen yet), paths relative to ``roots`` (default:
    the experiment root)."""
    if splits is None:
        splits = [s for s in t.scored if any(s in e.tables for e in experiments)]
    if rule.select_on is not None:
        t.check_split(rule.select_on, "--select_on")
    metric_cols = list(t.metrics)
    split_metrics = {s: list(t.metrics_for(s)) for s in splits}
    hyper = varying_fields(experiments)
    teachers = {d.name for e in experiments if (d := teacher_of(e)) is not None}
    records, notes, configs = [], [], []
    for e in experiments:
        notes += [f"{e.name}: {absent_note(s, steps)}" for s, steps in e.absent.items()]
    for members, folded in seed_groups(experiments):
        record = row_record(members, t, rule, splits, teachers, folded)
        notes += record["notes"]
        if folded:
            notes.append(f"{record['group']}: {folded_note(members, folded)}")
        # members of a group share every field that can vary (science_key): the first one's values are the row's
        record["hyper"] = {k: members[0].config[k] for k in hyper if k in members[0].config}
        records.append(record)
        configs.append(members[0].config)
    table = Table(
        t.name,
        splits,
        rule,
        hyper,
        records,
        metric_cols,
        t.main_metric,
        notes,
        split_metrics,
        {s: split_rule(t, rule, s) for s in splits},
        [s for s in splits if s in t.diagnostics],
        headline_split(t, splits),
        configs,
    )
    if columns != ("list",):
        root = experiments[0].exp.root if experiments else Path(".")
        table.choose(columns, roots if roots is not None else [Path(root).absolute()])
    return table


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
        return (
            f"{a} − {b} {self.metric} on {self.split}: {self.diff:+.4f} (95% CI [{self.low:+.4f}, {self.high:+.4f}]; "
            f"{a} {self.acc_a:.4f}, {b} {self.acc_b:.4f}; paired bootstrap, {self.resamples} resamples of "
            f"n={self.n}; share of resamples with difference <= 0: {self.p_not_better:.4f})"
        )


def paired_bootstrap(
    correct_a: np.ndarray, correct_b: np.ndarray, resamples: int = 10000, seed: int = 0, split: str = ""
) -> Bootstrap:
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
    return Bootstrap(
        split, n, float(a.mean()), float(b.mean()), float(low), float(high), resamples, float((stats <= 0).mean())
    )


def paired_bootstrap_metric(
    labels: np.ndarray,
    preds_a: np.ndarray,
    preds_b: np.ndarray,
    metric: str,
    resamples: int = 10000,
    seed: int = 0,
    split: str = "",
) -> Bootstrap:
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
    return Bootstrap(
        split,
        n,
        fn(labels, preds_a),
        fn(labels, preds_b),
        float(low),
        float(high),
        resamples,
        float((stats <= 0).mean()),
        metric,
    )


def compare(
    exp_root: Path, task: Task, name_a: str, name_b: str, split: str, rule: Rule, resamples: int = 10000, seed: int = 0
) -> Bootstrap:
    """Paired bootstrap of the task's main metric between two experiments (folder names), each at its checkpoint
    chosen by ``rule``."""
    correct, predicted = [], []
    idx_seen = None
    for name in (name_a, name_b):
        exp = ExperimentDir(Path(exp_root), check_name(name, "--compare"))
        if not exp.config_path.is_file():
            raise UserError(f"--compare {name}: no experiment folder {exp.path}")
        tables = {
            s: kept
            for s in task.labelled
            if (t := read_eval(exp, s)) is not None and (kept := on_disk(exp, t)[0]) is not None
        }
        step, _ = select_row(tables, split, rule, task.main_metric)
        idx, labels, preds = read_predictions(exp, split, step, tables.get(split))
        if idx_seen is not None and not np.array_equal(idx, idx_seen):
            raise UserError(f"--compare: {name_a} and {name_b} were evaluated on different rows of {split}")
        idx_seen = idx
        correct.append(preds == labels)
        predicted.append(preds)
    metric = task.main_metric
    if metric == "accuracy":
        return paired_bootstrap(correct[0], correct[1], resamples, seed, split)
    return paired_bootstrap_metric(labels, predicted[0], predicted[1], metric, resamples, seed, split)


def _curve_groups(exp_root: Path, task: Task, patterns: tuple[str, ...]) -> list[list[Experiment]]:
    """The seed groups of the experiments the ``--curves`` globs name (every glob must name one)."""
    candidates = scan(exp_root, task, None, evaluated=False)
    for p in patterns:
        if not any(matches(e.name, e.config, p) for e in candidates):
            raise UserError(f"--curves {p!r}: no {task.name} experiment folder or name in {exp_root} matches it")
    return group_by_seed([e for e in candidates if any(matches(e.name, e.config, p) for p in patterns)])


def run_results(plan: ResultsPlan) -> str:
    """``results_table.py``: print the table (and the comparison, the commands), write it as markdown, CSV and
    JSON, and with ``--plot`` / ``--curves`` the pictures and their data. The plan (fine_tune/plan/inference.py) has
    checked the flags and the output paths (none is a file results_table.py did not write, unless --overwrite);
    every input is read and checked before the first file is written."""
    from . import result_plots

    exp_root, task, rule, splits, paths, out = plan.exp_root, plan.task, plan.rule, plan.splits, plan.paths, plan.out
    experiments = scan(exp_root, task, plan.experiments)
    if not experiments:
        raise UserError(f"no evaluated {task.name} experiment in {exp_root} (run run_fine_tune_eval.py first)")
    if plan.data_root is not None:  # no number of rows that have changed since their evaluation reaches the table
        digests: dict = {}
        for e in experiments:
            for s, evaluation in e.tables.items():
                why = evaluated_rows_changed(e.exp, evaluation, task, plan.data_root, s, digests)
                if why:
                    raise UserError(why)
    roots = [
        r
        for root in (exp_root, plan.data_root)
        if root is not None
        for r in dict.fromkeys((Path(root).absolute(), Path(root).resolve()))
    ]
    table = build_table(experiments, task, rule, splits, plan.columns, roots)
    if plan.columns == ("list",):  # the names there are, nothing written
        from .result_columns import listing

        print(listing(table, roots), end="")
        return ""
    text = table.markdown()
    if plan.compare:
        a, b = plan.compare
        split = plan.compare_split
        assert split is not None, "the plan sets --compare_split with --compare"
        text += (
            "\n" + compare(exp_root, task, a, b, split, rule, plan.resamples, plan.bootstrap_seed).describe(a, b) + "\n"
        )
    if plan.commands:
        text += "\n" + table.commands()
    files: dict[str, str | bytes | dict] = {"md": text, "csv": table.csv(), "json": table.data()}
    notes = [f"(the same table as data: {paths['csv']}, {paths['json']})"]
    if plan.plot:
        pareto = result_plots.pareto_data(table)
        if not any(panel["points"] for panel in pareto["panels"].values()):
            raise UserError(
                f"--plot: no row has a {pareto['split']} {pareto['metric']} together with a checkpoint "
                f"to count parameters or an inference examples/s; nothing to plot"
            )
        files["pareto_json"], files["pareto_png"] = pareto, result_plots.render_pareto(pareto)
        fronts = "; ".join(f"{k}: {', '.join(v['front']) or 'none'}" for k, v in pareto["panels"].items())
        notes.append(f"(Pareto plot: {paths['pareto_png']}, its data {paths['pareto_json']}; front by {fronts})")
    if plan.curves is not None:
        groups = _curve_groups(exp_root, task, plan.curves)
        curves = result_plots.curves_data(groups, [group_name(g) for g in groups], task, splits)
        files["curves_json"], files["curves_png"] = curves, result_plots.render_curves(curves)
        notes.append(f"(learning curves: {paths['curves_png']}, its data {paths['curves_json']})")
    # every input read and checked: now write, as one replacement a kill cannot block (fine_tune/outputs.py)
    write_outputs(
        {
            paths[key]: json.dumps(content, indent=2, default=str) + "\n" if isinstance(content, dict) else content
            for key, content in files.items()
        },
        "results_table.py",
    )
    print(text, end="")
    print(f"(written to {out})")
    for note in notes:
        print(note)
    return text
