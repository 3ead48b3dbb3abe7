"""Counting the calls that make the host wait for the device, on any machine (a CPU one included).

On a GPU, the host queues kernels and runs ahead; a call that needs a value computed on the device (a tensor
turned into a Python number or list, ``bool()`` of a tensor, an operator whose output *size* depends on the data
such as ``nonzero``, ``torch.equal``) makes it wait until the queue has drained, and the GPU idles while the host
then prepares the next kernels. :class:`SyncCounter` records every such call made while it is active, by
operator and by the line of toolkit code that made it, whatever the device the tensors are on: so a test on a
CPU can hold the training step's budget (tests/test_gpu_paths.py) and ``bench/count_syncs.py`` can report it.

Not counted, because their tensors live on the host by construction: calls inside ``torch.optim`` (an optimiser's
step counters stay on the host unless it is built ``capturable``) and inside ``fine_tune/batching.py`` (the data
order and the collator: NumPy and CPU generators, before the batch is copied to the device). GradScaler's
decisions are counted (they do sync).
"""

from __future__ import annotations

import sys
from collections import Counter
from contextlib import contextmanager

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

# operators whose result the host must read from the device (value or output size)
SYNC_OPS = {"_local_scalar_dense", "nonzero", "equal", "is_nonzero", "masked_select", "_unique", "_unique2",
            "unique_dim", "unique_consecutive", "repeat_interleave", "allclose", "nonzero_numpy"}
# Python-level conversions that read a tensor on the host without an operator the dispatcher sees
SYNC_METHODS = {"tolist", "numpy", "__bool__", "item", "__int__", "__float__", "__index__"}
_EXEMPT = ("/torch/optim/", "/fine_tune/batching.py")
_HERE = __file__


def _caller() -> str:
    """The innermost frame outside torch and this file (``file:line``), or "" inside an exempt package."""
    frame = sys._getframe(2)
    where = ""
    while frame is not None:
        name = frame.f_code.co_filename
        if any(e in name for e in _EXEMPT):
            return ""
        if not where and "/torch/" not in name and name != _HERE:
            where = f"{name.rsplit('/', 1)[-1]}:{frame.f_lineno}"
        frame = frame.f_back
    return where or "torch"


class SyncCounter:
    """``with SyncCounter() as c: ...`` then ``c.total``, ``c.by_op`` and ``c.by_site`` (``file:line``).
    ``with c.paused(): ...`` leaves a region out (logging and checkpoint steps, which read values on purpose)."""

    def __init__(self):
        self.by_op: Counter = Counter()
        self.by_site: Counter = Counter()
        self._paused = 0
        self._depth = 0  # a Python conversion reported once, not again for the operator it runs
        counter = self

        class _Dispatch(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                name = func._overloadpacket.__name__
                if name in SYNC_OPS and not counter._depth:
                    if name == "repeat_interleave" and (kwargs or {}).get("output_size") is not None:
                        pass  # the output size is given: no need to read the repeats
                    else:
                        counter._record(name)
                return func(*args, **(kwargs or {}))

        class _Function(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                name = getattr(func, "__name__", "")
                if name in SYNC_METHODS and args and isinstance(args[0], torch.Tensor) and not counter._depth:
                    counter._record(name)
                    counter._depth += 1
                    try:
                        return func(*args, **(kwargs or {}))
                    finally:
                        counter._depth -= 1
                return func(*args, **(kwargs or {}))

        self._modes = (_Function(), _Dispatch())

    def _record(self, op: str) -> None:
        if self._paused:
            return
        site = _caller()
        if not site:
            return
        self.by_op[op] += 1
        self.by_site[site] += 1

    @property
    def total(self) -> int:
        return sum(self.by_op.values())

    @contextmanager
    def paused(self):
        self._paused += 1
        try:
            yield
        finally:
            self._paused -= 1

    def __enter__(self) -> "SyncCounter":
        for m in self._modes:
            m.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        for m in reversed(self._modes):
            m.__exit__(*exc)


def count_training_syncs(trainer) -> SyncCounter:
    """Run ``trainer.train()`` counting the syncs of its training steps; its logging, finiteness check and
    checkpoints (the steps that read values on purpose) are left out."""
    counter = SyncCounter()
    for name in ("_log", "_check_finite", "save"):
        method = getattr(trainer, name)

        def paused(*a, _method=method, **k):
            with counter.paused():
                return _method(*a, **k)
        setattr(trainer, name, paused)
    with counter:
        trainer.train()
    return counter
