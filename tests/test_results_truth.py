"""Results that are what they say (issue 29): a seed counts once however many runs of one config it has, and no
number cites a checkpoint that is not on disk (the results table, ``--ckpt best``, ``--compare``; the engine
writes a checkpoint's evaluation table only once the checkpoint is on disk).

The tables are built from hand-made experiment folders (tests/test_results.py's builder) whose numbers differ run
by run, so a wrong choice of run, a seed counted twice or a cited absent checkpoint changes a cell."""

from __future__ import annotations

import csv
import json
import os
import re
import statistics
from pathlib import Path

import pytest
from test_never_lose_a_run import killed_after, tune
from test_results import BASE, parse_table, write_experiment


def evaluated(root: Path, folder: str, seed: int, val: list[tuple[int, float]], when: int, **config) -> None:
    """An experiment of BASE's config (plus ``config``) with seed ``seed``, evaluated on val at ``when`` (the
    evaluation table's modification time, seconds)."""
    write_experiment(
        root,
        folder,
        {**BASE, "experiment": folder.split("_bert")[0], "seed": seed, **config},
        {"val": val},
        {s: 10 for s, _ in val},
    )
    os.utime(root / folder / "eval-val.json", (when, when))


def table(run, root: Path, *args: str) -> tuple[str, dict, dict]:
    out = root / "t.md"
    proc = run("results_table.py", "--task", "boolq", "--exp_root", str(root), "--out", str(out), *args)
    _, rows = parse_table(proc.stdout)
    # "val ckpt (best)", "val ckpt (last)": the rule in the header; here each split's checkpoints as "val ckpt"
    rows = {g: {re.sub(r" ckpt \(.*\)$", " ckpt", k): v for k, v in r.items()} for g, r in rows.items()}
    return proc.stdout, rows, json.loads(out.with_suffix(".json").read_text())


def test_a_seed_counts_once_however_many_runs_it_has(run, tmp_path):
    root = tmp_path / "exp"
    # one config, seed 1 three times (the newest evaluated is the middle folder name: neither the first nor the
    # last), seeds 2 and 3 once; every run's accuracy differs
    for folder, acc, when in (
        ("lad_s1a_bert_boolq", 0.70, 1000),
        ("lad_s1b_bert_boolq", 0.80, 3000),
        ("lad_s1c_bert_boolq", 0.90, 2000),
    ):
        evaluated(root, folder, 1, [(10, acc)], when)
    evaluated(root, "lad_s2_bert_boolq", 2, [(10, 0.60)], 1500)
    evaluated(root, "lad_s3_bert_boolq", 3, [(10, 0.50)], 1500)
    # another config (lr): seven runs of seed 42, the 4th by name evaluated last
    for i, acc in enumerate((0.71, 0.72, 0.73, 0.74, 0.75, 0.76, 0.77)):
        evaluated(root, f"rep{i}_bert_boolq", 42, [(10, acc)], 5000 + (100 if i == 3 else i), lr=5e-5)
    text, rows, data = table(run, root)
    lad = rows["lad (seeds 1,2,3; 3 runs of seed 1)"]
    # n = 3 seeds, seed 1 as its newest evaluated run (0.80): not 5 runs, not the mean of seed 1's runs
    values = [0.80, 0.60, 0.50]
    assert lad["val acc"] == f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f} (n=3)"
    rep = rows["rep3 (7 runs of seed 42)"]  # one seed: its value, no ± 0.0000 (n=7)
    assert rep["val acc"] == "0.7400" and rep["val ckpt"] == "10"
    record = next(r for r in data["rows"] if r["group"].startswith("lad "))
    assert record["members"] == ["lad_s1b_bert_boolq", "lad_s2_bert_boolq", "lad_s3_bert_boolq"]
    assert record["seeds"] == [1, 2, 3] and record["splits"]["val"]["metrics"]["accuracy"]["values"] == values
    assert record["folded"] == {
        "lad_s1b_bert_boolq": ["lad_s1a_bert_boolq", "lad_s1b_bert_boolq", "lad_s1c_bert_boolq"]
    }
    # the table says so: its caption, and a note naming the runs counted once
    assert "each seed once" in text
    note = (
        "- note: lad (seeds 1,2,3; 3 runs of seed 1): seed 1: 3 runs (lad_s1a_bert_boolq, lad_s1b_bert_boolq, "
        "lad_s1c_bert_boolq) count once, as lad_s1b_bert_boolq (the newest evaluated)"
    )
    assert note in text.splitlines() and any(n in note for n in data["notes"])


