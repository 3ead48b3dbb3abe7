"""Your own data (fine_tune/tasks/user.py): a task.json beside CSV or JSON Lines files with other column names and
string labels, through fine-tuning, evaluation, the results table and the prediction file with the original label
names; and the one-line errors of a bad definition or a bad row."""

from __future__ import annotations

import csv
import hashlib
import json
import random

import numpy as np
import pytest
from conftest import write_hub_copy
from sklearn.metrics import f1_score

from fine_tune.errors import UserError

LABELS = ["same", "different"]  # the output order the task.json declares: not sorted


def rows(n, seed):
    rng = random.Random(seed)
    words = ["how", "do", "i", "learn", "python", "java", "cook", "rice", "fast", "well"]
    out = []
    for i in range(n):
        a = [rng.choice(words) for _ in range(5)]
        same = rng.random() < 0.5
        b = a[:] if same else [rng.choice(words) for _ in range(5)]
        out.append(
            {"qid": 1000 + i, "first": " ".join(a), "second": " ".join(b), "verdict": "same" if same else "different"}
        )
    return out


def write_task(root, name, fmt, definition=None):
    folder = root / name
    folder.mkdir(parents=True)
    for split, n, seed in (("train", 64, 0), ("dev", 24, 1), ("test", 10, 2)):
        data = rows(n, seed)
        if split == "test":
            data = [{k: v for k, v in r.items() if k != "verdict"} for r in data]
        if fmt == "csv":
            with open(folder / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
                w = csv.DictWriter(f, fieldnames=list(data[0]))
                w.writeheader()
                w.writerows(data)
        else:
            (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in data))
    spec = definition or {
        "files": {s: f"{s}.{fmt}" for s in ("train", "dev", "test")},
        "text": "first",
        "text_pair": "second",
        "label": "verdict",
        "labels": LABELS,
        "id": "qid",
        "metrics": ["accuracy", "f1"],
    }
    (folder / "task.json").write_text(json.dumps(spec))
    return folder


