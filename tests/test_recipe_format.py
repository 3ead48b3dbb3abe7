"""The file format of distillation recipes (issue 33, fine_tune/recipes/format.py): a YAML file and the same
recipe as JSON parse to the same Recipe; every refusal is one line naming the file and the key path; schedules'
values, layer maps resolved on unequal depths (against ceil(j * Lt / Ls) computed here with fractions), and the
names of repeated terms."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from fractions import Fraction

import pytest

from fine_tune.errors import UserError
from fine_tune.recipes.format import (
    ALLOWED,
    FEATURES,
    LAYER_FEATURES,
    LOSSES,
    LayerMap,
    Recipe,
    Schedule,
    TeacherSpec,
    load_recipe,
    parse_recipe,
    parse_schedule,
)

EXAMPLE_YAML = """\
method: null          # optional; a built-in method name whose losses the terms are added to
teachers:            # optional; default: the run's teacher (named "teacher")
  - {name: t1, experiment: t1, model: bert, ckpt: best, weight: 1.0}
  - {name: t2, hf: path/to/finetuned-roberta, weight: 0.5}
terms:
  - {feature: logits, loss: kl, temperature: 2.0, weight: 0.5}
  - {feature: hard_labels, loss: ce, weight: 0.5}
  - {feature: hidden, loss: mse, layers: [[1, 2], [2, 4], [3, 6]], weight: 1.0}   # [student, teacher]
  - {feature: attention_probs, loss: kl, layers: {rule: last},
     weight: {schedule: linear, from: 0.0, to: 1.0, steps: 1000}}
  - {feature: qkv_relation, loss: kl, layers: [[3, 6]], relation_heads: 12, teacher: t1}
"""

EXAMPLE_JSON = """\
{"method": null,
 "teachers": [{"name": "t1", "experiment": "t1", "model": "bert", "ckpt": "best", "weight": 1.0},
              {"name": "t2", "hf": "path/to/finetuned-roberta", "weight": 0.5}],
 "terms": [{"feature": "logits", "loss": "kl", "temperature": 2.0, "weight": 0.5},
           {"feature": "hard_labels", "loss": "ce", "weight": 0.5},
           {"feature": "hidden", "loss": "mse", "layers": [[1, 2], [2, 4], [3, 6]], "weight": 1.0},
           {"feature": "attention_probs", "loss": "kl", "layers": {"rule": "last"},
            "weight": {"schedule": "linear", "from": 0.0, "to": 1.0, "steps": 1000}},
           {"feature": "qkv_relation", "loss": "kl", "layers": [[3, 6]], "relation_heads": 12, "teacher": "t1"}]}