def test_an_evaluation_whose_checkpoint_is_absent_is_skipped_and_said(run, tmp_path):
    from fine_tune.errors import UserError
    from fine_tune.experiment import ExperimentDir
    from fine_tune.selection import resolve_ckpt
    from fine_tune.tasks import TASKS

    root = tmp_path / "exp"
    # a kill between the evaluation table and its checkpoint: val evaluated at 20 (the best, and the last), no
    # model-20.pt on disk
    write_experiment(
        root,
        "k_bert_boolq",
        {**BASE, "experiment": "k", "seed": 1},
        {"val": [(10, 0.60), (20, 0.90)], "train": [(10, 0.55), (20, 0.95)]},
        {10: 10},
    )
    for rule in ([], ["--rule", "last"], ["--select_on", "val"]):
        text, rows, data = table(run, root, *rule)
        assert rows["k"]["val acc"] == "0.6000" and rows["k"]["val ckpt"] == "10", rule
        assert rows["k"]["train ckpt"] == "10" and rows["k"]["train acc"] == "0.5500", rule
        assert "20" not in rows["k"]["val ckpt"] + rows["k"]["train ckpt"]
        note = "k_bert_boolq: val evaluation of model-20.pt skipped: not on disk"
        assert any(line.startswith(f"- note: {note}") for line in text.splitlines())
        assert any(n.startswith(note) for n in data["notes"])
    # --ckpt best (prediction, export, logits) chooses among the checkpoints on disk, and says what it skipped
    exp = ExperimentDir(root, "k_bert_boolq")
    step, label = resolve_ckpt(exp, "best", "val", task=TASKS["boolq"], model="bert", experiment="k")
    assert step == 10 and "val evaluation of model-20.pt skipped" in label
    (root / "k_bert_boolq" / "model-10.pt").unlink()
    with pytest.raises(UserError, match="no checkpoint evaluated on val is on disk"):
        resolve_ckpt(exp, "best", "val", task=TASKS["boolq"], model="bert", experiment="k")


def test_compare_skips_an_absent_checkpoint(run, tmp_path):
    root = tmp_path / "exp"
    labels = [1, 0] * 20
    wrong = [1 - x for x in labels]
    # A's best val evaluation (20) has no checkpoint on disk: A is compared at 10 (all wrong), not at 20 (all right)
    write_experiment(
        root,
        "a_bert_boolq",
        {**BASE, "experiment": "a", "seed": 1},
        {"val": [(10, 0.0), (20, 1.0)]},
        {10: 1},
        {"val": {10: wrong, 20: labels}},
        {"val": labels},
    )
    write_experiment(
        root,
        "b_bert_boolq",
        {**BASE, "experiment": "b", "seed": 2},
        {"val": [(10, 1.0)]},
        {10: 1},
        {"val": {10: labels}},
        {"val": labels},
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
        "50",
    )
    line = [printed for printed in proc.stdout.splitlines() if printed.startswith("a_bert_boolq − b_bert_boolq")][0]
    assert "a_bert_boolq 0.0000, b_bert_boolq 1.0000" in line


def test_the_engine_writes_an_evaluation_table_after_its_checkpoint(run, tiny_bert, data_root, exp_root):
    # killed right after the first eval-dev.json of a run evaluating during training: every checkpoint it cites
    # is on disk (the engine wrote the table before the checkpoint, and a kill in between left a table citing an
    # absent one)
    killed_after(
        "after:eval-dev.json", "run_fine_tune.py", tune("e", tiny_bert, "--eval_dataset", "dev"), data_root, exp_root
    )
    folder = exp_root / "e_bert_qqp"
    cited = [r["ckpt"] for r in json.loads((folder / "eval-dev.json").read_text())["rows"]]
    assert cited == [2] and (folder / "model-2.pt").is_file()
    run("run_fine_tune.py", *tune("e", tiny_bert, "--eval_dataset", "dev"))  # resumes and finishes
    assert [r["ckpt"] for r in json.loads((folder / "eval-dev.json").read_text())["rows"]] == [2, 4]


def test_runs_on_other_rows_are_never_pooled(run, tmp_path):
    root = tmp_path / "exp"
    # F2: one config on 8 training rows (seed 1), the others on every row; seed 2 twice, its newer run evaluated on
    # the first 5 val rows only; seed 4 evaluated with a --max_examples above the split's 24 rows (the whole split)
    for folder, seed, acc, when, train_rows, val_rows in (
        ("me_s1_bert_boolq", 1, 0.50, 1000, 8, None),
        ("me_s2_bert_boolq", 2, 0.60, 1000, None, None),
        ("me_s3_bert_boolq", 2, 0.80, 2000, None, (5, 5)),
        ("me_s4_bert_boolq", 3, 0.70, 1000, None, None),
        ("me_s5_bert_boolq", 4, 0.65, 1000, None, (100, 24)),
    ):
        evaluated(root, folder, seed, [(10, acc)], when, max_examples=train_rows)
        path = root / folder / "eval-val.json"
        limit, rows = val_rows or (None, 24)
        path.write_text(json.dumps({**json.loads(path.read_text()), "max_examples": limit, "num_rows": rows}))
        os.utime(path, (when, when))
    text, rows, data = table(run, root)
    # the 8-row training run is another config; the subset evaluation is a row of its own, marked, never folded
    assert rows["me_s1"]["val acc"] == "0.5000"
    assert rows["me_s1"]["differs"] == "max_examples=8" and rows["me_s3"]["differs"] == "max_examples=—"  # not None
    values = [0.60, 0.70, 0.65]
    assert (
        rows["me (seeds 2,3,4)"]["val acc"] == f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f} (n=3)"
    )
    assert rows["me_s3"]["val acc"] == "0.8000 (first 5 rows)"
    assert "runs of seed" not in text and "count once" not in text
    by_group = {r["group"]: r for r in data["rows"]}
    assert by_group["me_s3"]["splits"]["val"]["subset_rows"] == 5
    assert by_group["me (seeds 2,3,4)"]["splits"]["val"]["subset_rows"] is None
    assert by_group["me (seeds 2,3,4)"]["folded"] == {}
    csv_rows = list(csv.DictReader((root / "t.csv").open()))
    assert {r["group"]: r["val subset rows"] for r in csv_rows} == {"me_s1": "", "me (seeds 2,3,4)": "", "me_s3": "5"}
