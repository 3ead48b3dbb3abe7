"""Bring your own teacher and student: every model family through the scripts, teachers fine-tuned elsewhere
(Hugging Face folders), pretrained students of another width with a learned projection, and TinyBERT / MiniLM
against independent computations on real (tiny) models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import one_thread
from conftest import run_in_world as run
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from fine_tune import synthetic
from fine_tune.engine.protocol import ModelOutputs, TeacherShape
from fine_tune.methods import MiniLM, TinyBERT
from fine_tune.methods.tinybert import full_width
from fine_tune.models.attention_capture import AttentionCapture
from fine_tune.models.families import FAMILIES
from fine_tune.models.forward import forward

FAMILY_NAMES = list(FAMILIES)
STEPS = [
    "--total_step",
    "4",
    "--warmup_step",
    "1",
    "--ckpt_step",
    "2",
    "--log_step",
    "2",
    "--batch_size",
    "8",
    "--lr",
    "1e-3",
    "--task",
    "qqp",
]
SMALL = ["--d_model", "32", "--d_ff", "64", "--num_attention_heads", "2", "--num_hidden_layers", "2"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Synthetic QQP; a tiny pretrained folder of every family; one fine-tuned experiment per family."""
    base = tmp_path_factory.mktemp("families")
    data, exp = base / "data", base / "exp"
    synthetic.write_qqp(data, n_train=48, n_dev=24, n_test=8)
    w = {"base": base, "data": data, "exp": exp}
    with one_thread():
        for family in FAMILY_NAMES:
            layers = 4 if family in ("bert", "roberta") else 2
            w[family] = synthetic.write_tiny_model(base / f"pre-{family}", family, num_layers=layers)
            run(
                w,
                "run_fine_tune.py",
                "--experiment",
                "ft",
                "--model",
                family,
                "--ptrain_ver",
                str(w[family]),
                "--max_seq_len",
                "48",
                *STEPS,
            )
        yield w


def own_logits(w, family: str = "bert", split: str = "dev") -> str:
    """The logits data set of the family's fine-tuned experiment on ``split`` (written here when no test has yet):
    a test that reads it does not depend on the test that generates it having run first."""
    name = f"ft_{family}_qqp"
    if not (w["data"] / "logits" / name / split / "logits.jsonl").is_file():
        run(
            w,
            "run_fine_tune_gen_logits.py",
            "--experiment",
            "ft",
            "--model",
            family,
            "--task",
            "qqp",
            "--dataset",
            split,
        )
    return name


def logits_rows(w, name: str, split: str = "dev") -> tuple[list[dict], np.ndarray]:
    path = w["data"] / "logits" / name / split / "logits.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return rows, np.array([r["logits"] for r in rows], dtype=np.float32)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_every_family_fine_tunes_evaluates_and_exports_for_hugging_face(world, family):
    w = world
    folder = w["exp"] / f"ft_{family}_qqp"
    assert (folder / "model-4.pt").is_file()
    assert json.loads((folder / "model" / "config.json").read_text())["model_type"] == family
    ev = run(w, "run_fine_tune_eval.py", "--experiment", "ft", "--model", family, "--task", "qqp", "--dataset", "dev")
    table = json.loads((folder / "eval-dev.json").read_text())
    assert [r["ckpt"] for r in table["rows"]] == [2, 4], ev.stdout
    run(w, "run_fine_tune_gen_logits.py", "--experiment", "ft", "--model", family, "--task", "qqp", "--dataset", "dev")
    rows, toolkit = logits_rows(w, f"ft_{family}_qqp")
    out = w["base"] / f"export-{family}"
    run(w, "export_model.py", "--experiment", "ft", "--model", family, "--task", "qqp", "--out", str(out))
    # the export is a plain Hugging Face model: its logits on the dev rows are the toolkit's
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert model.config.model_type == family and tokenizer.model_max_length == 48
    with torch.no_grad():
        for r, expected in zip(rows[:8], toolkit[:8]):
            enc = tokenizer(r["text"], r["text_pair"], truncation=True, return_tensors="pt")
            got = model(**enc).logits[0].numpy()
            np.testing.assert_allclose(got, expected, atol=2e-5, err_msg=family)


