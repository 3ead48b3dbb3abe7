"""TinyBERT and MiniLM / MiniLMv2 loss functions against independent float64 loop references.

The references below are written with explicit Python loops over batch, head, query and key (numpy float64
only for storage), not with the vectorised code under test.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import method_from_flags as built_from_flags

from fine_tune.errors import UserError
from fine_tune.methods.minilm import minilm_loss, minilmv2_loss, relation, relation_kl
from fine_tune.methods.tinybert import (
    attention_mse,
    attention_scores,
    hidden_mse,
    soft_cross_entropy,
    split_heads,
    tinybert_layer_map,
)

TOL = dict(rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- data


def make_mask(lengths, length):
    return np.array([[1 if s < n else 0 for s in range(length)] for n in lengths], dtype=np.int64)


def data(seed, batch=3, length=6, width=8, lengths=(6, 4, 2), scale=1.0):
    """(float64 numpy array [B, S, D] exactly representable in fp32, mask [B, S])."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((batch, length, width)) * scale).astype(np.float32).astype(np.float64)
    return x, make_mask(lengths, length)


def t32(x):
    return torch.tensor(x, dtype=torch.float32)


# ---------------------------------------------------------------- loop references


def ref_scores(q, k, heads, mask):
    """Q K^T / sqrt(d) per head, padded keys 0: [B][H][S][S] nested lists."""
    batch, length, width = q.shape
    dh = width // heads
    out = np.zeros((batch, heads, length, length))
    for b in range(batch):
        for h in range(heads):
            for i in range(length):
                for j in range(length):
                    if mask is not None and mask[b][j] == 0:
                        continue
                    dot = 0.0
                    for d in range(dh):
                        dot += q[b][i][h * dh + d] * k[b][j][h * dh + d]
                    out[b][h][i][j] = dot / math.sqrt(dh)
    return out


def ref_attention_mse(s, t, mask, masked):
    batch, heads, length, _ = s.shape
    total, count = 0.0, 0
    for b in range(batch):
        for h in range(heads):
            for i in range(length):
                for j in range(length):
                    if masked and (mask[b][i] == 0 or mask[b][j] == 0):
                        continue
                    total += (s[b][h][i][j] - t[b][h][i][j]) ** 2
                    count += 1
    return total / count


def ref_hidden_mse(s, t, mask, masked):
    batch, length, width = s.shape
    total, count = 0.0, 0
    for b in range(batch):
        for i in range(length):
            if masked and mask[b][i] == 0:
                continue
            for d in range(width):
                total += (s[b][i][d] - t[b][i][d]) ** 2
                count += 1
    return total / count


def ref_soft_ce(s, t, temperature):
    batch, classes = s.shape
    total = 0.0
    for b in range(batch):
        zs = [s[b][c] / temperature for c in range(classes)]
        zt = [t[b][c] / temperature for c in range(classes)]
        log_norm_s = math.log(sum(math.exp(z) for z in zs))
        norm_t = sum(math.exp(z) for z in zt)
        for c in range(classes):
            total += -(math.exp(zt[c]) / norm_t) * (zs[c] - log_norm_s)
    return total / batch


def ref_relation(a, b_, heads, mask):
    """softmax over the real keys of a_h b_h^T / sqrt(d): probabilities [B][H][S][S], 0 at padded keys."""
    batch, length, width = a.shape
    dh = width // heads
    out = np.zeros((batch, heads, length, length))
    for b in range(batch):
        for h in range(heads):
            for i in range(length):
                logits = {}
                for j in range(length):
                    if mask[b][j] == 0:
                        continue
                    dot = 0.0
                    for d in range(dh):
                        dot += a[b][i][h * dh + d] * b_[b][j][h * dh + d]
                    logits[j] = dot / math.sqrt(dh)
                top = max(logits.values())
                norm = sum(math.exp(v - top) for v in logits.values())
                for j, v in logits.items():
                    out[b][h][i][j] = math.exp(v - top) / norm
    return out


def ref_kl(p_s, p_t, mask, average="sequence"):
    """sequence (MiniLMv2's public code, minilmv2.bb): 1/B * sum_b 1/(H n_b) * sum_{h, real q} sum_{real k}
    p_t log(p_t / p_s); token (runs started before): 1/(H * sum_b n_b) * sum_{b, h, real q} sum_{real k} ..."""
    batch, heads, length, _ = p_s.shape
    sums, counts = [], []
    for b in range(batch):
        total, tokens = 0.0, 0
        for i in range(length):
            if mask[b][i] == 0:
                continue
            tokens += 1
            for h in range(heads):
                for j in range(length):
                    if mask[b][j] == 0:
                        continue
                    pt, ps = p_t[b][h][i][j], p_s[b][h][i][j]
                    if pt > 0:
                        total += pt * math.log(pt / ps)
        sums.append(total)
        counts.append(tokens)
    if average == "token":
        return sum(sums) / (heads * sum(counts))
    return sum(t / (heads * n) for t, n in zip(sums, counts)) / batch


def ref_minilm(sq, sk, sv, tq, tk, tv, s_heads, t_heads, mask):
    att = ref_kl(ref_relation(sq, sk, s_heads, mask), ref_relation(tq, tk, t_heads, mask), mask)
    val = ref_kl(ref_relation(sv, sv, s_heads, mask), ref_relation(tv, tv, t_heads, mask), mask)
    return att + val, att, val


