"""A recipe run (``run_distil.py --recipe FILE``) gets what a built-in method gets from the engine: torchrun (two CPU
processes end where one does, every term logged as one process logs it), AMP (bf16 autocast on CPU: finite terms
that sum to the loss), experiment tracking (every term by name in MLflow as in TensorBoard) and ``--config``
re-runs (bit-identical; a recipe file edited since the run is refused in one line). Resume: tests/test_resume.py;
padding and config.json's record: tests/test_recipe_method.py."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
import torch
from conftest import run_in_process
from module_world import data_root, exp_root  # noqa: F401 - fixtures
from test_distributed import close, layerwise_over_a_teacher, load, torchrun
from test_eval_during_training import mlflow_store, same_as_tensorboard  # noqa: F401 - the fixture
from test_scripts_e2e import tb_scalars

# unequal layer counts (3 of 12), a non-default temperature, fractional weights, hidden states, an attention map
RECIPE = """\
terms:
  - {feature: logits, loss: kl, temperature: 2.5, weight: 0.7}
  - {feature: hard_labels, loss: ce, weight: 0.3}
  - {feature: hidden, loss: mse, layers: skip, weight: 4.0}
  - {feature: attention_probs, loss: kl, layers: [[3, 12]], weight: 1.5}
"""
NAMES = ["logits_kl", "hard_labels_ce", "hidden_mse", "attention_probs_kl"]
P = "qqp/train/bert/"


@pytest.fixture(scope="module")
def student(data_root, exp_root, tiny_bert12):
    """The teacher ("teacher", 12 layers, 2 steps) trained; the flags of a 3-layer student of it, the recipe's
    file given: batch 6 = 2 micro-batches of 3 over 29 rows, dropout 0. --padding max_length (the layer-wise
    default): the hidden MSE over every position, a mean per row as the ranks' row weights assume; the attention KL
    masked (per sequence over its real tokens) in either padding. (Under --padding dynamic a masked hidden MSE is
    the mean over a micro-batch's real tokens, which the ranks' row weights do not restore: two processes differ
    from one there, for PKD's script as for a recipe.)"""

    def run(script, *args, check=True):
        return run_in_process(script, *args, data_root=data_root, exp_root=exp_root, check=check)

    recipe = data_root.parent / "recipe.yaml"
    recipe.write_text(RECIPE)
    return [
        *layerwise_over_a_teacher(run, tiny_bert12, 3),
        "--recipe",
        str(recipe),
        "--padding",
        "max_length",
        "--warmup_step",
        "1",
        "--device_id",
        "-1",
    ]


def terms(scalars: dict, step_index: int) -> dict[str, float]:
    return {name: scalars[P + name][step_index][1] for name in NAMES}


def test_a_recipe_under_torchrun_ends_where_one_process_does(run, student, data_root, exp_root):
    common = [*student, "--total_step", "4", "--ckpt_step", "4", "--log_step", "2"]
    run("run_distil.py", "--experiment", "one", *common)
    torchrun("run_distil.py", ["--experiment", "two", *common], data_root, exp_root)
    one, two = exp_root / "one_bert_qqp", exp_root / "two_bert_qqp"
    close(load(one / "model-4.pt"), load(two / "model-4.pt"))
    c1, c2 = (json.loads((f / "config.json").read_text()) for f in (one, two))
    assert (c1["provenance"]["processes"], c2["provenance"]["processes"]) == (1, 2)
    assert c1["recipe"] == c2["recipe"] and [t["name"] for t in c2["recipe"]["terms"]] == NAMES
    a, b = tb_scalars(exp_root / "log" / "one_bert_qqp"), tb_scalars(exp_root / "log" / "two_bert_qqp")
    # each term as one process logs it (the mean over the ranks); atol: the logits KL of a student and a 2-step
    # teacher both near uniform is ~1e-5, a difference of nearly equal numbers that float noise moves by ~1e-8
    for tag in ("loss", *NAMES, "grad_norm"):
        assert [s for s, _ in b[P + tag]] == [2, 4], tag
        np.testing.assert_allclose(
            [v for _, v in b[P + tag]], [v for _, v in a[P + tag]], rtol=1e-4, atol=1e-7, err_msg=tag
        )


def test_a_recipe_under_amp_logs_finite_terms_to_tensorboard_and_mlflow(
    run, student, exp_root, mlflow_store, monkeypatch
):
    """--amp on CPU: bf16 autocast (as on a processor with native bf16, whatever this one has); every term by its
    name in TensorBoard and MLflow alike, finite and positive, summing to the logged loss."""
    from fine_tune.engine import device

    common = [*student, "--total_step", "2", "--ckpt_step", "2", "--log_step", "1"]
    run("run_distil.py", "--experiment", "fp32", *common)
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: True)
    proc = run("run_distil.py", "--experiment", "amp", *common, "--amp", "--report_to", "tensorboard", "mlflow")
    assert "warning: --amp on CPU: using bf16 autocast" in proc.stderr, proc.stderr
    folder = exp_root / "amp_bert_qqp"
    assert json.loads((folder / "config.json").read_text())["amp"] is True
    amp, fp32 = load(folder / "model-2.pt"), load(exp_root / "fp32_bert_qqp" / "model-2.pt")
    assert any(not torch.equal(amp[k], fp32[k]) for k in amp)  # autocast was on: another student than fp32's
    close(amp, fp32, atol=5e-2)  # ... and close to it
    scalars = tb_scalars(exp_root / "log" / "amp_bert_qqp")
    for i in range(2):
        v = terms(scalars, i)
        assert all(math.isfinite(x) and x > 0 for x in v.values()), v
        assert scalars[P + "loss"][i][1] == pytest.approx(sum(v.values()), rel=1e-5)
    _, tracked = mlflow_store(folder)
    assert {P + name for name in NAMES} <= set(tracked)
    same_as_tensorboard(tracked, scalars)


