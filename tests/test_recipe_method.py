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
COMMON = [
    "--task",
    "qqp",
    *TINY,
    "--num_hidden_layers",
    "3",
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
]


def weights(folder: Path, step: int = 3) -> dict:
    return torch.load(folder / f"model-{step}.pt", weights_only=True)


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


@pytest.mark.parametrize(
    "recipe,flags,padding",
    [
        ("pkd.yaml", [], "dynamic"),
        ("logits_kd.yaml", ["--mu", "0"], "dynamic"),
        ("pkd_normalized_cls_6of12.yaml", ["--pkd_loss", "normalized_cls", "--mu", "100"], "max_length"),
    ],
)
def test_shipped_recipe_equals_its_script(run, teacher, exp_root, recipe, flags, padding):  # noqa: F811
    layers = ["--num_hidden_layers", "6"] if "6of12" in recipe else []
    run("run_pkd_distill.py", *TEACHER, "--experiment", "script", *COMMON, *layers, *flags, "--padding", padding)
    run(
        "run_distil.py",
        "--recipe",
        str(RECIPES / recipe),
        *TEACHER,
        "--experiment",
        "recipe",
        *COMMON,
        *layers,
        "--padding",
        padding,
    )
    script, recipe_run = exp_root / "script_bert_qqp", exp_root / "recipe_bert_qqp"
    assert_same_weights(weights(script), weights(recipe_run))
    config = json.loads((recipe_run / "config.json").read_text())
    assert config["method"] == "recipe"
    assert config["recipe"]["sha256"] == __import__("hashlib").sha256((RECIPES / recipe).read_bytes()).hexdigest()


@pytest.mark.parametrize("padding", ["dynamic", "max_length"])
def test_recipe_weights_and_temperature_equal_the_same_flags(run, teacher, exp_root, tmp_path, padding):  # noqa: F811
    """Non-default weights and temperature; max_length: the original's full-sequence MSE (padding included)."""
    recipe = tmp_path / "mine.json"
    recipe.write_text(
        json.dumps(
            {
                "terms": [
                    {"feature": "hard_labels", "loss": "ce", "weight": 0.35},
                    {"feature": "logits", "loss": "kl", "temperature": 2.5, "weight": 0.65},
                    {"feature": "hidden", "loss": "mse", "layers": "skip", "weight": 7.5},
                ]
            }
        )
    )
    run(
        "run_pkd_distill.py",
        *TEACHER,
        "--experiment",
        "script",
        *COMMON,
        "--padding",
        padding,
        "--hard_weight",
        "0.35",
        "--soft_weight",
        "0.65",
        "--softmax_temp",
        "2.5",
        "--mu",
        "7.5",
    )
    run("run_distil.py", "--recipe", str(recipe), *TEACHER, "--experiment", "recipe", *COMMON, "--padding", padding)
    assert_same_weights(weights(exp_root / "script_bert_qqp"), weights(exp_root / "recipe_bert_qqp"))
    # and another recipe trains another student
    recipe.write_text(
        json.dumps(
            {
                "terms": [
                    {"feature": "hard_labels", "loss": "ce", "weight": 0.35},
                    {"feature": "logits", "loss": "kl", "temperature": 2.5, "weight": 0.65},
                    {"feature": "hidden", "loss": "mse", "layers": "last", "weight": 7.5},
                ]
            }
        )
    )
    run("run_distil.py", "--recipe", str(recipe), *TEACHER, "--experiment", "last", *COMMON, "--padding", padding)
    other = weights(exp_root / "last_bert_qqp")
    assert any(not torch.equal(other[k], v) for k, v in weights(exp_root / "recipe_bert_qqp").items())