def ref_minilmv2(sq, sk, sv, tq, tk, tv, rel_heads, mask):
    parts = [
        ref_kl(ref_relation(s, s, rel_heads, mask), ref_relation(t, t, rel_heads, mask), mask)
        for s, t in ((sq, tq), (sk, tk), (sv, tv))
    ]
    return sum(parts), parts


def close(value, expected):
    assert value.dtype == torch.float32
    np.testing.assert_allclose(value.detach().double().numpy(), expected, **TOL)


# ---------------------------------------------------------------- TinyBERT


def test_split_heads_layout():
    x = torch.arange(2 * 3 * 8, dtype=torch.float32).reshape(2, 3, 8)
    heads = split_heads(x, 4)
    assert heads.shape == (2, 4, 3, 2)
    for b in range(2):
        for h in range(4):
            for s in range(3):
                assert heads[b, h, s].tolist() == x[b, s, 2 * h : 2 * h + 2].tolist()
    with pytest.raises(UserError) as info:
        split_heads(x, 3)
    assert "\n" not in str(info.value) and "8" in str(info.value) and "3" in str(info.value)


@pytest.mark.parametrize("heads", [2, 4])
def test_attention_scores_and_padding_keys(heads):
    q, mask = data(0, width=8)
    k, _ = data(1, width=8)
    scores = attention_scores(t32(q), t32(k), heads, torch.tensor(mask))
    assert scores.shape == (3, heads, 6, 6) and scores.dtype == torch.float32
    close(scores, ref_scores(q, k, heads, mask))
    # padding keys exactly 0, real keys not
    for b, n in enumerate((6, 4, 2)):
        assert torch.all(scores[b, :, :, n:] == 0)
        assert torch.all(scores[b, :, :, :n] != 0)
    # without a mask: plain Q K^T / sqrt(d)
    close(attention_scores(t32(q), t32(k), heads, None), ref_scores(q, k, heads, None))


@pytest.mark.parametrize("masked", [False, True])
def test_attention_mse(masked):
    heads = 3
    sq, mask = data(2, length=7, width=9, lengths=(7, 5, 3))
    sk, _ = data(3, length=7, width=9)
    tq, _ = data(4, length=7, width=12)
    tk, _ = data(5, length=7, width=12)
    m = torch.tensor(mask)
    s_scores = attention_scores(t32(sq), t32(sk), heads, m)
    t_scores = attention_scores(t32(tq), t32(tk), heads, m)
    loss = attention_mse(s_scores, t_scores, m, masked)
    expected = ref_attention_mse(ref_scores(sq, sk, heads, mask), ref_scores(tq, tk, heads, mask), mask, masked)
    close(loss, expected)
    if masked:
        # padding tokens' contents do not matter
        sq2 = sq.copy()
        sq2[1, 5:] = 7.0
        sq2[2, 3:] = -3.0
        loss2 = attention_mse(attention_scores(t32(sq2), t32(sk), heads, m), t_scores, m, masked)
        assert torch.allclose(loss, loss2, rtol=1e-6, atol=0)


def test_attention_mse_needs_same_heads():
    s = torch.zeros(2, 4, 5, 5)
    t = torch.zeros(2, 12, 5, 5)
    for masked in (False, True):
        with pytest.raises(UserError) as info:
            attention_mse(s, t, torch.ones(2, 5), masked)
        message = str(info.value)
        assert "\n" not in message and "4" in message and "12" in message


@pytest.mark.parametrize("masked", [False, True])
def test_hidden_mse(masked):
    s, mask = data(6, batch=2, length=5, width=10, lengths=(5, 2))
    t, _ = data(7, batch=2, length=5, width=10)
    loss = hidden_mse(t32(s), t32(t), torch.tensor(mask), masked)
    close(loss, ref_hidden_mse(s, t, mask, masked))


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_soft_cross_entropy(temperature):
    """batchmean: summed over the 4 classes, averaged over the batch; mean (the released code): also over the
    classes, 4 times smaller (tests/test_tinybert_released.py writes the released form out)."""
    rng = np.random.default_rng(8)
    s = rng.standard_normal((3, 4)).astype(np.float32).astype(np.float64) * 3
    t = rng.standard_normal((3, 4)).astype(np.float32).astype(np.float64) * 3
    close(soft_cross_entropy(t32(s), t32(t), temperature, "batchmean"), ref_soft_ce(s, t, temperature))
    close(soft_cross_entropy(t32(s), t32(t), temperature, "mean"), ref_soft_ce(s, t, temperature) / 4)


@pytest.mark.parametrize(
    "m, n, expected",
    [
        (4, 12, [3, 6, 9, 12]),
        (6, 12, [2, 4, 6, 8, 10, 12]),
        (4, 24, [6, 12, 18, 24]),
        (6, 24, [4, 8, 12, 16, 20, 24]),
        (12, 12, list(range(1, 13))),
        (4, 6, [2, 3, 5, 6]),  # not a multiple: ceil(m N / M), evenly up to the last layer
        (5, 12, [3, 5, 8, 10, 12]),
    ],
)
def test_tinybert_layer_map(m, n, expected):
    assert tinybert_layer_map(m, n) == expected
    assert tinybert_layer_map(m, n) == [int(np.ceil(j * n / m - 1e-9)) for j in range(1, m + 1)]


