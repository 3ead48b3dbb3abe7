"""The task table: file layout, splits, labels, metrics and submission format of every task.

GLUE (the official ``glue_data`` layout, one folder per task): CoLA, SST-2, MRPC, STS-B (regression), QQP, MNLI,
QNLI, RTE, WNLI.
SuperGLUE (the official ``.jsonl`` releases): BoolQ, CB, RTE (``rte_superglue``). ``--task`` takes Hugging Face's
configuration names (``cola sst2 mrpc stsb qqp mnli qnli rte wnli``, ``boolq cb``); ``--dataset`` the file stem. The
diagnostics are splits of the task whose model predicts them: GLUE's AX of ``mnli`` (``--dataset ax``),
SuperGLUE's AX-b and AX-g of ``rte_superglue`` (``--dataset axb``, ``axg``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

from ..errors import UserError
from .boolq import parse_boolq
from .columns import JsonFields, TsvLayout, parse_jsonl, parse_tsv
from .example import Example
from .qqp import parse_qqp


@dataclass(frozen=True)
class Task:
    """One task. ``label_names``: the classes in the model's output order (Hugging Face's names: exported as
    ``id2label``); ``file_labels``: how the data files and the submission server write each class (default: the
    label names). ``metrics``: reported by evaluation; ``main_metric`` picks the best checkpoint."""

    name: str
    folder: str  # sub-folder of the data root, as the official zip unpacks
    files: dict[str, str]  # split -> file name
    labelled: frozenset[str]
    parse: Callable[[Path, bool], list[Example]]
    metrics: tuple[str, ...]
    submission_file: str  # the test split's official file
    train_split: str = "train"
    dev_split: str = "dev"  # the labelled held-out split that chooses checkpoints by default
    label_names: tuple[str, ...] = field(default=("0", "1"))
    file_labels: tuple[str, ...] | None = None
    main_metric: str = "accuracy"
    submission_format: str = "glue"  # "glue": index<TAB>prediction; "superglue": {"idx", "label"} JSON lines
    submission_labels: str = "names"  # glue: "names" (file labels) or "ints" (class indices)
    submission_files: dict[str, str] = field(default_factory=dict)  # other unlabelled splits' official files
    benchmark: str = "glue"
    regression: bool = False  # one output, a score (STS-B): MSE loss, Pearson/Spearman, --num_class 1
    # splits whose file lies in another folder of the data root (the diagnostics): split -> path under the root
    split_paths: dict[str, str] = field(default_factory=dict)
    # a task of your own (tasks/user.py): its checked definition and its task.json
    definition: dict | None = None
    definition_file: Path | None = None

    @property
    def num_class(self) -> int:
        return 1 if self.regression else len(self.label_names)

    def predictions(self, logits):
        """The model's predictions from its outputs [n, num_class]: the class index, or the score (regression)."""
        return logits[:, 0] if self.regression else logits.argmax(axis=1)

    @property
    def labels_in_files(self) -> tuple[str, ...]:
        return self.file_labels or self.label_names

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
        if split in self.split_paths:
            return Path(data_root) / self.split_paths[split]
        return Path(data_root) / self.folder / self.files[split]

    def load(self, data_root: Path, split: str, max_examples: int | None = None) -> list[Example]:
        from .download import SOURCES

        path = self.path(data_root, split)
        if self.definition is not None and self.definition.get("hf"):
            from .user import ensure_materialised  # a task of your own from a Hugging Face dataset: fetched once

            ensure_materialised(self.definition, split, path, split in self.labelled)
        if not path.is_file():
            fetch = (f"run `python download_data.py --task {self.name}`" if self.name in SOURCES
                     else f"put the official {Path(self.split_paths.get(split, self.folder)).parts[0]} files there")
            raise UserError(f"data file {path} not found; {fetch} or pass --data_root (env FT_DATA_ROOT)")
        examples = self.parse(path, split in self.labelled)
        if not examples:
            raise UserError(f"data file {path} holds no examples")
        if max_examples is not None:
            examples = examples[:max_examples]
        return examples

    def check_trained_labels(self, record: dict, source: str) -> None:
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
            def shown(labels):
                return "a score (regression)" if labels[1] else "[" + ", ".join(labels[0]) + "]"
            raise UserError(f"{source} was made with {self.name}'s labels {shown(before)}; its task.json "
                            f"({self.definition_file}) now says {shown(now)}: its outputs would be named wrongly; "
                            f"restore the labels in task.json, or train again")

    def submission_name(self, split: str) -> str:
        """The official file name of a split's predictions (``MNLI-m.tsv``); other splits get the test file's
        name with the split added (``QQP-dev.tsv``)."""
        if split in self.submission_files:
            return self.submission_files[split]
        if split == "test":
            return self.submission_file
        stem, _, ext = self.submission_file.partition(".")
        return f"{stem}-{split}.{ext}"

    def write_submission(self, path: Path, examples: Sequence[Example], predictions: Sequence[int]) -> None:
        """Write the official submission file: GLUE ``index<TAB>prediction`` lines after a header (class indices
        or label names, as the server expects for the task), SuperGLUE ``{"idx": ..., "label": ...}`` lines."""
        from ..io_utils import atomic_write_text

        names = self.labels_in_files
        if self.submission_format == "glue":
            shown = ((lambda p: f"{float(p):.3f}") if self.regression
                     else (lambda p: str(int(p))) if self.submission_labels == "ints" else (lambda p: names[int(p)]))
            lines = ["index\tprediction"] + [f"{ex.idx}\t{shown(p)}" for ex, p in zip(examples, predictions)]
        else:
            lines = [json.dumps({"idx": ex.idx, "label": names[int(p)]}) for ex, p in zip(examples, predictions)]
        atomic_write_text(path, "\n".join(lines) + "\n")


