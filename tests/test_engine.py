"""Engine math: schedule, no-decay groups, accumulation, padding, losses, devices and precision."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fine_tune.batching import Collator, tokenize
from fine_tune.engine import device as devmod
from fine_tune.engine.device import Precision, resolve_device, resolve_precision
from fine_tune.engine.optim import linear_schedule, param_groups
from fine_tune.engine.trainer import Trainer, TrainSettings, forward
from fine_tune.errors import UserError
from fine_tune.experiment import ExperimentDir
from fine_tune.methods import HardLabel, logits_kd_loss
from fine_tune.models.classifier import build_from_config, student_config
from fine_tune.tasks import get_task


def tiny(model="bert", dropout=0.0, layers=2, seed=0):
    torch.manual_seed(seed)
    cfg = student_config(model, vocab_size=300, num_class=2, d_model=32, d_ff=64, num_attention_heads=2,
                         num_hidden_layers=layers, type_vocab_size=2, dropout=dropout, max_position_embeddings=64,
                         pad_token_id=0, d_emb=16)
    return build_from_config(cfg)


def test_linear_schedule_values():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=1e-3)
    sched = linear_schedule(opt, warmup_step=10, total_step=100)
    seen = {}
    for step in range(101):
        seen[step] = sched.get_last_lr()[0]
        opt.step()
        sched.step()
    expect = lambda s: 1e-3 * s / 10 if s < 10 else 1e-3 * (100 - s) / 90  # noqa: E731
    for step in (0, 5, 10, 55, 100):
        assert seen[step] == pytest.approx(expect(step), abs=1e-12)


@pytest.mark.parametrize("family", ["bert", "albert"])
def test_no_decay_groups_by_name(family):
    model = tiny(family)
    decay, no_decay = param_groups(model.named_parameters(), 0.01)
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    ids_no = {id(p) for p in no_decay["params"]}
    for name, p in model.named_parameters():
        assert (id(p) in ids_no) == ("bias" in name or "LayerNorm.weight" in name), name
    if family == "albert":
        names = {id(p): n for n, p in model.named_parameters()}
        full_ln = [n for n in names.values() if n.endswith("full_layer_layer_norm.weight")]
        assert full_ln and all(id(dict(model.named_parameters())[n]) not in ids_no for n in full_ln)


def _features(tiny_bert, data_root, n, max_len=32):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_bert)
    return tokenize(tok, get_task("boolq").load(data_root, "train", n), max_len), tok


def _train(features, tok, tmp_path, batch, accum, steps=3, padding="dynamic"):
    model = tiny(dropout=0.0, seed=1)
    settings = TrainSettings(total_step=steps, batch_size=batch, accum_step=accum, lr=1e-3, beta1=0.9, beta2=0.999,
                             eps=1e-8, weight_decay=0.01, max_norm=1.0, warmup_step=1, ckpt_step=1000, log_step=1,
                             seed=5, tag_prefix="boolq/train/bert")
    collator = Collator(features, tok.pad_token_id, 32, padding)
    exp = ExperimentDir(tmp_path, f"run-{batch}-{accum}-{padding}")
    trainer = Trainer(model, HardLabel(), collator, len(features), settings, exp, torch.device("cpu"),
                      Precision("cpu", None), progress=False)
    trainer.train()
    return model, exp


def test_gradient_accumulation_matches_full_batch(tiny_bert, data_root, tmp_path):
    features, tok = _features(tiny_bert, data_root, 64)
    start = tiny(dropout=0.0, seed=1).state_dict()
    full, _ = _train(features, tok, tmp_path, 32, 1)
    accum, exp = _train(features, tok, tmp_path, 32, 4)
    changed = False
    for k, v in full.state_dict().items():
        assert torch.allclose(v, accum.state_dict()[k], atol=2e-5), k
        changed |= not torch.equal(v, start[k])
    assert changed
    assert sorted(p.name for p in exp.path.glob("model-*.pt")) == ["model-3.pt"]  # the end checkpoint


def test_dynamic_padding_same_logits_as_fixed(tiny_bert, data_root):
    features, tok = _features(tiny_bert, data_root, 16, max_len=64)
    model = tiny().eval()
    rows = np.arange(16)
    dyn = Collator(features, tok.pad_token_id, 64, "dynamic")(rows)
    fixed = Collator(features, tok.pad_token_id, 64, "max_length")(rows)
    assert dyn["input_ids"].shape[1] < fixed["input_ids"].shape[1] == 64
    with torch.no_grad():
        a, b = forward(model, dyn, False).logits, forward(model, fixed, False).logits
    assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("T", [1.0, 20.0])
def test_logits_kd_loss_against_equation(T):
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(8, 3, generator=g), torch.randn(8, 3, generator=g)
    y = torch.randint(0, 3, (8,), generator=g)
    parts = logits_kd_loss(s, t, y, hard_weight=0.3, soft_weight=0.7, temperature=T)
    log_q = s / T - torch.logsumexp(s / T, dim=1, keepdim=True)
    p = torch.exp(t / T) / torch.exp(t / T).sum(dim=1, keepdim=True)
    kl = (p * (torch.log(p) - log_q)).sum() / 8
    ce = -(s - torch.logsumexp(s, 1, keepdim=True))[torch.arange(8), y].mean()
    assert parts["logits_loss"].item() == pytest.approx((0.3 * ce + 0.7 * T * T * kl).item(), rel=1e-5)
    assert parts["hard_loss"].item() == pytest.approx(ce.item(), rel=1e-5)


def test_default_kd_has_the_2020_gradients():
    g = torch.Generator().manual_seed(1)
    t = torch.randn(6, 2, generator=g)
    y = torch.randint(0, 2, (6,), generator=g)
    s1 = torch.randn(6, 2, generator=g, requires_grad=True)
    s2 = s1.detach().clone().requires_grad_(True)
    logits_kd_loss(s1, t, y, 1.0, 1.0, 1.0)["logits_loss"].backward()
    old = F.cross_entropy(s2, y) - (F.softmax(t, 1) * F.log_softmax(s2, 1)).sum(1).mean()
    old.backward()
    assert torch.allclose(s1.grad, s2.grad, atol=1e-7)


def test_hard_label_is_cross_entropy():
    s, y = torch.randn(5, 2), torch.tensor([0, 1, 1, 0, 1])
    out = HardLabel().losses({"labels": y}, type("O", (), {"logits": s})(), None)
    assert torch.equal(out["loss"], F.cross_entropy(s, y))


def test_resolve_device(monkeypatch, capsys):
    assert resolve_device(-1, None) == torch.device("cpu")
    assert resolve_device(None, 0) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device(3, None) == torch.device("cpu")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--device_id 3" in err[0] and "CPU" in err[0]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(UserError, match="2 CUDA device"):
        resolve_device(3, None)
    assert resolve_device(1, None) == torch.device("cuda:1")
    assert resolve_device(None, 2) == torch.device("cuda:0")


def test_resolve_precision(monkeypatch, capsys):
    cpu = torch.device("cpu")
    assert resolve_precision(False, "fp16", cpu).dtype is None
    monkeypatch.setattr(devmod, "cpu_has_native_bf16", lambda: False)
    assert resolve_precision(True, "fp16", cpu).dtype is None
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: --amp on CPU")
    monkeypatch.setattr(devmod, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision(True, "fp16", cpu).dtype is torch.bfloat16
    cuda = resolve_precision(True, "fp16", torch.device("cuda:0"))
    assert cuda.dtype is torch.float16 and cuda.use_scaler
    assert not resolve_precision(True, "bf16", torch.device("cuda:0")).use_scaler
