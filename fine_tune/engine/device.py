"""Device and mixed-precision resolution shared by every script.

``--device_id`` (2021 era; -1 = CPU) takes precedence over ``--num_gpu`` (2020 era; 0 = CPU, >= 1 =
``cuda:0``). Without CUDA every request falls back to the CPU with one warning line; a CUDA index the
machine lacks is a :class:`~fine_tune.errors.UserError`. Under torchrun, ``LOCAL_RANK`` chooses the student's
device and ``--tdevice_id`` / ``--gate_device_id`` are relative to it (:func:`resolve_placement`).
"""

from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass
from typing import TypeVar

import torch

from ..errors import UserError
from ..progress import say


def warn(message: str) -> None:
    say(f"warning: {message}")  # once per job: rank 0's under torchrun (fine_tune/progress.py)


def resolve_device(
    device_id: int | None, num_gpu: int | None, flag_name: str = "--device_id", quiet: bool = False
) -> torch.device:
    if flag_name == "--device_id":
        from .distributed import launched_by_torchrun

        if launched_by_torchrun():  # torchrun's LOCAL_RANK takes precedence over --device_id / --num_gpu
            return _torchrun_device(device_id, num_gpu, quiet)
    if device_id is None and num_gpu is None:
        return torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu")
    if device_id is not None:
        if device_id < 0:
            return torch.device("cpu")
        wanted, name = device_id, f"{flag_name} {device_id}"
    else:
        assert num_gpu is not None  # both None returned above
        if num_gpu <= 0:
            return torch.device("cpu")
        wanted, name = 0, f"--num_gpu {num_gpu}"
    if not torch.cuda.is_available():
        if not quiet:
            warn(f"{name}: CUDA is not available on this machine; running on CPU")
        return torch.device("cpu")
    count = torch.cuda.device_count()
    if wanted >= count:
        raise UserError(f"{name}: this machine has {count} CUDA device(s) (indices 0..{count - 1})")
    return torch.device(f"cuda:{wanted}")


def _torchrun_device(device_id: int | None, num_gpu: int | None, quiet: bool) -> torch.device:
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        if local >= count:
            raise UserError(
                f"LOCAL_RANK {local} (torchrun): this machine has {count} CUDA device(s); "
                f"use --nproc_per_node {count} or fewer"
            )
        return torch.device(f"cuda:{local}")
    if not quiet and ((device_id is not None and device_id >= 0) or (num_gpu or 0) > 0):
        warn("CUDA is not available on this machine; torchrun processes run on CPU (Gloo)")
    return torch.device("cpu")


def same_device(a: torch.device, b: torch.device) -> bool:
    """Whether two devices are one (``cpu`` and ``cpu:0`` are; a tensor's device always carries its index)."""
    return a.type == b.type and (a.index or 0) == (b.index or 0)


def non_blocking(source: torch.device, target: torch.device) -> bool:
    """Whether a copy from ``source`` to ``target`` may leave the host running (``.to(target, non_blocking=...)``):
    onto a CUDA device (queued from the collator's page-locked batch; staged by the driver from pageable memory,
    without waiting for the device), or from the CPU to the CPU, which copies nothing, so a CPU run passes what a
    CUDA run does (fine_tune/engine/syncs.py counts blocking copies). A copy to the host from a device blocks:
    the host reads it next."""
    return target.type == "cuda" or source.type == target.type == "cpu"


# the student's device, or None where only the check matters (the run plan, before the device is resolved)
StudentDevice = TypeVar("StudentDevice", torch.device, None)


