"""End-to-end tests of every entry script, run as a user runs them, on tiny BERT / ALBERT models and the
synthetic BoolQ / QQP files (tests/conftest.py).

The ``run`` fixture runs a script's ``main`` in this process (same arguments, environment, exit status and
captured output as a shell run, without the interpreter start-up); runs whose command line or stderr is
itself under test (provenance command, --amp / --device_id warnings) use ``subprocess=True``. Everything a
script writes is checked against what the test recomputes on its own (checkpoint -> logits -> accuracy,
data file -> sha256), not against the toolkit's helpers.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
SEQ = 48  # --max_seq_len of every run here

# Flags every training run shares: tiny, fast, deterministic.
TRAIN = [
    "--num_class",
    "2",
    "--beta1",
    "0.9",
    "--beta2",
    "0.999",
    "--eps",
    "1e-8",
    "--max_norm",
    "1.0",
    "--weight_decay",
    "0.01",
    "--dropout",
    "0.1",
    "--seed",
    "42",
    "--max_seq_len",
    str(SEQ),
]
# A student shaped like the tiny teacher (hidden 32, feed-forward 64, 2 heads), so layers can be copied.
TEACHER_SHAPE = [
    "--d_model",
    "32",
    "--d_ff",
    "64",
    "--num_attention_heads",
    "2",
    "--num_hidden_layers",
    "2",
    "--type_vocab_size",
    "2",
]


# --------------------------------------------------------------------------------------------------------------
# Independent readers and recomputation (no fine_tune code involved)
# --------------------------------------------------------------------------------------------------------------


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def boolq_rows(data_root: Path, split: str) -> list[dict]:
    """(idx, text, text_pair, label) of a BoolQ split: text = passage, text_pair = question, True -> 1."""
    rows = []
    for line in (data_root / "BoolQ" / f"{split}.jsonl").read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        rows.append(
            {
                "idx": r["idx"],
                "text": r["passage"],
                "text_pair": r["question"],
                "label": None if "label" not in r else int(r["label"] in (True, "true", "True")),
            }
        )
    return rows


def qqp_rows(data_root: Path, split: str) -> list[dict]:
    with open(data_root / "QQP" / f"{split}.tsv", encoding="utf-8", newline="") as f:
        table = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    rows = []
    for cols in table[1:]:
        if split == "test":
            rows.append({"idx": int(cols[0]), "text": cols[1], "text_pair": cols[2], "label": None})
        else:
            rows.append({"idx": int(cols[0]), "text": cols[3], "text_pair": cols[4], "label": int(cols[5])})
    return rows


def load_checkpoint_model(exp_dir: Path, step: int):
    """The checkpoint as a user loads it: config from model/, plain state_dict, strict."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    config = AutoConfig.from_pretrained(exp_dir / "model")
    model = AutoModelForSequenceClassification.from_config(config)
    state = torch.load(exp_dir / f"model-{step}.pt", map_location="cpu", weights_only=True)
    assert isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())
    model.load_state_dict(state, strict=True)
    return model.eval()


@torch.inference_mode()
def recompute_logits(exp_dir: Path, step: int, rows: list[dict], max_seq_len: int = SEQ) -> np.ndarray:
    """Logits of every row in file order (one padded batch), with the experiment's own tokenizer."""
    from transformers import AutoTokenizer

    model = load_checkpoint_model(exp_dir, step)
    tokenizer = AutoTokenizer.from_pretrained(exp_dir / "model")
    enc = tokenizer(
        [r["text"] for r in rows],
        [r["text_pair"] for r in rows],
        truncation=True,
        max_length=max_seq_len,
        padding=True,
        return_tensors="pt",
    )
    return model(**enc).logits.float().numpy()


def accuracy(rows: list[dict], logits: np.ndarray) -> float:
    labels = np.array([r["label"] for r in rows])
    return float((logits.argmax(1) == labels).mean())