def test_config_reruns_a_recipe_run_and_refuses_an_edited_recipe(run, student, exp_root, data_root):
    common = [*student, "--total_step", "2", "--ckpt_step", "2", "--log_step", "2"]
    run("run_distil.py", "--experiment", "orig", *common)
    cfg_file = exp_root / "orig_bert_qqp" / "config.json"
    orig = json.loads(cfg_file.read_text())
    recipe = data_root.parent / "recipe.yaml"
    assert orig["recipe"]["sha256"] == hashlib.sha256(RECIPE.encode()).hexdigest()
    run("run_distil.py", "--config", str(cfg_file), "--experiment", "copy")  # the method too from config.json
    copy = json.loads((exp_root / "copy_bert_qqp" / "config.json").read_text())
    assert copy["overrides"] == {"experiment": "copy"}
    rerun = {"experiment", "provenance", "config_from", "overrides"}
    assert {k: v for k, v in copy.items() if k not in rerun} == {k: v for k, v in orig.items() if k not in rerun}
    a, b = load(exp_root / "orig_bert_qqp" / "model-2.pt"), load(exp_root / "copy_bert_qqp" / "model-2.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    edited = RECIPE.replace("weight: 4.0", "weight: 5.0")
    recipe.write_text(edited)
    try:
        proc = run("run_distil.py", "--config", str(cfg_file), "--experiment", "edited", check=False)
        assert proc.returncode == 2 and proc.stdout == ""
        now, before = hashlib.sha256(edited.encode()).hexdigest(), orig["recipe"]["sha256"]
        assert proc.stderr == (
            f'error: --config {cfg_file}: field "recipe": {recipe} changed since the run (sha256 '
            f"{now[:12]}… now, {before[:12]}… recorded); restore it, or give --recipe {recipe} to "
            f"run with it as it is\n"
        )
        assert not (exp_root / "edited_bert_qqp").exists()
        # the run itself, resumed with the edited file: another config (the recipe's record differs)
        proc = run("run_distil.py", "--experiment", "orig", *common, check=False)
        assert proc.returncode == 2 and "holds a run with a different config: recipe" in proc.stderr, proc.stderr
        # --recipe given: the file as it is now, recorded so
        run("run_distil.py", "--config", str(cfg_file), "--experiment", "edited", "--recipe", str(recipe))
        record = json.loads((exp_root / "edited_bert_qqp" / "config.json").read_text())["recipe"]
        assert record["sha256"] == now and record["terms"][2]["weight"]["value"] == 5.0
    finally:
        recipe.write_text(RECIPE)
