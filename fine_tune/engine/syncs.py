"""Counting the calls that make the host wait for the device, on any machine (a CPU one included).

On a GPU, the host queues kernels and runs ahead; a call that needs a value computed on the device makes it wait
until the queue has drained, and the GPU idles while the host then prepares the next kernels. :class:`SyncCounter`
records every such call made while it is active, by operator and by the line of toolkit code that made it
(``file:line``), so a test on a CPU can hold the training step's budget (tests/test_syncs.py,
tests/test_gpu_paths.py) and ``bench/count_syncs.py`` can report it. Three kinds:

- **reads** (by operator: ``item``, ``tolist``, ``__bool__``, ``nonzero``, ``equal``, ...): a device tensor
  turned into a Python number or list, ``bool()`` of one, an operator whose output *size* depends on the data.
  Seen whatever the device the tensors are on, as they are operators.
- **host-to-device copies** (``h2d_copy``): a host value copied onto the device while the host waits, which on
  CUDA is ``cudaMemcpyAsync`` then a stream synchronisation: ``torch.tensor(data, device=dev)`` (also
  ``as_tensor``, ``asarray`` and ``t.new_tensor(data)`` of Python or NumPy data: the data is made on the host,
  then copied), and a host tensor moved with a blocking ``.to(dev)``, ``.cuda()`` or ``dev_tensor.copy_(host)``.
  A copy made with ``non_blocking=True`` is not counted: it is queued (from page-locked memory, the collator's on
  a CUDA run) or staged by the driver (pageable memory) without waiting for the device. Factories that fill
  (``torch.zeros``, ``full``, ``arange``, ``scalar_tensor`` with a device...) copy nothing and are not counted.
- **device-to-host copies** (``d2h_copy``): a device tensor copied to the host while it waits (``.cpu()``, a
  blocking ``.to("cpu")``, ``host.copy_(dev_tensor)``); and **host operands** (``host_operand``): a host tensor
  of one element or more (not a 0-dim scalar, which CUDA kernels take as an argument) in an operation with a
  device tensor, which on a GPU either copies it (indexing with a host index) or fails.

Which tensors are on the host. On a GPU run (``SyncCounter(device)`` with ``device`` not the CPU) a tensor's own
device says it. On a CPU run the host and the device are one memory, so the counter keeps the distinction itself,
*as if* the training device were separate: a tensor is **host-born** when made while the counter is active by a
factory given no device (``torch.tensor(0.0)``, ``torch.zeros(3)``, ``torch.from_numpy``: the collator's batches,
``clip_grad_norm_``'s zero for a set without gradient), or by an operation all of whose tensor inputs are
host-born; it stops being one when moved with ``.to(device)``. Every other tensor is on the device. A factory
given a device, and a ``.to()`` with a device, target the device: on a CPU run ``device="cpu"`` reads as the
training device, so code means the host by naming no device.

What a CPU run cannot see: a tensor made before the counter started counts as on the device; a ``.to("cpu")`` of
a device tensor cannot be told from the no-op move to the training device (only ``.cpu()`` and the reads above
show device-to-host traffic); ``torch.from_numpy`` is seen as spelled (``torch.from_numpy``, patched while
counting), not through another alias; the copies a C++ operator makes inside itself are seen only when they are
reads. A GPU run with ``torch.cuda.set_sync_debug_mode("warn")`` is the ground truth.

Not counted, because their tensors live on the host by construction: calls inside ``torch.optim`` (an optimiser's
step counters stay on the host unless it is built ``capturable``) and inside ``fine_tune/batching.py`` (the data
order and the collator: NumPy and CPU generators, before the batch is copied to the device). GradScaler's
decisions are counted (they do sync).
"""

from __future__ import annotations

import sys
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from types import FrameType
from typing import TYPE_CHECKING, Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

if TYPE_CHECKING:
    import numpy as np

    from .trainer import Trainer