def f1_positive(rows: list[dict], logits: np.ndarray) -> float:
    labels = np.array([r["label"] for r in rows])
    pred = logits.argmax(1)
    tp = int(((pred == 1) & (labels == 1)).sum())
    fp = int(((pred == 1) & (labels == 0)).sum())
    fn = int(((pred == 0) & (labels == 1)).sum())
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def tb_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of ``log_dir`` as TensorBoard shows it: tag -> [(step, value)], the event files in the order
    they were written, where a resumed run's first event (``purge_step``) drops every event at or after that step
    from the earlier files."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.util.tensor_util import make_ndarray

    files = sorted(log_dir.glob("events.out.tfevents.*"), key=os.path.getmtime)
    assert files, f"no TensorBoard event file in {log_dir}"
    out: dict[str, list[tuple[int, float]]] = {}
    for f in files:
        for ev in EventFileLoader(str(f)).Load():  # scalars come migrated to the tensor form
            if ev.HasField("file_version") and ev.step:
                out = {tag: [(st, v) for st, v in vals if st < ev.step] for tag, vals in out.items()}
            for v in ev.summary.value:
                if v.HasField("simple_value"):
                    out.setdefault(v.tag, []).append((ev.step, v.simple_value))
                elif v.metadata.plugin_data.plugin_name == "scalars":
                    out.setdefault(v.tag, []).append((ev.step, float(make_ndarray(v.tensor))))
    return out


def table_steps(stdout: str) -> list[int]:
    """Checkpoint column of the evaluation table an eval run prints."""
    return [int(m.group(1)) for m in re.finditer(r"^(\d+)\t", stdout, flags=re.M)]


def expected_best(rows: list[dict], metric: str) -> int:
    """Best checkpoint, ties going to the later one."""
    return max(rows, key=lambda r: (r[metric], r["ckpt"]))["ckpt"]


def checkpoints(exp_dir: Path) -> list[str]:
    return sorted((p.name for p in exp_dir.glob("model-*.pt")), key=lambda n: int(n[6:-3]))


def read_logits_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def warning_lines(stderr: str, prefix: str = "warning:") -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(prefix)]


# --------------------------------------------------------------------------------------------------------------
# Checks of one step's output
# --------------------------------------------------------------------------------------------------------------


def check_fine_tune(data_root: Path, exp_root: Path, tiny_bert: Path) -> None:
    exp = exp_root / "teacher_bert_boolq"
    config = json.loads((exp / "config.json").read_text())
    expected = {
        "experiment": "teacher",
        "model": "bert",
        "task": "boolq",
        "dataset": "train",
        "ptrain_ver": str(tiny_bert),
        "num_class": 2,
        "accum_step": 2,
        "batch_size": 8,
        "ckpt_step": 5,
        "log_step": 4,
        "total_step": 12,
        "warmup_step": 2,
        "lr": 1e-3,
        "max_seq_len": SEQ,
        "seed": 42,
        "dropout": 0.1,
        "weight_decay": 0.01,
        "amp": False,
    }
    assert {k: config.get(k) for k in expected} == expected

    prov = config["provenance"]
    assert "run_fine_tune.py" in prov["command"] and "--total_step 12" in prov["command"]
    assert "git_commit" in prov
    import transformers

    assert prov["packages"]["torch"] == torch.__version__
    assert prov["packages"]["transformers"] == transformers.__version__
    assert prov["device"].startswith("cuda" if HAS_CUDA else "cpu")
    train_file, weights = data_root / "BoolQ" / "train.jsonl", tiny_bert / "model.safetensors"
    # every input, hashed: the training file and the pretrained weights (a resume checks them)
    assert {Path(k): v for k, v in prov["data_files"].items()} == {
        train_file: sha256(train_file),
        weights: sha256(weights),
    }

    # model/ is a usable Hugging Face folder (config + tokenizer)
    from transformers import AutoConfig, AutoTokenizer

    hf_config = AutoConfig.from_pretrained(exp / "model")
    assert hf_config.model_type == "bert" and hf_config.num_labels == 2 and hf_config.num_hidden_layers == 2
    tokenizer = AutoTokenizer.from_pretrained(exp / "model")
    assert tokenizer("is it ?")["input_ids"][0] == tokenizer.cls_token_id

    # checkpoints every ckpt_step and at the end, each a strict-loadable plain state_dict
    assert checkpoints(exp) == ["model-5.pt", "model-10.pt", "model-12.pt"]
    for step in (5, 10, 12):
        load_checkpoint_model(exp, step)
    first, last = (torch.load(exp / f"model-{s}.pt", weights_only=True) for s in (5, 12))
    assert not torch.equal(first["classifier.weight"], last["classifier.weight"])  # training moved the weights

    # TensorBoard training scalars at multiples of log_step (and the end)
    scalars = tb_scalars(exp_root / "log" / "teacher_bert_boolq")
    for name in ("loss", "lr", "grad_norm", "examples_per_s"):
        points = scalars[f"boolq/train/bert/{name}"]
        assert [s for s, _ in points] == [4, 8, 12], name
        assert all(math.isfinite(v) for _, v in points), name
    for name in ("loss", "grad_norm", "examples_per_s"):
        assert all(v > 0 for _, v in scalars[f"boolq/train/bert/{name}"]), name
    # linear warmup (2 steps), then linear decay to 0 at step 12
    lrs = [v for _, v in scalars["boolq/train/bert/lr"]]
    assert lrs == pytest.approx([1e-3 * 8 / 10, 1e-3 * 4 / 10, 0.0], abs=1e-9)

    # the tokenisation is cached under the data root
    cache = sorted((data_root / "cache").glob("features-*.pt"))
    assert cache, "no tokenisation cache file"
    assert len(torch.load(cache[0], map_location="cpu", weights_only=True)["offsets"]) == 96 + 1


