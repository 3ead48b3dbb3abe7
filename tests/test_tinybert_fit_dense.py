"""TinyBERT's W_h as its released code has it (huawei-noah/Pretrained-Language-Model, TinyBERT/transformer/
modeling.py, ``TinyBertForSequenceClassification``): the student's ``fit_dense`` applied to every hidden state and
the embeddings, at ANY widths (``--tinybert_fit_dense always``, the default; ``when_widths_differ``: the toolkit's
rule before issue 30, none at the teacher's width and always from N(0, 0.02)); started from a pretrained student's
own ``fit_dense`` (General TinyBERT's checkpoints ship a trained one); a TinyBERT run started before the fix
resumes without it."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, method_from_flags, one_thread
from conftest import run_in_world as run
from transformers import AutoModelForSequenceClassification, BertForPreTraining

from fine_tune import synthetic
from fine_tune.engine.protocol import TeacherShape
from fine_tune.models.attention_capture import AttentionCapture
from fine_tune.models.forward import forward

TEACHER = ["--teacher_exp", "ft", "--tckpt", "4", "--model", "bert", "--task", "qqp"]
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
]
EQUAL = ["--d_model", "32", "--d_ff", "64", "--num_attention_heads", "2", "--num_hidden_layers", "2"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Synthetic QQP, a tiny 4-layer BERT of width 32 fine-tuned on it (the teacher, experiment ``ft``)."""
    base = tmp_path_factory.mktemp("fit_dense")
    w = {"base": base, "data": base / "data", "exp": base / "exp"}
    synthetic.write_qqp(w["data"], n_train=48, n_dev=16, n_test=8)
    with one_thread():
        w["pre"] = synthetic.write_tiny_model(base / "pre-bert", "bert", num_layers=4)
        run(
            w,
            "run_fine_tune.py",
            "--experiment",
            "ft",
            "--model",
            "bert",
            "--ptrain_ver",
            str(w["pre"]),
            "--max_seq_len",
            "32",
            "--task",
            "qqp",
            *STEPS,
        )
        yield w


def general_tinybert(
    folder: Path, width: int, fit_dense: dict[str, torch.Tensor], fmt: str = "bin", seed: int = 7
) -> Path:
    """A pretrained student laid out as General TinyBERT's checkpoints: a BERT pre-training model (``bert.*``,
    ``cls.*`` keys) saved with ``save_pretrained`` (and the teacher's tokenizer), with the ``fit_dense`` tensors added
    to its weights file: ``pytorch_model.bin`` (``fmt="bin"``, as General TinyBERT ships) or ``model.safetensors``."""
    torch.manual_seed(seed)
    model = BertForPreTraining(synthetic.tiny_config("bert", num_layers=2, hidden=width, ff=2 * width))
    model.save_pretrained(folder)
    synthetic.tiny_tokenizer("bert").save_pretrained(folder)
    from safetensors.torch import load_file, save_file

    state = {k: v.contiguous() for k, v in load_file(folder / "model.safetensors").items()}
    state.update(fit_dense)
    if fmt == "bin":
        (folder / "model.safetensors").unlink()
        torch.save(state, folder / "pytorch_model.bin")
    else:
        save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def fit_dense_of(teacher_width: int, student_width: int, seed: int = 11) -> dict[str, torch.Tensor]:
    """A ``fit_dense`` far from N(0, 0.02): weights ~ N(0, 0.3), biases ~ N(0.5, 0.1)."""
    g = torch.Generator().manual_seed(seed)
    return {
        "fit_dense.weight": torch.randn(teacher_width, student_width, generator=g) * 0.3,
        "fit_dense.bias": 0.5 + 0.1 * torch.randn(teacher_width, generator=g),
    }


