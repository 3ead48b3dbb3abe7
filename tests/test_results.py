"""Results tables, checkpoint selection rules, seed grouping, the paired bootstrap, --ckpt best and export.

The table tests build experiment folders by hand (config.json, eval tables with known accuracies, checkpoints
with a known number of parameters), so every expected cell is computed here from those numbers. The
end-to-end test trains a tiny BERT, evaluates it, and checks ``generate_test_prediction.py --ckpt best`` and
``export_model.py`` against predictions recomputed with plain transformers.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch

from test_scripts_e2e import SEQ, TRAIN, qqp_rows, recompute_logits


def write_experiment(root: Path, folder: str, config: dict, evals: dict[str, list[tuple[int, float]]],
                     params: dict[int, int], preds: dict[str, dict[int, list[int]]] | None = None,
                     labels: dict[str, list[int]] | None = None) -> None:
    d = root / folder
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps(config))
    for split, rows in evals.items():
        table = {"rows": [{"ckpt": s, "accuracy": a, "examples_per_s": 100.0 + s} for s, a in rows],
                 "inference": {"examples_per_s": 123.0, "device": "cpu"}}
        (d / f"eval-{split}.json").write_text(json.dumps(table))
    for step, n in params.items():
        torch.save({"w": torch.zeros(n)}, d / f"model-{step}.pt")
    for split, by_step in (preds or {}).items():
        np.savez(d / f"eval-{split}-predictions.npz", idx=np.arange(len(labels[split])),
                 labels=np.array(labels[split]), **{f"pred_{s}": np.array(p) for s, p in by_step.items()})


BASE = {"task": "boolq", "model": "bert", "lr": 1e-4, "total_step": 20, "device_id": -1, "exp_root": "x"}


@pytest.fixture()
def table_root(tmp_path) -> Path:
    root = tmp_path / "exp"
    # two seeds of one config (names differ, device differs: still one group)
    write_experiment(root, "lad_s1_bert_boolq", {**BASE, "experiment": "lad_s1", "seed": 1},
                     {"train": [(10, 0.80), (20, 0.90)], "val": [(10, 0.70), (20, 0.65)]}, {10: 100, 20: 100})
    write_experiment(root, "lad_s2_bert_boolq", {**BASE, "experiment": "lad_s2", "seed": 2, "device_id": 0},
                     {"train": [(10, 0.85), (20, 0.95)], "val": [(10, 0.60), (20, 0.75)]}, {10: 100, 20: 100})
    # another learning rate, distilled from a teacher folder
    write_experiment(root, "pkd_bert_boolq", {**BASE, "experiment": "pkd", "seed": 1, "lr": 5e-5,
                                             "teacher_exp": "teacher", "tmodel": "bert", "tckpt": 5},
                     {"train": [(10, 0.70), (20, 0.70)], "val": [(10, 0.55), (20, 0.55)]}, {10: 100, 20: 100})
    # the teacher: only a checkpoint and a config (not evaluated: no row)
    write_experiment(root, "teacher_bert_boolq", {**BASE, "experiment": "teacher", "seed": 1}, {}, {5: 400})
    # another task: never in a boolq table
    write_experiment(root, "q_bert_qqp", {**BASE, "task": "qqp", "experiment": "q", "seed": 1},
                     {"dev": [(10, 0.99)]}, {10: 3})
    return root


def parse_table(text: str) -> tuple[list[str], dict[str, dict[str, str]]]:
    lines = [l for l in text.splitlines() if l.startswith("|")]
    header = lines[0].strip("|").split("|")
    rows = {}
    for line in lines[2:]:
        cells = line.strip("|").split("|")
        rows[cells[0]] = dict(zip(header, cells))
    return header, rows


def ms(values: list[float]) -> str:
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f} (n={len(values)})"


def test_table_best_on_reported_split_groups_seeds(run, table_root):
    out = table_root / "table.md"
    proc = run("results_table.py", "--task", "boolq", "--exp_root", str(table_root), "--out", str(out))
    header, rows = parse_table(proc.stdout)
    assert out.read_text() in proc.stdout
    assert "best checkpoint on the reported split (the original's rule)" in proc.stdout
    assert set(rows) == {"lad (seeds 1,2)", "pkd"}  # the teacher has no evaluation, q is qqp
    lad = rows["lad (seeds 1,2)"]
    # best val: seed 1 -> 0.70 at 10, seed 2 -> 0.75 at 20; best train: 0.90 at 20, 0.95 at 20
    assert lad["val acc"] == ms([0.70, 0.75]) and lad["val ckpt"] == "10,20"
    assert lad["train acc"] == ms([0.90, 0.95]) and lad["train ckpt"] == "20,20"
    # ties go to the later checkpoint
    assert rows["pkd"]["val ckpt"] == "20" and rows["pkd"]["val acc"] == "0.5500"
    # the fields that differ between rows having them (seed, name and device never count; teacher_exp is
    # only in one row)
    assert header[header.index("infer ex/s") + 1:] == ["lr"]
    assert lad["lr"] == "0.0001" and rows["pkd"]["lr"] == "5e-05"
    # parameters and size next to the teacher's: 100 vs 400 parameters
    assert rows["pkd"]["params"] == "100 (400, 0.25×)"
    assert lad["params"] == "100"
    assert rows["pkd"]["infer ex/s"] == "123 (cpu)"


def test_table_select_on_and_last(run, table_root):
    proc = run("results_table.py", "--task", "boolq", "--exp_root", str(table_root), "--select_on", "val")
    _, rows = parse_table(proc.stdout)
    lad = rows["lad (seeds 1,2)"]
    # checkpoints chosen on val (10 for seed 1, 20 for seed 2) and reported on train: 0.80, 0.95
    assert lad["train ckpt"] == "10,20" and lad["train acc"] == ms([0.80, 0.95])
    assert "train: best checkpoint on val" in proc.stdout
    proc = run("results_table.py", "--task", "boolq", "--exp_root", str(table_root), "--rule", "last",
               "--splits", "val")
    header, rows = parse_table(proc.stdout)
    assert "train acc" not in header
    assert rows["lad (seeds 1,2)"]["val acc"] == ms([0.65, 0.75])
    assert "last evaluated checkpoint" in proc.stdout


def test_table_bad_inputs(run, table_root, tmp_path):
    proc = run("results_table.py", "--task", "boolq", "--exp_root", str(tmp_path / "none"), check=False)
    assert proc.returncode == 2 and "folder not found" in proc.stderr
    proc = run("results_table.py", "--task", "boolq", "--exp_root", str(table_root), "--select_on", "dev",
               check=False)
    assert proc.returncode == 2 and "'dev' is not a boolq split" in proc.stderr


def bootstrap_case(n_plus: int, n_minus: int, n: int):
    """Correctness vectors whose paired differences are +1 on n_plus examples, -1 on n_minus, 0 elsewhere."""
    a = np.zeros(n, bool)
    b = np.zeros(n, bool)
    a[:n_plus] = True
    b[n_plus:n_plus + n_minus] = True
    a[n_plus + n_minus: n // 2 + n_plus] = True  # both right on some, both wrong on the rest
    b[n_plus + n_minus: n // 2 + n_plus] = True
    return a, b


def test_paired_bootstrap_matches_normal_interval():
    from fine_tune.results import paired_bootstrap

    n = 800
    a, b = bootstrap_case(120, 40, n)
    result = paired_bootstrap(a, b, resamples=20000, seed=1)
    d = a.astype(float) - b.astype(float)
    assert result.diff == pytest.approx(80 / n)
    se = d.std() / math.sqrt(n)  # plug-in standard error of the mean difference
    assert result.low == pytest.approx(d.mean() - 1.96 * se, abs=0.004)
    assert result.high == pytest.approx(d.mean() + 1.96 * se, abs=0.004)
    assert result.p_not_better < 0.001
    # no difference: the interval straddles 0 symmetrically
    same = paired_bootstrap(a, a.copy(), resamples=2000)
    assert same.low == same.high == 0.0


def test_compare_reads_selected_checkpoints(run, tmp_path):
    root = tmp_path / "exp"
    labels = [1, 0] * 200
    good = list(labels)
    worse = list(labels)
    for i in range(0, 60):
        worse[i] = 1 - worse[i]  # B wrong on the first 60 rows at its best checkpoint
    write_experiment(root, "a_bert_boolq", {**BASE, "experiment": "a", "seed": 1}, {"val": [(10, 0.9), (20, 1.0)]},
                     {20: 1}, {"val": {10: worse, 20: good}}, {"val": labels})
    write_experiment(root, "b_bert_boolq", {**BASE, "experiment": "b", "seed": 1}, {"val": [(10, 0.85), (20, 0.1)]},
                     {10: 1}, {"val": {10: worse, 20: good}}, {"val": labels})
    proc = run("results_table.py", "--task", "boolq", "--exp_root", str(root), "--compare", "a_bert_boolq",
               "b_bert_boolq", "--resamples", "2000")
    line = [l for l in proc.stdout.splitlines() if l.startswith("a_bert_boolq − b_bert_boolq")][0]
    assert "+0.1500" in line and "a_bert_boolq 1.0000, b_bert_boolq 0.8500" in line  # 60 / 400


def test_ckpt_best_submission_and_export_round_trip(run, data_root, exp_root, tiny_bert):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    run("run_fine_tune.py", "--experiment", "t", "--model", "bert", "--task", "qqp", "--ptrain_ver", str(tiny_bert),
        *TRAIN, "--batch_size", "16", "--total_step", "12", "--warmup_step", "2", "--ckpt_step", "4",
        "--log_step", "4", "--lr", "1e-3")
    proc = run("generate_test_prediction.py", "--experiment", "t", "--model", "bert", "--task", "qqp", "--ckpt",
               "best", check=False)
    assert proc.returncode == 2 and "no evaluation on 'dev'" in proc.stderr and "run_fine_tune_eval.py" in proc.stderr
    run("run_fine_tune_eval.py", "--experiment", "t", "--model", "bert", "--task", "qqp", "--dataset", "dev")
    exp = exp_root / "t_bert_qqp"
    table = json.loads((exp / "eval-dev.json").read_text())
    dev = qqp_rows(data_root, "dev")
    labels = np.array([r["label"] for r in dev])
    best = max(table["rows"], key=lambda r: (r["accuracy"], r["ckpt"]))["ckpt"]
    with np.load(exp / "eval-dev-predictions.npz") as z:
        assert sorted(z.files) == sorted(["idx", "labels"] + [f"pred_{s}" for s in (4, 8, 12)])
        np.testing.assert_array_equal(z["labels"], labels)
        for row in table["rows"]:  # each checkpoint's stored predictions give its accuracy
            assert (z[f"pred_{row['ckpt']}"] == labels).mean() == pytest.approx(row["accuracy"])
            np.testing.assert_array_equal(z[f"pred_{row['ckpt']}"], recompute_logits(exp, row["ckpt"], dev).argmax(1))

    proc = run("generate_test_prediction.py", "--experiment", "t", "--model", "bert", "--task", "qqp", "--ckpt", "best")
    assert f"model-{best}.pt (best dev accuracy" in proc.stdout
    test = qqp_rows(data_root, "test")
    submitted = [int(l.split("\t")[1]) for l in (exp / "QQP.tsv").read_text().splitlines()[1:]]
    assert submitted == recompute_logits(exp, best, test).argmax(1).tolist()

    out = exp_root.parent / "exported"
    run("export_model.py", "--experiment", "t", "--model", "bert", "--task", "qqp", "--ckpt", "best", "--out", str(out))
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.model_max_length == SEQ
    enc = tokenizer([r["text"] for r in dev], [r["text_pair"] for r in dev], truncation=True, padding=True,
                    return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits.numpy()
    np.testing.assert_allclose(logits, recompute_logits(exp, best, dev), atol=1e-5)
    with np.load(exp / "eval-dev-predictions.npz") as z:
        np.testing.assert_array_equal(logits.argmax(1), z[f"pred_{best}"])
    assert json.loads((out / "export.json").read_text())["checkpoint"] == f"model-{best}.pt"
    # an existing export is not replaced without --overwrite; a foreign folder never is
    proc = run("export_model.py", "--experiment", "t", "--model", "bert", "--task", "qqp", "--out", str(out), check=False)
    assert proc.returncode == 2 and "--overwrite" in proc.stderr
    (exp_root.parent / "foreign").mkdir()
    proc = run("export_model.py", "--experiment", "t", "--model", "bert", "--task", "qqp", "--out",
               str(exp_root.parent / "foreign"), "--overwrite", check=False)
    assert proc.returncode == 2 and "is not an export" in proc.stderr
