"""Evaluation during training (``--eval_dataset --eval_step``, engine/evaluation.py): the evaluations happen at the
right steps and equal run_fine_tune_eval.py's on the same checkpoints; a killed and resumed run neither repeats nor
loses one; ``--save_total_limit`` keeps the best checkpoint; ``--early_stop_patience`` stops after P evaluations
without improvement and the run counts as finished. (Two processes under torchrun: tests/test_distributed.py; bad
flags: tests/test_bad_inputs.py.)"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from test_resume import World, assert_bitwise_equal, one_thread, start_killed, wait_killed  # noqa: F401
from test_scripts_e2e import tb_scalars

RUN = ["--model", "bert", "--task", "qqp", "--total_step", "12", "--warmup_step", "1", "--ckpt_step", "4",
       "--log_step", "2", "--batch_size", "8", "--lr", "1e-3", "--max_seq_len", "24", "--seed", "3",
       "--eval_dataset", "dev", "--eval_step", "3"]
EVAL_STEPS = [3, 4, 6, 8, 9, 12]  # every 3 steps and at each checkpoint (4, 8, 12)


def read(path):
    return json.loads(path.read_text())


def test_evaluations_at_their_steps_equal_the_evaluation_script(run, tiny_bert, exp_root, monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE")  # issue 32: the bars, on stderr
    said = run("run_fine_tune.py", "--experiment", "ev", "--ptrain_ver", str(tiny_bert), *RUN).stderr
    monkeypatch.setenv("TQDM_DISABLE", "1")
    # each evaluation's bar (its rows) below the training bar, one line down and back up (\x1b[A), then cleared
    assert "ev_bert_qqp:   0%|" in said and "/12 [" in said
    for step in EVAL_STEPS:
        assert f"\revaluating dev at step {step}:   0%|" in said and "0/48 [" in said
    assert said.count("\x1b[A") >= 2 * len(EVAL_STEPS)
    folder = exp_root / "ev_bert_qqp"
    history = read(folder / "training-eval-dev.json")
    assert [r["step"] for r in history["rows"]] == EVAL_STEPS
    assert [r["checkpoint"] for r in history["rows"]] == [s % 4 == 0 for s in EVAL_STEPS]
    assert history["metric"] == "accuracy" and history["stopped_early_at"] is None
    scalars = tb_scalars(exp_root / "log" / "ev_bert_qqp")
    for tag, metric in (("qqp/dev/accuracy", "accuracy"), ("qqp/dev/f1_score", "f1")):
        assert [s for s, _ in scalars[tag]] == EVAL_STEPS
        np.testing.assert_allclose([v for _, v in scalars[tag]], [r[metric] for r in history["rows"]], rtol=1e-6)
    table = read(folder / "eval-dev.json")  # the checkpoints' table, where --ckpt best and results_table.py read
    assert [r["ckpt"] for r in table["rows"]] == [4, 8, 12]
    best = max(table["rows"], key=lambda r: (r["accuracy"], r["ckpt"]))
    assert history["best_checkpoint"] == {"ckpt": best["ckpt"], "value": best["accuracy"]}
    during = {r["ckpt"]: r for r in table["rows"]}
    # the evaluation script, afterwards, on the same checkpoints, computes the same numbers
    quiet = run("run_fine_tune_eval.py", "--experiment", "ev", "--model", "bert", "--task", "qqp", "--dataset", "dev")
    assert quiet.stderr == ""  # TQDM_DISABLE=1: no bar
    after = read(folder / "eval-dev.json")
    for row in after["rows"]:
        for metric in ("accuracy", "f1"):
            assert row[metric] == pytest.approx(during[row["ckpt"]][metric], abs=1e-12), (row["ckpt"], metric)
    preds = np.load(folder / "eval-dev-predictions.npz")
    assert sorted(k for k in preds.files if k.startswith("pred_")) == ["pred_12", "pred_4", "pred_8"]


def test_a_killed_run_neither_repeats_nor_loses_an_evaluation(run, tiny_bert, data_root, exp_root, one_thread):
    run("run_fine_tune.py", "--experiment", "ref", "--ptrain_ver", str(tiny_bert), *RUN)
    w = World(data_root, exp_root, tiny_bert)
    # killed as checkpoint 8 is written: it had evaluated steps 3, 4, 6 and 8 (8's files wait for model-8.pt, so
    # none cites a checkpoint that is not on disk), and resumes from checkpoint 4
    args = ["--experiment", "killed", "--ptrain_ver", str(tiny_bert), *RUN]
    wait_killed(start_killed("before:model-8.pt", "run_fine_tune.py", args, w))
    killed = exp_root / "killed_bert_qqp"
    assert [r["step"] for r in read(killed / "training-eval-dev.json")["rows"]] == [3, 4, 6]
    assert [r["ckpt"] for r in read(killed / "eval-dev.json")["rows"]] == [4]
    # resumed from checkpoint 4, the run first writes the evaluations it restored (killed right after that
    # write, before it evaluates again): the file no longer claims the killed run's steps 6 and 8
    wait_killed(start_killed("after:training-eval-dev.json", "run_fine_tune.py", args, w))
    assert [r["step"] for r in read(killed / "training-eval-dev.json")["rows"]] == [3, 4]
    assert [r["ckpt"] for r in read(killed / "eval-dev.json")["rows"]] == [4]
    resumed = run("run_fine_tune.py", *args)
    assert "resuming from model-4.pt" in resumed.stderr
    ref = exp_root / "ref_bert_qqp"
    def timeless(history):  # examples/s is a measurement of each run
        return {**history, "rows": [{k: v for k, v in r.items() if k != "examples_per_s"} for r in history["rows"]]}
    assert timeless(read(killed / "training-eval-dev.json")) == timeless(read(ref / "training-eval-dev.json"))
    a, b = read(ref / "eval-dev.json"), read(killed / "eval-dev.json")
    assert [r["ckpt"] for r in b["rows"]] == [4, 8, 12]
    for ra, rb in zip(a["rows"], b["rows"]):
        assert {k: v for k, v in ra.items() if k != "examples_per_s"} == \
               {k: v for k, v in rb.items() if k != "examples_per_s"}
    sa, sb = tb_scalars(exp_root / "log" / "ref_bert_qqp"), tb_scalars(exp_root / "log" / "killed_bert_qqp")
    assert sb["qqp/dev/accuracy"] == sa["qqp/dev/accuracy"]  # each step once, the same values
    assert_bitwise_equal(torch.load(ref / "model-12.pt"), torch.load(killed / "model-12.pt"))


def scripted(monkeypatch, accuracy: dict[int, float]):
    """The evaluation's accuracy replaced by ``accuracy[step]`` (the real evaluation still runs and its
    predictions are written): the run's choices can then be checked against a known sequence."""
    from fine_tune.evaluate import TrainingEvaluator

    real = TrainingEvaluator.evaluate

    def evaluate(self, model, step):
        return {**real(self, model, step), "accuracy": accuracy[step]}

    monkeypatch.setattr(TrainingEvaluator, "evaluate", evaluate)