def check_eval(proc, data_root: Path, exp_root: Path) -> None:
    exp = exp_root / "teacher_bert_boolq"
    val = boolq_rows(data_root, "val")
    assert table_steps(proc.stdout) == [5, 10, 12]
    table = json.loads((exp / "eval-val.json").read_text())
    assert [r["ckpt"] for r in table["rows"]] == [5, 10, 12]
    assert table["num_rows"] == len(val) == 48
    logits = {step: recompute_logits(exp, step, val) for step in (5, 10, 12)}
    for row in table["rows"]:
        assert row["accuracy"] == pytest.approx(accuracy(val, logits[row["ckpt"]]), abs=1e-9), row
    best = expected_best(table["rows"], "accuracy")
    assert table["best"]["accuracy"]["ckpt"] == best
    assert f"at model-{best}.pt" in proc.stdout

    points = tb_scalars(exp_root / "log" / "teacher_bert_boolq")["boolq/val/accuracy"]
    assert [s for s, _ in points] == [5, 10, 12]
    assert [v for _, v in points] == pytest.approx([r["accuracy"] for r in table["rows"]], abs=1e-6)

    # --save_predictions: one file per checkpoint, file order, probabilities = softmax of the logits; classes by
    # Hugging Face's names (super_glue/boolq: False, True)
    for step in (5, 10, 12):
        lines = (exp / f"predictions-val-{step}.tsv").read_text().splitlines()
        assert lines[0] == "idx\tlabel\tprediction\tprob_False\tprob_True"
        body = [line.split("\t") for line in lines[1:]]
        assert [int(c[0]) for c in body] == [r["idx"] for r in val]
        assert [c[1] for c in body] == [["False", "True"][int(r["label"])] for r in val]
        probs = np.array([[float(c[3]), float(c[4])] for c in body])
        assert np.allclose(probs.sum(1), 1.0, atol=2e-6)
        assert [c[2] for c in body] == [["False", "True"][k] for k in probs.argmax(1)]
        z = logits[step] - logits[step].max(1, keepdims=True)
        assert np.allclose(probs, np.exp(z) / np.exp(z).sum(1, keepdims=True), atol=1e-5)


def check_logits_set(
    data_root: Path, exp_root: Path, name: str, split: str, step: int, rows: list[dict], ptrain_ver: str
) -> Path:
    """A logits data set written by run_fine_tune_gen_logits.py equals the checkpoint's logits, recomputed."""
    folder = data_root / "logits" / name / split
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["teacher_experiment"] == name and meta["checkpoint"] == step
    assert meta["ptrain_ver"] == ptrain_ver and meta["split"] == split
    written = read_logits_jsonl(folder / "logits.jsonl")
    assert [r["idx"] for r in written] == [r["idx"] for r in rows]
    assert [r["label"] for r in written] == [r["label"] for r in rows]
    max_seq_len = json.loads((exp_root / name / "config.json").read_text())["max_seq_len"]
    expected = recompute_logits(exp_root / name, step, rows, max_seq_len)
    assert np.allclose(np.array([r["logits"] for r in written]), expected, atol=1e-4)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder / "tokenizer")
    assert tok.get_vocab() == AutoTokenizer.from_pretrained(exp_root / name / "model").get_vocab()
    return folder


