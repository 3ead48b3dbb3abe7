"""GLUE and SuperGLUE classification tasks: each parsed from a fixture in its official layout (the real headers
and quirks, written here), its metrics against hand-computed values, its submission file in the server's format;
a 3-class task (MNLI) through fine-tuning, evaluation, the submission files and a layer-wise method."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from fine_tune import synthetic
from fine_tune.errors import UserError
from fine_tune.tasks import TASKS, get_task
from fine_tune.tasks.metrics import compute

MNLI_TRAIN = [
    "index",
    "promptID",
    "pairID",
    "genre",
    "sentence1_binary_parse",
    "sentence2_binary_parse",
    "sentence1_parse",
    "sentence2_parse",
    "sentence1",
    "sentence2",
    "label1",
    "gold_label",
]
MNLI_DEV = MNLI_TRAIN[:-2] + ["label1", "label2", "label3", "label4", "label5", "gold_label"]
MNLI_TEST = MNLI_TRAIN[:-2]
NLI3 = ("entailment", "neutral", "contradiction")


def tsv(path, header, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ([("\t".join(header))] if header else []) + ["\t".join(map(str, r)) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def mnli_index(i):
    """The ``index`` column of row ``i``: unique, unsorted, never the row number."""
    return 500 + (37 * i + 11) % 101


def mnli_rows(n, seed, header):
    """MNLI rows whose label a tiny model can learn: the hypothesis repeats a cue word of its class. The annotators
    (label1..label5) disagree with the gold label on every row and with each other, so reading any column but
    ``gold_label`` gives other labels; ``index`` is not the row number."""
    rng = random.Random(seed)
    cues = {"entailment": "yes", "neutral": "maybe", "contradiction": "no"}
    rows, labels = [], []
    for i in range(n):
        gold = rng.randrange(3)
        label = NLI3[gold]
        s1 = " ".join(
            rng.choice(["the", "a", "cat", "dog", "sat", "ran", "on", "mat"]) for _ in range(rng.randint(4, 12))
        )
        s2 = f"{cues[label]} {cues[label]} " + " ".join(rng.choice(["it", "is", "was", "there"]) for _ in range(3))
        row = {
            "index": mnli_index(i),
            "promptID": 100 + i,
            "pairID": f"{100 + i}e",
            "genre": "fiction",
            "sentence1_binary_parse": "( x )",
            "sentence2_binary_parse": "( y )",
            "sentence1_parse": "(ROOT x)",
            "sentence2_parse": "(ROOT y)",
            "sentence1": s1,
            "sentence2": s2,
            "gold_label": label,
        }
        # annotator k: one of the two other classes, alternating with k and the row
        row.update({f"label{k}": NLI3[(gold + 1 + (i + k) % 2) % 3] for k in range(1, 6)})
        rows.append([row[k] for k in header])
        labels.append(gold)
    return rows, labels


def write_mnli(root, n_train=96, n_dev=32, n_test=16):
    tsv(root / "MNLI" / "train.tsv", MNLI_TRAIN, mnli_rows(n_train, 0, MNLI_TRAIN)[0])
    for i, split in enumerate(("dev_matched", "dev_mismatched")):
        tsv(root / "MNLI" / f"{split}.tsv", MNLI_DEV, mnli_rows(n_dev, 1 + i, MNLI_DEV)[0])
    for i, split in enumerate(("test_matched", "test_mismatched")):
        tsv(root / "MNLI" / f"{split}.tsv", MNLI_TEST, mnli_rows(n_test, 3 + i, MNLI_TEST)[0])


# ------------------------------------------------------------------------ each task's official layout


def test_cola_header_less_train_and_indexed_test(tmp_path):
    # train: no header; source, label, original label ("*" where it was changed), sentence
    tsv(
        tmp_path / "CoLA" / "train.tsv",
        None,
        [
            ["gj04", 0, "*", "They drank the pub."],
            ["gj04", 1, "", "Our friends won't buy this analysis."],
            ["cj99", 1, "", "The sailors rode the breeze clear of the rocks."],
        ],
    )
    tsv(
        tmp_path / "CoLA" / "test.tsv",
        ["index", "sentence"],
        [[31, "Bill whistled past the house."], [4, "The car honked its way."]],
    )
    task = get_task("cola")
    train = task.load(tmp_path, "train")
    assert [(e.idx, e.text, e.text_pair, e.label) for e in train] == [
        (0, "They drank the pub.", None, 0),
        (1, "Our friends won't buy this analysis.", None, 1),
        (2, "The sailors rode the breeze clear of the rocks.", None, 1),
    ]
    test = task.load(tmp_path, "test")
    assert [(e.idx, e.text, e.label) for e in test] == [
        (31, "Bill whistled past the house.", None),
        (4, "The car honked its way.", None),
    ]
    out = tmp_path / "CoLA.tsv"
    task.write_submission(out, test, [1, 0])
    assert out.read_text() == "index\tprediction\n31\t1\n4\t0\n"  # GLUE: class indices for CoLA
    assert task.main_metric == "mcc" and task.label_names == ("unacceptable", "acceptable")


@pytest.mark.parametrize(
    "name, folder, labelled_header, test_header, row, test_row, want",
    [
        (
            "sst2",
            "SST-2",
            ["sentence", "label"],
            ["index", "sentence"],
            ["a gripping film", 1],
            [7, "dull"],
            ("a gripping film", None, 1),
        ),
        (
            "mrpc",
            "MRPC",
            ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"],
            ["index", "#1 ID", "#2 ID", "#1 String", "#2 String"],
            [1, 702876, 702977, "He said so.", "He did say so."],
            [7, 1, 2, "a", "b"],
            ("He said so.", "He did say so.", 1),
        ),
        (
            "qnli",
            "QNLI",
            ["index", "question", "sentence", "label"],
            ["index", "question", "sentence"],
            [0, "Who wrote it?", "Ann wrote it.", "entailment"],
            [7, "q", "s"],
            ("Who wrote it?", "Ann wrote it.", 0),
        ),
        (
            "rte",
            "RTE",
            ["index", "sentence1", "sentence2", "label"],
            ["index", "sentence1", "sentence2"],
            [0, "A man sleeps.", "Nobody sleeps.", "not_entailment"],
            [7, "a", "b"],
            ("A man sleeps.", "Nobody sleeps.", 1),
        ),
        (
            "wnli",
            "WNLI",
            ["index", "sentence1", "sentence2", "label"],
            ["index", "sentence1", "sentence2"],
            [0, "I stuck a pin.", "The pin stuck.", 1],
            [7, "a", "b"],
            ("I stuck a pin.", "The pin stuck.", 1),
        ),
    ],
)
def test_glue_pair_and_single_sentence_layouts(
    tmp_path, name, folder, labelled_header, test_header, row, test_row, want
):
    task = get_task(name)
    tsv(tmp_path / folder / "dev.tsv", labelled_header, [row])
    tsv(tmp_path / folder / "test.tsv", test_header, [test_row])
    (ex,) = task.load(tmp_path, "dev")
    assert (ex.text, ex.text_pair, ex.label) == want
    (t,) = task.load(tmp_path, "test")
    assert t.idx == 7 and t.label is None
    out = tmp_path / task.submission_name("test")
    task.write_submission(out, [t], [want[2]])
    shown = task.labels_in_files[want[2]] if task.submission_labels == "names" else str(want[2])
    assert out.name == f"{folder}.tsv" and out.read_text() == f"index\tprediction\n7\t{shown}\n"
    # names where the server expects names (QNLI, RTE), indices elsewhere
    assert (task.submission_labels == "names") == (name in ("qnli", "rte"))


def test_mnli_splits_columns_and_two_submission_files(tmp_path):
    write_mnli(tmp_path, 6, 6, 3)
    task = get_task("mnli")
    assert task.num_class == 3 and task.dev_split == "dev_matched"
    cues = {"yes": 0, "maybe": 1, "no": 2}  # entailment, neutral, contradiction: the model's output order
    for split, header, n, seed in (
        ("dev_matched", MNLI_DEV, 6, 1),
        ("dev_mismatched", MNLI_DEV, 6, 2),
        ("train", MNLI_TRAIN, 6, 0),
    ):
        rows, labels = mnli_rows(n, seed, header)
        got = task.load(tmp_path, split)
        gold = [NLI3.index(r[header.index("gold_label")]) for r in rows]  # read back from the file's column
        assert [e.label for e in got] == labels == gold, split
        assert len(set(labels)) == 3, split  # every class appears
        for column in [c for c in header if c.startswith("label")]:  # no annotator agrees with the gold label
            assert all(NLI3.index(r[header.index(column)]) != g for r, g in zip(rows, gold)), (split, column)
        assert [e.idx for e in got] == [r[0] for r in rows] == [mnli_index(i) for i in range(n)]
        assert [(e.text, e.text_pair) for e in got] == [
            (r[header.index("sentence1")], r[header.index("sentence2")]) for r in rows
        ]
        assert [cues[e.text_pair.split()[0]] for e in got] == labels  # the hypothesis is the pair's second text
    for split, name in (("test_matched", "MNLI-m.tsv"), ("test_mismatched", "MNLI-mm.tsv")):
        rows = task.load(tmp_path, split)
        assert all(e.label is None for e in rows)
        out = tmp_path / task.submission_name(split)
        task.write_submission(out, rows, [2, 0, 1])
        assert out.name == name
        ids = [mnli_index(i) for i in range(3)]
        assert out.read_text() == (
            f"index\tprediction\n{ids[0]}\tcontradiction\n{ids[1]}\tentailment\n{ids[2]}\tneutral\n"
        )
    with pytest.raises(
        UserError, match="'dev' is not a mnli split; did you mean dev_matched\\? valid splits: train, dev_matched"
    ):
        task.path(tmp_path, "dev")


def test_cb_jsonl_and_its_superglue_file(tmp_path):
    folder = tmp_path / "CB"
    folder.mkdir()
    val = [
        {"premise": "It rained.", "hypothesis": "It was dry.", "label": "contradiction", "idx": 3},
        {"premise": "It rained.", "hypothesis": "It was wet.", "label": "entailment", "idx": 0},
        {"premise": "It rained.", "hypothesis": "It was cold.", "label": "neutral", "idx": 1},
        {"premise": "It poured.", "hypothesis": "It was wet.", "label": "entailment", "idx": 2},
    ]
    (folder / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in val))
    (folder / "test.jsonl").write_text(
        "".join(json.dumps({"premise": f"p{i}", "hypothesis": f"h{i}", "idx": i}) + "\n" for i in (5, 2, 9))
    )
    task = get_task("cb")
    assert [(e.idx, e.text, e.text_pair, e.label) for e in task.load(tmp_path, "val")] == [
        (3, "It rained.", "It was dry.", 1),
        (0, "It rained.", "It was wet.", 0),
        (1, "It rained.", "It was cold.", 2),
        (2, "It poured.", "It was wet.", 0),
    ]  # the model's order: entailment, contradiction, neutral
    out = tmp_path / "CB.jsonl"
    test = task.load(tmp_path, "test")
    assert [(e.idx, e.text, e.text_pair) for e in test] == [(5, "p5", "h5"), (2, "p2", "h2"), (9, "p9", "h9")]
    task.write_submission(out, test, [2, 0, 1])
    assert [json.loads(x) for x in out.read_text().splitlines()] == [
        {"idx": 5, "label": "neutral"},
        {"idx": 2, "label": "entailment"},
        {"idx": 9, "label": "contradiction"},
    ]


@pytest.mark.parametrize(
    "name, content, message",
    [
        (
            "rte",
            "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n",
            r"RTE/dev.tsv, line 2: unknown label 'maybe' in column label \(expected one of entailment, not_entailment\)",
        ),
        (
            "mrpc",
            "Quality\t#1 ID\t#2 ID\t#1 String\n0\t1\t2\ta\n",
            r"MRPC/dev.tsv, line 1: header \['Quality', '#1 ID', '#2 ID', '#1 String'\] lacks the column\(s\) '#2 String'",
        ),
        (
            "qnli",
            "index\tquestion\tsentence\tlabel\n0\tq\ts\n",
            r"QNLI/dev.tsv, line 2: 3 tab-separated columns, expected 4",
        ),
        (
            "rte",
            "index\tsentence1\tsentence2\tlabel\nx\ta\tb\tentailment\n",
            r"RTE/dev.tsv, line 2: id 'x' in column index is not an integer",
        ),
    ],
)
def test_a_bad_row_names_file_line_and_column(tmp_path, name, content, message):
    task = get_task(name)
    path = task.path(tmp_path, "dev")
    path.parent.mkdir(parents=True)
    path.write_text(content)
    with pytest.raises(UserError, match=message):
        task.load(tmp_path, "dev")


def test_rte_superglue_jsonl_labels_and_ids(tmp_path):
    """SuperGLUE's RTE: premise/hypothesis, "entailment" 0 and "not_entailment" 1 (unbalanced, not in row order),
    the file's idx (not the row number) on the test rows and in RTE.jsonl."""
    folder = tmp_path / "RTE"
    folder.mkdir()
    val = [("not_entailment", 4), ("entailment", 0), ("not_entailment", 2), ("not_entailment", 1)]
    (folder / "val.jsonl").write_text(
        "".join(json.dumps({"premise": f"p{i}", "hypothesis": f"h{i}", "label": y, "idx": i}) + "\n" for y, i in val)
    )
    (folder / "test.jsonl").write_text(
        "".join(json.dumps({"premise": f"p{i}", "hypothesis": f"h{i}", "idx": i}) + "\n" for i in (8, 3))
    )
    task = get_task("rte_superglue")
    assert [(e.idx, e.text, e.text_pair, e.label) for e in task.load(tmp_path, "val")] == [
        (4, "p4", "h4", 1),
        (0, "p0", "h0", 0),
        (2, "p2", "h2", 1),
        (1, "p1", "h1", 1),
    ]
    out = tmp_path / task.submission_name("test")
    task.write_submission(out, task.load(tmp_path, "test"), [1, 0])
    assert out.name == "RTE.jsonl" and [json.loads(x) for x in out.read_text().splitlines()] == [
        {"idx": 8, "label": "not_entailment"},
        {"idx": 3, "label": "entailment"},
    ]