def test_roberta_teacher_distils_into_a_bert_student_offline(world):
    w = world
    run(w, "run_fine_tune_gen_logits.py", "--experiment", "ft", "--model", "roberta", "--task", "qqp")
    # a BERT student built from flags takes the logits set's (RoBERTa's) tokenizer
    run(
        w,
        "run_fine_tune_distill.py",
        "--experiment",
        "kd",
        "--model",
        "bert",
        "--dataset",
        "ft_roberta_qqp",
        *SMALL,
        "--max_seq_len",
        "48",
        *STEPS,
    )
    student = w["exp"] / "kd_bert_qqp" / "model"
    assert json.loads((student / "config.json").read_text())["model_type"] == "bert"
    assert (
        AutoTokenizer.from_pretrained(student).get_vocab()
        == AutoTokenizer.from_pretrained(w["exp"] / "ft_roberta_qqp" / "model").get_vocab()
    )
    # a pretrained BERT student keeps its own tokenizer: logits are per row, any tokenisation learns from them
    proc = run(
        w,
        "run_fine_tune_distill.py",
        "--experiment",
        "kd_pre",
        "--model",
        "bert",
        "--dataset",
        "ft_roberta_qqp",
        "--student_ptrain_ver",
        str(w["bert"]),
        "--max_seq_len",
        "48",
        *STEPS,
    )
    assert "do not apply" in proc.stderr
    folder = w["exp"] / "kd_pre_bert_qqp"
    config = json.loads((folder / "config.json").read_text())
    assert config["student_ptrain_ver"] == str(w["bert"]) and config["num_hidden_layers"] == 4
    assert (
        AutoTokenizer.from_pretrained(folder / "model").get_vocab()
        == AutoTokenizer.from_pretrained(w["bert"]).get_vocab()
    )
    run(w, "export_model.py", "--experiment", "kd_pre", "--model", "bert", "--task", "qqp")
    assert AutoModelForSequenceClassification.from_pretrained(folder / "hf-model-4").config.num_hidden_layers == 4


def hf_teacher_with_swapped_labels(w):
    """The BERT teacher exported as a Hugging Face folder whose outputs are in the other order (label '1' first):
    a teacher fine-tuned elsewhere whose label order is not the task's."""
    out = w["base"] / "hf-teacher"
    if not out.exists():
        run(w, "export_model.py", "--experiment", "ft", "--model", "bert", "--task", "qqp", "--out", str(out))
        model = AutoModelForSequenceClassification.from_pretrained(out)
        with torch.no_grad():
            model.classifier.weight.copy_(model.classifier.weight.flip(0))
            model.classifier.bias.copy_(model.classifier.bias.flip(0))
        model.config.id2label, model.config.label2id = {0: "1", 1: "0"}, {"1": 0, "0": 1}
        model.save_pretrained(out)
    return out


def test_a_hugging_face_teacher_drives_gen_logits_and_lad(world):
    w = world
    hf = hf_teacher_with_swapped_labels(w)
    # its logits data set: the teacher's outputs put back in the task's order equal the experiment's own logits
    proc = run(
        w,
        "run_fine_tune_gen_logits.py",
        "--experiment",
        "hfteacher",
        "--model",
        "bert",
        "--task",
        "qqp",
        "--dataset",
        "dev",
        "--teacher_hf",
        str(hf),
        "--max_seq_len",
        "48",
    )
    assert "(Hugging Face)" in proc.stdout
    _, got = logits_rows(w, "hfteacher_bert_qqp")
    _, reference = logits_rows(w, own_logits(w, "bert", "dev"))
    np.testing.assert_allclose(got, reference, atol=2e-5)
    meta = json.loads((w["data"] / "logits" / "hfteacher_bert_qqp" / "dev" / "meta.json").read_text())
    assert meta["teacher_hf"] == str(hf) and meta["teacher_experiment"] is None
    # LAD from the Hugging Face folder; no toolkit experiment of the teacher is read
    run(
        w,
        "run_lad_distil.py",
        "--experiment",
        "lad_hf",
        "--model",
        "bert",
        "--teacher_hf",
        str(hf),
        "--max_seq_len",
        "48",
        *SMALL,
        *STEPS,
    )
    config = json.loads((w["exp"] / "lad_hf_bert_qqp" / "config.json").read_text())
    assert config["teacher_checkpoint"] == str(hf) and config["teacher_label_order"] == [1, 0]
    assert config["hidden_mapping"] == "S1<-A2, S2<-A4" and config["tmodel"] == "bert"
    assert (w["exp"] / "lad_hf_bert_qqp" / "model-4.pt").is_file()


