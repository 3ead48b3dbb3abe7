"""Several teachers in a recipe (``teachers:``): the teachers' weighted mean logits and each named teacher's features
against their equations, computed here independently; end-to-end on the tiny 12-layer teacher's two checkpoints:
a set of the same teacher twice trains the one-teacher student bit for bit, two different teachers train and are
recorded, and the refusals are one line with nothing written."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
import torch.nn.functional as F
from module_world import data_root, exp_root, teacher  # noqa: F401 - fixtures
from test_layerwise_scripts import TEACHER, TINY
from test_recipe_method import assert_same_weights, weights

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


def built(tmp_path, text: str, shapes: dict, student=(3, 32, 2)):
    from fine_tune.engine.protocol import TeacherShape
    from fine_tune.methods.base import MethodSettings, StudentShape
    from fine_tune.methods.recipe import RecipeFlags, RecipeKD

    path = tmp_path / "r.yaml"
    path.write_text(text)
    shapes = {name: TeacherShape(*shape) for name, shape in shapes.items()}
    return RecipeKD.build(
        MethodSettings(
            groups={"recipe": RecipeFlags(recipe=str(path))},
            num_class=3,
            student=StudentShape(*student),
            teacher=next(iter(shapes.values())),
            padding="dynamic",
            teachers=shapes,
        )
    )


def test_weighted_logits_is_the_weighted_mean():
    from fine_tune.methods.recipe import weighted_logits

    g = torch.Generator().manual_seed(3)
    z = [torch.randn(4, 3, generator=g, dtype=torch.float64) * 3 for _ in range(3)]
    w = [0.3, 1.2, 0.05]
    expected = (0.3 * z[0] + 1.2 * z[1] + 0.05 * z[2]) / 1.55
    torch.testing.assert_close(weighted_logits([x.float() for x in z], w).double(), expected, rtol=1e-6, atol=1e-6)


TWO = """\
teachers:
  - {name: big, experiment: a, model: bert, ckpt: 4, weight: 0.25}
  - {name: small, experiment: b, model: bert, ckpt: last, weight: 0.75}
terms:
  - {feature: logits, loss: kl, temperature: 2.5, weight: 0.6}
  - {feature: logits, loss: mse, teacher: small, weight: 0.3, name: small_logits}
  - {feature: hidden, loss: mse, teacher: big, layers: [[1, 4], [3, 12]], weight: 2.0}
  - {feature: hidden, loss: mse, teacher: small, layers: [[2, 3]], weight: 5.0, name: small_hidden}
