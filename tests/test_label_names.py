"""Class names (issue 30): the built-in tasks name their classes as Hugging Face's ``glue`` / ``super_glue`` datasets
do (QQP ``not_duplicate``/``duplicate``, BoolQ ``False``/``True``, where the toolkit said ``0``/``1`` and
``false``/``true``), in exported models and prediction files; the data files are read and the official submission
files written exactly as before. Experiments made with the old names (simulated: their folders' ``id2label``, a
logits set's ``meta.json`` and a submission record written back with the old names) export, evaluate, distil,
resume and submit, their classes recognised as the same classes in the same order.

Everything is checked against values computed here independently: Hugging Face's names written out from its
dataset features, the submission lines from the checkpoint's own logits in plain Hugging Face PyTorch, the server
formats as literal text."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import one_thread
from conftest import run_in_world as run

from fine_tune import synthetic

SEQ = 32
# the ClassLabel names of Hugging Face's datasets (glue/<config>, super_glue/<config>: their dataset features), in
# their order, for each built-in task (its diagnostics are splits of mnli and rte_superglue: glue/ax,
# super_glue/axb and axg have these same names); STS-B's label is a float (no names: its one output is "score")
HUGGING_FACE = {
    "cola": ["unacceptable", "acceptable"],
    "sst2": ["negative", "positive"],
    "mrpc": ["not_equivalent", "equivalent"],
    "qqp": ["not_duplicate", "duplicate"],
    "mnli": ["entailment", "neutral", "contradiction"],
    "qnli": ["entailment", "not_entailment"],
    "rte": ["entailment", "not_entailment"],
    "wnli": ["not_entailment", "entailment"],
    "boolq": ["False", "True"],
    "cb": ["entailment", "contradiction", "neutral"],
    "rte_superglue": ["entailment", "not_entailment"],
}
# the names this toolkit gave QQP's and BoolQ's classes before issue 30 (what an older experiment's folders hold)
OLD = {"qqp": ["0", "1"], "boolq": ["false", "true"]}
DEV = {"qqp": "dev", "boolq": "val"}


def common(task: str, name: str = "old") -> list[str]:
    return ["--experiment", name, "--model", "bert", "--task", task]


def teacher_run(task: str, tiny: Path, name: str = "old") -> list[str]:
    return [
        *common(task, name),
        "--ptrain_ver",
        str(tiny),
        "--max_seq_len",
        str(SEQ),
        "--total_step",
        "4",
        "--warmup_step",
        "1",
        "--ckpt_step",
        "2",
        "--log_step",
        "2",
        "--batch_size",
        "8",
        "--lr",
        "1e-3",
        "--seed",
        "3",
    ]


def set_labels(config_file: Path, names: list[str]) -> None:
    """Write ``names`` as a model folder's id2label / label2id (an older experiment's, or an export's)."""
    config = json.loads(config_file.read_text())
    config.update(id2label={str(i): n for i, n in enumerate(names)}, label2id={n: i for i, n in enumerate(names)})
    config_file.write_text(json.dumps(config, indent=2))