def resolve_placement(
    device_id: int | None,
    flag_name: str,
    student_device: StudentDevice,
    student_id: int | None = None,
    quiet: bool = False,
) -> torch.device | StudentDevice:
    """Where ``--tdevice_id`` / ``--gate_device_id`` put the teacher / the gates (default: the student's device).

    One process: an absolute CUDA index (-1 = CPU); the student's own ``--device_id`` means its device.
    Under torchrun the flag is *relative to the rank*: rank ``LOCAL_RANK`` of ``LOCAL_WORLD_SIZE`` processes per
    node owns the devices ``cuda:(LOCAL_RANK + k * LOCAL_WORLD_SIZE)``, k = 0, 1, ...; ``k = 0`` is its student's
    device, so ``--tdevice_id 1`` with 2 processes on 4 GPUs puts rank 0's teacher on cuda:2 and rank 1's on
    cuda:3 (no two ranks share a teacher or gate device). A slot the machine lacks is a UserError."""
    from .distributed import launched_by_torchrun

    if device_id is None:
        return student_device
    if not launched_by_torchrun():
        if device_id == student_id:
            return student_device
        return resolve_device(device_id, None, flag_name, quiet)
    if device_id < 0:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        return student_device  # every rank on CPU (Gloo); resolve_device already said so
    local = int(os.environ.get("LOCAL_RANK", "0"))
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
    count = torch.cuda.device_count()
    index = local + device_id * per_node
    if index >= count:
        raise UserError(
            f"{flag_name} {device_id}: under torchrun it is relative to each rank (rank {local} of {per_node} "
            f"per node: cuda:{local} + {device_id} x {per_node} = cuda:{index}), and this machine has "
            f"{count} CUDA device(s); with {per_node} processes per node use {flag_name} 0.."
            f"{max(count // per_node - 1, 0)}"
        )
    return torch.device(f"cuda:{index}")


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when the processor executes bf16 natively (AVX512-BF16 or AMX), where bf16 autocast pays."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@dataclass(frozen=True)
class Precision:
    """What ``--amp`` means on the chosen device."""

    device_type: str
    dtype: torch.dtype | None  # None = fp32, no autocast

    @property
    def use_scaler(self) -> bool:
        """fp16 autocast trains through a GradScaler (on CUDA from ``--amp``; on CPU only when built so, as the
        tests do: ``Precision("cpu", torch.float16)``)."""
        return self.dtype == torch.float16

    def autocast(self) -> contextlib.AbstractContextManager[None]:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def cast_frozen_linears(self, module: torch.nn.Module, device: torch.device) -> int:
        """Cast once what autocast would cast at every call: the fp32 weights and biases of ``module``'s linear
        layers (``F.linear``, on autocast's lower-precision list on CPU and CUDA), to the autocast dtype, when
        ``module`` sits on a device this precision autocasts. For a frozen module (the teacher): its outputs under
        autocast stay bit-identical (autocast rounds the same fp32 values to the same dtype) and its fp32 copies of
        those weights are gone. Embeddings and LayerNorm, which autocast runs in fp32, stay fp32, and so does a
        linear weight shared with another kind of module (tied to an embedding). Returns the tensors cast."""
        if self.dtype is None or device.type != self.device_type:
            return 0
        shared = {
            id(p) for m in module.modules() if not isinstance(m, torch.nn.Linear) for p in m.parameters(recurse=False)
        }
        cast = 0
        for m in module.modules():
            if isinstance(m, torch.nn.Linear):
                for p in m.parameters(recurse=False):
                    if p.dtype == torch.float32 and id(p) not in shared:
                        p.data = p.data.to(self.dtype)
                        cast += 1
        return cast

    def describe(self) -> str:
        return (
            "fp32" if self.dtype is None else {torch.float16: "fp16", torch.bfloat16: "bf16"}[self.dtype] + " autocast"
        )


def resolve_precision(amp: bool, amp_dtype: str, device: torch.device, quiet: bool = False) -> Precision:
    if not amp:
        return Precision(device.type, None)
    if device.type == "cuda":
        dtype = torch.bfloat16 if amp_dtype == "bf16" else torch.float16
        return Precision("cuda", dtype)
    if cpu_has_native_bf16():
        if not quiet:
            warn("--amp on CPU: using bf16 autocast (this processor has native bf16)")
        return Precision("cpu", torch.bfloat16)
    if not quiet:
        warn("--amp on CPU: this processor has no native bf16, so training runs in fp32")
    return Precision("cpu", None)
