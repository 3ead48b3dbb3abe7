"""``--report_to`` (fine_tune/reporting.py) below the scripts: the flag's names, MLflow's parameters, Weights & Biases
with the real package in offline mode, and the learning-curve reader of TensorBoard tags old and new. (MLflow's real
local store under whole runs, resumed ones included: tests/test_eval_during_training.py; a missing package:
tests/test_bad_inputs.py.)"""

from __future__ import annotations

import json

import pytest

from fine_tune.errors import UserError
from fine_tune.experiment import ExperimentDir
from fine_tune.settings import report_targets


def test_report_to_takes_hugging_faces_names_space_or_comma_separated():
    assert report_targets(("tensorboard",)) == ("tensorboard",)
    assert report_targets(["mlflow,wandb"]) == report_targets(["mlflow", "wandb"]) == ("mlflow", "wandb")
    assert report_targets(["tensorboard mlflow", "tensorboard"]) == ("tensorboard", "mlflow")
    assert report_targets(["none"]) == () and report_targets(["all"]) == ("all",)
    for bad, message in (
        (["comet"], "--report_to 'comet': not a tracker"),
        (["none", "mlflow"], "--report_to none mlflow: all and none stand alone"),
        ([","], "--report_to: give tensorboard"),
    ):
        with pytest.raises(UserError, match=message):
            report_targets(bad)


def test_all_is_every_installed_tracker(tmp_path, monkeypatch):
    import sys

    from fine_tune import reporting

    exp = ExperimentDir(tmp_path, "a_bert_qqp")
    monkeypatch.setitem(sys.modules, "wandb", None)  # not installed
    monkeypatch.setitem(sys.modules, "mlflow", reporting)  # installed (any module imports)
    assert reporting.resolve_reporting(["all"], exp, "qqp").backends == ("tensorboard", "mlflow")


def test_mlflow_parameters_are_config_values_as_text_cut_at_the_limit():
    from fine_tune.reporting import mlflow_params

    config = {
        "experiment": "e",
        "lr": 2e-5,
        "num_class": None,
        "amp": True,
        "report_to": ["mlflow"],
        "provenance": {"b": 1, "a": "x" * 20},
    }
    params = mlflow_params(config, limit=30)
    assert params["experiment"] == "e" and params["lr"] == "2e-05" and params["num_class"] == "null"
    assert params["amp"] == "true" and params["report_to"] == '["mlflow"]'
    whole = json.dumps(config["provenance"], sort_keys=True)
    assert len(whole) > 30 and params["provenance"] == whole[:29] + "…"


def test_wandb_offline_in_the_experiment_folder_a_resume_continues_its_run(tmp_path, monkeypatch):
    """The real wandb, offline because neither WANDB_API_KEY nor WANDB_MODE is set: its files under the experiment
    folder, the run's id kept there and continued by a resumed run. The offline run files hold what was logged
    (their records carry the names)."""
    wandb = pytest.importorskip("wandb")
    from fine_tune.reporting import WANDB_RUN_FILE, Reporting

    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_DIR"):
        monkeypatch.delenv(var, raising=False)
    exp = ExperimentDir(tmp_path, "w_bert_qqp")
    train = Reporting(("wandb",), exp.log_dir, exp.path, tmp_path, "qqp", exp.name)
    for step, name in ((0, "loss_first"), (2, "loss_resumed")):  # a new run, then resumed from checkpoint 2
        reporter = train.open()
        reporter.start(step)
        reporter.log_params({"experiment": "w", "lr_in_config": 0.001})
        reporter.log_scalars({f"qqp/train/bert/{name}": 0.5}, step + 2)
        reporter.log_final({"qqp/dev/best_accuracy_final": 0.75})
        reporter.close()
    wandb.teardown()  # the service has written every record
    run_id = json.loads((exp.path / WANDB_RUN_FILE).read_text())["id"]
    runs = sorted((exp.path / "wandb").glob("offline-run-*"))  # offline: nothing went to a server
    assert [p.name.rsplit("-", 1)[1] for p in runs] == [run_id] or [p.name.rsplit("-", 1)[1] for p in runs] == [
        run_id,
        run_id,
    ]  # (one folder when both start in one second)
    logged = b"".join(f.read_bytes() for p in runs for f in p.glob("run-*.wandb"))
    for name in (b"loss_first", b"loss_resumed", b"lr_in_config", b"best_accuracy_final"):
        assert name in logged, name
    assert not exp.log_dir.exists()  # wandb alone: no TensorBoard files