def _tsv(labelled_layout: TsvLayout, test_layout: TsvLayout, file_labels: tuple[str, ...]):
    """A parser reading the labelled splits with one layout and the test splits with another."""
    def parse(path: Path, labelled: bool) -> list[Example]:
        return parse_tsv(path, labelled, labelled_layout if labelled else test_layout, file_labels)
    return parse


def _jsonl(fields: JsonFields, file_labels: tuple[str, ...], by_file: dict[str, JsonFields] | None = None):
    """A JSON-lines parser; ``by_file``: other fields for the files of these names (the diagnostics)."""
    def parse(path: Path, labelled: bool) -> list[Example]:
        return parse_jsonl(path, labelled, (by_file or {}).get(Path(path).name, fields), file_labels)
    return parse


GLUE_FILES = {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"}
GLUE_LABELLED = frozenset({"train", "dev"})
BINARY = ("0", "1")
NLI2 = ("entailment", "not_entailment")
SENTENCE_PAIR = TsvLayout(text="sentence1", pair="sentence2", label="label", idx="index")
SENTENCE_PAIR_TEST = TsvLayout(text="sentence1", pair="sentence2", idx="index")

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
        submission_format="superglue",
        benchmark="superglue",
    ),
    "qqp": Task(
        name="qqp",
        folder="QQP",
        files={"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"},
        labelled=frozenset({"train", "dev"}),
        parse=parse_qqp,
        metrics=("accuracy", "f1"),
        submission_file="QQP.tsv",
        submission_labels="ints",
    ),
    "cola": Task(
        name="cola", folder="CoLA", files=GLUE_FILES, labelled=GLUE_LABELLED,
        # train/dev: no header; source, label, original label (a * where it was changed), sentence
        parse=_tsv(TsvLayout(text=3, label=1, header=False, width=4),
                   TsvLayout(text="sentence", idx="index"), BINARY),
        metrics=("mcc", "accuracy"), main_metric="mcc", submission_file="CoLA.tsv",
        label_names=("unacceptable", "acceptable"), file_labels=BINARY, submission_labels="ints",
    ),
    "sst2": Task(
        name="sst2", folder="SST-2", files=GLUE_FILES, labelled=GLUE_LABELLED,
        parse=_tsv(TsvLayout(text="sentence", label="label"), TsvLayout(text="sentence", idx="index"), BINARY),
        metrics=("accuracy",), submission_file="SST-2.tsv",
        label_names=("negative", "positive"), file_labels=BINARY, submission_labels="ints",
    ),
    "mrpc": Task(
        name="mrpc", folder="MRPC", files=GLUE_FILES, labelled=GLUE_LABELLED,
        parse=_tsv(TsvLayout(text="#1 String", pair="#2 String", label="Quality"),
                   TsvLayout(text="#1 String", pair="#2 String", idx="index"), BINARY),
        metrics=("accuracy", "f1"), submission_file="MRPC.tsv",
        label_names=("not_equivalent", "equivalent"), file_labels=BINARY, submission_labels="ints",
    ),
    "stsb": Task(
        name="stsb", folder="STS-B", files=GLUE_FILES, labelled=GLUE_LABELLED,
        # index genre filename year old_index source1 source2 sentence1 sentence2 score (test: without score)
        parse=_tsv(TsvLayout(text="sentence1", pair="sentence2", label="score", idx="index"), SENTENCE_PAIR_TEST,
                   None),
        metrics=("pearson", "spearman"), main_metric="pearson", submission_file="STS-B.tsv",
        label_names=("score",), regression=True,
    ),
    "mnli": Task(
        name="mnli", folder="MNLI",
        files={"train": "train.tsv", "dev_matched": "dev_matched.tsv", "dev_mismatched": "dev_mismatched.tsv",
               "test_matched": "test_matched.tsv", "test_mismatched": "test_mismatched.tsv", "ax": "diagnostic.tsv"},
        split_paths={"ax": "diagnostic/diagnostic.tsv"},  # GLUE's diagnostic (AX), predicted with the MNLI model
        labelled=frozenset({"train", "dev_matched", "dev_mismatched"}),
        # train: 12 columns (label1, gold_label), dev: 16 (label1..label5, gold_label), test: 10 (no label)
        parse=_tsv(TsvLayout(text="sentence1", pair="sentence2", label="gold_label", idx="index"),
                   SENTENCE_PAIR_TEST, ("entailment", "neutral", "contradiction")),
        metrics=("accuracy",), submission_file="MNLI-m.tsv", dev_split="dev_matched",
        submission_files={"test_matched": "MNLI-m.tsv", "test_mismatched": "MNLI-mm.tsv", "ax": "AX.tsv"},
        label_names=("entailment", "neutral", "contradiction"),
    ),
    "qnli": Task(
        name="qnli", folder="QNLI", files=GLUE_FILES, labelled=GLUE_LABELLED,
        parse=_tsv(TsvLayout(text="question", pair="sentence", label="label", idx="index"),
                   TsvLayout(text="question", pair="sentence", idx="index"), NLI2),
        metrics=("accuracy",), submission_file="QNLI.tsv", label_names=NLI2,
    ),
    "rte": Task(
        name="rte", folder="RTE", files=GLUE_FILES, labelled=GLUE_LABELLED,
        parse=_tsv(SENTENCE_PAIR, SENTENCE_PAIR_TEST, NLI2),
        metrics=("accuracy",), submission_file="RTE.tsv", label_names=NLI2,
    ),
    "wnli": Task(
        name="wnli", folder="WNLI", files=GLUE_FILES, labelled=GLUE_LABELLED,
        parse=_tsv(SENTENCE_PAIR, SENTENCE_PAIR_TEST, BINARY),
        metrics=("accuracy",), submission_file="WNLI.tsv",
        label_names=("not_entailment", "entailment"), file_labels=BINARY, submission_labels="ints",
    ),
    "cb": Task(
        name="cb", folder="CB", files={"train": "train.jsonl", "val": "val.jsonl", "test": "test.jsonl"},
        labelled=frozenset({"train", "val"}),
        parse=_jsonl(JsonFields(text="premise", pair="hypothesis"), ("entailment", "contradiction", "neutral")),
        metrics=("accuracy", "macro_f1"), submission_file="CB.jsonl", dev_split="val",
        label_names=("entailment", "contradiction", "neutral"), submission_format="superglue", benchmark="superglue",
    ),
    # SuperGLUE's RTE: the same RTE/ folder as GLUE's, its .jsonl files; the diagnostics AX-b and AX-g are predicted
    # with its model (--dataset axb, axg)
    "rte_superglue": Task(
        name="rte_superglue", folder="RTE",
        files={"train": "train.jsonl", "val": "val.jsonl", "test": "test.jsonl", "axb": "AX-b.jsonl",
               "axg": "AX-g.jsonl"},
        split_paths={"axb": "AX-b/AX-b.jsonl", "axg": "AX-g/AX-g.jsonl"},
        labelled=frozenset({"train", "val"}),
        parse=_jsonl(JsonFields(text="premise", pair="hypothesis"), NLI2,
                     by_file={"AX-b.jsonl": JsonFields(text="sentence1", pair="sentence2")}),
        metrics=("accuracy",), submission_file="RTE.jsonl", dev_split="val", label_names=NLI2,
        submission_files={"axb": "AX-b.jsonl", "axg": "AX-g.jsonl"},
        submission_format="superglue", benchmark="superglue",
    ),
}


