"""``--deterministic``: only deterministic kernels for the length of a run, the condition for a bit-exact resume on a
GPU (doc/methods.md, "Deterministic runs").

On a CPU the toolkit's runs already resume bit-exact (tests/test_resume.py); on a GPU several kernels may add in a
different order from one call to the next: cuBLAS's matmuls with more than one workspace per stream, cuDNN's
autotuned algorithms, scaled-dot-product attention's fused backward (atomics in the gradient of Q). Under the flag:

- ``torch.use_deterministic_algorithms(True)`` (strict: an operation without a deterministic implementation raises,
  rather than run non-deterministically in a run that asked for determinism);
- ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (unless the environment already holds a value: ``:16:8`` is the other one
  cuBLAS documents). cuBLAS reads it when PyTorch creates the handle of a device, at the process's first cuBLAS
  call, so it must be in the environment before any CUDA matmul: it is set here, as the run starts, before the
  models are built or moved (a process that did CUDA work before keeps the workspace it made, and
  use_deterministic_algorithms then refuses the matmuls of a process started without the variable);
- ``torch.backends.cudnn.deterministic`` (and no cuDNN autotuning);
- attention by PyTorch's math kernel only (``torch.nn.attention.sdpa_kernel([SDPBackend.MATH])``): softmax and two
  matmuls, deterministic wherever the matmuls are. torch 2.13 also picks deterministic variants of its flash and
  memory-efficient backward kernels under strict deterministic algorithms and leaves cuDNN attention out (PyTorch's
  reproducibility notes); the math kernel is the one path that holds by construction, at the cost of keeping the
  [B, H, S, S] scores for backward.

Everything is restored when the run ends (a test process runs many commands)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

CUBLAS_WORKSPACE = ":4096:8"


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool) -> Iterator[None]:
    """Only deterministic kernels inside the block when ``enabled`` (the module docstring says which and why);
    nothing changes otherwise."""
    if not enabled:
        yield
        return
    cudnn = torch.backends.cudnn
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        cudnn.deterministic,
        cudnn.benchmark,
        os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    )
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(True)
    cudnn.deterministic, cudnn.benchmark = True, False
    try:
        with sdpa_kernel([SDPBackend.MATH]):
            yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        cudnn.deterministic, cudnn.benchmark = saved[2], saved[3]
        if saved[4] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
