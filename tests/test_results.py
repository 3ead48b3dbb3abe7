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


def write_experiment(
    root: Path,
    folder: str,
    config: dict,
    evals: dict[str, list[tuple[int, float]]],
    params: dict[int, int],
    preds: dict[str, dict[int, list[int]]] | None = None,
    labels: dict[str, list[int]] | None = None,
    rates: dict[str, float] | None = None,
) -> None:
    """``rates``: the inference examples/s of each split's table (default 123 for every split)."""
    d = root / folder
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps(config))
    for split, rows in evals.items():
        table = {
            "rows": [{"ckpt": s, "accuracy": a, "examples_per_s": 100.0 + s} for s, a in rows],
            "inference": {"examples_per_s": (rates or {}).get(split, 123.0), "device": "cpu"},
        }
        (d / f"eval-{split}.json").write_text(json.dumps(table))
    for step, n in params.items():
        torch.save({"w": torch.zeros(n)}, d / f"model-{step}.pt")
    for split, by_step in (preds or {}).items():
        np.savez(
            d / f"eval-{split}-predictions.npz",
            idx=np.arange(len(labels[split])),
            labels=np.array(labels[split]),
            **{f"pred_{s}": np.array(p) for s, p in by_step.items()},
        )


LAD = "lad (seeds 1,2,10)"  # the seed group's row
BASE = {"task": "boolq", "model": "bert", "lr": 1e-4, "total_step": 20, "device_id": -1, "exp_root": "x"}


@pytest.fixture()
def table_root(tmp_path) -> Path:
    """Three seeds of one config (seed 10's folder sorts before seed 1's by name: the row lists seeds in seed
    order), non-monotone curves whose best and last checkpoints differ per seed, inference rates that differ per
    split (the last reported split's count) and whose median is not their mean; a teacher whose latest checkpoint
    is not the one distilled from (--tckpt)."""
    root = tmp_path / "exp"
    # three seeds of one config (names differ, device differs: still one group)
    write_experiment(
        root,
        "lad_s1_bert_boolq",
        {**BASE, "experiment": "lad_s1", "seed": 1},
        {"train": [(10, 0.80), (20, 0.90)], "val": [(10, 0.70), (20, 0.65)]},
        {10: 100, 20: 100},
        rates={"train": 50.0, "val": 100.0},
    )
    write_experiment(
        root,
        "lad_s2_bert_boolq",
        {**BASE, "experiment": "lad_s2", "seed": 2, "device_id": 0},
        {"train": [(10, 0.85), (20, 0.95)], "val": [(10, 0.60), (20, 0.75)]},
        {10: 100, 20: 100},
        rates={"train": 50.0, "val": 110.0},
    )
    write_experiment(
        root,
        "lad_s10_bert_boolq",
        {**BASE, "experiment": "lad_s10", "seed": 10},
        {"train": [(10, 0.60), (20, 0.50)], "val": [(10, 0.62), (20, 0.66)]},
        {10: 100, 20: 100},
        rates={"train": 50.0, "val": 400.0},
    )
    # another learning rate, distilled from a teacher folder
    write_experiment(
        root,
        "pkd_bert_boolq",
        {**BASE, "experiment": "pkd", "seed": 1, "lr": 5e-5, "teacher_exp": "teacher", "tmodel": "bert", "tckpt": 5},
        {"train": [(10, 0.70), (20, 0.70)], "val": [(10, 0.55), (20, 0.55)]},
        {10: 100, 20: 100},
        rates={"train": 77.0},
    )
    # the teacher: only checkpoints and a config (not evaluated: no row); distilled from 5, not its latest (10)
    write_experiment(root, "teacher_bert_boolq", {**BASE, "experiment": "teacher", "seed": 1}, {}, {5: 400, 10: 800})
    # another task: never in a boolq table
    write_experiment(
        root, "q_bert_qqp", {**BASE, "task": "qqp", "experiment": "q", "seed": 1}, {"dev": [(10, 0.99)]}, {10: 3}
    )
    return root