MIXED = """\
terms:
  - {feature: logits, loss: kl, temperature: 2.0, weight: 0.5}
  - {feature: hard_labels, loss: ce, weight: 0.5}
  - {feature: hidden, loss: mse, layers: [[1, 4], [2, 8], [3, 12]], weight: 3.0}
  - {feature: hidden, loss: cosine, layers: last, weight: 0.25, name: hidden_cos}
  - {feature: cls, loss: normalized_mse, layers: uniform, weight: 2.0}
  - {feature: attention_probs, loss: kl, layers: [[3, 12]], weight: 1.5}
  - {feature: value_relation, loss: kl, layers: [[3, 12]], weight: 0.75}
"""


def test_a_mixed_recipe_trains_logs_every_term_and_records_itself(run, teacher, exp_root, tmp_path):  # noqa: F811
    from test_scripts_e2e import tb_scalars

    recipe = tmp_path / "mixed.yaml"
    recipe.write_text(MIXED)
    proc = run(
        "run_distil.py", "--recipe", str(recipe), *TEACHER, "--experiment", "mixed", *COMMON, "--padding", "dynamic"
    )
    assert "hidden_mse: S1<-T4, S2<-T8, S3<-T12" in proc.stderr, proc.stderr
    folder = exp_root / "mixed_bert_qqp"
    config = json.loads((folder / "config.json").read_text())
    assert (
        config["method"] == "recipe"
        and config["recipe"]["sha256"] == __import__("hashlib").sha256(MIXED.encode()).hexdigest()
    )
    assert [t["name"] for t in config["recipe"]["terms"]] == [
        "logits_kl",
        "hard_labels_ce",
        "hidden_mse",
        "hidden_cos",
        "cls_normalized_mse",
        "attention_probs_kl",
        "value_relation_kl",
    ]
    s = tb_scalars(exp_root / "log" / "mixed_bert_qqp")
    p = "qqp/train/bert/"
    names = [t["name"] for t in config["recipe"]["terms"]]
    for step in range(3):
        v = {name: s[p + name][step][1] for name in names}
        assert all(x > 0 for x in v.values()), v
        assert s[p + "loss"][step][1] == pytest.approx(sum(v.values()), rel=1e-5)
    assert (folder / "model-3.pt").exists()
    run("run_fine_tune_eval.py", "--experiment", "mixed", "--model", "bert", "--task", "qqp", "--dataset", "dev")
    table = run("results_table.py", "--task", "qqp").stdout  # the results table names the recipe and its content
    sha = __import__("hashlib").sha256(MIXED.encode()).hexdigest()
    assert f"recipe mixed.yaml {sha[:8]}" in table, table


