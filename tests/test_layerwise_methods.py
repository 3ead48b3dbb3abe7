"""Layer-wise methods against independent computations (plain tensor algebra on small random tensors), their
layer mappings, gradient flow through the one engine, and numerical stability.

Every expected value here is computed in the test from the equations of doc/methods.md, not with the
toolkit's helpers.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import method_from_flags

from fine_tune.engine.optim import GATE_NO_DECAY, OptimiserSettings
from fine_tune.engine.protocol import ModelOutputs, TeacherShape
from fine_tune.errors import UserError
from fine_tune.methods import ALPKD, LAD, LADNO, PKD, MethodSettings, PartialLAD, StudentShape
from fine_tune.methods.alp import alp_weights
from fine_tune.methods.lad import chain_contributions, lad_targets, partial_lad_mapping
from fine_tune.methods.logits_kd import logits_kd_loss
from fine_tune.methods.pkd import PkdFlags, normalized_cls_loss, pkd_teacher_layers
from fine_tune.models.gates import GateBlock, make_gates
from fine_tune.settings import DistilFlags, LayerwiseFlags

B, S, D = 3, 5, 8
GATES = OptimiserSettings(
    lr=1e-3,
    beta1=0.9,
    beta2=0.999,
    eps=1e-8,
    weight_decay=0.01,
    max_norm=1.0,
    total_step=10,
    warmup_step=0,
    no_decay=GATE_NO_DECAY,
    clip_per_module=True,
)


def gated(cls, *args, **kwargs):
    """A gated method with its gates made (as the workflow does after seeding)."""
    method = cls(*args, **kwargs)
    method.create_parameters(None)
    return method


def hidden(n: int, seed: int, scale: float = 1.0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(B, S, D, generator=g) * scale for _ in range(n))


def outputs(n_layers: int, seed: int, mask: torch.Tensor | None = None) -> ModelOutputs:
    g = torch.Generator().manual_seed(seed + 1000)
    return ModelOutputs(
        torch.randn(B, 2, generator=g),
        hidden(n_layers, seed),
        torch.ones(B, S, dtype=torch.long) if mask is None else mask,
    )


def manual_gate(gate: GateBlock, prev: torch.Tensor, cur: torch.Tensor) -> torch.Tensor:
    """sigmoid(prev W^T + b), mix, LayerNorm over the whole [S, D] block of each example, by hand."""
    W, b = gate.linear.weight.detach(), gate.linear.bias.detach()
    g = 1.0 / (1.0 + torch.exp(-(prev @ W.T + b)))
    x = cur * g + prev * (1 - g)
    mean = x.mean(dim=(1, 2), keepdim=True)
    var = ((x - mean) ** 2).mean(dim=(1, 2), keepdim=True)
    return (x - mean) / torch.sqrt(var + 1e-5) * gate.layernorm.weight.detach() + gate.layernorm.bias.detach()


def manual_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ((a - b) ** 2).sum() / a.numel()


def manual_logits_loss(s, t, y, hard, soft, T):
    ps = torch.exp(s / T) / torch.exp(s / T).sum(-1, keepdim=True)
    pt = torch.exp(t / T) / torch.exp(t / T).sum(-1, keepdim=True)
    kl = (pt * (torch.log(pt) - torch.log(ps))).sum(-1).mean()
    ce = -torch.log(torch.exp(s) / torch.exp(s).sum(-1, keepdim=True))[torch.arange(len(y)), y].mean()
    return hard * ce + soft * T * T * kl


def test_logits_loss_with_temperature():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g) * 3
    y = torch.tensor([0, 1, 2, 1, 0, 2])
    parts = logits_kd_loss(s, t, y, hard_weight=0.3, soft_weight=0.7, temperature=20.0)
    assert parts["logits_loss"].item() == pytest.approx(manual_logits_loss(s, t, y, 0.3, 0.7, 20.0).item(), rel=1e-5)


def test_gate_forward_and_all_zeros_first_step():
    torch.manual_seed(0)
    gate = GateBlock(D, S)
    with torch.no_grad():  # non-trivial LayerNorm affine parameters
        gate.layernorm.weight.uniform_(0.5, 1.5)
        gate.layernorm.bias.uniform_(-0.5, 0.5)
    prev, cur = hidden(2, 1)
    assert torch.allclose(gate(prev, cur), manual_gate(gate, prev, cur), atol=1e-5)
    assert torch.equal(gate(torch.zeros_like(cur), cur), cur)  # all-zeros prev: returns cur untouched
    assert torch.equal(gate(None, cur), cur)
    # Xavier-uniform W: bound sqrt(6 / (D + D)); LayerNorm over [S, D]
    assert gate.linear.weight.abs().max() <= math.sqrt(6 / (2 * D))
    assert tuple(gate.layernorm.weight.shape) == (S, D)
    # The bound alone also holds for torch's default Linear init (kaiming-uniform, a=sqrt(5): U(-1/sqrt(fan_in),
    # 1/sqrt(fan_in)), variance 1/(3 fan_in)). Tell the two apart on gates large enough for tight statistics
    # (d*d = 65536 weights: the sample variance is within ~1% of the true one): Xavier-uniform
    # U(-sqrt(6/(fan_in+fan_out)), +) has variance 2/(fan_in+fan_out), 3x the default's for a square W.
    d = 256
    xavier_var, xavier_bound = 2 / (d + d), math.sqrt(6 / (d + d))
    default_var, default_bound = 1 / (3 * d), 1 / math.sqrt(d)
    assert xavier_var / default_var == pytest.approx(3.0) and xavier_bound / default_bound == pytest.approx(
        math.sqrt(3)
    )
    torch.manual_seed(1)
    gates = make_gates(2, d, 2)
    assert all(isinstance(g, GateBlock) for g in gates)
    for g in gates:
        w, b = g.linear.weight.detach(), g.linear.bias.detach()
        assert w.mean().item() == pytest.approx(0.0, abs=0.01 * xavier_bound)
        assert w.var().item() == pytest.approx(xavier_var, rel=0.1)  # the default's is 67% off
        assert 0.99 * xavier_bound <= w.abs().max().item() <= xavier_bound  # the default's max is 0.58 of it
        # bias: gates.py keeps torch's default U(-1/sqrt(fan_in), 1/sqrt(fan_in)); LayerNorm: ones / zeros
        assert b.abs().max().item() <= default_bound and b.abs().max().item() > 0.5 * default_bound
        assert b.var().item() == pytest.approx(default_var, rel=0.3)
        assert torch.equal(g.layernorm.weight.detach(), torch.ones(2, d))
        assert torch.equal(g.layernorm.bias.detach(), torch.zeros(2, d))
    assert not torch.equal(gates[0].linear.weight, gates[1].linear.weight)  # each gate drawn on its own


def test_lad_aggregation_chain_and_loss():
    torch.manual_seed(0)
    method = gated(
        LAD,
        6,
        12,
        hard_weight=0.3,
        soft_weight=0.7,
        temperature=20.0,
        mu=500.0,
        d_model=D,
        seq_len=S,
        gate_optimiser=GATES,
    )
    assert len(method.gates) == 12
    st, te = outputs(6, 1), outputs(12, 2)
    y = torch.tensor([0, 1, 1])
    parts = method.losses({"labels": y}, st, te)
    # A_1 = H_1, A_k = gate_k(A_{k-1}, H_k); student j <- A_{2j}
    A = [te.hidden_states[0]]
    for k in range(1, 12):
        A.append(manual_gate(method.gates[k], A[-1], te.hidden_states[k]))
    per = [500.0 * manual_mse(st.hidden_states[j - 1], A[2 * j - 1]) / 6 for j in range(1, 7)]
    assert parts["hidden_loss"].item() == pytest.approx(sum(per).item(), rel=1e-4)
    for j in range(1, 7):
        assert parts[f"hidden_loss_{j}"].item() == pytest.approx(per[j - 1].item(), rel=1e-4)
    logits = manual_logits_loss(st.logits, te.logits, y, 0.3, 0.7, 20.0)
    assert parts["loss"].item() == pytest.approx((logits + sum(per)).item(), rel=1e-4)
    # mean gate values logged for gates 2..12 (gate 1 is never applied)
    assert sorted(k for k in parts if k.startswith("gate_mean_")) == sorted(f"gate_mean_{k}" for k in range(2, 13))
    W, b = method.gates[1].linear.weight.detach(), method.gates[1].linear.bias.detach()
    g2 = torch.sigmoid(te.hidden_states[0] @ W.T + b).mean()
    assert parts["gate_mean_2"].item() == pytest.approx(g2.item(), rel=1e-5)


def test_lad_targets_for_6_and_4_layer_students():
    assert lad_targets(12, 6) == [2, 4, 6, 8, 10, 12]
    assert lad_targets(12, 4) == [3, 6, 9, 12]
    assert lad_targets(24, 6) == [4, 8, 12, 16, 20, 24]
    assert lad_targets(24, 4) == [6, 12, 18, 24]


def test_lad_no_pairs():
    torch.manual_seed(0)
    method = gated(LADNO, 6, 12, 0.0, 0.0, 1.0, 2.0, d_model=D, seq_len=S, gate_optimiser=GATES)
    assert len(method.gates) == 6 and method.pairs == [(1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12)]
    st, te = outputs(6, 3), outputs(12, 4)
    parts = method.losses({"labels": torch.tensor([0, 1, 0])}, st, te)
    expected = sum(
        2.0
        * manual_mse(
            st.hidden_states[j - 1],
            manual_gate(method.gates[j - 1], te.hidden_states[2 * j - 2], te.hidden_states[2 * j - 1]),
        )
        / 6
        for j in range(1, 7)
    )
    assert parts["hidden_loss"].item() == pytest.approx(expected.item(), rel=1e-4)
    assert gated(LADNO, 4, 12, 0, 0, 1, 1, d_model=D, seq_len=S, gate_optimiser=GATES).pairs == [
        (2, 3),
        (5, 6),
        (8, 9),
        (11, 12),
    ]
    with pytest.raises(UserError, match="at least 12 layers"):
        gated(LADNO, 6, 6, 0, 0, 1, 1, d_model=D, seq_len=S, gate_optimiser=GATES)


def test_partial_lad_mapping():
    assert partial_lad_mapping([2, 4, 6, 8, 10], 6, 12) == [
        ("agg", 2),
        ("agg", 4),
        ("agg", 6),
        ("agg", 8),
        ("agg", 10),
        ("raw", 12),
    ]
    assert partial_lad_mapping([1, 2, 3], 6, 12) == [
        ("agg", 1),
        ("agg", 2),
        ("agg", 3),
        ("raw", 5),
        ("raw", 7),
        ("raw", 9),
    ]
    assert partial_lad_mapping([3, 6], 4, 12) == [("agg", 3), ("agg", 6), ("raw", 9), ("raw", 12)]
    for bad, msg in (
        ([0, 2], "0 is out of range"),
        ([2, 13], "13 is out of range"),
        ([4, 2], "increasing"),
        ([1, 2, 3, 4, 5, 6, 7], "7 indices for a 6-layer student"),
        ([4, 8], "beyond the teacher"),
    ):
        with pytest.raises(UserError, match=msg):
            partial_lad_mapping(bad, 6, 12)


def test_partial_lad_loss():
    torch.manual_seed(0)
    method = gated(
        PartialLAD, 6, 12, 0.0, 0.0, 1.0, 1.0, gate_indices=[2, 4, 6, 8, 10], d_model=D, seq_len=S, gate_optimiser=GATES
    )
    assert len(method.gates) == 10
    st, te = outputs(6, 5), outputs(12, 6)
    parts = method.losses({"labels": torch.tensor([1, 1, 0])}, st, te)
    A = [te.hidden_states[0]]
    for k in range(1, 10):
        A.append(manual_gate(method.gates[k], A[-1], te.hidden_states[k]))
    targets = [A[1], A[3], A[5], A[7], A[9], te.hidden_states[11]]
    expected = sum(manual_mse(st.hidden_states[j], targets[j]) / 6 for j in range(6))
    assert parts["hidden_loss"].item() == pytest.approx(expected.item(), rel=1e-4)


def manual_softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("mode", ["alp-kd", "alp-kd-hidden", "alp-kd-hidden-v2"])
def test_alp_kd_weights_and_loss(mode):
    method = ALPKD(3, 6, 0.0, 0.0, 1.0, 10.0, mode=mode)
    st, te = outputs(3, 7), outputs(6, 8)
    parts = method.losses({"labels": torch.tensor([0, 1, 0])}, st, te)
    T = np.stack([h.double().numpy() for h in te.hidden_states])  # [K, B, S, D]
    total = 0.0
    for j in range(1, 4):
        Hs = st.hidden_states[j - 1].double().numpy()
        if mode == "alp-kd":
            Hs, Tj = Hs[:, 0], T[:, :, 0]  # [B, D], [K, B, D]
        else:
            Tj = T
        scores = np.einsum("...d,k...d->...k", Hs, Tj) / math.sqrt(D)
        if mode == "alp-kd-hidden-v2" and j < 3:  # student j sees teacher layers 1..2j only
            scores[..., 2 * j :] = -np.inf
        w = manual_softmax(scores)
        if mode == "alp-kd-hidden-v2":
            assert np.all(w[..., 2 * j :] == 0) if j < 3 else np.all(w > 0)
        target = np.einsum("...k,k...d->...d", w, Tj)
        total += 10.0 * np.mean((Hs - target) ** 2) / 3
    assert parts["hidden_loss"].item() == pytest.approx(total, rel=1e-4)


def test_alp_weights_stable_for_large_scores():
    st, te = hidden(1, 9, scale=100.0)[0], torch.stack(hidden(4, 10, scale=100.0))  # scores ~ 1e4 / sqrt(D)
    raw = torch.einsum("bsd,kbsd->bsk", st, te) / math.sqrt(D)
    assert raw.abs().max() > 1e3 and not torch.isfinite(torch.exp(raw)).all()  # the original's exp/sum overflows
    w = alp_weights(st, te)
    assert torch.isfinite(w).all() and torch.allclose(w.sum(-1), torch.ones(B, S), atol=1e-5)


def test_pkd_mappings_and_losses():
    assert pkd_teacher_layers(12, 6, "skip", 6) == [2, 4, 6, 8, 10, 12]
    assert pkd_teacher_layers(12, 4, "skip", 4) == [3, 6, 9, 12]
    assert pkd_teacher_layers(24, 6, "skip", 6) == [4, 8, 12, 16, 20, 24]
    assert pkd_teacher_layers(12, 6, "skip", 5) == [2, 4, 6, 8, 10]  # Sun et al. PKD-skip
    assert pkd_teacher_layers(12, 6, "last", 5) == [7, 8, 9, 10, 11]  # PKD-last
    st, te = outputs(6, 11), outputs(12, 12)
    y = torch.tensor([0, 1, 1])
    # the original: full-sequence MSE, student j <- teacher 2j
    parts = PKD(6, 12, 0.0, 0.0, 1.0, 100.0).losses({"labels": y}, st, te)
    expected = sum(100.0 * manual_mse(st.hidden_states[j - 1], te.hidden_states[2 * j - 1]) / 6 for j in range(1, 7))
    assert parts["hidden_loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    # Sun et al.: normalised [CLS], layers 1..5
    parts = PKD(6, 12, 0.0, 0.0, 1.0, 100.0, loss="normalized_cls").losses({"labels": y}, st, te)
    exp2, stacked = 0.0, []
    for j in range(1, 6):
        s = st.hidden_states[j - 1][:, 0].double().numpy()
        t = te.hidden_states[2 * j - 1][:, 0].double().numpy()
        d = s / np.linalg.norm(s, axis=-1, keepdims=True) - t / np.linalg.norm(t, axis=-1, keepdims=True)
        exp2 += 100.0 * np.mean(np.sum(d**2, axis=-1))
        stacked.append(d)
    # Sun et al.'s released code: F.mse_loss over the stacked [B, M-1, D] tensor, i.e. the mean over batch,
    # layers and dimensions, so their beta (here mu = 100) transfers
    released = 100.0 * np.mean(np.stack(stacked, axis=1) ** 2)
    assert parts["hidden_loss"].item() == pytest.approx(released, rel=1e-5)
    dims = st.hidden_states[0].shape[-1]
    assert exp2 == pytest.approx(released * 5 * dims, rel=1e-9)  # the sum over layers and D: (M-1) D times larger
    # a run started before the fix keeps the summed reduction (config.json without pkd_cls_reduction)
    assert PKD(6, 12, 0.0, 0.0, 1.0, 100.0, loss="normalized_cls").record() == {"pkd_cls_reduction": "mean"}
    legacy = PKD.build(
        MethodSettings(
            {
                "distil": DistilFlags(softmax_temp=1.0, soft_weight=0.0, hard_weight=0.0),
                "layerwise": LayerwiseFlags(mu=100.0),
                "pkd": PkdFlags(pkd_loss="normalized_cls"),
            },
            num_class=2,
            student=StudentShape(6, D, 2),
            teacher=TeacherShape(12, D),
            legacy={"pkd_cls_reduction": "sum"},
        )
    )
    assert legacy.record() == {"pkd_cls_reduction": "sum"}
    assert legacy.losses({"labels": y}, st, te)["hidden_loss"].item() == pytest.approx(exp2, rel=1e-5)
    a = torch.randn(4, D)
    assert normalized_cls_loss(a, 3 * a).item() == pytest.approx(0.0, abs=1e-6)
    # opposite unit vectors: squared distance 4, i.e. 4 / D per dimension (mean) or 4 (summed over D)
    assert normalized_cls_loss(a, -a).item() == pytest.approx(4.0 / D, rel=1e-5)
    assert normalized_cls_loss(a, -a, reduction="sum").item() == pytest.approx(4.0, rel=1e-5)


def test_mu_zero_is_logits_only_and_hard_only_needs_no_teacher():
    m = PKD(6, 12, 0.3, 0.7, 2.0, 0.0)
    assert not m.needs_hidden_states and m.uses_teacher
    st, te = outputs(6, 13), outputs(12, 14)
    y = torch.tensor([1, 0, 1])
    parts = m.losses({"labels": y}, ModelOutputs(st.logits), ModelOutputs(te.logits))
    assert "hidden_loss" not in parts
    assert parts["loss"].item() == pytest.approx(
        manual_logits_loss(st.logits, te.logits, y, 0.3, 0.7, 2.0).item(), rel=1e-5
    )
    hard = PKD(6, 12, 1.0, 0.0, 1.0, 0.0)
    assert not hard.uses_teacher
    hidden_only = PKD(6, 12, 0.0, 0.0, 1.0, 5.0)  # hidden states only: the teacher runs, the head learns nothing
    assert hidden_only.uses_teacher and hidden_only.needs_hidden_states and not hidden_only.every_parameter_learns
    assert m.every_parameter_learns and hard.every_parameter_learns
    parts = hard.losses({"labels": y}, ModelOutputs(st.logits), None)  # the engine runs no teacher: None
    assert parts["loss"].item() == pytest.approx(torch.nn.functional.cross_entropy(st.logits, y).item(), rel=1e-6)
    assert "soft_loss" not in parts


def test_chain_contributions_formula():
    gbar = [1.0, 0.3, 0.6, 0.5]  # gates 1..4
    w = chain_contributions(gbar, 4, 6)
    expected = [1 * 0.7 * 0.4 * 0.5, 0.3 * 0.4 * 0.5, 0.6 * 0.5, 0.5, 0, 0]
    assert np.allclose(w, expected) and w.sum() == pytest.approx(1.0)
    assert np.allclose(chain_contributions(gbar, 1, 6), [1, 0, 0, 0, 0, 0])


# -- gradient flow through the one engine ----------------------------------------------------------------


def tiny_pair(layers_t=4, layers_s=2):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    kw = dict(
        vocab_size=50,
        hidden_size=D,
        intermediate_size=16,
        num_attention_heads=2,
        max_position_embeddings=S,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    teacher = BertForSequenceClassification(BertConfig(num_hidden_layers=layers_t, **kw)).eval()
    student = BertForSequenceClassification(BertConfig(num_hidden_layers=layers_s, **kw))
    g = torch.Generator().manual_seed(1)
    batch = {
        "input_ids": torch.randint(5, 50, (4, S), generator=g),
        "token_type_ids": torch.zeros(4, S, dtype=torch.long),
        "attention_mask": torch.ones(4, S, dtype=torch.long),
        "labels": torch.tensor([0, 1, 1, 0]),
    }
    return teacher, student, batch


def test_gates_get_gradient_only_from_the_hidden_loss():
    from fine_tune.models.forward import forward

    teacher, student, batch = tiny_pair()
    method = gated(LAD, 2, 4, 0.5, 0.5, 2.0, 10.0, d_model=D, seq_len=S, gate_optimiser=GATES)
    for p in teacher.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        t = forward(teacher, batch, True)
    s = forward(student, batch, True)
    parts = method.losses(batch, s, t)
    parts["logits_loss"].backward(retain_graph=True)
    assert all(p.grad is None for g in method.gates for p in g.parameters())
    parts["hidden_loss"].backward()
    applied = [g for k, g in enumerate(method.gates) if k >= 1]  # gates 2..4
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for g in applied for p in g.parameters())
    assert all(p.grad is None for p in method.gates[0].parameters())  # gate 1 is never applied
    assert all(p.grad is None for p in teacher.parameters())


def test_one_engine_step_moves_student_and_gates_not_teacher(tmp_path):
    from fine_tune.engine.device import Precision
    from fine_tune.engine.trainer import Trainer, TrainSettings
    from fine_tune.experiment import ExperimentDir
    from fine_tune.models.forward import forward

    teacher, student, batch = tiny_pair()
    method = gated(LAD, 2, 4, 0.5, 0.5, 2.0, 10.0, d_model=D, seq_len=S, gate_optimiser=replace(GATES, total_step=1))
    before_t = {k: v.clone() for k, v in teacher.state_dict().items()}
    before_s = {k: v.clone() for k, v in student.state_dict().items()}
    before_g = [{k: v.clone() for k, v in g.state_dict().items()} for g in method.gates]
    optimiser = OptimiserSettings(lr=1e-2, total_step=1, warmup_step=0, weight_decay=0.0, max_norm=1.0)
    settings = TrainSettings(
        optimiser=optimiser, batch_size=4, accum_step=1, ckpt_step=1, log_step=1, seed=0, tag_prefix="qqp/train/bert"
    )
    exp = ExperimentDir(tmp_path, "lad_step")
    exp.path.mkdir()
    trainer = Trainer(
        student,
        method,
        lambda rows: batch,
        4,
        settings,
        exp,
        torch.device("cpu"),
        Precision("cpu", None),
        teacher=teacher,
        progress=False,
        forward=forward,
    )
    trainer.train()
    assert all(torch.equal(v, before_t[k]) for k, v in teacher.state_dict().items())
    changed = [k for k, v in student.state_dict().items() if not torch.equal(v, before_s[k])]
    assert any("encoder.layer.0" in k for k in changed) and any("classifier" in k for k in changed)
    for k, g in enumerate(method.gates):
        moved = any(not torch.equal(v, before_g[k][n]) for n, v in g.state_dict().items())
        assert moved == (k >= 1), k  # gate 1 gets no gradient, so AdamW skips it
    # the checkpoint holds the gates after the step: gate-{i}-1.pt, 0-based as the original
    saved = torch.load(exp.path / "gate-3-1.pt", weights_only=True)
    assert torch.equal(saved["linear.weight"], method.gates[3].linear.weight.detach())


# -- every layer-wise method built from its script's flags, under both paddings, with and without a projection ---
#
# Each case: a 3-layer student of a 6-layer teacher (a layer map off by one lands on another layer), a batch whose
# sequences are 5, 3 and 2 tokens long with random values at the padding positions (the masked and the plain means
# differ), labels not in sorted order, flags away from every default (T, both weights, mu, the method's own), and
# a student narrower than the teacher (6 vs 8: one learned map per student layer, re-drawn large so that a map
# applied to the wrong layer changes the loss). The expected loss is computed here in float64 from the equations
# of doc/methods.md and the method's docstrings, with the gates and maps read from the method.

LT, LS, DT, SEQ = 6, 3, 8, 5
LENGTHS = (5, 3, 2)
FLAG_T, FLAG_HARD, FLAG_SOFT, FLAG_MU = 2.5, 0.3, 0.6, 7.5
LAYERWISE_CASES = {  # id: (method name, its own flags)
    "lad": ("lad", []),
    "lad_no": ("lad_no", []),
    "partial_lad": ("partial_lad", ["--probing_exp", "partial_lad", "--gate_indices", "2,4"]),
    "alp_kd": ("alp", ["--alp_exp", "alp-kd"]),
    "alp_kd_hidden": ("alp", ["--alp_exp", "alp-kd-hidden"]),
    "alp_kd_hidden_v2": ("alp", ["--alp_exp", "alp-kd-hidden-v2"]),
    "pkd_skip": ("pkd", []),
    "pkd_last": ("pkd", ["--pkd_strategy", "last"]),
    "pkd_cls_skip": ("pkd", ["--pkd_loss", "normalized_cls"]),
    "pkd_cls_last": ("pkd", ["--pkd_loss", "normalized_cls", "--pkd_strategy", "last"]),
}


def padded_mask() -> torch.Tensor:
    return torch.tensor([[1 if s < n else 0 for s in range(SEQ)] for n in LENGTHS])


def layerwise_from_flags(method_name: str, own: list[str], padding: str, student_width: int):
    return method_from_flags(
        method_name,
        [
            "--d_model",
            str(student_width),
            "--d_ff",
            "16",
            "--num_attention_heads",
            "2",
            "--num_hidden_layers",
            str(LS),
            "--max_seq_len",
            str(SEQ),
            "--softmax_temp",
            str(FLAG_T),
            "--hard_weight",
            str(FLAG_HARD),
            "--soft_weight",
            str(FLAG_SOFT),
            "--mu",
            str(FLAG_MU),
            "--padding",
            padding,
            *own,
        ],
        TeacherShape(LT, DT, 2),
        5,
    )


def ref_mse(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Plain mean over every element; with ``mask`` ([B, S] pairs only): the mean over the real tokens and D."""
    sq = (a.double() - b.double()) ** 2
    if mask is None or a.dim() < 3:
        return sq.mean()
    m = mask.double()[..., None]
    return (sq * m).sum() / (m.sum() * a.shape[-1])