def parse_table(text: str) -> tuple[list[str], dict[str, dict[str, str]]]:
    lines = [row for row in text.splitlines() if row.startswith("|")]
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
    assert set(rows) == {LAD, "pkd"}  # the teacher has no evaluation, q is qqp
    lad = rows[LAD]
    # best val: seed 1 -> 0.70 at 10, seed 2 -> 0.75 at 20, seed 10 -> 0.66 at 20; best train: 0.90 at 20,
    # 0.95 at 20, 0.60 at 10 (in seed order, not folder order); mean ± sample std (n - 1)
    assert lad["val acc"] == ms([0.70, 0.75, 0.66]) and lad["val ckpt (best)"] == "10,20,20"
    assert lad["train acc"] == ms([0.90, 0.95, 0.60]) and lad["train ckpt (best)"] == "20,20,10"
    population = f"{statistics.mean([0.70, 0.75, 0.66]):.4f} ± {statistics.pstdev([0.70, 0.75, 0.66]):.4f} (n=3)"
    assert lad["val acc"] != population
    # ties go to the later checkpoint
    assert rows["pkd"]["val ckpt (best)"] == "20" and rows["pkd"]["val acc"] == "0.5500"
    # the fields that differ between rows having them (seed, name and device never count; teacher_exp is
    # only in one row)
    assert lad["differs"] == "lr=0.0001" and rows["pkd"]["differs"] == "lr=5e-05"
    assert json.loads(out.with_suffix(".json").read_text())["hyper"] == ["lr"]
    # parameters next to the teacher's checkpoint distilled from (--tckpt 5): 100 vs 400 parameters
    assert (rows["pkd"]["params"], rows["pkd"]["params ÷ teacher"], rows["pkd"]["teacher"]) == (
        "100",
        "0.25×",
        "teacher_bert_boolq/model-5.pt",
    )
    assert lad["params"] == "100" and lad["params ÷ teacher"] == "—"
    # the inference rate of the last reported split (val), the median over the seeds (100, 110, 400)
    speed = "ex/s (PyTorch, evaluation, cpu)"
    assert header[-2:] == [speed, "differs"] and rows["pkd"][speed] == "123"
    assert lad[speed] == f"{statistics.median([100.0, 110.0, 400.0]):.0f}" == "110"


def test_table_select_on_and_last(run, table_root):
    proc = run("results_table.py", "--task", "boolq", "--exp_root", str(table_root), "--select_on", "val")
    _, rows = parse_table(proc.stdout)
    lad = rows[LAD]
    # checkpoints chosen on val (10 for seed 1, 20 for seeds 2 and 10) and reported on train: 0.80, 0.95, 0.50
    assert lad["train ckpt (best on val)"] == "10,20,20" and lad["train acc"] == ms([0.80, 0.95, 0.50])
    assert "train: best checkpoint on val" in proc.stdout
    proc = run(
        "results_table.py", "--task", "boolq", "--exp_root", str(table_root), "--rule", "last", "--splits", "val"
    )
    header, rows = parse_table(proc.stdout)
    assert "train acc" not in header
    # the last evaluated checkpoint (20), not the best nor the first: 0.65, 0.75, 0.66
    assert rows[LAD]["val acc"] == ms([0.65, 0.75, 0.66]) and rows[LAD]["val ckpt (last)"] == "20,20,20"
    assert "last evaluated checkpoint" in proc.stdout


def test_table_bad_inputs(run, table_root, tmp_path):
    proc = run("results_table.py", "--task", "boolq", "--exp_root", str(tmp_path / "none"), check=False)
    assert proc.returncode == 2 and "folder not found" in proc.stderr
    proc = run("results_table.py", "--task", "boolq", "--exp_root", str(table_root), "--select_on", "dev", check=False)
    assert proc.returncode == 2 and "'dev' is not a boolq split" in proc.stderr