# ------------------------------------------------------------------------ metrics


# unbalanced classes, so that F1 of class 1, F1 of class 0, macro, weighted and micro F1 (= accuracy) all differ
BIN_LABELS = np.array([1, 1, 1, 1, 1, 0, 0, 1, 1, 0])
BIN_PREDS = np.array([1, 1, 1, 0, 1, 1, 0, 1, 0, 0])
# tp 5, fn 2, fp 1, tn 2: accuracy 7/10; F1(1) = 2*5 / (2*5 + 2 + 1) = 10/13; F1(0) = 2*2 / (2*2 + 1 + 2) = 4/7;
# MCC = (5*2 - 1*2) / sqrt((5+1)(5+2)(2+1)(2+2))
BIN = {"accuracy": 0.7, "f1": 10 / 13, "mcc": 8 / np.sqrt(6 * 7 * 3 * 4)}
THREE_LABELS = np.array([0, 0, 0, 0, 0, 1, 1, 2, 0, 1])  # 6, 3 and 1 rows
THREE_PREDS = np.array([0, 0, 0, 1, 0, 1, 2, 2, 2, 1])
# per-class F1: class 0 tp 4 fn 2 fp 0 -> 0.8; class 1 tp 2 fn 1 fp 1 -> 2/3; class 2 tp 1 fn 0 fp 2 -> 0.5
THREE_F1 = (0.8, 2 / 3, 0.5)