def ref_gate(gate: GateBlock, prev: torch.Tensor, cur: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """LAD's gate in float64; ``mask``: the LayerNorm's statistics over each example's real tokens, 0 at padding."""
    W, b = gate.linear.weight.detach().double(), gate.linear.bias.detach().double()
    gamma, beta = gate.layernorm.weight.detach().double(), gate.layernorm.bias.detach().double()
    g = 1.0 / (1.0 + torch.exp(-(prev @ W.T + b)))
    x = cur * g + prev * (1 - g)
    out = torch.zeros_like(x)
    for i in range(x.shape[0]):
        real = slice(None) if mask is None else mask[i].bool()
        xi = x[i][real]
        mean, var = xi.mean(), ((xi - xi.mean()) ** 2).mean()
        out[i][real] = (xi - mean) / torch.sqrt(var + 1e-5) * gamma[real] + beta[real]
    return out


def ref_layerwise(
    case: str, method, st: ModelOutputs, te: ModelOutputs, y: torch.Tensor, mask: torch.Tensor | None
) -> tuple[float, dict[int, float]]:
    """The hidden loss and its per-layer terms of ``case``, in float64, from the equations."""
    hs = [h.double() for h in st.hidden_states]
    if method.projection is not None:  # one map per student layer: W_j h + b_j
        hs = [h @ m.weight.detach().double().T + m.bias.detach().double() for h, m in zip(hs, method.projection.maps)]
    ht = [h.double() for h in te.hidden_states]
    if case in ("lad", "partial_lad"):
        upto = 6 if case == "lad" else 4
        agg = [ht[0]]
        for k in range(2, upto + 1):  # A_k = gate_k(A_{k-1}, H_k)
            agg.append(ref_gate(method.gates[k - 1], agg[-1], ht[k - 1], mask))
        targets = [agg[1], agg[3], agg[5]] if case == "lad" else [agg[1], agg[3], ht[5]]  # A2, A4, A6 / A2, A4, T6
        terms = [ref_mse(h, t, mask) / LS for h, t in zip(hs, targets)]
    elif case == "lad_no":  # gate_j(H_{2j-1}, H_{2j})
        terms = [
            ref_mse(hs[j - 1], ref_gate(method.gates[j - 1], ht[2 * j - 2], ht[2 * j - 1], mask), mask) / LS
            for j in range(1, LS + 1)
        ]
    elif case.startswith("alp"):
        cls = case == "alp_kd"
        stack = torch.stack([h[:, 0] if cls else h for h in ht])  # [K, B, (S,) D]
        terms = []
        for j in range(1, LS + 1):
            s = hs[j - 1][:, 0] if cls else hs[j - 1]
            scores = torch.einsum("...d,k...d->...k", s, stack) / math.sqrt(DT)
            if case == "alp_kd_hidden_v2" and j < LS:  # student j sees teacher layers 1..2j
                scores[..., 2 * j :] = -math.inf
            w = torch.softmax(scores, -1)
            terms.append(ref_mse(s, torch.einsum("...k,k...d->...d", w, stack), mask) / LS)
    elif case in ("pkd_skip", "pkd_last"):
        layers = [2, 4, 6] if case == "pkd_skip" else [4, 5, 6]
        terms = [ref_mse(hs[j - 1], ht[t - 1], mask) / LS for j, t in enumerate(layers, 1)]
    else:  # Sun et al.: normalised [CLS] of student layers 1..M-1, the mean over batch, layers and D
        layers = [2, 4] if case == "pkd_cls_skip" else [4, 5]
        terms = []
        for j, t in enumerate(layers, 1):
            s, t_ = hs[j - 1][:, 0], ht[t - 1][:, 0]
            d = s / s.norm(dim=-1, keepdim=True) - t_ / t_.norm(dim=-1, keepdim=True)
            terms.append((d**2).mean() / len(layers))
    per = {j: FLAG_MU * float(v) for j, v in enumerate(terms, 1)}
    return sum(per.values()), per


def ref_layer_map(
    case: str, method, st: ModelOutputs, te: ModelOutputs, mask: torch.Tensor, dynamic: bool
) -> np.ndarray | None:
    """The heat-map's [L_s, L_t] matrix: ALP-KD's attention weights averaged over the batch's real tokens (the
    [CLS] weights over the batch); LAD's chain contributions w_i = g_i prod_{m=i+1..k} (1 - g_m) of the gate values
    averaged over the real tokens and D (g_1 = 1); LAD-NO's g on the upper layer of its pair, 1 - g on the lower;
    partial LAD's raw rows one-hot. PKD draws none."""
    if case.startswith("pkd"):
        return None
    ht = [h.double() for h in te.hidden_states]
    real = mask.double()[..., None]
    if case.startswith("alp"):
        hs = [h.double() for h in st.hidden_states]
        if method.projection is not None:
            hs = [
                h @ m.weight.detach().double().T + m.bias.detach().double() for h, m in zip(hs, method.projection.maps)
            ]
        cls = case == "alp_kd"
        stack = torch.stack([h[:, 0] if cls else h for h in ht])
        rows = []
        for j in range(1, LS + 1):
            s = hs[j - 1][:, 0] if cls else hs[j - 1]
            scores = torch.einsum("...d,k...d->...k", s, stack) / math.sqrt(DT)
            if case == "alp_kd_hidden_v2" and j < LS:
                scores[..., 2 * j :] = -math.inf
            w = torch.softmax(scores, -1)
            rows.append(w.mean(0) if cls else (w * real).sum((0, 1)) / real.sum())
        return torch.stack(rows).numpy()

    def gate_mean(gate: GateBlock, prev: torch.Tensor) -> float:
        W, b = gate.linear.weight.detach().double(), gate.linear.bias.detach().double()
        g = torch.sigmoid(prev @ W.T + b)
        return ((g * real).sum() / (real.sum() * DT)).item()

    gate_mask = mask if dynamic else None
    if case == "lad_no":
        out = np.zeros((LS, LT))
        for j in range(1, LS + 1):
            g = gate_mean(method.gates[j - 1], ht[2 * j - 2])
            out[j - 1, 2 * j - 1], out[j - 1, 2 * j - 2] = g, 1 - g
        return out
    upto = 6 if case == "lad" else 4
    agg, gbar = [ht[0]], [1.0]
    for k in range(2, upto + 1):
        gbar.append(gate_mean(method.gates[k - 1], agg[-1]))
        agg.append(ref_gate(method.gates[k - 1], agg[-1], ht[k - 1], gate_mask))

    def chain(k: int) -> np.ndarray:
        row = np.zeros(LT)
        for i in range(1, k + 1):
            row[i - 1] = gbar[i - 1] * np.prod([1 - gbar[m - 1] for m in range(i + 1, k + 1)])
        return row

    if case == "lad":
        return np.stack([chain(2), chain(4), chain(6)])
    return np.stack([chain(2), chain(4), np.eye(LT)[5]])


@pytest.mark.parametrize("student_width", [DT, 6], ids=["same_width", "projected"])
@pytest.mark.parametrize("padding", ["max_length", "dynamic"])
@pytest.mark.parametrize("case", list(LAYERWISE_CASES))
def test_every_layerwise_method_from_its_flags_matches_its_equation(case, padding, student_width):
    method_name, own = LAYERWISE_CASES[case]
    method = layerwise_from_flags(method_name, own, padding, student_width)
    assert (method.temperature, method.hard_weight, method.soft_weight, method.mu) == (
        FLAG_T,
        FLAG_HARD,
        FLAG_SOFT,
        FLAG_MU,
    )
    assert method.padding == padding and method.masked == (padding == "dynamic")
    assert (method.projection is not None) == (student_width != DT)
    # what the engine reads off the method: the padding-free forward only where no loss looks at padding
    assert method.ignores_padding == (padding == "dynamic") and method.needs_hidden_states and method.uses_teacher
    if method.projection is not None:
        assert len(method.projection.maps) == LS
        with torch.no_grad():  # large, distinct maps: one applied to the wrong layer changes the loss
            g = torch.Generator().manual_seed(11)
            for m in method.projection.maps:
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.5)
    if getattr(method, "gates", None) is not None:
        with torch.no_grad():  # non-trivial LayerNorm affine parameters, different per position
            g = torch.Generator().manual_seed(12)
            for gate in method.gates:
                gate.layernorm.weight.copy_(torch.rand(gate.layernorm.weight.shape, generator=g) + 0.5)
                gate.layernorm.bias.copy_(torch.rand(gate.layernorm.bias.shape, generator=g) - 0.5)
    mask = padded_mask()
    g = torch.Generator().manual_seed(13)
    st = ModelOutputs(
        torch.randn(B, 3, generator=g) * 2,
        tuple(torch.randn(B, SEQ, student_width, generator=g) for _ in range(LS)),
        mask,
    )
    te = ModelOutputs(
        torch.randn(B, 3, generator=g) * 2,
        tuple(torch.randn(B, SEQ, DT, generator=g) * (1 + k / 2) for k in range(LT)),
        mask,
    )
    y = torch.tensor([2, 0, 1])
    parts = method.losses({"labels": y}, st, te)
    hidden, per = ref_layerwise(case, method, st, te, y, mask if padding == "dynamic" else None)
    if padding == "dynamic" and not case.startswith("pkd_cls") and case != "alp_kd":
        # the fixture tells the paddings apart: the unmasked equation gives another loss
        other, _ = ref_layerwise(case, method, st, te, y, None)
        assert abs(other - hidden) > 1e-3 * abs(hidden)
    logits = manual_logits_loss(st.logits, te.logits, y, FLAG_HARD, FLAG_SOFT, FLAG_T).item()
    assert parts["hidden_loss"].item() == pytest.approx(hidden, rel=1e-4)
    assert sorted(k for k in parts if k.startswith("hidden_loss_")) == [f"hidden_loss_{j}" for j in sorted(per)]
    for j, v in per.items():
        assert parts[f"hidden_loss_{j}"].item() == pytest.approx(v, rel=1e-4), j
    assert parts["logits_loss"].item() == pytest.approx(logits, rel=1e-5)
    assert parts["loss"].item() == pytest.approx(logits + hidden, rel=1e-4)
    expected_map = ref_layer_map(case, method, st, te, mask, padding == "dynamic")
    with torch.no_grad():  # as the heat-map writer calls it (run/layer_map.py)
        got_map = method.layer_map(st, te)
    if expected_map is None:
        assert got_map is None
    else:
        assert got_map.shape == (LS, LT)
        np.testing.assert_allclose(got_map, expected_map, rtol=1e-4, atol=1e-6)
    if case in ("lad", "partial_lad", "lad_no"):  # the logged gate means: over the real tokens under dynamic
        first = method.gates[1] if case != "lad_no" else method.gates[0]
        W, b = first.linear.weight.detach().double(), first.linear.bias.detach().double()
        gv = torch.sigmoid(te.hidden_states[0].double() @ W.T + b)
        m = mask.double()[..., None] if padding == "dynamic" else torch.ones(B, SEQ, 1, dtype=torch.float64)
        expected = (gv * m).sum() / (m.sum() * DT)
        key = "gate_mean_2" if case != "lad_no" else "gate_mean_1"
        assert parts[key].item() == pytest.approx(expected.item(), rel=1e-5)


