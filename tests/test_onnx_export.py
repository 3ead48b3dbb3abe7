"""``export_model.py --format onnx [--quantize int8]``: a tiny fine-tuned BERT exported to ONNX, then checked here
independently of the toolkit: ONNX Runtime on the exported tokenizer's output against the checkpoint in plain
Hugging Face PyTorch (two batch sizes, two sequence lengths), the graph ONNX Runtime's
transformer optimiser fused and the int8 model quantised from it, export.json's numbers, the Hugging Face export
left as it was, a bad export refused with one line and nothing left behind, and which families the optimiser
fuses (DeBERTa-v2's export keeps the plain graph)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from collections import Counter  # noqa: E402

from conftest import one_thread  # noqa: E402
from conftest import run_in_world as run  # noqa: E402

from fine_tune import onnx_export, synthetic  # noqa: E402
from fine_tune.onnx_export import ATOL, RTOL  # noqa: E402

SEQ = 48
COMMON = ["--experiment", "ft", "--model", "bert", "--task", "qqp"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Synthetic QQP (48 dev rows), a tiny BERT fine-tuned for 4 steps, exported with --format onnx --quantize int8."""
    base = tmp_path_factory.mktemp("onnx")
    w = {"base": base, "data": base / "data", "exp": base / "exp"}
    synthetic.write_qqp(w["data"], n_train=48, n_dev=48, n_test=8)
    pre = synthetic.write_tiny_model(base / "pre-bert", "bert", num_layers=2)
    with one_thread():
        run(
            w,
            "run_fine_tune.py",
            *COMMON,
            "--ptrain_ver",
            str(pre),
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
        )
        w["proc"] = run(w, "export_model.py", *COMMON, "--format", "onnx", "--quantize", "int8")
        w["folder"] = w["exp"] / "ft_bert_qqp"
        w["out"] = w["folder"] / "onnx-model-4"
        yield w


def dev_rows(w) -> tuple[list[tuple[str, str]], np.ndarray]:
    lines = (w["data"] / "QQP" / "dev.tsv").read_text().splitlines()[1:]
    cells = [line.split("\t") for line in lines]  # id qid1 qid2 question1 question2 is_duplicate
    return [(c[3], c[4]) for c in cells], np.array([int(c[5]) for c in cells])


