"""The linear layer of the padding-free forward, through oneDNN's inner product on CPU.

``y = x W^T + b``; its gradients ``dL/dx = dL/dy W``, ``dL/dW = (dL/dy)^T x``, ``dL/db = sum_rows dL/dy``.

Why hand-written: on CPU, PyTorch sends an fp32 ``nn.Linear`` and its backward to MKL's sgemm. The oneDNN library
that PyTorch also ships (Inductor's CPU fusions call it through ``torch.ops.mkldnn._linear_pointwise``) multiplies the
shapes of a BERT layer faster on the 2-core AVX-512 machine this toolkit is measured on: about 1.2x for ``x W^T`` and
``dL/dy W`` (MiniLM's 384/1152/1536-wide layers, ~2,300 rows), and slower for ``(dL/dy)^T x``, the reduction over
the rows, which stays with MKL (doc/performance.md, "oneDNN for the linear layers"). No library routes an eager
fp32 linear and its backward that way, so this Function does: the forward and ``dL/dx`` through oneDNN, ``dL/dW``
and ``dL/db`` as PyTorch computes them. Both libraries compute in fp32 (only the order of the sums differs).

PyTorch's ``F.linear`` is kept where oneDNN's op is absent (a build without it), off the CPU, for any dtype but
float32, under autocast (which would otherwise be bypassed) and in a compiled forward (``--compile``: Inductor makes
its own choice of kernel).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable


def _onednn_op():
    """``torch.ops.mkldnn._linear_pointwise`` where this PyTorch build has it, else None."""
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        return torch.ops.mkldnn._linear_pointwise
    except (AttributeError, RuntimeError):
        return None


_ONEDNN_LINEAR = _onednn_op()


def _inner_product(x2: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """oneDNN's ``x2 weight^T + bias`` for a 2-D ``x2`` [rows, in] and ``weight`` [out, in] (any strides)."""
    return _ONEDNN_LINEAR(x2, weight, bias, "none", [], "")


class _OneDNNLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        x2 = x.reshape(-1, x.shape[-1]).contiguous()
        ctx.save_for_backward(x2, weight)
        ctx.x_shape, ctx.has_bias = x.shape, bias is not None
        return _inner_product(x2, weight, bias).view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x2, weight = ctx.saved_tensors
        g2 = grad.reshape(-1, grad.shape[-1]).contiguous()
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:  # dL/dy W: oneDNN with W^T (a view) as its weight
            grad_x = _inner_product(g2, weight.t(), None).view(ctx.x_shape)
        if ctx.needs_input_grad[1]:  # (dL/dy)^T x: MKL
            grad_w = g2.t().mm(x2)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = g2.sum(0)
        return grad_x, grad_w, grad_b


def uses_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether :func:`linear` takes oneDNN's path for these tensors."""
    return (_ONEDNN_LINEAR is not None and x.device.type == "cpu" and x.dtype == torch.float32
            and weight.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
            and not torch.compiler.is_compiling())


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)``, through oneDNN on CPU in fp32 (module docstring)."""
    if uses_onednn(x, weight):
        return _OneDNNLinear.apply(x, weight, bias)
    return F.linear(x, weight, bias)
