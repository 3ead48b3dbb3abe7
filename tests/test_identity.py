"""Every derived file is keyed by everything that decided it (issue 28): a changed input is a miss or a one-line
refusal naming what changed, never a silent reuse.

- tokenised features (fine_tune/batching.cached_features): the tokenizer, the rows' content (the data file, the
  task definition's label order and columns, --max_examples), max_seq_len;
- logits sets (fine_tune/tasks/logits.IDENTITY): the teacher checkpoint, the split and its file, the rows, the
  tokenizer, max_seq_len;
- predictions, evaluation, offline and online distillation read a model's classes by the names it was trained with
  (Task.check_trained_labels);
- a Hugging Face source's split files follow task.json's ``hf`` (tasks/user.ensure_materialised).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import write_hub_copy

from fine_tune import batching, synthetic
from fine_tune.errors import UserError
from fine_tune.tasks import TASKS, get_task
from fine_tune.tasks.logits import IDENTITY, SINCE_LATER, changed_identity
from fine_tune.tasks.user import SOURCES_FILE

LABELS = ["same", "different"]  # declared order, not sorted
WORDS = ["how", "do", "i", "learn", "python", "java", "cook", "rice", "fast", "well"]


def pair_rows(n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        a = [WORDS[j] for j in rng.integers(0, len(WORDS), 5)]
        same = bool(rng.random() < 0.3)  # unbalanced classes
        b = a[:] if same else [WORDS[j] for j in rng.integers(0, len(WORDS), 4)]
        out.append(
            {
                "qid": 7000 + 13 * i,
                "first": " ".join(a),
                "second": " ".join(b),
                "verdict": "same" if same else "different",
            }
        )
    return out


def write_pairs(root, name: str = "pairs", **definition) -> object:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    for split, n, seed in (("train", 40, 0), ("dev", 20, 1), ("test", 8, 2)):
        data = pair_rows(n, seed)
        if split == "test":
            data = [{k: v for k, v in r.items() if k != "verdict"} for r in data]
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in data))
    spec = {
        "files": {s: f"{s}.jsonl" for s in ("train", "dev", "test")},
        "text": "first",
        "text_pair": "second",
        "label": "verdict",
        "labels": LABELS,
        "id": "qid",
        **definition,
    }
    (folder / "task.json").write_text(json.dumps(spec))
    return folder


def edit_definition(folder, **changes) -> None:
    path = folder / "task.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def task_of(folder):
    return get_task(folder.name, folder.parent)


# -- tokenised features ---------------------------------------------------------------------------------------
def test_the_tokenisation_cache_misses_on_each_input_and_hits_on_none(tmp_path, tiny_bert, monkeypatch):
    from transformers import AutoTokenizer

    from fine_tune.synthetic import tiny_tokenizer

    calls = []
    real = batching.tokenize
    monkeypatch.setattr(batching, "tokenize", lambda *a, **k: calls.append(1) or real(*a, **k))
    folder = write_pairs(tmp_path / "data")
    cache = tmp_path / "cache"
    bert, other = AutoTokenizer.from_pretrained(tiny_bert), tiny_tokenizer("roberta")

    def features(tokenizer=bert, max_seq_len=24, max_examples=None):
        task = task_of(folder)
        return batching.cached_features(
            cache, tokenizer, task.load(folder.parent, "train", max_examples), max_seq_len, regression=task.regression
        )

    base = features()
    assert len(calls) == 1
    again = features()
    assert len(calls) == 1 and np.array_equal(again.labels, base.labels)  # nothing changed: a hit
    assert np.array_equal(again.input_ids, base.input_ids)

    edit_definition(folder, labels=list(reversed(LABELS)))  # the label order: every label flips
    flipped = features()
    assert len(calls) == 2 and np.array_equal(flipped.labels, 1 - base.labels)
    edit_definition(folder, labels=LABELS, text="second", text_pair="first")  # the text columns swapped
    swapped = features()
    assert len(calls) == 3 and not np.array_equal(swapped.input_ids, base.input_ids)
    edit_definition(folder, text="first", text_pair="second")
    assert np.array_equal(features().input_ids, base.input_ids) and len(calls) == 3  # the original again: a hit

    path = folder / "train.jsonl"  # the data file: one row's text edited
    lines = path.read_text().splitlines()
    row = json.loads(lines[3])
    lines[3] = json.dumps(dict(row, first=row["first"] + " python"))
    path.write_text("\n".join(lines) + "\n")
    edited = features()
    assert len(calls) == 4 and edited.lengths()[3] == base.lengths()[3] + 1

    assert len(features(max_seq_len=12)) == 40 and len(calls) == 5  # max_seq_len
    assert len(features(max_examples=7)) == 7 and len(calls) == 6  # --max_examples
    features(tokenizer=other)  # another tokenizer
    assert len(calls) == 7
    assert len(list(cache.glob("features-*.pt"))) == 7


def test_a_task_json_edit_is_not_served_the_old_features(run, tiny_bert, data_root, exp_root):
    """The issue's first case: a run after an edit of the label order trains on the new labels (before, its
    checkpoint was bit-identical to the run before the edit: the cache served the old features)."""
    folder = write_pairs(data_root)
    common = [
        "--model",
        "bert",
        "--task",
        "pairs",
        "--ptrain_ver",
        str(tiny_bert),
        "--max_seq_len",
        "24",
        "--total_step",
        "3",
        "--warmup_step",
        "1",
        "--ckpt_step",
        "3",
        "--batch_size",
        "8",
        "--lr",
        "1e-3",
        "--seed",
        "7",
        "--device_id",
        "-1",
    ]
    run("run_fine_tune.py", "--experiment", "before", *common)
    run("run_fine_tune.py", "--experiment", "same", *common)
    edit_definition(folder, labels=list(reversed(LABELS)))
    run("run_fine_tune.py", "--experiment", "after", *common)

    def weights(name):
        return torch.load(exp_root / f"{name}_bert_pairs" / "model-3.pt", map_location="cpu", weights_only=True)

    before, same, after = weights("before"), weights("same"), weights("after")
    assert all(torch.equal(before[k], same[k]) for k in before)  # the cache itself is exact
    assert not all(torch.equal(before[k], after[k]) for k in before)
    run("run_fine_tune_eval.py", "--experiment", "after", "--model", "bert", "--task", "pairs", "--dataset", "dev")
    with np.load(exp_root / "after_bert_pairs" / "eval-dev-predictions.npz") as z:
        labels = z["labels"].tolist()
    assert labels == [list(reversed(LABELS)).index(r["verdict"]) for r in pair_rows(20, 1)]


# -- logits sets ----------------------------------------------------------------------------------------------
def test_each_identity_field_of_a_logits_set_is_named_when_it_changes():
    old = {
        "teacher_experiment": "t_bert_qqp",
        "checkpoint": 4,
        "split": "train",
        "source_sha256": "a" * 64,
        "checkpoint_sha256": "b" * 64,
        "max_seq_len": 128,
        "examples_sha256": "c" * 64,
        "tokenizer": "d" * 16,
    }
    assert changed_identity(old, dict(old)) == []
    for field in IDENTITY:
        new = dict(old, **{field: "other"})
        assert changed_identity(old, new) == [f"{field} ({old[field]!r} there, 'other' now)"]
    older = {k: v for k, v in old.items() if k not in SINCE_LATER}  # a set written before these fields existed
    assert changed_identity(older, old) == []
    assert changed_identity(older, dict(old, max_seq_len=64)) == ["max_seq_len (128 there, 64 now)"]


def test_a_logits_set_is_not_replaced_by_one_of_other_inputs(run, tiny_bert, data_root, exp_root, tmp_path):
    folder = write_pairs(data_root)
    run(
        "run_fine_tune.py",
        "--experiment",
        "t",
        "--model",
        "bert",
        "--task",
        "pairs",
        "--ptrain_ver",
        str(tiny_bert),
        "--max_seq_len",
        "24",
        "--total_step",
        "4",
        "--warmup_step",
        "1",
        "--ckpt_step",
        "2",
        "--batch_size",
        "8",
        "--device_id",
        "-1",
    )
    gen = ["--experiment", "t", "--model", "bert", "--task", "pairs", "--dataset", "dev"]
    run("run_fine_tune_gen_logits.py", *gen, "--ckpt", "4")
    meta_path = data_root / "logits" / "t_bert_pairs" / "dev" / "meta.json"
    meta = json.loads(meta_path.read_text())
    assert meta["max_seq_len"] == 24 and meta["label_names"] == LABELS and meta["regression"] is False
    assert {k for k in IDENTITY} <= set(meta)
    run("run_fine_tune_gen_logits.py", *gen, "--ckpt", "4")  # the same inputs: the same set, written again

    def refused(*extra, field):
        proc = run("run_fine_tune_gen_logits.py", *gen, *extra, check=False)
        assert proc.returncode == 2 and f"differ in {field} (" in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
        assert json.loads(meta_path.read_text()) == meta  # untouched

    refused("--ckpt", "2", field="checkpoint")
    edit_definition(folder, text="second", text_pair="first")  # the same file, read as other rows
    refused("--ckpt", "4", field="examples_sha256")
    edit_definition(folder, text="first", text_pair="second")
    dev = folder / "dev.jsonl"
    original = dev.read_text()
    dev.write_text(original + json.dumps(dict(pair_rows(1, 9)[0], qid=99991)) + "\n")
    refused("--ckpt", "4", field="source_sha256")
    dev.write_text(original)
    run("run_fine_tune_gen_logits.py", *gen, "--ckpt", "2", "--overwrite")  # --overwrite replaces
    assert json.loads(meta_path.read_text())["checkpoint"] == 2

    # --teacher_hf takes --max_seq_len: the issue's second case (another length replaced the set silently)
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    hf = tmp_path / "hf_teacher"
    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_bert, num_labels=2, id2label=dict(enumerate(LABELS)), label2id={n: i for i, n in enumerate(LABELS)}
    )
    model.save_pretrained(hf)
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(hf)
    foreign = ["--experiment", "hf", "--model", "bert", "--task", "pairs", "--dataset", "dev", "--teacher_hf", str(hf)]
    run("run_fine_tune_gen_logits.py", *foreign, "--max_seq_len", "24")
    hf_meta_path = data_root / "logits" / "hf_bert_pairs" / "dev" / "meta.json"
    hf_meta = json.loads(hf_meta_path.read_text())
    proc = run("run_fine_tune_gen_logits.py", *foreign, "--max_seq_len", "16", check=False)
    assert proc.returncode == 2 and "differ in max_seq_len (24 there, 16 now)" in proc.stderr, proc.stderr
    assert f"already holds logits of the Hugging Face model {hf} on dev" in proc.stderr  # not "of None checkpoint"
    assert json.loads(hf_meta_path.read_text()) == hf_meta


# -- the labels a model was trained with ------------------------------------------------------------------------
def test_renamed_or_reordered_labels_are_refused_where_a_model_is_read(run, tiny_bert, data_root, exp_root):
    """The issue's third case: prediction read the current task.json's label names, so after a rename every
    'yes' was written as 'no'. Evaluation, prediction, logits generation, offline distillation from a logits set
    and online distillation from the teacher all refuse, naming both label lists, and write nothing."""
    folder = write_pairs(data_root)
    common = ["--model", "bert", "--task", "pairs"]
    run(
        "run_fine_tune.py",
        "--experiment",
        "t",
        *common,
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
        "8",
        "--device_id",
        "-1",
    )
    run("run_fine_tune_gen_logits.py", "--experiment", "t", *common, "--dataset", "train")
    run("generate_test_prediction.py", "--experiment", "t", *common, "--ckpt", "2")
    exp = exp_root / "t_bert_pairs"
    prediction = (exp / "pairs.tsv").read_text()
    assert {line.split("\t")[1] for line in prediction.splitlines()[1:]} <= set(LABELS)

    student = [
        "--d_model",
        "16",
        "--d_ff",
        "32",
        "--num_attention_heads",
        "2",
        "--num_hidden_layers",
        "1",
        "--max_seq_len",
        "24",
        "--total_step",
        "1",
        "--warmup_step",
        "0",
        "--batch_size",
        "8",
        "--device_id",
        "-1",
    ]
    commands = [
        ("generate_test_prediction.py", "--experiment", "t", *common, "--ckpt", "2"),
        ("run_fine_tune_eval.py", "--experiment", "t", *common, "--dataset", "dev"),
        ("run_fine_tune_gen_logits.py", "--experiment", "t", *common, "--dataset", "dev"),
        ("run_fine_tune_distill.py", "--experiment", "s", *common, "--dataset", "t_bert_pairs", *student),
        (
            "run_pkd_distill.py",
            "--experiment",
            "p",
            *common,
            "--teacher_exp",
            "t",
            "--tmodel",
            "bert",
            "--tckpt",
            "2",
            *student,
        ),
    ]
    for labels, shown in ((["yes", "no"], "[yes, no]"), (list(reversed(LABELS)), "[different, same]")):
        edit_definition(folder, labels=labels)
        for command in commands:
            proc = run(*command, check=False)
            assert proc.returncode == 2, (command, proc.stdout, proc.stderr)
            assert "[same, different]" in proc.stderr and f"now says {shown}" in proc.stderr, proc.stderr
            assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert (exp / "pairs.tsv").read_text() == prediction
    assert not (exp / "eval-dev.json").exists() and not (data_root / "logits" / "t_bert_pairs" / "dev").exists()
    assert not (exp_root / "s_bert_pairs").exists() and not (exp_root / "p_bert_pairs").exists()
    edit_definition(folder, labels=LABELS)  # restored: read again
    run("generate_test_prediction.py", "--experiment", "t", *common, "--ckpt", "2")
    assert (exp / "pairs.tsv").read_text() == prediction


# -- a Hugging Face source's split files ----------------------------------------------------------------------
def test_a_changed_hf_source_fetches_the_split_again(tmp_path, capsys):
    """The issue's fourth case: hf.splits changed, and the file written on first use kept being read."""
    pytest.importorskip("datasets")
    source = write_hub_copy(
        tmp_path / "hub_copy",
        {"train": pair_rows(30, 0), "validation": pair_rows(12, 1)},
        ["first", "second", "verdict"],
    )
    folder = tmp_path / "data" / "hubbed"
    folder.mkdir(parents=True)
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
    texts = {
        split: [r["first"] for r in pair_rows(n, seed)] for split, n, seed in (("train", 30, 0), ("validation", 12, 1))
    }
    dev = task_of(folder).load(folder.parent, "dev")
    assert [e.text for e in dev] == texts["validation"]
    records = json.loads((folder / SOURCES_FILE).read_text())
    assert records["dev.jsonl"]["source"]["split"] == "validation"
    assert [e.text for e in task_of(folder).load(folder.parent, "dev")] == texts["validation"]  # fetched once

    edit_definition(folder, hf={"path": str(source), "splits": {"train": "train", "dev": "train"}})
    assert [e.text for e in task_of(folder).load(folder.parent, "dev")] == texts["train"]  # fetched again
    assert "hf source changed" in capsys.readouterr().err
    edited = (folder / "dev.jsonl").read_text().replace('"verdict": "same"', '"verdict": "different"', 1)
    (folder / "dev.jsonl").write_text(edited)  # edited by hand: not the toolkit's to replace
    edit_definition(folder, hf={"path": str(source), "splits": {"train": "train", "dev": "validation"}})
    with pytest.raises(UserError, match=r"dev\.jsonl was fetched from .* edited since"):
        task_of(folder).load(folder.parent, "dev")
    assert (folder / "dev.jsonl").read_text() == edited
    mine = "".join(json.dumps(r) + "\n" for r in pair_rows(5, 3))  # a file no record names: the user's own
    (folder / "test.jsonl").write_text(mine)
    edit_definition(
        folder, hf={"path": str(source), "splits": {"train": "train", "dev": "validation", "test": "validation"}}
    )
    assert len(task_of(folder).load(folder.parent, "test")) == 5 and (folder / "test.jsonl").read_text() == mine


