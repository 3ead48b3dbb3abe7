"""Evaluation during training (``--eval_dataset --eval_step``, engine/evaluation.py): the evaluations happen at the
right steps and equal run_fine_tune_eval.py's on the same checkpoints; a killed and resumed run neither repeats nor
loses one; ``--save_total_limit`` keeps the best checkpoint; ``--early_stop_patience`` stops after P evaluations
without improvement and the run counts as finished. (Two processes under torchrun: tests/test_distributed.py; bad
flags: tests/test_bad_inputs.py.)

Experiment tracking (``--report_to``, fine_tune/reporting.py) rides on these runs: MLflow's real local store read
back with its client (parameters, every scalar against TensorBoard's, final metrics; the evaluation script and a
killed, resumed run continue the same MLflow run, each step once); ``--report_to none`` writes no TensorBoard
files. W&B: tests/test_reporting.py."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch
from test_resume import World, assert_bitwise_equal, one_thread, start_killed, wait_killed  # noqa: F401
from test_scripts_e2e import tb_scalars

# the schedule in epochs (issue 32): one epoch of 90 rows (not a multiple of the batch) in batches of 8 is
# ceil(90 / 8) = 12 optimizer steps, warmup ceil(0.05 x 12) = 1 step; every run here (a killed and resumed one too)
# resolves it so
RUN = [
    "--model",
    "bert",
    "--task",
    "qqp",
    "--num_epochs",
    "1",
    "--warmup_ratio",
    "0.05",
    "--max_examples",
    "90",
    "--ckpt_step",
    "4",
    "--log_step",
    "2",
    "--batch_size",
    "8",
    "--lr",
    "1e-3",
    "--max_seq_len",
    "24",
    "--seed",
    "3",
    "--eval_dataset",
    "dev",
    "--eval_step",
    "3",
]
STEPS, WARMUP = math.ceil(90 / 8), math.ceil(0.05 * math.ceil(90 / 8))
EVAL_STEPS = [3, 4, 6, 8, 9, 12]  # every 3 steps and at each checkpoint (4, 8, 12)


def read(path):
    return json.loads(path.read_text())


@pytest.fixture()
def mlflow_store(exp_root, monkeypatch):
    """The experiment root's own MLflow store (no MLFLOW_TRACKING_URI), and a reader of a run's metrics in it."""
    pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    def metrics(folder):
        """(the run, {metric: [(step, value)] in step order}) of the MLflow run the folder's mlflow-run.json names."""
        from mlflow.tracking import MlflowClient

        stored = read(folder / "mlflow-run.json")
        assert stored["tracking_uri"] == (exp_root / "mlruns").resolve().as_uri()  # the local file store
        os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"  # (MLflow 3's opt-in to its file store; monkeypatch undoes)
        client = MlflowClient(stored["tracking_uri"])
        run = client.get_run(stored["run_id"])
        return run, {
            k: sorted(((m.step, m.value) for m in client.get_metric_history(run.info.run_id, k)), key=lambda sv: sv[0])
            for k in run.data.metrics
        }

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "false")  # the toolkit opts in for its own store only
    return metrics


def same_as_tensorboard(tracked: dict, scalars: dict) -> None:
    """Every TensorBoard scalar is a tracked metric of the same name, at the same steps, with the same values (a
    step logged twice, once by the training and once by run_fine_tune_eval.py: in the order they were logged).
    ``examples_per_s`` is a measurement: after a resume MLflow keeps the killed process's at the steps it logged,
    TensorBoard the resumed one's; its steps still match."""
    for tag, points in scalars.items():
        points = sorted(points, key=lambda sv: sv[0])
        assert [s for s, _ in tracked[tag]] == [s for s, _ in points], tag
        if tag.endswith("/examples_per_s"):
            continue
        np.testing.assert_allclose([v for _, v in tracked[tag]], [v for _, v in points], rtol=1e-6, err_msg=tag)


