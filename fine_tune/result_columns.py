"""The results table's markdown columns (``results_table.py --columns``): which exist, which the table shows by
default, and how each cell is written from the rows' numbers (:func:`fine_tune.results.row_record`).

The markdown is for reading; the CSV and JSON beside it keep every number and every recorded field as recorded
(absolute paths, every varying config field, both of the ONNX export's speeds), whatever ``--columns`` shows.

- **One mark for missing**: :data:`MISSING` (``—``) for a value a row does not have, an unset field (None) and an
  undefined number (NaN: Pearson's r of constant predictions); never ``None``, ``nan`` or an empty cell.
- **Short paths**: a path under the experiment root or the data root is written relative to that root; any other
  absolute path (a pretrained model elsewhere) as ``…/`` and its last parts, as few as tell the column's paths
  apart (:func:`short_paths`).
- **No pair saying the same thing**: one column stands for each group of fields that name one thing
  (:data:`COVERS`): ``teacher`` for every field naming the teacher or its logits data set (teacher_exp, tmodel,
  tckpt, teacher_experiment, teacher_checkpoint, teacher_hf, teacher_layers, teacher_label_order); ``model`` for
  the student's family, depth, width and pretrained weights; ``method`` for the method and the layer mapping it
  resolved (hidden_mapping). ``differs`` lists the other fields whose values differ between rows, the training
  split of a logits-distilled student being the split its teacher's logits were computed on (logits_split), not
  the logits data set's name (the teacher column's).
- **One speed**: ``speed`` is PyTorch's examples/s measured by the evaluation (run_fine_tune_eval.py: median over
  the checkpoints of the forward passes' rows/s, at the evaluation's batch size, device and precision), the number
  the Pareto plot uses. export_model.py --format onnx measures PyTorch again (its own batch size and threads, on
  the export check's rows): a second PyTorch examples/s of the same model that differs from the first because
  the conditions differ. The markdown never shows it: ``onnx`` / ``onnx_int8`` are ONNX Runtime's examples/s and
  ``onnx_speedup`` their ratio to PyTorch's in that same run (the CSV and JSON hold all three numbers).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath

from .errors import UserError, did_you_mean
from .tasks.metrics import SHORT

MISSING = "—"

# the config fields each column stands for: never listed again in ``differs``
COVERS = {
    "teacher": frozenset(
        {
            "teacher_exp",
            "tmodel",
            "tckpt",
            "teacher_experiment",
            "teacher_checkpoint",
            "teacher_hf",
            "teacher_layers",
            "teacher_label_order",
            "logits_split",
        }
    ),
    "model": frozenset({"model", "num_hidden_layers", "d_model", "ptrain_ver", "student_ptrain_ver"}),
    "method": frozenset({"method", "hidden_mapping"}),
}
COVERED = frozenset().union(*COVERS.values())

# shown when --columns is not given ("metrics": every reported split's metrics and checkpoints); a column of these
# that is missing in every row is left out
DEFAULT = ("experiment", "method", "model", "teacher", "metrics", "params", "params_ratio", "speed", "differs")

FIXED_ABOUT = {
    "experiment": "the row: the experiment's name, or a seed group's common prefix and seeds",
    "method": "the recipe: the layer-wise method, KD (a teacher's logits) or fine-tune",
    "model": "the student's family, depth (L) and width (H), or the pretrained weights it was fine-tuned from",
    "teacher": "the teacher checkpoint distilled from (a logits data set's teacher for KD)",
    "metrics": "every reported split's metrics and checkpoint (mean ± sample std over seeds)",
    "seeds": "the seeds of the row's runs",
    "params": "the student checkpoint's parameters",
    "params_ratio": "the student's parameters ÷ its teacher's",
    "teacher_params": "the teacher checkpoint's parameters",
    "size": "the student checkpoint's file size",
    "speed": "PyTorch examples/s of the evaluation (the Pareto plot's)",
    "onnx": "ONNX Runtime fp32 examples/s of the first run's newest ONNX export",
    "onnx_int8": "ONNX Runtime int8 examples/s of that export",
    "onnx_speedup": "that export's ONNX Runtime examples/s ÷ PyTorch's, measured in the same run",
    "differs": "the other config fields whose values differ between rows (name=value)",
}


@dataclass
class Column:
    name: str
    header: str
    cells: list[str]


def missing(value) -> bool:
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def short_paths(values, roots: list[Path]) -> dict[str, str]:
    """Each absolute path among ``values`` (strings) written short: relative to the first of ``roots`` holding it,
    else ``…/`` and its fewest last parts that no other absolute path among ``values`` outside the roots shares."""
    out, outside = {}, []
    for v in {v for v in values if isinstance(v, str) and PurePath(v).is_absolute()}:
        for root in roots:
            try:
                out[v] = PurePath(v).relative_to(root).as_posix() or "."
                break
            except ValueError:
                continue
        else:
            outside.append(v)
    parts = {v: PurePath(v).parts[1:] for v in outside}
    for v, p in parts.items():
        k = 1
        while k < len(p) and any(q != p and q[-k:] == p[-k:] for q in parts.values()):
            k += 1
        out[v] = "…/" + "/".join(p[-k:]) if p else v
    return out


def show(value, paths: dict[str, str]) -> str:
    """A cell of one value: :data:`MISSING` for None or NaN, a path shortened (``paths``: :func:`short_paths`)."""
    if missing(value):
        return MISSING
    return paths.get(value, str(value)) if isinstance(value, str) else str(value)


def method_of(config: dict, teacher: str | None) -> str:
    """The method's registry name; a recipe run: ``recipe <file name> <first 8 hex of its SHA-256>`` (two edits of
    one file are two recipes), after ``<method> + `` where the recipe adds its terms to a method."""
    recipe = config.get("recipe")
    if config.get("method") == "recipe" and isinstance(recipe, dict):
        base = f"{recipe['method']} + " if isinstance(recipe.get("method"), str) else ""
        return f"{base}recipe {Path(str(recipe.get('path', '?'))).name} {str(recipe.get('sha256', ''))[:8]}".rstrip()
    if config.get("method"):
        return str(config["method"])
    return "KD" if teacher is not None else "fine-tune"


def teacher_of_config(config: dict, fallback: str | None) -> str | None:
    """The teacher checkpoint a run learnt from, as its config.json names it: ``<folder>/model-<step>.pt`` (a
    layer-wise run records it so; a logits-KD run records its logits set's teacher folder and step), a Hugging
    Face teacher's source, else ``fallback`` (the teacher folder the results table found)."""
    ckpt, folder = config.get("teacher_checkpoint"), config.get("teacher_experiment")
    if isinstance(ckpt, str):
        return ckpt
    if folder:
        return f"{folder}/model-{ckpt}.pt" if ckpt is not None else str(folder)
    if config.get("teacher_hf"):
        return str(config["teacher_hf"])
    if config.get("teacher_exp"):
        tckpt = config.get("tckpt")
        folder = f"{config['teacher_exp']}_{config.get('tmodel', 'bert')}_{config.get('task')}"
        return f"{folder}/model-{tckpt}.pt" if tckpt is not None else folder
    return fallback


def model_of(config: dict, teacher: str | None) -> tuple[str, str | None]:
    """(the family and the student's shape, the pretrained weights it started from or None)."""
    text = " ".join(
        [
            str(config.get("model", MISSING)),
            *(
                f"{short}{config[k]}"
                for short, k in (("L", "num_hidden_layers"), ("H", "d_model"))
                if config.get(k) is not None
            ),
        ]
    )
    source = config.get("student_ptrain_ver") or (config.get("ptrain_ver") if teacher is None else None)
    return text, source


def viewed(config: dict, method: str) -> dict:
    """The config as ``differs`` compares it: a logits-distilled student's (``method`` KD) dataset is the split
    its teacher's logits were computed on (recorded as logits_split; before that, ``SET:SPLIT``'s split, else
    train), the logits set's name being the teacher column's."""
    if method != "KD" or "dataset" not in config:
        return config
    split = config.get("logits_split") or (str(config["dataset"]).split(":", 1) + ["train"])[1]
    return {**config, "dataset": split}


def conditions(parts: list[dict | None]) -> tuple[str, list[str]]:
    """How a speed was measured, per row (``parts``: each row's {name: text}, None for a row without the speed):
    the parts every measured row shares (for the header) and each row's own others (for its cell)."""
    measured = [p for p in parts if p is not None]
    keys = [k for k in (measured[0] if measured else {})]
    shared = [k for k in keys if all(p.get(k) == measured[0][k] for p in measured)]
    own = [", ".join(str(p[k]) for k in p if k not in shared and p[k] is not None) if p else "" for p in parts]
    return ", ".join(str(measured[0][k]) for k in shared if measured[0][k] is not None), own


def speed_column(
    name: str, header: str, values: list[float | None], parts: Sequence[dict | None], fmt=lambda v: f"{v:.0f}"
) -> Column:
    shared, own = conditions([p if v is not None else None for v, p in zip(values, parts)])
    cells = [MISSING if v is None else fmt(v) + (f" ({o})" if o else "") for v, o in zip(values, own)]
    return Column(name, f"{header}{', ' + shared if shared else ''})", cells)


def _threads(n) -> str | None:
    return None if n is None else f"{n} thread{'s' if n != 1 else ''}"


def catalogue(table, roots: list[Path]) -> tuple[dict[str, Column], dict[str, list[str]], list[str]]:
    """Every column the table can show: {name: Column}; the groups of names (``metrics``, each split: its metric
    and checkpoint columns); and the config fields a row records (their names are columns too)."""
    records, configs = table.records, table.configs
    teachers = [teacher_of_config(c, r["size"]["teacher"]) for r, c in zip(records, configs)]
    models = [model_of(c, t) for c, t in zip(configs, teachers)]
    fields = sorted({k for c in configs for k in c} - table.ignored)
    paths = short_paths([*teachers, *(s for _, s in models), *(c.get(k) for c in configs for k in fields)], roots)
    cols: dict[str, Column] = {}

    def add(name: str, header: str, cells: list[str]) -> None:
        cols[name] = Column(name, header, cells)

    add("experiment", "experiment", [r["group"] for r in records])
    add("method", "method", [method_of(c, t) for c, t in zip(configs, teachers)])
    add("model", "model", [m + (f" from {show(s, paths)}" if s else "") for m, s in models])
    add("teacher", "teacher", [show(t, paths) for t in teachers])
    groups: dict[str, list[str]] = {"metrics": []}
    for s in table.splits:
        names = []
        for m in table.metrics_of(s):
            add(f"{s}.{m}", f"{s} {SHORT.get(m, m)}", [metric_cell(r["splits"][s], m) for r in records])
            names.append(f"{s}.{m}")
        add(
            f"{s}.ckpt",
            f"{s} ckpt ({rule_short(table.rule_of(s), s)})",
            [",".join(map(str, r["splits"][s]["ckpt"])) or MISSING for r in records],
        )
        groups[s] = names + [f"{s}.ckpt"]
        groups["metrics"] += groups[s]
    add(
        "seeds",
        "seeds",
        [",".join(map(str, r["seeds"])) if any(x is not None for x in r["seeds"]) else MISSING for r in records],
    )
    size = [r["size"] for r in records]
    add("params", "params", [MISSING if z["params"] is None else _human(z["params"]) for z in size])
    add(
        "params_ratio",
        "params ÷ teacher",
        [f"{z['params'] / z['teacher_params']:.2f}×" if z["params"] and z["teacher_params"] else MISSING for z in size],
    )
    add(
        "teacher_params",
        "teacher params",
        [MISSING if z["teacher_params"] is None else _human(z["teacher_params"]) for z in size],
    )
    add("size", "size", [MISSING if z["bytes"] is None else f"{z['bytes'] / 2**20:.1f} MiB" for z in size])
    inference = [r["inference"] for r in records]
    cols["speed"] = speed_column(
        "speed",
        "ex/s (PyTorch, evaluation",
        [i["examples_per_s"] for i in inference],
        [
            {
                "device": i["device"],
                "precision": i.get("precision"),
                "batch": None if i.get("batch_size") is None else f"batch {i['batch_size']}",
            }
            for i in inference
        ],
    )
    onnx = [r["onnx"] or {} for r in records]
    how = [
        {
            "threads": _threads(o.get("threads")),
            "batch": None if o.get("batch_size") is None else f"batch {o['batch_size']}",
        }
        for o in onnx
    ]
    cols["onnx"] = speed_column(
        "onnx", "ex/s (ONNX Runtime fp32, export check", [o.get("onnxruntime") for o in onnx], how
    )
    cols["onnx_int8"] = speed_column(
        "onnx_int8", "ex/s (ONNX Runtime int8, export check", [o.get("onnxruntime_int8") for o in onnx], how
    )
    add(
        "onnx_speedup",
        "ONNX Runtime ÷ PyTorch (same export check)",
        [
            MISSING
            if not o.get("pytorch")
            else f"{o['onnxruntime'] / o['pytorch']:.2f}×"
            + (f" (int8 {o['onnxruntime_int8'] / o['pytorch']:.2f}×)" if o.get("onnxruntime_int8") is not None else "")
            for o in onnx
        ],
    )
    for k in fields:
        if k not in cols:
            add(k, k, [show(c.get(k), paths) for c in configs])
    return cols, groups, fields


def varying(configs: list[dict], ignored) -> list[str]:
    """Fields whose value differs between at least two configs that both have the field (a field only one kind of
    run has, e.g. the student shape of a distillation next to a teacher, is left out), but the ``ignored`` ones."""
    keys = sorted({k for c in configs for k in c} - set(ignored))
    return [k for k in keys if len({repr(c[k]) for c in configs if k in c}) > 1]


def differs_column(table, shown: list[str], roots: list[Path]) -> Column:
    """``name=value`` of the config fields whose values differ between rows having them (:func:`varying`), leaving
    out those a shown column says (by name, or standing for them: :data:`COVERS`, always left out)."""
    views = [
        viewed(c, method_of(c, teacher_of_config(c, r["size"]["teacher"])))
        for r, c in zip(table.records, table.configs)
    ]
    keys = varying(views, set(shown) | COVERED | table.ignored)
    paths = short_paths([v.get(k) for v in views for k in keys], roots)
    cells = [", ".join(f"{k}={show(v[k], paths)}" for k in keys if k in v) or MISSING for v in views]
    return Column("differs", "differs", cells)


def rule_short(rule, split: str) -> str:
    if rule.kind == "last":
        return "last"
    return "best" if rule.select_on in (None, split) else f"best on {rule.select_on}"


def format_stats(st: dict, digits: int = 4) -> str:
    """A cell from :func:`fine_tune.results.stats`: the value (n=1), ``mean ± std (n=…)`` (n>1), :data:`MISSING`
    (none, or a value that is not a number: NaN)."""
    if st["n"] == 0 or any(missing(v) for v in st["values"]):
        return MISSING
    if st["n"] == 1:
        return f"{st['values'][0]:.{digits}f}"
    return f"{st['mean']:.{digits}f} ± {st['std']:.{digits}f} (n={st['n']})"


def metric_cell(split: dict, metric: str) -> str:
    st = split["metrics"][metric]
    if not split["ckpt"] or format_stats(st) == MISSING:
        return MISSING
    subset = f" (first {split['subset_rows']} rows)" if split.get("subset_rows") is not None else ""
    return format_stats(st) + subset


def _human(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(int(n))


def choose(table, spec: tuple[str, ...] | None, roots: list[Path]) -> list[Column]:
    """The columns ``--columns`` names, in its order (``default``: the default set; ``metrics`` or a split's name:
    its metric and checkpoint columns; a name given twice is shown once); None: the default set, less the
    columns no row has a value in. An unknown name is refused with the names there are."""
    cols, groups, fields = catalogue(table, roots)
    names: list[str] = []
    for token in spec or ("default",):
        if token == "default":
            expanded = [
                n
                for d in DEFAULT
                for n in groups.get(d, [d])
                if n in ("experiment", "differs") or n in groups["metrics"] or any(c != MISSING for c in cols[n].cells)
            ]
        elif token in groups:
            expanded = groups[token]
        elif token in cols or token == "differs":
            expanded = [token]
        else:
            known = available(cols, groups)
            hint = did_you_mean(token, known)
            named = [n for n in known if n not in fields or n in FIXED_ABOUT]
            raise UserError(
                f"--columns {token}: no such column; {hint}columns: {', '.join(named)}, or one of the "
                f"{len(fields)} config fields (--columns list names them)"
            )
        names += [n for n in expanded if n not in names]
    shown = [cols[n] if n != "differs" else None for n in names]
    if "differs" in names:
        differs = differs_column(table, names, roots)
        if "differs" in (spec or ()) or any(c != MISSING for c in differs.cells):
            shown[names.index("differs")] = differs
    return [c for c in shown if c is not None]


def available(cols: dict[str, Column], groups: dict[str, list[str]]) -> list[str]:
    return list(dict.fromkeys(["default", *groups, *cols, "differs"]))


def listing(table, roots: list[Path]) -> str:
    """``--columns list``: every name, what it shows, and the default set."""
    cols, groups, fields = catalogue(table, roots)
    lines = [
        f"columns of the {table.task} table (--columns NAME,NAME...; the markdown shows them in that order, the "
        f"CSV and JSON keep every field):",
        f"  default: {', '.join(DEFAULT)} (less the columns no row has a value in)",
    ]
    for name, about in FIXED_ABOUT.items():
        if name in cols or name in groups or name == "differs":
            lines.append(f"  {name}: {about}")
    for s in table.splits:
        lines.append(f"  {s}: {', '.join(groups[s])} ({s}'s metrics and checkpoint)")
    lines.append(f"  config fields: {', '.join(fields)}")
    return "\n".join(lines) + "\n"