def bootstrap_case(n_plus: int, n_minus: int, n: int):
    """Correctness vectors whose paired differences are +1 on n_plus examples, -1 on n_minus, 0 elsewhere."""
    a = np.zeros(n, bool)
    b = np.zeros(n, bool)
    a[:n_plus] = True
    b[n_plus : n_plus + n_minus] = True
    a[n_plus + n_minus : n // 2 + n_plus] = True  # both right on some, both wrong on the rest
    b[n_plus + n_minus : n // 2 + n_plus] = True
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
    # on train the other way round: A best at 10 (worse), B at 20 (good)
    write_experiment(
        root,
        "a_bert_boolq",
        {**BASE, "experiment": "a", "seed": 1},
        {"val": [(10, 0.9), (20, 1.0)], "train": [(10, 0.7), (20, 0.6)]},
        {10: 1, 20: 1},
        {"val": {10: worse, 20: good}, "train": {10: worse, 20: good}},
        {"val": labels, "train": labels},
    )
    write_experiment(
        root,
        "b_bert_boolq",
        {**BASE, "experiment": "b", "seed": 1},
        {"val": [(10, 0.85), (20, 0.1)], "train": [(10, 0.6), (20, 0.7)]},
        {10: 1, 20: 1},
        {"val": {10: worse, 20: good}, "train": {10: worse, 20: good}},
        {"val": labels, "train": labels},
    )
    proc = run(
        "results_table.py",
        "--task",
        "boolq",
        "--exp_root",
        str(root),
        "--compare",
        "a_bert_boolq",
        "b_bert_boolq",
        "--resamples",
        "2000",
        "--bootstrap_seed",
        "1",
    )
    line = [printed for printed in proc.stdout.splitlines() if printed.startswith("a_bert_boolq − b_bert_boolq")][0]
    assert "+0.1500" in line and "a_bert_boolq 1.0000, b_bert_boolq 0.8500" in line  # 60 / 400
    # --resamples and --bootstrap_seed reach the bootstrap: the interval of those resamples of that seed
    from fine_tune.results import paired_bootstrap

    correct_a, correct_b = np.array(good) == labels, np.array(worse) == labels
    want = paired_bootstrap(correct_a, correct_b, resamples=2000, seed=1, split="val")
    assert line == want.describe("a_bert_boolq", "b_bert_boolq") and "2000 resamples of n=400" in line
    seed0 = paired_bootstrap(correct_a, correct_b, resamples=2000, seed=0)
    assert (want.low, want.high) != (seed0.low, seed0.high)  # the seed shows (seed 0 is the default)
    # --compare_split train: each at its best train checkpoint (A 10, B 20)
    proc = run(
        "results_table.py",
        "--task",
        "boolq",
        "--exp_root",
        str(root),
        "--compare",
        "a_bert_boolq",
        "b_bert_boolq",
        "--resamples",
        "200",
        "--compare_split",
        "train",
    )
    line = [printed for printed in proc.stdout.splitlines() if printed.startswith("a_bert_boolq − b_bert_boolq")][0]
    assert line.startswith("a_bert_boolq − b_bert_boolq accuracy on train: -0.1500 ")
    assert "a_bert_boolq 0.8500, b_bert_boolq 1.0000" in line


def test_paired_bootstrap_counts_ties_as_not_better():
    """One example of ten separates A from B: a resample without it (probability 0.9^10) has difference 0, which
    counts as 'not better'; the interval's ends are 0 and 3/10 (the 97.5% quantile of Binomial(10, 0.1) / 10)."""
    from fine_tune.results import paired_bootstrap

    a, b = np.zeros(10, bool), np.zeros(10, bool)
    a[0] = True
    result = paired_bootstrap(a, b, resamples=20000, seed=5)
    assert result.diff == pytest.approx(0.1) and (result.acc_a, result.acc_b) == (0.1, 0.0)
    assert result.p_not_better == pytest.approx(0.9**10, abs=0.015)
    assert result.low == 0.0 and result.high == pytest.approx(0.3)


COLA = {**BASE, "task": "cola"}


def write_cola(
    root: Path,
    folder: str,
    rows: list[tuple[int, float, float]],
    preds: dict[int, list[int]] | None = None,
    labels: list[int] | None = None,
) -> Path:
    """A CoLA experiment: MCC is the main metric, accuracy the second; ``rows``: (ckpt, mcc, accuracy)."""
    d = root / folder
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({**COLA, "experiment": folder.split("_")[0], "seed": 1}))
    table = {
        "task": "cola",
        "rows": [{"ckpt": c, "mcc": m, "accuracy": a} for c, m, a in rows],
        "inference": {"examples_per_s": 50.0, "device": "cpu"},
    }
    (d / "eval-dev.json").write_text(json.dumps(table))
    for c, _, _ in rows:
        torch.save({"w": torch.zeros(10)}, d / f"model-{c}.pt")
    if preds is not None:
        np.savez(
            d / "eval-dev-predictions.npz",
            idx=np.arange(len(labels)) * 3 + 100,
            labels=np.array(labels),
            **{f"pred_{s}": np.array(p) for s, p in preds.items()},
        )
    return d


def mcc(labels, preds) -> float:
    """Matthews correlation from the confusion counts (positive class 1)."""
    y, p = np.asarray(labels), np.asarray(preds)
    tp, tn = float(((p == 1) & (y == 1)).sum()), float(((p == 0) & (y == 0)).sum())
    fp, fn = float(((p == 1) & (y == 0)).sum()), float(((p == 0) & (y == 1)).sum())
    return (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))


