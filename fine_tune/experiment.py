"""Where things live on disk: data root, experiment root, experiment folders, checkpoints, logs.

Layout (as the original code):

* data root ``data/fine_tune/`` (flag ``--data_root``, env ``FT_DATA_ROOT``):
  ``BoolQ/{train,val,test}.jsonl``, ``QQP/{train,dev,test}.tsv``, ``logits/<name>/`` (logits data sets),
  ``cache/`` (tokenisation cache).
* experiment root ``data/fine_tune_experiment/`` (flag ``--exp_root``, env ``FT_EXP_ROOT``):
  ``{experiment}_{model}_{task}/`` holds ``config.json``, ``model/`` (Hugging Face config + tokenizer),
  ``model-{step}.pt`` checkpoints, eval tables, predictions, submission files;
  ``log/{experiment}_{model}_{task}/`` holds the TensorBoard event files.

Defaults are relative to the repository, never to the working directory.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError
from .io_utils import NAME_MAX

REPO_ROOT = Path(__file__).resolve().parent.parent
CKPT_RE = re.compile(r"^model-(\d+)\.pt$")


def default_data_root() -> Path:
    return Path(os.environ.get("FT_DATA_ROOT") or REPO_ROOT / "data" / "fine_tune")


def default_exp_root() -> Path:
    return Path(os.environ.get("FT_EXP_ROOT") or REPO_ROOT / "data" / "fine_tune_experiment")


def check_length(name: str, flag: str, value: str) -> str:
    """A folder name of at most :data:`NAME_MAX` bytes (UTF-8), else refused naming ``flag`` and its ``value``
    (shortened): longer names fail at the first write with ``File name too long``."""
    size = len(name.encode("utf-8", "surrogateescape"))
    if size > NAME_MAX:
        shown = repr(value) if len(value) <= 40 else repr(value[:40]) + "…"
        raise UserError(
            f"{flag} {shown}: makes a folder name of {size} bytes; file systems take at most "
            f"{NAME_MAX}: choose a shorter name"
        )
    return name


def check_name(value: str, flag: str) -> str:
    """A name the toolkit turns into one folder name (an experiment, a teacher experiment, a logits data set, a
    task): the one place such names are checked, so no flag can reach a path outside its root. Refused: empty
    names, ``.`` and ``..``, path separators, NUL and other control characters, and names longer than a folder
    name can be (:func:`check_length`)."""
    bad = (
        not value
        or value in (".", "..")
        or "/" in value
        or "\\" in value
        or any(ord(c) < 32 or ord(c) == 127 for c in value)
    )
    if bad:
        raise UserError(
            f"{flag} {value!r}: must be a plain name (no '/', '\\', '..' or control characters): it "
            f"names a folder inside its root"
        )
    return check_length(value, flag, value)


def experiment_name(experiment: str, model: str, task: str, flag: str = "--experiment") -> str:
    """The folder name ``{experiment}_{model}_{task}``, each part and the whole checked (:func:`check_name`)."""
    name = f"{check_name(experiment, flag)}_{check_name(model, '--model')}_{check_name(task, '--task')}"
    return check_length(name, flag, experiment)


@dataclass(frozen=True)
class ExperimentDir:
    """An experiment folder and its TensorBoard folder."""

    root: Path  # the experiment root
    name: str  # {experiment}_{model}_{task}

    @classmethod
    def of(cls, exp_root: Path, experiment: str, model: str, task: str, flag: str = "--experiment") -> ExperimentDir:
        """``flag``: the flag that named the experiment (``--teacher_exp`` for a teacher), for errors."""
        return cls(Path(exp_root), experiment_name(experiment, model, task, flag))

    @property
    def path(self) -> Path:
        return self.root / self.name

    @property
    def log_dir(self) -> Path:
        return self.root / "log" / self.name

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def model_dir(self) -> Path:
        """Hugging Face model config and tokenizer (no weights): enough to rebuild the model offline."""
        return self.path / "model"

    def checkpoint_path(self, step: int) -> Path:
        return self.path / f"model-{step}.pt"

    def checkpoints(self) -> list[int]:
        """Steps of the checkpoints present, ascending."""
        if not self.path.is_dir():
            return []
        steps = []
        for p in self.path.iterdir():
            m = CKPT_RE.match(p.name)
            if m:
                steps.append(int(m.group(1)))
        return sorted(steps)

    def require(self) -> ExperimentDir:
        """Fail with a clear message unless the folder holds a finished or running experiment."""
        if not self.config_path.is_file():
            count = sum((p / "config.json").is_file() for p in self.root.iterdir()) if self.root.is_dir() else 0
            close = closest_experiments(self.root, self.path.name)
            n = f"{count} experiment{'s' if count != 1 else ''}"
            hint = (
                f"; did you mean {', '.join(close)}? ({n} in {self.root})"
                if close
                else f"; {self.root} holds {n}, none with a similar name"
                if count
                else f"; {self.root} holds no experiment"
            )
            raise UserError(f"experiment folder {self.path} not found (no config.json){hint}")
        return self

    def require_checkpoint(self, step: int) -> Path:
        path = self.checkpoint_path(step)
        if not path.is_file():
            have = self.checkpoints()
            listing = ", ".join(map(str, have)) if have else "none"
            raise UserError(f"checkpoint model-{step}.pt not found in {self.path}; checkpoints there: {listing}")
        return path


def closest_experiments(root: Path, name: str, limit: int = 5) -> list[str]:
    """The experiment folders of ``root`` (folders holding config.json) whose names are close to the folder name
    ``name``, closest first, at most ``limit``; empty when none is close (a "did you mean" for one error line).

    Close means a difflib similarity ratio of at least 0.6 (``difflib.get_close_matches``' default cutoff) between
    the parts of the two names before the ``_...`` suffix they share: every folder of a root ends in
    ``_{model}_{task}``, and compared whole, ``nope_bert_qqp`` would be 0.69 similar to ``teacher_bert_qqp``."""
    import difflib

    root = Path(root)
    if not root.is_dir():
        return []
    scored = []
    for p in root.iterdir():
        if p.name == name or not (p / "config.json").is_file():
            continue
        shared = 0
        while shared < min(len(name), len(p.name)) and name[-1 - shared] == p.name[-1 - shared]:
            shared += 1
        cut = name.find("_", len(name) - shared)  # from an underscore on: run1 vs xrun1 keeps "run1"
        shared = len(name) - cut if cut >= 0 else 0
        ratio = difflib.SequenceMatcher(None, name[: len(name) - shared], p.name[: len(p.name) - shared]).ratio()
        if ratio >= 0.6:
            scored.append((-ratio, p.name))
    return [n for _, n in sorted(scored)[:limit]]


def roots(data_root: str | None, exp_root: str | None) -> tuple[Path, Path]:
    """The data root and the experiment root: as given (``--data_root``, ``--exp_root``), else the environment,
    else the defaults."""
    return (Path(data_root) if data_root else default_data_root(), Path(exp_root) if exp_root else default_exp_root())