def test_a_pretrained_student_of_another_width_learns_through_a_projection(world):
    w = world
    wide = synthetic.write_tiny_model(w["base"] / "wide-student", "bert", num_layers=2, hidden=48, heads=2, ff=96)
    proc = run(
        w,
        "run_pkd_distill.py",
        "--experiment",
        "pkd_wide",
        "--model",
        "bert",
        "--teacher_exp",
        "ft",
        "--tckpt",
        "4",
        "--student_ptrain_ver",
        str(wide),
        *STEPS,
    )
    folder = w["exp"] / "pkd_wide_bert_qqp"
    assert "learned width projection" in proc.stderr
    projection = torch.load(folder / "projection-4.pt", weights_only=True)
    assert projection["maps.0.weight"].shape == (32, 48) and projection["maps.1.weight"].shape == (32, 48)
    first = torch.load(folder / "projection-2.pt", weights_only=True)
    assert not torch.equal(first["maps.0.weight"], projection["maps.0.weight"])  # it trained
    resume = torch.load(folder / "resume-4.pt", weights_only=False)
    assert "projection" in resume["optimizers"] and "projection" in resume["method"]
    # the exported student is the student alone
    run(w, "export_model.py", "--experiment", "pkd_wide", "--model", "bert", "--task", "qqp")
    exported = AutoModelForSequenceClassification.from_pretrained(folder / "hf-model-4")
    assert exported.config.hidden_size == 48
    names = set(exported.state_dict())
    assert not any("maps." in n or "projection" in n for n in names)
    assert set(torch.load(folder / "model-4.pt", weights_only=True)) <= names | {"bert.embeddings.position_ids"}


def test_the_projection_gets_gradient_from_every_layerwise_loss():
    from fine_tune.cli import parse_layerwise

    for method_name, extra in (("lad", []), ("pkd", []), ("alp", []), ("tinybert", [])):
        flags = parse_layerwise(
            "x",
            "",
            method_name,
            [
                "--experiment",
                "x",
                "--task",
                "qqp",
                "--teacher_exp",
                "t",
                "--tckpt",
                "1",
                "--d_model",
                "8",
                "--d_ff",
                "16",
                "--num_attention_heads",
                "2",
                "--num_hidden_layers",
                "2",
                "--max_seq_len",
                "6",
                *extra,
            ],
        )
        from fine_tune.methods import get_method
        from fine_tune.plan.training import method_settings
        from fine_tune.tasks import get_task

        method = get_method(method_name).build(
            method_settings(flags, get_task("qqp"), get_method(method_name), TeacherShape(4, 12, 2))
        )
        torch.manual_seed(0)
        method.create_parameters(None, None)
        assert method.projection is not None and [e.name for e in method.extra_parameters()][-1] == "projection"
        b, s = 3, 6
        mask = torch.ones(b, s, dtype=torch.long)
        mask[0, 4:] = 0
        st = ModelOutputs(
            torch.randn(b, 2),
            tuple(torch.randn(b, s, 8) for _ in range(2)),
            mask,
            tuple((torch.randn(b, s, 8),) * 3 for _ in range(2)),
            torch.randn(b, s, 8),
        )
        te = ModelOutputs(
            torch.randn(b, 2),
            tuple(torch.randn(b, s, 12) for _ in range(4)),
            mask,
            tuple((torch.randn(b, s, 12),) * 3 for _ in range(4)),
            torch.randn(b, s, 12),
        )
        method.losses({"labels": torch.tensor([0, 1, 1])}, st, te)["loss"].backward()
        grads = [p.grad for p in method.projection.parameters()]
        assert all(g is not None and g.abs().sum() > 0 for g in grads), method_name