def test_metrics_against_hand_computed_values():
    from sklearn.metrics import f1_score, matthews_corrcoef

    got = compute(("accuracy", "f1", "mcc"), BIN_LABELS, BIN_PREDS)
    assert got == pytest.approx(BIN, abs=1e-12)
    # the alternatives a slip would compute are all different here
    assert got["f1"] != pytest.approx(4 / 7) and got["f1"] != pytest.approx(
        f1_score(BIN_LABELS, BIN_PREDS, average="macro")
    )
    assert got["mcc"] == pytest.approx(matthews_corrcoef(BIN_LABELS, BIN_PREDS))
    three = compute(("macro_f1", "accuracy"), THREE_LABELS, THREE_PREDS)
    assert three["macro_f1"] == pytest.approx(sum(THREE_F1) / 3, abs=1e-12)
    assert three["macro_f1"] == pytest.approx(f1_score(THREE_LABELS, THREE_PREDS, average="macro"))
    weighted = np.dot(THREE_F1, [6, 3, 1]) / 10
    assert weighted == pytest.approx(f1_score(THREE_LABELS, THREE_PREDS, average="weighted"))
    assert abs(three["macro_f1"] - weighted) > 0.05 and abs(three["macro_f1"] - three["accuracy"]) > 0.04
    assert three["accuracy"] == pytest.approx(0.7)
    # the edge cases: 0, not NaN, an exception or a warning on every evaluation
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert compute(("mcc",), BIN_LABELS, np.ones(10, dtype=int))["mcc"] == 0.0  # a constant prediction
        assert compute(("f1", "macro_f1"), BIN_LABELS, np.zeros(10, dtype=int)) == pytest.approx(
            {"f1": 0.0, "macro_f1": (0 + 2 * 3 / (3 + 10)) / 2}
        )  # nothing predicted positive: F1(1) = 0
        assert compute(("f1",), np.zeros(4, dtype=int), np.zeros(4, dtype=int))["f1"] == 0.0  # no positive at all
        flat = compute(("pearson", "spearman"), np.array([1.5, 2.25, 4.0]), np.array([3.0, 3.0, 3.0]))
        assert flat == {"pearson": 0.0, "spearman": 0.0}