def test_width_projection_layout_and_initialisation():
    """One map per student layer (layer j -> maps[j-1]) or TinyBERT's one shared map (layers and embeddings alike),
    weights N(0, 0.02) and zero biases (BERT's initialisation, as TinyBERT's released code)."""
    from fine_tune.models.projection import WidthProjection

    torch.manual_seed(0)
    per_layer = WidthProjection(6, 8, 3)
    assert len(per_layer.maps) == 3 and not per_layer.shared
    x = torch.randn(2, 4, 6)
    for j in (1, 2, 3):
        m = per_layer.maps[j - 1]
        assert torch.equal(per_layer(j, x), m(x)) and tuple(m.weight.shape) == (8, 6)
        assert not torch.equal(per_layer(j, x), per_layer.maps[j % 3](x))
    shared = WidthProjection(6, 8, 3, shared=True)
    assert len(shared.maps) == 1 and all(torch.equal(shared(j, x), shared.maps[0](x)) for j in (0, 1, 3))
    big = WidthProjection(256, 256, 2)  # 65536 weights a map: the sample std is within ~1% of the true one
    for m in big.maps:
        assert m.weight.std().item() == pytest.approx(0.02, rel=0.03) and abs(m.weight.mean().item()) < 1e-3
        assert torch.equal(m.bias.detach(), torch.zeros(256))
    assert not torch.equal(big.maps[0].weight, big.maps[1].weight)
