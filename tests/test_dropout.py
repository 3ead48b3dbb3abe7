"""models/dropout.py: the cheaper CPU dropout is Bernoulli(1 - p') dropout with p' = round(p * 2^16) / 2^16,
unbiased, the same mask forward and backward, reproducible under a seed; and the padding-free attention's
written-out dropout path computes softmax(q k^T * scale + mask) * m / (1 - p') v with exactly those masks."""

from __future__ import annotations

import math

import pytest
import torch

from fine_tune.models.dropout import dropout, keep_mask
from fine_tune.models.padding_free import _attention


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_drop_rate_scale_and_independence(p):
    torch.manual_seed(0)
    n = 1 << 20
    y = dropout(torch.ones(n), p, True)
    p_eff = round(p * 65536) / 65536
    dropped = y == 0
    # the rate within 5 standard deviations of the binomial
    assert abs(dropped.float().mean().item() - p_eff) < 5 * math.sqrt(p_eff * (1 - p_eff) / n)
    assert torch.all(y[~dropped] == 65536 / (65536 - round(p * 65536)))  # kept elements scaled by 1 / (1 - p')
    assert abs(y.mean().item() - 1.0) < 5 * math.sqrt(p_eff / (1 - p_eff) / n)  # E[y] = x
    # neighbours come from the same 64-bit word: both dropped at rate p'^2, as for independent draws
    for lag in (1, 2, 3, 4):
        both = (dropped[:-lag] & dropped[lag:]).float().mean().item()
        assert abs(both - p_eff**2) < 5 * math.sqrt(p_eff**2 * (1 - p_eff**2) / n), lag


def test_gradient_uses_the_forward_mask():
    torch.manual_seed(1)
    x = torch.randn(7, 33, requires_grad=True)
    w = torch.randn(7, 33)
    y = dropout(x, 0.25, True)
    (y * w).sum().backward()
    kept = y != 0
    scale = 65536 / (65536 - 16384)
    torch.testing.assert_close(y, torch.where(kept, x * scale, 0.0))
    torch.testing.assert_close(x.grad, torch.where(kept, w * scale, 0.0))


def test_identity_zero_and_seeding():
    x = torch.randn(5, 9)
    assert dropout(x, 0.1, False) is x and dropout(x, 0.0, True) is x
    assert torch.all(dropout(x, 1.0, True) == 0)
    torch.manual_seed(3)
    a = dropout(x, 0.2, True)
    torch.manual_seed(3)
    b = dropout(x, 0.2, True)
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, dropout(x, 0.2, True))  # the stream moves on


def test_attention_with_dropout_is_the_written_out_product():
    torch.manual_seed(0)
    q, k, v = (torch.randn(3, 4, 6, 8) for _ in range(3))
    key_mask = (torch.arange(6) < torch.tensor([6, 4, 2])[:, None])[:, None, None, :]
    torch.manual_seed(11)
    got = _attention(q, k, v, key_mask, 0.35, 0.2)
    torch.manual_seed(11)
    keep, scale = keep_mask((3, 4, 6, 6), 0.2)
    probs = torch.softmax((q @ k.transpose(-1, -2)) * 0.35 + torch.where(key_mask, 0.0, -1e9), -1)
    torch.testing.assert_close(got, (probs * keep * scale) @ v)
    # no dropout: PyTorch's kernel, the same product without the mask
    torch.testing.assert_close(_attention(q, k, v, key_mask, 0.35, 0.0), probs @ v, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("p", [0.1, 0.3, 0.55])
def test_the_mask_is_the_documented_function_of_the_random_words(p):
    """Read back the 64-bit words the generator gives under the same seed and cut each into four 16-bit integers
    (with shifts, independently of the implementation's int16 view), each read as signed s in [-2^15, 2^15) and
    shifted to u = s + 2^15, uniform in [0, 2^16): exactly the elements with u < round(p * 2^16) are dropped, so p
    is rounded (not truncated) and the cut is '>='. 0.1 * 2^16 = 6553.6, 0.3 * 2^16 = 19660.8 and
    0.55 * 2^16 = 36044.8 all round up, and 2^20 draws hold about 16 u equal to each cut."""
    n = 1 << 20  # a multiple of 4: every u of every word is used, so the count does not depend on their order
    torch.manual_seed(7)
    keep, scale = keep_mask((n // 512, 512), p)
    torch.manual_seed(7)
    words = torch.empty(n // 4, dtype=torch.int64).random_(-(1 << 63), (1 << 63) - 1)
    bits = torch.stack([(words >> (16 * j)) & 0xFFFF for j in range(4)])  # 0 .. 65535
    signed = torch.where(bits >= 1 << 15, bits - (1 << 16), bits)
    u = signed + (1 << 15)
    cut = math.floor(p * 65536 + 0.5)
    assert keep.dtype == torch.bool and keep.shape == (n // 512, 512)
    assert int((~keep).sum()) == int((u < cut).sum())
    assert int((u == cut).sum()) > 0  # the draw can tell '>=' from '>'
    assert scale == 65536 / (65536 - cut)