@pytest.mark.parametrize("m, n", [(24, 12), (13, 12), (0, 12)])
def test_tinybert_layer_map_refusals(m, n):
    with pytest.raises(UserError) as info:
        tinybert_layer_map(m, n)
    message = str(info.value)
    assert "\n" not in message and str(m) in message and str(n) in message


# ---------------------------------------------------------------- MiniLM


def test_relation_rows():
    a, mask = data(9, length=7, width=12, lengths=(7, 4, 1))
    b, _ = data(10, length=7, width=12)
    log_rel = relation(t32(a), t32(b), 4, torch.tensor(mask))
    assert log_rel.shape == (3, 4, 7, 7) and log_rel.dtype == torch.float32
    probs = log_rel.exp()
    for bi, n in enumerate((7, 4, 1)):
        assert torch.all(probs[bi, :, :, n:] == 0)  # exactly zero on padded keys
        torch.testing.assert_close(probs[bi, :, :, :n].sum(-1), torch.ones(4, 7), rtol=0, atol=1e-6)
    close(probs, ref_relation(a, b, 4, mask))


@pytest.mark.parametrize("heads", [2, 4])
def test_relation_kl(heads):
    sq, mask = data(11, length=6, width=8, lengths=(6, 3, 5))
    sk, _ = data(12, length=6, width=8)
    tq, _ = data(13, length=6, width=8)
    tk, _ = data(14, length=6, width=8)
    m = torch.tensor(mask)
    loss = relation_kl(t32(sq), t32(sk), t32(tq), t32(tk), heads, heads, m)
    expected = ref_kl(ref_relation(sq, sk, heads, mask), ref_relation(tq, tk, heads, mask), mask)
    assert expected > 0
    close(loss, expected)
    # KL(p || p) = 0
    assert abs(relation_kl(t32(tq), t32(tk), t32(tq), t32(tk), heads, heads, m).item()) < 1e-7


def test_minilm_loss():
    sq, mask = data(15, length=6, width=8, lengths=(6, 4, 2))
    sk, _ = data(16, length=6, width=8)
    sv, _ = data(17, length=6, width=8)
    tq, _ = data(18, length=6, width=12)
    tk, _ = data(19, length=6, width=12)
    tv, _ = data(20, length=6, width=12)
    total, parts = minilm_loss(t32(sq), t32(sk), t32(sv), t32(tq), t32(tk), t32(tv), 4, 4, torch.tensor(mask))
    ref_total, ref_att, ref_val = ref_minilm(sq, sk, sv, tq, tk, tv, 4, 4, mask)
    assert set(parts) == {"attention_kl", "value_kl"}
    close(parts["attention_kl"], ref_att)
    close(parts["value_kl"], ref_val)
    close(total, ref_total)


def test_minilm_needs_same_heads():
    x = torch.zeros(2, 5, 12)
    with pytest.raises(UserError) as info:
        minilm_loss(x[..., :8], x[..., :8], x[..., :8], x, x, x, 2, 3, torch.ones(2, 5))
    message = str(info.value)
    assert "\n" not in message and "2" in message and "3" in message and "relation" in message


def test_minilmv2_loss_across_widths():
    sq, mask = data(21, length=7, width=8, lengths=(7, 5, 2))
    sk, _ = data(22, length=7, width=8)
    sv, _ = data(23, length=7, width=8)
    tq, _ = data(24, length=7, width=12)
    tk, _ = data(25, length=7, width=12)
    tv, _ = data(26, length=7, width=12)
    total, parts = minilmv2_loss(t32(sq), t32(sk), t32(sv), t32(tq), t32(tk), t32(tv), 4, torch.tensor(mask))
    ref_total, ref_parts = ref_minilmv2(sq, sk, sv, tq, tk, tv, 4, mask)
    assert list(parts) == ["qq_kl", "kk_kl", "vv_kl"]
    for name, expected in zip(("qq_kl", "kk_kl", "vv_kl"), ref_parts):
        close(parts[name], expected)
    close(total, ref_total)


@pytest.mark.parametrize("s_width, t_width, rel", [(8, 12, 3), (9, 12, 4), (8, 12, 5)])
def test_minilmv2_divisibility(s_width, t_width, rel):
    s = torch.zeros(2, 5, s_width)
    t = torch.zeros(2, 5, t_width)
    with pytest.raises(UserError) as info:
        minilmv2_loss(s, s, s, t, t, t, rel, torch.ones(2, 5))
    message = str(info.value)
    assert "\n" not in message and str(s_width) in message and str(t_width) in message and str(rel) in message


def _qkv(seed, width, lengths, length=6, requires_grad=True):
    tensors = []
    for i in range(3):
        x, mask = data(seed + i, batch=len(lengths), length=length, width=width, lengths=lengths, scale=3.0)
        tensors.append(t32(x).requires_grad_(requires_grad))
    return tensors, torch.tensor(mask)