def sharpen(model) -> None:
    """Scale every layer's query and key weights up, so attention maps differ clearly between layers (a random
    initialisation's are nearly uniform everywhere)."""
    with torch.no_grad():
        for layer in model.bert.encoder.layer:
            layer.attention.self.query.weight.mul_(12.0)
            layer.attention.self.key.weight.mul_(12.0)


def test_tinybert_loss_matches_an_independent_computation_on_real_models(world):
    """The method's intermediate loss on a real teacher/student pair equals the equations computed here from
    the models' own hidden states and weights (Q, K from each layer's input through its query/key layers)."""
    torch.manual_seed(0)
    teacher = AutoModelForSequenceClassification.from_config(synthetic.tiny_config("bert", num_layers=4)).eval()
    student = AutoModelForSequenceClassification.from_config(
        synthetic.tiny_config("bert", num_layers=2, hidden=24, ff=48)
    ).eval()
    sharpen(teacher)
    sharpen(student)
    from fine_tune.engine.optim import OptimiserSettings

    method = TinyBERT(
        2,
        4,
        0.0,
        1.0,
        1.0,
        1.0,
        stage="intermediate",
        student_heads=2,
        teacher_heads=2,
        student_width=24,
        teacher_width=32,
        projection_optimiser=OptimiserSettings(lr=1e-3, total_step=1, warmup_step=0),
    )
    method.create_parameters(None, None)
    ids = torch.randint(5, 100, (2, 7))
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, 5:] = 0
    batch = {"input_ids": ids, "token_type_ids": torch.zeros_like(ids), "attention_mask": mask}
    with torch.no_grad():
        s_out = forward(AttentionCapture(student), batch, True)
        t_out = forward(AttentionCapture(teacher), batch, True)
        loss = method.losses(batch, s_out, t_out)
        s_hid = student(**batch, output_hidden_states=True).hidden_states
        t_hid = teacher(**batch, output_hidden_states=True).hidden_states

    def scores(model, hidden, layer):  # [B, H, S, S], padded keys 0
        att = model.bert.encoder.layer[layer - 1].attention.self
        q = att.query(hidden[layer - 1]).double()
        k = att.key(hidden[layer - 1]).double()
        b, s_, d = q.shape
        q = q.view(b, s_, 2, d // 2).transpose(1, 2)
        k = k.view(b, s_, 2, d // 2).transpose(1, 2)
        out = q @ k.transpose(-1, -2) / (d // 2) ** 0.5
        return out * mask[:, None, None, :].double()

    w_h, b_h = method.projection.maps[0].weight.double(), method.projection.maps[0].bias.double()
    attn = sum(((scores(student, s_hid, m) - scores(teacher, t_hid, 2 * m)) ** 2).mean() for m in (1, 2))
    hid = sum(((s_hid[m].double() @ w_h.T + b_h - t_hid[2 * m].double()) ** 2).mean() for m in (1, 2))
    emb = ((s_hid[0].double() @ w_h.T + b_h - t_hid[0].double()) ** 2).mean()
    assert attn.item() > 0.1  # score maps that differ: the comparison can tell layers apart
    assert abs(loss["attention_loss"].item() - attn.item()) < 1e-5
    assert abs(loss["hidden_loss"].item() - hid.item()) < 1e-5
    assert abs(loss["embedding_loss"].item() - emb.item()) < 1e-5
    assert abs(loss["loss"].item() - (attn + hid + emb).item()) < 1e-5


def test_minilm_attention_kl_matches_hugging_faces_own_attention(world):
    """MiniLM's attention-distribution KL on real models equals the KL of the attention probabilities Hugging
    Face's eager attention returns (output_attentions), computed here in float64."""
    torch.manual_seed(1)
    teacher = AutoModelForSequenceClassification.from_config(
        synthetic.tiny_config("bert", num_layers=4), attn_implementation="eager"
    ).eval()
    student = AutoModelForSequenceClassification.from_config(
        synthetic.tiny_config("bert", num_layers=2, hidden=16, ff=32), attn_implementation="eager"
    ).eval()
    sharpen(teacher)
    sharpen(student)
    method = MiniLM(2, 4, 0.0, 0.0, 1.0, 1.0, student_heads=2, teacher_heads=2)
    ids = torch.randint(5, 100, (3, 6))
    mask = torch.ones(3, 6, dtype=torch.long)
    mask[0, 3:] = 0
    batch = {"input_ids": ids, "token_type_ids": torch.zeros_like(ids), "attention_mask": mask}
    with torch.no_grad():
        parts = method.losses(
            batch, forward(AttentionCapture(student), batch, False), forward(AttentionCapture(teacher), batch, False)
        )
        a_s = student(**batch, output_attentions=True).attentions[-1].double()
        a_t = teacher(**batch, output_attentions=True).attentions[-1].double()
    total = 0.0  # averaged per sequence (its heads and real queries), then over the batch (MiniLMv2's public code)
    for b in range(3):
        n = int(mask[b].sum())
        kl = 0.0
        for h in range(2):
            for q in range(n):
                p, r = a_t[b, h, q, :n], a_s[b, h, q, :n]
                kl += float((p * (p / r).log()).sum())
        total += kl / (2 * n) / 3
    assert total > 0.05  # attention maps that differ: the comparison can tell layers apart
    assert abs(parts["attention_kl"].item() - total) < 1e-5
    assert parts["value_kl"].item() > 0 and abs(parts["loss"].item() - parts["attention_relation_loss"].item()) < 1e-6


def test_tinybert_both_stages_and_minilmv2_across_widths_run_end_to_end(world):
    w = world
    teacher = ["--teacher_exp", "ft", "--tckpt", "4", "--model", "bert"]
    narrow = ["--d_model", "24", "--d_ff", "48", "--num_attention_heads", "2", "--num_hidden_layers", "2"]
    run(w, "run_tinybert_distil.py", "--experiment", "tb1", *teacher, *narrow, *STEPS)
    stage1 = w["exp"] / "tb1_bert_qqp"
    assert json.loads((stage1 / "config.json").read_text())["hidden_mapping"] == "E<-E, S1<-T2, S2<-T4"
    assert torch.load(stage1 / "projection-4.pt", weights_only=True)["maps.0.weight"].shape == (32, 24)
    run(
        w, "export_model.py", "--experiment", "tb1", "--model", "bert", "--task", "qqp", "--out", str(w["base"] / "tb1")
    )
    run(
        w,
        "run_tinybert_distil.py",
        "--experiment",
        "tb2",
        *teacher,
        "--tinybert_stage",
        "prediction",
        "--student_ptrain_ver",
        str(w["base"] / "tb1"),
        *STEPS,
    )
    stage2 = w["exp"] / "tb2_bert_qqp"
    assert not list(stage2.glob("projection-*.pt"))  # the prediction stage compares logits only
    # stage 2 starts from stage 1's student: its first checkpoint moved away from it, from there
    start = AutoModelForSequenceClassification.from_pretrained(w["base"] / "tb1").state_dict()
    after = torch.load(stage2 / "model-2.pt", weights_only=True)
    assert max((after[k].float() - start[k].float()).abs().max().item() for k in after if k in start) < 0.05
    # MiniLMv2 relations: a student of another width and head count, no projection
    run(
        w,
        "run_minilm_distil.py",
        "--experiment",
        "mini",
        *teacher,
        "--d_model",
        "24",
        "--d_ff",
        "48",
        "--num_attention_heads",
        "3",
        "--num_hidden_layers",
        "2",
        "--relation_heads",
        "4",
        "--padding",
        "dynamic",
        *STEPS,
    )
    mini = w["exp"] / "mini_bert_qqp"
    assert not list(mini.glob("projection-*.pt"))
    assert (
        json.loads((mini / "config.json").read_text())["hidden_mapping"]
        == "S2<-T4 (Q-Q, K-K, V-V relations, 4 relation heads)"
    )


def test_attention_capture_records_every_layer_of_every_family():
    for family in ("bert", "albert", "roberta", "distilbert", "electra"):
        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_config(synthetic.tiny_config(family, num_layers=3)).eval()
        ids = torch.randint(5, 100, (2, 5))
        batch = {"input_ids": ids, "token_type_ids": torch.zeros_like(ids), "attention_mask": torch.ones_like(ids)}
        captured = forward(AttentionCapture(model), batch, True)
        plain = forward(model, batch, True)
        assert len(captured.attention_inputs) == 3, family
        assert torch.allclose(captured.logits, plain.logits, atol=1e-6)
        # layer 2's query is the query layer applied to layer 1's output
        from fine_tune.models.families import get_family

        fam = get_family(family)
        blocks = fam.attention_modules(getattr(model, model.base_model_prefix))
        att = blocks[min(1, len(blocks) - 1)]  # ALBERT: one shared block, called for every layer
        with torch.no_grad():
            q = getattr(att, fam.qkv[0])(plain.hidden_states[0])
        assert torch.allclose(captured.attention_inputs[1][0], q, atol=1e-6), family
    # the hooks record nothing outside the capturing forward
    cap = AttentionCapture(model)
    model(**batch)
    assert all(not v for v in cap._records.values())


def test_a_layerwise_teacher_from_another_family_and_a_distilbert_student(world):
    """A BERT teacher and a DistilBERT student (BERT's tokenizer; no token types) in one layer-wise run."""
    w = world
    proc = run(
        w,
        "run_pkd_distill.py",
        "--experiment",
        "pkd_distil",
        "--model",
        "distilbert",
        "--teacher_exp",
        "ft",
        "--tckpt",
        "4",
        *SMALL,
        *STEPS,
    )
    assert "pkd_distil_distilbert_qqp" in proc.stderr
    folder = w["exp"] / "pkd_distil_distilbert_qqp"
    assert json.loads((folder / "model" / "config.json").read_text())["model_type"] == "distilbert"
    assert "start random" in proc.stderr  # a DistilBERT student cannot take BERT's pretrained layers


def test_layer_maps_of_a_student_whose_layers_do_not_divide_the_teachers():
    """4 of 6 layers (the real-model check's MiniLM teacher): ceil(j * 6 / 4) = 2, 3, 5, 6 for every mapping that
    spreads the student over the teacher; divisible counts keep the original's j * skip."""
    from fine_tune.engine.optim import OptimiserSettings
    from fine_tune.errors import UserError
    from fine_tune.layer_mapping import uniform_layers
    from fine_tune.methods import ALPKD, LAD, PKD
    from fine_tune.methods.lad import LADNO, lad_targets

    assert uniform_layers(4, 6) == [2, 3, 5, 6] and uniform_layers(6, 12) == [2, 4, 6, 8, 10, 12]
    assert uniform_layers(4, 12) == [3, 6, 9, 12] and uniform_layers(3, 3) == [1, 2, 3]
    assert PKD(4, 6, 1, 1, 1, 1).teacher_layers == [2, 3, 5, 6]
    assert PKD(4, 6, 1, 1, 1, 1, loss="normalized_cls").teacher_layers == [2, 3, 5]
    assert lad_targets(6, 4) == [2, 3, 5, 6]
    gates = OptimiserSettings(lr=1e-3, total_step=1, warmup_step=0)
    assert (
        LAD(4, 6, 1, 1, 1, 1, d_model=8, seq_len=4, gate_optimiser=gates).describe_mapping()
        == "S1<-A2, S2<-A3, S3<-A5, S4<-A6"
    )
    assert [ALPKD(4, 6, 1, 1, 1, 1, mode="alp-kd-hidden-v2").visible(j) for j in range(1, 5)] == [2, 3, 5, None]
    assert TinyBERT(4, 6, 0, 1, 1, 1).teacher_layers == [2, 3, 5, 6]
    with pytest.raises(UserError, match="not a multiple"):
        from fine_tune.plan.training import check_shapes

        check_shapes(types_flags(4), TeacherShape(6, 8), LADNO)
    check_shapes(types_flags(4), TeacherShape(6, 8), PKD)  # spread: accepted


def types_flags(layers: int):
    from types import SimpleNamespace

    return SimpleNamespace(student=SimpleNamespace(num_hidden_layers=layers))


def test_tinybert_head_mean_compares_the_heads_mean_maps():
    """--tinybert_attention head_mean: MSE of the head-averaged score maps, a student of 3 heads, a teacher of 2."""
    torch.manual_seed(3)
    method = TinyBERT(1, 1, 0.0, 1.0, 1.0, 1.0, student_heads=3, teacher_heads=2, attention="head_mean")
    with pytest.raises(Exception, match="head by head"):
        TinyBERT(1, 1, 0.0, 1.0, 1.0, 1.0, student_heads=3, teacher_heads=2)
    b, s = 2, 5
    mask = torch.ones(b, s, dtype=torch.long)
    mask[1, 3:] = 0
    sq, sk = torch.randn(b, s, 6, dtype=torch.float64), torch.randn(b, s, 6, dtype=torch.float64)
    tq, tk = torch.randn(b, s, 8, dtype=torch.float64), torch.randn(b, s, 8, dtype=torch.float64)
    st = ModelOutputs(torch.randn(b, 2), (torch.randn(b, s, 8),), mask, ((sq, sk, sq),), torch.randn(b, s, 8))
    te = ModelOutputs(torch.randn(b, 2), (torch.randn(b, s, 8),), mask, ((tq, tk, tq),), torch.randn(b, s, 8))
    got = method.losses({}, st, te)["attention_loss"].item()

    def mean_map(q, k, heads):
        d = q.shape[-1] // heads
        maps = [
            q[..., h * d : (h + 1) * d] @ k[..., h * d : (h + 1) * d].transpose(-1, -2) / d**0.5 for h in range(heads)
        ]
        return sum(maps) / heads * mask[:, None, :].double()

    expected = ((mean_map(sq, sk, 3) - mean_map(tq, tk, 2)) ** 2).mean().item()
    assert abs(got - expected) < 1e-6


@pytest.mark.parametrize("packed", [True, False])
def test_the_padding_free_forward_records_the_same_attention_inputs(packed):
    """TinyBERT and MiniLM on a BERT run the toolkit's own forward (fused Q/K/V, real tokens only under --padding
    dynamic): its recorded projections equal the hooks' on Hugging Face's forward (at every position over the
    padded grid; at the real tokens when packed), and so do the methods' losses."""
    from fine_tune.models.padding_free import PaddingFree

    torch.manual_seed(4)
    teacher = AutoModelForSequenceClassification.from_config(synthetic.tiny_config("bert", num_layers=4)).eval()
    student = AutoModelForSequenceClassification.from_config(synthetic.tiny_config("bert", num_layers=2)).eval()
    ids = torch.randint(5, 100, (3, 7))
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[0, 4:] = 0
    mask[2, 6:] = 0
    batch = {"input_ids": ids, "token_type_ids": torch.zeros_like(ids), "attention_mask": mask}
    padding = "dynamic" if packed else "max_length"
    methods = [
        TinyBERT(2, 4, 0.0, 1.0, 1.0, 1.0, student_heads=2, teacher_heads=2, padding=padding),
        MiniLM(2, 4, 0.0, 0.0, 1.0, 1.0, student_heads=2, teacher_heads=2, padding=padding),
    ]
    with torch.no_grad():
        outs = {}
        for name, wrap in (
            ("hooks", AttentionCapture),
            ("own", lambda m: PaddingFree(m, packed, record_attention=True)),
        ):
            outs[name] = [forward(wrap(m), batch, True) for m in (student, teacher)]
        real = mask.bool()[..., None]
        for a, b in zip(outs["hooks"], outs["own"]):
            for layer_a, layer_b in zip(a.attention_inputs, b.attention_inputs):
                for x, y in zip(layer_a, layer_b):
                    assert y.dim() == (3 if packed else 4)  # the grid hands on head-major [B, S, H, d_head] views
                    y = full_width(y)
                    if packed:
                        assert torch.allclose(x * real, y, atol=1e-5) and not y[~real.expand_as(y)].any()
                    else:
                        assert torch.allclose(x, y, atol=1e-5)
        for method in methods:
            la = method.losses(batch, *outs["hooks"])["loss"]
            lb = method.losses(batch, *outs["own"])["loss"]
            assert torch.allclose(la, lb, atol=1e-5), (method.name, la, lb)


@pytest.mark.parametrize("ls, lt", [(4, 12), (6, 12), (4, 24), (6, 24)])
def test_tinybert_and_minilm_mappings_for_4_and_6_layer_students(ls, lt):
    skip = lt // ls
    tiny = TinyBERT(ls, lt, 0, 1, 1, 1)
    assert tiny.teacher_layers == [j * skip for j in range(1, ls + 1)]
    assert tiny.describe_mapping() == "E<-E, " + ", ".join(f"S{j}<-T{j * skip}" for j in range(1, ls + 1))
    mini = MiniLM(ls, lt, 0, 0, 1, 1, student_heads=2, teacher_heads=2)
    assert mini.describe_mapping() == f"S{ls}<-T{lt} (attention, value relation)"
    assert MiniLM(ls, lt, 0, 0, 1, 1, student_heads=2, teacher_heads=2, teacher_layer=lt - 2).teacher_layer == lt - 2


def test_token_types_go_only_to_models_that_read_them(world):
    """A RoBERTa (one token type) with BERT's WordPiece tokenizer, whose pairs carry type 1: the model is not
    given the ids (they would index past its one-row table)."""
    w = world
    folder = w["base"] / "roberta-wordpiece"
    shutil.copytree(w["roberta"], folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt"):
        (folder / name).unlink(missing_ok=True)
    synthetic.tiny_tokenizer("bert").save_pretrained(folder)
    assert max(max(t) for t in synthetic.tiny_tokenizer("bert")(["a b"], ["c d"])["token_type_ids"]) == 1
    run(
        w,
        "run_fine_tune.py",
        "--experiment",
        "rwp",
        "--model",
        "roberta",
        "--ptrain_ver",
        str(folder),
        "--max_seq_len",
        "48",
        *STEPS,
    )
    run(w, "run_fine_tune_eval.py", "--experiment", "rwp", "--model", "roberta", "--task", "qqp", "--dataset", "dev")


def test_the_family_records_import_without_torch_or_transformers():
    """The command line reads FAMILY_NAMES before --help: the records (and synthetic.py) stay light to import."""
    import subprocess
    import sys

    code = (
        "import sys, fine_tune.models.families as f, fine_tune.synthetic; "
        "assert f.FAMILY_NAMES == tuple(f.FAMILIES); "
        "print(sorted(m for m in ('torch', 'transformers', 'numpy') if m in sys.modules))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert proc.stdout.strip() == "[]", proc.stdout + proc.stderr


def test_a_seventh_family_is_one_record(monkeypatch, tmp_path):
    """Adding a family is one record: XLM-RoBERTa as RoBERTa's record under its own model type configures a
    student, a tiny pretrained folder with its tokenizer, and the tokens both take (RoBERTa's position offset), with
    no other change."""
    import dataclasses

    from fine_tune.models import families
    from fine_tune.models.classifier import build_from_config, student_config

    record = dataclasses.replace(families.FAMILIES["roberta"], name="xlm-roberta")
    monkeypatch.setitem(families.FAMILIES, "xlm-roberta", record)
    config = student_config(
        "xlm-roberta",
        vocab_size=len(synthetic.VOCAB),
        num_class=3,
        d_model=32,
        d_ff=64,
        num_attention_heads=2,
        num_hidden_layers=2,
        type_vocab_size=1,
        dropout=0.1,
        max_position_embeddings=40,
        pad_token_id=1,
    )
    assert config.model_type == "xlm-roberta" and config.num_labels == 3 and config.type_vocab_size == 1
    assert config.max_position_embeddings == 42 and families.usable_positions(config) == 40
    folder = synthetic.write_tiny_model(tmp_path / "xlmr", "xlm-roberta", max_positions=40)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tiny = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    assert tiny.config.model_type == "xlm-roberta" and families.usable_positions(tiny.config) == 40
    assert tokenizer.pad_token_id == tiny.config.pad_token_id == 1  # the BPE-style tokenizer of the record
    # a full-length sequence: every one of the usable positions is in the table
    enc = tokenizer(" ".join(synthetic.WORDS[:38]), truncation=True, return_tensors="pt")
    enc = {k: enc[k] for k in ("input_ids", "attention_mask")}
    assert enc["input_ids"].shape[1] == 40
    student = build_from_config(config).eval()
    with torch.no_grad():
        assert tiny(**enc).logits.shape == (1, 2) and student(**enc).logits.shape == (1, 3)
