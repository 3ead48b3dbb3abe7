"""task.json's one typed schema (fine_tune/tasks/user.py, TaskDefinition): a value of another JSON type is refused,
never converted (the string "false" is not false, a string is not a list of one split); every split, metric and file
a field names is checked when the task is read, naming the field in task.json; every error is one line naming the
file and the field. Valid definitions keep their meaning and their recorded form."""

from __future__ import annotations

import json

import pytest

from fine_tune.errors import UserError

BASE = {
    "files": {"train": "train.csv", "dev": "dev.csv", "test": "test.csv"},
    "text": "first",
    "label": "verdict",
    "labels": ["same", "different"],
}


def read(tmp_path, spec, name="bad"):
    """The task ``name`` of the definition ``spec`` written as its task.json (text written as it is)."""
    from fine_tune.tasks.registry import get_task

    (tmp_path / name).mkdir(exist_ok=True)
    (tmp_path / name / "task.json").write_text(spec if isinstance(spec, str) else json.dumps(spec))
    return get_task(name, tmp_path)


def changed(**fields):
    """BASE with ``fields`` set (a value None: the field removed)."""
    spec = dict(BASE, **fields)
    return {k: v for k, v in spec.items() if v is not None}


@pytest.mark.parametrize(
    "spec, message",
    [
        # the issue's cases: a value of another type is refused, not converted
        (changed(regression="false"), 'field "regression": expected true or false, got the string "false"'),
        (
            changed(metrics=5),
            'field "metrics": expected a non-empty list of metric names (accuracy, f1, macro_f1, mcc, pearson, '
            'spearman), got the number 5',
        ),
        (
            changed(text_pair=["passage"]),
            'field "text_pair": expected a column name (a non-empty string), or null, got the list ["passage"]',
        ),
        (
            changed(id=["pair_id"]),
            'field "id": expected a column name (a non-empty string), or null, got the list ["pair_id"]',
        ),
        (
            changed(unlabelled="test"),
            'field "unlabelled": expected a non-empty list of split names of files, got the string "test"',
        ),
        (
            changed(colour="red"),
            'field "colour": unknown (fields: files, text, text_pair, label, labels, regression, id, '
            'metrics, main_metric, dev_split, unlabelled, hf)',
        ),
        # every name a field gives is checked when the task is read
        (
            changed(dev_split="validation"),
            'field "dev_split": expected a labelled split of files (train, dev), got the string "validation"',
        ),
        (
            changed(dev_split="test"),
            'field "dev_split": expected a labelled split of files (train, dev), got the string "test"',
        ),
        (
            changed(main_metric="mcc"),
            'field "main_metric": expected one of its metrics (accuracy), got the string "mcc"',
        ),
        (
            changed(metrics=["accuracy", "bleu"]),
            'field "metrics[1]": expected a metric name (accuracy, f1, macro_f1, '
            'mcc, pearson, spearman), got the string "bleu"',
        ),
        (
            changed(unlabelled=["tst"]),
            'field "unlabelled[0]": expected a split of files (train, dev, test), got the string "tst"',
        ),
        (
            changed(files=None, hf={"path": "x/y", "splits": {"train": "train"}}, unlabelled=["test"]),
            'field "unlabelled[0]": expected a split of files (train), got the string "test"',
        ),
        (
            changed(
                hf={"path": "x/y", "splits": {"train": "train", "dev": "validation", "val": "v"}},
                files={"train": "train.jsonl", "dev": "dev.jsonl"},
            ),
            'field "hf.splits.val": expected a split of files (train, dev), got the string "val"',
        ),
        (
            changed(
                hf={"path": "x/y", "splits": {"train": "train"}}, files={"train": "train.jsonl", "dev": "dev.jsonl"}
            ),
            'field "files.dev": expected a split of hf.splits (train), got the string "dev"',
        ),
        (
            changed(hf={"path": "x/y", "splits": {"train": "train"}}, files={"train": "train.csv"}),
            'field "files.train": expected a file in the task\'s folder ending in .jsonl, got the string "train.csv"',
        ),
        (
            changed(hf={"path": "x/y", "splits": {"train": "train"}, "revision": "main"}),
            'field "hf.revision": unknown (fields of hf: path, name, splits)',
        ),
        (
            changed(hf={"path": "x/y", "splits": {}}),
            'field "hf.splits": expected an object mapping each split to its '
            'Hugging Face split, e.g. {"train": "train", "dev": "validation"}, '
            'got the object {}',
        ),
        (
            changed(hf={"path": "x/y", "splits": {"train": 0}}),
            'field "hf.splits.train": expected a string, got the number 0',
        ),
        # the other fields' types and meanings
        (changed(text=None), 'field "text": missing; expected a column name (a non-empty string)'),
        (changed(text=""), 'field "text": expected a column name (a non-empty string), got the string ""'),
        (changed(label=1), 'field "label": expected a column name (a non-empty string), got the number 1'),
        (
            changed(files=None),
            'field "files": missing; expected an object mapping each split to a file in the task\'s '
            'folder, e.g. {"train": "train.csv"} (or "hf": a Hugging Face source)',
        ),
        (
            changed(files=["train.csv"]),
            'field "files": expected an object mapping each split to a file in the task\'s '
            'folder, e.g. {"train": "train.csv"}, got the list ["train.csv"]',
        ),
        (
            changed(files={"train": "../x.csv"}),
            'field "files.train": expected a file in the task\'s folder ending in '
            '.csv, .tsv, .jsonl, .parquet, got the string "../x.csv"',
        ),
        (changed(files={"train": 3}), 'field "files.train": expected a string, got the number 3'),
        (
            changed(labels=None),
            'field "labels": missing; expected a list of at least two distinct classes (strings or '
            'integers) in the model\'s output order (or "regression": true)',
        ),
        (
            changed(labels=["a", "a"]),
            'field "labels": expected a list of at least two distinct classes (strings or '
            'integers) in the model\'s output order (or "regression": true), got the list '
            '["a", "a"]',
        ),
        (
            changed(labels=["1", 1]),
            'field "labels": expected a list of at least two distinct classes (strings or '
            'integers) in the model\'s output order (or "regression": true), got the list '
            '["1", 1]',
        ),
        (changed(labels=["no", True]), 'field "labels[1]": expected a class: a string or an integer, got true'),
        (changed(labels=[0, 0.5]), 'field "labels[1]": expected a class: a string or an integer, got the number 0.5'),
        (
            changed(labels="no,yes"),
            'field "labels": expected a list of at least two distinct classes (strings or '
            'integers) in the model\'s output order, got the string "no,yes"',
        ),
        (changed(labels=None, regression=1), 'field "regression": expected true or false, got the number 1'),
        (
            changed(regression=True),
            'field "labels": a regression task ("regression": true) has no classes; remove '
            '"labels", or set "regression": false',
        ),
        (
            changed(main_metric=["accuracy"]),
            'field "main_metric": expected a metric name of metrics, got the list ["accuracy"]',
        ),
        (changed(dev_split=None, metrics=[1]), 'field "metrics[0]": expected a string, got the number 1'),
        ('["files"]', 'expected a JSON object (a task definition), got the list ["files"]'),
        ('{"text": "a", "text": "b"}', 'not a readable task definition (key "text" appears twice)'),
        # issue 29's adversarial run: a list written with a name twice, or empty (it was taken as the default)
        (
            changed(metrics=["accuracy", "accuracy"]),
            'field "metrics[1]": the string "accuracy" is listed twice (metrics[0] and metrics[1]); list each once',
        ),
        (
            changed(unlabelled=["test", "dev", "test"]),
            'field "unlabelled[2]": the string "test" is listed twice '
            '(unlabelled[0] and unlabelled[2]); list each once',
        ),
        (
            changed(metrics=[]),
            'field "metrics": expected a non-empty list of metric names (accuracy, f1, macro_f1, mcc, '
            'pearson, spearman), got the list []',
        ),
        (
            changed(unlabelled=[]),
            'field "unlabelled": expected a non-empty list of split names of files, got the list []',
        ),
        # metrics that cannot score the task (sklearn tracebacks at the first evaluation, mid-training)
        (
            changed(labels=["x", "y", "z"], metrics=["accuracy", "f1", "mcc"]),
            'field "metrics[1]": the string "f1" is a metric of two classes (F1 of class 1); the task has 3 labels: use '
            'macro_f1',
        ),
        (
            changed(labels=None, regression=True, metrics=["pearson", "accuracy"]),
            'field "metrics[1]": the string "accuracy" is a metric of classes; a regression task takes pearson, spearman',
        ),
        (
            changed(metrics=["spearman"]),
            'field "metrics[0]": the string "spearman" is a metric of scores (regression); a '
            'classification task takes accuracy, f1, macro_f1, mcc',
        ),
        # control characters in labels and names (a tab in a label broke the prediction file's cells), shown escaped
        (
            changed(labels=["a\tb", "c"]),
            'field "labels[0]": the string "a\\tb" holds a control character '
            '(U+0009); names and labels in task.json are printable text',
        ),
        (
            changed(labels=["a", "c\nd"]),
            'field "labels[1]": the string "c\\nd" holds a control character '
            '(U+000A); names and labels in task.json are printable text',
        ),
        (
            changed(labels=["a", "c\u2028d"]),
            'field "labels[1]": the string "c\\u2028d" holds a control '
            'character (U+2028); names and labels in task.json are printable text',
        ),
        (
            changed(files={"train": "tr\u0000ain.csv"}),
            'field "files.train": the string "tr\\u0000ain.csv" holds '
            'a control character (U+0000); names and labels in task.json are '
            'printable text',
        ),
        (
            changed(files={"tr\rain": "train.csv"}),
            'field "files": the key "tr\\rain" holds a control '
            'character (U+000D); names and labels in task.json are printable text',
        ),
        (
            changed(text="q\x7f"),
            'field "text": the string "q\\u007f" holds a control character (U+007F); '
            'names and labels in task.json are printable text',
        ),
        # a column read as two things (the label as the model's input text trained silently)
        (
            changed(text="verdict"),
            'field "label": the column the string "verdict" is field "text" too; each field names its own column',
        ),
        (
            changed(text_pair="first"),
            'field "text_pair": the column the string "first" is field "text" too; each field names its own column',
        ),
        (
            changed(labels=["no", "\ud800"]),
            'not a readable task definition (a \\u escape of half a surrogate pair, '
            'which is no character: not Unicode text)',
        ),
        # JSON that Python's reader cannot take (tracebacks)
        ('{"text": ' + "[" * 100_000 + "]" * 100_000 + "}", 'not a readable task definition (nested too deep)'),
        ('{"text": 1' + "0" * 5000 + "}", 'not a readable task definition (an integer of more than 4300 digits)'),
    ],
    ids=lambda x: None,
)
def test_a_definition_is_refused_in_one_line_naming_the_field(spec, message, tmp_path):
    with pytest.raises(UserError) as e:
        read(tmp_path, spec)
    assert str(e.value) == f"{tmp_path / 'bad' / 'task.json'}: {message}"


