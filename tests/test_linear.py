"""models/linear.py: the padding-free forward's linear layer (oneDNN on CPU in fp32) against y = x W^T + b and its
gradients computed independently in float64, and the cases that keep PyTorch's F.linear."""

import pytest
import torch
import torch.nn.functional as F

from fine_tune.models import linear as lin

ONEDNN = lin._ONEDNN_LINEAR is not None


def reference(x, w, b, g):
    """y = x W^T + b and dL/dx = g W, dL/dW = g^T x, dL/db = sum of g's rows, in float64, for the loss <y, g>."""
    x64, w64, g64 = x.detach().double(), w.detach().double(), g.double()
    y = x64 @ w64.T + (b.detach().double() if b is not None else 0)
    g2, x2 = g64.reshape(-1, g64.shape[-1]), x64.reshape(-1, x64.shape[-1])
    return y, g64 @ w64, g2.T @ x2, g2.sum(0)


@pytest.mark.skipif(not ONEDNN, reason="this PyTorch build has no oneDNN linear")
@pytest.mark.parametrize("shape,out,with_bias", [((3, 5, 13), 11, True), ((37, 24), 40, False), ((2, 1, 7), 7, True)])
def test_onednn_linear_matches_the_equation_and_its_gradients(shape, out, with_bias):
    g = torch.Generator().manual_seed(7)
    x = (torch.randn(shape, generator=g) * 1.7 + 0.3).requires_grad_()
    w = (torch.randn(out, shape[-1], generator=g) * 0.4).requires_grad_()
    b = (torch.randn(out, generator=g) - 0.5).requires_grad_() if with_bias else None
    assert lin.uses_onednn(x, w)
    y = lin.linear(x, w, b)
    gy = torch.randn(y.shape, generator=g) * 2.5
    y.backward(gy)
    y_ref, gx_ref, gw_ref, gb_ref = reference(x, w, b, gy)
    assert y.shape == y_ref.shape and y.dtype == torch.float32
    torch.testing.assert_close(y.double(), y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x.grad.double(), gx_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(w.grad.double(), gw_ref, rtol=1e-5, atol=1e-4)
    if with_bias:
        torch.testing.assert_close(b.grad.double(), gb_ref, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not ONEDNN, reason="this PyTorch build has no oneDNN linear")
def test_strided_input_and_frozen_weight():
    """A transposed (non-contiguous) input; a frozen weight and bias get no gradient, the input still does."""
    g = torch.Generator().manual_seed(3)
    base = torch.randn(9, 6, generator=g)
    x = base.clone().requires_grad_()
    xt = x.t()  # [6, 9], non-contiguous
    w, b = torch.randn(4, 9, generator=g), torch.randn(4, generator=g)
    y = lin.linear(xt, w, b)
    gy = torch.randn(6, 4, generator=g)
    y.backward(gy)
    y_ref, gx_ref, _, _ = reference(xt, w, b, gy)
    torch.testing.assert_close(y.double(), y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x.grad.double(), gx_ref.T, rtol=1e-5, atol=1e-5)
    assert w.grad is None and b.grad is None


def test_other_dtypes_and_autocast_keep_f_linear():
    """float64 and bf16 autocast go to F.linear: the same result bit for bit, autocast's dtype kept."""
    g = torch.Generator().manual_seed(5)
    x, w, b = torch.randn(4, 8, generator=g, dtype=torch.float64), torch.randn(3, 8, generator=g,
                                                                               dtype=torch.float64), None
    assert not lin.uses_onednn(x, w)
    assert torch.equal(lin.linear(x, w, b), F.linear(x, w, b))
    x32, w32 = x.float(), w.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not lin.uses_onednn(x32, w32)
        y = lin.linear(x32, w32)
        assert y.dtype == torch.bfloat16
        assert torch.equal(y, F.linear(x32, w32))