# --------------------------------------------------------------------------------------------------------------
# BERT / BoolQ: teacher, evaluation, predictions, logits, layer initialisation, teacher-assistant chain
# --------------------------------------------------------------------------------------------------------------


def renumber_boolq(data_root: Path) -> None:
    """BoolQ ids that are not row numbers (descending, steps of 11, different per split): every file the pipeline
    writes (per-example predictions, logits data sets, the submission) must carry the data file's ids."""
    for split, start in (("train", 9000), ("val", 5000), ("test", 2000)):
        path = data_root / "BoolQ" / f"{split}.jsonl"
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        path.write_text(
            "".join(json.dumps({**r, "idx": start - 11 * i}) + "\n" for i, r in enumerate(rows)), encoding="utf-8"
        )


def test_bert_boolq_pipeline(run, data_root, exp_root, tiny_bert, monkeypatch):
    renumber_boolq(data_root)
    # --- teacher fine-tuning (a real subprocess: the provenance records its command line) -----------------
    run(
        "run_fine_tune.py",
        "--experiment",
        "teacher",
        "--model",
        "bert",
        "--ptrain_ver",
        str(tiny_bert),
        "--task",
        "boolq",
        "--dataset",
        "train",
        "--accum_step",
        "2",
        "--batch_size",
        "8",
        "--ckpt_step",
        "5",
        "--log_step",
        "4",
        "--lr",
        "1e-3",
        "--total_step",
        "12",
        "--warmup_step",
        "2",
        *TRAIN,
        subprocess=True,
    )
    check_fine_tune(data_root, exp_root, tiny_bert)
    teacher = exp_root / "teacher_bert_boolq"

    # --- evaluation sweep on val (with per-example predictions); then from --ckpt 10 on -------------------
    proc = run(
        "run_fine_tune_eval.py",
        "--experiment",
        "teacher",
        "--model",
        "bert",
        "--task",
        "boolq",
        "--dataset",
        "val",
        "--batch_size",
        "16",
        "--save_predictions",
    )
    check_eval(proc, data_root, exp_root)
    proc = run(
        "run_fine_tune_eval.py",
        "--experiment",
        "teacher",
        "--model",
        "bert",
        "--task",
        "boolq",
        "--dataset",
        "val",
        "--batch_size",
        "16",
        "--ckpt",
        "10",
    )
    assert table_steps(proc.stdout) == [10, 12]
    assert [r["ckpt"] for r in json.loads((teacher / "eval-val.json").read_text())["rows"]] == [10, 12]

    # --- logits of checkpoint 12 on train; another checkpoint may not replace them -----------------------
    train = boolq_rows(data_root, "train")
    run(
        "run_fine_tune_gen_logits.py",
        "--experiment",
        "teacher",
        "--model",
        "bert",
        "--task",
        "boolq",
        "--dataset",
        "train",
        "--ckpt",
        "12",
        "--batch_size",
        "16",
    )
    folder = check_logits_set(data_root, exp_root, "teacher_bert_boolq", "train", 12, train, str(tiny_bert))
    before = (folder / "logits.jsonl").read_bytes()
    import fine_tune.evaluate

    with monkeypatch.context() as m:  # refused before any prediction is computed
        m.setattr(fine_tune.evaluate, "predict_logits", lambda *a, **k: pytest.fail("predicted before refusing"))
        proc = run(
            "run_fine_tune_gen_logits.py",
            "--experiment",
            "teacher",
            "--model",
            "bert",
            "--task",
            "boolq",
            "--dataset",
            "train",
            "--ckpt",
            "10",
            "--batch_size",
            "16",
            check=False,
        )
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("error: "), proc.stderr
    assert "--overwrite" in proc.stderr and "Traceback" not in proc.stderr
    assert (folder / "logits.jsonl").read_bytes() == before
    assert json.loads((folder / "meta.json").read_text())["checkpoint"] == 12

    # --- logits on val, usable as --dataset E_M_T:val ----------------------------------------------------
    run(
        "run_fine_tune_gen_logits.py",
        "--experiment",
        "teacher",
        "--model",
        "bert",
        "--task",
        "boolq",
        "--dataset",
        "val",
        "--ckpt",
        "12",
        "--batch_size",
        "16",
    )
    check_logits_set(data_root, exp_root, "teacher_bert_boolq", "val", 12, boolq_rows(data_root, "val"), str(tiny_bert))

    from transformers import AutoModel

    pretrained = AutoModel.from_pretrained(tiny_bert).state_dict()

    # --- attention-only initialisation of a 1-layer student from the teacher's 2nd layer (not its 1st: the
    # student's layer comes from --init_start), distilled from the val logits -----------------------------
    # lr 1e-12: the only checkpoint shows the initial weights
    one_layer = [
        *TEACHER_SHAPE[: TEACHER_SHAPE.index("--num_hidden_layers")],
        "--num_hidden_layers",
        "1",
        "--type_vocab_size",
        "2",
    ]
    run(
        "run_fine_tune_distill.py",
        "--experiment",
        "attn",
        "--model",
        "bert",
        "--task",
        "boolq",
        "--dataset",
        "teacher_bert_boolq:val",
        "--accum_step",
        "1",
        "--batch_size",
        "8",
        "--ckpt_step",
        "1",
        "--log_step",
        "1",
        "--lr",
        "1e-12",
        "--total_step",
        "1",
        "--warmup_step",
        "0",
        *one_layer,
        "--init_start",
        "2",
        "--init_end",
        "2",
        "--init_step",
        "1",
        "--init_attn_only",
        *TRAIN,
    )
    attn = exp_root / "attn_bert_boolq"
    config = json.loads((attn / "config.json").read_text())
    assert config["dataset"] == "teacher_bert_boolq:val" and config["logits_split"] == "val"
    assert config["teacher_experiment"] == "teacher_bert_boolq" and config["teacher_checkpoint"] == 12
    assert checkpoints(attn) == ["model-1.pt"]
    state = load_checkpoint_model(attn, 1).state_dict()
    assert not any(k.startswith("bert.encoder.layer.1.") for k in state)
    for part in ("query", "key", "value"):
        key = f"encoder.layer.{{}}.attention.self.{part}.weight"
        assert torch.allclose(state["bert." + key.format(0)], pretrained[key.format(1)], atol=1e-6), key
        assert not torch.allclose(state["bert." + key.format(0)], pretrained[key.format(0)], atol=1e-3), key
    ff = "encoder.layer.{}.intermediate.dense.weight"
    for layer in (0, 1):
        assert not torch.allclose(state["bert." + ff.format(0)], pretrained[ff.format(layer)], atol=1e-3), layer
    # named after the split the logits set holds (val), as every training script names its training split, not
    # after the set (README.md, "TensorBoard tags")
    scalars = tb_scalars(exp_root / "log" / "attn_bert_boolq")
    for name in ("loss", "hard_loss", "soft_loss", "logits_loss"):
        assert [s for s, _ in scalars[f"boolq/val/bert/{name}"]] == [1], name
    assert not any("teacher_bert_boolq" in tag for tag in scalars)

    # --- teacher-assistant chain: teacher -> TA (2 layers, full init) -> student (1 layer) --------------
    run(
        "run_fine_tune_distill.py",
        "--experiment",
        "ta",
        "--model",
        "bert",
        "--task",
        "boolq",
        "--dataset",
        "teacher_bert_boolq",
        "--accum_step",
        "1",
        "--batch_size",
        "8",
        "--ckpt_step",
        "1",
        "--log_step",
        "1",
        "--lr",
        "1e-12",
        "--total_step",
        "2",
        "--warmup_step",
        "0",
        *TEACHER_SHAPE,
        "--init_start",
        "1",
        "--init_end",
        "2",
        "--init_step",
        "1",
        *TRAIN,
    )
    ta = exp_root / "ta_bert_boolq"
    ta_config = json.loads((ta / "config.json").read_text())
    assert ta_config["teacher_experiment"] == "teacher_bert_boolq" and ta_config["logits_split"] == "train"
    assert ta_config["ptrain_ver"] == str(tiny_bert)
    assert checkpoints(ta) == ["model-1.pt", "model-2.pt"]
    state = load_checkpoint_model(ta, 1).state_dict()
    for key in (
        "encoder.layer.0.attention.self.query.weight",
        "encoder.layer.1.attention.self.query.weight",
        "encoder.layer.0.intermediate.dense.weight",
        "encoder.layer.1.output.dense.weight",
        "pooler.dense.weight",
    ):
        assert torch.allclose(state["bert." + key], pretrained[key], atol=1e-6), key
    emb = "embeddings.word_embeddings.weight"  # embeddings are not copied
    assert not torch.allclose(state["bert." + emb], pretrained[emb], atol=1e-3)

    run(
        "run_fine_tune_gen_logits.py",
        "--experiment",
        "ta",
        "--model",
        "bert",
        "--task",
        "boolq",
        "--dataset",
        "train",
        "--batch_size",
        "16",
    )  # default: the latest checkpoint (2)
    check_logits_set(data_root, exp_root, "ta_bert_boolq", "train", 2, train, str(tiny_bert))

    # the schedule in epochs: a third of 96 rows / 8 = 12 steps is ceil(0.3333 x 12) = 4, warmup ceil(0.25 x 4) = 1
    run(
        "run_fine_tune_distill.py",
        "--experiment",
        "student",
        "--model",
        "bert",
        "--task",
        "boolq",
        "--dataset",
        "ta_bert_boolq",
        "--accum_step",
        "1",
        "--batch_size",
        "8",
        "--ckpt_step",
        "2",
        "--log_step",
        "2",
        "--lr",
        "1e-3",
        "--num_epochs",
        "0.3333",
        "--warmup_ratio",
        "0.25",
        "--d_model",
        "16",
        "--d_ff",
        "32",
        "--num_attention_heads",
        "2",
        "--num_hidden_layers",
        "1",
        "--type_vocab_size",
        "2",
        *TRAIN,
    )
    student = exp_root / "student_bert_boolq"
    s_config = json.loads((student / "config.json").read_text())
    assert s_config["teacher_experiment"] == "ta_bert_boolq" and s_config["teacher_checkpoint"] == 2
    assert (s_config["total_step"], s_config["warmup_step"], s_config["num_epochs"]) == (4, 1, 0.3333)
    assert checkpoints(student) == ["model-2.pt", "model-4.pt"]
    load_checkpoint_model(student, 2)
    model = load_checkpoint_model(student, 4)
    assert model.config.num_hidden_layers == 1 and model.config.hidden_size == 16

    proc = run(
        "run_fine_tune_eval.py",
        "--experiment",
        "student",
        "--model",
        "bert",
        "--task",
        "boolq",
        "--dataset",
        "val",
        "--batch_size",
        "16",
    )
    assert table_steps(proc.stdout) == [2, 4]
    rows = json.loads((student / "eval-val.json").read_text())["rows"]
    val = boolq_rows(data_root, "val")
    assert rows[-1]["accuracy"] == pytest.approx(accuracy(val, recompute_logits(student, 4, val)), abs=1e-9)

    run(
        "generate_test_prediction.py",
        "--experiment",
        "student",
        "--model",
        "bert",
        "--task",
        "boolq",
        "--dataset",
        "test",
        "--batch_size",
        "16",
    )  # default: the latest checkpoint (4)
    test = boolq_rows(data_root, "test")
    lines = (student / "BoolQ.jsonl").read_text().splitlines()
    assert len(lines) == len(test) == 32
    pattern = re.compile(r'^\{"idx": (\d+), "label": "(true|false)"\}$')
    matches = [pattern.match(line) for line in lines]
    assert all(matches), lines[:3]
    assert [int(m.group(1)) for m in matches] == [r["idx"] for r in test]
    predicted = recompute_logits(student, 4, test).argmax(1)
    assert [m.group(2) for m in matches] == ["true" if p == 1 else "false" for p in predicted]


