"""The task table: file layout, splits, metrics and submission format of BoolQ and QQP."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ..errors import UserError
from .boolq import parse_boolq
from .example import Example
from .qqp import parse_qqp


@dataclass(frozen=True)
class Task:
    name: str
    folder: str  # sub-folder of the data root, as the official zip unpacks
    files: dict[str, str]  # split -> file name
    labelled: frozenset[str]
    parse: Callable[[Path, bool], list[Example]]
    metrics: tuple[str, ...]  # "accuracy" always; "f1" for QQP
    submission_file: str
    num_class: int = 2
    train_split: str = "train"
    dev_split: str = "dev"  # the labelled held-out split that chooses checkpoints by default
    label_names: tuple[str, ...] = field(default=("0", "1"))

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self.files)

    def check_split(self, split: str, flag: str = "--dataset") -> None:
        """``flag``: the flag that named the split, for the error (``--select_on``, ``--splits``...)."""
        if split not in self.files:
            raise UserError(
                f"{flag} {split!r} is not a {self.name} split; valid splits: {', '.join(self.splits)}"
            )

    def path(self, data_root: Path, split: str) -> Path:
        self.check_split(split)
        return Path(data_root) / self.folder / self.files[split]

    def load(self, data_root: Path, split: str, max_examples: int | None = None) -> list[Example]:
        path = self.path(data_root, split)
        if not path.is_file():
            raise UserError(
                f"data file {path} not found; run `python download_data.py --task {self.name}` "
                f"or pass --data_root (env FT_DATA_ROOT)"
            )
        examples = self.parse(path, split in self.labelled)
        if not examples:
            raise UserError(f"data file {path} holds no examples")
        if max_examples is not None:
            examples = examples[:max_examples]
        return examples

    def write_submission(self, path: Path, examples: Sequence[Example], predictions: Sequence[int]) -> None:
        """Write the official submission file (GLUE ``QQP.tsv`` or SuperGLUE ``BoolQ.jsonl``)."""
        from ..io_utils import atomic_write_text

        if self.name == "qqp":
            lines = ["index\tprediction"] + [f"{ex.idx}\t{int(p)}" for ex, p in zip(examples, predictions)]
        else:
            lines = [
                json.dumps({"idx": ex.idx, "label": "true" if int(p) == 1 else "false"})
                for ex, p in zip(examples, predictions)
            ]
        atomic_write_text(path, "\n".join(lines) + "\n")


TASKS: dict[str, Task] = {
    "boolq": Task(
        name="boolq",
        folder="BoolQ",
        files={"train": "train.jsonl", "val": "val.jsonl", "test": "test.jsonl"},
        labelled=frozenset({"train", "val"}),
        parse=parse_boolq,
        metrics=("accuracy",),
        submission_file="BoolQ.jsonl",
        dev_split="val",
        label_names=("false", "true"),
    ),
    "qqp": Task(
        name="qqp",
        folder="QQP",
        files={"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"},
        labelled=frozenset({"train", "dev"}),
        parse=parse_qqp,
        metrics=("accuracy", "f1"),
        submission_file="QQP.tsv",
    ),
}


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise UserError(f"--task {name!r} is unknown; valid tasks: {', '.join(TASKS)}") from None