# every task's metrics (what evaluation reports) and its main metric (what picks the best checkpoint)
TASK_METRICS = {
    "cola": (("mcc", "accuracy"), "mcc"),
    "sst2": (("accuracy",), "accuracy"),
    "mrpc": (("accuracy", "f1"), "accuracy"),
    "qqp": (("accuracy", "f1"), "accuracy"),
    "stsb": (("pearson", "spearman"), "pearson"),
    "mnli": (("accuracy",), "accuracy"),
    "qnli": (("accuracy",), "accuracy"),
    "rte": (("accuracy",), "accuracy"),
    "wnli": (("accuracy",), "accuracy"),
    "boolq": (("accuracy",), "accuracy"),
    "cb": (("accuracy", "macro_f1"), "accuracy"),
    "rte_superglue": (("accuracy",), "accuracy"),
}


@pytest.mark.parametrize("name", sorted(TASK_METRICS))
def test_each_task_reports_its_metrics_computed_independently(name):
    """Each task's metric list on labels and predictions where the alternatives differ, against scikit-learn and
    SciPy: MCC for CoLA, F1 of class 1 for MRPC and QQP, macro F1 for CB, Pearson and Spearman for STS-B."""
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    task = get_task(name)
    assert (task.metrics, task.main_metric) == TASK_METRICS[name]
    if task.regression:
        labels, preds = np.array([3.8, 0.25, 4.6, 1.75, 2.5, 0.0]), np.array([3.1, 1.0, 4.9, 2.6, 1.9, 1.2])
        want = {"pearson": pearsonr(labels, preds)[0], "spearman": spearmanr(labels, preds)[0]}
        assert abs(want["pearson"] - want["spearman"]) > 0.01
    else:
        labels, preds = (THREE_LABELS, THREE_PREDS) if task.num_class == 3 else (BIN_LABELS, BIN_PREDS)
        want = {
            "accuracy": accuracy_score(labels, preds),
            "mcc": matthews_corrcoef(labels, preds),
            "f1": f1_score(labels, preds, pos_label=1, average="binary") if task.num_class == 2 else None,
            "macro_f1": f1_score(labels, preds, average="macro"),
        }
    got = compute(task.metrics, labels, preds)
    assert set(got) == set(task.metrics)
    assert got == pytest.approx({k: want[k] for k in task.metrics}, abs=1e-12)


def test_the_main_metric_picks_the_best_checkpoint(tmp_path):
    from fine_tune.selection import best_row

    rows = [{"ckpt": 1, "accuracy": 0.8, "mcc": 0.1}, {"ckpt": 2, "accuracy": 0.7, "mcc": 0.3}]
    assert best_row(rows, get_task("cola").main_metric)["ckpt"] == 2
    assert best_row(rows, get_task("sst2").main_metric)["ckpt"] == 1


# ------------------------------------------------------------------------ three classes end to end