def pytorch_model(w, step: int = 4):
    """The checkpoint in plain Hugging Face PyTorch (the experiment's config, the toolkit's state_dict)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    config = AutoConfig.from_pretrained(w["folder"] / "model")
    model = AutoModelForSequenceClassification.from_config(config, attn_implementation="eager")
    model.load_state_dict(torch.load(w["folder"] / f"model-{step}.pt", weights_only=True))
    return model.eval()


def session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def encode(tokenizer, pairs, **padding):
    return tokenizer([a for a, _ in pairs], [b for _, b in pairs], truncation=True, return_tensors="np", **padding)


def ort_logits(sess, enc) -> np.ndarray:
    names = [i.name for i in sess.get_inputs()]
    return sess.run(["logits"], {n: enc[n].astype(np.int64) for n in names})[0]


def op_counts(path) -> Counter:
    import onnx

    return Counter(node.op_type for node in onnx.load(str(path)).graph.node)


def int8_weight_scales(path) -> dict[str, list[list[int]]]:
    """The dims of each int8 weight matrix's scale, by the node type that multiplies by it (input 1, the
    ``<weight>_quantized`` initializer whose scale is ``<weight>_scale``), in graph order."""
    import onnx

    graph = onnx.load(str(path)).graph
    dims = {i.name: list(i.dims) for i in graph.initializer}
    scales: dict[str, list[list[int]]] = {}
    for node in graph.node:
        weight = node.input[1] if node.op_type in ("QAttention", "MatMulInteger") else ""
        if weight.endswith("_quantized") and len(dims.get(weight, [])) == 2:
            scales.setdefault(node.op_type, []).append(dims[weight[: -len("_quantized")] + "_scale"])
    return scales


FUSED = {
    "Attention",
    "MultiHeadAttention",
    "SkipLayerNormalization",
    "EmbedLayerNormalization",
    "BiasGelu",
    "FastGelu",
    "Gelu",
    "QAttention",
}  # ONNX Runtime's contrib ops (com.microsoft), none in a plain graph


def test_onnx_export_matches_pytorch_on_dynamic_shapes_and_records_its_check(world):
    from transformers import AutoConfig, AutoTokenizer

    w, out = world, world["out"]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [
            "config.json",
            "export.json",
            "model.int8.onnx",
            "model.onnx",
            "model.plain.onnx",
            "tokenizer.json",
            "tokenizer_config.json",
        ]
    )
    # model.onnx: the optimiser's graph, attention fused in both layers; model.plain.onnx: standard ops only
    fused, plain = op_counts(out / "model.onnx"), op_counts(out / "model.plain.onnx")
    assert fused["Attention"] == 2 and fused["SkipLayerNormalization"] == 4 and fused["EmbedLayerNormalization"] == 1
    assert fused["Softmax"] == 0 and plain["Softmax"] == 2 and not FUSED & set(plain)
    assert op_counts(out / "model.int8.onnx")["QAttention"] == 2  # quantised from the fused graph
    assert int8_weight_scales(out / "model.int8.onnx") == {  # a scale per output channel of each weight matrix
        "QAttention": [[3 * 32]] * 2,  # Q, K, V of width 32, two layers
        "MatMulInteger": [[32], [64], [32]] * 2 + [[32], [2]],
    }  # attention output, feed-forward; pooler, classifier
    assert not list(w["folder"].glob(".tmp-*"))
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.model_max_length == SEQ
    config = AutoConfig.from_pretrained(out)
    assert config.id2label == {0: "not_duplicate", 1: "duplicate"}  # Hugging Face's glue/qqp names
    assert config.label2id == {"not_duplicate": 0, "duplicate": 1}
    sess = session(out / "model.onnx")
    assert [i.name for i in sess.get_inputs()] == ["input_ids", "attention_mask", "token_type_ids"]
    assert [o.name for o in sess.get_outputs()] == ["logits"]

    pairs, labels = dev_rows(w)
    model = pytorch_model(w)
    # two batch sizes and two sequence lengths through the one graph: 5 rows padded to their longest, 13 to SEQ
    shapes = set()
    for chunk, padding in ((pairs[:5], {"padding": True}), (pairs[5:18], {"padding": "max_length", "max_length": SEQ})):
        enc = encode(tokenizer, chunk, **padding)
        shapes.add(enc["input_ids"].shape)
        got = ort_logits(sess, enc)
        with torch.no_grad():
            expected = model(**{k: torch.from_numpy(v) for k, v in enc.items()}).logits.numpy()
        np.testing.assert_allclose(got, expected, atol=ATOL, rtol=RTOL)
    assert len(shapes) == 2 and len({s[0] for s in shapes}) == 2 and len({s[1] for s in shapes}) == 2, shapes

    # every dev row, one row at a time (no padding): the accuracy export.json reports for ONNX
    onnx_all = np.concatenate([ort_logits(sess, encode(tokenizer, [p])) for p in pairs])
    int8_sess = session(out / "model.int8.onnx")
    int8_all = np.concatenate([ort_logits(int8_sess, encode(tokenizer, [p])) for p in pairs])
    assert int8_all.shape == (len(pairs), 2) and np.isfinite(int8_all).all()
    int8_preds = int8_all.argmax(1)
    assert set(int8_preds.tolist()) <= {0, 1}

    record = json.loads((out / "export.json").read_text())
    assert list(record) == [
        "experiment",
        "checkpoint",
        "selected",
        "checkpoint_sha256",
        "task",
        "label_names",
        "max_seq_len",
        "inputs",
        "format",
        "onnx",
    ]
    assert record["format"] == "onnx" and record["checkpoint"] == "model-4.pt" and record["max_seq_len"] == SEQ
    o = record["onnx"]
    assert list(o) == [
        "file",
        "int8_file",
        "int8_quantization",
        "opset",
        "split",
        "rows",
        "batch_size",
        "tolerance",
        "max_abs_diff",
        "metrics",
        "int8_agreement",
        "examples_per_s",
        "device",
        "threads",
        "onnxruntime_version",
        "torch_version",
        "optimizer",
        "plain_file",
        "plain_max_abs_diff",
    ]
    assert o["optimizer"] == {
        "fused": True,
        "model_type": "bert",
        "opt_level": 0,
        "attention_mask": "raw",
        "fused_operators": dict(Counter({k: v for k, v in fused.items() if k in FUSED})),
        "reason": None,
    }
    assert o["int8_quantization"] == {"method": "quantize_dynamic", "weight_type": "QInt8", "per_channel": True}
    assert o["plain_file"] == "model.plain.onnx" and 0 <= o["plain_max_abs_diff"] <= ATOL
    assert (o["file"], o["int8_file"], o["split"], o["rows"], o["batch_size"]) == (
        "model.onnx",
        "model.int8.onnx",
        "dev",
        48,
        32,
    )
    assert isinstance(o["opset"], int) and o["tolerance"] == {"atol": ATOL, "rtol": RTOL}
    assert 0 <= o["max_abs_diff"] <= ATOL
    assert o["device"] == "cpu" and o["threads"] == 1
    assert o["onnxruntime_version"] == ort.__version__ and o["torch_version"] == torch.__version__
    assert all(isinstance(v, float) and v > 0 for v in o["examples_per_s"].values())
    accuracy = float((onnx_all.argmax(1) == labels).mean())
    assert o["metrics"]["onnx"]["accuracy"] == pytest.approx(accuracy)
    assert o["metrics"]["pytorch"]["accuracy"] == pytest.approx(accuracy)  # fp32 logits agree to 1e-4
    assert o["metrics"]["int8"]["accuracy"] == pytest.approx(float((int8_preds == labels).mean()))
    assert o["int8_agreement"] == pytest.approx(float((int8_preds == onnx_all.argmax(1)).mean()))
    assert set(o["metrics"]["onnx"]) == {"accuracy", "f1"}
    stdout = w["proc"].stdout
    assert "max |ONNX - PyTorch| logit difference" in stdout and "onnxruntime_int8" in stdout
    assert (
        "model.onnx: ONNX Runtime's transformer optimiser's graph (EmbedLayerNormalization 1, Attention 2, "
        "BiasGelu 2, SkipLayerNormalization 4); the exporter's plain graph is model.plain.onnx"
    ) in stdout
    assert "(model.onnx, model.int8.onnx, model.plain.onnx)" in stdout


def test_hugging_face_export_is_unchanged_and_exports_are_not_replaced_silently(world):
    w = world
    onnx_before = (w["out"] / "model.onnx").read_bytes()
    run(w, "export_model.py", *COMMON)  # the default: a Hugging Face folder
    hf = w["folder"] / "hf-model-4"
    assert (hf / "model.safetensors").is_file() and not (hf / "model.onnx").exists()
    record = json.loads((hf / "export.json").read_text())
    assert "format" not in record and "onnx" not in record and record["checkpoint"] == "model-4.pt"
    # what decided the export: the checkpoint's content and the class names its outputs carry
    import hashlib

    assert record["checkpoint_sha256"] == hashlib.sha256((w["folder"] / "model-4.pt").read_bytes()).hexdigest()
    assert record["label_names"] == list(json.loads((hf / "config.json").read_text())["id2label"].values())
    assert (w["out"] / "model.onnx").read_bytes() == onnx_before
    proc = run(w, "export_model.py", *COMMON, "--format", "onnx", check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "pass --overwrite" in proc.stderr
    proc = run(w, "export_model.py", *COMMON, "--quantize", "int8", check=False)
    assert proc.returncode == 2 and proc.stderr == "error: --quantize int8 needs --format onnx\n"


def test_an_export_beyond_the_tolerance_is_refused_and_leaves_nothing(world, monkeypatch):
    w = world
    real = onnx_export._export

    def perturbed(model, *args):  # the exported graph's classifier bias is off by 1e-2
        with torch.no_grad():
            model.classifier.bias += 1e-2
        try:
            real(model, *args)
        finally:
            with torch.no_grad():
                model.classifier.bias -= 1e-2

    monkeypatch.setattr(onnx_export, "_export", perturbed)
    out = w["base"] / "refused"
    proc = run(w, "export_model.py", *COMMON, "--ckpt", "2", "--format", "onnx", "--out", str(out), check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(
        "error: the ONNX model of model-2.pt differs from PyTorch beyond the tolerance "
        "0.0001 + 0.0001*|logit| on the 48 dev rows (max |logit difference| 0.01, first at "
        "row "
    ), proc.stderr
    assert proc.stderr.endswith("); no export was written\n")
    assert not out.exists() and not list(w["base"].glob(".tmp-*"))
    # --overwrite of an existing export that fails the check leaves the old export as it was
    before = {p.name: p.read_bytes() for p in w["out"].iterdir()}
    proc = run(w, "export_model.py", *COMMON, "--format", "onnx", "--overwrite", check=False)
    assert proc.returncode == 2 and "differs from PyTorch" in proc.stderr
    assert {p.name: p.read_bytes() for p in w["out"].iterdir()} == before
    assert not list(w["folder"].glob(".tmp-*"))


def test_a_fused_graph_beyond_the_tolerance_falls_back_to_the_plain_graph(world, monkeypatch):
    """The optimiser's graph is checked as the plain one is: one beyond the tolerance (its classifier bias moved
    here by 1e-2) is not kept; model.onnx is the plain graph, and a line says why."""
    import onnx
    from onnx import numpy_helper

    w = world
    real = onnx_export._optimize

    def off(src, dst, config):
        record = real(src, dst, config)
        model = onnx.load(str(dst))
        (bias,) = [t for t in model.graph.initializer if t.name.endswith("classifier.bias")]
        bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + np.float32(1e-2), bias.name))
        onnx.save(model, str(dst))
        return record

    monkeypatch.setattr(onnx_export, "_optimize", off)
    out = w["base"] / "fused-off"
    proc = run(
        w, "export_model.py", *COMMON, "--ckpt", "2", "--format", "onnx", "--out", str(out), "--max_examples", "16"
    )
    assert sorted(p.name for p in out.glob("*.onnx")) == ["model.onnx"]
    assert not FUSED & set(op_counts(out / "model.onnx"))  # the plain graph
    o = json.loads((out / "export.json").read_text())["onnx"]
    assert o["optimizer"]["fused"] is False and o["plain_file"] is None and o["max_abs_diff"] <= ATOL
    assert o["optimizer"]["fused_operators"]["Attention"] == 2
    assert o["optimizer"]["reason"].startswith(
        "its graph differs from PyTorch beyond the tolerance (max |logit difference| 0.01, first at row "
    )
    assert (
        "model.onnx: the exporter's plain graph, not ONNX Runtime's transformer optimiser's: its graph differs"
        in proc.stdout
    )


PAIR_LABELS = ["same", "different"]  # the model's output order: not sorted (sorted would put "different" first)


def write_pairs_task(w) -> list[int]:
    """A task of your own from the synthetic QQP rows: string labels in a non-sorted output order, ids that are not
    row numbers. Returns the dev rows' class indices (in PAIR_LABELS order)."""
    folder = w["data"] / "pairs"
    folder.mkdir(exist_ok=True)
    classes = []
    for split in ("train", "dev"):
        cells = [line.split("\t") for line in (w["data"] / "QQP" / f"{split}.tsv").read_text().splitlines()[1:]]
        rows = [(500 - 7 * i, c[3], c[4], "same" if c[5] == "1" else "different") for i, c in enumerate(cells)]
        (folder / f"{split}.tsv").write_text(
            "qid\tfirst\tsecond\tverdict\n" + "".join(f"{q}\t{a}\t{b}\t{v}\n" for q, a, b, v in rows)
        )
        if split == "dev":
            classes = [PAIR_LABELS.index(v) for *_, v in rows]
    (folder / "task.json").write_text(
        json.dumps(
            {
                "files": {"train": "train.tsv", "dev": "dev.tsv"},
                "text": "first",
                "text_pair": "second",
                "label": "verdict",
                "labels": PAIR_LABELS,
                "id": "qid",
            }
        )
    )
    return classes


