"""A whole benchmark submission: the zip the GLUE or SuperGLUE server accepts, assembled from the submission
files ``generate_test_prediction.py`` wrote into the experiment folders (``make_submission.py``).

Every file the server requires must be there; for each one the experiment is the one named with ``--use
TASK=FOLDER``, else the experiment of that task holding the file with the best main metric on the task's dev split
(from its ``eval-{split}.json``). A missing file is refused, with the command that writes it, before anything is
written. The zip holds the files at its root, as the servers expect.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import UserError
from .experiment import check_name
from .io_utils import atomic_write
from .tasks import TASKS

if TYPE_CHECKING:
    from .plan.inference import SubmissionPlan

# every file each server requires (GLUE: gluebenchmark.com/submit; SuperGLUE: super.gluebenchmark.com/submit)
REQUIRED = {
    "glue": ("CoLA.tsv", "SST-2.tsv", "MRPC.tsv", "STS-B.tsv", "QQP.tsv", "MNLI-m.tsv", "MNLI-mm.tsv", "QNLI.tsv",
             "RTE.tsv", "WNLI.tsv", "AX.tsv"),
    "superglue": ("AX-b.jsonl", "AX-g.jsonl", "BoolQ.jsonl", "CB.jsonl", "COPA.jsonl", "MultiRC.jsonl",
                  "ReCoRD.jsonl", "RTE.jsonl", "WiC.jsonl", "WSC.jsonl"),
}


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


def parse_use(values: list[str] | None) -> dict[str, str]:
    """``--use TASK=FOLDER ...`` -> {task: folder name}."""
    out = {}
    for item in values or []:
        task, eq, folder = item.partition("=")
        if not eq or task not in TASKS or not folder:
            raise UserError(f"--use {item!r}: expected TASK=EXPERIMENT_FOLDER with a task of {', '.join(TASKS)}")
        out[task] = check_name(folder, "--use")
    return out


def choose(exp_root: Path, benchmark: str, use: dict[str, str]) -> list[Chosen]:
    """One experiment per required file, or a UserError naming every file that is missing."""
    made_by = writers(benchmark)
    chosen, missing = [], []
    for name in REQUIRED[benchmark]:
        if name not in made_by:
            missing.append(f"{name} (no task of this toolkit writes it yet)")
            continue
        task, split = made_by[name]
        command = (f"generate_test_prediction.py --task {task} --dataset {split} --experiment ... --ckpt best")
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
            raise UserError(f"{name}: {len(holders)} experiments hold it and none was evaluated on "
                            f"{TASKS[task].dev_split}; name one with --use {task}=FOLDER")
        chosen.append(Chosen(name, task, split, folder, why))
    if missing:
        raise UserError(f"the {benchmark} submission lacks {len(missing)} of {len(REQUIRED[benchmark])} files: "
                        + "; ".join(missing))
    return chosen


def run_submission(plan: SubmissionPlan) -> Path:
    """``make_submission.py``: the plan (fine_tune/plan/inference.py) has checked ``--use``, ``--exp_root`` and
    ``--out``; every required file is found before the zip is written."""
    chosen = choose(plan.exp_root, plan.benchmark, plan.use)
    out = plan.out
    with atomic_write(out) as f, zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for c in chosen:
            z.write(c.folder / c.file, arcname=c.file)
    for c in chosen:
        print(f"{c.file}\t{c.folder.name}\t({c.why})")
    print(f"wrote {out} ({len(chosen)} files)")
    return out