# Hugging Face's names of the diagnostics (glue/ax, super_glue/axb, axg): here splits of the task whose model
# predicts them
DIAGNOSTICS = {"ax": ("mnli", "ax"), "axb": ("rte_superglue", "axb"), "axg": ("rte_superglue", "axg")}
_USER_ROOTS: list[Path] = []  # data roots whose <name>/task.json define tasks (experiment.roots adds them)


def add_user_root(data_root: Path) -> None:
    """Look for tasks of your own (``<data_root>/<name>/task.json``) under ``data_root`` too."""
    root = Path(data_root)
    if root in _USER_ROOTS:  # the latest root is looked in first and named in errors
        _USER_ROOTS.remove(root)
    _USER_ROOTS.append(root)


def get_task(name: str) -> Task:
    """The official task ``name``, else the task defined by ``<data_root>/<name>/task.json`` (tasks/user.py)."""
    if name in TASKS:
        return TASKS[name]
    from ..experiment import check_name
    from .user import definition_path, read_definition, user_task

    if name in DIAGNOSTICS:
        task, split = DIAGNOSTICS[name]
        raise UserError(f"--task {name}: the diagnostic is predicted with the {task} model, as a split of that task: "
                        f"--task {task} --dataset {split}")
    check_name(name, "--task")
    for root in reversed(_USER_ROOTS):
        path = definition_path(root, name)
        if path.is_file():
            spec = read_definition(path)
            return replace(user_task(name, spec), definition=spec, definition_file=path)
    where = f" or a folder {_USER_ROOTS[-1] / name} with a task.json (doc/methods.md, \"Your own data\")" if _USER_ROOTS else ""
    raise UserError(f"--task {name!r} is unknown; valid tasks: {', '.join(TASKS)}{where}")