def test_main_metric_chooses_the_checkpoint_for_tables_ckpt_best_and_compare(run, tmp_path):
    """CoLA's main metric is MCC: the best checkpoint is the best MCC (ties to the later one), not the best
    accuracy nor the last; --compare bootstraps the MCC difference."""
    from fine_tune.experiment import ExperimentDir
    from fine_tune.selection import resolve_ckpt
    from fine_tune.tasks import get_task

    root = tmp_path / "exp"
    # MCC best at 20 and 30 (a tie: 30), accuracy best at 40 (also the last)
    curve = [(10, 0.30, 0.80), (20, 0.50, 0.70), (30, 0.50, 0.60), (40, 0.20, 0.85)]
    write_cola(root, "c_bert_cola", curve)
    exp = ExperimentDir(root, "c_bert_cola")
    step, label = resolve_ckpt(exp, "best", "dev", task=get_task("cola"), model="bert", experiment="c")
    assert step == 30 and label == "model-30.pt (best dev mcc 0.5000)"
    assert resolve_ckpt(exp, "last", "dev", task=get_task("cola"), model="bert", experiment="c")[0] == 40
    proc = run("results_table.py", "--task", "cola", "--exp_root", str(root), "--splits", "dev")
    header, rows = parse_table(proc.stdout)
    assert header[:6] == ["experiment", "method", "model", "dev MCC", "dev acc", "dev ckpt (best)"]
    assert (rows["c"]["dev MCC"], rows["c"]["dev acc"], rows["c"]["dev ckpt (best)"]) == ("0.5000", "0.6000", "30")

    # --compare on MCC: labels unbalanced (1 in 3 is 0); A errs on 6 rows of class 0, B on 6 of class 1
    labels = [0 if i % 3 == 0 else 1 for i in range(60)]
    pa, pb = list(labels), list(labels)
    for i in range(0, 18, 3):
        pa[i] = 1
    for i in (1, 2, 4, 5, 7, 8):
        pb[i] = 0
    other = tmp_path / "exp2"
    write_cola(other, "a_bert_cola", [(10, 0.1, 0.1), (20, 0.9, 0.9)], {10: pb, 20: pa}, labels)
    write_cola(other, "b_bert_cola", [(10, 0.9, 0.9), (20, 0.1, 0.1)], {10: pb, 20: pa}, labels)
    # the same accuracy (0.9), different MCC: A at its best checkpoint (20), B at its (10)
    assert np.mean(np.array(pa) == labels) == np.mean(np.array(pb) == labels) and mcc(labels, pa) != mcc(labels, pb)
    proc = run(
        "results_table.py",
        "--task",
        "cola",
        "--exp_root",
        str(other),
        "--compare",
        "a_bert_cola",
        "b_bert_cola",
        "--resamples",
        "200",
    )
    line = [printed for printed in proc.stdout.splitlines() if printed.startswith("a_bert_cola − b_bert_cola")][0]
    assert line.startswith(f"a_bert_cola − b_bert_cola mcc on dev: {mcc(labels, pa) - mcc(labels, pb):+.4f} ")
    assert f"a_bert_cola {mcc(labels, pa):.4f}, b_bert_cola {mcc(labels, pb):.4f}" in line


def renumber_ids(data_root: Path, split: str) -> None:
    """Give a QQP split ids that are not row numbers (descending, steps of 13): the predictions and the submission
    must carry the file's ids."""
    path = data_root / "QQP" / f"{split}.tsv"
    lines = path.read_text(encoding="utf-8").splitlines()
    body = [f"{7000 - 13 * i}\t{line.split(chr(9), 1)[1]}" for i, line in enumerate(lines[1:])]
    path.write_text("\n".join([lines[0], *body]) + "\n", encoding="utf-8")


