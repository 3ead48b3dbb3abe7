"""The shipped recipes of TinyBERT's two stages, MiniLM and MiniLMv2 train the same student as their scripts, bit
for bit (torch.equal on every tensor of the saved checkpoints, W_h's too), on the tiny 12-layer teacher with a
3-layer student: non-default weights and temperatures, both paddings where the built-in's masked and full-sequence
forms differ; and the recipe's training: (TinyBERT's constant learning rate, skipped incomplete batches) resolved as
the script's method resolves them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from test_layerwise_scripts import TEACHER, TINY, teacher  # noqa: F401 - the fixture
from test_recipe_method import assert_same_weights, weights
from test_scripts_e2e import tb_scalars

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
    "--lr",
    "1e-3",
    "--batch_size",
    "8",
]
LOSS = "qqp/train/bert/loss"


def shipped(name: str) -> dict:
    return yaml.safe_load((RECIPES / name).read_text())


def written(tmp_path: Path, data: dict, name: str) -> str:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(data))
    return str(path)


def reweighted(data: dict, weight: float) -> dict:
    """Every term's weight (a sum's: the sum's) set to ``weight``."""
    return dict(data, terms=[dict(t, weight=weight) for t in data["terms"]])


def same(run, exp_root, script_args: list[str], recipe: str, args: list[str], name: str) -> None:
    run(*script_args, *TEACHER, "--experiment", f"{name}s", *args)
    run("run_distil.py", "--recipe", recipe, *TEACHER, "--experiment", f"{name}r", *args)
    script, recipe_run = exp_root / f"{name}s_bert_qqp", exp_root / f"{name}r_bert_qqp"
    assert_same_weights(weights(script), weights(recipe_run))
    # and the same logged loss at every step, bit for bit (MiniLM's mu (L_AT + L_VR): a sum term weighted once)
    logged = [tb_scalars(exp_root / "log" / f"{name}{who}_bert_qqp")[LOSS] for who in ("s", "r")]
    assert logged[0] == logged[1] and len(logged[0]) == 3, logged
    projections = [
        torch.load(f / "projection-3.pt", weights_only=True) if (f / "projection-3.pt").exists() else None
        for f in (script, recipe_run)
    ]
    if projections != [None, None]:
        assert None not in projections
        assert_same_weights(*projections)


def test_shipped_builtin_recipes_equal_their_scripts(run, teacher, exp_root, tmp_path):  # noqa: F811
    """One teacher for every comparison (the suite's time). TinyBERT intermediate: the shipped file at --padding
    max_length (the released code's full-sequence MSE, padding keys' scores 0), and weighted 2.5 = --mu 2.5 under
    --padding dynamic (TinyBERT's masked MSE in its order of additions); W_h (projection-3.pt) too. Prediction: soft
    0.7 at T 2.5 plus hard 0.3. MiniLM (v1): the sum term weighted 2.5 = --mu 2.5 (mu (L_AT + L_VR), summed before
    weighting), hard 0.35, soft 0.65 at T 2. MiniLMv2: the shipped file with its relation heads 48 -> 4 (48 do not
    divide the tiny width 32), at max_length."""
    tiny = ["run_tinybert_distil.py", "--tinybert_stage", "intermediate"]
    same(run, exp_root, tiny, str(RECIPES / "tinybert_intermediate.yaml"), [*COMMON, "--padding", "max_length"], "tbi")
    data = reweighted(shipped("tinybert_intermediate.yaml"), 2.5)
    same(
        run, exp_root, [*tiny, "--mu", "2.5"], written(tmp_path, data, "tbi"), [*COMMON, "--padding", "dynamic"], "tbd"
    )
    data = shipped("tinybert_prediction.yaml")
    data["terms"] = [
        dict(data["terms"][0], weight=0.7, temperature=2.5),
        {"feature": "hard_labels", "loss": "ce", "weight": 0.3},
    ]
    same(
        run,
        exp_root,
        [
            "run_tinybert_distil.py",
            "--tinybert_stage",
            "prediction",
            "--soft_weight",
            "0.7",
            "--hard_weight",
            "0.3",
            "--softmax_temp",
            "2.5",
        ],
        written(tmp_path, data, "tbp"),
        [*COMMON, "--padding", "dynamic"],
        "tbp",
    )
    data = shipped("minilm.yaml")
    data["terms"] = [
        dict(data["terms"][0], weight=0.35),
        dict(data["terms"][1], weight=0.65, temperature=2.0),
        dict(data["terms"][2], weight=2.5),
    ]
    same(
        run,
        exp_root,
        [
            "run_minilm_distil.py",
            "--mu",
            "2.5",
            "--hard_weight",
            "0.35",
            "--soft_weight",
            "0.65",
            "--softmax_temp",
            "2",
        ],
        written(tmp_path, data, "minilm"),
        [*COMMON, "--padding", "dynamic"],
        "ml",
    )
    data = shipped("minilmv2.yaml")
    data["terms"][2] = dict(data["terms"][2], relation_heads=4)
    same(
        run,
        exp_root,
        ["run_minilm_distil.py", "--relation_heads", "4"],
        written(tmp_path, data, "minilmv2"),
        [*COMMON, "--padding", "max_length"],
        "ml2",
    )