def predict_both_classes(folder: Path, step: int, examples: list[dict]) -> None:
    """Shift the checkpoint's class-1 bias so that it predicts each class on about half of ``examples`` (a tiny
    model after 4 steps predicts one class everywhere, and each class's spelling is to be checked), the boundary
    midway between two rows' margins (no row near a tie)."""
    margin = np.sort(np.diff(checkpoint_logits(folder, step, examples), axis=1)[:, 0])
    mid = len(margin) // 2
    state = torch.load(folder / f"model-{step}.pt", weights_only=True)
    state["classifier.bias"][1] -= float(margin[mid - 1] + margin[mid]) / 2
    torch.save(state, folder / f"model-{step}.pt")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Synthetic QQP and BoolQ; per task a tiny BERT teacher fine-tuned 4 steps (``old_bert_<task>``, its last
    checkpoint predicting both classes) whose model folder is then given the names the toolkit wrote before issue 30
    (an experiment made before the change)."""
    base = tmp_path_factory.mktemp("label_names")
    w = {"base": base, "data": base / "data", "exp": base / "exp"}
    synthetic.write_qqp(w["data"], n_train=48, n_dev=24, n_test=12)
    synthetic.write_boolq(w["data"], n_train=48, n_val=24, n_test=12)
    w["tiny"] = synthetic.write_tiny_model(base / "tiny-bert", "bert", num_layers=2)
    with one_thread():
        for task in ("qqp", "boolq"):
            run(w, "run_fine_tune.py", *teacher_run(task, w["tiny"]))
            folder = w["exp"] / f"old_bert_{task}"
            saved = json.loads((folder / "model" / "config.json").read_text())
            assert list(saved["id2label"].values()) == HUGGING_FACE[task]  # what this code names them
            predict_both_classes(folder, 4, rows(w, task, DEV[task]) + rows(w, task, "test"))
            set_labels(folder / "model" / "config.json", OLD[task])
        yield w


def rows(w, task: str, split: str) -> list[dict]:
    """A split read here from its file (not by the toolkit's parser): id, text, pair and the class index
    (QQP: is_duplicate 0/1; BoolQ: the JSON label, True -> 1)."""
    if task == "qqp":
        lines = (w["data"] / "QQP" / f"{split}.tsv").read_text().splitlines()
        header, cells = lines[0].split("\t"), [line.split("\t") for line in lines[1:]]
        col = {c: header.index(c) for c in header}
        return [
            {
                "idx": int(c[col["id"]]),
                "text": c[col["question1"]],
                "text_pair": c[col["question2"]],
                "label": int(c[col["is_duplicate"]]) if "is_duplicate" in col else None,
            }
            for c in cells
        ]
    out = []
    for line in (w["data"] / "BoolQ" / f"{split}.jsonl").read_text().splitlines():
        r = json.loads(line)
        out.append(
            {
                "idx": r["idx"],
                "text": r["passage"],
                "text_pair": r["question"],
                "label": None if "label" not in r else int(r["label"] is True),
            }
        )
    return out


@torch.inference_mode()
def checkpoint_logits(folder: Path, step: int, examples: list[dict]) -> np.ndarray:
    """The checkpoint's logits in plain Hugging Face PyTorch, one row at a time (no padding)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(folder / "model"))
    model.load_state_dict(torch.load(folder / f"model-{step}.pt", weights_only=True))
    tokenizer = AutoTokenizer.from_pretrained(folder / "model")
    model.eval()
    return np.concatenate(
        [
            model(
                **tokenizer(r["text"], r["text_pair"], truncation=True, max_length=SEQ, return_tensors="pt")
            ).logits.numpy()
            for r in examples
        ]
    )


# -- the names ----------------------------------------------------------------------------------------------------
def test_every_built_in_task_names_its_classes_as_hugging_face(world):
    from fine_tune.tasks import TASKS
    from fine_tune.tasks.task import Task

    assert {name: list(t.label_names) for name, t in TASKS.items() if not t.regression} == HUGGING_FACE
    assert TASKS["stsb"].label_names == ("score",) and TASKS["stsb"].regression
    # the files are read as they write the classes: QQP is_duplicate 0/1, BoolQ true/false (booleans or strings)
    for task, split in (("qqp", "train"), ("boolq", "train")):
        parsed = TASKS[task].load(world["data"], split)
        assert [(e.idx, e.text, e.text_pair, e.label) for e in parsed] == [
            (r["idx"], r["text"], r["text_pair"], r["label"]) for r in rows(world, task, split)
        ]
        assert {e.label for e in parsed} == {0, 1}
    assert TASKS["qqp"].labels_in_files == ("0", "1") and TASKS["boolq"].labels_in_files == ("false", "true")
    # a task has names: no silent default ("0", "1" named QQP's classes by accident)
    with pytest.raises(ValueError, match="label_names"):
        Task(
            name="x",
            folder="X",
            files={"train": "t.tsv"},
            labelled=frozenset({"train"}),
            parse=None,
            metrics=("accuracy",),
            submission_file="X.tsv",
        )


# -- exported models --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("task", ["qqp", "boolq"])
def test_an_export_of_an_experiment_made_with_the_old_names_carries_hugging_face_names(world, task):
    from transformers import AutoModelForSequenceClassification

    w, folder = world, world["exp"] / f"old_bert_{task}"
    out = w["base"] / f"export-{task}"
    run(w, "export_model.py", *common(task), "--ckpt", "4", "--out", str(out))
    names = HUGGING_FACE[task]
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": names[0], "1": names[1]}
    assert config["label2id"] == {names[0]: 0, names[1]: 1}
    assert json.loads((out / "export.json").read_text())["label_names"] == names
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.id2label == {0: names[0], 1: names[1]}
    # the export's outputs are the checkpoint's (in the same order): its id2label names the classes of the files
    dev = rows(w, task, DEV[task])[:6]
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out)
    with torch.inference_mode():
        exported = np.concatenate(
            [
                model(**tokenizer(r["text"], r["text_pair"], truncation=True, return_tensors="pt")).logits.numpy()
                for r in dev
            ]
        )
    np.testing.assert_allclose(exported, checkpoint_logits(folder, 4, dev), atol=1e-5)
    # the experiment's own folder is left as it was (the export relabels its copy)
    assert list(json.loads((folder / "model" / "config.json").read_text())["id2label"].values()) == OLD[task]