# -- evaluation tables and submission files ----------------------------------------------------------------------
def test_an_evaluation_of_other_rows_never_chooses_the_best_checkpoint(run, tiny_bert, data_root, exp_root):
    """eval-{split}.json records the rows it was computed on (their sha256 and --max_examples): --ckpt best and the
    results table refuse it once the split's file or the task's definition changed, and take it again when the
    rows are back; an evaluation of the first rows is checked against the first rows."""
    folder = write_pairs(data_root)
    common = ["--experiment", "t", "--model", "bert", "--task", "pairs"]
    run(
        "run_fine_tune.py",
        *common,
        "--ptrain_ver",
        str(tiny_bert),
        "--max_seq_len",
        "24",
        "--total_step",
        "4",
        "--warmup_step",
        "1",
        "--ckpt_step",
        "2",
        "--batch_size",
        "8",
        "--device_id",
        "-1",
    )
    run("run_fine_tune_eval.py", *common, "--dataset", "dev", "--max_examples", "12")
    table = json.loads((exp_root / "t_bert_pairs" / "eval-dev.json").read_text())
    assert table["num_rows"] == 12 and table["max_examples"] == 12 and len(table["examples_sha256"]) == 64
    predict = ["generate_test_prediction.py", *common, "--ckpt", "best"]
    results = ["results_table.py", "--task", "pairs", "--data_root", str(data_root), "--exp_root", str(exp_root)]
    run(*predict)
    run(*results)
    dev = folder / "dev.jsonl"
    original = dev.read_text()
    lines = original.splitlines()
    dev.write_text("\n".join(lines[20:] + lines[:20]) + "\n")  # rows appended: the first 12 unchanged
    lines[20:] = []
    run(*predict)
    dev.write_text("\n".join([lines[1], lines[0], *lines[2:]]) + "\n")  # two of the first 12 rows swapped
    for command in (predict, results):
        proc = run(*command, check=False)
        assert proc.returncode == 2 and "eval-dev.json was computed on other rows of dev" in proc.stderr, proc.stderr
        assert len(proc.stderr.splitlines()) == 1
    dev.write_text(original)
    edit_definition(folder, text="second", text_pair="first")  # the same file read as other rows
    assert run(*predict, check=False).returncode == 2
    edit_definition(folder, text="first", text_pair="second")
    run(*predict)