"""


def test_the_example_parses_the_same_from_yaml_and_json(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "r.yaml").write_text(EXAMPLE_YAML)
    (tmp_path / "r.json").write_text(EXAMPLE_JSON)
    y, j = load_recipe("r.yaml"), load_recipe("r.json")
    assert (y.path, j.path) == ("r.yaml", "r.json")
    assert y.text == EXAMPLE_YAML
    import hashlib

    assert y.sha256 == hashlib.sha256(EXAMPLE_YAML.encode()).hexdigest()
    assert j.sha256 == hashlib.sha256(EXAMPLE_JSON.encode()).hexdigest()
    assert replace(y, path=None, sha256=None, text=None) == replace(j, path=None, sha256=None, text=None)

    assert y.method is None
    assert y.teachers == (
        TeacherSpec("t1", "t1", "bert", "best", None, 1.0),
        TeacherSpec("t2", None, None, None, "path/to/finetuned-roberta", 0.5),
    )
    logits, hard, hidden, att, qkv = y.terms
    assert [t.index for t in y.terms] == [0, 1, 2, 3, 4]
    assert [t.name for t in y.terms] == [
        "logits_kl",
        "hard_labels_ce",
        "hidden_mse",
        "attention_probs_kl",
        "qkv_relation_kl",
    ]
    assert (logits.feature, logits.loss, logits.weight, logits.temperature) == (
        "logits",
        "kl",
        Schedule.constant(0.5),
        Schedule.constant(2.0),
    )
    assert (logits.layers, logits.projection, logits.teacher, logits.relation_heads, logits.head_mean) == (
        None,
        None,
        None,
        None,
        False,
    )
    assert (hard.feature, hard.loss, hard.weight, hard.temperature, hard.teacher) == (
        "hard_labels",
        "ce",
        Schedule.constant(0.5),
        None,
        None,
    )
    assert hidden.layers == LayerMap(pairs=((1, 2), (2, 4), (3, 6)))
    assert (hidden.projection, hidden.temperature, hidden.weight) == ("auto", None, Schedule.constant(1.0))
    assert att.layers == LayerMap(rule="last") and att.head_mean is False and att.projection is None
    assert att.weight == Schedule("linear", 0.0, 1.0, 1000)
    assert (qkv.relation_heads, qkv.teacher, qkv.layers.pairs, qkv.weight) == (
        12,
        "t1",
        ((3, 6),),
        Schedule.constant(1.0),
    )


def test_the_record_is_json_and_parses_back_to_the_same_recipe(tmp_path):
    text = EXAMPLE_YAML.replace("ckpt: best", "ckpt: 1200").replace(
        "relation_heads: 12", "relation_heads: 12, name: rel"
    ) + (
        "  - {feature: attention_scores, loss: mse, layers: skip, head_mean: true, weight: {schedule: constant, "
        "value: 0.25}}\n  - {feature: embeddings, loss: cosine, projection: none, teacher: t2}\n"
        "  - {feature: logits, loss: ce, temperature: {schedule: linear, from: 4.0, to: 1.5, steps: 30}}\n"
    )
    path = tmp_path / "r.yaml"
    path.write_text(text)
    recipe = load_recipe(path)
    record = json.loads(json.dumps(recipe.record()))
    assert (record["path"], record["sha256"]) == (str(path), recipe.sha256)
    assert record["teachers"][0] == {"name": "t1", "experiment": "t1", "model": "bert", "ckpt": 1200, "weight": 1.0}
    assert record["terms"][5] == {
        "name": "attention_scores_mse",
        "feature": "attention_scores",
        "loss": "mse",
        "weight": {"schedule": "constant", "value": 0.25},
        "layers": {"rule": "skip"},
        "head_mean": True,
    }
    assert record["terms"][6] == {
        "name": "embeddings_cosine",
        "feature": "embeddings",
        "loss": "cosine",
        "weight": {"schedule": "constant", "value": 1.0},
        "projection": "none",
        "teacher": "t2",
    }
    assert record["terms"][4]["name"] == "rel"
    again = parse_recipe({k: record[k] for k in ("method", "teachers", "terms")}, "config.json")
    assert again == replace(recipe, path=None, sha256=None, text=None)


def test_the_tables_agree():
    assert set(ALLOWED) == set(FEATURES) and all(set(v) <= set(LOSSES) for v in ALLOWED.values())
    assert set(LAYER_FEATURES) == set(FEATURES) - {"logits", "hard_labels", "embeddings"}
    assert ALLOWED["logits"] == ("kl", "mse", "ce") and ALLOWED["hard_labels"] == ("ce",)


GOOD = "terms:\n  - {feature: logits, loss: kl}\n"
T2 = "teachers:\n  - {name: bert_large, experiment: e, model: bert}\n"


def term(body: str) -> str:
    return "terms:\n  - {" + body + "}\n"


REFUSALS = [
    # (id, file name, file text, the message after "recipe NAME: ")
    ("bad_yaml", "r.yaml", "terms:\n  - feature: logits\n   loss: kl\n", "not valid YAML (line 3, column 4: "),
    ("bad_json", "r.json", '{"terms": [\n  {"feature": "logits",}\n]}', "not valid JSON (line 2, column 24: "),
    ("yaml_key_twice", "r.yaml", "terms: []\nterms: []\n", "not valid YAML (line 2, column 1: key 'terms' given twice"),
    (
        "json_key_twice",
        "r.json",
        '{"terms": [{"feature": "logits", "loss": "kl", "loss": "ce"}]}',
        "not valid JSON (key 'loss' given twice)",
    ),
    ("not_utf8", "r.yaml", b"terms: \xff\n", "not UTF-8 text (byte 7)"),
    ("suffix", "r.txt", GOOD, "a recipe is a YAML (.yaml, .yml) or JSON (.json) file"),
    ("top_level_list", "r.yaml", "- {feature: logits, loss: kl}\n", "the top level is a list; a recipe is a mapping"),
    ("top_level_empty", "r.yml", "", "the top level is null; a recipe is a mapping"),
    (
        "top_level_key",
        "r.yaml",
        "term: []\n",
        "term: unknown key 'term'; did you mean 'terms'? expected one of: method, teachers, terms",
    ),
    ("terms_missing", "r.yaml", "method: null\n", "no terms; a recipe lists its loss terms under terms"),
    ("terms_empty", "r.yaml", "terms: []\n", "terms: empty; a recipe has at least one term"),
    ("terms_not_a_list", "r.yaml", "terms: {feature: logits}\n", "terms: expected a list of terms, got a mapping"),
    ("term_not_a_mapping", "r.yaml", "terms: [logits]\n", "terms[0]: expected a mapping, got a string ('logits')"),
    (
        "term_key",
        "r.yaml",
        GOOD + "  - {feature: logits, loss: kl, temprature: 2}\n",
        "terms[1].temprature: unknown key 'temprature'; did you mean 'temperature'?",
    ),
    ("feature_missing", "r.yaml", term("loss: kl"), "terms[0]: a term needs its feature"),
    (
        "feature_unknown",
        "r.yaml",
        term("feature: hiden, loss: mse, layers: uniform"),
        "terms[0].feature: unknown feature 'hiden'; did you mean 'hidden'?",
    ),
    (
        "loss_unknown",
        "r.yaml",
        GOOD + "  - {feature: logits, loss: ce}\n  - {feature: hidden, loss: msee, layers: uniform}\n",
        "terms[2].loss: unknown loss 'msee'; did you mean 'mse'?",
    ),
    (
        "loss_not_allowed",
        "r.yaml",
        term("feature: hidden, loss: kl, layers: uniform"),
        "terms[0].loss: loss 'kl' is not allowed for feature 'hidden' (allowed: mse, cosine, normalized_mse)",
    ),
    (
        "loss_not_allowed_hard",
        "r.yaml",
        term("feature: hard_labels, loss: kl"),
        "terms[0].loss: loss 'kl' is not allowed for feature 'hard_labels' (allowed: ce)",
    ),
    (
        "layers_missing",
        "r.yaml",
        term("feature: attention_probs, loss: kl"),
        "terms[0]: attention_probs needs layers: [student, teacher] pairs or a rule (uniform, skip, last, final)",
    ),
    (
        "layers_on_logits",
        "r.yaml",
        term("feature: logits, loss: kl, layers: uniform"),
        "terms[0].layers: logits takes no layers (it is not a layer feature",
    ),
    (
        "layers_on_embeddings",
        "r.yaml",
        term("feature: embeddings, loss: mse, layers: [[0, 0]]"),
        "terms[0].layers: embeddings takes no layers (embeddings is the layer pair (0, 0))",
    ),
    (
        "layers_rule_unknown",
        "r.yaml",
        term("feature: hidden, loss: mse, layers: uniformly"),
        "terms[0].layers: unknown layer rule 'uniformly'; did you mean 'uniform'?",
    ),
    (
        "layers_rule_mapping",
        "r.yaml",
        term("feature: hidden, loss: mse, layers: {rul: last}"),
        "terms[0].layers.rul: unknown key 'rul'; did you mean 'rule'?",
    ),
    ("layers_empty", "r.yaml", term("feature: hidden, loss: mse, layers: []"), "terms[0].layers: no layer pairs"),
    (
        "layers_number",
        "r.yaml",
        term("feature: hidden, loss: mse, layers: 3"),
        "terms[0].layers: expected a list of [student, teacher] layer pairs or a rule (uniform, skip, last), got a "
        "number (3)",
    ),
    (
        "layer_pair_short",
        "r.yaml",
        term("feature: hidden, loss: mse, layers: [[1, 2], [3]]"),
        "terms[0].layers[1]: expected a [student, teacher] pair of layer numbers, got a list",
    ),
    (
        "layer_negative",
        "r.yaml",
        term("feature: hidden, loss: mse, layers: [[1, -2]]"),
        "terms[0].layers[0][1]: -2 is below 0; expected an integer >= 0",
    ),
    (
        "layer_fraction",
        "r.yaml",
        term("feature: cls, loss: mse, layers: [[1.5, 2]]"),
        "terms[0].layers[0][0]: expected an integer >= 0, got a number (1.5)",
    ),
    (
        "layer_student_twice",
        "r.yaml",
        term("feature: hidden, loss: mse, layers: [[1, 2], [2, 4], [1, 6]]"),
        "terms[0].layers[2]: student layer 1 is mapped twice (also terms[0].layers[0])",
    ),
    (
        "attention_layer_0",
        "r.yaml",
        term("feature: value_relation, loss: kl, layers: [[2, 0]]"),
        "terms[0].layers[0][1]: teacher layer 0 is the embeddings, which have no attention; value_relation takes "
        "layers >= 1",
    ),
    (
        "temperature_on_hidden",
        "r.yaml",
        term("feature: hidden, loss: mse, layers: last, temperature: 2"),
        "terms[0].temperature: hidden takes no temperature (only logits have a temperature)",
    ),
    (
        "temperature_on_hard_labels",
        "r.yaml",
        term("feature: hard_labels, loss: ce, temperature: 2"),
        "terms[0].temperature: hard_labels takes no temperature",
    ),
    (
        "temperature_zero",
        "r.yaml",
        term("feature: logits, loss: kl, temperature: 0"),
        "terms[0].temperature: 0 is not > 0",
    ),
    (
        "temperature_linear_to_zero",
        "r.yaml",
        term("feature: logits, loss: kl, temperature: {schedule: linear, from: 2, to: 0.0, steps: 5}"),
        "terms[0].temperature.to: 0.0 is not > 0",
    ),
    (
        "teacher_on_hard_labels",
        "r.yaml",
        term("feature: hard_labels, loss: ce, teacher: teacher"),
        "terms[0].teacher: hard_labels learns from the gold labels, not from a teacher",
    ),
    (
        "teacher_undeclared",
        "r.yaml",
        T2 + term("feature: logits, loss: kl, teacher: bert_larg"),
        "terms[0].teacher: unknown teacher 'bert_larg'; did you mean 'bert_large'? expected one of: bert_large",
    ),
    (
        "teacher_default_only",
        "r.yaml",
        term("feature: logits, loss: kl, teacher: t1"),
        "terms[0].teacher: unknown teacher 't1'; expected one of: teacher",
    ),
    (
        "relation_heads_missing",
        "r.yaml",
        term("feature: qkv_relation, loss: kl, layers: last"),
        "terms[0]: qkv_relation needs relation_heads (an integer >= 1)",
    ),
    (
        "relation_heads_zero",
        "r.yaml",
        term("feature: qkv_relation, loss: kl, layers: last, relation_heads: 0"),
        "terms[0].relation_heads: 0 is below 1; expected an integer >= 1",
    ),
    (
        "relation_heads_elsewhere",
        "r.yaml",
        term("feature: value_relation, loss: kl, layers: last, relation_heads: 4"),
        "terms[0].relation_heads: value_relation takes no relation_heads",
    ),
    (
        "head_mean_elsewhere",
        "r.yaml",
        term("feature: hidden, loss: mse, layers: last, head_mean: true"),
        "terms[0].head_mean: hidden takes no head_mean",
    ),
    (
        "head_mean_string",
        "r.yaml",
        term("feature: attention_scores, loss: mse, layers: last, head_mean: maybe"),
        "terms[0].head_mean: expected true or false, got a string ('maybe')",
    ),
    (
        "projection_unknown",
        "r.yaml",
        term("feature: cls, loss: mse, layers: last, projection: linear"),
        "terms[0].projection: unknown projection 'linear'; expected one of: auto, none",
    ),
    (
        "projection_elsewhere",
        "r.yaml",
        term("feature: attention_probs, loss: kl, layers: last, projection: auto"),
        "terms[0].projection: attention_probs takes no projection",
    ),
    (
        "weight_string",
        "r.yaml",
        term("feature: logits, loss: kl, weight: heavy"),
        "terms[0].weight: expected a number or a mapping {schedule: constant|linear, ...}, got a string ('heavy')",
    ),
    (
        "weight_bool",
        "r.yaml",
        term("feature: logits, loss: kl, weight: true"),
        "terms[0].weight: expected a number or a mapping",
    ),
    (
        "weight_negative",
        "r.yaml",
        term("feature: logits, loss: kl, weight: -0.5"),
        "terms[0].weight: -0.5 is negative; expected a number >= 0",
    ),
    ("weight_nan", "r.yaml", term("feature: logits, loss: kl, weight: .nan"), "terms[0].weight: nan is not a finite"),
    (
        "schedule_unknown",
        "r.yaml",
        term("feature: logits, loss: kl, weight: {schedule: constnt, value: 1}"),
        "terms[0].weight.schedule: unknown schedule 'constnt'; did you mean 'constant'?",
    ),
    (
        "schedule_unnamed",
        "r.yaml",
        term("feature: logits, loss: kl, weight: {value: 1}"),
        "terms[0].weight: a mapping names its schedule",
    ),
    (
        "schedule_steps_zero",
        "r.yaml",
        term("feature: logits, loss: kl, weight: {schedule: linear, from: 0, to: 1, steps: 0}"),
        "terms[0].weight.steps: 0 is below 1; expected an integer >= 1",
    ),
    (
        "schedule_steps_missing",
        "r.yaml",
        term("feature: logits, loss: kl, weight: {schedule: linear, from: 0, to: 1}"),
        "terms[0].weight: a linear schedule needs from, to, steps; steps is missing",
    ),
    (
        "schedule_from_negative",
        "r.yaml",
        term("feature: logits, loss: kl, weight: {schedule: linear, from: -1, to: 1, steps: 9}"),
        "terms[0].weight.from: -1 is negative",
    ),
    (
        "schedule_from_text",
        "r.yaml",
        term("feature: logits, loss: kl, weight: {schedule: linear, from: low, to: 1, steps: 9}"),
        "terms[0].weight.from: expected a number, got a string ('low')",
    ),
    (
        "schedule_key_of_other_kind",
        "r.yaml",
        term("feature: logits, loss: kl, weight: {schedule: constant, value: 1, steps: 9}"),
        "terms[0].weight.steps: unknown key 'steps'",
    ),
    (
        "name_twice",
        "r.yaml",
        term("feature: logits, loss: kl, name: a") + "  - {feature: logits, loss: ce, name: a}\n",
        "terms[1].name: 'a' names terms[0] too",
    ),
    (
        "name_spaces",
        "r.yaml",
        term("feature: logits, loss: kl, name: my term"),
        "terms[0].name: expected a name of letters, digits",
    ),
    (
        "teacher_key",
        "r.yaml",
        "teachers:\n  - {name: t1, experimnet: e, model: bert}\n" + GOOD,
        "teachers[0].experimnet: unknown key 'experimnet'; did you mean 'experiment'?",
    ),
    (
        "teacher_both",
        "r.yaml",
        "teachers:\n  - {name: t1, experiment: e, model: bert, hf: x}\n" + GOOD,
        "teachers[0]: a teacher is either an experiment (experiment, model, ckpt) or a Hugging Face model (hf): give "
        "exactly one of experiment and hf",
    ),
    (
        "teacher_neither",
        "r.yaml",
        "teachers:\n  - {name: t1, model: bert}\n" + GOOD,
        "teachers[0]: a teacher is either an experiment",
    ),
    (
        "teacher_model_missing",
        "r.yaml",
        "teachers:\n  - {name: t1, experiment: e}\n" + GOOD,
        "teachers[0]: an experiment teacher needs its model",
    ),
    (
        "teacher_hf_with_ckpt",
        "r.yaml",
        "teachers:\n  - {name: t1, hf: x, ckpt: best}\n" + GOOD,
        "teachers[0].ckpt: a Hugging Face teacher (hf) takes no ckpt",
    ),
    (
        "teacher_ckpt",
        "r.yaml",
        "teachers:\n  - {name: t1, experiment: e, model: bert, ckpt: bestt}\n" + GOOD,
        "teachers[0].ckpt: expected a checkpoint step, 'best' or 'last', got 'bestt'",
    ),
    (
        "teacher_weight_zero",
        "r.yaml",
        "teachers:\n  - {name: t1, hf: x, weight: 0}\n" + GOOD,
        "teachers[0].weight: 0 is not > 0",
    ),
    ("teacher_name_missing", "r.yaml", "teachers:\n  - {hf: x}\n" + GOOD, "teachers[0]: a teacher needs a name"),
    (
        "teacher_names_twice",
        "r.yaml",
        "teachers:\n  - {name: t1, hf: x}\n  - {name: t1, hf: y}\n" + GOOD,
        "teachers[1].name: 't1' names teachers[0] too",
    ),
    ("teachers_empty", "r.yaml", "teachers: []\n" + GOOD, "teachers: expected a non-empty list of teachers"),
    ("method_number", "r.yaml", "method: 3\n" + GOOD, "method: expected a method name or null, got a number (3)"),
    # training:, reduction, sums, projections (issue 33, the built-ins as recipes)
    (
        "training_key",
        "r.yaml",
        "training: {schedul: constant}\n" + GOOD,
        "training.schedul: unknown key 'schedul'; did you mean 'schedule'? expected one of: schedule, incomplete_batches",
    ),
    (
        "training_schedule",
        "r.yaml",
        "training: {schedule: constnt}\n" + GOOD,
        "training.schedule: unknown learning-rate schedule 'constnt'; did you mean 'constant'? expected one of: linear, "
        "constant",
    ),
    (
        "training_batches",
        "r.yaml",
        "training: {incomplete_batches: skp}\n" + GOOD,
        "training.incomplete_batches: unknown incomplete_batches value 'skp'; did you mean 'skip'?",
    ),
    ("training_list", "r.yaml", "training: [constant]\n" + GOOD, "training: expected a mapping, got a list"),
    (
        "reduction_typo",
        "r.yaml",
        term("feature: hidden, loss: mse, layers: skip, reduction: summ"),
        "terms[0].reduction: unknown reduction 'summ'; did you mean 'sum'? expected one of: mean, sum",
    ),
    (
        "reduction_on_logits",
        "r.yaml",
        term("feature: logits, loss: kl, reduction: sum"),
        "terms[0].reduction: logits takes no reduction (it has no layer pairs to combine)",
    ),
    (
        "final_typo",
        "r.yaml",
        term("feature: hidden, loss: mse, layers: finl"),
        "terms[0].layers: unknown layer rule 'finl'; did you mean 'final'?",
    ),
    (
        "sum_member_weight",
        "r.yaml",
        "terms:\n  - {weight: 2, sum: [{feature: logits, loss: kl, weight: 3}]}\n",
        "terms[0].sum[0].weight: a member of a sum takes the sum's weight (terms[0].weight)",
    ),
    (
        "sum_nested",
        "r.yaml",
        "terms:\n  - {sum: [{sum: [{feature: logits, loss: kl}]}]}\n",
        "terms[0].sum[0].sum: a sum's member is one term (sums do not nest)",
    ),
    ("sum_empty", "r.yaml", "terms:\n  - {sum: []}\n", "terms[0].sum: expected a non-empty list of terms, got a list"),
    (
        "sum_key",
        "r.yaml",
        "terms:\n  - {sum: [{feature: logits, loss: kl}], weigth: 2}\n",
        "terms[0].weigth: unknown key 'weigth'; did you mean 'weight'? expected one of: sum, weight, name",
    ),
    (
        "sum_member_loss",
        "r.yaml",
        "terms:\n  - {sum: [{feature: logits, loss: kl}, {feature: logits, loss: msee}]}\n",
        "terms[0].sum[1].loss: unknown loss 'msee'; did you mean 'mse'?",
    ),
    (
        "sum_name_twice",
        "r.yaml",
        "terms:\n  - {feature: logits, loss: kl, name: a}\n  - {name: a, sum: [{feature: logits, loss: ce}]}\n",
        "terms[1].name: 'a' names terms[0] too",
    ),
    (
        "projections_mixed",
        "r.yaml",
        "terms:\n  - {feature: hidden, loss: mse, layers: skip}\n"
        "  - {feature: embeddings, loss: mse, projection: shared}\n",
        "terms[0].projection: auto (a projection per layer) beside terms[1]'s shared (one for every layer): a recipe has "
        "one projection",
    ),
    (
        "training_with_method",
        "r.yaml",
        "method: tinybert\ntraining: {schedule: linear}\n" + GOOD,
        "training: a recipe adding terms to tinybert trains as tinybert does (its schedule and batches are its flags'); "
        "drop training:",
    ),
]


@pytest.mark.parametrize("name,text,message", [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_a_bad_recipe_is_refused_in_one_line_naming_the_file_and_key(tmp_path, monkeypatch, name, text, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(UserError) as e:
        load_recipe(name)
    assert str(e.value).startswith(f"recipe {name}: {message}"), str(e.value)
    assert "\n" not in str(e.value)


def test_an_unreadable_file_is_refused_in_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=r"^recipe missing\.yaml: not readable \(No such file or directory\)$"):
        load_recipe("missing.yaml")
    (tmp_path / "d.json").mkdir()
    with pytest.raises(UserError, match=r"^recipe d\.json: not readable \(Is a directory\)$"):
        load_recipe("d.json")


def test_a_refusal_of_an_already_loaded_mapping_names_the_callers_where():
    with pytest.raises(UserError, match=r"^config\.json recipe: terms\[0\]\.loss: unknown loss 'cross'"):
        parse_recipe({"terms": [{"feature": "logits", "loss": "cross"}]}, "config.json recipe")


def test_yaml_reads_exponents_without_a_point_as_numbers(tmp_path):
    (tmp_path / "r.yaml").write_text(term("feature: logits, loss: kl, weight: 3e-3, temperature: 2E+1"))
    t = load_recipe(tmp_path / "r.yaml").terms[0]
    assert (t.weight, t.temperature) == (Schedule.constant(0.003), Schedule.constant(20.0))


def test_the_runs_teacher_is_the_default_teacher_and_a_teacher_can_be_a_step(tmp_path):
    recipe = parse_recipe({"terms": [{"feature": "logits", "loss": "kl", "teacher": "teacher"}]}, "r")
    assert recipe.teachers == () and recipe.terms[0].teacher == "teacher"
    recipe = parse_recipe(
        {
            "teachers": [
                {"name": "a", "experiment": "e", "model": "m", "ckpt": 300},
                {"name": "b", "experiment": "e2", "model": "m2", "weight": 2.5},
            ],
            "terms": [{"feature": "hidden", "loss": "mse", "layers": [[0, 0], [2, 12]]}],
        },
        "r",
    )
    assert recipe.teachers == (
        TeacherSpec("a", "e", "m", 300, None, 1.0),
        TeacherSpec("b", "e2", "m2", "best", None, 2.5),
    )
    assert recipe.terms[0].layers.pairs == ((0, 0), (2, 12)) and recipe.terms[0].teacher is None


# ---- schedules -------------------------------------------------------------------------------------------------


def test_schedules_value_at_each_step():
    rising = parse_schedule({"schedule": "linear", "from": 0.2, "to": 1.4, "steps": 300}, "r", "w")
    expected = {
        0: 0.2,
        1: 0.2 + 1.2 / 300,
        75: 0.5,
        150: 0.8,
        299: 0.2 + 1.2 * 299 / 300,
        300: 1.4,
        301: 1.4,
        10_000: 1.4,
    }
    for step, value in expected.items():
        assert rising.value_at(step) == pytest.approx(value, abs=1e-12), step
    falling = parse_schedule({"schedule": "linear", "from": 2.0, "to": 0.5, "steps": 4}, "r", "t", positive=True)
    assert [falling.value_at(s) for s in range(6)] == [2.0, 1.625, 1.25, 0.875, 0.5, 0.5]
    for raw in (0.3, {"schedule": "constant", "value": 0.3}):
        constant = parse_schedule(raw, "r", "w")
        assert constant == Schedule.constant(0.3) == Schedule("constant", 0.3, 0.3, 1)
        assert [constant.value_at(s) for s in (0, 1, 7, 10**6)] == [0.3] * 4
    assert parse_schedule(2, "r", "w").value_at(5) == 2.0 and isinstance(parse_schedule(2, "r", "w").start, float)
    with pytest.raises(ValueError):
        rising.value_at(-1)


# ---- layer maps ------------------------------------------------------------------------------------------------


def ceil_map(ls: int, lt: int) -> tuple[tuple[int, int], ...]:
    return tuple((j, math.ceil(Fraction(j * lt, ls))) for j in range(1, ls + 1))


def test_each_rule_resolves_on_unequal_depths():
    uniform, skip, last = LayerMap(rule="uniform"), LayerMap(rule="skip"), LayerMap(rule="last")
    assert uniform.resolve(3, 6, "w") == ((1, 2), (2, 4), (3, 6))
    assert uniform.resolve(4, 6, "w") == ((1, 2), (2, 3), (3, 5), (4, 6))
    assert skip.resolve(4, 6, "w") == ((1, 2), (2, 3), (3, 5), (4, 6))
    assert uniform.resolve(4, 12, "w") == ((1, 3), (2, 6), (3, 9), (4, 12))
    assert uniform.resolve(6, 4, "w") == ((1, 1), (2, 2), (3, 2), (4, 3), (5, 4), (6, 4))
    assert last.resolve(3, 6, "w") == ((1, 4), (2, 5), (3, 6))
    assert last.resolve(4, 4, "w") == ((1, 1), (2, 2), (3, 3), (4, 4))
    assert last.resolve(5, 24, "w") == ((1, 20), (2, 21), (3, 22), (4, 23), (5, 24))
    for ls in range(1, 13):
        for lt in range(1, 25):
            assert uniform.resolve(ls, lt, "w") == skip.resolve(ls, lt, "w") == ceil_map(ls, lt), (ls, lt)
            if ls <= lt:
                assert last.resolve(ls, lt, "w") == tuple((j, lt - ls + j) for j in range(1, ls + 1))
    with pytest.raises(
        UserError,
        match=r"^recipe r\.yaml: terms\[3\]\.layers: rule 'last' maps the 6-layer student "
        r"onto the teacher's last layers, but the teacher has only 4$",
    ):
        last.resolve(6, 4, "recipe r.yaml: terms[3].layers")


def test_explicit_pairs_resolve_as_given_and_a_layer_outside_either_model_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "r.yaml").write_text(EXAMPLE_YAML)
    hidden = load_recipe("r.yaml").terms[2]
    assert hidden.layers.resolve(3, 6, "w") == ((1, 2), (2, 4), (3, 6))
    assert hidden.layers.resolve(5, 7, "w") == ((1, 2), (2, 4), (3, 6))
    with pytest.raises(UserError) as e:
        hidden.layers.resolve(2, 6, "recipe r.yaml: terms[2].layers")
    assert str(e.value) == "recipe r.yaml: terms[2].layers: student layer 3 is outside the 2-layer student"
    with pytest.raises(UserError) as e:
        hidden.layers.resolve(3, 5, "recipe r.yaml: terms[2].layers")
    assert str(e.value) == "recipe r.yaml: terms[2].layers: teacher layer 6 is outside the 5-layer teacher"
    with pytest.raises(UserError, match="student layer 4 is outside the 3-layer student"):
        LayerMap(pairs=((4, 1),)).resolve(3, 6, "w")
    assert LayerMap(pairs=((0, 0), (3, 12))).resolve(3, 12, "w") == ((0, 0), (3, 12))


def test_a_bare_rule_and_a_rule_mapping_are_the_same():
    for rule in ("uniform", "skip", "last"):
        a = parse_recipe({"terms": [{"feature": "cls", "loss": "mse", "layers": rule}]}, "r")
        b = parse_recipe({"terms": [{"feature": "cls", "loss": "mse", "layers": {"rule": rule}}]}, "r")
        assert a == b and a.terms[0].layers == LayerMap(rule=rule)


# ---- names -----------------------------------------------------------------------------------------------------


def test_repeated_terms_are_named_in_order_around_given_names():
    terms = [
        {"feature": "logits", "loss": "kl"},
        {"feature": "logits", "loss": "kl", "temperature": 3.0},
        {"feature": "hidden", "loss": "mse", "layers": "uniform"},
        {"feature": "logits", "loss": "kl", "name": "logits_kl_3"},
        {"feature": "logits", "loss": "kl"},
        {"feature": "hidden", "loss": "mse", "layers": "last"},
        {"feature": "logits", "loss": "mse", "name": "hidden_mse_3"},
        {"feature": "hidden", "loss": "mse", "layers": "skip"},
    ]
    recipe = parse_recipe({"terms": terms}, "r")
    assert [t.name for t in recipe.terms] == [
        "logits_kl",
        "logits_kl_2",
        "hidden_mse",
        "logits_kl_3",
        "logits_kl_4",
        "hidden_mse_2",
        "hidden_mse_3",
        "hidden_mse_4",
    ]
    assert recipe.terms[1].temperature == Schedule.constant(3.0)
    assert isinstance(recipe, Recipe)


def test_sums_training_and_reductions_record_and_parse_back(tmp_path):
    """A sum's members are flat terms that carry the sum's name and weight (its weight applied once, methods/recipe.py);
    unnamed sums are sum, sum_2 (members named as terms); training: and reduction: are recorded with their defaults
    spelt out, and the record parses back to the same recipe."""
    path = tmp_path / "r.yaml"
    path.write_text(
        "training: {schedule: constant}\nterms:\n"
        "  - {feature: hidden, loss: mse, layers: uniform, reduction: sum, projection: shared}\n"
        "  - {weight: 2.5, sum: [{feature: attention_probs, loss: kl, layers: final},\n"
        "                        {feature: value_relation, loss: kl, layers: final}]}\n"
        "  - {name: rel, weight: {schedule: linear, from: 0.0, to: 1.0, steps: 4},\n"
        "     sum: [{feature: attention_probs, loss: kl, layers: [[1, 2]]}]}\n"
        "  - {sum: [{feature: logits, loss: kl, temperature: 2.0}]}\n"
    )
    recipe = load_recipe(path)
    assert [(t.key, t.name, t.group, t.member, t.weight.record()) for t in recipe.terms] == [
        ("terms[0]", "hidden_mse", None, None, {"schedule": "constant", "value": 1.0}),
        ("terms[1].sum[0]", "attention_probs_kl", "sum", 0, {"schedule": "constant", "value": 2.5}),
        ("terms[1].sum[1]", "value_relation_kl", "sum", 1, {"schedule": "constant", "value": 2.5}),
        (
            "terms[2].sum[0]",
            "attention_probs_kl_2",
            "rel",
            0,
            {"schedule": "linear", "from": 0.0, "to": 1.0, "steps": 4},
        ),
        ("terms[3].sum[0]", "logits_kl", "sum_2", 0, {"schedule": "constant", "value": 1.0}),
    ]
    assert (recipe.training.schedule, recipe.training.incomplete_batches) == ("constant", "train")
    assert (recipe.terms[0].reduction, recipe.terms[0].projection, recipe.terms[1].reduction) == (
        "sum",
        "shared",
        "mean",
    )
    record = json.loads(json.dumps(recipe.record()))
    assert record["training"] == {"schedule": "constant", "incomplete_batches": "train"}
    assert record["terms"][1] == {
        "name": "sum",
        "weight": {"schedule": "constant", "value": 2.5},
        "sum": [
            {
                "name": "attention_probs_kl",
                "feature": "attention_probs",
                "loss": "kl",
                "layers": {"rule": "final"},
                "head_mean": False,
            },
            {"name": "value_relation_kl", "feature": "value_relation", "loss": "kl", "layers": {"rule": "final"}},
        ],
    }
    assert record["terms"][0]["reduction"] == "sum"
    again = parse_recipe({k: record[k] for k in ("method", "terms", "training")}, "config.json")
    assert again == replace(recipe, path=None, sha256=None, text=None)
    assert parse_recipe({"terms": record["terms"]}, "x").training == type(recipe.training)()  # default: linear, train


def test_a_recipe_s_record_is_the_one_runs_before_reduction_and_training_recorded():
    """reduction and training came after the first recipes: at their defaults they stay out of the record, so a run
    started before them has the same config.json record and resumes (config.changed_fields compares records)."""
    before = {
        "path": None,
        "sha256": None,
        "method": None,
        "teachers": [],
        "terms": [
            {
                "name": "hard_labels_ce",
                "feature": "hard_labels",
                "loss": "ce",
                "weight": {"schedule": "constant", "value": 0.3},
            },
            {
                "name": "hidden_mse",
                "feature": "hidden",
                "loss": "mse",
                "weight": {"schedule": "constant", "value": 100.0},
                "layers": {"rule": "skip"},
                "projection": "auto",
            },
        ],
    }
    recipe = parse_recipe(
        {
            "terms": [
                {"feature": "hard_labels", "loss": "ce", "weight": 0.3},
                {"feature": "hidden", "loss": "mse", "layers": "skip", "weight": 100},
            ]
        },
        "r.yaml",
    )
    assert recipe.record() == before


def test_the_final_rule_is_the_last_layers_alone():
    final = LayerMap(rule="final")
    assert final.resolve(3, 12, "w") == ((3, 12),) and final.resolve(6, 4, "w") == ((6, 4),)
    assert final.resolve(1, 1, "w") == ((1, 1),)