def test_a_model_without_token_types_exports_two_inputs_and_max_examples_limits_the_rows(world, monkeypatch):
    """DeBERTa-v2 (no token types; attention the optimiser does not fuse) on a task of your own whose labels are not
    in sorted order: model.onnx is the plain graph (no model.plain.onnx) and a line says why; the export names the
    labels in the model's output order, and its accuracy is the ONNX model's against the file's labels."""
    from transformers import AutoConfig, AutoTokenizer

    w = world
    classes = write_pairs_task(w)
    pre = synthetic.write_tiny_model(w["base"] / "pre-deberta", "deberta-v2", num_layers=2)
    common = ["--experiment", "deb", "--model", "deberta-v2", "--task", "pairs"]
    run(
        w,
        "run_fine_tune.py",
        *common,
        "--ptrain_ver",
        str(pre),
        "--max_seq_len",
        str(SEQ),
        "--total_step",
        "2",
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
    )
    out = w["base"] / "deb-onnx"
    monkeypatch.delenv("TQDM_DISABLE")  # issue 32: the check's and the speed passes' bars on stderr
    proc = run(w, "export_model.py", *common, "--format", "onnx", "--out", str(out), "--max_examples", "20")
    monkeypatch.setenv("TQDM_DISABLE", "1")
    said = proc.stderr
    assert "PyTorch:   0%" in said and "0/20 [" in said and "ONNX Runtime:   0%" in said and "/1 [" in said
    assert sorted(p.name for p in out.glob("*.onnx")) == ["model.onnx"]
    assert not FUSED & set(op_counts(out / "model.onnx"))  # the plain graph
    assert (
        "model.onnx: the exporter's plain graph, not ONNX Runtime's transformer optimiser's: it fuses attention in "
        "0 of the 2 layers of this deberta-v2 model (ONNX Runtime applies its own graph optimisations when it "
        "loads the file)\n"
    ) in proc.stdout
    config = AutoConfig.from_pretrained(out)
    assert config.id2label == {0: "same", 1: "different"} and config.label2id == {"same": 0, "different": 1}
    sess = session(out / "model.onnx")
    assert [i.name for i in sess.get_inputs()] == ["input_ids", "attention_mask"]
    record = json.loads((out / "export.json").read_text())["onnx"]
    assert record["rows"] == 20 and record["int8_file"] is None and record["metrics"]["int8"] is None
    assert record["int8_agreement"] is None and record["examples_per_s"]["onnxruntime_int8"] is None
    assert not (out / "model.int8.onnx").exists()
    assert not record["optimizer"]["fused"] and record["plain_file"] is None
    assert record["max_abs_diff"] == record["plain_max_abs_diff"] <= ATOL
    pairs, _ = dev_rows(w)
    tokenizer = AutoTokenizer.from_pretrained(out)
    enc = encode(tokenizer, pairs[:7], padding=True)
    model = pytorch_model({"folder": w["exp"] / "deb_deberta-v2_pairs"}, step=2)
    with torch.no_grad():
        expected = model(
            input_ids=torch.from_numpy(enc["input_ids"]), attention_mask=torch.from_numpy(enc["attention_mask"])
        ).logits.numpy()
    np.testing.assert_allclose(ort_logits(sess, enc), expected, atol=ATOL, rtol=RTOL)
    # the first 20 dev rows one at a time: the accuracy export.json reports, against the labels' class indices
    preds = np.concatenate([ort_logits(sess, encode(tokenizer, [p])) for p in pairs[:20]]).argmax(1)
    assert record["metrics"]["onnx"]["accuracy"] == pytest.approx(float((preds == np.array(classes[:20])).mean()))