def test_a_submission_file_is_zipped_only_as_its_record_describes(run, tiny_bert, data_root, exp_root, tmp_path):
    """generate_test_prediction.py records beside each file what made it; make_submission.py refuses a file
    predicted from the first rows only (--max_examples), one that is not the file its record describes, and one
    whose split holds other rows now. Files written without a record are zipped as they are."""
    from fine_tune.submission import REQUIRED, writers

    for task, names in {
        (t, tuple(n for n, (tt, _) in writers("glue").items() if tt == t)) for t, _ in writers("glue").values()
    }:
        if task == "qqp":
            continue
        placed = exp_root / f"hand_bert_{task}"
        placed.mkdir(parents=True)
        (placed / "config.json").write_text(json.dumps({"task": task}))
        for name in names:
            synthetic.write_submission_file(placed / name, TASKS[task], [0], 1)
    common = ["--experiment", "q", "--model", "bert", "--task", "qqp"]
    run(
        "run_fine_tune.py",
        *common,
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
        "8",
        "--device_id",
        "-1",
    )
    zip_ = [
        "make_submission.py",
        "--benchmark",
        "glue",
        "--exp_root",
        str(exp_root),
        "--data_root",
        str(data_root),
        "--out",
        str(tmp_path / "glue.zip"),
    ]
    qqp = exp_root / "q_bert_qqp" / "QQP.tsv"

    def refused(message):
        proc = run(*zip_, check=False)
        assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.splitlines()) == 1, proc.stderr
        assert not (tmp_path / "glue.zip").exists()

    run("generate_test_prediction.py", *common, "--max_examples", "5")  # never under the official name (issue 29)
    partial = exp_root / "q_bert_qqp" / "QQP.partial-5.tsv"
    record = json.loads((exp_root / "q_bert_qqp" / "QQP.partial-5.tsv.json").read_text())
    assert record["num_rows"] == 5 and record["complete"] is False and record["checkpoint"] == "model-2.pt"
    assert not qqp.exists()
    refused("QQP.tsv (generate_test_prediction.py --task qqp --dataset test")
    partial.rename(qqp)  # renamed by hand, with its record: the record still says what it is
    (exp_root / "q_bert_qqp" / "QQP.partial-5.tsv.json").rename(exp_root / "q_bert_qqp" / "QQP.tsv.json")
    refused("QQP.tsv predicts only the first 5 rows of test (--max_examples)")
    proc = run("generate_test_prediction.py", *common, check=False)  # the renamed file is not one it wrote there
    assert proc.returncode == 2 and proc.stderr == (
        f"error: {qqp} exists and was not written by "
        f"generate_test_prediction.py (or was changed since); pass "
        f"--overwrite to replace it\n"
    )
    run("generate_test_prediction.py", *common, "--overwrite")
    assert json.loads((exp_root / "q_bert_qqp" / "QQP.tsv.json").read_text())["complete"] is True
    whole = qqp.read_text()
    qqp.write_text(whole.replace("\t0\n", "\t1\n", 1) if "\t0\n" in whole else whole.replace("\t1\n", "\t0\n", 1))
    refused("QQP.tsv is not the file its record QQP.tsv.json describes")
    qqp.write_text(whole)
    run(*zip_)
    assert sorted(__import__("zipfile").ZipFile(tmp_path / "glue.zip").namelist()) == sorted(REQUIRED["glue"])
    (tmp_path / "glue.zip").unlink()
    test = data_root / "QQP" / "test.tsv"
    test.write_text(test.read_text() + "999999\tanother question?\tand another\n")
    refused("QQP.tsv was predicted on other rows of test")