def test_mnli_fine_tune_eval_submission_and_a_layerwise_student(run, tiny_bert, data_root, exp_root):
    write_mnli(data_root)
    common = ["--model", "bert", "--task", "mnli", "--max_seq_len", "32", "--device_id", "-1"]
    run(
        "run_fine_tune.py",
        "--experiment",
        "t",
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
    exp = exp_root / "t_bert_mnli"
    assert json.loads((exp / "config.json").read_text())["num_class"] == 3  # from the task's label set
    out = run(
        "run_fine_tune_eval.py",
        "--experiment",
        "t",
        "--model",
        "bert",
        "--task",
        "mnli",
        "--dataset",
        "dev_mismatched",
        "--ckpt",
        "2",
    )
    table = json.loads((exp / "eval-dev_mismatched.json").read_text())
    assert [r["ckpt"] for r in table["rows"]] == [2, 4] and "accuracy" in out.stdout
    for split, name in (("test_matched", "MNLI-m.tsv"), ("test_mismatched", "MNLI-mm.tsv")):
        run(
            "generate_test_prediction.py",
            "--experiment",
            "t",
            "--model",
            "bert",
            "--task",
            "mnli",
            "--dataset",
            split,
            "--ckpt",
            "4",
        )
        lines = (exp / name).read_text().splitlines()
        assert lines[0] == "index\tprediction" and len(lines) == 17
        assert [x.split("\t")[0] for x in lines[1:]] == [str(mnli_index(i)) for i in range(16)]  # the file's ids
        assert all(x.split("\t")[1] in NLI3 for x in lines[1:])
    with pytest.raises(AssertionError, match="--num_class 2: mnli has 3 classes"):
        run("run_fine_tune.py", "--experiment", "two", "--ptrain_ver", str(tiny_bert), *common, "--num_class", "2")
    # a layer-wise method on the 3-class teacher: a 1-layer PKD student
    run(
        "run_pkd_distill.py",
        "--experiment",
        "s",
        "--model",
        "bert",
        "--task",
        "mnli",
        "--teacher_exp",
        "t",
        "--tmodel",
        "bert",
        "--tckpt",
        "4",
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
    )
    student = exp_root / "s_bert_mnli"
    assert json.loads((student / "config.json").read_text())["num_class"] == 3
    run("run_fine_tune_eval.py", "--experiment", "s", "--model", "bert", "--task", "mnli", "--dataset", "dev_matched")
    assert json.loads((student / "eval-dev_matched.json").read_text())["rows"][0]["ckpt"] == 2


def test_diagnostics_are_splits_of_the_task_whose_model_predicts_them(tmp_path):
    tsv(tmp_path / "diagnostic" / "diagnostic.tsv", ["index", "sentence1", "sentence2"], [[0, "A cat.", "An animal."]])
    mnli = get_task("mnli")
    (ax,) = mnli.load(tmp_path, "ax")
    assert (ax.idx, ax.text, ax.text_pair, ax.label) == (0, "A cat.", "An animal.", None)
    mnli.write_submission(tmp_path / mnli.submission_name("ax"), [ax], [1])
    assert (tmp_path / "AX.tsv").read_text() == "index\tprediction\n0\tneutral\n"
    rte = get_task("rte_superglue")
    for folder, rows in (
        ("AX-b", [{"sentence1": "s1", "sentence2": "s2", "label": "entailment", "idx": 3}]),
        (
            "AX-g",
            [
                {"premise": "p his", "hypothesis": "h", "idx": 4, "label": "not_entailment", "pair_id": 1},
                {"premise": "p her", "hypothesis": "h", "idx": 5, "label": "not_entailment", "pair_id": 1},
            ],
        ),
    ):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / f"{folder}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        split = folder.lower().replace("-", "")
        examples = rte.load(tmp_path, split)
        # predicted for the submission, and scored too (issue 30): the labels are read (tests/test_diagnostics.py)
        assert [(e.idx, e.label) for e in examples] == [(r["idx"], rte.label_names.index(r["label"])) for r in rows]
        out = tmp_path / rte.submission_name(split)
        rte.write_submission(out, examples, [1] * len(rows))
        assert out.name == f"{folder}.jsonl"
        assert [json.loads(x) for x in out.read_text().splitlines()] == [
            {"idx": r["idx"], "label": "not_entailment"} for r in rows
        ]


def test_the_glue_zip_holds_exactly_the_required_files_or_is_refused(run, exp_root, data_root, tmp_path):
    """Submission files placed in experiment folders as generate_test_prediction.py writes them: the zip holds every
    file GLUE requires at its root, each from the best experiment of its task on dev (or the one named with --use);
    a missing one is refused with what writes it, and a file that does not predict every row of its split (by the
    split's ids, where the split is under the data root: QQP here) too, before anything is written."""
    import zipfile

    from fine_tune.submission import REQUIRED, writers

    def place(task, names, scores=(("a", 0.6), ("b", 0.7)), rows=None):
        t = get_task(task)
        for exp, score in scores:
            folder = exp_root / f"{exp}_bert_{task}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "config.json").write_text(json.dumps({"task": task}))
            for name in names:
                split = made_by[name][1]
                ids = [e.idx for e in t.load(data_root, split)] if t.path(data_root, split).is_file() else [0]
                synthetic.write_submission_file(folder / name, t, ids[:rows], {"a": 0, "b": 1}[exp])
            (folder / f"eval-{t.dev_split}.json").write_text(
                json.dumps({"best": {t.main_metric: {"ckpt": 1, "value": score}}})
            )

    made_by = writers("glue")
    assert set(made_by) == set(REQUIRED["glue"])  # every GLUE file has its task here
    for task in {t for t, _ in made_by.values()} - {"stsb"}:
        place(task, [n for n, (t, _) in made_by.items() if t == task])
    with pytest.raises(
        AssertionError,
        match=r"the glue submission lacks 1 of 11 files: STS-B.tsv \(generate_test_"
        r"prediction.py --task stsb --dataset test",
    ):
        run("make_submission.py", "--benchmark", "glue")
    assert not list(exp_root.glob("*.zip"))
    place("stsb", ["STS-B.tsv"])
    out = tmp_path / "glue.zip"
    place("qqp", ["QQP.tsv"], rows=1)  # the one-row QQP.tsv: refused, nothing written
    with pytest.raises(
        AssertionError,
        match=r"QQP.tsv predicts 1 rows; .*QQP/test.tsv has 32 \(the ids differ from "
        r"row 2 on\)",
    ):
        run("make_submission.py", "--benchmark", "glue", "--data_root", str(data_root), "--out", str(out))
    assert not out.exists()
    place("qqp", ["QQP.tsv"])
    run("make_submission.py", "--benchmark", "glue", "--use", "mnli=a_bert_mnli", "--out", str(out))
    with zipfile.ZipFile(out) as z:
        assert sorted(z.namelist()) == sorted(REQUIRED["glue"])
        assert z.read("CoLA.tsv").decode().endswith("\t1\n")  # the best on dev (0.7): b, predicting class 1
        assert z.read("MNLI-m.tsv").decode().endswith("\tentailment\n")  # --use mnli=a_bert_mnli: class 0
        assert z.read("AX.tsv").decode().endswith("\tentailment\n")  # AX comes from the MNLI experiment too


# ------------------------------------------------------------------------ regression: STS-B

STSB = ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2", "score"]


def stsb_index(i):
    return 2000 + (13 * i + 5) % 97  # unique, unsorted, never the row number


def stsb_rows(n, seed, labelled=True):
    rng = random.Random(seed)
    words = ["a", "man", "plays", "guitar", "woman", "cuts", "onion", "dog", "runs", "park"]
    rows = []
    for i in range(n):
        s1 = [rng.choice(words) for _ in range(6)]
        keep = rng.randint(0, 6)  # the score follows how much of sentence 1 sentence 2 repeats
        s2 = s1[:keep] + [rng.choice(words) for _ in range(6 - keep)]
        row = [
            stsb_index(i),
            "main-captions",
            "MSRvid",
            "2012test",
            f"{i:04d}",
            "none",
            "none",
            " ".join(s1),
            " ".join(s2),
        ]
        score = (5 * keep + rng.choice((0.25, 0.5, 0.75))) / 6.2  # fractional, in (0, 5)
        rows.append(row + [f"{score:.3f}"] if labelled else row)
    return rows


def write_stsb(root, n_train=96, n_dev=32, n_test=12):
    tsv(root / "STS-B" / "train.tsv", STSB, stsb_rows(n_train, 0))
    tsv(root / "STS-B" / "dev.tsv", STSB, stsb_rows(n_dev, 1))
    tsv(root / "STS-B" / "test.tsv", STSB[:-1], stsb_rows(n_test, 2, labelled=False))


def test_stsb_scores_metrics_and_file(tmp_path):
    write_stsb(tmp_path, 4, 3, 2)
    task = get_task("stsb")
    assert task.num_class == 1 and task.regression and task.main_metric == "pearson"
    for split, n, seed in (("train", 4, 0), ("dev", 3, 1)):
        got = task.load(tmp_path, split)
        rows = stsb_rows(n, seed)
        assert all(isinstance(e.label, float) and 0 < e.label < 5 and e.label != int(e.label) for e in got)
        assert [e.label for e in got] == [float(r[-1]) for r in rows]
        assert [(e.idx, e.text, e.text_pair) for e in got] == [(r[0], r[7], r[8]) for r in rows]
    test = task.load(tmp_path, "test")
    assert [e.idx for e in test] == [stsb_index(0), stsb_index(1)] and all(e.label is None for e in test)
    out = tmp_path / "STS-B.tsv"
    task.write_submission(out, test, np.array([3.14159, 0.5]))
    assert out.read_text() == f"index\tprediction\n{stsb_index(0)}\t3.142\n{stsb_index(1)}\t0.500\n"
    # fractional gold scores, read as written: Pearson and Spearman on them, not on whole numbers
    tsv(
        tmp_path / "frac" / "STS-B" / "dev.tsv",
        STSB,
        [
            [9 - i, "main-news", "x", "2012", "0", "none", "none", f"a{i}", f"b{i}", score]
            for i, score in enumerate(["3.8", "0.25", "4.6", "1.75", "2.5", "4.2"])
        ],
    )
    gold = np.array([e.label for e in task.load(tmp_path / "frac", "dev")])
    assert gold.tolist() == [3.8, 0.25, 4.6, 1.75, 2.5, 4.2]
    pred = np.array([3.4, 0.9, 4.1, 2.6, 1.8, 4.4])
    want = {"pearson": np.corrcoef(gold, pred)[0, 1], "spearman": 1 - 6 * 4 / (6 * (6**2 - 1))}  # ranks: one swap
    assert compute(task.metrics, gold, pred) == pytest.approx(want, abs=1e-12)
    whole = np.trunc(gold)  # what truncated or rounded scores would give
    assert abs(compute(("pearson",), whole, pred)["pearson"] - want["pearson"]) > 1e-3
    assert abs(compute(("spearman",), np.round(gold), pred)["spearman"] - want["spearman"]) > 1e-3
    bad = tmp_path / "bad"
    tsv(bad / "STS-B" / "dev.tsv", STSB, [stsb_rows(1, 0)[0][:-1] + ["high"]])
    with pytest.raises(UserError, match=r"STS-B/dev.tsv, line 2: label 'high' in column score is not a number"):
        task.load(bad, "dev")
    # Pearson and Spearman against the textbook formulas
    y, p = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 3.0, 2.0, 5.0])
    r = ((y - y.mean()) * (p - p.mean())).sum() / np.sqrt(((y - y.mean()) ** 2).sum() * ((p - p.mean()) ** 2).sum())
    d = np.array([1, 2, 3, 4]) - np.array([1, 3, 2, 4])  # rank differences
    rho = 1 - 6 * (d**2).sum() / (4 * (4**2 - 1))
    assert compute(("pearson", "spearman"), y, p) == pytest.approx({"pearson": r, "spearman": rho})