def test_int8_numbers_come_from_the_int8_model(world, monkeypatch):
    """export.json's int8 metrics and agreement are the int8 model's own. Its classifier bias is skewed here (after
    the real quantization) by +-100 towards the class the fp32 model predicts less often, so the int8 model predicts
    that class on every row, whatever its quantization noise: a record computed from the fp32 logits would differ."""
    import onnx
    from onnx import numpy_helper
    from transformers import AutoTokenizer

    w = world
    pairs, labels = dev_rows(w)
    tokenizer = AutoTokenizer.from_pretrained(w["out"])
    fp32 = np.concatenate([ort_logits(session(w["out"] / "model.onnx"), encode(tokenizer, [p])) for p in pairs])
    minority = 0 if (fp32.argmax(1) == 0).mean() <= 0.5 else 1
    delta = np.array([100.0, -100.0] if minority == 0 else [-100.0, 100.0], np.float32)
    real = onnx_export._quantize

    def skewed(src, dst):
        real(src, dst)
        model = onnx.load(str(dst))
        (bias,) = [t for t in model.graph.initializer if t.name.endswith("classifier.bias")]
        bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + delta, bias.name))
        onnx.save(model, str(dst))

    monkeypatch.setattr(onnx_export, "_quantize", skewed)
    out = w["base"] / "skewed-int8"
    run(w, "export_model.py", *COMMON, "--format", "onnx", "--quantize", "int8", "--out", str(out))
    int8 = np.concatenate([ort_logits(session(out / "model.int8.onnx"), encode(tokenizer, [p])) for p in pairs])
    assert (int8.argmax(1) == minority).all()
    o = json.loads((out / "export.json").read_text())["onnx"]
    assert o["int8_agreement"] == pytest.approx(float((fp32.argmax(1) == minority).mean()))
    # every row predicted `minority`: accuracy = its share of the labels; F1 of the duplicate class (1) = 2tp / (2tp
    # + fp + fn)
    tp, fp, fn = (
        int(((minority == 1) & (labels == 1)).sum()),
        int(((minority == 1) & (labels == 0)).sum()),
        int(((minority == 0) & (labels == 1)).sum()),
    )
    assert o["metrics"]["int8"] == pytest.approx(
        {"accuracy": float((labels == minority).mean()), "f1": 2 * tp / (2 * tp + fp + fn)}
    )
    assert o["metrics"]["onnx"]["accuracy"] == pytest.approx(float((fp32.argmax(1) == labels).mean()))
    assert o["metrics"]["int8"] != o["metrics"]["onnx"] and o["int8_agreement"] < 1  # the fixture tells them apart