def test_evaluations_at_their_steps_equal_the_evaluation_script(
    run, tiny_bert, data_root, exp_root, mlflow_store, monkeypatch
):
    monkeypatch.delenv("TQDM_DISABLE")  # issue 32: the bars, on stderr
    out = run(
        "run_fine_tune.py",
        "--experiment",
        "ev",
        "--ptrain_ver",
        str(tiny_bert),
        *RUN,
        "--report_to",
        "tensorboard",
        "mlflow",
    )
    said = out.stderr
    monkeypatch.setenv("TQDM_DISABLE", "1")
    # each evaluation's bar (its rows) below the training bar, one line down and back up (\x1b[A), then cleared
    assert "ev_bert_qqp:   0%|" in said and "/12 [" in said
    for step in EVAL_STEPS:
        assert f"\revaluating dev at step {step}:   0%|" in said and "0/48 [" in said
    assert said.count("\x1b[A") >= 2 * len(EVAL_STEPS)
    folder = exp_root / "ev_bert_qqp"
    config = read(folder / "config.json")  # the resolved schedule is what config.json records, beside the epochs
    assert (config["total_step"], config["warmup_step"], config["num_epochs"], config["warmup_ratio"]) == (
        STEPS,
        WARMUP,
        1.0,
        0.05,
    ) and (STEPS, WARMUP) == (12, 1)
    assert "steps = " not in out.stderr  # the note on the default length: only a run left at the default
    history = read(folder / "training-eval-dev.json")
    assert [r["step"] for r in history["rows"]] == EVAL_STEPS
    assert [r["checkpoint"] for r in history["rows"]] == [s % 4 == 0 for s in EVAL_STEPS]
    assert history["metric"] == "accuracy" and history["stopped_early_at"] is None
    scalars = tb_scalars(exp_root / "log" / "ev_bert_qqp")
    # linear warmup over WARMUP steps, then linear decay to 0 at STEPS (the scheduler's lr after each logged step)
    lr = [1e-3 * (s / WARMUP if s < WARMUP else (STEPS - s) / (STEPS - WARMUP)) for s in range(2, STEPS + 1, 2)]
    np.testing.assert_allclose([v for _, v in scalars["qqp/train/bert/lr"]], lr, rtol=1e-5, atol=1e-12)
    for tag, metric in (
        ("qqp/dev/accuracy", "accuracy"),
        ("qqp/dev/f1", "f1"),
        ("qqp/dev/loss", "loss"),
    ):  # the JSON's names
        assert [s for s, _ in scalars[tag]] == EVAL_STEPS
        np.testing.assert_allclose([v for _, v in scalars[tag]], [r[metric] for r in history["rows"]], rtol=1e-6)
    # MLflow: experiment = the task, run = the folder; the config.json as parameters (a string as it is, anything
    # else as its JSON); the same scalars as TensorBoard; the final metrics
    mrun, tracked = mlflow_store(folder)
    assert (mrun.info.run_name, mrun.info.status) == ("ev_bert_qqp", "FINISHED")
    config = read(folder / "config.json")
    assert set(mrun.data.params) == set(config) and config["report_to"] == ["tensorboard", "mlflow"]
    for k, v in config.items():
        p = mrun.data.params[k]
        assert (p == v) if isinstance(v, str) else (json.loads(p) == v), k
    same_as_tensorboard(tracked, scalars)
    assert [s for s, _ in tracked["qqp/train/bert/loss"]] == [2, 4, 6, 8, 10, 12]
    final = {
        "qqp/train/bert/train_steps": 12,
        "qqp/dev/best_accuracy": history["best_checkpoint"]["value"],
        "qqp/dev/best_accuracy_step": history["best_checkpoint"]["ckpt"],
    }
    assert set(tracked) - set(scalars) == {
        *final,
        "qqp/train/bert/train_seconds",
        "qqp/train/bert/train_examples_per_s",
    }
    assert {k: tracked[k][-1][1] for k in final} == pytest.approx(final)
    run_id = read(folder / "mlflow-run.json")["run_id"]
    table = read(folder / "eval-dev.json")  # the checkpoints' table, where --ckpt best and results_table.py read
    assert [r["ckpt"] for r in table["rows"]] == [4, 8, 12]
    best = max(table["rows"], key=lambda r: (r["accuracy"], r["ckpt"]))
    assert history["best_checkpoint"] == {"ckpt": best["ckpt"], "value": best["accuracy"]}
    assert f"ev_bert_qqp: best dev accuracy {history['best']['value']:.6f} " in out.stderr
    during = {r["ckpt"]: r for r in table["rows"]}
    # the loss: the mean cross-entropy of the checkpoint's logits on the split, computed here independently
    from test_scripts_e2e import qqp_rows, recompute_logits

    dev = qqp_rows(data_root, "dev")
    logits = torch.from_numpy(recompute_logits(folder, 12, dev, max_seq_len=24)).double()
    gold = torch.tensor([int(r["label"]) for r in dev])
    assert during[12]["loss"] == pytest.approx(torch.nn.functional.cross_entropy(logits, gold).item(), rel=1e-5)
    # the evaluation script, afterwards, on the same checkpoints, computes the same numbers
    proc = run("run_fine_tune_eval.py", "--experiment", "ev", "--model", "bert", "--task", "qqp", "--dataset", "dev")
    assert proc.stderr == ""  # TQDM_DISABLE=1: no bar
    after = read(folder / "eval-dev.json")
    for row in after["rows"]:
        for metric in ("accuracy", "f1", "loss"):
            assert row[metric] == pytest.approx(during[row["ckpt"]][metric], abs=1e-9), (row["ckpt"], metric)
    lowest = min(after["rows"], key=lambda r: (r["loss"], -r["ckpt"]))  # lower is better; ties: the later one
    assert after["best"]["loss"] == {"ckpt": lowest["ckpt"], "value": lowest["loss"]}
    assert after["metric_for_best"] == "accuracy"
    assert (
        f"best checkpoint on dev by accuracy (the experiment's metric for best; ties go to the later checkpoint): "
        f"model-{after['best']['accuracy']['ckpt']}.pt"
    ) in proc.stdout
    # ... and reports where the run did (its config.json's report_to): into the same MLflow run, TensorBoard too
    assert read(folder / "mlflow-run.json")["run_id"] == run_id
    _, tracked = mlflow_store(folder)
    same_as_tensorboard(tracked, tb_scalars(exp_root / "log" / "ev_bert_qqp"))
    for metric in ("accuracy", "f1"):
        assert [s for s, _ in tracked[f"qqp/dev/{metric}"]] == sorted(EVAL_STEPS + [4, 8, 12])
        assert tracked[f"qqp/dev/best_{metric}"][-1][1] == pytest.approx(after["best"][metric]["value"])
        assert tracked[f"qqp/dev/best_{metric}_step"][-1][1] == after["best"][metric]["ckpt"]
    preds = np.load(folder / "eval-dev-predictions.npz")
    assert sorted(k for k in preds.files if k.startswith("pred_")) == ["pred_12", "pred_4", "pred_8"]