@pytest.mark.parametrize("stage", ["intermediate", "prediction"])
def test_tinybert_recipes_train_as_the_script(tmp_path, stage):
    """How it trains, beyond the losses (the run plan resolves these for recipe and script alike): the recipe's
    training: gives TinyBERT's learning-rate schedule (W_h's too), its skipped incomplete batches, its shared W_h
    at equal widths; and a recipe without training: keeps the scripts' linear schedule and every row."""
    from fine_tune.engine.optim import OptimiserSettings
    from fine_tune.engine.protocol import TeacherShape
    from fine_tune.errors import UserError
    from fine_tune.methods.base import MethodSettings, StudentShape
    from fine_tune.methods.recipe import RecipeFlags, RecipeKD
    from fine_tune.methods.tinybert import TinyBERT, TinyBertDistilFlags, TinyBertFlags
    from fine_tune.settings import LayerwiseFlags

    def settings(groups: dict) -> MethodSettings:
        return MethodSettings(
            groups=groups,
            num_class=2,
            student=StudentShape(3, 32, 2),
            teacher=TeacherShape(12, 32, 2),
            padding="dynamic",
            optimiser=OptimiserSettings(1e-3, 10, 1),
        )

    script = TinyBERT.build(
        settings(
            {
                "tinybert": TinyBertFlags(tinybert_stage=stage),
                "distil": TinyBertDistilFlags(),
                "layerwise": LayerwiseFlags(),
            }
        )
    )
    recipe = RecipeKD.build(settings({"recipe": RecipeFlags(recipe=str(RECIPES / f"tinybert_{stage}.yaml"))}))
    assert (recipe.schedule, recipe.drop_last) == (script.schedule, script.drop_last)
    assert recipe.drop_last and recipe.schedule == ("constant" if stage == "intermediate" else "linear")
    assert recipe.needs_projection == script.needs_projection == (stage == "intermediate")
    for t in recipe.terms:  # the uniform rule is TinyBERT's g(m) = ceil(m N / M); the embeddings (0, 0)
        assert [p[1] for p in t.pairs] == (
            script.teacher_layers
            if t.term.feature in ("attention_scores", "hidden")
            else [0]
            if t.term.feature == "embeddings"
            else []
        )
    assert recipe.projection_optimiser.schedule == script.projection_optimiser.schedule == recipe.schedule
    with pytest.raises(UserError, match="fewer than one micro-batch .*training.incomplete_batches: skip"):
        recipe.check_training_rows(5, 8, "train.jsonl")
    recipe.check_training_rows(8, 8, "train.jsonl")
    plain = RecipeKD.build(settings({"recipe": RecipeFlags(recipe=str(RECIPES / "pkd.yaml"))}))
    assert (plain.schedule, plain.drop_last, plain.projection_optimiser.schedule) == ("linear", False, "linear")
    plain.check_training_rows(5, 8, "train.jsonl")


def test_the_shipped_files_parse_with_their_stated_values():
    from fine_tune.recipes.format import load_recipe

    v2 = load_recipe(RECIPES / "minilmv2.yaml")
    assert v2.terms[2].relation_heads == 48 and v2.terms[2].layers.resolve(6, 12, "x") == ((6, 12),)
    v1 = load_recipe(RECIPES / "minilm.yaml")
    assert [(t.feature, t.group, t.weight.start) for t in v1.terms[2:]] == [
        ("attention_probs", "minilm", 1.0),
        ("value_relation", "minilm", 1.0),
    ]
    mid = load_recipe(RECIPES / "tinybert_intermediate.yaml")
    assert (mid.training.schedule, mid.training.incomplete_batches) == ("constant", "skip")
    assert [(t.reduction, t.projection) for t in mid.terms] == [("sum", None), ("sum", "shared"), ("sum", "shared")]
    pred = load_recipe(RECIPES / "tinybert_prediction.yaml")
    assert (pred.training.schedule, pred.training.incomplete_batches) == ("linear", "skip")


def test_minilms_sum_term_is_its_loss_bit_for_bit(tmp_path):
    """recipes/minilm.yaml (sum weighted 2.5, hard 0.35, soft 0.65 at T 2) on synthetic outputs (2 of 3 layers, real
    tokens 7, 5, 3 of 7): the loss is MiniLM's mu (L_AT + L_VR) bit for bit, which the two terms weighted one by
    one are not (the same gradients: the weights trained are equal either way; the logged loss is not)."""
    from test_recipe_terms import LABELS, STUDENT, TEACHER

    from fine_tune.engine.protocol import TeacherShape
    from fine_tune.methods.base import MethodSettings, StudentShape
    from fine_tune.methods.minilm import MiniLM
    from fine_tune.methods.recipe import RecipeFlags, RecipeKD

    data = shipped("minilm.yaml")
    data["terms"] = [
        dict(data["terms"][0], weight=0.35),
        dict(data["terms"][1], weight=0.65, temperature=2.0),
        dict(data["terms"][2], weight=2.5),
    ]
    recipe = RecipeKD.build(
        MethodSettings(
            groups={"recipe": RecipeFlags(recipe=written(tmp_path, data, "m"))},
            num_class=3,
            student=StudentShape(2, 8, 2),
            teacher=TeacherShape(3, 8, 2),
        )
    )
    minilm = MiniLM(2, 3, 0.35, 0.65, 2.0, 2.5, student_heads=2, teacher_heads=2, padding="dynamic")
    batch = {"labels": LABELS}
    want, got = minilm.losses(batch, STUDENT, TEACHER), recipe.losses(batch, STUDENT, TEACHER)
    assert torch.equal(got["loss"], want["loss"]) and torch.equal(got["minilm"], want["attention_relation_loss"])
    assert torch.equal(got["attention_probs_kl"] * 2.5, want["attention_kl"])
    separately = (want["logits_loss"] + got["attention_probs_kl"] * 2.5) + got["value_relation_kl"] * 2.5
    assert not torch.equal(separately, want["loss"])  # (this fixture tells the two apart)