# --------------------------------------------------------------------------------------------------------------
# QQP (+ --amp on CPU) and ALBERT (+ --device_id 3 without CUDA)
# --------------------------------------------------------------------------------------------------------------


def test_qqp_pipeline_and_amp_on_cpu(run, data_root, exp_root, tiny_bert):
    proc = run(
        "run_fine_tune.py",
        "--experiment",
        "qqpt",
        "--model",
        "bert",
        "--ptrain_ver",
        str(tiny_bert),
        "--task",
        "qqp",
        "--dataset",
        "train",
        "--accum_step",
        "1",
        "--batch_size",
        "8",
        "--ckpt_step",
        "4",
        "--log_step",
        "4",
        "--lr",
        "1e-3",
        "--total_step",
        "8",
        "--warmup_step",
        "1",
        "--amp",
        *TRAIN,
        subprocess=True,
    )
    assert proc.returncode == 0
    if not HAS_CUDA:
        assert len(warning_lines(proc.stderr, "warning: --amp on CPU")) == 1, proc.stderr
        assert len(warning_lines(proc.stderr)) == 1, proc.stderr
    exp = exp_root / "qqpt_bert_qqp"
    config = json.loads((exp / "config.json").read_text())
    assert config["amp"] is True and config["task"] == "qqp"
    train_file, weights = data_root / "QQP" / "train.tsv", tiny_bert / "model.safetensors"
    assert {Path(k): v for k, v in config["provenance"]["data_files"].items()} == {
        train_file: sha256(train_file),
        weights: sha256(weights),
    }
    assert checkpoints(exp) == ["model-4.pt", "model-8.pt"]

    # eval on dev: accuracy and F1 (positive class = duplicate), both recomputed here
    proc = run(
        "run_fine_tune_eval.py",
        "--experiment",
        "qqpt",
        "--model",
        "bert",
        "--task",
        "qqp",
        "--dataset",
        "dev",
        "--batch_size",
        "16",
    )
    dev = qqp_rows(data_root, "dev")
    table = json.loads((exp / "eval-dev.json").read_text())
    assert table_steps(proc.stdout) == [4, 8]
    assert [r["ckpt"] for r in table["rows"]] == [4, 8]
    for row in table["rows"]:
        logits = recompute_logits(exp, row["ckpt"], dev)
        assert row["accuracy"] == pytest.approx(accuracy(dev, logits), abs=1e-9)
        assert row["f1"] == pytest.approx(f1_positive(dev, logits), abs=1e-9)
    for metric in ("accuracy", "f1"):  # best accuracy and best F1 chosen separately, ties to the later one
        assert table["best"][metric]["ckpt"] == expected_best(table["rows"], metric)
    scalars = tb_scalars(exp_root / "log" / "qqpt_bert_qqp")
    for tag, key in (("qqp/dev/accuracy", "accuracy"), ("qqp/dev/f1", "f1")):  # the JSON's names
        assert [s for s, _ in scalars[tag]] == [4, 8]
        assert [v for _, v in scalars[tag]] == pytest.approx([r[key] for r in table["rows"]], abs=1e-6)
    assert [s for s, _ in scalars["qqp/train/bert/loss"]] == [4, 8]

    # QQP.tsv submission of checkpoint 8
    run(
        "generate_test_prediction.py",
        "--experiment",
        "qqpt",
        "--model",
        "bert",
        "--task",
        "qqp",
        "--dataset",
        "test",
        "--batch_size",
        "16",
        "--ckpt",
        "8",
    )
    test = qqp_rows(data_root, "test")
    text = (exp / "QQP.tsv").read_text()
    assert text.split("\n", 1)[0] == "index\tprediction"
    lines = text.splitlines()
    assert len(lines) == len(test) + 1 == 33
    cols = [line.split("\t") for line in lines[1:]]
    assert all(len(c) == 2 and c[1] in ("0", "1") for c in cols), lines[:3]
    assert [int(c[0]) for c in cols] == [r["idx"] for r in test]
    assert [int(c[1]) for c in cols] == list(recompute_logits(exp, 8, test).argmax(1))