def test_save_total_limit_keeps_the_best_checkpoint_and_the_newest(run, tiny_bert, exp_root, monkeypatch):
    scripted(monkeypatch, {2: 0.5, 4: 0.9, 6: 0.6, 8: 0.7, 10: 0.8, 12: 0.85})
    run("run_fine_tune.py", "--experiment", "keep", "--ptrain_ver", str(tiny_bert), *RUN[:-2], "--ckpt_step", "2",
        "--save_total_limit", "1")
    folder = exp_root / "keep_bert_qqp"
    assert sorted(p.name for p in folder.glob("model-*.pt")) == ["model-12.pt", "model-4.pt"]
    assert read(folder / "training-eval-dev.json")["best_checkpoint"] == {"ckpt": 4, "value": 0.9}
    assert read(folder / "eval-dev.json")["best"]["accuracy"] == {"ckpt": 4, "value": 0.9}
    out = run("generate_test_prediction.py", "--experiment", "keep", "--model", "bert", "--task", "qqp",
              "--dataset", "test", "--ckpt", "best", "--select_on", "dev")
    assert "model-4.pt" in out.stdout + out.stderr


def test_early_stopping_stops_after_p_evaluations_and_the_run_is_finished(run, tiny_bert, exp_root, monkeypatch):
    # evaluations at 3, 4, 6, 8, 9, 12: the best at 4, then 3 without improvement -> stop at step 9
    scripted(monkeypatch, {3: 0.5, 4: 0.9, 6: 0.6, 8: 0.9, 9: 0.7, 12: 0.99})
    args = ["--experiment", "stop", "--ptrain_ver", str(tiny_bert), *RUN, "--early_stop_patience", "3"]
    out = run("run_fine_tune.py", *args)
    assert "stopped early at step 9: no better dev accuracy in 3 evaluations" in out.stderr
    folder = exp_root / "stop_bert_qqp"
    assert sorted(int(p.stem.split("-")[1]) for p in folder.glob("model-*.pt")) == [4, 8, 9]  # 9: the last one
    history = read(folder / "training-eval-dev.json")
    assert [r["step"] for r in history["rows"]] == [3, 4, 6, 8, 9] and history["stopped_early_at"] == 9
    assert history["best_checkpoint"] == {"ckpt": 8, "value": 0.9}  # ties go to the later checkpoint
    assert read(folder / "early-stop.json")["step"] == 9
    assert [r["ckpt"] for r in read(folder / "eval-dev.json")["rows"]] == [4, 8, 9]
    again = run("run_fine_tune.py", *args)
    assert "already finished (stopped early at step 9" in again.stdout
    assert sorted(p.name for p in folder.glob("model-*.pt")) == ["model-4.pt", "model-8.pt", "model-9.pt"]