# -- prediction files and submission files ----------------------------------------------------------------------
@pytest.mark.parametrize("task", ["qqp", "boolq"])
def test_prediction_files_name_the_classes_and_submission_files_keep_the_servers_format(world, task):
    from fine_tune.submission import check_prediction_file, record_path, submission_ids
    from fine_tune.tasks import TASKS

    w, folder, names, split = world, world["exp"] / f"old_bert_{task}", HUGGING_FACE[task], DEV[task]
    # --save_predictions: gold label and prediction by name, prob_<name> columns in the model's output order
    run(w, "run_fine_tune_eval.py", *common(task), "--dataset", split, "--ckpt", "4", "--save_predictions")
    dev = rows(w, task, split)
    logits = checkpoint_logits(folder, 4, dev)
    lines = (folder / f"predictions-{split}-4.tsv").read_text().splitlines()
    assert lines[0] == f"idx\tlabel\tprediction\tprob_{names[0]}\tprob_{names[1]}"
    body = [line.split("\t") for line in lines[1:]]
    assert [(int(c[0]), c[1], c[2]) for c in body] == [
        (r["idx"], names[r["label"]], names[int(k)]) for r, k in zip(dev, logits.argmax(1))
    ]
    z = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(
        np.array([[float(c[3]), float(c[4])] for c in body]), z / z.sum(1, keepdims=True), atol=2e-5
    )

    # the official submission file: the server's format, as before (QQP class indices, BoolQ "true"/"false")
    run(w, "generate_test_prediction.py", *common(task), "--dataset", "test", "--ckpt", "4")
    test = rows(w, task, "test")
    predicted = checkpoint_logits(folder, 4, test).argmax(1)
    out = folder / TASKS[task].submission_file
    if task == "qqp":
        expected = "index\tprediction\n" + "".join(f"{r['idx']}\t{int(k)}\n" for r, k in zip(test, predicted))
    else:
        expected = "".join(
            f'{{"idx": {r["idx"]:d}, "label": "{"true" if k else "false"}"}}\n' for r, k in zip(test, predicted)
        )
    assert out.read_text() == expected
    assert len(set(predicted.tolist())) == 2, "both classes predicted (the check covers each spelling)"
    record = json.loads(record_path(out).read_text())
    assert record["label_names"] == names
    # make_submission.py's checks take it: its content by the server's rules, its record, every row of the split
    assert submission_ids(out, TASKS[task]) == [str(r["idx"]) for r in test]
    check_prediction_file(out, TASKS[task], "test", w["data"])


def test_a_submission_file_made_with_the_old_names_is_still_taken_and_rewritten_without_overwrite(world):
    """A QQP.tsv and its record as the old code wrote them (the record's label_names "0", "1"): make_submission.py
    takes it; generate_test_prediction.py replaces it (its own file) with the same file."""
    from fine_tune.outputs import write_outputs
    from fine_tune.submission import check_prediction_file, record_path
    from fine_tune.tasks import TASKS

    w, folder = world, world["exp"] / "old_bert_qqp"
    run(w, "generate_test_prediction.py", *common("qqp"), "--dataset", "test", "--ckpt", "4", "--overwrite")
    out = folder / "QQP.tsv"
    text = out.read_text()
    old_record = dict(json.loads(record_path(out).read_text()), label_names=OLD["qqp"])
    write_outputs({out: text, record_path(out): json.dumps(old_record, indent=2) + "\n"}, "generate_test_prediction.py")
    check_prediction_file(out, TASKS["qqp"], "test", w["data"])
    run(w, "generate_test_prediction.py", *common("qqp"), "--dataset", "test", "--ckpt", "4")
    assert out.read_text() == text
    assert json.loads(record_path(out).read_text())["label_names"] == HUGGING_FACE["qqp"]