def test_regression_losses_are_mean_squared_errors():
    """Whether the losses are MSEs is the task's (Task.regression, STS-B), read by the method at its build."""
    import torch

    from fine_tune.engine.protocol import ModelOutputs
    from fine_tune.methods import MethodSettings
    from fine_tune.methods.logits_kd import HardLabel, logits_kd_loss

    stsb = get_task("stsb")
    assert stsb.regression and not get_task("qqp").regression
    s, t, y = torch.tensor([[1.0], [2.0]]), torch.tensor([[1.5], [1.0]]), torch.tensor([2.0, 2.5])
    parts = logits_kd_loss(s, t, y, hard_weight=0.3, soft_weight=0.7, temperature=1.0, regression=stsb.regression)
    hard, soft = ((1 - 2) ** 2 + (2 - 2.5) ** 2) / 2, ((1 - 1.5) ** 2 + (2 - 1) ** 2) / 2
    assert parts["hard_loss"].item() == pytest.approx(hard) and parts["soft_loss"].item() == pytest.approx(soft)
    assert parts["logits_loss"].item() == pytest.approx(0.3 * hard + 0.7 * soft)
    method = HardLabel.build(MethodSettings({}, num_class=stsb.num_class, regression=stsb.regression))
    assert method.losses({"labels": y}, ModelOutputs(s))["loss"].item() == pytest.approx(hard)


