"""The layer-wise entry scripts end-to-end on a tiny 12-layer teacher fine-tuned on synthetic QQP files:
what they log, save and initialise, and how they refuse bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_scripts_e2e import tb_scalars

TINY = ["--d_model", "32", "--d_ff", "64", "--num_attention_heads", "2"]  # the tiny teacher's widths
TEACHER = ["--teacher_exp", "teacher", "--tmodel", "bert", "--tckpt", "4"]


@pytest.fixture()
def teacher(run, tiny_bert12, exp_root):
    run(
        "run_fine_tune.py",
        "--experiment",
        "teacher",
        "--model",
        "bert",
        "--ptrain_ver",
        str(tiny_bert12),
        "--task",
        "qqp",
        "--total_step",
        "4",
        "--warmup_step",
        "1",
        "--ckpt_step",
        "2",
        "--log_step",
        "2",
        "--batch_size",
        "16",
        "--lr",
        "1e-3",
        "--max_seq_len",
        "24",
    )
    return exp_root / "teacher_bert_qqp"


def scheduled(lr: float, warmup: int, total: int, step: int) -> float:
    """Linear warmup then linear decay to 0, after ``step`` scheduler steps."""
    return lr * (step / warmup if step < warmup else max(0.0, (total - step) / (total - warmup)))


def test_lad_logs_checkpoints_maps_and_evaluates(run, teacher, exp_root, data_root):
    # the schedule in epochs: a third of 96 rows / 8 = 12 steps is ceil(0.3333 x 12) = 4 steps, warmup half of them
    proc = run(
        "run_lad_distil.py",
        *TEACHER,
        "--experiment",
        "lad",
        "--task",
        "qqp",
        *TINY,
        "--num_hidden_layers",
        "6",
        "--num_epochs",
        "0.3333",
        "--warmup_ratio",
        "0.5",
        "--ckpt_step",
        "2",
        "--log_step",
        "1",
        "--batch_size",
        "8",
        "--lr",
        "1e-3",
        "--gate_lr",
        "1e-2",
        "--gate_total_step",
        "8",
        "--gate_warmup_step",
        "4",
        "--mu",
        "10",
    )
    assert "S1<-A2, S2<-A4, S3<-A6, S4<-A8, S5<-A10, S6<-A12" in proc.stderr
    folder = exp_root / "lad_bert_qqp"
    config = json.loads((folder / "config.json").read_text())
    assert (config["max_seq_len"], config["num_class"], config["dataset"]) == (24, 2, "train")  # the teacher's
    # per-script defaults of the original: T 1, soft 0.2, hard 0.8; 16 heads unless given
    assert (config["softmax_temp"], config["soft_weight"], config["hard_weight"]) == (1.0, 0.2, 0.8)
    assert (config["total_step"], config["warmup_step"]) == (4, 2)

    s = tb_scalars(exp_root / "log" / "lad_bert_qqp")
    p = "qqp/train/bert/"
    for tag in (
        "loss",
        "logits_loss",
        "hard_loss",
        "soft_loss",
        "hidden_loss",
        "lr",
        "gate_lr",
        *(f"hidden_loss_{j}" for j in range(1, 7)),
        *(f"gate_mean_{k}" for k in range(2, 13)),
    ):
        assert [st for st, _ in s[p + tag]] == [1, 2, 3, 4], tag
    for i in range(4):
        v = {k[len(p) :]: s[k][i][1] for k in s if k.startswith(p)}
        assert v["hidden_loss"] == pytest.approx(sum(v[f"hidden_loss_{j}"] for j in range(1, 7)), rel=1e-4)
        assert v["loss"] == pytest.approx(v["logits_loss"] + v["hidden_loss"], rel=1e-4)
        assert v["logits_loss"] == pytest.approx(0.8 * v["hard_loss"] + 0.2 * v["soft_loss"], rel=1e-4)
        assert all(0 < v[f"gate_mean_{k}"] < 1 for k in range(2, 13))
        assert v["lr"] == pytest.approx(scheduled(1e-3, 2, 4, i + 1))
        assert v["gate_lr"] == pytest.approx(scheduled(1e-2, 4, 8, i + 1))  # the gates' own schedule

    # gates: 12 files a checkpoint, 0-based as the original; they moved between the checkpoints
    assert sorted(x.name for x in folder.glob("gate-*.pt")) == sorted(
        f"gate-{i}-{st}.pt" for i in range(12) for st in (2, 4)
    )
    g2, g4 = (torch.load(folder / f"gate-5-{st}.pt", weights_only=True) for st in (2, 4))
    assert set(g2) == {"linear.weight", "linear.bias", "layernorm.weight", "layernorm.bias"}
    assert tuple(g2["layernorm.weight"].shape) == (24, 32) and not torch.equal(g2["linear.weight"], g4["linear.weight"])

    # heat-map: PNG + numbers; each LAD row is a distribution over teacher layers 1..2j
    for st in (2, 4):
        assert (folder / f"layer-map-{st}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        m = np.array(json.loads((folder / f"layer-map-{st}.json").read_text())["matrix"])
        assert m.shape == (6, 12) and np.allclose(m.sum(1), 1.0, atol=1e-4)
        assert all(np.all(m[j, 2 * (j + 1) :] == 0) for j in range(6))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(exp_root / "log" / "lad_bert_qqp"), size_guidance={"images": 0})
    acc.Reload()
    assert [e.step for e in acc.Images("qqp/train/bert/layer_map")] == [2, 4]

    # the student evaluates from its folder alone (no teacher needed)
    import shutil

    shutil.rmtree(teacher)
    run("run_fine_tune_eval.py", "--experiment", "lad", "--model", "bert", "--task", "qqp", "--dataset", "dev")
    table = json.loads((folder / "eval-dev.json").read_text())
    assert [r["ckpt"] for r in table["rows"]] == [2, 4] and table["num_rows"] == 48


def layer_state(model, j: int) -> dict[str, torch.Tensor]:
    base = getattr(model, "bert", model)
    return base.encoder.layer[j - 1].state_dict()


def test_student_layers_come_from_the_pretrained_teacher(run, teacher, exp_root, tiny_bert12):
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

    pretrained = AutoModel.from_pretrained(tiny_bert12)

    def student(name: str, step: int = 1):
        folder = exp_root / f"{name}_bert_qqp"
        model = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(folder / "model"))
        model.load_state_dict(torch.load(folder / f"model-{step}.pt", weights_only=True), strict=False)
        return model

    common = [
        "--task",
        "qqp",
        *TINY,
        "--total_step",
        "1",
        "--warmup_step",
        "0",
        "--ckpt_step",
        "1",
        "--lr",
        "1e-12",
        "--batch_size",
        "8",
        "--map_examples",
        "0",
    ]
    run("run_pkd_distill.py", *TEACHER, "--experiment", "pkd4", "--num_hidden_layers", "4", *common)
    m = student("pkd4")
    for j, t in zip(range(1, 5), (3, 6, 9, 12)):  # 4 of 12: teacher layers 3, 6, 9, 12
        for k, v in layer_state(pretrained, t).items():
            assert torch.allclose(layer_state(m, j)[k], v, atol=1e-6), (j, t, k)
    assert torch.allclose(m.bert.pooler.dense.weight, pretrained.pooler.dense.weight, atol=1e-6)
    assert not torch.allclose(m.bert.embeddings.word_embeddings.weight, pretrained.embeddings.word_embeddings.weight)
    run(
        "run_pkd_distill.py",
        *TEACHER,
        "--experiment",
        "pkd4emb",
        "--num_hidden_layers",
        "4",
        "--init_embeddings",
        *common,
    )
    m = student("pkd4emb")  # --init_embeddings: the embedding block too
    for k, v in pretrained.embeddings.state_dict().items():
        assert torch.allclose(m.bert.embeddings.state_dict()[k].float(), v.float(), atol=1e-6), k
    assert torch.allclose(
        layer_state(m, 2)["attention.self.query.weight"],
        layer_state(pretrained, 6)["attention.self.query.weight"],
        atol=1e-6,
    )

    # partial LAD 2,4,6,8,10: S1..S5 <- T2..T10; S6 stays random (the original's quirk) unless --init_uncovered
    for name, extra in (("partial", []), ("partial_all", ["--init_uncovered"])):
        run(
            "run_probing_lad.py",
            "--probing_exp",
            "partial_lad",
            "--gate_indices",
            "2,4,6,8,10",
            *TEACHER,
            "--experiment",
            name,
            "--num_hidden_layers",
            "6",
            *common,
            *extra,
        )
        m = student(name)
        for j in range(1, 6):
            assert torch.allclose(
                layer_state(m, j)["attention.self.query.weight"],
                layer_state(pretrained, 2 * j)["attention.self.query.weight"],
                atol=1e-6,
            )
        same = torch.allclose(
            layer_state(m, 6)["attention.self.query.weight"],
            layer_state(pretrained, 12)["attention.self.query.weight"],
            atol=1e-6,
        )
        assert same == bool(extra), name
    assert (
        json.loads((exp_root / "partial_bert_qqp" / "config.json").read_text())["hidden_mapping"]
        == "S1<-A2, S2<-A4, S3<-A6, S4<-A8, S5<-A10, S6<-T12"
    )


@pytest.mark.parametrize(
    "script, args, message",
    [
        (
            "run_lad_distil.py",
            ["--teacher_exp", "nope", "--tmodel", "bert", "--tckpt", "4"],
            "teacher folder {exp}/nope_bert_qqp not found; {exp} holds 1 experiment, none with a similar name",
        ),
        (
            "run_lad_distil.py",
            ["--teacher_exp", "teacher", "--tmodel", "bert", "--tckpt", "3"],
            "--tckpt 3: teacher checkpoint {exp}/teacher_bert_qqp/model-3.pt not found; checkpoints there: 2, 4",
        ),
        (
            "run_pkd_distill.py",
            [*TEACHER, "--d_model", "64", "--init_start", "2", "--init_end", "12", "--init_step", "2"],
            "cannot copy teacher layers: student --d_model 64 differs from the teacher's hidden size 32",
        ),
        (
            "run_lad_no_distil.py",
            [*TEACHER, *TINY, "--num_hidden_layers", "5"],
            "teacher's 12 layers are not a multiple",
        ),
        (
            "run_probing_lad.py",
            ["--probing_exp", "partial_lad", "--gate_indices", "2,4,14", *TEACHER, *TINY],
            "--gate_indices 2,4,14: 14 is out of range; the teacher has 12 layers",
        ),
        ("run_lad_no_distil.py", [*TEACHER, *TINY, "--num_class", "3"], "--num_class 3: the teacher"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(run, teacher, exp_root, script, args, message):
    proc = run(
        script, *args, "--experiment", "bad", "--task", "qqp", "--total_step", "2", "--warmup_step", "0", check=False
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert message.format(exp=exp_root) in lines[0], lines[0]
    assert not (exp_root / "bad_bert_qqp").exists()


@pytest.mark.parametrize("padding", ["max_length", "dynamic"])
@pytest.mark.parametrize("script", ["run_pkd_distill.py", "run_lad_distil.py"])
def test_own_forward_ends_like_hugging_face(run, teacher, exp_root, script, padding):
    """Fixed padding (the faithful default, losses over every position) runs BERT through the toolkit's forward
    over the padded grid (models/padding_free.FullGrid); --padding dynamic (losses and the LAD gate LayerNorm over
    the real tokens) through the packed padding-free forward. With dropout 0 each trains the same weights, gates
    included, as Hugging Face's forward (--padding_free off) with the same padding."""
    common = [
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
        "--lr",
        "1e-3",
        "--batch_size",
        "8",
        "--dropout",
        "0",
        "--map_examples",
        "0",
        "--padding",
        padding,
    ]
    said = "own BERT forward over the padded batch" if padding == "max_length" else "padding-free forward"
    for mode in ("auto", "off"):
        out = run(script, *TEACHER, "--experiment", f"grid_{mode}", "--padding_free", mode, *common)
        assert (said in out.stderr) == (mode == "auto"), out.stderr
    files = sorted(f.name for f in (exp_root / "grid_auto_bert_qqp").glob("*-3.pt") if not f.name.startswith("resume"))
    assert "model-3.pt" in files and (script == "run_pkd_distill.py" or "gate-0-3.pt" in files), files
    for name in files:
        a = torch.load(exp_root / "grid_auto_bert_qqp" / name, weights_only=True)
        b = torch.load(exp_root / "grid_off_bert_qqp" / name, weights_only=True)
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4, msg=f"{name}: {k}")