def test_albert_pipeline_and_missing_cuda_device(run, data_root, exp_root, tiny_albert):
    device = ["--device_id", "3"] if not HAS_CUDA else ["--device_id", "-1"]
    proc = run(
        "run_fine_tune.py",
        "--experiment",
        "alt",
        "--model",
        "albert",
        "--ptrain_ver",
        str(tiny_albert),
        "--task",
        "boolq",
        "--accum_step",
        "1",
        "--batch_size",
        "8",
        "--ckpt_step",
        "3",
        "--log_step",
        "3",
        "--lr",
        "1e-3",
        "--total_step",
        "6",
        "--warmup_step",
        "1",
        *device,
        *TRAIN,
        subprocess=True,
    )
    exp = exp_root / "alt_albert_boolq"
    if not HAS_CUDA:  # --device_id 3 without CUDA: runs on the CPU after one warning line
        warnings = warning_lines(proc.stderr)
        assert len(warnings) == 1 and "--device_id 3" in warnings[0], proc.stderr
    config = json.loads((exp / "config.json").read_text())
    assert config["provenance"]["device"].startswith("cpu")
    assert config["model"] == "albert" and config["ptrain_ver"] == str(tiny_albert)
    assert config["device_id"] == int(device[1])
    assert checkpoints(exp) == ["model-3.pt", "model-6.pt"]
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(exp / "model").model_type == "albert"
    assert [s for s, _ in tb_scalars(exp_root / "log" / "alt_albert_boolq")["boolq/train/albert/loss"]] == [3, 6]

    proc = run(
        "run_fine_tune_eval.py",
        "--experiment",
        "alt",
        "--model",
        "albert",
        "--task",
        "boolq",
        "--dataset",
        "val",
        "--batch_size",
        "16",
    )
    val = boolq_rows(data_root, "val")
    rows = json.loads((exp / "eval-val.json").read_text())["rows"]
    assert table_steps(proc.stdout) == [3, 6]
    for row in rows:
        assert row["accuracy"] == pytest.approx(accuracy(val, recompute_logits(exp, row["ckpt"], val)), abs=1e-9)

    run(
        "run_fine_tune_gen_logits.py",
        "--experiment",
        "alt",
        "--model",
        "albert",
        "--task",
        "boolq",
        "--dataset",
        "train",
        "--batch_size",
        "16",
    )  # default: the latest checkpoint (6)
    check_logits_set(
        data_root, exp_root, "alt_albert_boolq", "train", 6, boolq_rows(data_root, "train"), str(tiny_albert)
    )

    run(
        "run_fine_tune_distill.py",
        "--experiment",
        "alst",
        "--model",
        "albert",
        "--task",
        "boolq",
        "--dataset",
        "alt_albert_boolq",
        "--accum_step",
        "1",
        "--batch_size",
        "8",
        "--ckpt_step",
        "2",
        "--log_step",
        "2",
        "--lr",
        "1e-3",
        "--total_step",
        "2",
        "--warmup_step",
        "0",
        "--d_emb",
        "8",
        "--d_model",
        "24",
        "--d_ff",
        "48",
        "--num_attention_heads",
        "2",
        "--num_hidden_layers",
        "3",
        "--type_vocab_size",
        "2",
        *TRAIN,
    )
    student = exp_root / "alst_albert_boolq"
    s_config = json.loads((student / "config.json").read_text())
    assert s_config["d_emb"] == 8 and s_config["teacher_experiment"] == "alt_albert_boolq"
    assert checkpoints(student) == ["model-2.pt"]
    model = load_checkpoint_model(student, 2)
    assert model.config.model_type == "albert" and model.config.num_hidden_layers == 3
    assert model.config.embedding_size == 8 and model.config.hidden_size == 24
    assert model.albert.embeddings.word_embeddings.weight.shape[1] == 8
    assert tuple(model.albert.encoder.embedding_hidden_mapping_in.weight.shape) == (24, 8)


