"""Logits data sets: a teacher checkpoint's logits for every row of a split, next to the row's text.

Written by ``run_fine_tune_gen_logits.py`` to ``{data_root}/logits/{experiment}_{model}_{task}/{split}/``:

* ``logits.jsonl`` - one line a row: ``{"idx", "text", "text_pair", "label", "logits": [...]}``
* ``meta.json`` - task, split, teacher experiment and checkpoint, the teacher's ``ptrain_ver``, model
  family, vocabulary size and positions, source data file and its sha256, row count
* ``tokenizer/`` - the teacher's tokenizer, so a student trained on these logits works offline

``run_fine_tune_distill.py --dataset NAME`` reads them: the bare name ``{experiment}_{model}_{task}``
resolves to the training split; ``NAME:split`` (e.g. ``BLarge_uncased_TA_1_bert_boolq:val``) picks another.
Logits of a split are never silently replaced by those of another checkpoint, data, tokenizer or ``max_seq_len``
(:data:`IDENTITY`; ``--overwrite`` does).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..io_utils import (
    TMP_PREFIX,
    check_writable,
    honour_umask,
    read_json_object,
    remove_inside,
    sha256_file,
    write_failure,
)
from .example import Example, json_objects

LOGITS_DIR = "logits"


def split_name(name: str, default_split: str = "train") -> tuple[str, str]:
    base, _, split = name.partition(":")
    return base, split or default_split


def logits_dir(data_root: Path, name: str, split: str) -> Path:
    """``<data_root>/logits/<name>/<split>``; both parts are checked to be plain names (``--dataset``)."""
    from ..experiment import check_name

    return Path(data_root) / LOGITS_DIR / check_name(name, "--dataset") / check_name(split, "--dataset")


@dataclass
class LogitsDataset:
    path: Path
    meta: dict[str, Any]
    examples: list[Example]
    logits: np.ndarray  # [n, num_class] float32

    @property
    def tokenizer_dir(self) -> Path:
        return self.path / "tokenizer"

    @property
    def data_file(self) -> Path:
        return self.path / "logits.jsonl"


# What decides a logits set: its teacher checkpoint (by name, step and sha256), the split and its file, the rows
# that file became (the task's definition and --max_examples included: examples_sha256), the tokenizer and
# max_seq_len. Another value of any is another set: never written over the old one without --overwrite.
IDENTITY = (
    "teacher_experiment",
    "checkpoint",
    "split",
    "source_sha256",
    "checkpoint_sha256",
    "max_seq_len",
    "examples_sha256",
    "tokenizer",
)
# fields a set written by an older version lacks: not compared (the fields above them are)
SINCE_LATER = ("examples_sha256", "tokenizer")


def changed_identity(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The fields of :data:`IDENTITY` in which two logits sets' meta.json differ, as "field (old there, new now)"."""
    return [
        f"{k} ({old.get(k)!r} there, {new.get(k)!r} now)"
        for k in IDENTITY
        if old.get(k) != new.get(k) and not (k in SINCE_LATER and k not in old)
    ]


def check_teacher_unchanged(meta: dict[str, Any], exp_root: Path, dataset: str) -> None:
    """A logits set records the sha256 of the teacher checkpoint that computed it; when that checkpoint is still
    there and now holds other weights (the teacher re-trained with --overwrite), the logits are not its logits."""
    digest, teacher, step = meta.get("checkpoint_sha256"), meta.get("teacher_experiment"), meta.get("checkpoint")
    if not (digest and teacher and step is not None):
        return
    from ..experiment import check_name

    ckpt = Path(exp_root) / check_name(str(teacher), "meta.json teacher_experiment") / f"model-{step}.pt"
    if ckpt.is_file() and sha256_file(ckpt) != digest:
        raise UserError(
            f"--dataset {dataset!r}: its logits were computed by {ckpt} (sha256 {digest[:12]}…), which "
            f"now holds other weights (the teacher was trained again?); write the logits again with "
            f"run_fine_tune_gen_logits.py --overwrite"
        )


def check_logits_target(out_dir: Path, meta: dict[str, Any], overwrite: bool) -> None:
    """Refuse to replace a logits data set made from another checkpoint, split or source file (unless
    ``overwrite``) or a data root where it cannot be written; called before any prediction so a refused run
    costs nothing."""
    out_dir = Path(out_dir)
    data_root = out_dir.parents[2] if len(out_dir.parents) > 2 else out_dir  # {data_root}/logits/{name}/{split}
    check_writable(out_dir, "--data_root", root=data_root)
    meta_path = out_dir / "meta.json"
    if meta_path.is_file() and not overwrite:
        old = read_json_object(meta_path)
        changed = changed_identity(old, meta)
        if changed:
            made_by = (
                f"{old['teacher_experiment']} checkpoint {old.get('checkpoint')}"
                if old.get("teacher_experiment")
                else f"the Hugging Face model {old.get('teacher_hf') or old.get('checkpoint')}"
            )
            raise UserError(
                f"{out_dir} already holds logits of {made_by} on {old.get('split')} that differ in "
                f"{'; '.join(changed)}; pass --overwrite to replace them"
            )