def test_a_killed_run_neither_repeats_nor_loses_an_evaluation(
    run, tiny_bert, data_root, exp_root, one_thread, mlflow_store
):
    run("run_fine_tune.py", "--experiment", "ref", "--ptrain_ver", str(tiny_bert), *RUN)
    w = World(data_root, exp_root, tiny_bert)
    # killed as checkpoint 8 is written: it had evaluated steps 3, 4, 6 and 8 (8's files wait for model-8.pt, so
    # none cites a checkpoint that is not on disk), and resumes from checkpoint 4
    args = ["--experiment", "killed", "--ptrain_ver", str(tiny_bert), *RUN, "--report_to", "tensorboard,mlflow"]
    wait_killed(start_killed("before:model-8.pt", "run_fine_tune.py", args, w))
    killed = exp_root / "killed_bert_qqp"
    assert [r["step"] for r in read(killed / "training-eval-dev.json")["rows"]] == [3, 4, 6]
    assert [r["ckpt"] for r in read(killed / "eval-dev.json")["rows"]] == [4]
    run_id = read(killed / "mlflow-run.json")["run_id"]  # MLflow already holds what the killed run logged after 4
    _, tracked = mlflow_store(killed)
    assert [s for s, _ in tracked["qqp/dev/accuracy"]] == [3, 4, 6, 8]
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
        assert {k: v for k, v in ra.items() if k != "examples_per_s"} == {
            k: v for k, v in rb.items() if k != "examples_per_s"
        }
    sa, sb = tb_scalars(exp_root / "log" / "ref_bert_qqp"), tb_scalars(exp_root / "log" / "killed_bert_qqp")
    assert sb["qqp/dev/accuracy"] == sa["qqp/dev/accuracy"]  # each step once, the same values
    # the same MLflow run, continued: each step once there too, as TensorBoard shows the run
    assert read(killed / "mlflow-run.json")["run_id"] == run_id
    mrun, tracked = mlflow_store(killed)
    assert mrun.info.status == "FINISHED"
    same_as_tensorboard(tracked, sb)
    assert_bitwise_equal(torch.load(ref / "model-12.pt"), torch.load(killed / "model-12.pt"))


def scripted(monkeypatch, accuracy: dict[int, float], loss: dict[int, float] | None = None):
    """The evaluation's accuracy (and loss) replaced by ``accuracy[step]`` (``loss[step]``) (the real evaluation still
    runs and its predictions are written): the run's choices can then be checked against a known sequence."""
    from fine_tune.evaluate import TrainingEvaluator

    real = TrainingEvaluator.evaluate

    def evaluate(self, model, step):
        return {**real(self, model, step), "accuracy": accuracy[step], **({"loss": loss[step]} if loss else {})}

    monkeypatch.setattr(TrainingEvaluator, "evaluate", evaluate)