def softmax(logits):
    z = np.exp(logits - logits.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


def read_predictions(path):
    """A --predict_file output as (header, rows of cells as text or JSON values), by its extension."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in text.splitlines()]
        return list(rows[0]), [list(r.values()) for r in rows]
    if path.suffix == ".tsv":
        lines = [line.split("\t") for line in text.splitlines()]
    else:
        lines = list(csv.reader(text.splitlines(keepends=True)))
    return lines[0], lines[1:]


def check_predictions(path, exp, pairs, ids, id_column):
    """The predictions file holds one row per input row, in input order: the id, the label name of the argmax and
    each class's probability (columns in the task's label order, not sorted), equal to a forward of the checkpoint
    (model-4.pt) on those rows, read independently."""
    from conftest import checkpoint_logits

    header, rows = read_predictions(path)
    assert header == [id_column, "prediction", "prob_same", "prob_different"]
    expected = softmax(checkpoint_logits(exp, 4, pairs, 24))
    assert [int(r[0]) for r in rows] == ids
    assert [r[1] for r in rows] == [LABELS[k] for k in expected.argmax(1)]
    np.testing.assert_allclose(np.array([[float(x) for x in r[2:]] for r in rows]), expected, atol=1e-5)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_task_of_your_own_through_fine_tune_eval_and_predictions(
    fmt, run, tiny_bert, data_root, exp_root, monkeypatch, tmp_path
):
    name = f"pairs_{fmt}"
    folder = write_task(data_root, name, fmt)
    common = ["--model", "bert", "--task", name, "--max_seq_len", "24", "--device_id", "-1"]
    run(
        "run_fine_tune.py",
        "--experiment",
        "mine",
        "--ptrain_ver",
        str(tiny_bert),
        *common,
        "--total_step",
        "4",
        "--warmup_step",
        "1",
        "--ckpt_step",
        "2",
        "--batch_size",
        "16",
        "--lr",
        "1e-3",
    )
    exp = exp_root / f"mine_bert_{name}"
    config = json.loads((exp / "config.json").read_text())
    assert config["num_class"] == 2 and config["task_definition"]["labels"] == LABELS
    digest = hashlib.sha256((folder / "task.json").read_bytes()).hexdigest()
    assert digest in json.dumps(config)  # task.json's sha256 with the data files'
    monkeypatch.delenv("TQDM_DISABLE")  # issue 32: a bar on stderr for each checkpoint's pass
    said = run(
        "run_fine_tune_eval.py", "--experiment", "mine", "--model", "bert", "--task", name, "--dataset", "dev"
    ).stderr
    assert "dev model-2.pt:   0%" in said and "dev model-4.pt:   0%" in said and "0/24 [" in said  # 24 rows
    monkeypatch.setenv("TQDM_DISABLE", "1")
    table = json.loads((exp / "eval-dev.json").read_text())
    assert [r["ckpt"] for r in table["rows"]] == [2, 4] and {"accuracy", "f1"} <= set(table["rows"][0])
    # class ids in the declared order (same 0, different 1), through evaluation and back to names in the file
    dev = rows(24, 1)
    with np.load(exp / "eval-dev-predictions.npz") as z:
        labels, idx, pred = z["labels"].tolist(), z["idx"].tolist(), z["pred_4"].tolist()
    assert labels == [LABELS.index(r["verdict"]) for r in dev] and idx == [r["qid"] for r in dev]
    assert table["rows"][1]["f1"] == pytest.approx(f1_score(labels, pred, pos_label=1, zero_division=0))
    run(
        "generate_test_prediction.py",
        "--experiment",
        "mine",
        "--model",
        "bert",
        "--task",
        name,
        "--dataset",
        "dev",
        "--ckpt",
        "4",
    )
    lines = (exp / f"{name}-dev.tsv").read_text().splitlines()
    assert lines[1:] == [f"{r['qid']}\t{LABELS[p]}" for r, p in zip(dev, pred)]
    run("generate_test_prediction.py", "--experiment", "mine", "--model", "bert", "--task", name, "--ckpt", "best")
    lines = (exp / f"{name}.tsv").read_text().splitlines()
    assert lines[0] == "index\tprediction" and [x.split("\t")[0] for x in lines[1:]] == [
        str(1000 + i) for i in range(10)
    ]
    assert {x.split("\t")[1] for x in lines[1:]} <= set(LABELS)  # the original label names
    out = run("results_table.py", "--task", name, "--data_root", str(data_root)).stdout
    assert "dev acc" in out and "dev F1" in out

    # issue 32: --predict_file, a file of one's own rows in the task's columns (others ignored, in another order),
    # ids that are not row numbers; the CSV by its quoting rules (a comma, doubled quotes, a newline in a cell)
    predict = [
        {"second": "well, fast", "qid": 31, "first": 'say "hi" then\nleave', "verdict": "ignored"},
        {"second": "cook rice", "qid": 7, "first": "how do i", "verdict": "ignored"},
        {"second": "rice", "qid": 1002, "first": "python java", "verdict": "ignored"},
    ]
    pairs, ids = [(r["first"], r["second"]) for r in predict], [r["qid"] for r in predict]
    common = ["--experiment", "mine", "--model", "bert", "--task", name, "--ckpt", "4"]
    source = tmp_path / f"new rows.{fmt}"
    if fmt == "csv":
        with open(source, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(predict[0]))
            w.writeheader()
            w.writerows(predict)
    else:
        source.write_text("".join(json.dumps(r) + "\n" for r in predict))
    monkeypatch.delenv("TQDM_DISABLE")  # and a bar on stderr
    said = run("generate_test_prediction.py", *common, "--predict_file", str(source))
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert f"{source.name} model-4.pt:   0%" in said.stderr and "0/3 [" in said.stderr
    written = tmp_path / f"new rows.predictions.{fmt}"  # beside it, in its format
    assert said.stdout.strip().endswith(f"to {written}")
    check_predictions(written, exp, pairs, ids, "qid")
    first = written.read_bytes()
    run("generate_test_prediction.py", *common, "--predict_file", str(source))  # its own file: replaced, no --overwrite
    assert written.read_bytes() == first
    if fmt != "csv":
        return
    # a .tsv without the id column (rows by number from 0), read as the task's .tsv files are (no quoting: a quote
    # is text), predicted to --out as JSON lines
    tsv = tmp_path / "rows.tsv"
    tsv.write_text('first\tsecond\n"quoted"\tcook "rice\nhow do i\tpython\n')
    run("generate_test_prediction.py", *common, "--predict_file", str(tsv), "--out", str(tmp_path / "out.jsonl"))
    check_predictions(tmp_path / "out.jsonl", exp, [('"quoted"', 'cook "rice'), ("how do i", "python")], [0, 1], "row")
    assert not (tmp_path / "rows.predictions.tsv").exists()
    # every other script too: the teacher's logits, offline KD, a layer-wise method
    monkeypatch.delenv("TQDM_DISABLE")  # issue 32: the logits' bar
    said = run(
        "run_fine_tune_gen_logits.py",
        "--experiment",
        "mine",
        "--model",
        "bert",
        "--task",
        name,
        "--dataset",
        "train",
        "--ckpt",
        "4",
    ).stderr
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert "train.csv model-4.pt:   0%" in said and "0/64 [" in said
    student = [
        "--d_model",
        "32",
        "--d_ff",
        "64",
        "--num_attention_heads",
        "2",
        "--num_hidden_layers",
        "1",
        "--total_step",
        "2",
        "--warmup_step",
        "1",
        "--ckpt_step",
        "2",
        "--batch_size",
        "8",
        "--device_id",
        "-1",
    ]
    run(
        "run_fine_tune_distill.py",
        "--experiment",
        "kd",
        "--model",
        "bert",
        "--task",
        name,
        "--dataset",
        f"mine_bert_{name}",
        "--max_seq_len",
        "24",
        "--type_vocab_size",
        "2",
        *student,
    )
    run(
        "run_pkd_distill.py",
        "--experiment",
        "pkd",
        "--model",
        "bert",
        "--task",
        name,
        "--teacher_exp",
        "mine",
        "--tmodel",
        "bert",
        "--tckpt",
        "4",
        *student,
    )
    for folder in (f"kd_bert_{name}", f"pkd_bert_{name}"):
        assert (exp_root / folder / "model-2.pt").is_file()
        assert json.loads((exp_root / folder / "config.json").read_text())["task_definition"]["text"] == "first"


@pytest.mark.parametrize(
    "content, labelled, regression, message",
    [
        ("qid,first,verdict\n1,a,same\n", True, False, r"train.csv, line 2: no value in column 'second'"),
        (
            "qid,first,second,verdict\n1,a,b,maybe\n",
            True,
            False,
            r"train.csv, line 2: label 'maybe' in column 'verdict' is not one of the task's labels \(same, different\)",
        ),
        (
            "qid,first,second,verdict\n1,a,b,high\n",
            True,
            True,
            r"train.csv, line 2: label 'high' in column 'verdict' is not a number",
        ),
        (
            "qid,first,second,verdict\n1,a,b,nan\n",
            True,
            True,
            r"train.csv, line 2: label 'nan' in column 'verdict' is not a finite number",
        ),
        ("first,second\na,b\n", False, False, r"train.csv, line 2: no value in column 'qid'"),
        ("qid,first,second\n", True, False, r"holds no examples"),
    ],
)
def test_a_bad_row_names_file_line_and_column(content, labelled, regression, message, tmp_path):
    from fine_tune.tasks.registry import user_task
    from fine_tune.tasks.user import check_definition

    spec = check_definition(
        {
            "files": {"train": "train.csv"} if labelled else {"test": "train.csv"},
            "text": "first",
            "text_pair": "second",
            "label": "verdict",
            "id": "qid",
            **({"regression": True} if regression else {"labels": LABELS}),
        },
        "task.json",
    )
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "train.csv").write_text(content)
    task = user_task("mine", spec)
    with pytest.raises(UserError, match=message):
        task.load(tmp_path, "train" if labelled else "test")


def test_a_task_from_a_hugging_face_dataset(run, tiny_bert, data_root, exp_root, tmp_path):
    """ "hf": a datasets source (here a local folder of CSV files, read by datasets.load_dataset as a hub dataset
    would be): each split is written once into the task's folder as JSON lines, class labels as names, and the task
    trains and evaluates like any other."""
    source = write_hub_copy(
        tmp_path / "hub_copy", {"train": rows(48, 0), "validation": rows(16, 1)}, ["first", "second", "verdict"]
    )
    folder = data_root / "from_hub"
    folder.mkdir()
    (folder / "task.json").write_text(
        json.dumps(
            {
                "hf": {"path": str(source), "splits": {"train": "train", "dev": "validation"}},
                "text": "first",
                "text_pair": "second",
                "label": "verdict",
                "labels": LABELS,
            }
        )
    )
    run(
        "run_fine_tune.py",
        "--experiment",
        "hub",
        "--model",
        "bert",
        "--task",
        "from_hub",
        "--ptrain_ver",
        str(tiny_bert),
        "--max_seq_len",
        "24",
        "--total_step",
        "2",
        "--warmup_step",
        "1",
        "--ckpt_step",
        "2",
        "--batch_size",
        "16",
        "--device_id",
        "-1",
    )
    written = [json.loads(x) for x in (folder / "train.jsonl").read_text().splitlines()]
    assert len(written) == 48 and written[0]["verdict"] in LABELS
    run("run_fine_tune_eval.py", "--experiment", "hub", "--model", "bert", "--task", "from_hub", "--dataset", "dev")
    assert (folder / "dev.jsonl").is_file()
    assert json.loads((exp_root / "hub_bert_from_hub" / "eval-dev.json").read_text())["num_rows"] == 16
    bad = data_root / "nowhere"
    bad.mkdir()
    (bad / "task.json").write_text(
        json.dumps(
            {
                "hf": {"path": str(tmp_path / "missing"), "splits": {"train": "train"}},
                "text": "first",
                "label": "verdict",
                "labels": LABELS,
            }
        )
    )
    with pytest.raises(AssertionError, match="could not load the Hugging Face dataset .*missing' split 'train'"):
        run(
            "run_fine_tune.py",
            "--experiment",
            "x",
            "--model",
            "bert",
            "--task",
            "nowhere",
            "--ptrain_ver",
            str(tiny_bert),
            "--max_seq_len",
            "24",
            "--total_step",
            "1",
            "--warmup_step",
            "0",
            "--device_id",
            "-1",
        )
    assert not (exp_root / "x_bert_nowhere").exists() and not (bad / "train.jsonl").exists()


def test_labels_follow_the_declared_order_through_parse_and_the_prediction_file(tmp_path):
    """Three classes listed out of sorted order in a .tsv task: the class ids are positions in ``labels`` (as the
    model's outputs are), the prediction file writes the names back, the ids are the id column's."""
    from fine_tune.tasks.registry import user_task
    from fine_tune.tasks.user import check_definition

    declared = ["positive", "negative", "neutral"]
    folder = tmp_path / "moods"
    folder.mkdir()
    (folder / "train.tsv").write_text(
        "text\tmood\tn\nfine day\tneutral\t9\ngreat\tpositive\t4\nawful\tnegative\t7\nlovely, really\tpositive\t2\n"
    )
    (folder / "test.tsv").write_text("n\ttext\n30\tso so\n11\tbad\n25\tgood\n")
    spec = check_definition(
        {
            "files": {"train": "train.tsv", "test": "test.tsv"},
            "text": "text",
            "label": "mood",
            "labels": declared,
            "id": "n",
            "metrics": ["macro_f1", "accuracy"],
        },
        "task.json",
    )
    task = user_task("moods", spec)
    assert task.label_names == tuple(declared) and task.num_class == 3 and task.main_metric == "macro_f1"
    assert task.labelled == frozenset({"train"}) and task.train_split == "train" and task.submission_labels == "names"
    train = task.load(tmp_path, "train")
    assert [(e.idx, e.text, e.text_pair, e.label) for e in train] == [
        (9, "fine day", None, 2),
        (4, "great", None, 0),
        (7, "awful", None, 1),
        (2, "lovely, really", None, 0),
    ]
    test = task.load(tmp_path, "test")
    assert [(e.idx, e.text, e.label) for e in test] == [(30, "so so", None), (11, "bad", None), (25, "good", None)]
    out = tmp_path / task.submission_name("test")
    task.write_submission(out, test, np.array([2, 1, 0]))
    assert out.name == "moods.tsv"
    assert out.read_text() == "index\tprediction\n30\tneutral\n11\tnegative\n25\tpositive\n"
    # integer labels listed out of order are classes by position too, not by value
    (folder / "ints.csv").write_text("text,y\na,3\nb,1\nc,2\n")
    ints = user_task(
        "moods",
        check_definition(
            {"files": {"train": "ints.csv"}, "text": "text", "label": "y", "labels": [3, 1, 2]}, "task.json"
        ),
    )
    assert [(e.idx, e.label) for e in ints.load(tmp_path, "train")] == [(0, 0), (1, 1), (2, 2)]


def test_the_definitions_defaults_and_options(tmp_path):
    """dev_split: dev, else val, else the first labelled split but train; unlabelled: the test... splits unless
    listed; main_metric: the first metric; regression: fractional scores as written, Pearson and Spearman."""
    from fine_tune.tasks.registry import user_task
    from fine_tune.tasks.user import check_definition

    def task(**spec):
        base = {"text": "t", "label": "y", "labels": ["b", "a"]}
        return user_task("x", check_definition({**base, **spec}, "task.json"))

    three = {"train": "train.csv", "held": "held.csv", "val": "val.csv", "test_a": "a.csv", "test_b": "b.csv"}
    t = task(files=three)
    assert t.dev_split == "val" and t.labelled == frozenset({"train", "held", "val"})
    assert (t.metrics, t.main_metric) == (("accuracy",), "accuracy")
    t = task(files={"train": "train.csv", "held": "held.csv", "test": "test.csv"}, metrics=["f1", "accuracy"])
    assert t.dev_split == "held" and t.main_metric == "f1" and t.metrics == ("f1", "accuracy")
    t = task(
        files={"train": "train.csv", "dev": "dev.csv", "val": "val.csv"},
        dev_split="val",
        unlabelled=["dev"],
        metrics=["accuracy", "mcc"],
        main_metric="mcc",
    )
    assert t.dev_split == "val" and t.labelled == frozenset({"train", "val"}) and t.main_metric == "mcc"
    t = task(files={"train": "train.csv", "val": "val.csv", "dev": "dev.csv"})
    assert t.dev_split == "dev"  # dev before val, whatever the files' order
    t = task(files={"all": "all.csv", "extra": "extra.csv"})
    assert t.train_split == "all"  # no split named train: the first
    # regression: one output, the scores as written (fractions kept), ids from the id column
    folder = tmp_path / "x"
    folder.mkdir()
    (folder / "train.jsonl").write_text(
        "".join(
            json.dumps({"t": f"s{i}", "y": y, "k": k}) + "\n"
            for i, (y, k) in enumerate([(3.8, 12), ("0.25", 5), (4.6, 8)])
        )
    )
    r = user_task(
        "x",
        check_definition(
            {"files": {"train": "train.jsonl"}, "text": "t", "label": "y", "id": "k", "regression": True}, "task.json"
        ),
    )
    assert r.regression and r.num_class == 1 and (r.metrics, r.main_metric) == (("pearson", "spearman"), "pearson")
    got = r.load(tmp_path, "train")
    assert [(e.idx, e.label) for e in got] == [(12, 3.8), (5, 0.25), (8, 4.6)]
    assert all(isinstance(e.label, float) for e in got)
    r.write_submission(tmp_path / "x.tsv", got, np.array([1.23456, 0.5, 4.0]))
    assert (tmp_path / "x.tsv").read_text() == "index\tprediction\n12\t1.235\n5\t0.500\n8\t4.000\n"


def test_a_hugging_face_class_label_is_written_as_its_name(tmp_path, monkeypatch):
    """materialise: a ClassLabel column becomes its names (the dataset's own order, here not sorted and not the
    task's), so the task maps them through its declared labels; an unlabelled split drops the label column."""
    datasets = pytest.importorskip("datasets")
    from fine_tune.tasks import user
    from fine_tune.tasks.registry import user_task
    from fine_tune.tasks.user import check_definition, materialise

    features = datasets.Features(
        {
            "t": datasets.Value("string"),
            "n": datasets.Value("int64"),
            "y": datasets.ClassLabel(names=["pos", "neg", "mid"]),
        }
    )
    data = {"t": ["a", "b", "c", "d"], "n": [40, 3, 17, 8], "y": [1, 2, 0, 1]}
    calls = []

    def load_dataset(path, name=None, split=None):
        calls.append((path, name, split))
        return datasets.Dataset.from_dict(data, features=features)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    monkeypatch.setattr(user, "hub_unreachable", lambda path: None)  # the hub answers
    spec = check_definition(
        {
            "hf": {"path": "someone/moods", "name": "v2", "splits": {"train": "train", "test": "test_split"}},
            "text": "t",
            "label": "y",
            "id": "n",
            "labels": ["mid", "neg", "pos"],
        },
        "task.json",
    )
    task = user_task("moods", spec)
    materialise(spec, "train", tmp_path / "moods" / "train.jsonl", True)
    materialise(spec, "test", tmp_path / "moods" / "test.jsonl", False)
    assert calls == [("someone/moods", "v2", "train"), ("someone/moods", "v2", "test_split")]
    written = [json.loads(x) for x in (tmp_path / "moods" / "train.jsonl").read_text().splitlines()]
    assert [r["y"] for r in written] == ["neg", "mid", "pos", "neg"]
    assert [(e.idx, e.label) for e in task.load(tmp_path, "train")] == [(40, 1), (3, 0), (17, 2), (8, 1)]
    assert all("y" not in json.loads(x) for x in (tmp_path / "moods" / "test.jsonl").read_text().splitlines())


def test_an_unreachable_hub_is_one_line_at_once(run, data_root, exp_root, tiny_bert, monkeypatch):
    """An "hf" source on a hub that does not answer (here an endpoint nothing listens on, as a machine without
    network sees the real one): datasets.load_dataset retried it five times, a warning line each (11 lines on stderr
    over about 24 s); the hub is asked once first, without retries, and the refusal is the one line. The warnings
    are counted at huggingface_hub's and datasets' loggers (their handler holds the stderr of the process start,
    which an in-process run does not capture)."""
    import logging

    import datasets

    monkeypatch.setattr(datasets.config, "HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    warnings = []

    class Count(logging.Handler):
        def emit(self, record):
            warnings.append(record.getMessage())

    handler = Count(logging.WARNING)
    for name in ("huggingface_hub", "datasets"):
        logging.getLogger(name).addHandler(handler)
    folder = data_root / "hubbed"
    folder.mkdir()
    (folder / "task.json").write_text(
        json.dumps(
            {
                "hf": {"path": "someone/nosuch", "splits": {"train": "train"}},
                "text": "first",
                "label": "verdict",
                "labels": LABELS,
            }
        )
    )
    try:
        proc = run(
            "run_fine_tune.py",
            "--experiment",
            "x",
            "--model",
            "bert",
            "--task",
            "hubbed",
            "--ptrain_ver",
            str(tiny_bert),
            "--max_seq_len",
            "24",
            "--total_step",
            "1",
            "--warmup_step",
            "0",
            "--device_id",
            "-1",
            check=False,
        )
    finally:
        for name in ("huggingface_hub", "datasets"):
            logging.getLogger(name).removeHandler(handler)
    assert proc.returncode == 2 and proc.stderr.splitlines() == [
        "error: could not load the Hugging Face dataset 'someone/nosuch' split 'train': the hub cannot be reached "
        "(ConnectError: [Errno 111] Connection refused); a dataset in the local cache loads with HF_HUB_OFFLINE=1"
    ]
    assert warnings == []
    assert sorted(p.name for p in folder.iterdir()) == ["task.json"] and not (exp_root / "x_bert_hubbed").exists()