# -- teachers with the old names --------------------------------------------------------------------------------
def test_a_teacher_experiment_with_the_old_names_distils_as_with_the_new(world):
    """PKD from the QQP teacher whose model folder says "0", "1", then from the same teacher relabelled with
    Hugging Face's names: the same student, bit for bit, and the same record; the student is named by the task."""
    w = world
    teacher = w["exp"] / "old_bert_qqp" / "model" / "config.json"
    kd = [
        "--model",
        "bert",
        "--task",
        "qqp",
        "--teacher_exp",
        "old",
        "--tmodel",
        "bert",
        "--tckpt",
        "4",
        "--num_hidden_layers",
        "1",
        "--d_model",
        "32",
        "--d_ff",
        "64",
        "--num_attention_heads",
        "2",
        "--total_step",
        "2",
        "--warmup_step",
        "0",
        "--ckpt_step",
        "2",
        "--batch_size",
        "8",
        "--lr",
        "1e-3",
        "--map_examples",
        "0",
        "--softmax_temp",
        "2",
        "--soft_weight",
        "0.7",
        "--hard_weight",
        "0.3",
    ]
    old = json.loads(teacher.read_text())
    try:
        run(w, "run_pkd_distill.py", "--experiment", "pkd_old", *kd)
        set_labels(teacher, HUGGING_FACE["qqp"])
        run(w, "run_pkd_distill.py", "--experiment", "pkd_new", *kd)
    finally:
        teacher.write_text(json.dumps(old, indent=2))
    a, b = (w["exp"] / f"pkd_{x}_bert_qqp" for x in ("old", "new"))
    sa, sb = (torch.load(f / "model-2.pt", weights_only=True) for f in (a, b))
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    ca, cb = (json.loads((f / "config.json").read_text()) for f in (a, b))
    assert {k: v for k, v in ca.items() if k not in ("experiment", "provenance")} == {
        k: v for k, v in cb.items() if k not in ("experiment", "provenance")
    }
    assert ca["teacher_label_order"] is None
    for f in (a, b):
        assert list(json.loads((f / "model" / "config.json").read_text())["id2label"].values()) == HUGGING_FACE["qqp"]


@pytest.mark.parametrize(
    "task, id2label, order",
    [
        ("qqp", ["0", "1"], None),
        ("qqp", ["1", "0"], [1, 0]),
        ("boolq", ["false", "true"], None),
        ("boolq", ["true", "false"], [1, 0]),
        ("boolq", ["True", "False"], [1, 0]),
        ("qqp", ["duplicate", "not_duplicate"], [1, 0]),
    ],
)
def test_a_hugging_face_teacher_named_the_old_way_is_matched_as_the_same_classes(task, id2label, order):
    """The labels an export made before the change carries (the files' spelling), in either output order: matched,
    in the order the old code matched them (its names were those very labels)."""
    from fine_tune.tasks import TASKS
    from fine_tune.teacher import match_labels

    got = match_labels(dict(enumerate(id2label)), TASKS[task], None, "teacher")
    assert got == order
    keys = [x.lower() for x in id2label]
    if sorted(keys) == OLD[task]:  # what the old code recorded: the teacher's output index of each of its names
        old_order = [keys.index(x) for x in OLD[task]]
        assert got == (None if old_order == [0, 1] else old_order)