def test_ckpt_best_submission_and_export_round_trip(run, data_root, exp_root, tiny_bert):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    for split in ("dev", "test"):
        renumber_ids(data_root, split)
    run(
        "run_fine_tune.py",
        "--experiment",
        "t",
        "--model",
        "bert",
        "--task",
        "qqp",
        "--ptrain_ver",
        str(tiny_bert),
        *TRAIN,
        "--batch_size",
        "16",
        "--total_step",
        "12",
        "--warmup_step",
        "2",
        "--ckpt_step",
        "4",
        "--log_step",
        "4",
        "--lr",
        "1e-3",
    )
    proc = run(
        "generate_test_prediction.py",
        "--experiment",
        "t",
        "--model",
        "bert",
        "--task",
        "qqp",
        "--ckpt",
        "best",
        check=False,
    )
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
        np.testing.assert_array_equal(z["idx"], [r["idx"] for r in dev])  # the file's ids, in file order
        assert z["idx"][0] != 0
        for row in table["rows"]:  # each checkpoint's stored predictions give its accuracy
            assert (z[f"pred_{row['ckpt']}"] == labels).mean() == pytest.approx(row["accuracy"])
            np.testing.assert_array_equal(z[f"pred_{row['ckpt']}"], recompute_logits(exp, row["ckpt"], dev).argmax(1))

    proc = run("generate_test_prediction.py", "--experiment", "t", "--model", "bert", "--task", "qqp", "--ckpt", "best")
    assert f"model-{best}.pt (best dev accuracy" in proc.stdout
    test = qqp_rows(data_root, "test")
    cols = [row.split("\t") for row in (exp / "QQP.tsv").read_text().splitlines()[1:]]
    assert [int(c[0]) for c in cols] == [r["idx"] for r in test] and cols[0][0] != "0"  # the file's ids
    assert [int(c[1]) for c in cols] == recompute_logits(exp, best, test).argmax(1).tolist()
    # --select_on reaches --ckpt best: an evaluation table of train (written here) whose best is another checkpoint
    other = min(s for s in (4, 8, 12) if s != best)
    (exp / "eval-train.json").write_text(
        json.dumps(
            {
                "task": "qqp",
                "rows": [{"ckpt": s, "accuracy": 0.9 if s == other else 0.5, "f1": 0.5} for s in (4, 8, 12)],
            }
        )
    )
    proc = run(
        "generate_test_prediction.py",
        "--experiment",
        "t",
        "--model",
        "bert",
        "--task",
        "qqp",
        "--ckpt",
        "best",
        "--select_on",
        "train",
    )
    assert f"model-{other}.pt (best train accuracy 0.9000)" in proc.stdout
    cols = [row.split("\t") for row in (exp / "QQP.tsv").read_text().splitlines()[1:]]
    assert [int(c[1]) for c in cols] == recompute_logits(exp, other, test).argmax(1).tolist()

    out = exp_root.parent / "exported"
    run("export_model.py", "--experiment", "t", "--model", "bert", "--task", "qqp", "--ckpt", "best", "--out", str(out))
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.model_max_length == SEQ
    enc = tokenizer(
        [r["text"] for r in dev], [r["text_pair"] for r in dev], truncation=True, padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        logits = model(**enc).logits.numpy()
    np.testing.assert_allclose(logits, recompute_logits(exp, best, dev), atol=1e-5)
    with np.load(exp / "eval-dev-predictions.npz") as z:
        np.testing.assert_array_equal(logits.argmax(1), z[f"pred_{best}"])
    assert json.loads((out / "export.json").read_text())["checkpoint"] == f"model-{best}.pt"
    # an existing export is not replaced without --overwrite; a foreign folder never is
    proc = run(
        "export_model.py", "--experiment", "t", "--model", "bert", "--task", "qqp", "--out", str(out), check=False
    )
    assert proc.returncode == 2 and "--overwrite" in proc.stderr
    (exp_root.parent / "foreign").mkdir()
    proc = run(
        "export_model.py",
        "--experiment",
        "t",
        "--model",
        "bert",
        "--task",
        "qqp",
        "--out",
        str(exp_root.parent / "foreign"),
        "--overwrite",
        check=False,
    )
    assert proc.returncode == 2 and "is not an export" in proc.stderr