def test_a_config_written_between_plan_and_start_is_refused(teacher, data_root, exp_root):
    """The method is built for the config.json the plan read (a resumed run before a fidelity fix keeps its old
    rule: fine_tune/plan/training._legacy). A config.json another writer puts there after the plan (here one of a
    run started before LAD's gate-decay fix: the same flags, no ``gate_no_decay``) would resume under a method
    built for a new run: the start, under the experiment's lock, refuses it and writes nothing."""
    from fine_tune.cli import parse_layerwise
    from fine_tune.errors import UserError
    from fine_tune.plan.training import plan_online_distill
    from fine_tune.run import run

    argv = [
        "--experiment",
        "race",
        "--model",
        "bert",
        "--task",
        "qqp",
        *TEACHER,
        *TINY,
        "--num_hidden_layers",
        "2",
        "--total_step",
        "2",
        "--warmup_step",
        "0",
        "--ckpt_step",
        "2",
        "--batch_size",
        "8",
        "--data_root",
        str(data_root),
        "--exp_root",
        str(exp_root),
    ]
    plan = plan_online_distill(parse_layerwise("run_lad_distil.py", "", "lad", argv), "lad")
    assert plan.legacy == {} and plan.record["gate_no_decay"] == ["bias", "LayerNorm.weight", "layernorm.weight"]
    folder = exp_root / "race_bert_qqp"
    folder.mkdir()
    old = {k: v for k, v in plan.record.items() if k != "gate_no_decay"}
    (folder / "config.json").write_text(json.dumps(old))
    with pytest.raises(UserError, match="changed while this run was being planned"):
        run(plan)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json"]
    assert json.loads((folder / "config.json").read_text()) == old
    # planned now, the same folder is a legacy run: its method keeps the old rule
    again = plan_online_distill(parse_layerwise("run_lad_distil.py", "", "lad", argv), "lad")
    assert again.legacy == {"gate_no_decay": ["bias", "LayerNorm.weight"]}
    assert again.method.gate_optimiser.no_decay == ("bias", "LayerNorm.weight")