# operators whose result the host must read from the device (value or output size)
SYNC_OPS = {
    "_local_scalar_dense",
    "nonzero",
    "equal",
    "is_nonzero",
    "masked_select",
    "_unique",
    "_unique2",
    "unique_dim",
    "unique_consecutive",
    "repeat_interleave",
    "allclose",
    "nonzero_numpy",
}
# Python-level conversions that read a tensor on the host without an operator the dispatcher sees
SYNC_METHODS = {"tolist", "numpy", "__bool__", "item", "__int__", "__float__", "__index__"}
# torch functions that make a tensor from Python values alone: on the host unless given a device
FACTORIES = {
    "tensor",
    "as_tensor",
    "asarray",
    "scalar_tensor",
    "zeros",
    "ones",
    "empty",
    "full",
    "arange",
    "range",
    "linspace",
    "logspace",
    "eye",
    "rand",
    "randn",
    "randint",
    "randperm",
    "empty_strided",
    "tril_indices",
    "triu_indices",
}
# of those, the ones that copy data made on the host: given a device, a blocking host-to-device copy
DATA_FACTORIES = {"tensor", "as_tensor", "asarray"}
_EXEMPT = ("/torch/optim/", "/fine_tune/batching.py")
_HERE = __file__


def _caller() -> str:
    """The innermost frame outside torch and this file (``file:line``), or "" inside an exempt package."""
    frame: FrameType | None = sys._getframe(2)
    where = ""
    while frame is not None:
        name = frame.f_code.co_filename
        if any(e in name for e in _EXEMPT):
            return ""
        if not where and "/torch/" not in name and name != _HERE:
            where = f"{name.rsplit('/', 1)[-1]}:{frame.f_lineno}"
        frame = frame.f_back
    return where or "torch"


def _tensors(values: Iterable[object]) -> list[torch.Tensor]:
    """The tensors among ``values``, and among the lists and tuples in them (one level: ``torch.stack([...])``)."""
    found: list[torch.Tensor] = []
    for v in values:
        if isinstance(v, torch.Tensor):
            found.append(v)
        elif isinstance(v, (list, tuple)):
            found.extend(x for x in v if isinstance(x, torch.Tensor))
    return found


def _holds_tensor(data: object) -> bool:
    """Whether Python data (nested lists/tuples) holds a tensor: ``torch.tensor([t1, t2])`` reads each, counted as
    reads by the operators it runs."""
    if isinstance(data, torch.Tensor):
        return True
    return isinstance(data, (list, tuple)) and any(_holds_tensor(x) for x in data)


def _is_torch(func: object, name: str) -> bool:
    return getattr(torch, name, None) is func


class _TensorSet:
    """Tensors by identity, not keeping them alive (a WeakSet would compare tensors with ``==``)."""

    def __init__(self) -> None:
        self._refs: dict[int, weakref.ref[torch.Tensor]] = {}

    def __contains__(self, t: torch.Tensor) -> bool:
        ref = self._refs.get(id(t))
        return ref is not None and ref() is t

    def __bool__(self) -> bool:
        return bool(self._refs)

    def add(self, t: torch.Tensor) -> None:
        key = id(t)

        def forget(
            _: weakref.ref[torch.Tensor], k: int = key, refs: dict[int, weakref.ref[torch.Tensor]] = self._refs
        ) -> None:
            refs.pop(k, None)

        self._refs[key] = weakref.ref(t, forget)

    def discard(self, t: torch.Tensor) -> None:
        if t in self:
            del self._refs[id(t)]