FUSES = {"bert": True, "albert": False, "roberta": True, "distilbert": True, "electra": True}  # deberta-v2: above


def test_the_optimiser_fuses_bert_like_families_on_the_raw_mask_and_leaves_the_others(tmp_path):
    """Each family's tiny classifier (weights drawn wide, so the logits follow the inputs) through the exporter and
    the optimiser: BERT, RoBERTa, DistilBERT and ELECTRA get fused attention in every layer and fused skip
    LayerNorms, whose logits match PyTorch's on a mask with a hole (the raw mask: a mask read as right padding would
    attend the hole and drop the last tokens); ALBERT (one layer shared: fused once) keeps the plain graph, with the
    reason (DeBERTa-v2, never fused, in the export above)."""
    from transformers import AutoModelForSequenceClassification

    from fine_tune.models.families import FAMILIES

    assert set(FUSES) | {"deberta-v2"} == set(FAMILIES)
    seen = {}
    for family in FUSES:
        config = synthetic.tiny_config(family, num_layers=2, num_labels=3, initializer_range=0.5)
        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_config(
            config, attn_implementation=FAMILIES[family].attn_implementation
        ).eval()
        names = onnx_export.input_names(model)
        plain, fused = tmp_path / f"{family}.onnx", tmp_path / f"{family}.fused.onnx"
        onnx_export._export(model, names, plain, config.pad_token_id, SEQ)
        record = onnx_export._optimize(plain, fused, config)
        seen[family] = record["fused"]
        if not record["fused"]:
            assert not fused.exists() and record["reason"].startswith("it fuses attention in ")
            assert record["reason"].endswith(f" of the 2 layers of this {family} model")
            continue
        counts = op_counts(fused)
        assert counts["Attention"] == 2 and counts["SkipLayerNormalization"] == 4 and counts["Softmax"] == 0
        assert record["fused_operators"] == {k: counts[k] for k in record["fused_operators"]}  # as in the file
        assert record["fused_operators"]["Attention"] == 2 and record["reason"] is None
        g = torch.Generator().manual_seed(1)
        ids = torch.randint(len(synthetic.SPECIAL), config.vocab_size, (3, 12), generator=g)
        mask = torch.ones_like(ids)
        mask[0, 2:5] = 0  # a hole
        mask[1, 8:] = 0  # right padding
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": (torch.arange(12) >= 6).long().repeat(3, 1)}
        with torch.no_grad():
            expected = model(**{k: feed[k] for k in names}).logits.numpy()
            holeless = model(
                **{k: feed[k] for k in names if k != "attention_mask"}, attention_mask=torch.ones_like(mask)
            ).logits.numpy()
        got = session(fused).run(["logits"], {k: feed[k].numpy() for k in names})[0]
        np.testing.assert_allclose(got, expected, atol=ATOL, rtol=RTOL)
        assert np.abs(holeless[0] - expected[0]).max() > 100 * (ATOL + RTOL * np.abs(expected[0]).max())
    assert seen == FUSES
