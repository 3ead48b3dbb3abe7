"""A recipe's ``method: NAME``: a built-in method with the recipe's terms added (methods/with_terms.py). End-to-end
on the tiny 12-layer teacher: LAD with a term of weight 0 trains run_lad_distil.py's student bit for bit (its gates,
schedule and files are the method's), a weighted term adds to LAD's loss at every logged step under its name, and
a term's name LAD logs too is logged as recipe_{name}; the layer records' union and the parts' merge in isolation."""

from __future__ import annotations

import json

import pytest
import torch
from module_world import data_root, exp_root, teacher  # noqa: F401 - fixtures
from test_layerwise_scripts import TEACHER, TINY
from test_recipe_method import assert_same_weights, weights

COMMON = [
    "--task",
    "qqp",
    *TINY,
    "--num_hidden_layers",
    "6",
    "--total_step",
    "3",
    "--warmup_step",
    "1",
    "--ckpt_step",
    "3",
    "--log_step",
    "1",
    "--batch_size",
    "8",
    "--lr",
    "1e-3",
    "--gate_lr",
    "1e-2",
    "--mu",
    "10",
    "--softmax_temp",
    "2.0",
    "--soft_weight",
    "0.3",
    "--hard_weight",
    "0.7",
]


def test_lad_with_a_zero_weight_term_is_run_lad_distil(run, teacher, exp_root, tmp_path):
    recipe = tmp_path / "lad_plus.yaml"
    recipe.write_text("method: lad\nterms:\n  - {feature: cls, loss: cosine, layers: last, weight: 0.0}\n")
    run("run_lad_distil.py", *TEACHER, "--experiment", "script", *COMMON)
    proc = run("run_distil.py", "--recipe", str(recipe), *TEACHER, "--experiment", "plus", *COMMON)
    assert "S1<-A2, S2<-A4, S3<-A6, S4<-A8, S5<-A10, S6<-A12; cls_cosine: S1<-T7" in proc.stderr, proc.stderr
    script, plus = exp_root / "script_bert_qqp", exp_root / "plus_bert_qqp"
    assert_same_weights(weights(script), weights(plus))
    for i in range(6):  # LAD's gates train and are saved as the script saves them
        a, b = (torch.load(f / f"gate-{i}-3.pt", weights_only=True) for f in (script, plus))
        assert_same_weights(a, b)
    config = json.loads((plus / "config.json").read_text())
    assert config["method"] == "recipe" and config["recipe"]["method"] == "lad"
    assert config["gate_no_decay"] == json.loads((script / "config.json").read_text())["gate_no_decay"]


def test_terms_add_to_lad_s_loss_under_their_names(run, teacher, exp_root, tmp_path):
    from test_scripts_e2e import tb_scalars

    recipe = tmp_path / "lad_plus.yaml"
    recipe.write_text(
        "method: lad\nterms:\n"
        "  - {feature: hidden, loss: cosine, layers: [[2, 5], [6, 12]], weight: 0.75, name: hidden_loss}\n"
        "  - {feature: attention_probs, loss: kl, layers: [[6, 12]], weight: 1.25}\n"
    )
    run("run_distil.py", "--recipe", str(recipe), *TEACHER, "--experiment", "weighted", *COMMON)
    s = tb_scalars(exp_root / "log" / "weighted_bert_qqp")
    p = "qqp/train/bert/"
    for step in range(3):
        v = {
            k: s[p + k][step][1]
            for k in ("logits_loss", "hidden_loss", "recipe_hidden_loss", "attention_probs_kl", "loss")
        }
        assert v["recipe_hidden_loss"] > 0 and v["attention_probs_kl"] > 0, v
        assert v["loss"] == pytest.approx(
            v["logits_loss"] + v["hidden_loss"] + v["recipe_hidden_loss"] + v["attention_probs_kl"], rel=1e-5
        )
    # (kill and resume: tests/test_resume.py, case recipe_scheduled_with_lad)


def test_the_union_of_layer_records_and_the_merged_parts(tmp_path):
    from fine_tune.engine.protocol import LayerRecord, ModelOutputs, TeacherShape
    from fine_tune.methods.base import Method, MethodSettings, StudentShape
    from fine_tune.methods.recipe import RecipeFlags, RecipeKD
    from fine_tune.methods.with_terms import MethodWithTerms

    assert LayerRecord.union(
        LayerRecord(frozenset({1}), frozenset()), LayerRecord(frozenset({2, 3}), frozenset({3}))
    ) == LayerRecord(frozenset({1, 2, 3}), frozenset({3}))
    assert LayerRecord.union(LayerRecord(None, frozenset({1})), LayerRecord(frozenset({2}), None)) == LayerRecord(
        None, None
    )

    class Base(Method):
        ignores_padding = False
        schedule = "constant"

        def losses(self, batch, student, teacher):
            return {"hard_loss": torch.tensor(0.5), "logits_kl": torch.tensor(0.25), "loss": torch.tensor(0.75)}

    path = tmp_path / "r.yaml"
    path.write_text("method: pkd\nterms:\n  - {feature: logits, loss: kl, temperature: 3.0, weight: 2.0}\n")
    method = RecipeKD.build(
        MethodSettings(
            groups={"recipe": RecipeFlags(recipe=str(path))},
            num_class=2,
            student=StudentShape(3, 32, 2),
            teacher=TeacherShape(12, 32, 2),
            padding="dynamic",
            base=Base(),
        )
    )
    assert isinstance(method, MethodWithTerms)
    assert (method.schedule, method.ignores_padding, method.uses_teacher) == ("constant", False, True)
    s, t = torch.tensor([[1.0, -2.0], [0.5, 0.25]]), torch.tensor([[0.0, 1.0], [2.0, -1.0]])
    parts = method.losses({"labels": torch.tensor([1, 0])}, ModelOutputs(logits=s), ModelOutputs(logits=t))
    kl = torch.nn.functional.kl_div(torch.log_softmax(s / 3, -1), torch.softmax(t / 3, -1), reduction="batchmean") * 9
    torch.testing.assert_close(parts["recipe_logits_kl"], 2.0 * kl)
    assert parts["logits_kl"] == 0.25 and parts["hard_loss"] == 0.5
    torch.testing.assert_close(parts["loss"], 0.75 + 2.0 * kl)


def test_the_results_table_names_the_method_and_the_recipe():
    from fine_tune.result_columns import method_of

    recipe = {"path": "/x/lad_plus.yaml", "sha256": "0123456789abcdef", "method": "lad"}
    assert method_of({"method": "recipe", "recipe": recipe}, "t") == "lad + recipe lad_plus.yaml 01234567"
    assert method_of({"method": "recipe", "recipe": dict(recipe, method=None)}, "t") == "recipe lad_plus.yaml 01234567"
