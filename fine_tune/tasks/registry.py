"""The task table: file layout, splits, labels, metrics and submission format of every task.

GLUE (the official ``glue_data`` layout, one folder per task): CoLA, SST-2, MRPC, STS-B (regression), QQP, MNLI,
QNLI, RTE, WNLI.
SuperGLUE (the official ``.jsonl`` releases): BoolQ, CB, RTE (``rte_superglue``). ``--task`` takes Hugging Face's
configuration names (``cola sst2 mrpc stsb qqp mnli qnli rte wnli``, ``boolq cb``); ``--dataset`` the file stem.
``label_names`` are the class names of Hugging Face's ``glue`` / ``super_glue`` datasets (their ``ClassLabel``
features), in their order; ``file_labels`` how the official files write them where that differs. The
diagnostics are splits of the task whose model predicts them: GLUE's AX of ``mnli`` (``--dataset ax``, released
without labels: predicted only), SuperGLUE's AX-b and AX-g of ``rte_superglue`` (``--dataset axb``, ``axg``: their
files carry labels, and an evaluation scores them with their own metrics: tasks/diagnostics.py).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from ..errors import UserError, did_you_mean
from ..experiment import check_name
from .boolq import parse_boolq
from .columns import JsonFields, TsvLayout, parse_jsonl, parse_tsv
from .example import Example
from .qqp import parse_qqp
from .task import InputColumns, Task


def _tsv(
    labelled_layout: TsvLayout, test_layout: TsvLayout, file_labels: tuple[str, ...] | None
) -> Callable[[Path, bool], list[Example]]:
    """A parser reading the labelled splits with one layout and the test splits with another."""

    def parse(path: Path, labelled: bool) -> list[Example]:
        return parse_tsv(path, labelled, labelled_layout if labelled else test_layout, file_labels)

    return parse


def _jsonl(
    fields: JsonFields, file_labels: tuple[str, ...], by_file: dict[str, JsonFields] | None = None
) -> Callable[[Path, bool], list[Example]]:
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
# the columns of a row to predict (--predict_file), as each task's test file names them
SENTENCE_PAIR_COLUMNS = InputColumns("sentence1", "sentence2", "index")
PREMISE_HYPOTHESIS = InputColumns("premise", "hypothesis", "idx")

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
        # Hugging Face's super_glue/boolq names; the files and the SuperGLUE server write false/true
        label_names=("False", "True"),
        file_labels=("false", "true"),
        submission_format="superglue",
        benchmark="superglue",
        input_columns=InputColumns("passage", "question", "idx"),
    ),
    "qqp": Task(
        name="qqp",
        folder="QQP",
        files={"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"},
        labelled=frozenset({"train", "dev"}),
        parse=parse_qqp,
        metrics=("accuracy", "f1"),
        submission_file="QQP.tsv",
        # Hugging Face's glue/qqp names; the files (is_duplicate) and the GLUE server write 0/1
        label_names=("not_duplicate", "duplicate"),
        file_labels=BINARY,
        submission_labels="ints",
        input_columns=InputColumns("question1", "question2", "id"),
    ),
    "cola": Task(
        name="cola",
        folder="CoLA",
        files=GLUE_FILES,
        labelled=GLUE_LABELLED,
        # train/dev: no header; source, label, original label (a * where it was changed), sentence
        parse=_tsv(TsvLayout(text=3, label=1, header=False, width=4), TsvLayout(text="sentence", idx="index"), BINARY),
        metrics=("mcc", "accuracy"),
        main_metric="mcc",
        submission_file="CoLA.tsv",
        label_names=("unacceptable", "acceptable"),
        file_labels=BINARY,
        submission_labels="ints",
        input_columns=InputColumns("sentence", None, "index"),
    ),
    "sst2": Task(
        name="sst2",
        folder="SST-2",
        files=GLUE_FILES,
        labelled=GLUE_LABELLED,
        parse=_tsv(TsvLayout(text="sentence", label="label"), TsvLayout(text="sentence", idx="index"), BINARY),
        metrics=("accuracy",),
        submission_file="SST-2.tsv",
        label_names=("negative", "positive"),
        file_labels=BINARY,
        submission_labels="ints",
        input_columns=InputColumns("sentence", None, "index"),
    ),
    "mrpc": Task(
        name="mrpc",
        folder="MRPC",
        files=GLUE_FILES,
        labelled=GLUE_LABELLED,
        parse=_tsv(
            TsvLayout(text="#1 String", pair="#2 String", label="Quality"),
            TsvLayout(text="#1 String", pair="#2 String", idx="index"),
            BINARY,
        ),
        metrics=("accuracy", "f1"),
        submission_file="MRPC.tsv",
        label_names=("not_equivalent", "equivalent"),
        file_labels=BINARY,
        submission_labels="ints",
        input_columns=InputColumns("#1 String", "#2 String", "index"),
    ),
    "stsb": Task(
        name="stsb",
        folder="STS-B",
        files=GLUE_FILES,
        labelled=GLUE_LABELLED,
        # index genre filename year old_index source1 source2 sentence1 sentence2 score (test: without score)
        parse=_tsv(TsvLayout(text="sentence1", pair="sentence2", label="score", idx="index"), SENTENCE_PAIR_TEST, None),
        metrics=("pearson", "spearman"),
        main_metric="pearson",
        submission_file="STS-B.tsv",
        label_names=("score",),
        regression=True,
        input_columns=SENTENCE_PAIR_COLUMNS,
    ),
    "mnli": Task(
        name="mnli",
        folder="MNLI",
        files={
            "train": "train.tsv",
            "dev_matched": "dev_matched.tsv",
            "dev_mismatched": "dev_mismatched.tsv",
            "test_matched": "test_matched.tsv",
            "test_mismatched": "test_mismatched.tsv",
            "ax": "diagnostic.tsv",
        },
        split_paths={"ax": "diagnostic/diagnostic.tsv"},  # GLUE's diagnostic (AX), predicted with the MNLI model
        labelled=frozenset({"train", "dev_matched", "dev_mismatched"}),
        # train: 12 columns (label1, gold_label), dev: 16 (label1..label5, gold_label), test: 10 (no label)
        parse=_tsv(
            TsvLayout(text="sentence1", pair="sentence2", label="gold_label", idx="index"),
            SENTENCE_PAIR_TEST,
            ("entailment", "neutral", "contradiction"),
        ),
        metrics=("accuracy",),
        submission_file="MNLI-m.tsv",
        dev_split="dev_matched",
        submission_files={"test_matched": "MNLI-m.tsv", "test_mismatched": "MNLI-mm.tsv", "ax": "AX.tsv"},
        label_names=("entailment", "neutral", "contradiction"),
        unlabelled_why={
            "ax": "GLUE's diagnostic (AX) is released without labels; the GLUE server scores it (R3, "
            "a Matthews correlation over the three classes): predict it with "
            "generate_test_prediction.py --task mnli --dataset ax and submit AX.tsv"
        },
        input_columns=SENTENCE_PAIR_COLUMNS,
    ),
    "qnli": Task(
        name="qnli",
        folder="QNLI",
        files=GLUE_FILES,
        labelled=GLUE_LABELLED,
        parse=_tsv(
            TsvLayout(text="question", pair="sentence", label="label", idx="index"),
            TsvLayout(text="question", pair="sentence", idx="index"),
            NLI2,
        ),
        metrics=("accuracy",),
        submission_file="QNLI.tsv",
        label_names=NLI2,
        input_columns=InputColumns("question", "sentence", "index"),
    ),
    "rte": Task(
        name="rte",
        folder="RTE",
        files=GLUE_FILES,
        labelled=GLUE_LABELLED,
        parse=_tsv(SENTENCE_PAIR, SENTENCE_PAIR_TEST, NLI2),
        metrics=("accuracy",),
        submission_file="RTE.tsv",
        label_names=NLI2,
        input_columns=SENTENCE_PAIR_COLUMNS,
    ),
    "wnli": Task(
        name="wnli",
        folder="WNLI",
        files=GLUE_FILES,
        labelled=GLUE_LABELLED,
        parse=_tsv(SENTENCE_PAIR, SENTENCE_PAIR_TEST, BINARY),
        metrics=("accuracy",),
        submission_file="WNLI.tsv",
        label_names=("not_entailment", "entailment"),
        file_labels=BINARY,
        submission_labels="ints",
        input_columns=SENTENCE_PAIR_COLUMNS,
    ),
    "cb": Task(
        name="cb",
        folder="CB",
        files={"train": "train.jsonl", "val": "val.jsonl", "test": "test.jsonl"},
        labelled=frozenset({"train", "val"}),
        parse=_jsonl(JsonFields(text="premise", pair="hypothesis"), ("entailment", "contradiction", "neutral")),
        metrics=("accuracy", "macro_f1"),
        submission_file="CB.jsonl",
        dev_split="val",
        label_names=("entailment", "contradiction", "neutral"),
        submission_format="superglue",
        benchmark="superglue",
        input_columns=PREMISE_HYPOTHESIS,
    ),
    # SuperGLUE's RTE: the same RTE/ folder as GLUE's, its .jsonl files; the diagnostics AX-b and AX-g are predicted
    # with its model (--dataset axb, axg) and scored with their own metrics (tasks/diagnostics.py): AX-b by the
    # Matthews correlation, AX-g by gender parity over its minimal pairs (pair_id) and accuracy
    "rte_superglue": Task(
        name="rte_superglue",
        folder="RTE",
        files={
            "train": "train.jsonl",
            "val": "val.jsonl",
            "test": "test.jsonl",
            "axb": "AX-b.jsonl",
            "axg": "AX-g.jsonl",
        },
        split_paths={"axb": "AX-b/AX-b.jsonl", "axg": "AX-g/AX-g.jsonl"},
        labelled=frozenset({"train", "val"}),
        diagnostics={"axb": ("mcc", "accuracy"), "axg": ("gender_parity", "accuracy")},
        parse=_jsonl(
            JsonFields(text="premise", pair="hypothesis"),
            NLI2,
            by_file={
                "AX-b.jsonl": JsonFields(text="sentence1", pair="sentence2", submitted_ids=True, text_ids=True),
                "AX-g.jsonl": JsonFields(
                    text="premise", pair="hypothesis", submitted_ids=True, text_ids=True, pairs="pair_id"
                ),
            },
        ),
        metrics=("accuracy",),
        submission_file="RTE.jsonl",
        dev_split="val",
        label_names=NLI2,
        submission_files={"axb": "AX-b.jsonl", "axg": "AX-g.jsonl"},
        submission_format="superglue",
        benchmark="superglue",
        input_columns=PREMISE_HYPOTHESIS,
    ),
}


# Hugging Face's names of the diagnostics (glue/ax, super_glue/axb, axg): here splits of the task whose model
# predicts them
DIAGNOSTICS = {"ax": ("mnli", "ax"), "axb": ("rte_superglue", "axb"), "axg": ("rte_superglue", "axg")}


def user_task(name: str, spec: dict[str, Any], definition_file: Path | None = None) -> Task:
    """The :class:`Task` of a checked definition (:func:`fine_tune.tasks.user.check_definition`)."""
    from .user import ensure_materialised, parse_user_file  # pydantic's schema: only for a task of one's own

    files = dict(spec["files"])
    unlabelled = set(spec.get("unlabelled") or [s for s in files if s.startswith("test")])
    labelled = frozenset(s for s in files if s not in unlabelled)
    dev = spec.get("dev_split") or next(
        (s for s in ("dev", "val") if s in labelled),
        next((s for s in files if s in labelled and s != "train"), "train"),
    )
    regression = bool(spec.get("regression"))
    labels = tuple(str(x) for x in spec.get("labels") or ["score"])
    return Task(
        name=name,
        folder=name,
        files=files,
        labelled=labelled,
        parse=partial(parse_user_file, spec=spec),
        metrics=tuple(spec["metrics"]),
        main_metric=spec["main_metric"],
        submission_file=f"{name}.tsv",
        dev_split=dev,
        train_split="train" if "train" in files else next(iter(files)),
        label_names=labels,
        regression=regression,
        benchmark="user",
        submission_labels="names",
        definition=spec,
        definition_file=definition_file,
        fetch=partial(ensure_materialised, spec) if spec.get("hf") else None,
        input_columns=InputColumns(spec["text"], spec.get("text_pair"), spec.get("id")),
    )


def get_task(name: str, data_root: Path | None = None) -> Task:
    """The official task ``name``, else the task defined by ``<data_root>/<name>/task.json`` (tasks/user.py)."""
    if name in TASKS:
        return TASKS[name]
    if name in DIAGNOSTICS:
        task, split = DIAGNOSTICS[name]
        raise UserError(
            f"--task {name}: the diagnostic is predicted with the {task} model, as a split of that task: "
            f"--task {task} --dataset {split}"
        )
    check_name(name, "--task")
    if data_root is not None:
        from .user import definition_path, read_definition  # pydantic's schema: only for a task of one's own

        path = definition_path(data_root, name)
        if path.exists():  # a file, or something in its place (a folder) that read_definition names
            return user_task(name, read_definition(path), path)
    where = (
        f" or a folder {Path(data_root) / name} with a task.json (doc/methods.md, \"Your own data\")"
        if data_root is not None
        else ""
    )
    hint = did_you_mean(name, [*TASKS, *own_task_names(data_root)])
    raise UserError(f"--task {name!r} is unknown; {hint}valid tasks: {', '.join(TASKS)}{where}")


def own_task_names(data_root: Path | None) -> list[str]:
    """The tasks of your own the data root defines (its folders holding a task.json), sorted; none where it
    cannot be listed."""
    if data_root is None:
        return []
    from .user import definition_path  # (an error's path: pydantic's import is paid only here)

    try:
        return sorted(p.name for p in Path(data_root).iterdir() if definition_path(data_root, p.name).is_file())
    except OSError:
        return []