@pytest.mark.parametrize("kind", ["minilm", "minilmv2", "tinybert"])
def test_finite_gradients_with_padding(kind):
    lengths = (6, 3, 0)  # the last sequence is all padding
    (sq, sk, sv), mask = _qkv(30, 8, lengths)
    (tq, tk, tv), _ = _qkv(40, 8 if kind != "minilmv2" else 12, lengths)
    if kind == "minilm":
        total, _ = minilm_loss(sq, sk, sv, tq, tk, tv, 2, 2, mask)
    elif kind == "minilmv2":
        total, _ = minilmv2_loss(sq, sk, sv, tq, tk, tv, 4, mask)
    else:
        total = attention_mse(attention_scores(sq, sk, 2, mask), attention_scores(tq, tk, 2, mask), mask, True)
    assert torch.isfinite(total)
    total.backward()
    for x in (sq, sk, tq, tk) + ((sv, tv) if kind != "tinybert" else ()):
        assert x.grad is not None and torch.all(torch.isfinite(x.grad))
        # padding tokens get no gradient
        assert torch.all(x.grad[1, 3:] == 0) and torch.all(x.grad[2] == 0)
    assert sq.grad.abs().sum() > 0


def test_padding_contents_do_not_matter_minilm():
    (sq, sk, sv), mask = _qkv(50, 8, (6, 4), requires_grad=False)
    (tq, tk, tv), _ = _qkv(60, 12, (6, 4), requires_grad=False)
    total, _ = minilmv2_loss(sq, sk, sv, tq, tk, tv, 2, mask)
    for x in (sq, sk, sv, tq, tk, tv):
        x[1, 4:] = 100.0
    total2, _ = minilmv2_loss(sq, sk, sv, tq, tk, tv, 2, mask)
    assert torch.allclose(total, total2, rtol=1e-6, atol=0)


# ---------------------------------------------------------------- fp32 under autocast


def test_fp32_under_bf16_autocast():
    heads = 2
    sq, mask = data(70, length=6, width=8, lengths=(6, 5, 3))
    sk, _ = data(71, length=6, width=8)
    sv, _ = data(72, length=6, width=8)
    tq, _ = data(73, length=6, width=12)
    tk, _ = data(74, length=6, width=12)
    tv, _ = data(75, length=6, width=12)
    tq8, _ = data(76, length=6, width=8)
    tk8, _ = data(77, length=6, width=8)
    m = torch.tensor(mask)
    logits_s, logits_t = sq[:, 0, :4], tq[:, 0, :4]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        scores_s = attention_scores(t32(sq), t32(sk), heads, m)
        scores_t = attention_scores(t32(tq8), t32(tk8), heads, m)
        att = attention_mse(scores_s, scores_t, m, True)
        hid = hidden_mse(t32(sq), t32(tq8), m, True)
        ce = soft_cross_entropy(t32(logits_s), t32(logits_t), 2.0, "batchmean")
        v1, _ = minilm_loss(t32(sq), t32(sk), t32(sv), t32(tq), t32(tk), t32(tv), heads, heads, m)
        v2, _ = minilmv2_loss(t32(sq), t32(sk), t32(sv), t32(tq), t32(tk), t32(tv), 4, m)
    close(scores_s, ref_scores(sq, sk, heads, mask))
    close(att, ref_attention_mse(ref_scores(sq, sk, heads, mask), ref_scores(tq8, tk8, heads, mask), mask, True))
    close(hid, ref_hidden_mse(sq, tq8, mask, True))
    close(ce, ref_soft_ce(logits_s, logits_t, 2.0))
    close(v1, ref_minilm(sq, sk, sv, tq, tk, tv, heads, heads, mask)[0])
    close(v2, ref_minilmv2(sq, sk, sv, tq, tk, tv, 4, mask)[0])


def test_bf16_inputs_computed_in_fp32():
    sq, mask = data(80, batch=2, length=5, width=8, lengths=(5, 3))
    tq, _ = data(81, batch=2, length=5, width=12, lengths=(5, 3))
    # values exactly representable in bf16, so the float64 reference sees the same numbers
    sq = torch.tensor(sq).to(torch.bfloat16).double().numpy()
    tq = torch.tensor(tq).to(torch.bfloat16).double().numpy()
    bf = lambda x: torch.tensor(x).to(torch.bfloat16)  # noqa: E731
    total, _ = minilmv2_loss(bf(sq), bf(sq), bf(sq), bf(tq), bf(tq), bf(tq), 4, torch.tensor(mask))
    close(total, ref_minilmv2(sq, sq, sq, tq, tq, tq, 4, mask)[0])
    scores = attention_scores(bf(sq), bf(sq), 2, torch.tensor(mask))
    close(scores, ref_scores(sq, sq, 2, mask))


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("head_mean", [False, True])
def test_attention_mse_from_projections_equals_the_maps_mse(masked, head_mean):
    """The Gram-matrix form gives the value and the gradients of the MSE of the materialised score maps."""
    from fine_tune.methods.tinybert import attention_mse_from_projections

    torch.manual_seed(7)
    b, s = 3, 6
    mask = torch.ones(b, s)
    mask[0, 4:] = 0
    mask[2, 2:] = 0
    sh, th = (3, 2) if head_mean else (2, 2)
    sq, sk = torch.randn(b, s, 6, requires_grad=True), torch.randn(b, s, 6, requires_grad=True)
    tq, tk = torch.randn(b, s, 8), torch.randn(b, s, 8)
    ss, ts = attention_scores(sq, sk, sh, mask), attention_scores(tq, tk, th, mask)
    if head_mean:
        ss, ts = ss.mean(1, keepdim=True), ts.mean(1, keepdim=True)
    reference = attention_mse(ss, ts, mask, masked)
    got = attention_mse_from_projections(sq, sk, tq, tk, sh, th, mask, masked, head_mean=head_mean)
    assert torch.allclose(got, reference, rtol=1e-5, atol=1e-7), (got, reference)
    g_ref = torch.autograd.grad(reference, (sq, sk))
    g_got = torch.autograd.grad(got, (sq, sk))
    for a, c in zip(g_ref, g_got):
        assert torch.allclose(a, c, rtol=1e-4, atol=1e-6)


