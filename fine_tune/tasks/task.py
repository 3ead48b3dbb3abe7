"""One task: its files and splits, how its rows are parsed, its labels, metrics and submission format.

A :class:`Task` is a record: the official tasks' are in :mod:`fine_tune.tasks.registry`, and a task of your own is
built there from its ``task.json`` (:mod:`fine_tune.tasks.user`). Nothing here knows where a task came from: a
Hugging Face source is a ``fetch`` function the registry gives the record.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UserError, did_you_mean
from .example import Example

if TYPE_CHECKING:
    import numpy as np

# Other names of a task's dev split (Hugging Face's "validation", SuperGLUE's "val", GLUE's "dev"): a split named so
# that the task lacks is answered with "did you mean <its dev split>?"
DEV_ALIASES = ("validation", "valid", "val", "dev", "development", "eval")


@dataclass(frozen=True)
class InputColumns:
    """The columns a row to predict is read from, named as the task's test files name them: the text, the text pair
    (None: a single-text task) and the id (None: none; rows are numbered from 0). ``generate_test_prediction.py
    --predict_file`` reads a file of your own rows by them (:func:`fine_tune.tasks.user.parse_rows_to_predict`)."""

    text: str
    pair: str | None = None
    id: str | None = None


@dataclass(frozen=True)
class Task:
    """One task. ``label_names``: the classes in the model's output order, named as Hugging Face's dataset names
    them (its ``ClassLabel`` names: QQP ``not_duplicate``/``duplicate``, BoolQ ``False``/``True``; a task of your own:
    its ``labels``): every model folder's ``id2label``, the exports and the ``--save_predictions`` files use them.
    ``file_labels``: how the data files and the submission server write each class (default: the label names; QQP
    ``0``/``1``, BoolQ ``false``/``true``); a Hugging Face teacher whose ``id2label`` names them (the toolkit's
    own exports before it took Hugging Face's names) is matched by them too (fine_tune/teacher.py). ``metrics``:
    reported by evaluation; ``main_metric`` picks the best checkpoint.

    ``labelled``: the splits with gold labels that train and choose checkpoints. ``diagnostics``: splits whose
    files carry gold labels too but that are only *scored*, each with its own metrics (SuperGLUE's AX-b: MCC; AX-g:
    gender parity and accuracy), and predicted for the submission: never training data, never the split that
    chooses a checkpoint (:meth:`check_not_diagnostic`). ``unlabelled_why``: why a split has no labels to evaluate
    against, where there is more to say than "a test split" (GLUE's AX)."""

    name: str
    folder: str  # sub-folder of the data root, as the official zip unpacks
    files: dict[str, str]  # split -> file name
    labelled: frozenset[str]
    parse: Callable[[Path, bool], list[Example]]
    metrics: tuple[str, ...]
    submission_file: str  # the test split's official file
    train_split: str = "train"
    dev_split: str = "dev"  # the labelled held-out split that chooses checkpoints by default
    label_names: tuple[str, ...] = ()  # required: a task without names is refused below (no silent "0", "1")
    file_labels: tuple[str, ...] | None = None
    main_metric: str = "accuracy"
    submission_format: str = "glue"  # "glue": index<TAB>prediction; "superglue": {"idx", "label"} JSON lines
    submission_labels: str = "names"  # glue: "names" (file labels) or "ints" (class indices)
    submission_files: dict[str, str] = field(default_factory=dict)  # other unlabelled splits' official files
    benchmark: str = "glue"
    regression: bool = False  # one output, a score (STS-B): MSE loss, Pearson/Spearman, --num_class 1
    # splits whose file lies in another folder of the data root (the diagnostics): split -> path under the root
    split_paths: dict[str, str] = field(default_factory=dict)
    # labelled splits only scored, never trained on nor choosing a checkpoint: split -> its metrics (main first)
    diagnostics: dict[str, tuple[str, ...]] = field(default_factory=dict)
    unlabelled_why: dict[str, str] = field(default_factory=dict)  # split -> why it cannot be evaluated
    # a task of your own (tasks/user.py): its checked definition and its task.json
    definition: dict[str, Any] | None = None
    definition_file: Path | None = None
    # fetch(split, path, labelled): makes sure the split's file is there (a Hugging Face source, tasks/user.py)
    fetch: Callable[[str, Path, bool], None] | None = None
    # the columns of a row to predict (its test files' names): generate_test_prediction.py --predict_file
    input_columns: InputColumns | None = None

    def __post_init__(self) -> None:
        if not self.label_names or (self.file_labels is not None and len(self.file_labels) != len(self.label_names)):
            raise ValueError(f"task {self.name}: give label_names (and file_labels, when given, one per class)")

    @property
    def num_class(self) -> int:
        return 1 if self.regression else len(self.label_names)

    def predictions(self, logits: np.ndarray) -> np.ndarray:
        """The model's predictions from its outputs [n, num_class]: the class index, or the score (regression)."""
        return logits[:, 0] if self.regression else logits.argmax(axis=1)

    @property
    def labels_in_files(self) -> tuple[str, ...]:
        return self.file_labels or self.label_names

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self.files)

    def has_labels(self, split: str) -> bool:
        """Whether the split's file carries gold labels: a labelled split or a diagnostic."""
        return split in self.labelled or split in self.diagnostics

    @property
    def scored(self) -> tuple[str, ...]:
        """The splits an evaluation can score, in file order: the labelled ones and the diagnostics."""
        return tuple(s for s in self.splits if self.has_labels(s))

    def metrics_for(self, split: str) -> tuple[str, ...]:
        """The metrics an evaluation of ``split`` reports: a diagnostic's own, else the task's."""
        return self.diagnostics.get(split, self.metrics)

    def check_not_diagnostic(self, split: str, flag: str, use: str) -> None:
        """A diagnostic split is scored and predicted for the submission, never ``use`` (named by ``flag``)."""
        if split in self.diagnostics:
            raise UserError(
                f"{flag} {split}: a diagnostic split of {self.name}, only scored (run_fine_tune_eval.py) "
                f"and predicted for the submission, never {use}"
            )

    def check_split(self, split: str, flag: str = "--dataset") -> None:
        """``flag``: the flag that named the split, for the error (``--select_on``, ``--splits``...)."""
        if split not in self.files:
            hint = did_you_mean(split, self.splits, {alias: self.dev_split for alias in DEV_ALIASES})
            raise UserError(
                f"{flag} {split!r} is not a {self.name} split; {hint}valid splits: {', '.join(self.splits)}"
            )

    def path(self, data_root: Path, split: str) -> Path:
        self.check_split(split)
        if split in self.split_paths:
            return Path(data_root) / self.split_paths[split]
        return Path(data_root) / self.folder / self.files[split]

    def load(self, data_root: Path, split: str, max_examples: int | None = None) -> list[Example]:
        from .download import SOURCES

        path = self.path(data_root, split)
        if self.fetch is not None:  # a task of your own from a Hugging Face dataset: fetched once
            self.fetch(split, path, self.has_labels(split))
        if not path.is_file():
            state = "is a folder, not a file" if path.is_dir() else "not found"
            if self.definition_file is not None:  # a task of your own: its task.json names the file
                raise UserError(
                    f"data file {path} {state}; {self.definition_file} names it in field "
                    f"\"files.{split}\": put the file there, correct the field, or pass --data_root "
                    f"(env FT_DATA_ROOT)"
                )
            fetch = (
                f"run `python download_data.py --task {self.name}`"
                if self.name in SOURCES
                else f"put the official {Path(self.split_paths.get(split, self.folder)).parts[0]} files there"
            )
            raise UserError(f"data file {path} {state}; {fetch} or pass --data_root (env FT_DATA_ROOT)")
        examples = self.parse(path, self.has_labels(split))
        if not examples:
            raise UserError(f"data file {path} holds no examples")
        if max_examples is not None:
            examples = examples[:max_examples]
        return examples

    def check_trained_labels(self, record: dict[str, Any], source: str) -> None:
        """A model's output i means the class its task named i when it was trained. A task of your own may be edited
        since: ``record`` (a run's config.json, with its ``task_definition``, or a logits set's meta.json, with its
        ``label_names``) says what the classes were; other names, another order or another kind (a class against a
        score) would name every prediction wrongly, silently: refused, naming ``source``. Built-in tasks' labels are
        the toolkit's own and records of them are not compared."""
        if self.definition is None:
            return
        if record.get("label_names") is not None:
            before = (tuple(map(str, record["label_names"])), bool(record.get("regression")))
        elif isinstance(record.get("task_definition"), dict):
            d = record["task_definition"]
            before = (tuple(str(x) for x in d.get("labels") or ["score"]), bool(d.get("regression")))
        else:
            return
        now = (self.label_names, self.regression)
        if before != now:

            def shown(labels: tuple[tuple[str, ...], bool]) -> str:
                return "a score (regression)" if labels[1] else "[" + ", ".join(labels[0]) + "]"

            raise UserError(
                f"{source} was made with {self.name}'s labels {shown(before)}; its task.json "
                f"({self.definition_file}) now says {shown(now)}: its outputs would be named wrongly; "
                f"restore the labels in task.json, or train again"
            )

    def submission_name(self, split: str) -> str:
        """The official file name of a split's predictions (``MNLI-m.tsv``); other splits get the test file's
        name with the split added (``QQP-dev.tsv``)."""
        if split in self.submission_files:
            return self.submission_files[split]
        if split == "test":
            return self.submission_file
        stem, _, ext = self.submission_file.partition(".")
        return f"{stem}-{split}.{ext}"

    def write_submission(
        self, path: Path, examples: Sequence[Example], predictions: Sequence[float] | np.ndarray
    ) -> None:
        """Write the official submission file (:meth:`submission_text`)."""
        from ..io_utils import atomic_write_text

        atomic_write_text(path, self.submission_text(examples, predictions))

    def submission_text(self, examples: Sequence[Example], predictions: Sequence[float] | np.ndarray) -> str:
        """The official submission file's text: GLUE ``index<TAB>prediction`` lines after a header (class indices
        or label names, as the server expects for the task), SuperGLUE ``{"idx": ..., "label": ...}`` lines."""
        names = self.labels_in_files
        if self.submission_format == "glue":
            shown = (
                (lambda p: f"{float(p):.3f}")
                if self.regression
                else (lambda p: str(int(p)))
                if self.submission_labels == "ints"
                else (lambda p: names[int(p)])
            )
            lines = ["index\tprediction"] + [f"{ex.idx}\t{shown(p)}" for ex, p in zip(examples, predictions)]
        else:
            lines = [json.dumps({"idx": ex.idx, "label": names[int(p)]}) for ex, p in zip(examples, predictions)]
        return "\n".join(lines) + "\n"