# --------------------------------------------------------------------------------------------------------------
# Re-running an experiment
# --------------------------------------------------------------------------------------------------------------


def test_experiment_guard_and_finished_run(run, exp_root, tiny_bert):
    args = [
        "--experiment",
        "g",
        "--model",
        "bert",
        "--ptrain_ver",
        str(tiny_bert),
        "--task",
        "boolq",
        "--accum_step",
        "1",
        "--batch_size",
        "8",
        "--lr",
        "1e-3",
        "--total_step",
        "2",
        "--warmup_step",
        "1",
        "--ckpt_step",
        "2",
        "--log_step",
        "1",
        *TRAIN,
    ]
    run("run_fine_tune.py", *args)
    ckpt = exp_root / "g_bert_boolq" / "model-2.pt"
    before = ckpt.read_bytes()
    # the same run again (only where it runs differs): nothing to do, nothing rewritten
    proc = run("run_fine_tune.py", *args, "--device_id", "-1")
    assert "already finished" in proc.stdout and ckpt.read_bytes() == before
    # another config in the same folder: refused with one line naming the field, folder untouched
    at = args.index("--seed")
    proc = run("run_fine_tune.py", *args[: at + 1], "4", *args[at + 2 :], check=False)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("error: "), proc.stderr
    assert "seed" in proc.stderr and "--overwrite" in proc.stderr
    assert ckpt.read_bytes() == before
    assert json.loads((exp_root / "g_bert_boolq" / "config.json").read_text())["seed"] == 42