def test_the_issue_cases_that_were_silent(tmp_path):
    """ "regression": "false" trained a regression model; "unlabelled": "test" was read letter by letter (so the test
    split counted as labelled); both are refused now, and their typed spellings mean what they say."""
    assert not read(tmp_path, changed(regression=False), "a").regression
    task = read(tmp_path, changed(unlabelled=["test"]), "b")
    assert task.labelled == frozenset({"train", "dev"})
    for spec in (changed(regression="false"), changed(unlabelled="test")):
        with pytest.raises(UserError):
            read(tmp_path, spec, "c")


def test_valid_definitions_keep_their_meaning_and_recorded_form(tmp_path):
    """The recorded definition (config.json's task_definition) is task.json with files, metrics and main_metric
    filled in, as before the schema: a run's identity does not change with it. Nulls of optional fields are the
    field left out; integer labels, every option, and a Hugging Face source with its default files are accepted."""
    spec = {
        "files": {"train": "train.tsv", "held": "held.jsonl", "test_a": "a.parquet"},
        "text": "t",
        "text_pair": None,
        "label": "y",
        "labels": [3, "1", 2],
        "id": None,
        "metrics": ["macro_f1", "accuracy"],
        "main_metric": "accuracy",
        "dev_split": "held",
        "unlabelled": ["test_a"],
        "regression": False,
    }
    task = read(tmp_path, spec, "full")
    assert task.definition == dict(spec)
    assert (task.dev_split, task.main_metric, task.label_names) == ("held", "accuracy", ("3", "1", "2"))
    assert task.labelled == frozenset({"train", "held"})
    hf = read(
        tmp_path,
        {
            "hf": {"path": "glue", "name": None, "splits": {"train": "train", "dev": "validation"}},
            "text": "s",
            "label": "y",
            "regression": True,
        },
        "hub",
    )
    assert hf.definition == {
        "hf": {"path": "glue", "name": None, "splits": {"train": "train", "dev": "validation"}},
        "text": "s",
        "label": "y",
        "regression": True,
        "files": {"train": "train.jsonl", "dev": "dev.jsonl"},
        "metrics": ["pearson", "spearman"],
        "main_metric": "pearson",
    }
    assert hf.regression and hf.num_class == 1 and hf.dev_split == "dev"


