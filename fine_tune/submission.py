"""A whole benchmark submission: the zip the GLUE or SuperGLUE server accepts, assembled from the submission
files ``generate_test_prediction.py`` wrote into the experiment folders (``make_submission.py``).

Every file the server requires must be there; for each one the experiment is the one named with ``--use
TASK=FOLDER``, else the experiment of that task holding the file with the best main metric on the task's dev split
(from its ``eval-{split}.json``). A missing file is refused, with the command that writes it, before anything is
written. The zip holds the files at its root, as the servers expect.

Each submission file ``generate_test_prediction.py`` writes has a record beside it (``<file>.json``: the
checkpoint and its sha256, the split, the rows' identity, whether every row of the split was predicted, the file's
own sha256). A file that is not the one its record describes, that predicts only the first rows
(``--max_examples``), or whose split holds other rows now, is refused, and every file must predict each row of its
split by its id (:func:`check_prediction_file`).
"""

from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import UserError
from .io_utils import read_json_object, sha256_file
from .outputs import write_outputs
from .tasks import TASKS
from .tasks.example import examples_digest

if TYPE_CHECKING:
    from .plan.types import SubmissionPlan

# every file each server requires (GLUE: gluebenchmark.com/submit; SuperGLUE: super.gluebenchmark.com/submit)
REQUIRED = {
    "glue": (
        "CoLA.tsv",
        "SST-2.tsv",
        "MRPC.tsv",
        "STS-B.tsv",
        "QQP.tsv",
        "MNLI-m.tsv",
        "MNLI-mm.tsv",
        "QNLI.tsv",
        "RTE.tsv",
        "WNLI.tsv",
        "AX.tsv",
    ),
    "superglue": (
        "AX-b.jsonl",
        "AX-g.jsonl",
        "BoolQ.jsonl",
        "CB.jsonl",
        "COPA.jsonl",
        "MultiRC.jsonl",
        "ReCoRD.jsonl",
        "RTE.jsonl",
        "WiC.jsonl",
        "WSC.jsonl",
    ),
}


def record_path(path: Path) -> Path:
    """The record of a submission file: ``QQP.tsv`` -> ``QQP.tsv.json``."""
    return path.with_name(path.name + ".json")


def prediction_record(text: str, record: dict) -> str:
    """The record of the submission file of ``text``: ``record`` (what decided it) and the file's sha256, as JSON
    (written after the file: a record naming another file's sha256 is a write that did not finish)."""
    import hashlib

    return (
        json.dumps(dict(record, sha256=hashlib.sha256(text.encode("utf-8")).hexdigest()), indent=2, default=str) + "\n"
    )


def _accepted(task) -> tuple[str, ...] | None:
    """The predictions the task's server takes, as the toolkit writes them (Task.write_submission): class indices
    (``"ints"``) or the labels' file spelling; None for a regression task (a number)."""
    if task.regression:
        return None
    if task.submission_format == "glue" and task.submission_labels == "ints":
        return tuple(str(i) for i in range(task.num_class))
    return tuple(task.labels_in_files)


