"""``run_distil.py --recipe FILE`` end-to-end on a tiny 12-layer teacher: the shipped recipes train the same student
as the scripts whose losses they list (bit for bit), a recipe with its own weights and temperature equals the script
given the same values as flags, config.json records the recipe, and a bad recipe is one line with nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from test_layerwise_scripts import TEACHER, TINY, teacher  # noqa: F401 - the fixture

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
COMMON = ["--task", "qqp", *TINY, "--num_hidden_layers", "3", "--total_step", "3", "--warmup_step", "1",
          "--ckpt_step", "3", "--log_step", "1", "--batch_size", "8", "--lr", "1e-3"]


def weights(folder: Path, step: int = 3) -> dict:
    return torch.load(folder / f"model-{step}.pt", weights_only=True)


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


@pytest.mark.parametrize("recipe,flags", [("pkd.yaml", []), ("logits_kd.yaml", ["--mu", "0"])])
def test_shipped_recipe_equals_its_script(run, teacher, exp_root, recipe, flags):  # noqa: F811
    run("run_pkd_distill.py", *TEACHER, "--experiment", "script", *COMMON, *flags, "--padding", "dynamic")
    run("run_distil.py", "--recipe", str(RECIPES / recipe), *TEACHER, "--experiment", "recipe", *COMMON,
        "--padding", "dynamic")
    script, recipe_run = exp_root / "script_bert_qqp", exp_root / "recipe_bert_qqp"
    assert_same_weights(weights(script), weights(recipe_run))
    config = json.loads((recipe_run / "config.json").read_text())
    assert config["method"] == "recipe"
    assert config["recipe"]["sha256"] == __import__("hashlib").sha256((RECIPES / recipe).read_bytes()).hexdigest()


@pytest.mark.parametrize("padding", ["dynamic", "max_length"])
def test_recipe_weights_and_temperature_equal_the_same_flags(run, teacher, exp_root, tmp_path, padding):  # noqa: F811
    """Non-default weights and temperature; max_length: the original's full-sequence MSE (padding included)."""
    recipe = tmp_path / "mine.json"
    recipe.write_text(json.dumps({"terms": [
        {"feature": "hard_labels", "loss": "ce", "weight": 0.35},
        {"feature": "logits", "loss": "kl", "temperature": 2.5, "weight": 0.65},
        {"feature": "hidden", "loss": "mse", "layers": "skip", "weight": 7.5}]}))
    run("run_pkd_distill.py", *TEACHER, "--experiment", "script", *COMMON, "--padding", padding,
        "--hard_weight", "0.35", "--soft_weight", "0.65", "--softmax_temp", "2.5", "--mu", "7.5")
    run("run_distil.py", "--recipe", str(recipe), *TEACHER, "--experiment", "recipe", *COMMON, "--padding", padding)
    assert_same_weights(weights(exp_root / "script_bert_qqp"), weights(exp_root / "recipe_bert_qqp"))
    # and another recipe trains another student
    recipe.write_text(json.dumps({"terms": [
        {"feature": "hard_labels", "loss": "ce", "weight": 0.35},
        {"feature": "logits", "loss": "kl", "temperature": 2.5, "weight": 0.65},
        {"feature": "hidden", "loss": "mse", "layers": "last", "weight": 7.5}]}))
    run("run_distil.py", "--recipe", str(recipe), *TEACHER, "--experiment", "last", *COMMON, "--padding", padding)
    other = weights(exp_root / "last_bert_qqp")
    assert any(not torch.equal(other[k], v) for k, v in weights(exp_root / "recipe_bert_qqp").items())


def test_a_layer_outside_the_student_is_one_line_and_writes_nothing(run, teacher, exp_root, tmp_path):  # noqa: F811
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("terms:\n  - {feature: hidden, loss: mse, layers: [[4, 8]], weight: 1.0}\n")
    proc = run("run_distil.py", "--recipe", str(recipe), *TEACHER, "--experiment", "bad", *COMMON, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "terms[0].layers" in lines[0] and "student layer 4" in lines[0], lines[0]
    assert not (exp_root / "bad_bert_qqp").exists()
