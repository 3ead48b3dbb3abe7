"""Engine math: schedule, no-decay groups, accumulation, padding, losses, devices and precision."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fine_tune.batching import Collator, tokenize
from fine_tune.engine import device as devmod
from fine_tune.engine.device import Precision, resolve_device, resolve_precision
from fine_tune.engine.optim import OptimiserSettings, linear_schedule, param_groups
from fine_tune.engine.protocol import ModelOutputs
from fine_tune.engine.trainer import Trainer, TrainSettings
from fine_tune.errors import UserError
from fine_tune.experiment import ExperimentDir
from fine_tune.methods import HardLabel, logits_kd_loss
from fine_tune.models.classifier import build_from_config, student_config
from fine_tune.models.forward import forward
from fine_tune.reporting import TensorBoardReporter
from fine_tune.tasks import get_task


def tiny(model="bert", dropout=0.0, layers=2, seed=0):
    torch.manual_seed(seed)
    cfg = student_config(
        model,
        vocab_size=300,
        num_class=2,
        d_model=32,
        d_ff=64,
        num_attention_heads=2,
        num_hidden_layers=layers,
        type_vocab_size=2,
        dropout=dropout,
        max_position_embeddings=64,
        pad_token_id=0,
        d_emb=16,
    )
    return build_from_config(cfg)


# ------------------------------------------------------------------------------------ schedule, groups


def test_linear_schedule_values():
    peak, warmup, total = 1e-3, 10, 100
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=peak)
    sched = linear_schedule(opt, warmup_step=warmup, total_step=total)
    seen = {}
    for step in range(total + 1):
        seen[step] = opt.param_groups[0]["lr"]
        assert sched.get_last_lr()[0] == seen[step]
        opt.step()
        sched.step()

    def expect(step):
        return peak * step / warmup if step < warmup else peak * (total - step) / (total - warmup)

    for step in (0, 5, 10, 55, 100):
        assert seen[step] == pytest.approx(expect(step), abs=1e-12), step
    assert seen[5] == pytest.approx(5e-4) and seen[10] == pytest.approx(peak) and seen[55] == pytest.approx(5e-4)
    assert seen[0] == 0.0 and seen[100] == 0.0


@pytest.mark.parametrize("family", ["bert", "albert"])
def test_no_decay_groups_by_name(family):
    model = tiny(family)
    named = list(model.named_parameters())
    decay, no_decay = param_groups(named, 0.01)
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    ids_decay = {id(p) for p in decay["params"]}
    ids_no = {id(p) for p in no_decay["params"]}
    assert len(decay["params"]) + len(no_decay["params"]) == len(named)
    assert ids_decay.isdisjoint(ids_no)
    for name, p in named:
        if "bias" in name or "LayerNorm.weight" in name:
            assert id(p) in ids_no, name
        else:
            assert id(p) in ids_decay, name
    by_name = dict(named)
    assert id(by_name["classifier.weight"]) in ids_decay and id(by_name["classifier.bias"]) in ids_no
    if family == "albert":
        full_ln = [n for n in by_name if n.endswith("full_layer_layer_norm.weight")]
        assert full_ln, "the ALBERT model has no full_layer_layer_norm.weight"
        for n in full_ln:
            assert id(by_name[n]) in ids_decay, f"{n} must be decayed (name lacks 'LayerNorm.weight')"
        assert id(by_name["albert.embeddings.LayerNorm.weight"]) in ids_no
    else:
        assert id(by_name["bert.embeddings.LayerNorm.weight"]) in ids_no


# ------------------------------------------------------------------------------- accumulation, padding


def _features(tiny_bert, data_root, n, max_len=32):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_bert)
    return tokenize(tok, get_task("boolq").load(data_root, "train", n), max_len), tok


def _train(features, tok, tmp_path, batch, accum, steps=3, padding="dynamic", log_step=1, max_norm=1.0, warmup=1):
    model = tiny(dropout=0.0, seed=1)
    optimiser = OptimiserSettings(lr=1e-3, total_step=steps, warmup_step=warmup, weight_decay=0.01, max_norm=max_norm)
    settings = TrainSettings(
        optimiser=optimiser,
        batch_size=batch,
        accum_step=accum,
        ckpt_step=1000,
        log_step=log_step,
        seed=5,
        tag_prefix="boolq/train/bert",
    )
    collator = Collator(features, tok.pad_token_id, 32, padding)
    exp = ExperimentDir(tmp_path, f"run-{batch}-{accum}-{padding}-{log_step}")
    trainer = Trainer(
        model,
        HardLabel(),
        collator,
        len(features),
        settings,
        exp,
        torch.device("cpu"),
        Precision("cpu", None),
        progress=False,
        forward=forward,
        reporter=TensorBoardReporter(exp.log_dir),
    )
    result = trainer.train()
    assert result["steps"] == steps
    return model, exp


def test_gradient_accumulation_matches_full_batch(tiny_bert, data_root, tmp_path):
    features, tok = _features(tiny_bert, data_root, 64)
    assert len(features) == 64
    start = {k: v.clone() for k, v in tiny(dropout=0.0, seed=1).state_dict().items()}
    full, _ = _train(features, tok, tmp_path, 32, 1)
    accum, exp = _train(features, tok, tmp_path, 32, 4)
    full_state, accum_state = full.state_dict(), accum.state_dict()
    changed = []
    for k, v in full_state.items():
        assert torch.allclose(v, accum_state[k], atol=1e-5), k
        if not torch.equal(v, start[k]):
            changed.append(k)
    assert "classifier.weight" in changed and len(changed) > len(full_state) // 2
    assert sorted(p.name for p in exp.path.glob("model-*.pt")) == ["model-3.pt"]  # the end checkpoint
    saved = torch.load(exp.checkpoint_path(3), weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in accum_state.items())

    # the logged loss is the mean over the step's rows whatever the accumulation: at step 1 it is the cross-entropy
    # of the initial model on the first 32 rows of the seeded order, computed here independently
    from test_scripts_e2e import tb_scalars

    from fine_tune.batching import MicroBatchStream

    rows = MicroBatchStream(64, 32, seed=5).next()
    b = Collator(features, tok.pad_token_id, 32, "dynamic")(rows)
    model = tiny(dropout=0.0, seed=1).eval()
    with torch.no_grad():
        logits = model(
            input_ids=b["input_ids"], token_type_ids=b["token_type_ids"], attention_mask=b["attention_mask"]
        ).logits
    true_loss = F.cross_entropy(logits, b["labels"]).item()
    full_log = tb_scalars(tmp_path / "log" / "run-32-1-dynamic-1")["boolq/train/bert/loss"]
    accum_log = tb_scalars(exp.log_dir)["boolq/train/bert/loss"]
    assert [s for s, _ in full_log] == [s for s, _ in accum_log] == [1, 2, 3]
    assert full_log[0][1] == pytest.approx(true_loss, rel=1e-5)
    assert [v for _, v in accum_log] == pytest.approx([v for _, v in full_log], rel=1e-4)


def test_a_logged_window_is_the_mean_of_its_steps(tiny_bert, data_root, tmp_path):
    """log_step 3 over 7 steps (windows 1-3, 4-6 and the short last one, 7), accumulation 2, clipping at 0.002 (every
    step clipped): each logged loss and grad_norm is the mean over its window's steps of what a log_step 1 run of
    the same training logs, the lr the schedule's at the logged step; the step-1 norm is the student's gradient
    norm before clipping, computed here (the clipping itself: tests/test_optimiser.py)."""
    from test_scripts_e2e import tb_scalars

    from fine_tune.batching import MicroBatchStream

    features, tok = _features(tiny_bert, data_root, 40)
    every, exp1 = _train(features, tok, tmp_path, 8, 2, steps=7, log_step=1, max_norm=0.002, warmup=2)
    windowed, exp3 = _train(features, tok, tmp_path, 8, 2, steps=7, log_step=3, max_norm=0.002, warmup=2)
    a, b = tb_scalars(exp1.log_dir), tb_scalars(exp3.log_dir)
    tag = "boolq/train/bert/"
    for name in ("loss", "grad_norm"):
        per_step = [v for _, v in a[tag + name]]
        assert [s for s, _ in a[tag + name]] == list(range(1, 8)) and len(set(per_step)) == 7, name
        assert name == "loss" or min(per_step) > 0.002 * 2  # every step clipped
        assert [s for s, _ in b[tag + name]] == [3, 6, 7], name
        want = [np.mean(per_step[0:3]), np.mean(per_step[3:6]), per_step[6]]
        assert [v for _, v in b[tag + name]] == pytest.approx(want, rel=1e-5), name
    # lr: warmup 2 then linear decay to 0 at step 7, read after the step's schedule update
    assert [v for _, v in b[tag + "lr"]] == pytest.approx([1e-3 * (7 - s) / 5 for s in (3, 6, 7)], rel=1e-6)
    assert all(torch.equal(v, windowed.state_dict()[k]) for k, v in every.state_dict().items())

    # step 1's norm: the student's whole gradient norm of the mean loss over the step's 8 rows, before clipping
    stream = MicroBatchStream(40, 4, seed=5)
    model = tiny(dropout=0.0, seed=1)
    collate = Collator(features, tok.pad_token_id, 32, "dynamic")
    for _ in range(2):
        rb = collate(stream.next())
        out = model(input_ids=rb["input_ids"], token_type_ids=rb["token_type_ids"], attention_mask=rb["attention_mask"])
        (F.cross_entropy(out.logits, rb["labels"]) / 2).backward()
    norm = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in model.parameters() if p.grad is not None)).item()
    assert norm > 0.002 * 4 and a[tag + "grad_norm"][0][1] == pytest.approx(norm, rel=1e-4)


def test_dynamic_padding_same_logits_as_fixed(tiny_bert, data_root):
    features, tok = _features(tiny_bert, data_root, 16, max_len=64)
    model = tiny().eval()
    rows = np.arange(16)
    dyn = Collator(features, tok.pad_token_id, 64, "dynamic")(rows)
    fixed = Collator(features, tok.pad_token_id, 64, "max_length")(rows)
    assert dyn["input_ids"].shape[1] == features.lengths().max() < fixed["input_ids"].shape[1] == 64
    assert torch.equal(fixed["attention_mask"].sum(1), torch.from_numpy(features.lengths()))
    with torch.no_grad():
        a, b = forward(model, dyn, False).logits, forward(model, fixed, False).logits
    assert a.shape == (16, 2)
    assert torch.allclose(a, b, atol=1e-5)


# ------------------------------------------------------------------------------------------------ losses


def _kl_explicit(t, s, T):
    """sum_c p_c log(p_c / q_c), averaged over the batch, with p = softmax(t/T), q = softmax(s/T)."""
    t, s = t.double() / T, s.double() / T
    p = torch.exp(t) / torch.exp(t).sum(dim=1, keepdim=True)
    q = torch.exp(s) / torch.exp(s).sum(dim=1, keepdim=True)
    total = 0.0
    for i in range(t.shape[0]):
        for c in range(t.shape[1]):
            total += p[i, c] * torch.log(p[i, c] / q[i, c])
    return total / t.shape[0]


def _ce_explicit(s, y):
    s = s.double()
    q = torch.exp(s) / torch.exp(s).sum(dim=1, keepdim=True)
    return -sum(torch.log(q[i, y[i]]) for i in range(s.shape[0])) / s.shape[0]


@pytest.mark.parametrize("T", [1.0, 20.0])
def test_logits_kd_loss_against_equation(T):
    g = torch.Generator().manual_seed(0)
    s, t = 3 * torch.randn(8, 3, generator=g), 3 * torch.randn(8, 3, generator=g)
    y = torch.randint(0, 3, (8,), generator=g)
    hard_w, soft_w = 0.3, 0.7
    parts = logits_kd_loss(s, t, y, hard_weight=hard_w, soft_weight=soft_w, temperature=T)
    ce, kl = _ce_explicit(s, y), _kl_explicit(t, s, T)
    assert kl.item() > 0
    assert parts["hard_loss"].item() == pytest.approx(ce.item(), rel=1e-5)
    assert parts["soft_loss"].item() == pytest.approx((T * T * kl).item(), rel=1e-4)
    assert parts["logits_loss"].item() == pytest.approx((hard_w * ce + soft_w * T * T * kl).item(), rel=1e-5)


def test_logits_kd_loss_without_labels_or_teacher():
    g = torch.Generator().manual_seed(2)
    s, t = torch.randn(4, 2, generator=g), torch.randn(4, 2, generator=g)
    y = torch.tensor([0, 1, 1, 0])
    only_soft = logits_kd_loss(s, t, None, 1.0, 1.0, 2.0)
    assert "hard_loss" not in only_soft
    assert only_soft["logits_loss"].item() == pytest.approx((4 * _kl_explicit(t, s, 2.0)).item(), rel=1e-5)
    only_hard = logits_kd_loss(s, None, y, 1.0, 1.0, 2.0)
    assert "soft_loss" not in only_hard
    assert only_hard["logits_loss"].item() == pytest.approx(_ce_explicit(s, y).item(), rel=1e-5)


def test_default_kd_has_the_2020_gradients():
    g = torch.Generator().manual_seed(1)
    t = 2 * torch.randn(6, 2, generator=g)
    y = torch.randint(0, 2, (6,), generator=g)
    s1 = torch.randn(6, 2, generator=g).requires_grad_(True)
    s2 = s1.detach().clone().requires_grad_(True)
    logits_kd_loss(s1, t, y, 1.0, 1.0, 1.0)["logits_loss"].backward()
    old = F.cross_entropy(s2, y) - (F.softmax(t, 1) * F.log_softmax(s2, 1)).sum(1).mean()
    old.backward()
    assert s1.grad.abs().max() > 1e-3
    assert torch.allclose(s1.grad, s2.grad, atol=1e-7)


def test_hard_label_is_cross_entropy():
    g = torch.Generator().manual_seed(3)
    s, y = torch.randn(5, 2, generator=g), torch.tensor([0, 1, 1, 0, 1])
    out = HardLabel().losses({"labels": y}, ModelOutputs(logits=s), None)
    assert torch.allclose(out["loss"], F.cross_entropy(s, y))
    assert out["loss"].item() == pytest.approx(_ce_explicit(s, y).item(), rel=1e-6)


# ------------------------------------------------------------------------------------ device, precision


def test_resolve_device(monkeypatch, capsys):
    assert resolve_device(-1, None) == torch.device("cpu")
    assert resolve_device(-1, 2) == torch.device("cpu")  # --device_id wins over --num_gpu
    assert resolve_device(None, 0) == torch.device("cpu")
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device(3, None) == torch.device("cpu")
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "--device_id 3" in err[0] and "CPU" in err[0]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(UserError, match="2 CUDA device"):
        resolve_device(3, None)
    with pytest.raises(UserError, match="2 CUDA device"):  # indices are 0-based: 2 is already too high
        resolve_device(2, None)
    assert resolve_device(1, None) == torch.device("cuda:1")
    assert resolve_device(None, 2) == torch.device("cuda:0")
    assert resolve_device(None, 0) == torch.device("cpu")
    assert capsys.readouterr().err == ""


def test_resolve_precision(monkeypatch, capsys):
    cpu = torch.device("cpu")
    assert resolve_precision(False, "fp16", cpu).dtype is None
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(devmod, "cpu_has_native_bf16", lambda: False)
    assert resolve_precision(True, "fp16", cpu).dtype is None
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("warning: --amp on CPU")
    monkeypatch.setattr(devmod, "cpu_has_native_bf16", lambda: True)
    bf16 = resolve_precision(True, "fp16", cpu)
    assert bf16.dtype is torch.bfloat16 and not bf16.use_scaler
    cuda = resolve_precision(True, "fp16", torch.device("cuda:0"))
    assert cuda.dtype is torch.float16 and cuda.use_scaler
    assert not resolve_precision(True, "bf16", torch.device("cuda:0")).use_scaler
    assert resolve_precision(False, "fp16", torch.device("cuda:0")).dtype is None