def _write_synced(path: Path, text: str) -> None:
    """A file of the private staging folder, on disk (fsync) before it is renamed into place."""
    import os

    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def write_logits(
    out_dir: Path,
    meta: dict[str, Any],
    examples: Sequence[Example],
    logits: np.ndarray,
    tokenizer: Any,
    overwrite: bool = False,
) -> None:
    """Write the logits data set ``out_dir``: the new set is built whole in a temporary folder inside it first
    (every write that can fail, e.g. on a full disk, fails there, and the set already there stays as it was,
    byte for byte), then swapped in by renames: the old ``meta.json`` moved aside first (a kill during the swap
    leaves a set without ``meta.json``, which reads as absent and is written again by the next run, without
    ``--overwrite``; :func:`read_logits` names it incomplete, a write that was killed, while the stage folder is
    there), the new ``logits.jsonl`` and ``tokenizer/`` moved in, the new ``meta.json`` last."""
    import os
    import tempfile

    out_dir = Path(out_dir)
    check_logits_target(out_dir, meta, overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    stage = Path(
        tempfile.mkdtemp(prefix=TMP_PREFIX + "new.", dir=out_dir)
    )  # a kill leaves it: removed at the next start
    try:
        honour_umask(stage, folder=True)
        _write_synced(
            stage / "logits.jsonl",
            "".join(
                json.dumps(
                    {
                        "idx": ex.idx,
                        "text": ex.text,
                        "text_pair": ex.text_pair,
                        "label": ex.label,
                        "logits": [float(x) for x in row],
                    }
                )
                + "\n"
                for ex, row in zip(examples, logits)
            ),
        )
        tokenizer.save_pretrained(stage / "tokenizer")
        meta = dict(meta, num_rows=len(examples), logits_sha256=sha256_file(stage / "logits.jsonl"))
        _write_synced(stage / "meta.json", json.dumps(meta, indent=2, default=str) + "\n")
    except BaseException as e:
        remove_inside(stage, out_dir)
        reason = write_failure(out_dir, e)
        if reason is None:
            raise
        raise UserError(
            f"could not write the logits data set {out_dir}: {reason}; nothing was replaced (the set "
            f"there, if any, is as it was)"
        ) from None
    if (out_dir / "meta.json").exists():
        os.replace(out_dir / "meta.json", stage / "old-meta.json")  # from here until the end the set reads as absent
    os.replace(stage / "logits.jsonl", out_dir / "logits.jsonl")
    if (out_dir / "tokenizer").exists():
        os.replace(out_dir / "tokenizer", stage / "old-tokenizer")
    os.replace(stage / "tokenizer", out_dir / "tokenizer")
    os.replace(stage / "meta.json", out_dir / "meta.json")  # last: a folder without meta.json is incomplete
    remove_inside(stage, out_dir)


def read_logits(data_root: Path, dataset: str, task: str) -> LogitsDataset:
    name, split = split_name(dataset)
    path = logits_dir(data_root, name, split)
    meta_path = path / "meta.json"
    if not meta_path.is_file() and any(path.glob(TMP_PREFIX + "new.*")):  # write_logits' stage: a killed swap
        raise UserError(
            f"--dataset {dataset!r}: logits data set {path} is incomplete: a write of it was killed; run "
            f"run_fine_tune_gen_logits.py again"
        )
    if not meta_path.is_file():
        root = Path(data_root) / LOGITS_DIR
        have = (
            sorted(f"{p.parent.name}:{p.name}" for p in root.glob("*/*") if (p / "meta.json").is_file())
            if root.is_dir()
            else []
        )
        listing = ", ".join(have) if have else "none"
        raise UserError(
            f"--dataset {dataset!r}: logits data set {path} not found (make it with "
            f"run_fine_tune_gen_logits.py); logits data sets there: {listing}"
        )
    meta = read_json_object(meta_path)
    if meta.get("task") != task:
        raise UserError(f"--dataset {dataset!r} holds {meta.get('task')} logits but --task is {task}")
    examples: list[Example] = []
    rows: list[list[float]] = []
    data_file = path / "logits.jsonl"
    if not data_file.is_file():
        raise UserError(
            f"{data_file} not found (meta.json without its rows); write the logits data set again with "
            f"run_fine_tune_gen_logits.py --overwrite"
        )
    for where, r in json_objects(data_file):
        try:
            examples.append(Example(int(r["idx"]), r["text"], r["text_pair"], r["label"]))
            row = [float(x) for x in r["logits"]]
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"{where}: malformed logits row ({type(e).__name__}: {e})") from None
        if rows and len(row) != len(rows[0]):
            raise UserError(f"{where}: {len(row)} logits, the rows before have {len(rows[0])}")
        if not all(np.isfinite(row)):
            raise UserError(
                f"{where}: logits {row} are not finite (the teacher's forward overflowed?); write the "
                f"logits data set again (without --amp) with run_fine_tune_gen_logits.py --overwrite"
            )
        rows.append(row)
    logits = np.asarray(rows, dtype=np.float32)
    if logits.ndim != 2 or len(examples) != meta.get("num_rows"):
        raise UserError(f"{data_file}: {len(examples)} rows, meta.json says {meta.get('num_rows')} (incomplete file?)")
    if meta.get("logits_sha256") and sha256_file(data_file) != meta["logits_sha256"]:
        raise UserError(
            f"{data_file}: its sha256 differs from the one meta.json records (changed after it was "
            f"written); write the logits data set again with run_fine_tune_gen_logits.py --overwrite"
        )
    return LogitsDataset(path, meta, examples, logits)