# ------------------------------------------------------------------------ the loss: the released formula
def released_intermediate_loss(student, teacher, batch, fit_dense):
    """task_distill.py's intermediate loss written out (float64): the attention scores as BERT's self-attention
    makes them, with the -10000 mask added and every value <= -1e2 replaced by 0, layers_per_block = L_t / L_s,
    ``att_loss = sum_m MSE(A^S_m, A^T_{m*lpb})``; ``rep_loss = sum_{i=0..M} MSE(fit_dense(H^S_i), H^T_{i*lpb})`` over
    the embeddings (i = 0) and every layer; ``fit_dense`` None: the student's states as they are."""
    mask = batch["attention_mask"].double()
    with torch.no_grad():
        s_hid = student(**batch, output_hidden_states=True).hidden_states
        t_hid = teacher(**batch, output_hidden_states=True).hidden_states

    def scores(model, hidden, layer):
        att = model.bert.encoder.layer[layer].attention.self
        q, k = att.query(hidden[layer]).double(), att.key(hidden[layer]).double()
        b, s, d = q.shape
        h = model.config.num_attention_heads
        q, k = (x.view(b, s, h, d // h).transpose(1, 2) for x in (q, k))
        raw = q @ k.transpose(-1, -2) / (d // h) ** 0.5 + (1.0 - mask)[:, None, None, :] * -10000.0
        return torch.where(raw <= -1e2, torch.zeros_like(raw), raw)

    lpb = len(t_hid[1:]) // len(s_hid[1:])
    with torch.no_grad():
        att = sum(
            ((scores(student, s_hid, m) - scores(teacher, t_hid, m * lpb + lpb - 1)) ** 2).mean()
            for m in range(len(s_hid) - 1)
        )
        project = (
            (lambda x: x.double())
            if fit_dense is None
            else (lambda x: x.double() @ fit_dense[0].double().T + fit_dense[1].double())
        )
        reps = [((project(s_hid[i]) - t_hid[i * lpb].double()) ** 2).mean() for i in range(len(s_hid))]
    return att, reps


@pytest.mark.parametrize("rule", ["always", "when_widths_differ"])
def test_equal_widths_loss_is_the_released_formula(rule):
    """A student of the teacher's width: by default (``always``) the loss is the released code's with fit_dense
    applied to every student hidden state and the embeddings (W_h set here to values far from the identity, so a
    W_h left out or skipped on one state shows); ``when_widths_differ`` compares the states as they are."""
    torch.manual_seed(0)
    teacher = AutoModelForSequenceClassification.from_config(synthetic.tiny_config("bert", num_layers=4)).eval()
    student = AutoModelForSequenceClassification.from_config(synthetic.tiny_config("bert", num_layers=2)).eval()
    for model in (teacher, student):  # attention maps that differ between layers
        for layer in model.bert.encoder.layer:
            layer.attention.self.query.weight.data.mul_(12.0)
            layer.attention.self.key.weight.data.mul_(12.0)
    method = method_from_flags(
        "tinybert",
        [*EQUAL, "--max_seq_len", "7", "--mu", "0.6", "--padding", "max_length", "--tinybert_fit_dense", rule],
        TeacherShape(4, 32, 2),
        3,
    )
    assert method.fit_dense == rule
    fit_dense = None
    if rule == "always":
        assert method.needs_projection and len(method.projection.maps) == 1
        w = method.projection.maps[0]
        assert w.weight.shape == (32, 32) and abs(w.weight.std().item() - 0.02) < 0.004 and not w.bias.any()
        g = torch.Generator().manual_seed(5)
        with torch.no_grad():
            w.weight.copy_(torch.randn(32, 32, generator=g) * 0.2)
            w.bias.copy_(torch.randn(32, generator=g) * 0.3)
        fit_dense = (w.weight.detach(), w.bias.detach())
    else:
        assert not method.needs_projection and method.projection is None
    ids = torch.randint(5, 100, (3, 7))
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[1, 5:] = 0
    mask[2, 3:] = 0
    batch = {"input_ids": ids, "token_type_ids": torch.zeros_like(ids), "attention_mask": mask}
    with torch.no_grad():
        parts = method.losses(
            batch, forward(AttentionCapture(student), batch, True), forward(AttentionCapture(teacher), batch, True)
        )
    att, reps = released_intermediate_loss(student, teacher, batch, fit_dense)
    assert att.item() > 0.1
    assert abs(parts["attention_loss"].item() - 0.6 * att.item()) < 1e-5 * max(1.0, att.item())
    assert abs(parts["embedding_loss"].item() - 0.6 * reps[0].item()) < 1e-5
    assert abs(parts["hidden_loss"].item() - 0.6 * sum(reps[1:]).item()) < 1e-5
    assert abs(parts["loss"].item() - 0.6 * (att + sum(reps)).item()) < 1e-5 * max(1.0, att.item())


# ------------------------------------------------------------------------ runs at the teacher's width
def test_equal_widths_run_trains_w_h_and_when_widths_differ_has_none(world):
    w = world
    done = run(w, "run_tinybert_distil.py", "--experiment", "tb_always", *TEACHER, *EQUAL, *STEPS)
    assert "learned width projection" in done.stderr
    assert "differs from the teacher's" not in done.stderr  # the note for a student of another width
    assert "initialised student layers from" in done.stderr  # of the teacher's width: it takes the teacher's layers
    folder = w["exp"] / "tb_always_bert_qqp"
    assert json.loads((folder / "config.json").read_text())["tinybert_fit_dense"] == "always"
    p2, p4 = (torch.load(folder / f"projection-{s}.pt", weights_only=True) for s in (2, 4))
    assert p2["maps.0.weight"].shape == (32, 32) and set(p2) == {"maps.0.weight", "maps.0.bias"}
    assert not torch.equal(p2["maps.0.weight"], p4["maps.0.weight"]) and p4["maps.0.bias"].abs().max() > 0  # trained
    old = run(
        w,
        "run_tinybert_distil.py",
        "--experiment",
        "tb_before",
        *TEACHER,
        *EQUAL,
        *STEPS,
        "--tinybert_fit_dense",
        "when_widths_differ",
    )
    folder = w["exp"] / "tb_before_bert_qqp"
    assert json.loads((folder / "config.json").read_text())["tinybert_fit_dense"] == "when_widths_differ"
    assert not list(folder.glob("projection-*.pt")) and "learned width projection" not in old.stderr
    assert (folder / "model-4.pt").is_file()


# ------------------------------------------------------------------------ a pretrained student's fit_dense
def plan_of(w, *args):
    from fine_tune.cli import parse_layerwise
    from fine_tune.plan.training import plan_online_distill

    flags = parse_layerwise(
        "run_tinybert_distil.py",
        "",
        "tinybert",
        ["--data_root", str(w["data"]), "--exp_root", str(w["exp"]), *TEACHER, *args],
    )
    return plan_online_distill(flags, "tinybert")


def test_a_pretrained_students_fit_dense_starts_w_h(world):
    """General TinyBERT's layout (pytorch_model.bin, ``bert.*`` keys and a top-level ``fit_dense``), a student
    narrower than the teacher (24 vs 32): the plan finds its fit_dense, W_h holds exactly its values before the
    first step, the run says so and trains from there (after one AdamW step of lr 1e-5 every value is within
    1e-5 of the file's, where a fresh N(0, 0.02) W_h would be ~0.3 away)."""
    w = world
    values = fit_dense_of(32, 24)
    student = general_tinybert(w["base"] / "general", 24, values)
    plan = plan_of(w, "--experiment", "tb_general", "--student_ptrain_ver", str(student))
    method = plan.method
    assert (
        method.pretrained_projection is not None and method.pretrained_projection.file == student / "pytorch_model.bin"
    )
    assert any("W_h starts from" in n and "pytorch_model.bin" in n for n in plan.notes), plan.notes
    torch.manual_seed(0)
    method.create_parameters(None, None)
    assert torch.equal(method.projection.maps[0].weight, values["fit_dense.weight"])
    assert torch.equal(method.projection.maps[0].bias, values["fit_dense.bias"])
    assert not (w["exp"] / "tb_general_bert_qqp").exists()  # planning writes nothing

    done = run(
        w,
        "run_tinybert_distil.py",
        "--experiment",
        "tb_general",
        *TEACHER,
        "--student_ptrain_ver",
        str(student),
        "--total_step",
        "1",
        "--warmup_step",
        "0",
        "--ckpt_step",
        "1",
        "--log_step",
        "1",
        "--batch_size",
        "8",
        "--lr",
        "1e-5",
    )
    lines = [line for line in done.stderr.splitlines() if "W_h starts from" in line]
    assert len(lines) == 1 and str(student / "pytorch_model.bin") in lines[0], done.stderr
    after = torch.load(w["exp"] / "tb_general_bert_qqp" / "projection-1.pt", weights_only=True)
    for key, name in (("maps.0.weight", "fit_dense.weight"), ("maps.0.bias", "fit_dense.bias")):
        moved = (after[key] - values[name]).abs().max().item()
        assert 5e-6 < moved < 1.05e-5, (key, moved)  # one AdamW step from the file's values

    # the shipped recipe of the stage starts its shared projection from the same fit_dense: the same student, bit for bit
    recipe = run(
        w,
        "run_distil.py",
        "--recipe",
        str(REPO / "recipes" / "tinybert_intermediate.yaml"),
        "--experiment",
        "tb_general_recipe",
        *TEACHER,
        "--student_ptrain_ver",
        str(student),
        "--total_step",
        "1",
        "--warmup_step",
        "0",
        "--ckpt_step",
        "1",
        "--log_step",
        "1",
        "--batch_size",
        "8",
        "--lr",
        "1e-5",
    )
    assert "the shared projection starts from the pretrained student's fit_dense.weight/bias" in recipe.stderr
    for name in ("model-1.pt", "projection-1.pt"):
        a, b = (
            torch.load(w["exp"] / f"{e}_bert_qqp" / name, weights_only=True)
            for e in ("tb_general", "tb_general_recipe")
        )
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name

    # --tinybert_fit_dense when_widths_differ, the old rule whole: a W_h (the widths differ) from N(0, 0.02)
    old = plan_of(
        w,
        "--experiment",
        "tb_general_old",
        "--student_ptrain_ver",
        str(student),
        "--tinybert_fit_dense",
        "when_widths_differ",
    )
    assert old.method.needs_projection and old.method.pretrained_projection is None
    assert any("unused under --tinybert_fit_dense when_widths_differ" in n for n in old.notes), old.notes
    torch.manual_seed(0)
    old.method.create_parameters(None, None)
    fresh = old.method.projection.maps[0]
    assert fresh.weight.shape == (32, 24) and abs(fresh.weight.std().item() - 0.02) < 0.004 and not fresh.bias.any()

    # the prediction stage has no W_h: the file's fit_dense is neither checked nor used
    pred = plan_of(
        w, "--experiment", "tb_general_pred", "--student_ptrain_ver", str(student), "--tinybert_stage", "prediction"
    )
    assert pred.method.pretrained_projection is None and not pred.method.needs_projection
    assert not any("W_h" in n or "weight: unused" in n for n in pred.notes), pred.notes


def test_fit_dense_at_equal_widths_and_when_widths_differ(world, tmp_path):
    """A pretrained student of the teacher's width with a [32, 32] fit_dense in model.safetensors: W_h starts from
    it by default; under ``when_widths_differ`` there is no W_h and a note says the file's fit_dense is unused."""
    w = world
    values = fit_dense_of(32, 32, seed=13)
    student = general_tinybert(tmp_path / "same", 32, values, fmt="safetensors")
    plan = plan_of(w, "--experiment", "tb_same", "--student_ptrain_ver", str(student))
    torch.manual_seed(0)
    plan.method.create_parameters(None, None)
    assert torch.equal(plan.method.projection.maps[0].weight, values["fit_dense.weight"])
    off = plan_of(
        w, "--experiment", "tb_same", "--student_ptrain_ver", str(student), "--tinybert_fit_dense", "when_widths_differ"
    )
    assert off.method.pretrained_projection is None and not off.method.needs_projection
    assert any("unused" in n and "model.safetensors" in n for n in off.notes), off.notes


def test_reading_fit_dense_from_the_weights_layouts(tmp_path, monkeypatch):
    """``fit_dense`` at the top level or under ``module.`` / ``bert.``; safetensors, PyTorch's zip and legacy
    formats, a sharded safetensors model; none in the file: None; a hub name: the files the hub's cache gives."""
    from safetensors.torch import save_file

    from fine_tune.errors import UserError
    from fine_tune.models.projection import read_pretrained_projection

    weight, bias = torch.randn(6, 4), torch.randn(6)
    other = {"bert.embeddings.word_embeddings.weight": torch.randn(10, 4)}

    def folder(name, state, writer):
        f = tmp_path / name
        f.mkdir()
        writer(state, f)
        return f

    def safetensors_file(state, f):
        save_file(state, f / "model.safetensors", metadata={"format": "pt"})

    def zip_bin(state, f):
        torch.save(state, f / "pytorch_model.bin")

    def legacy_bin(state, f):
        torch.save(state, f / "pytorch_model.bin", _use_new_zipfile_serialization=False)

    def sharded(state, f):
        keys = sorted(state)
        shards = {"model-00001-of-00002.safetensors": keys[:1], "model-00002-of-00002.safetensors": keys[1:]}
        for shard, names in shards.items():
            save_file({k: state[k] for k in names}, f / shard, metadata={"format": "pt"})
        index = {"metadata": {}, "weight_map": {k: s for s, names in shards.items() for k in names}}
        (f / "model.safetensors.index.json").write_text(json.dumps(index))

    for prefix in ("", "module.", "bert."):
        for writer in (safetensors_file, zip_bin, legacy_bin, sharded):
            state = dict(other, **{f"{prefix}fit_dense.weight": weight, f"{prefix}fit_dense.bias": bias})
            f = folder(f"{writer.__name__}-{prefix or 'top'}", state, writer)
            found = read_pretrained_projection(str(f), "fit_dense", "--student_ptrain_ver")
            assert found is not None and found.prefix == f"{prefix}fit_dense.", (writer.__name__, prefix)
            assert torch.equal(found.weight, weight) and torch.equal(found.bias, bias)
            found.check(4, 6, "W_h")  # [teacher 6, student 4]: fits
    # the top-level key wins over a prefixed one
    f = folder(
        "both",
        dict(
            other,
            **{
                "module.fit_dense.weight": weight * 2,
                "module.fit_dense.bias": bias * 2,
                "fit_dense.weight": weight,
                "fit_dense.bias": bias,
            },
        ),
        safetensors_file,
    )
    assert torch.equal(read_pretrained_projection(str(f), "fit_dense", "x").weight, weight)
    # a weights file without one, and another name
    f = folder("none", dict(other), zip_bin)
    assert read_pretrained_projection(str(f), "fit_dense", "x") is None
    assert read_pretrained_projection(str(tmp_path / "both"), "other_dense", "x") is None
    # a weight without its bias cannot start a Linear with a bias
    f = folder("no_bias", dict(other, **{"fit_dense.weight": weight}), safetensors_file)
    found = read_pretrained_projection(str(f), "fit_dense", "x")
    with pytest.raises(UserError, match=r"fit_dense\.weight \[6, 4\] and fit_dense\.bias missing"):
        found.check(4, 6, "W_h")
    # a sharded model whose weight and bias sit in different shards (Hugging Face cuts shards between any keys)
    f = tmp_path / "split"
    f.mkdir()
    shards = {
        "model-00001-of-00002.safetensors": {**other, "fit_dense.weight": weight},
        "model-00002-of-00002.safetensors": {"fit_dense.bias": bias},
    }
    for shard, tensors in shards.items():
        save_file(tensors, f / shard, metadata={"format": "pt"})
    (f / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": {k: s for s, tensors in shards.items() for k in tensors}})
    )
    found = read_pretrained_projection(str(f), "fit_dense", "x")
    assert found.file == f / "model-00001-of-00002.safetensors"
    assert torch.equal(found.weight, weight) and torch.equal(found.bias, bias)
    found.check(4, 6, "W_h")
    # values that are not finite cannot start W_h (refused naming the file and the key, not a NaN loss at step 1)
    for bad in (float("nan"), float("inf")):
        f = folder(
            f"not_finite_{bad}",
            dict(other, **{"fit_dense.weight": weight, "fit_dense.bias": bias.clone().fill_(bad)}),
            safetensors_file,
        )
        with pytest.raises(UserError, match=r"model\.safetensors: fit_dense\.bias holds values that are not finite"):
            read_pretrained_projection(str(f), "fit_dense", "x").check(4, 6, "W_h")
    # a hub name: the weight files come from the hub's cache (here a stand-in serving a folder)
    hub = folder("hub", dict(other, **{"fit_dense.weight": weight, "fit_dense.bias": bias}), sharded)
    asked = []

    def cached_file(repo, name, _raise_exceptions_for_missing_entries=True, **kw):
        assert repo == "someone/general-tinybert"
        asked.append(name)
        return str(hub / name) if (hub / name).is_file() else None

    import transformers.utils

    monkeypatch.setattr(transformers.utils, "cached_file", cached_file)
    found = read_pretrained_projection("someone/general-tinybert", "fit_dense", "--student_ptrain_ver")
    assert asked == [
        "model.safetensors",
        "model.safetensors.index.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ]
    assert found.file == hub / "model-00002-of-00002.safetensors"
    assert torch.equal(found.weight, weight) and torch.equal(found.bias, bias)


def test_a_fit_dense_of_the_wrong_shape_is_refused_before_anything_is_written(world, tmp_path):
    w = world
    student = general_tinybert(tmp_path / "wrong", 24, fit_dense_of(16, 24))  # maps 24 -> 16, the teacher is 32
    bad = run(
        w,
        "run_tinybert_distil.py",
        "--experiment",
        "tb_wrong",
        *TEACHER,
        "--student_ptrain_ver",
        str(student),
        *STEPS,
        check=False,
    )
    assert bad.returncode == 2, bad.stderr
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), bad.stderr
    assert str(student / "pytorch_model.bin") in lines[0] and "[16, 24]" in lines[0] and "[32, 24]" in lines[0]
    assert lines[0].endswith("; pass --tinybert_fit_dense when_widths_differ to start W_h from N(0, 0.02)")
    # ... which is the way around it: W_h then starts from N(0, 0.02), the file's fit_dense unused (a note)
    assert (
        plan_of(
            w,
            "--experiment",
            "tb_wrong3",
            "--student_ptrain_ver",
            str(student),
            "--tinybert_fit_dense",
            "when_widths_differ",
        ).method.pretrained_projection
        is None
    )
    assert not (w["exp"] / "tb_wrong_bert_qqp").exists()
    # a run that uses no W_h (the prediction stage) does not read it as an error
    assert (
        plan_of(
            w, "--experiment", "tb_wrong2", "--student_ptrain_ver", str(student), "--tinybert_stage", "prediction"
        ).method.projection
        is None
    )


# ------------------------------------------------------------------------ a run started before the fix
def test_an_old_tinybert_run_resumes_bit_identically_without_w_h(world):
    """An equal-width TinyBERT run killed after checkpoint 2 under the old rule (simulated: run with
    ``--tinybert_fit_dense when_widths_differ``, the field then removed from its config.json and the digest its
    resume state recorded made for that config.json, as the old code wrote them). Re-running its command (no
    ``--tinybert_fit_dense``: the new default) resumes it with the old rule, says so, and ends bit-identical to
    the same run uninterrupted; its config.json still lacks the field; a fresh run of the command trains W_h."""
    import subprocess

    from fine_tune import config as cfg
    from fine_tune.engine.checkpoint import load_resume_state, resume_path

    w = world
    args = [*TEACHER, *EQUAL, *STEPS]
    env = dict(os.environ, FT_DATA_ROOT=str(w["data"]), FT_EXP_ROOT=str(w["exp"]), OMP_NUM_THREADS="1")
    killed = subprocess.run(
        [
            sys.executable,
            str(REPO / "tests" / "killpoint.py"),
            "after:resume-2.pt",
            str(REPO / "run_tinybert_distil.py"),
            "--experiment",
            "tb_old",
            *args,
            "--tinybert_fit_dense",
            "when_widths_differ",
        ],
        env=env,
        capture_output=True,
        text=True,
        cwd=str(w["base"]),
    )
    assert killed.returncode == -9, killed.stderr
    folder = w["exp"] / "tb_old_bert_qqp"
    assert (folder / "resume-2.pt").is_file() and not (folder / "model-4.pt").exists()
    config = json.loads((folder / "config.json").read_text())
    del config["tinybert_fit_dense"]  # as the code before the fix wrote it
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    state = load_resume_state(folder, 2)
    state["config_sha256"] = cfg.config_digest(cfg.load_config(folder / "config.json"))
    torch.save(state, resume_path(folder, 2))

    with one_thread():
        resumed = run(w, "run_tinybert_distil.py", "--experiment", "tb_old", *args)
        run(
            w,
            "run_tinybert_distil.py",
            "--experiment",
            "tb_old_ref",
            *args,
            "--tinybert_fit_dense",
            "when_widths_differ",
        )
        run(w, "run_tinybert_distil.py", "--experiment", "tb_new", *args)
    assert "resuming from model-2.pt" in resumed.stderr, resumed.stderr
    assert "fidelity fix" in resumed.stderr and "tinybert_fit_dense" in resumed.stderr, resumed.stderr
    assert "tinybert_fit_dense" not in json.loads((folder / "config.json").read_text())
    assert not list(folder.glob("projection-*.pt"))
    ref = w["exp"] / "tb_old_ref_bert_qqp"
    a, b = (torch.load(f / "model-4.pt", weights_only=True) for f in (folder, ref))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    new = w["exp"] / "tb_new_bert_qqp"
    assert json.loads((new / "config.json").read_text())["tinybert_fit_dense"] == "always"
    assert (new / "projection-4.pt").is_file()
    c = torch.load(new / "model-4.pt", weights_only=True)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())