"""


def test_terms_read_their_teacher_and_logits_the_weighted_mean(tmp_path):
    """Two teachers of different depths and widths: a logits term without a teacher compares with the weighted
    mean, a named term with its teacher's features, each layer pair resolved against its own teacher."""
    from fine_tune.engine.protocol import ModelOutputs

    method = built(tmp_path, TWO, {"big": (12, 32, 2), "small": (4, 48, 4)})
    assert method.describe_mapping() == "hidden_mse (big): S1<-T4, S3<-T12; small_hidden (small): S2<-T3"
    assert method.needs_projection  # the small teacher is 48 wide: its hidden term goes through the projection
    method.create_parameters(None)
    g = torch.Generator().manual_seed(5)
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]])

    def outputs(layers: int, width: int) -> ModelOutputs:
        return ModelOutputs(
            logits=torch.randn(2, 3, generator=g) * 2,
            hidden_states=tuple(torch.randn(2, 5, width, generator=g) for _ in range(layers)),
            attention_mask=mask,
        )

    student, big, small = outputs(3, 32), outputs(12, 32), outputs(4, 48)
    teacher = ModelOutputs(
        logits=big.logits, hidden_states=big.hidden_states, attention_mask=mask, members={"big": big, "small": small}
    )
    parts = method.losses({"labels": torch.tensor([2, 0])}, student, teacher)

    mean = (0.25 * big.logits + 0.75 * small.logits) / 1.0
    kl = F.kl_div(F.log_softmax(student.logits / 2.5, -1), F.softmax(mean / 2.5, -1), reduction="batchmean")
    torch.testing.assert_close(parts["logits_kl"], 0.6 * kl * 2.5**2, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(parts["small_logits"], 0.3 * ((student.logits - small.logits) ** 2).mean())

    def masked_mse(a, b):
        m = mask.unsqueeze(-1).float()
        return (((a - b) ** 2) * m).sum() / (m.sum() * a.shape[-1])

    hidden = (
        masked_mse(student.hidden_states[0], big.hidden_states[3])
        + masked_mse(student.hidden_states[2], big.hidden_states[11])
    ) / 2
    torch.testing.assert_close(parts["hidden_mse"], 2.0 * hidden, rtol=1e-5, atol=1e-6)
    projected = method.projection(2, student.hidden_states[1])
    torch.testing.assert_close(
        parts["small_hidden"], 5.0 * masked_mse(projected, small.hidden_states[2]), rtol=1e-5, atol=1e-6
    )
    torch.testing.assert_close(
        parts["loss"], sum(parts[k] for k in ("logits_kl", "small_logits", "hidden_mse", "small_hidden"))
    )


@pytest.mark.parametrize(
    "text,message",
    [
        (
            TWO + "  - {feature: cls, loss: mse, layers: uniform}\n",
            "terms[4]: with several teachers a cls term names its teacher (teacher: big or small)",
        ),
        (
            TWO + "  - {feature: attention_probs, loss: kl, layers: [[3, 4]], teacher: small}\n",
            "terms[4]: the student has 2 attention heads and the teacher small 4: add head_mean: true",
        ),
        (
            TWO.replace(
                "small, layers: [[2, 3]], weight: 5.0", "small, layers: [[2, 3]], weight: 5.0, projection: none"
            ),
            "terms[3]: projection none, but the student's width 32 differs from the teacher small's 48",
        ),
        (
            TWO.replace("[[1, 4], [3, 12]]", "[[1, 4], [3, 13]]"),
            "terms[2].layers: teacher layer 13 is outside the 12-layer",
        ),
    ],
)
def test_several_teachers_refusals(tmp_path, text, message):
    from fine_tune.errors import UserError

    with pytest.raises(UserError, match=None) as e:
        built(tmp_path, text, {"big": (12, 32, 2), "small": (4, 48, 4)})
    assert message in str(e.value), str(e.value)


def test_one_projection_width(tmp_path):
    from fine_tune.errors import UserError

    text = TWO + "  - {feature: hidden, loss: mse, teacher: big, layers: [[3, 12]], name: again}\n"
    with pytest.raises(UserError, match=r"widths \[48, 64\]; one learned projection"):
        built(tmp_path, text, {"big": (12, 64, 2), "small": (4, 48, 4)})


SAME_TWICE = """\
teachers:
  - {name: a, experiment: teacher, model: bert, ckpt: 4}
  - {name: b, experiment: teacher, model: bert, ckpt: last, weight: 1.0}
terms:
  - {feature: hard_labels, loss: ce, weight: 0.4}
  - {feature: logits, loss: kl, temperature: 2.0, weight: 0.6}
  - {feature: hidden, loss: mse, teacher: a, layers: skip, weight: 3.0}
  - {feature: attention_probs, loss: kl, teacher: b, layers: [[3, 12]], weight: 1.5}
"""


def test_a_set_of_one_teacher_twice_trains_the_one_teacher_student(run, teacher, exp_root, tmp_path):  # noqa: F811
    """The mean of equal logits is those logits (bit for bit), and each named teacher's features are the teacher's:
    the engine's set of two teachers trains the student the run's one teacher trains."""
    one = tmp_path / "one.yaml"
    one.write_text(
        SAME_TWICE.split("terms:\n")[1].replace(", teacher: a", "").replace(", teacher: b", "").join(["terms:\n", ""])
    )
    two = tmp_path / "two.yaml"
    two.write_text(SAME_TWICE)
    run("run_distil.py", "--recipe", str(one), *TEACHER, "--experiment", "one", *COMMON)
    proc = run("run_distil.py", "--recipe", str(two), "--experiment", "twice", *COMMON)
    assert (
        "teacher set a: teacher_bert_qqp model-4.pt (12 layers, weight 1); "
        "b: teacher_bert_qqp model-4.pt (12 layers, weight 1)"
    ) in proc.stderr, proc.stderr
    assert_same_weights(weights(exp_root / "one_bert_qqp"), weights(exp_root / "twice_bert_qqp"))
    # a recipe naming one teacher: that teacher, as --teacher_exp names it
    single = tmp_path / "single.yaml"
    single.write_text(
        SAME_TWICE.replace("  - {name: b, experiment: teacher, model: bert, ckpt: last, weight: 1.0}\n", "").replace(
            "teacher: b", "teacher: a"
        )
    )
    run("run_distil.py", "--recipe", str(single), "--experiment", "single", *COMMON)
    assert_same_weights(weights(exp_root / "one_bert_qqp"), weights(exp_root / "single_bert_qqp"))
    # the second teacher a Hugging Face folder (the same checkpoint, exported): opened as --teacher_hf opens one
    hf = tmp_path / "hf-teacher"
    run(
        "export_model.py",
        "--experiment",
        "teacher",
        "--model",
        "bert",
        "--task",
        "qqp",
        "--ckpt",
        "4",
        "--out",
        str(hf),
    )
    mixed = tmp_path / "mixed.yaml"
    mixed.write_text(SAME_TWICE.replace("experiment: teacher, model: bert, ckpt: last", f"hf: {hf}"))
    proc = run("run_distil.py", "--recipe", str(mixed), "--experiment", "hf", *COMMON)
    assert f"b: {hf} (Hugging Face) (12 layers, weight 1)" in proc.stderr, proc.stderr
    assert_same_weights(weights(exp_root / "one_bert_qqp"), weights(exp_root / "hf_bert_qqp"))


def test_two_teachers_train_and_are_recorded(run, teacher, exp_root, tmp_path):  # noqa: F811
    """Checkpoints 2 and 4 of the tiny teacher; no attention term: the set runs the packed padding-free forward."""
    recipe = tmp_path / "two.yaml"
    text = SAME_TWICE.replace("ckpt: 4}", "ckpt: 2, weight: 0.25}").replace(
        "attention_probs, loss: kl, teacher: b, layers: [[3, 12]]",
        "cls, loss: normalized_mse, teacher: b, layers: last",
    )
    recipe.write_text(text)
    proc = run("run_distil.py", "--recipe", str(recipe), "--experiment", "two", *COMMON, "--padding", "dynamic")
    assert (
        "hidden_mse (a): S1<-T4, S2<-T8, S3<-T12; cls_normalized_mse (b): S1<-T10, S2<-T11, S3<-T12" in proc.stderr
    ), proc.stderr
    assert "padding-free forward" in proc.stderr, proc.stderr
    config = json.loads((exp_root / "two_bert_qqp" / "config.json").read_text())
    assert config["teachers"] == [
        {"name": "a", "checkpoint": "teacher_bert_qqp/model-2.pt", "layers": 12, "weight": 0.25},
        {"name": "b", "checkpoint": "teacher_bert_qqp/model-4.pt", "layers": 12, "weight": 1.0},
    ]
    assert config["recipe"]["sha256"] == hashlib.sha256(text.encode()).hexdigest()
    files = config["provenance"]["data_files"]  # checked before a resume
    assert {str(teacher / "model-2.pt"), str(teacher / "model-4.pt")} <= set(files), files
    assert (exp_root / "two_bert_qqp" / "model-3.pt").is_file()
    # --config re-issues it (the recipe's teachers, not --teacher flags)
    run("run_distil.py", "--config", str(exp_root / "two_bert_qqp" / "config.json"), "--experiment", "again")
    assert_same_weights(weights(exp_root / "two_bert_qqp"), weights(exp_root / "again_bert_qqp"))


@pytest.mark.parametrize(
    "extra,replace_,message",
    [
        (TEACHER, None, "--teacher_exp, --tckpt: the recipe names its teachers"),
        (
            [],
            ("experiment: teacher, model: bert, ckpt: last", "experiment: teachr, model: bert, ckpt: last"),
            "teachers[1] (b): --teacher_exp teachr --tmodel bert: teacher folder",
        ),
    ],
)
def test_several_teachers_refused_in_one_line(run, teacher, exp_root, tmp_path, extra, replace_, message):  # noqa: F811
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(SAME_TWICE.replace(*replace_) if replace_ else SAME_TWICE)
    assert teacher.is_dir()
    proc = run("run_distil.py", "--recipe", str(recipe), *extra, "--experiment", "bad", *COMMON, check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], proc.stderr
    assert not (exp_root / "bad_bert_qqp").exists()


def test_a_teacher_set_reads_one_tokenisation_one_label_set_and_the_run_s_length(data_root):
    """check_teacher_set: every teacher gets the primary's token ids, so a teacher whose tokenizer turns the run's
    text into other ids, of other classes, or too short for --max_seq_len is refused naming its recipe entry."""
    from transformers import BertTokenizer

    from fine_tune.errors import UserError
    from fine_tune.plan.training import check_teacher_set
    from fine_tune.synthetic import VOCAB, tiny_config, tiny_tokenizer
    from fine_tune.tasks import get_task
    from fine_tune.teacher import Teacher, Teachers

    task = get_task("qqp", data_root)
    rows = task.load(data_root, "train")

    def member(name, tokenizer=None, positions=128, labels=2):
        config = tiny_config("bert", max_positions=positions, num_labels=labels)
        return Teacher(name, {"task": "qqp"}, config, tokenizer or tiny_tokenizer("bert"), None, None, source=name)

    def check(*members, max_seq_len=24):
        check_teacher_set(Teachers(tuple((m.name, m, 1.0) for m in members)), task, max_seq_len, rows, "r.yaml")

    check(member("a"), member("b"))
    swapped = list(VOCAB)
    i, j = swapped.index(rows[0].text.lower().split()[0]), len(swapped) - 1  # a word of the first row moves
    swapped[i], swapped[j] = swapped[j], swapped[i]
    other = BertTokenizer(vocab={tok: k for k, tok in enumerate(swapped)}, do_lower_case=True)
    for members, message in (
        (
            (member("a"), member("b", other)),
            "recipe r.yaml: teachers[1] (b): tokenises the run's text differently from a",
        ),
        ((member("a"), member("b", labels=3)), "recipe r.yaml: teachers[1] (b): 3 outputs; a has 2"),
        ((member("a"), member("b", positions=16)), "recipe r.yaml: teachers[1] (b): "),
    ):
        with pytest.raises(UserError) as e:
            check(*members)
        assert str(e.value).startswith(message), str(e.value)
    with pytest.raises(UserError, match=r"teachers\[1\] \(b\): .*(16|positions)"):
        check(member("a"), member("b", positions=16))


def test_logits_to_moves_every_teacher_s_logits():
    """Across devices only the logits cross (engine/trainer.py): a set's members' too ('meta' stands in for a
    second device)."""
    from fine_tune.engine.protocol import ModelOutputs

    a, b = ModelOutputs(logits=torch.ones(2, 3)), ModelOutputs(logits=torch.zeros(2, 3))
    moved = ModelOutputs(logits=a.logits, members={"a": a, "b": b}).logits_to(torch.device("meta"))
    assert moved.logits.is_meta and moved.members["a"].logits.is_meta and moved.members["b"].logits.is_meta