def head_major(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, S, D] as the own forward over the padded grid hands it on: a [B, S, H, D/H] view of a head-major
    [B, H, S, D/H] copy."""
    b, s, d = x.shape
    return x.view(b, s, heads, d // heads).transpose(1, 2).contiguous().transpose(1, 2)


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("head_mean", [False, True])
def test_head_split_inputs_give_the_same_losses_and_gradients(masked, head_mean):
    """Projections handed on with their heads split ([B, S, H, d_head] views, models/padding_free.py) give the
    TinyBERT and MiniLM losses and gradients of the [B, S, D] form; the Gram form reads them without copying."""
    from fine_tune.methods.tinybert import attention_mse_from_projections

    torch.manual_seed(8)
    b, s, heads = 3, 6, 2
    mask = torch.ones(b, s)
    mask[0, 4:] = 0
    sq, sk, sv = (torch.randn(b, s, 6, requires_grad=True) for _ in range(3))
    tq, tk, tv = (torch.randn(b, s, 8) for _ in range(3))
    split = [head_major(x, heads) for x in (sq, sk, sv, tq, tk, tv)]
    assert split[0].dim() == 4 and split_heads(split[0], heads).is_contiguous()
    for flat, got in ((sq, split[0]), (tk, split[4])):
        assert torch.equal(split_heads(flat, heads), split_heads(got, heads))
    losses = {
        "tinybert": lambda q, k, v, Q, K, V: attention_mse_from_projections(
            q, k, Q, K, heads, heads, mask, masked, head_mean=head_mean
        ),
        "minilm": lambda q, k, v, Q, K, V: minilm_loss(q, k, v, Q, K, V, heads, heads, mask)[0],
        "minilmv2": lambda q, k, v, Q, K, V: minilmv2_loss(q, k, v, Q, K, V, 2 if head_mean else 1, mask)[0],
    }
    for name, loss in losses.items():
        a, c = loss(sq, sk, sv, tq, tk, tv), loss(*split)
        assert torch.allclose(a, c, rtol=1e-5, atol=1e-7), (name, a, c)
        for ga, gc in zip(
            torch.autograd.grad(a, (sq, sk, sv), allow_unused=True),
            torch.autograd.grad(c, (sq, sk, sv), allow_unused=True),
        ):
            assert (ga is None) == (gc is None) and (ga is None or torch.allclose(ga, gc, rtol=1e-4, atol=1e-6)), name


# ---------------------------------------------------------------- the methods, built from their scripts' flags
#
# TinyBERT and MiniLM as run_tinybert_distil.py / run_minilm_distil.py build them: every flag away from its
# default (the temperature, both weights, mu, the padding, the stage, the attention mode, the relation heads, the
# teacher layer), a 2-layer student of a 6-layer teacher (TinyBERT's map 3, 6: an off-by-one lands on another
# layer), sequences 6, 4 and 2 tokens long with random values at the padding positions, labels not in sorted
# order. The expected values are the loop references above.

M_LT, M_LS, M_S, M_DT = 6, 2, 6, 8
M_LENGTHS = (6, 4, 2)


def method_from_flags(name, own, student_width, padding, heads=2, teacher_heads=2, layers=M_LS, task="qqp"):
    from fine_tune.engine.protocol import TeacherShape

    return built_from_flags(
        name,
        [
            "--d_model",
            str(student_width),
            "--d_ff",
            "16",
            "--num_attention_heads",
            str(heads),
            "--num_hidden_layers",
            str(layers),
            "--max_seq_len",
            str(M_S),
            "--padding",
            padding,
            *own,
        ],
        TeacherShape(M_LT, M_DT, teacher_heads),
        3,
        task,
    )


def qkv_outputs(seed, layers, width, lengths=M_LENGTHS, classes=3):
    """ModelOutputs of ``layers`` layers: logits, hidden states, embeddings and (Q, K, V) per layer, float32
    tensors whose float64 copies (numpy) the references read."""
    from fine_tune.engine.protocol import ModelOutputs

    arrays = [data(seed + i, length=M_S, width=width, lengths=lengths)[0] for i in range(4 * layers + 1)]
    mask = torch.tensor(make_mask(lengths, M_S))
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((len(lengths), classes)).astype(np.float32).astype(np.float64) * 2
    out = ModelOutputs(
        t32(logits),
        tuple(t32(a) for a in arrays[:layers]),
        mask,
        tuple(tuple(t32(a) for a in arrays[layers + 3 * i : layers + 3 * i + 3]) for i in range(layers)),
        t32(arrays[-1]),
    )
    return out, arrays, logits


def ref_ce(s, y):
    total = 0.0
    for b in range(len(y)):
        norm = sum(math.exp(v) for v in s[b])
        total += -(s[b][y[b]] - math.log(norm))
    return total / len(y)


def test_tinybert_prediction_stage_from_its_flags_is_the_released_soft_cross_entropy():
    """--tinybert_stage prediction at T = 2.5 with both weights given: soft_weight * soft CE of z/T (once, no T^2;
    averaged over the batch and the 3 classes, as the released code) + hard_weight * CE(s, y), each part logged; a
    regression task: the weighted MSEs to the gold score, no temperature, no teacher."""
    method = method_from_flags(
        "tinybert",
        ["--tinybert_stage", "prediction", "--softmax_temp", "2.5", "--hard_weight", "0.3", "--soft_weight", "0.6"],
        M_DT,
        "max_length",
    )
    assert (method.stage, method.temperature, method.hard_weight, method.soft_weight) == ("prediction", 2.5, 0.3, 0.6)
    assert method.projection is None and not method.reads_attention and not method.needs_hidden_states
    assert method.ignores_padding and method.uses_teacher and method.every_parameter_learns
    st, _, s = qkv_outputs(100, M_LS, M_DT)
    te, _, t = qkv_outputs(200, M_LT, M_DT)
    t = t * 2  # a sharper teacher
    te.logits = t32(t)
    y = [2, 0, 1]
    parts = method.losses({"labels": torch.tensor(y)}, st, te)
    soft, hard = ref_soft_ce(s, t, 2.5) / 3, ref_ce(s, y)
    assert set(parts) == {"soft_loss", "hard_loss", "loss"}
    close(parts["soft_loss"], soft)
    close(parts["hard_loss"], hard)
    close(parts["loss"], 0.6 * soft + 0.3 * hard)
    # a regression task (STS-B, one output): (hard_weight + soft_weight) * MSE(s, y), no teacher
    reg = method_from_flags(
        "tinybert",
        ["--tinybert_stage", "prediction", "--hard_weight", "0.3", "--soft_weight", "0.6"],
        M_DT,
        "max_length",
        task="stsb",
    )
    assert not reg.uses_teacher
    sr, tr, yr = s[:, :1], t[:, :1], np.array([0.5, 3.25, 1.0])
    parts = reg.losses({"labels": t32(yr)}, replace(st, logits=t32(sr)), None)
    close(parts["loss"], 0.9 * float(np.mean((sr[:, 0] - yr) ** 2)))
    # --tinybert_regression_target teacher (the toolkit's rule before issue 30): hard_weight * MSE(s, y) +
    # soft_weight * MSE(s, t)
    reg = method_from_flags(
        "tinybert",
        [
            "--tinybert_stage",
            "prediction",
            "--hard_weight",
            "0.3",
            "--soft_weight",
            "0.6",
            "--tinybert_regression_target",
            "teacher",
        ],
        M_DT,
        "max_length",
        task="stsb",
    )
    assert reg.uses_teacher
    parts = reg.losses({"labels": t32(yr)}, replace(st, logits=t32(sr)), replace(te, logits=t32(tr)))
    expected = 0.3 * float(np.mean((sr[:, 0] - yr) ** 2)) + 0.6 * float(np.mean((sr[:, 0] - tr[:, 0]) ** 2))
    close(parts["loss"], expected)


@pytest.mark.parametrize("attention", ["per_head", "head_mean"])
@pytest.mark.parametrize("student_width", [M_DT, 6], ids=["same_width", "projected"])
@pytest.mark.parametrize("padding", ["max_length", "dynamic"])
def test_tinybert_intermediate_stage_from_its_flags_matches_the_equations(padding, student_width, attention):
    """The intermediate stage as the script builds it: mu * (sum over m of the attention MSE of student layer m and
    teacher layer 3m, the same for the hidden states through the shared W_h, and the embeddings' MSE through W_h);
    --padding dynamic reaches the method and every mean is then over the real tokens (query-key pairs) only."""
    heads = 3 if attention == "head_mean" and student_width == 6 else 2  # head_mean: 3 student heads, 2 teacher's
    method = method_from_flags(
        "tinybert", ["--mu", "0.7", "--tinybert_attention", attention], student_width, padding, heads=heads
    )
    s_heads = method.student_heads
    assert method.padding == padding and method.masked == (padding == "dynamic") and method.mu == 0.7
    assert method.attention == attention and method.teacher_layers == [3, 6] and method.teacher_heads == 2
    assert method.projection is not None  # W_h at any width (the released code's fit_dense)
    assert method.ignores_padding == (padding == "dynamic") and method.reads_attention and method.needs_hidden_states
    assert not method.every_parameter_learns  # the intermediate stage trains no classifier head
    st, s_arr, _ = qkv_outputs(300, M_LS, student_width)
    te, t_arr, _ = qkv_outputs(400, M_LT, M_DT)
    w = b = None
    if method.projection is not None:
        assert len(method.projection.maps) == 1  # TinyBERT's one W_h, shared by the layers and the embeddings
        rng = np.random.default_rng(5)
        w = rng.standard_normal((M_DT, student_width)).astype(np.float32).astype(np.float64) * 0.5
        b = rng.standard_normal(M_DT).astype(np.float32).astype(np.float64) * 0.5
        with torch.no_grad():
            method.projection.maps[0].weight.copy_(t32(w))
            method.projection.maps[0].bias.copy_(t32(b))
    project = (lambda x: x) if w is None else (lambda x: x @ w.T + b)
    mask = make_mask(M_LENGTHS, M_S)
    parts = method.losses({}, st, te)

    def reference(masked):
        s_hid, t_hid = s_arr[:M_LS], t_arr[:M_LT]
        s_qkv = [s_arr[M_LS + 3 * i : M_LS + 3 * i + 2] for i in range(M_LS)]
        t_qkv = [t_arr[M_LT + 3 * i : M_LT + 3 * i + 2] for i in range(M_LT)]

        def maps(q, k, h):
            scores = ref_scores(q, k, h, mask)
            return scores if attention == "per_head" else scores.mean(1, keepdims=True)

        att = [
            ref_attention_mse(maps(*s_qkv[m - 1], s_heads), maps(*t_qkv[3 * m - 1], 2), mask, masked) for m in (1, 2)
        ]
        hid = [ref_hidden_mse(project(s_hid[m - 1]), t_hid[3 * m - 1], mask, masked) for m in (1, 2)]
        emb = ref_hidden_mse(project(s_arr[-1]), t_arr[-1], mask, masked)
        return att, hid, emb

    att, hid, emb = reference(padding == "dynamic")
    other = reference(padding != "dynamic")
    assert abs(sum(other[0]) - sum(att)) > 1e-3 * sum(att) and abs(other[2] - emb) > 1e-3 * emb  # paddings differ
    close(parts["attention_loss"], 0.7 * sum(att))
    close(parts["hidden_loss"], 0.7 * sum(hid))
    close(parts["embedding_loss"], 0.7 * emb)
    for m in (1, 2):
        close(parts[f"attention_loss_{m}"], 0.7 * att[m - 1])
        close(parts[f"hidden_loss_{m}"], 0.7 * hid[m - 1])
    close(parts["loss"], 0.7 * (sum(att) + sum(hid) + emb))


@pytest.mark.parametrize("padding", ["max_length", "dynamic"])
@pytest.mark.parametrize("variant", ["minilm", "minilmv2"])
def test_minilm_from_its_flags_matches_the_equations(variant, padding):
    """run_minilm_distil.py's method: --minilm_teacher_layer 5 (not the last), mu, T and both weights away from
    their defaults; MiniLM v1 (equal heads) or v2 (--relation_heads 4, a student of another width and head count).
    The relations leave padding out under either padding."""
    own = [
        "--minilm_teacher_layer",
        "5",
        "--mu",
        "0.7",
        "--softmax_temp",
        "2.5",
        "--hard_weight",
        "0.3",
        "--soft_weight",
        "0.6",
    ]
    if variant == "minilmv2":
        method = method_from_flags("minilm", own + ["--relation_heads", "4"], 12, padding, heads=3)
        assert method.relation_heads == 4 and method.student_heads == 3
    else:
        method = method_from_flags("minilm", own, M_DT, padding)
        assert method.relation_heads is None and method.student_heads == 2
    assert (
        method.teacher_layer,
        method.mu,
        method.temperature,
        method.hard_weight,
        method.soft_weight,
        method.padding,
        method.teacher_heads,
    ) == (5, 0.7, 2.5, 0.3, 0.6, padding, 2)
    assert method.projection is None  # relations are [S, S] whatever the width
    width = 12 if variant == "minilmv2" else M_DT
    st, s_arr, s = qkv_outputs(500, M_LS, width)
    te, t_arr, t = qkv_outputs(600, M_LT, M_DT)
    y = [1, 2, 0]
    parts = method.losses({"labels": torch.tensor(y)}, st, te)
    mask = make_mask(M_LENGTHS, M_S)
    sq, sk, sv = s_arr[M_LS + 3 : M_LS + 6]  # the student's last layer
    tq, tk, tv = t_arr[M_LT + 3 * 4 : M_LT + 3 * 4 + 3]  # teacher layer 5
    if variant == "minilmv2":
        kl, names = ref_minilmv2(sq, sk, sv, tq, tk, tv, 4, mask)[1], ("qq_kl", "kk_kl", "vv_kl")
    else:
        kl, names = ref_minilm(sq, sk, sv, tq, tk, tv, 2, 2, mask)[1:], ("attention_kl", "value_kl")
    for name, v in zip(names, kl):
        close(parts[name], 0.7 * v)
    close(parts["attention_relation_loss"], 0.7 * sum(kl))
    # the logits loss: hard_weight * CE + soft_weight * T^2 * KL(teacher || student) at T = 2.5
    kd = 0.0
    for row in range(3):
        ps = np.exp(s[row] / 2.5) / np.exp(s[row] / 2.5).sum()
        pt = np.exp(t[row] / 2.5) / np.exp(t[row] / 2.5).sum()
        kd += float((pt * np.log(pt / ps)).sum()) / 3
    logits = 0.3 * ref_ce(s, y) + 0.6 * 2.5**2 * kd
    close(parts["logits_loss"], logits)
    close(parts["loss"], logits + 0.7 * sum(kl))


# ---------------------------------------------------------------- issue 30: accurate near the teacher


def direct_mse64(sq, sk, tq, tk, heads, mask, masked):
    """The attention MSE by its definition, every [S, S] map formed in float64 from the fp32 inputs: the
    reference the Gram form must meet relative to the loss itself."""

    def maps(q, k):
        b, s, d = q.shape
        q = q.double().view(b, s, heads, d // heads).transpose(1, 2)
        k = k.double().view(b, s, heads, d // heads).transpose(1, 2)
        a = q @ k.transpose(-1, -2) / math.sqrt(d // heads)
        return a.masked_fill(~mask.bool()[:, None, None, :], 0.0)

    squared = (maps(sq, sk) - maps(tq, tk)).pow(2)
    if not masked:
        return squared.mean()
    pairs = mask.double()[:, None, :, None] * mask.double()[:, None, None, :]
    return (squared * pairs).sum() / (pairs.sum() * heads)


def near_pair(distance, seed=11, b=4, s=24, width=64):
    """A teacher's (Q, K) and a student's at relative ``distance`` from it; unequal lengths, padded."""
    g = torch.Generator().manual_seed(seed)
    tq, tk = torch.randn(b, s, width, generator=g), torch.randn(b, s, width, generator=g)
    sq = tq + distance * torch.randn(b, s, width, generator=g)
    sk = tk + distance * torch.randn(b, s, width, generator=g)
    mask = torch.ones(b, s)
    mask[1, 17:] = 0
    mask[3, 5:] = 0
    return sq, sk, tq, tk, mask


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("distance", [1e-1, 1e-3, 1e-4, 1e-5])
def test_attention_mse_is_accurate_relative_to_itself_near_the_teacher(masked, distance):
    """Issue 30: the Gram form in fp32 cancelled (75 % error at MSE/mean(A^2) = 1.6e-8, negative below); the loss
    and its gradient now stay accurate relative to the loss down to MSE/mean(A^2) ~ 1e-10 (distance 1e-5)."""
    from fine_tune.methods.tinybert import attention_mse_from_projections

    sq, sk, tq, tk, mask = near_pair(distance)
    sq.requires_grad_(True)
    heads = 4
    reference = direct_mse64(sq, sk, tq, tk, heads, mask, masked)
    scale = direct_mse64(tq, tk, torch.zeros_like(tq), tk, heads, mask, masked)  # mean(A^2) of the teacher
    ratio = float(reference.detach() / scale)
    assert ratio < 1e-9 if distance == 1e-5 else True  # the test reaches the regime the issue names
    got = attention_mse_from_projections(sq, sk, tq, tk, heads, heads, mask, masked)
    assert got.dtype == torch.float32
    got_, ref_ = float(got.detach()), float(reference.detach())
    assert abs(got_ - ref_) <= 1e-4 * ref_, (got_, ref_, ratio)
    (g_got,) = torch.autograd.grad(got, sq)
    (g_ref,) = torch.autograd.grad(reference, sq)
    err = (g_got.double() - g_ref).norm() / g_ref.norm()
    assert err < 1e-4, float(err)


@pytest.mark.parametrize("head_mean", [False, True])
def test_attention_mse_is_never_negative_and_zero_at_the_teacher(head_mean):
    from fine_tune.methods.tinybert import attention_mse_from_projections

    for seed, distance, masked in itertools.product((0, 5), (1e-6, 1e-7, 1e-8, 3e-9, 1e-9, 0.0), (False, True)):
        sq, sk, tq, tk, mask = near_pair(distance, seed=seed)
        # (float64 rounding alone takes some of these below 0 unclamped: seeds 0 and 5 at 1e-8 .. 1e-9)
        got = attention_mse_from_projections(sq, sk, tq, tk, 4, 4, mask, masked, head_mean=head_mean)
        assert float(got) >= 0.0, (distance, masked, float(got))
        if distance == 0.0:
            assert float(got) == 0.0
        elif distance == 1e-6 and not head_mean:  # MSE/mean(A^2) ~ 1e-12: still within 1e-3 of itself
            reference = float(direct_mse64(sq, sk, tq, tk, 4, mask, masked))
            assert abs(float(got) - reference) <= 1e-3 * reference, (float(got), reference)


def test_attention_mse_stays_accurate_with_reduced_precision_matmuls():
    """TF32 (CUDA) / reduced-precision fp32 matmuls (``set_float32_matmul_precision("medium")``, bf16 passes on
    CPUs that have them) must not reach the loss: its Grams are float64."""
    from fine_tune.methods.tinybert import attention_mse_from_projections

    sq, sk, tq, tk, mask = near_pair(1e-4, seed=3)
    reference = float(direct_mse64(sq, sk, tq, tk, 4, mask, True))
    before = (torch.get_float32_matmul_precision(), torch.backends.cuda.matmul.allow_tf32)
    try:
        torch.set_float32_matmul_precision("medium")
        torch.backends.cuda.matmul.allow_tf32 = True
        got = float(attention_mse_from_projections(sq, sk, tq, tk, 4, 4, mask, True))
    finally:
        torch.set_float32_matmul_precision(before[0])
        torch.backends.cuda.matmul.allow_tf32 = before[1]
    assert abs(got - reference) <= 1e-4 * reference, (got, reference)