# a prediction of a regression task, and a GLUE file's id, as the servers read them (ASCII only)
_NUMBER = re.compile(r"-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_INDEX = re.compile(r"0|[1-9][0-9]*")


def _check_prediction(where: str, value, task) -> None:
    accepted = _accepted(task)
    if accepted is None:
        import math

        # a number as the server reads it: ASCII decimal notation (Python's float() also takes "1_0", " 3 " and
        # other scripts' digits, which a server need not)
        try:
            ok = isinstance(value, str) and _NUMBER.fullmatch(value) is not None and math.isfinite(float(value))
        except ValueError:
            ok = False
        if not ok:
            shown = "an empty prediction" if value == "" else f"prediction {value!r}"
            raise UserError(f"{where}: {shown} is not a number ({task.name} predicts a score)")
    elif value not in accepted:
        shown = "an empty prediction" if value == "" else f"prediction {value!r}"
        raise UserError(f"{where}: {shown} is not one the server takes for {task.name} ({', '.join(accepted)})")


def submission_ids(path: Path, task) -> list[str]:
    """The row ids a submission file predicts, in file order, after checking its content by the task's rules (with
    or without the split's data): GLUE ``index<TAB>prediction`` lines after exactly that header, SuperGLUE
    ``{"idx": ..., "label": ...}`` lines; every id an integer and unique, every prediction one the task's server
    takes (a label of the task as the file spells it, a class index, or a number for a regression task). Anything
    else is refused, naming the file and the line."""
    from .tasks.example import json_objects, text_lines

    ids: list[str] = []
    first_seen: dict[str, str] = {}  # id -> the line it is first on

    def add(where: str, idx: str) -> None:
        if idx in first_seen:
            raise UserError(
                f"{where}: id {idx} appears twice (first on line {first_seen[idx]}); a submission has one row per id"
            )
        first_seen[idx] = where.rsplit(" ", 1)[-1]
        ids.append(idx)

    if task.submission_format == "glue":
        header = False
        for line_no, line in text_lines(path):
            where = f"{path}, line {line_no}"
            cells = line.split("\t")
            if line_no == 1:
                if cells != ["index", "prediction"]:
                    raise UserError(f"{where}: not a GLUE submission file (its header is index<TAB>prediction)")
                header = True
            elif line:
                if len(cells) != 2:
                    raise UserError(f"{where}: {len(cells)} tab-separated cells, expected 2")
                if not _INDEX.fullmatch(cells[0]):  # one spelling per id: '007' is not a second '7'
                    raise UserError(f"{where}: id {cells[0]!r} is not an index (decimal digits, no leading zero)")
                _check_prediction(where, cells[1], task)
                add(where, cells[0])
        if not header:
            raise UserError(f"{path}: empty; a GLUE submission file starts with the header index<TAB>prediction")
        return ids
    for where, obj in json_objects(path):
        if "idx" not in obj or "label" not in obj:
            raise UserError(f"{where}: a SuperGLUE submission line is {{\"idx\": ..., \"label\": ...}}")
        idx = obj["idx"]
        if not isinstance(idx, int) or isinstance(idx, bool) or idx < 0:
            raise UserError(f"{where}: idx {json.dumps(idx)} is not an integer")
        _check_prediction(where, obj["label"], task)
        add(where, str(idx))
    return ids


def check_rows(path: Path, ids: list[str], task, split: str, data_root: Path | None) -> None:
    """A submission file (its ``ids``: :func:`submission_ids`) predicts every row of its split, by the split's own
    ids in its order (when the split's file is under ``data_root``); without the split here, at least one row."""
    data_file = task.path(data_root, split) if data_root is not None else None
    if data_file is None or not data_file.is_file():
        if not ids:
            raise UserError(f"{path} predicts no row")
        return
    expected = [str(e.idx) for e in task.load(data_root, split)]
    if ids != expected:
        first = next((i for i, (a, b) in enumerate(zip(ids, expected)) if a != b), min(len(ids), len(expected)))
        raise UserError(
            f"{path} predicts {len(ids)} rows; {data_file} has {len(expected)} (the ids differ from row "
            f"{first + 1} on): predict the whole split with generate_test_prediction.py"
        )


def check_prediction_file(path: Path, task, split: str, data_root: Path | None) -> None:
    """Refuse a submission file whose content breaks the task's rules (:func:`submission_ids`: always, with or
    without the split's data), that does not predict every row of its split by its ids (:func:`check_rows`), that
    is not the one its record describes (edited, or a killed or concurrent prediction), that predicts only the first
    rows of its split, or whose split holds other rows now (when the split's file is under ``data_root``). A file
    without a record (written by hand, or before records) is checked by its content and rows only."""
    ids = submission_ids(path, task)
    rec_path = record_path(path)
    if not rec_path.is_file():
        check_rows(path, ids, task, split, data_root)
        return
    record = read_json_object(rec_path)
    if record.get("sha256") != sha256_file(path):
        raise UserError(
            f"{path} is not the file its record {rec_path.name} describes (edited, or a killed or "
            f"concurrent prediction): write it again with generate_test_prediction.py"
        )
    if not record.get("complete", True):
        raise UserError(
            f"{path} predicts only the first {record.get('num_rows')} rows of {split} (--max_examples): "
            f"predict the whole split with generate_test_prediction.py"
        )
    data_file = task.path(data_root, split) if data_root is not None else None
    if data_file is not None and data_file.is_file() and record.get("examples_sha256"):
        rows = task.load(data_root, split)
        digests = {examples_digest(rows)}
        if split in task.diagnostics:  # a file predicted before the diagnostics were scored read them unlabelled
            digests.add(examples_digest([replace(e, label=None, group=None) for e in rows]))
        if record["examples_sha256"] not in digests:
            raise UserError(
                f"{path} was predicted on other rows of {split} than {data_file} holds now (the file or "
                f"the task changed since): predict again with generate_test_prediction.py"
            )


def writers(benchmark: str) -> dict[str, tuple[str, str]]:
    """Submission file -> (task, split) of the toolkit's tasks that write it."""
    out = {}
    for task in TASKS.values():
        if task.benchmark != benchmark:
            continue
        out[task.submission_file] = (task.name, "test")
        for split, name in task.submission_files.items():
            out[name] = (task.name, split)
    return out


@dataclass(frozen=True)
class Chosen:
    file: str
    task: str
    split: str
    folder: Path
    why: str


def _experiments_of(exp_root: Path, task: str) -> list[Path]:
    found = []
    for folder in sorted(p for p in exp_root.iterdir() if p.is_dir() and p.name.endswith(f"_{task}")):
        try:
            config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(config, dict) and config.get("task") == task:
            found.append(folder)
    return found


def _dev_score(folder: Path, task: str) -> float | None:
    t = TASKS[task]
    try:
        table = json.loads((folder / f"eval-{t.dev_split}.json").read_text(encoding="utf-8"))
        return float(table["best"][t.main_metric]["value"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def choose(exp_root: Path, benchmark: str, use: dict[str, str]) -> list[Chosen]:
    """One experiment per required file, or a UserError naming every file that is missing."""
    made_by = writers(benchmark)
    chosen, missing = [], []
    for name in REQUIRED[benchmark]:
        if name not in made_by:
            missing.append(f"{name} (no task of this toolkit writes it yet)")
            continue
        task, split = made_by[name]
        command = f"generate_test_prediction.py --task {task} --dataset {split} --experiment ... --ckpt best"
        if task in use:
            folder = exp_root / use[task]
            if not (folder / name).is_file():
                missing.append(f"{name} (not in {folder}: {command})")
                continue
            chosen.append(Chosen(name, task, split, folder, "--use"))
            continue
        holders = [f for f in _experiments_of(exp_root, task) if (f / name).is_file()]
        if not holders:
            missing.append(f"{name} ({command})")
            continue
        scored = [(s, f) for f in holders if (s := _dev_score(f, task)) is not None]
        if scored:
            score, folder = max(scored, key=lambda x: (x[0], x[1].name))
            why = f"best {TASKS[task].dev_split} {TASKS[task].main_metric} {score:.4f} of {len(holders)}"
        elif len(holders) == 1:
            folder, why = holders[0], "the only one"
        else:
            raise UserError(
                f"{name}: {len(holders)} experiments hold it and none was evaluated on "
                f"{TASKS[task].dev_split}; name one with --use {task}=FOLDER"
            )
        chosen.append(Chosen(name, task, split, folder, why))
    if missing:
        raise UserError(
            f"the {benchmark} submission lacks {len(missing)} of {len(REQUIRED[benchmark])} files: "
            + "; ".join(missing)
        )
    return chosen


def run_submission(plan: SubmissionPlan) -> Path:
    """``make_submission.py``: the plan (fine_tune/plan/inference.py) has checked ``--use``, ``--exp_root`` and
    ``--out`` (not a zip make_submission.py did not write, unless ``--overwrite``); every required file is found
    and checked before the zip is written."""
    chosen = choose(plan.exp_root, plan.benchmark, plan.use)
    for c in chosen:  # each file the one its record describes, of every row of its split as it is now
        check_prediction_file(c.folder / c.file, TASKS[c.task], c.split, plan.data_root)
    out = plan.out
    import io

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for c in chosen:
            z.write(c.folder / c.file, arcname=c.file)
    write_outputs({out: buffer.getvalue()}, "make_submission.py")  # its own from now on (fine_tune/outputs.py)
    for c in chosen:
        print(f"{c.file}\t{c.folder.name}\t({c.why})")
    print(f"wrote {out} ({len(chosen)} files)")
    return out