class SyncCounter:
    """``with SyncCounter(device) as c: ...`` then ``c.total``, ``c.by_op`` and ``c.by_site`` (``file:line``).
    ``device``: the run's training device (default the CPU: the host/device distinction kept by the counter, see
    the module's docstring). ``with c.paused(): ...`` leaves a region out (logging and checkpoint steps, which read
    values on purpose)."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.by_op: Counter[str] = Counter()
        self.by_site: Counter[str] = Counter()
        self.device = torch.device(device)
        self.emulated = self.device.type == "cpu"  # host and device share the CPU: host-born tensors tracked here
        self._host = _TensorSet()
        self._paused = 0
        self._depth = 0  # a Python conversion reported once, not again for the operator it runs
        self._from_numpy: Callable[..., torch.Tensor] | None = None  # torch's own, while patched
        counter = self

        # torch leaves TorchDispatchMode's __init_subclass__ (called by this class statement) and __init__ unannotated
        class _Dispatch(TorchDispatchMode):  # type: ignore[no-untyped-call]
            def __torch_dispatch__(
                self,
                func: torch._ops.OpOverload,
                types: Sequence[type],
                args: tuple[Any, ...] = (),
                kwargs: dict[str, Any] | None = None,
            ) -> Any:
                name = func._overloadpacket.__name__
                if (
                    name in SYNC_OPS
                    and not counter._depth
                    and not any(isinstance(a, torch.Tensor) and counter.on_host(a) for a in args)
                ):
                    if name == "repeat_interleave" and (kwargs or {}).get("output_size") is not None:
                        pass  # the output size is given: no need to read the repeats
                    else:
                        counter._record(name)
                return func(*args, **(kwargs or {}))

        class _Function(TorchFunctionMode):
            def __torch_function__(
                self,
                func: Callable[..., Any],
                types: Sequence[type],
                args: tuple[Any, ...] = (),
                kwargs: dict[str, Any] | None = None,
            ) -> Any:
                return counter._call(func, args, kwargs or {})

        self._modes: tuple[AbstractContextManager[object], ...] = (
            _Function(),
            _Dispatch(),  # type: ignore[no-untyped-call]
        )

    # -- where tensors are ----------------------------------------------------------------------------
    def on_host(self, t: torch.Tensor) -> bool:
        """Whether ``t`` is on the host (a host-born tensor on a CPU run; a CPU tensor on a GPU run)."""
        return t in self._host if self.emulated else t.device.type == "cpu"

    def _targets_device(self, device: torch.device | str | int | None) -> bool:
        """Whether an explicit ``device=`` argument names the training device rather than the host."""
        return device is not None and (self.emulated or torch.device(device).type != "cpu")

    def _place(self, out: object, host: bool) -> None:
        """Record where ``out``'s tensors are (CPU run only)."""
        if not self.emulated:
            return
        for t in _tensors(out if isinstance(out, (list, tuple)) else (out,)):
            if host:
                self._host.add(t)
            else:
                self._host.discard(t)

    # -- the calls ------------------------------------------------------------------------------------
    def _call(self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        name = getattr(func, "__name__", "")
        first = args[0] if args else None
        if isinstance(first, torch.Tensor):
            if name in SYNC_METHODS:
                return self._read(func, name, args, kwargs)
            if name in ("to", "cuda", "cpu"):
                return self._move(func, name, args, kwargs)
            if name == "copy_" and len(args) > 1:
                self._copy(args[0], args[1], kwargs.get("non_blocking", args[2] if len(args) > 2 else False))
                return func(*args, **kwargs)
            if name == "new_tensor":
                device = kwargs.get("device")
                to_device = self._targets_device(device) if device is not None else not self.on_host(first)
                data = args[1] if len(args) > 1 else kwargs.get("data")
                return self._made_from_data(func, args, kwargs, data, to_device)
        if name in DATA_FACTORIES and _is_torch(func, name):
            device = kwargs.get("device")
            data = first if args else kwargs.get("data", kwargs.get("obj"))
            if device is None and isinstance(data, torch.Tensor):  # same place as the data
                out = func(*args, **kwargs)
                self._place(out, self.on_host(data))
                return out
            return self._made_from_data(func, args, kwargs, data, self._targets_device(device))
        out = func(*args, **kwargs)
        inputs = _tensors(args) + _tensors(kwargs.values())
        if "device" in kwargs and kwargs["device"] is not None:
            self._place(out, not self._targets_device(kwargs["device"]))
        elif not inputs:
            if name in FACTORIES and _is_torch(func, name):
                self._place(out, True)
        elif not self.emulated or self._host:
            host = [t for t in inputs if self.on_host(t)]
            if len(host) == len(inputs):
                self._place(out, True)
            elif any(t.dim() > 0 for t in host):
                self._record("host_operand")
        return out

    def _read(self, func: Callable[..., Any], name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not self._depth and not self.on_host(args[0]):
            self._record(name)
        self._depth += 1
        try:
            return func(*args, **kwargs)
        finally:
            self._depth -= 1

    def _made_from_data(
        self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], data: object, to_device: bool
    ) -> Any:
        """``torch.tensor(data, device=...)`` and its kin: a copy of host data onto the device blocks."""
        if to_device and (self.on_host(data) if isinstance(data, torch.Tensor) else not _holds_tensor(data)):
            self._record("h2d_copy")
        out = func(*args, **kwargs)
        self._place(out, not to_device)
        return out

    def _copy(self, target: torch.Tensor, source: torch.Tensor, non_blocking: bool) -> None:
        if not non_blocking and isinstance(source, torch.Tensor):
            self._crossing(self.on_host(source), self.on_host(target))

    def _crossing(self, from_host: bool, to_host: bool) -> None:
        """A blocking copy: counted where it crosses between host and device."""
        if from_host and not to_host:
            self._record("h2d_copy")
        elif to_host and not from_host:
            self._record("d2h_copy")

    def _move(self, func: Callable[..., Any], name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """``.to()``, ``.cuda()``, ``.cpu()``: blocking unless ``non_blocking``; a dtype-only ``.to`` stays put."""
        source = args[0]
        if name == "cpu":
            to_device, non_blocking = False, False
        elif name == "cuda":
            to_device = True
            non_blocking = kwargs.get("non_blocking", args[2] if len(args) > 2 else False)
        else:
            other = args[1] if len(args) > 1 and isinstance(args[1], torch.Tensor) else None
            try:
                device, _, non_blocking, _ = torch._C._nn._parse_to(
                    *args[1:], **{k: v for k, v in kwargs.items() if k != "copy"}
                )
            except (TypeError, RuntimeError):
                device, non_blocking = None, False
            if device is None:  # a dtype or memory-format change: where the source is
                out = func(*args, **kwargs)
                if out is not source:
                    self._place(out, self.on_host(source))
                return out
            to_device = not self.on_host(other) if isinstance(other, torch.Tensor) else self._targets_device(device)
        if not non_blocking:
            self._crossing(self.on_host(source), not to_device)
        out = func(*args, **kwargs)
        if out is not source or to_device:  # a CPU run's .cpu() of a device tensor is that tensor: it stays put
            self._place(out, not to_device)
        return out

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
    def paused(self) -> Iterator[None]:
        self._paused += 1
        try:
            yield
        finally:
            self._paused -= 1

    def __enter__(self) -> SyncCounter:
        if self.emulated:  # not a torch function the modes see; its tensors are host-born
            self._from_numpy = torch.from_numpy

            # its parameter named as torch's own (the stub's), which the patch stands in for
            def from_numpy(
                ndarray: np.ndarray, _made: Callable[[np.ndarray], torch.Tensor] = self._from_numpy
            ) -> torch.Tensor:
                out = _made(ndarray)
                self._host.add(out)
                return out

            torch.from_numpy = from_numpy
        for m in self._modes:
            m.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:  # the exception's type, value and traceback, handed to each mode
        for m in reversed(self._modes):
            m.__exit__(*exc)
        if self._from_numpy is not None:
            torch.from_numpy, self._from_numpy = self._from_numpy, None


# the Trainer's steps that read values on purpose: logging, the finiteness check, evaluation, checkpoints
READS_ON_PURPOSE = ("_log", "_check_finite", "_evaluate", "save")


def leave_out_reads_on_purpose(trainer: Trainer, region: Callable[[], AbstractContextManager[object]]) -> None:
    """Run each of ``trainer``'s :data:`READS_ON_PURPOSE` steps inside ``region()`` (a counter's ``paused``, or
    a region that also books what CUDA's own sync report saw there: scripts/gpu_check.py)."""
    for name in READS_ON_PURPOSE:
        method = getattr(trainer, name)

        def left_out(*a: Any, _method: Callable[..., Any] = method, **k: Any) -> Any:
            with region():
                return _method(*a, **k)

        setattr(trainer, name, left_out)


def count_training_syncs(trainer: Trainer) -> SyncCounter:
    """Run ``trainer.train()`` counting the syncs of its training steps on ``trainer.device``; its logging,
    finiteness check, evaluation and checkpoints (the steps that read values on purpose) are left out."""
    counter = SyncCounter(trainer.device)
    leave_out_reads_on_purpose(trainer, counter.paused)
    with counter:
        trainer.train()
    return counter