def test_stsb_fine_tune_logits_offline_kd_eval_and_file(run, tiny_bert, data_root, exp_root):
    """Regression end to end: fine-tune (one output, MSE) -> the teacher's scores as a logits data set (one
    column) -> offline KD (MSE to gold and teacher) -> evaluation (Pearson, Spearman) -> STS-B.tsv."""
    write_stsb(data_root)
    common = ["--model", "bert", "--task", "stsb", "--max_seq_len", "32", "--device_id", "-1"]
    run(
        "run_fine_tune.py",
        "--experiment",
        "t",
        "--ptrain_ver",
        str(tiny_bert),
        *common,
        "--total_step",
        "4",
        "--warmup_step",
        "1",
        "--ckpt_step",
        "4",
        "--batch_size",
        "16",
        "--lr",
        "1e-3",
    )
    assert json.loads((exp_root / "t_bert_stsb" / "config.json").read_text())["num_class"] == 1
    out = run(
        "run_fine_tune_gen_logits.py",
        "--experiment",
        "t",
        "--model",
        "bert",
        "--task",
        "stsb",
        "--dataset",
        "train",
        "--ckpt",
        "4",
    )
    assert "pearson" in out.stdout
    from fine_tune.tasks.logits import logits_dir

    rows = [
        json.loads(x) for x in (logits_dir(data_root, "t_bert_stsb", "train") / "logits.jsonl").read_text().splitlines()
    ]
    assert len(rows) == 96 and all(len(r["logits"]) == 1 and isinstance(r["label"], float) for r in rows)  # one column
    student = [
        "--experiment",
        "s",
        "--model",
        "bert",
        "--task",
        "stsb",
        "--dataset",
        "t_bert_stsb",
        "--d_model",
        "32",
        "--d_ff",
        "64",
        "--num_attention_heads",
        "2",
        "--num_hidden_layers",
        "1",
        "--type_vocab_size",
        "2",
        "--total_step",
        "2",
        "--warmup_step",
        "1",
        "--ckpt_step",
        "2",
        "--batch_size",
        "16",
        "--max_seq_len",
        "32",
        "--device_id",
        "-1",
    ]
    with pytest.raises(AssertionError, match="--softmax_temp 2: a regression task"):
        run("run_fine_tune_distill.py", *student, "--softmax_temp", "2")
    assert not (exp_root / "s_bert_stsb").exists()
    run("run_fine_tune_distill.py", *student)
    run("run_fine_tune_eval.py", "--experiment", "s", "--model", "bert", "--task", "stsb", "--dataset", "dev")
    table = json.loads((exp_root / "s_bert_stsb" / "eval-dev.json").read_text())
    assert set(table["rows"][0]) >= {"pearson", "spearman"} and table["best"]["pearson"]["ckpt"] == 2
    # the evaluation scored the fractional gold scores of the file, as written
    from scipy.stats import pearsonr, spearmanr

    with np.load(exp_root / "s_bert_stsb" / "eval-dev-predictions.npz") as z:
        gold, pred = z["labels"], z["pred_2"]
        assert z["idx"].tolist() == [stsb_index(i) for i in range(32)]
    assert gold.tolist() == pytest.approx([float(r[-1]) for r in stsb_rows(32, 1)], abs=1e-6)
    assert (gold != np.round(gold)).all()
    assert table["rows"][0]["pearson"] == pytest.approx(pearsonr(gold, pred)[0], abs=1e-5)
    assert table["rows"][0]["spearman"] == pytest.approx(spearmanr(gold, pred)[0], abs=1e-5)
    run("generate_test_prediction.py", "--experiment", "s", "--model", "bert", "--task", "stsb", "--ckpt", "best")
    lines = (exp_root / "s_bert_stsb" / "STS-B.tsv").read_text().splitlines()
    assert lines[0] == "index\tprediction" and len(lines) == 13
    assert [x.split("\t")[0] for x in lines[1:]] == [str(stsb_index(i)) for i in range(12)]  # the file's ids
    assert all(np.isfinite(float(x.split("\t")[1])) for x in lines[1:])  # scores, not class indices
    # issue 32: --predict_file on a regression task: each row's score, equal to a forward of the checkpoint (a .tsv
    # without the index column: rows by number; --out as TSV)
    from conftest import checkpoint_logits

    pairs = [("a man is playing", "a man plays"), ("the cat sat", "dogs run fast")]
    source = data_root.parent / "pairs.tsv"
    source.write_text("sentence1\tsentence2\n" + "".join(f"{a}\t{b}\n" for a, b in pairs))
    run(
        "generate_test_prediction.py",
        "--experiment",
        "s",
        "--model",
        "bert",
        "--task",
        "stsb",
        "--ckpt",
        "best",
        "--predict_file",
        str(source),
        "--out",
        str(data_root.parent / "scores.tsv"),
    )
    lines = (data_root.parent / "scores.tsv").read_text().splitlines()
    assert lines[0] == "row\tprediction" and [x.split("\t")[0] for x in lines[1:]] == ["0", "1"]
    np.testing.assert_allclose(
        [float(x.split("\t")[1]) for x in lines[1:]],
        checkpoint_logits(exp_root / "s_bert_stsb", 2, pairs, 32)[:, 0],
        atol=1e-5,
    )
    table = run("results_table.py", "--task", "stsb").stdout
    assert "dev Pearson" in table and "dev Spearman" in table
    # a layer-wise method on the regression teacher works unchanged on hidden states
    run(
        "run_pkd_distill.py",
        "--experiment",
        "p",
        "--model",
        "bert",
        "--task",
        "stsb",
        "--teacher_exp",
        "t",
        "--tmodel",
        "bert",
        "--tckpt",
        "4",
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
    )
    assert json.loads((exp_root / "p_bert_stsb" / "config.json").read_text())["num_class"] == 1