@pytest.mark.parametrize("swapped", [False, True])
def test_an_old_export_as_teacher_hf_gives_the_experiments_own_logits(world, swapped):
    """BoolQ's export relabelled as the old code wrote it ("false", "true"), or with its outputs swapped and named
    so ("true", "false"): run_fine_tune_gen_logits.py --teacher_hf puts its outputs in the task's order, equal to
    the experiment's own checkpoint's logits."""
    from transformers import AutoModelForSequenceClassification

    w = world
    src = w["base"] / f"export-old-{swapped}"
    if src.exists():
        shutil.rmtree(src)
    run(w, "export_model.py", *common("boolq"), "--ckpt", "4", "--out", str(src))
    names = ["true", "false"] if swapped else ["false", "true"]
    if swapped:
        model = AutoModelForSequenceClassification.from_pretrained(src)
        with torch.no_grad():
            model.classifier.weight.copy_(model.classifier.weight.flip(0))
            model.classifier.bias.copy_(model.classifier.bias.flip(0))
        model.save_pretrained(src)
    set_labels(src / "config.json", names)
    name = f"hf{int(swapped)}"
    run(
        w,
        "run_fine_tune_gen_logits.py",
        "--experiment",
        name,
        "--model",
        "bert",
        "--task",
        "boolq",
        "--dataset",
        "val",
        "--teacher_hf",
        str(src),
        "--max_seq_len",
        str(SEQ),
    )
    val = rows(w, "boolq", "val")
    got = [
        json.loads(line)["logits"]
        for line in (w["data"] / "logits" / f"{name}_bert_boolq" / "val" / "logits.jsonl").read_text().splitlines()
    ]
    np.testing.assert_allclose(np.array(got), checkpoint_logits(w["exp"] / "old_bert_boolq", 4, val), atol=2e-5)


# -- logits data sets and resume ---------------------------------------------------------------------------------
def test_a_logits_set_recorded_with_the_old_names_distils_and_is_not_refused(world):
    """A logits data set whose meta.json says label_names "0", "1" (written before): logits KD reads it, and the
    same generation again is the same set (not refused as another, no --overwrite), its rows byte for byte."""
    w = world
    gen = [*common("qqp"), "--dataset", "train", "--ckpt", "4"]
    run(w, "run_fine_tune_gen_logits.py", *gen)
    folder = w["data"] / "logits" / "old_bert_qqp" / "train"
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["label_names"] == HUGGING_FACE["qqp"]
    (folder / "meta.json").write_text(json.dumps(dict(meta, label_names=OLD["qqp"]), indent=2))
    rows_before = (folder / "logits.jsonl").read_bytes()
    run(
        w,
        "run_fine_tune_distill.py",
        "--experiment",
        "kd_old",
        "--model",
        "bert",
        "--task",
        "qqp",
        "--dataset",
        "old_bert_qqp",
        "--d_model",
        "16",
        "--d_ff",
        "32",
        "--num_attention_heads",
        "2",
        "--num_hidden_layers",
        "1",
        "--total_step",
        "2",
        "--warmup_step",
        "0",
        "--ckpt_step",
        "2",
        "--batch_size",
        "8",
        "--max_seq_len",
        str(SEQ),
    )
    student = w["exp"] / "kd_old_bert_qqp"
    assert (student / "model-2.pt").is_file()
    assert list(json.loads((student / "model" / "config.json").read_text())["id2label"].values()) == HUGGING_FACE["qqp"]
    run(w, "run_fine_tune_gen_logits.py", *gen)
    assert (folder / "logits.jsonl").read_bytes() == rows_before
    assert json.loads((folder / "meta.json").read_text())["label_names"] == HUGGING_FACE["qqp"]


def test_a_run_started_with_the_old_names_resumes(world):
    """A fine-tuning run killed after its checkpoint 2 whose model folder holds the old names (started before the
    change) resumes from model-2.pt and ends where the uninterrupted run ends, its folder now named by the task."""
    from test_never_lose_a_run import killed_after

    w = world
    args = teacher_run("qqp", w["tiny"], "resumed")
    killed_after("after:resume-2.pt", "run_fine_tune.py", args, w["data"], w["exp"])
    folder = w["exp"] / "resumed_bert_qqp"
    set_labels(folder / "model" / "config.json", OLD["qqp"])
    out = run(w, "run_fine_tune.py", *args)
    assert "resuming from model-2.pt" in out.stderr
    run(w, "run_fine_tune.py", *teacher_run("qqp", w["tiny"], "uninterrupted"))  # the same flags
    ref = torch.load(w["exp"] / "uninterrupted_bert_qqp" / "model-4.pt", weights_only=True)
    got = torch.load(folder / "model-4.pt", weights_only=True)
    assert ref.keys() == got.keys() and all(torch.allclose(ref[k], got[k], atol=1e-5) for k in ref)
    assert list(json.loads((folder / "model" / "config.json").read_text())["id2label"].values()) == HUGGING_FACE["qqp"]