def test_a_task_json_with_a_byte_order_mark_reads_and_a_folder_is_named(tmp_path):
    """task.json read as data files are (UTF-8, a byte-order mark allowed: it was "Unexpected UTF-8 BOM"); a folder
    task.json is named as one (it was "--task ... is unknown ... or a folder with a task.json")."""
    task = read(tmp_path, "\ufeff" + json.dumps(BASE), "bom")
    assert task.label_names == ("same", "different")
    (tmp_path / "dir" / "task.json").mkdir(parents=True)
    from fine_tune.tasks.registry import get_task

    with pytest.raises(UserError) as e:
        get_task("dir", tmp_path)
    assert str(e.value) == (
        f"{tmp_path}/dir/task.json is a folder; a task's definition is a file task.json "
        f"(doc/methods.md, \"Your own data\")"
    )


def test_a_data_file_missing_or_a_folder_names_the_field_of_task_json(tmp_path):
    """The message of a task of your own names the task.json field, never "the official files"."""
    task = read(tmp_path, BASE, "own")
    (tmp_path / "own" / "dev.csv").mkdir()
    for split, state in (("train", "not found"), ("dev", "is a folder, not a file")):
        with pytest.raises(UserError) as e:
            task.load(tmp_path, split)
        assert str(e.value) == (
            f"data file {tmp_path}/own/{split}.csv {state}; {tmp_path}/own/task.json names it "
            f"in field \"files.{split}\": put the file there, correct the field, or pass "
            f"--data_root (env FT_DATA_ROOT)"
        )


def test_the_official_tasks_metrics_suit_them():
    """The rule a task.json's metrics meet (fine_tune/tasks/metrics.py, unsuitable) holds for every official task:
    F1 on two classes (MRPC, QQP), macro-F1 on three (CB), correlations on STS-B's scores only."""
    from fine_tune.tasks.metrics import unsuitable
    from fine_tune.tasks.registry import TASKS

    for task in TASKS.values():
        for m in task.metrics:
            assert unsuitable(m, task.regression, task.num_class) is None, (task.name, m)
    assert unsuitable("f1", False, 3) and unsuitable("macro_f1", True, 1) and unsuitable("pearson", False, 2)