@pytest.mark.parametrize(
    "text,message",
    [
        (
            "terms:\n  - {feature: hidden, loss: mse, layers: [[4, 8]], weight: 1.0}\n",
            "terms[0].layers: student layer 4 is outside the 3-layer student",
        ),
        (
            "method: lads\nterms:\n  - {feature: logits, loss: kl}\n",
            "method: 'lads' is not a distillation method terms can be added to; did you mean lad?",
        ),
        ("terms:\n  - {feature: hidden, loss: msee, layers: skip}\n", "did you mean 'mse'"),
    ],
)
def test_a_bad_recipe_is_one_line_and_writes_nothing(run, teacher, exp_root, tmp_path, text, message):  # noqa: F811
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(text)
    proc = run("run_distil.py", "--recipe", str(recipe), *TEACHER, "--experiment", "bad", *COMMON, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert f"recipe {recipe}" in lines[0] and message in lines[0], lines[0]
    assert not (exp_root / "bad_bert_qqp").exists()


def test_widths_and_heads_that_differ_are_refused_where_the_recipe_cannot_compare(
    run,
    teacher,
    exp_root,  # noqa: F811
    tmp_path,
):
    recipe = tmp_path / "narrow.yaml"
    narrow = [
        "--task",
        "qqp",
        "--d_model",
        "16",
        "--d_ff",
        "32",
        "--num_attention_heads",
        "1",
        "--num_hidden_layers",
        "3",
        "--total_step",
        "2",
        "--warmup_step",
        "0",
        "--batch_size",
        "8",
    ]
    for text, message in [
        (
            "terms:\n  - {feature: hidden, loss: mse, layers: skip, projection: none}\n",
            "projection none, but the student's width 16 differs from the teacher's 32",
        ),
        (
            "terms:\n  - {feature: attention_probs, loss: kl, layers: [[3, 12]]}\n",
            "the student has 1 attention heads and the teacher 2: add head_mean: true",
        ),
    ]:
        recipe.write_text(text)
        proc = run("run_distil.py", "--recipe", str(recipe), *TEACHER, "--experiment", "bad", *narrow, check=False)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert not (exp_root / "bad_bert_qqp").exists()
    # with the projection (auto) and head means the same recipe trains
    recipe.write_text(
        "terms:\n  - {feature: hidden, loss: mse, layers: skip}\n"
        "  - {feature: attention_probs, loss: kl, layers: [[3, 12]], head_mean: true}\n"
        "  - {feature: hard_labels, loss: ce}\n"
    )
    run("run_distil.py", "--recipe", str(recipe), *TEACHER, "--experiment", "narrow", *narrow, "--ckpt_step", "2")
    folder = exp_root / "narrow_bert_qqp"
    assert (folder / "model-2.pt").exists() and (folder / "projection-2.pt").exists()


def test_schedules_follow_the_optimizer_steps(run, teacher, exp_root, tmp_path):  # noqa: F811
    """The hard-label weight rises 0 -> 1 over 2 steps (then held), the temperature falls 3 -> 1.5 over 4 steps;
    each step's values are logged; at step 1 the hard-label term is exactly 0."""
    from test_scripts_e2e import tb_scalars

    recipe = tmp_path / "scheduled.yaml"
    recipe.write_text(
        "terms:\n"
        "  - {feature: hard_labels, loss: ce, weight: {schedule: linear, from: 0.0, to: 1.0, steps: 2}}\n"
        "  - {feature: logits, loss: kl, weight: 0.5,\n"
        "     temperature: {schedule: linear, from: 3.0, to: 1.5, steps: 4}}\n"
    )
    run("run_distil.py", "--recipe", str(recipe), *TEACHER, "--experiment", "sched", *COMMON, "--padding", "dynamic")
    s = tb_scalars(exp_root / "log" / "sched_bert_qqp")
    p = "qqp/train/bert/"
    assert [v for _, v in s[p + "hard_labels_ce_weight"]] == [0.0, 0.5, 1.0]
    assert [v for _, v in s[p + "logits_kl_temperature"]] == [3.0, 2.625, 2.25]
    assert "logits_kl_weight" not in {t[len(p) :] for t in s}  # a constant is not logged
    hard = [v for _, v in s[p + "hard_labels_ce"]]
    assert hard[0] == 0.0 and hard[1] > 0 and hard[2] > 0


@pytest.mark.parametrize("flag", ["--mu", "--hard_weight", "--soft_weight", "--softmax_temp"])
def test_the_flags_a_recipe_replaces_are_refused(run, exp_root, flag):
    proc = run(
        "run_distil.py",
        "--recipe",
        str(RECIPES / "pkd.yaml"),
        *TEACHER,
        "--experiment",
        "bad",
        *COMMON,
        flag,
        "0.5",
        check=False,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{flag}: with --recipe the recipe's terms set the loss weights" in lines[0], lines
    assert not (exp_root / "bad_bert_qqp").exists()


def test_attention_terms_refuse_a_family_whose_attention_cannot_be_recomputed(tmp_path):
    """DeBERTa-v2's relative-position scores cannot be recomputed from Q and K: a recipe with an attention term is
    refused for it (as TinyBERT and MiniLM are); a recipe of hidden states alone is not."""
    from types import SimpleNamespace

    from fine_tune.engine.protocol import TeacherShape
    from fine_tune.errors import UserError
    from fine_tune.methods.base import MethodSettings, StudentShape
    from fine_tune.methods.recipe import RecipeFlags, RecipeKD

    def built(text: str) -> RecipeKD:
        path = tmp_path / "r.yaml"
        path.write_text(text)
        return RecipeKD.build(
            MethodSettings(
                groups={"recipe": RecipeFlags(recipe=str(path))},
                num_class=2,
                student=StudentShape(3, 32, 2),
                teacher=TeacherShape(12, 32, 2),
                padding="dynamic",
            )
        )

    attention = built("terms:\n  - {feature: attention_probs, loss: kl, layers: [[3, 12]]}\n")
    for teacher_type, student_type in (("deberta-v2", "bert"), ("bert", "deberta-v2")):
        with pytest.raises(UserError, match="a recipe with attention terms recomputes attention .* relative-position"):
            attention.check_models(SimpleNamespace(model_type=teacher_type), student_type)
    attention.check_models(SimpleNamespace(model_type="roberta"), "bert")
    built("terms:\n  - {feature: hidden, loss: mse, layers: skip}\n").check_models(
        SimpleNamespace(model_type="deberta-v2"), "bert"
    )


def test_a_minilmv2_recipe_equals_run_minilm_distil(run, teacher, exp_root, tmp_path):  # noqa: F811
    """MiniLMv2's Q-Q, K-K, V-V relations of the student's last layer against the teacher's last (recipes/minilmv2.yaml
    over 4 relation heads, weighted 2.5), beside the logits loss, under --padding dynamic (max_length:
    tests/test_recipe_builtin.py): the relations exclude padding, as the script's."""
    import yaml

    data = yaml.safe_load((RECIPES / "minilmv2.yaml").read_text())
    data["terms"][2] = dict(data["terms"][2], relation_heads=4, weight=2.5)
    recipe = tmp_path / "minilmv2.json"
    recipe.write_text(json.dumps(data))
    run(
        "run_minilm_distil.py",
        *TEACHER,
        "--experiment",
        "script",
        *COMMON,
        "--relation_heads",
        "4",
        "--mu",
        "2.5",
        "--padding",
        "dynamic",
    )
    run("run_distil.py", "--recipe", str(recipe), *TEACHER, "--experiment", "recipe", *COMMON, "--padding", "dynamic")
    assert_same_weights(weights(exp_root / "script_bert_qqp"), weights(exp_root / "recipe_bert_qqp"))


def test_on_a_regression_task_the_logits_terms_are_the_scripts_mses(tmp_path):
    """STS-B-like (one output, a score): hard_labels ce and logits kl are MSE(s, y) and MSE(s, t), weighted as
    logits_kd_loss(regression=True) weighs them, so recipes/pkd.yaml's logits part is the script's there too."""
    from fine_tune.engine.protocol import ModelOutputs, TeacherShape
    from fine_tune.methods.base import MethodSettings, StudentShape
    from fine_tune.methods.recipe import RecipeFlags, RecipeKD

    method = RecipeKD.build(
        MethodSettings(
            groups={"recipe": RecipeFlags(recipe=str(RECIPES / "logits_kd.yaml"))},
            num_class=1,
            regression=True,
            student=StudentShape(3, 32, 2),
            teacher=TeacherShape(12, 32, 2),
            padding="dynamic",
        )
    )
    g = torch.Generator().manual_seed(11)
    s, t = torch.randn(5, 1, generator=g) * 2, torch.randn(5, 1, generator=g) + 1.5
    y = torch.tensor([0.2, 4.8, 2.5, 3.75, 1.0])
    parts = method.losses({"labels": y}, ModelOutputs(logits=s), ModelOutputs(logits=t))
    hard, soft = ((s[:, 0] - y) ** 2).mean(), ((s[:, 0] - t[:, 0]) ** 2).mean()
    torch.testing.assert_close(parts["hard_labels_ce"], 0.8 * hard)
    torch.testing.assert_close(parts["logits_kl"], 0.2 * soft)
    torch.testing.assert_close(parts["loss"], 0.8 * hard + 0.2 * soft)