def test_save_total_limit_keeps_the_best_checkpoint_and_the_newest(run, tiny_bert, exp_root, monkeypatch):
    # --metric_for_best loss: the lowest loss (first at 4, tied at 8: the later checkpoint) decides, where accuracy
    # would choose 10 (and, of the checkpoints left, 12)
    scripted(
        monkeypatch,
        {2: 0.5, 4: 0.6, 6: 0.6, 8: 0.5, 10: 0.9, 12: 0.85},
        {2: 0.7, 4: 0.3, 6: 0.5, 8: 0.3, 10: 0.4, 12: 0.6},
    )
    out = run(
        "run_fine_tune.py",
        "--experiment",
        "keep",
        "--ptrain_ver",
        str(tiny_bert),
        *RUN[:-2],
        "--ckpt_step",
        "2",
        "--save_total_limit",
        "1",
        "--metric_for_best",
        "loss",
        "--report_to",
        "none",
    )
    folder = exp_root / "keep_bert_qqp"
    assert not (exp_root / "log").exists() and not (exp_root / "mlruns").exists()  # --report_to none: no tracker
    assert sorted(p.name for p in folder.glob("model-*.pt")) == ["model-12.pt", "model-8.pt"]
    assert (
        "keep_bert_qqp: best dev loss 0.300000 first at step 4, tied at 8 (ties go to the later checkpoint; "
        "model-4.pt was pruned by --save_total_limit 1): best checkpoint model-8.pt"
    ) in out.stderr
    history = read(folder / "training-eval-dev.json")
    assert history["metric"] == "loss" and history["best_checkpoint"] == {"ckpt": 8, "value": 0.3}
    assert history["best"] == {"step": 4, "value": 0.3}  # the patience's reference: the first to reach it
    table = read(folder / "eval-dev.json")
    assert table["best"]["loss"] == {"ckpt": 8, "value": 0.3} and table["metric_for_best"] == "loss"
    assert table["best"]["accuracy"] == {"ckpt": 10, "value": 0.9}
    out = run(
        "generate_test_prediction.py",
        "--experiment",
        "keep",
        "--model",
        "bert",
        "--task",
        "qqp",
        "--dataset",
        "test",
        "--ckpt",
        "best",
        "--select_on",
        "dev",
    )  # by the experiment's metric: loss
    assert "of model-8.pt (best dev loss 0.3000" in out.stdout
    # --tckpt best: a student of this teacher takes the checkpoint --ckpt best chooses (not the last one), and its
    # config.json records the step
    out = run(
        "run_pkd_distill.py",
        "--teacher_exp",
        "keep",
        "--tmodel",
        "bert",
        "--tckpt",
        "best",
        "--experiment",
        "stu",
        "--task",
        "qqp",
        "--d_model",
        "32",
        "--d_ff",
        "64",
        "--num_attention_heads",
        "2",
        "--num_hidden_layers",
        "1",
        "--total_step",
        "1",
        "--warmup_step",
        "0",
        "--batch_size",
        "8",
        "--max_examples",
        "8",
        "--map_examples",
        "0",
    )
    assert "note: --tckpt best: keep_bert_qqp model-8.pt, its best checkpoint on dev" in out.stderr
    student = read(exp_root / "stu_bert_qqp" / "config.json")
    assert student["tckpt"] == 8 and student["teacher_checkpoint"] == "keep_bert_qqp/model-8.pt"


def test_early_stopping_stops_after_p_evaluations_and_the_run_is_finished(run, tiny_bert, exp_root, monkeypatch):
    # evaluations at 3, 4, 6, 8, 9, 12: the best at 4, then 3 without improvement -> stop at step 9
    scripted(monkeypatch, {3: 0.5, 4: 0.9, 6: 0.6, 8: 0.9, 9: 0.7, 12: 0.99})
    args = ["--experiment", "stop", "--ptrain_ver", str(tiny_bert), *RUN, "--early_stop_patience", "3"]
    out = run("run_fine_tune.py", *args)
    assert (
        "stopped early at step 9: no better dev accuracy in 3 evaluations; best dev accuracy 0.900000 first at "
        "step 4, tied at 8 (ties go to the later checkpoint): best checkpoint model-8.pt\n"
    ) in out.stderr
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