def test_an_evaluation_is_a_wandb_run_of_its_own_in_the_runs_group(tmp_path, monkeypatch):
    """W&B keeps a run's steps in increasing order only: run_fine_tune_eval.py's checkpoints (earlier steps than the
    training's last) go to a new run in the folder's group, never to the training's run (a fake wandb records the
    calls)."""
    import sys
    import types

    from fine_tune.reporting import WANDB_RUN_FILE, Reporting

    calls = []

    class Run:
        id = "evalrun1"
        config = types.SimpleNamespace(update=lambda *a, **k: calls.append(("config", a)))
        summary = types.SimpleNamespace(update=lambda *a, **k: calls.append(("summary", a)))

        def log(self, values, step):
            calls.append(("log", values, step))

        def finish(self, exit_code):
            calls.append(("finish", exit_code))

    fake = types.SimpleNamespace(init=lambda **kw: calls.append(("init", kw)) or Run(), Settings=lambda **kw: kw)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setenv("WANDB_MODE", "online")  # given: the toolkit leaves it to wandb
    exp = ExperimentDir(tmp_path, "w_bert_qqp")
    exp.path.mkdir(parents=True)
    (exp.path / WANDB_RUN_FILE).write_text(json.dumps({"id": "trainrun"}))
    reporter = Reporting(("wandb",), exp.log_dir, exp.path, tmp_path, "qqp", exp.name, job="eval").open()
    reporter.start(None)
    reporter.log_scalars({"qqp/dev/accuracy": 0.5}, 4)
    reporter.close()
    kind, init = calls[0]
    assert (init["id"], init["resume"], init["mode"]) == (None, None, None)
    assert (init["name"], init["group"], init["job_type"], init["dir"]) == (
        "w_bert_qqp (eval)",
        "w_bert_qqp",
        "eval",
        str(exp.path),
    )
    assert calls[1:] == [("log", {"qqp/dev/accuracy": 0.5}, 4), ("finish", 0)]
    assert json.loads((exp.path / WANDB_RUN_FILE).read_text()) == {"id": "trainrun"}


def test_curves_read_the_tags_of_runs_before_and_after_issue_32():
    """The learning-curve reader finds a run's loss under its training split (offline distillation: the logits
    set's split; older runs: the set's name) and F1 under ``f1`` (older runs: ``f1_score``)."""
    from fine_tune.result_plots import loss_tag, metric_tag

    config = {"dataset": "teacher_bert_qqp", "logits_split": "train", "model": "bert"}
    # a loss tag of another training split sorts first: the run's own is found by name, not by being the only one
    new = {"qqp/train/bert/loss": {}, "qqp/aaa/bert/loss": {}}
    old = {"qqp/teacher_bert_qqp/bert/loss": {}, "qqp/aaa/bert/loss": {}}
    assert loss_tag(new, config, "qqp") == "qqp/train/bert/loss"
    assert loss_tag(old, config, "qqp") == "qqp/teacher_bert_qqp/bert/loss"
    assert metric_tag("mrpc", "dev", "f1", {"mrpc/dev/f1": {}}) == "mrpc/dev/f1"
    assert metric_tag("mrpc", "dev", "f1", {"mrpc/dev/f1_score": {}}) == "mrpc/dev/f1_score"
    assert metric_tag("mrpc", "dev", "f1") == "mrpc/dev/f1"


def test_an_mlflow_experiment_that_cannot_be_created_is_mlflows_error(tmp_path):
    """create_experiment failing for another reason than a concurrent creation (the experiment still absent after
    it: a permission error, a server refusal) is MLflow's own error, not an AttributeError on a None experiment."""
    from mlflow.exceptions import MlflowException

    from fine_tune.reporting import MLflowReporter

    class Refusing:
        def get_experiment_by_name(self, name):
            return None

        def create_experiment(self, name):
            raise MlflowException(f"no permission to create {name}")

    reporter = MLflowReporter(tmp_path / "exp", tmp_path, "qqp", "x")
    reporter.client = Refusing()
    with pytest.raises(MlflowException, match="^no permission to create qqp$"):
        reporter._run("file:///nowhere")
