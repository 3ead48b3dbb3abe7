"""Every entry script end-to-end, as a user runs it (subprocesses), on tiny BERT and ALBERT models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from fine_tune.io_utils import sha256_file
from fine_tune.tasks import get_task

TRAIN = ["--accum_step", "2", "--batch_size", "16", "--lr", "1e-3", "--max_seq_len", "48", "--seed", "3"]
STUDENT = ["--d_model", "32", "--d_ff", "64", "--num_attention_heads", "2", "--type_vocab_size", "2"]


def scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def load_model(exp_dir, step):
    model = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(exp_dir / "model"))
    model.load_state_dict(torch.load(exp_dir / f"model-{step}.pt", weights_only=True), strict=True)
    return model.eval()


def logits_of(exp_dir, step, examples, max_len):
    model = load_model(exp_dir, step)
    tok = AutoTokenizer.from_pretrained(exp_dir / "model")
    out = []
    with torch.no_grad():
        for ex in examples:
            enc = tok(ex.text, ex.text_pair, truncation=True, max_length=max_len, return_tensors="pt")
            out.append(model(**enc).logits[0].numpy())
    return np.stack(out)


def test_boolq_teacher_pipeline(run, tiny_bert, data_root, exp_root):
    r = run("run_fine_tune.py", "--experiment", "t", "--model", "bert", "--ptrain_ver", str(tiny_bert), "--task", "boolq",
            "--dataset", "train", "--total_step", "12", "--warmup_step", "2", "--ckpt_step", "5", "--log_step", "4", *TRAIN,
            subprocess=True)
    exp = exp_root / "t_bert_boolq"
    config = json.loads((exp / "config.json").read_text())
    assert config["total_step"] == 12 and config["accum_step"] == 2 and config["ptrain_ver"] == str(tiny_bert)
    prov = config["provenance"]
    assert "run_fine_tune.py" in prov["command"] and "git_commit" in prov and prov["packages"]["torch"]
    assert prov["packages"]["transformers"] and prov["device"].startswith("cpu")
    train_file = data_root / "BoolQ" / "train.jsonl"
    assert prov["data_files"] == {str(train_file): sha256_file(train_file)}
    AutoTokenizer.from_pretrained(exp / "model")
    assert sorted(p.name for p in exp.glob("model-*.pt")) == ["model-10.pt", "model-12.pt", "model-5.pt"]
    load_model(exp, 5)
    tags = scalars(exp_root / "log" / "t_bert_boolq")
    for tag in ("loss", "lr", "grad_norm", "examples_per_s"):
        assert [s for s, _ in tags[f"boolq/train/bert/{tag}"]] == [4, 8, 12], tag
    assert list(data_root.joinpath("cache").glob("features-*.pt"))

    # evaluation sweep: every checkpoint, in order, accuracies recomputed independently
    r = run("run_fine_tune_eval.py", "--experiment", "t", "--model", "bert", "--task", "boolq", "--dataset", "val",
            "--batch_size", "7", "--save_predictions")
    lines = [ln.split("\t")[0] for ln in r.stdout.splitlines() if ln[:1].isdigit()]
    assert lines == ["5", "10", "12"]
    table = json.loads((exp / "eval-val.json").read_text())
    val = get_task("boolq").load(data_root, "val")
    labels = np.array([e.label for e in val])
    for row in table["rows"]:
        ours = (logits_of(exp, row["ckpt"], val, 48).argmax(1) == labels).mean()
        assert row["accuracy"] == pytest.approx(ours, abs=1e-9)
    best = max(table["rows"], key=lambda r: (r["accuracy"], r["ckpt"]))
    assert table["best"]["accuracy"] == {"ckpt": best["ckpt"], "value": best["accuracy"]}
    assert [s for s, _ in scalars(exp_root / "log" / "t_bert_boolq")["boolq/val/accuracy"]] == [5, 10, 12]
    pred = (exp / "predictions-val-12.tsv").read_text().splitlines()
    assert pred[0] == "idx\tlabel\tprediction\tprob_0\tprob_1" and len(pred) == len(val) + 1
    for line in pred[1:]:
        _, _, p, a, b = line.split("\t")
        assert abs(float(a) + float(b) - 1) < 1e-5 and int(p) == int(float(b) > float(a))
    r = run("run_fine_tune_eval.py", "--experiment", "t", "--model", "bert", "--task", "boolq", "--dataset", "val",
            "--ckpt", "10")
    assert [ln.split("\t")[0] for ln in r.stdout.splitlines() if ln[:1].isdigit()] == ["10", "12"]

    # logits data set, never silently overwritten
    run("run_fine_tune_gen_logits.py", "--experiment", "t", "--model", "bert", "--task", "boolq", "--dataset", "train",
        "--ckpt", "12", "--batch_size", "32")
    ldir = data_root / "logits" / "t_bert_boolq" / "train"
    rows = [json.loads(x) for x in (ldir / "logits.jsonl").read_text().splitlines()]
    train = get_task("boolq").load(data_root, "train")
    assert len(rows) == len(train)
    assert np.allclose(np.array([r["logits"] for r in rows]), logits_of(exp, 12, train, 48), atol=1e-4)
    meta = json.loads((ldir / "meta.json").read_text())
    assert (meta["teacher_experiment"], meta["checkpoint"], meta["split"], meta["ptrain_ver"]) == \
        ("t_bert_boolq", 12, "train", str(tiny_bert))
    AutoTokenizer.from_pretrained(ldir / "tokenizer")
    before = (ldir / "logits.jsonl").read_bytes()
    r = run("run_fine_tune_gen_logits.py", "--experiment", "t", "--model", "bert", "--task", "boolq", "--ckpt", "5",
            check=False)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "--overwrite" in r.stderr
    assert (ldir / "logits.jsonl").read_bytes() == before
    run("run_fine_tune_gen_logits.py", "--experiment", "t", "--model", "bert", "--task", "boolq", "--dataset", "val",
        "--ckpt", "12")
    assert (data_root / "logits" / "t_bert_boolq" / "val" / "meta.json").is_file()

    # teacher-assistant chain: teacher -> TA (2 layers) -> student (1 layer), initialised from the teacher
    run("run_fine_tune_distill.py", "--experiment", "ta", "--model", "bert", "--task", "boolq",
        "--dataset", "t_bert_boolq", "--num_hidden_layers", "2", "--total_step", "6", "--warmup_step", "1",
        "--ckpt_step", "3", "--log_step", "3", *STUDENT, *TRAIN)
    ta = exp_root / "ta_bert_boolq"
    tags = scalars(exp_root / "log" / "ta_bert_boolq")
    assert {"boolq/t_bert_boolq/bert/hard_loss", "boolq/t_bert_boolq/bert/soft_loss", "boolq/t_bert_boolq/bert/loss"} <= set(tags)
    run("run_fine_tune_gen_logits.py", "--experiment", "ta", "--model", "bert", "--task", "boolq", "--ckpt", "6")
    run("run_fine_tune_distill.py", "--experiment", "st", "--model", "bert", "--task", "boolq",
        "--dataset", "ta_bert_boolq", "--num_hidden_layers", "1", "--total_step", "4", "--warmup_step", "1",
        "--ckpt_step", "4", "--log_step", "2", "--init_start", "2", "--init_end", "2", *STUDENT, *TRAIN)
    st = exp_root / "st_bert_boolq"
    assert json.loads((ta / "config.json").read_text())["teacher_experiment"] == "t_bert_boolq"
    st_config = json.loads((st / "config.json").read_text())
    assert st_config["teacher_experiment"] == "ta_bert_boolq" and st_config["ptrain_ver"] == str(tiny_bert)
    load_model(st, 4)
    run("run_fine_tune_eval.py", "--experiment", "st", "--model", "bert", "--task", "boolq", "--dataset", "val")
    run("generate_test_prediction.py", "--experiment", "st", "--model", "bert", "--task", "boolq", "--dataset", "test",
        "--ckpt", "4")
    test = get_task("boolq").load(data_root, "test")
    sub = (st / "BoolQ.jsonl").read_text().splitlines()
    assert len(sub) == len(test)
    for line, ex in zip(sub, test):
        row = json.loads(line)
        assert list(row) == ["idx", "label"] and row["idx"] == ex.idx and row["label"] in ("true", "false")
    # a split other than train through NAME:split
    run("run_fine_tune_distill.py", "--experiment", "sv", "--model", "bert", "--task", "boolq",
        "--dataset", "t_bert_boolq:val", "--num_hidden_layers", "1", "--total_step", "2", "--warmup_step", "1",
        "--ckpt_step", "2", "--log_step", "1", *STUDENT, *TRAIN)


def test_student_init_copies_teacher_layers(run, tiny_bert, data_root, exp_root):
    from transformers import AutoModel

    run("run_fine_tune.py", "--experiment", "t", "--model", "bert", "--ptrain_ver", str(tiny_bert), "--task", "boolq",
        "--total_step", "1", "--warmup_step", "0", "--ckpt_step", "1", "--log_step", "1", *TRAIN)
    run("run_fine_tune_gen_logits.py", "--experiment", "t", "--model", "bert", "--task", "boolq", "--ckpt", "1")
    pre = AutoModel.from_pretrained(tiny_bert).state_dict()
    common = ["--model", "bert", "--task", "boolq", "--dataset", "t_bert_boolq", "--num_hidden_layers", "1",
              "--total_step", "1", "--warmup_step", "1", "--ckpt_step", "1", "--log_step", "1", "--lr", "1e-9",
              "--max_seq_len", "48", *STUDENT]
    run("run_fine_tune_distill.py", "--experiment", "full", "--init_start", "2", "--init_end", "2", *common)
    run("run_fine_tune_distill.py", "--experiment", "attn", "--init_start", "2", "--init_end", "2",
        "--init_attn_only", *common)
    full = torch.load(exp_root / "full_bert_boolq" / "model-1.pt", weights_only=True)
    attn = torch.load(exp_root / "attn_bert_boolq" / "model-1.pt", weights_only=True)
    q = "encoder.layer.{}.attention.self.query.weight"
    ff = "encoder.layer.{}.intermediate.dense.weight"
    assert torch.allclose(full["bert." + q.format(0)], pre[q.format(1)], atol=1e-6)
    assert torch.allclose(full["bert." + ff.format(0)], pre[ff.format(1)], atol=1e-6)
    assert torch.allclose(full["bert.pooler.dense.weight"], pre["pooler.dense.weight"], atol=1e-6)
    assert torch.allclose(attn["bert." + q.format(0)], pre[q.format(1)], atol=1e-6)
    assert not torch.allclose(attn["bert." + ff.format(0)], pre[ff.format(1)], atol=1e-3)


def test_qqp_teacher_f1_and_submission(run, tiny_bert, data_root, exp_root):
    r = run("run_fine_tune.py", "--experiment", "q", "--model", "bert", "--ptrain_ver", str(tiny_bert), "--task", "qqp",
            "--total_step", "6", "--warmup_step", "1", "--ckpt_step", "3", "--log_step", "3", "--device_id", "3", *TRAIN)
    warnings = [ln for ln in r.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1 and "CPU" in warnings[0]
    r = run("run_fine_tune_eval.py", "--experiment", "q", "--model", "bert", "--task", "qqp", "--dataset", "dev",
            "--device_id", "0")
    table = json.loads((exp_root / "q_bert_qqp" / "eval-dev.json").read_text())
    assert set(table["best"]) == {"accuracy", "f1"} and all("f1" in row for row in table["rows"])
    tags = scalars(exp_root / "log" / "q_bert_qqp")
    assert [s for s, _ in tags["qqp/dev/accuracy"]] == [3, 6] and [s for s, _ in tags["qqp/dev/f1_score"]] == [3, 6]
    run("generate_test_prediction.py", "--experiment", "q", "--model", "bert", "--task", "qqp", "--dataset", "test",
        "--ckpt", "6")
    lines = (exp_root / "q_bert_qqp" / "QQP.tsv").read_text().splitlines()
    test = get_task("qqp").load(data_root, "test")
    assert lines[0] == "index\tprediction" and len(lines) == len(test) + 1
    for line, ex in zip(lines[1:], test):
        idx, label = line.split("\t")
        assert int(idx) == ex.idx and label in ("0", "1")


def test_albert_pipeline_with_amp(run, tiny_albert, data_root, exp_root):
    r = run("run_fine_tune.py", "--experiment", "1", "--model", "albert", "--ptrain_ver", str(tiny_albert),
            "--task", "boolq", "--total_step", "4", "--warmup_step", "1", "--ckpt_step", "2", "--log_step", "2",
            "--num_gpu", "0", "--amp", *TRAIN)
    warnings = [ln for ln in r.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1 and warnings[0].startswith("warning: --amp on CPU")
    exp = exp_root / "1_albert_boolq"
    assert AutoConfig.from_pretrained(exp / "model").model_type == "albert"
    load_model(exp, 4)
    run("run_fine_tune_eval.py", "--experiment", "1", "--model", "albert", "--task", "boolq", "--dataset", "val")
    run("run_fine_tune_gen_logits.py", "--experiment", "1", "--model", "albert", "--task", "boolq", "--ckpt", "4")
    run("run_fine_tune_distill.py", "--experiment", "distill_1", "--model", "albert", "--task", "boolq",
        "--dataset", "1_albert_boolq", "--d_emb", "8", "--num_hidden_layers", "3", "--total_step", "2",
        "--warmup_step", "1", "--ckpt_step", "2", "--log_step", "1", *STUDENT, *TRAIN)
    cfg = AutoConfig.from_pretrained(exp_root / "distill_1_albert_boolq" / "model")
    assert (cfg.embedding_size, cfg.num_hidden_layers) == (8, 3)
    load_model(exp_root / "distill_1_albert_boolq", 2)


def test_experiment_guard_and_finished_run(run, tiny_bert, exp_root):
    args = ["--experiment", "g", "--model", "bert", "--ptrain_ver", str(tiny_bert), "--task", "boolq",
            "--total_step", "2", "--warmup_step", "1", "--ckpt_step", "2", "--log_step", "1", *TRAIN]
    run("run_fine_tune.py", *args)
    ckpt = exp_root / "g_bert_boolq" / "model-2.pt"
    before = ckpt.read_bytes()
    r = run("run_fine_tune.py", *args, "--device_id", "-1")
    assert "already finished" in r.stdout and ckpt.read_bytes() == before
    r = run("run_fine_tune.py", *args[:-2], "--seed", "4", check=False, subprocess=True)
    assert r.returncode == 2 and "seed" in r.stderr and "--overwrite" in r.stderr and "Traceback" not in r.stderr
    assert ckpt.read_bytes() == before