@pytest.mark.parametrize(
    "name, hint",
    [
        ("ax", "--task mnli --dataset ax"),
        ("axb", "--task rte_superglue --dataset axb"),
        ("axg", "--task rte_superglue --dataset axg"),
    ],
)
def test_the_diagnostics_names_point_to_their_task(name, hint):
    with pytest.raises(
        UserError,
        match=f"--task {name}: the diagnostic is predicted with the .* model, as a split of that task: {hint}",
    ):
        get_task(name)


def test_a_parquet_file_of_your_own(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from fine_tune.tasks.registry import user_task
    from fine_tune.tasks.user import check_definition

    (tmp_path / "mine").mkdir()
    pq.write_table(
        pa.table({"q": ["a b", "c d"], "y": ["no", "yes"], "n": [7, 8]}), tmp_path / "mine" / "train.parquet"
    )
    spec = check_definition(
        {"files": {"train": "train.parquet"}, "text": "q", "label": "y", "labels": ["no", "yes"], "id": "n"},
        "task.json",
    )
    rows = user_task("mine", spec).load(tmp_path, "train")
    assert [(e.idx, e.text, e.text_pair, e.label) for e in rows] == [(7, "a b", None, 0), (8, "c d", None, 1)]


@pytest.mark.parametrize(
    "task, rows, message",
    [
        # one id written two ways: '007' and '7' compared as strings were two rows
        ("qqp", ["7\t1", "007\t0"], "line 3: id '007' is not an index (decimal digits, no leading zero)"),
        # float() takes other scripts' digits, underscores and spaces; a server reads ASCII decimal numbers
        (
            "stsb",
            ["0\t3.5", "1\t\u0661\u0662"],
            "line 3: prediction '\u0661\u0662' is not a number (stsb predicts a score)",
        ),
        ("stsb", ["0\t1_0"], "line 2: prediction '1_0' is not a number (stsb predicts a score)"),
        ("stsb", ["0\t 3 "], "line 2: prediction ' 3 ' is not a number (stsb predicts a score)"),
    ],
    ids=["id_leading_zero", "score_other_digits", "score_underscore", "score_spaces"],
)
def test_a_submission_file_is_read_as_the_server_reads_it(tmp_path, task, rows, message):
    """Without the split's data (nothing to compare ids against), a file's ids and scores are still checked by
    the server's rules; the toolkit's own numbers (``-0.25``, ``4.0``, ``1e-3``) pass."""
    from fine_tune.submission import submission_ids
    from fine_tune.tasks import TASKS

    path = tmp_path / "file.tsv"
    path.write_text("index\tprediction\n" + "\n".join(rows) + "\n")
    with pytest.raises(UserError) as e:
        submission_ids(path, TASKS[task])
    assert str(e.value) == f"{path}, {message}"
    path.write_text("index\tprediction\n0\t-0.25\n1\t4.0\n10\t1e-3\n")
    assert submission_ids(path, TASKS["stsb"]) == ["0", "1", "10"]


def test_each_tasks_input_columns_name_its_test_files_columns(tmp_path):
    """issue 32: generate_test_prediction.py --predict_file reads a file of one's own rows by the task's
    InputColumns; they are the columns of the task's own test files: a test file written in them (id, text, pair,
    in that order; a QQP test file's exact header) parses to the same row through the task's parser and through
    the --predict_file reader, for every built-in task."""
    from fine_tune.tasks.user import parse_rows_to_predict

    for name, task in TASKS.items():
        c = task.input_columns
        split = next(s for s in task.splits if not task.has_labels(s))
        path = tmp_path / f"{name}{Path(task.files[split]).suffix}"
        row = {c.id: 17, c.text: "some text", **({c.pair: "a pair"} if c.pair else {})}
        if path.suffix == ".jsonl":
            path.write_text(json.dumps(row) + "\n")
        else:
            path.write_text("\t".join(row) + "\n" + "\t".join(map(str, row.values())) + "\n")
        parsed = task.parse(path, False)
        assert parsed == parse_rows_to_predict(path, c)[0], name
        assert (parsed[0].idx, parsed[0].text, parsed[0].text_pair) == (17, "some text", "a pair" if c.pair else None)
