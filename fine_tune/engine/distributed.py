"""Data-parallel training under ``torchrun`` (DistributedDataParallel): NCCL on GPUs, Gloo on CPU.

Every script runs unchanged under ``torchrun --nproc_per_node N script.py ...`` (or multi-node torchrun). The
process group comes from torchrun's environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``...);
without it (a plain ``python script.py``) nothing here does anything.

Semantics, chosen so that N processes compute what one process computes:

- Every rank draws the same global micro-batch from the same seeded data order and keeps its share
  (``rows[rank::world]``). Its loss is weighted by ``world * len(share) / len(rows)`` so that DDP's gradient
  average equals the gradient of the mean over the whole micro-batch, also when the last micro-batch of an
  epoch does not divide evenly. A rank whose share is empty runs one row with weight 0 (it must still take part
  in the gradient all-reduce). The effective batch stays ``--batch_size``. Exact for losses that are means over
  the micro-batch's rows (or over every position, ``--padding max_length``); a loss averaged over the micro-batch's
  real tokens (a masked hidden-state MSE or cosine under ``--padding dynamic``) becomes each rank's token mean
  weighted by its rows, close to but not the one-process value (two Gloo processes, PKD's script, 3-of-12 layers:
  weights within 2.2e-3, logged hidden loss 8.517 vs 8.506); the distributed recipe and LAD tests use max_length.
- The student is wrapped in DistributedDataParallel (gradients all-reduced during backward; ``no_sync`` for the
  first ``accum_step - 1`` micro-batches of a step). A method whose losses leave student parameters without gradient
  (``Method.every_parameter_learns`` False: hidden losses only, ``--hard_weight 0 --soft_weight 0``, never reach
  the pooler and classifier) is not wrapped: DDP would wait for those gradients (and with
  ``find_unused_parameters`` still counts the classifier as used, since it produced the logits the losses
  ignore); its student gradients are averaged across ranks as the extra parameter sets' (LAD gates) are: by
  buckets launched during the backward of each step's last micro-batch (:class:`BucketedGradientAverage`), those
  without gradient left out on every rank alike. Clipping, optimiser and schedule steps then run identically on every rank.
- Only rank 0 writes: config, model folder, checkpoints, resume state, TensorBoard, tables, logits and
  submissions. Decisions rank 0 takes (start over, resume from step k, already finished, or an error) are
  broadcast so every rank follows them and an error ends every rank with the same one-line message.
- Evaluation and logits generation are sharded by batch (rank r predicts batches r, r + N, ...) and gathered
  on every rank in file order: no row is counted twice.
- ``LOCAL_RANK`` chooses the CUDA device and takes precedence over ``--device_id``.
- Only rank 0 speaks: the other ranks' stdout is silenced (:func:`silence_other_ranks`), and the start-up and
  information lines and the progress bars (fine_tune/progress.py: ``say``, ``progress``) are rank 0's alone;
  an error still reaches every rank's stderr.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as tdist
from torch.utils.hooks import RemovableHandle

from ..progress import torchrun_rank


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return torchrun_rank() is not None


DEFAULT_TIMEOUT = timedelta(seconds=1800)  # --ddp_timeout's default, as Hugging Face's TrainingArguments.ddp_timeout
_group_timeout = DEFAULT_TIMEOUT  # the timeout world() creates the process group with (configure())


def configure(timeout: timedelta) -> None:
    """The timeout of the process group this process will create (``--ddp_timeout``, resolved by the plan and set
    by the runner before anything asks for :func:`world`): how long a rank waits for the others to join and in each
    collective (Gloo's and NCCL's watchdog) before the job fails, e.g. while rank 0 alone hashes inputs or writes a
    checkpoint. The group is created once per process: a timeout given after that is refused, not ignored."""
    global _group_timeout
    if tdist.is_available() and tdist.is_initialized() and timeout != _group_timeout:
        raise RuntimeError(f"the process group exists already (timeout {_group_timeout}); configure() comes first")
    _group_timeout = timeout


@functools.lru_cache(maxsize=1)
def world() -> World:
    """This process's place; the process group is created on first use (Gloo without CUDA, else NCCL), with the
    timeout :func:`configure` set."""
    if not launched_by_torchrun():
        return World()
    if not tdist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        tdist.init_process_group(backend, timeout=_group_timeout)
    return World(tdist.get_rank(), tdist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def is_main() -> bool:
    return world().is_main


def shard(rows: np.ndarray) -> tuple[np.ndarray, float]:
    """This rank's share of a global micro-batch and its loss weight (see the module docstring)."""
    w = world()
    if not w.enabled:
        return rows, 1.0
    mine = rows[w.rank :: w.size]
    if len(mine) == 0:
        return rows[:1], 0.0
    return mine, w.size * len(mine) / len(rows)


def broadcast_from_main(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on rank 0 only and give its result to every rank; an exception on rank 0 is re-raised on
    every rank (the same type when it is a UserError, so every rank exits with the same one-line message)."""
    w = world()
    if not w.enabled:
        return fn()
    from ..errors import UserError

    box: list[Any] = [None]
    if w.is_main:
        try:
            box[0] = ("ok", fn())
        except UserError as e:
            box[0] = ("user_error", str(e))
        except BaseException as e:  # noqa: BLE001 - the other ranks must not wait forever
            box[0] = ("error", f"{type(e).__name__}: {e}")
            tdist.broadcast_object_list(box, src=0)
            raise
    tdist.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if kind == "ok":
        return value
    if kind == "user_error":
        raise UserError(value)
    raise RuntimeError(f"rank 0 failed: {value}")


def all_reduce_mean_(tensors: list[torch.Tensor]) -> None:
    """Average tensors across ranks in place (one flattened all-reduce)."""
    w = world()
    if not w.enabled or not tensors:
        return
    flat = _flattened(tensors)
    tdist.all_reduce(flat)
    flat /= w.size
    _unflatten_into_(flat, tensors)


def _flattened(tensors: list[torch.Tensor]) -> torch.Tensor:
    """One fp32 buffer of ``tensors``' elements, in order (what one all-reduce takes)."""
    return torch.cat([t.reshape(-1).float() for t in tensors])


def _unflatten_into_(flat: torch.Tensor, tensors: list[torch.Tensor]) -> None:
    """Copy :func:`_flattened`'s buffer back into ``tensors``, each in its own shape and dtype."""
    offset = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[offset : offset + n].view_as(t).to(t.dtype))
        offset += n


BUCKET_BYTES = 25 * 2**20  # as DistributedDataParallel's bucket_cap_mb


class BucketedGradientAverage:
    """The gradient average of parameters DDP does not hold (a student whose losses leave parameters without
    gradient, LAD's gates), overlapped with the backward that makes the gradients.

    The parameters (those that train) are cut into buckets of about :data:`BUCKET_BYTES` of fp32, in reverse order
    (backward makes the last layers' gradients first), one device and dtype per bucket. During the backward of a
    step's last micro-batch (:meth:`arm`), each parameter's post-accumulate-grad hook marks it ready, and each
    bucket is all-reduced asynchronously as soon as it and every bucket before it are ready: buckets are launched
    in the same order on every rank whatever order a rank's backward made them in (collectives must match).
    :meth:`finish` (before unscaling and clipping) launches what is left, waits, and writes ``sum / world`` back
    into each gradient. Parameters the first step left without gradient (hidden losses only: the pooler and
    classifier; they are left out on every rank alike) are taken out of the buckets after it, as DDP rebuilds its
    buckets after its first step, so they never hold a bucket back; should one get a gradient later it is averaged
    by :meth:`finish`, after the buckets.

    The same average as :func:`all_reduce_mean_` of the same gradients, bit for bit on two ranks (each element is
    one fp32 sum of the same two values, divided by the same size); on more ranks a ring all-reduce may add in
    another order per bucket than over one flat buffer: a rounding difference, not another average."""

    def __init__(self, params: list[torch.nn.Parameter], bucket_bytes: int = BUCKET_BYTES):
        self.size = world().size
        self.bucket_bytes = bucket_bytes
        self.params = [p for p in params if p.requires_grad]
        # torch leaves Tensor.register_post_accumulate_grad_hook unannotated; it returns a RemovableHandle
        self.handles: list[RemovableHandle] = [
            p.register_post_accumulate_grad_hook(self._ready)  # type: ignore[no-untyped-call]
            for p in self.params
        ]
        self.armed, self.learned = False, False
        self._cut(self.params)

    def _cut(self, params: list[torch.nn.Parameter]) -> None:
        """Buckets of ``params``, last parameter first; the others of :attr:`params` are averaged after them."""
        self.buckets: list[list[torch.nn.Parameter]] = []
        filled: list[int] = []  # each bucket's bytes
        open_bucket: dict[tuple[torch.device, torch.dtype], int] = {}  # (device, dtype): the bucket that fills now
        for p in reversed(params):
            key = (p.device, p.dtype)
            i = open_bucket.get(key)
            if i is None or filled[i] + 4 * p.numel() > self.bucket_bytes:
                i = open_bucket[key] = len(self.buckets)
                self.buckets.append([])
                filled.append(0)
            self.buckets[i].append(p)
            filled[i] += 4 * p.numel()
        self.bucket_of = {p: i for i, b in enumerate(self.buckets) for p in b}
        self.rest = [p for p in self.params if p not in self.bucket_of]
        self._reset()

    def _reset(self) -> None:
        self.missing = [len(b) for b in self.buckets]
        self.launched: list[tuple[tdist.Work | None, torch.Tensor | None, list[torch.Tensor]]] = []

    def arm(self) -> None:
        """The next backward is the step's last: average the gradients as they become ready."""
        self.armed = True

    def _ready(self, p: torch.nn.Parameter) -> None:
        i = self.bucket_of.get(p)
        if not self.armed or i is None:
            return
        self.missing[i] -= 1
        while len(self.launched) < len(self.buckets) and self.missing[len(self.launched)] == 0:
            self._launch(self.buckets[len(self.launched)])

    def _launch(self, params: list[torch.nn.Parameter]) -> None:
        grads = [p.grad for p in params if p.grad is not None]
        flat = _flattened(grads) if grads else None
        self.launched.append((tdist.all_reduce(flat, async_op=True) if flat is not None else None, flat, grads))

    def finish(self) -> None:
        """Launch what is not launched yet (in bucket order, then the parameters outside the buckets), wait for
        every all-reduce, write the averages back; ready for the next step."""
        for i in range(len(self.launched), len(self.buckets)):
            self._launch(self.buckets[i])
        if self.rest:
            self._launch(self.rest)
        for work, flat, grads in self.launched:
            if work is None:
                continue
            assert flat is not None  # an all-reduce (work) was launched on it
            work.wait()
            flat /= self.size
            _unflatten_into_(flat, grads)
        self.armed = False
        if not self.learned:
            self.learned = True
            learning = [p for p in self.params if p.grad is not None]
            if len(learning) < len(self.params):
                self._cut(learning)
                return
        self._reset()

    def remove(self) -> None:
        """Take the hooks off the parameters (the run is over)."""
        for h in self.handles:
            h.remove()


def all_reduce_sum_(t: torch.Tensor) -> torch.Tensor:
    if world().enabled:
        tdist.all_reduce(t)
    return t


def gather_batches(parts: list[tuple[np.ndarray, np.ndarray]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every rank's (rows, values) pairs, on every rank."""
    w = world()
    if not w.enabled:
        return parts
    out: list[Any] = [None] * w.size
    tdist.all_gather_object(out, parts)
    return [p for rank_parts in out for p in rank_parts]


def needs_buffer_broadcast(model: torch.nn.Module) -> bool:
    """Whether DDP must copy rank 0's buffers to every rank before each forward: only where training can change a
    buffer, i.e. a norm's running statistics (BatchNorm's floating-point ``running_mean``/``running_var``). Every
    family's students and teachers here hold integer index constants only (the embeddings' ``position_ids``, and
    ``token_type_ids`` except DistilBERT's and DeBERTa-v2's), made alike on every rank and never written
    (tests/test_distributed.py checks both for every family), so nothing is broadcast: no extra collective
    per forward."""
    return any(b.is_floating_point() for b in model.buffers())


def wrap_ddp(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(
        model,
        device_ids=[device.index] if device.type == "cuda" else None,
        broadcast_buffers=needs_buffer_broadcast(model),
    )


def silence_other_ranks() -> None:
    """Ranks other than 0 print nothing to stdout (rank 0 speaks for the job); errors still reach stderr. Read
    from torchrun's environment (``RANK``), so the process group is not created before the command's flags (its
    timeout) are known."""
    if torchrun_rank() not in (None, 0):
        import sys

        sys.stdout = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - for the life of the process


def close(synchronize: bool = False) -> bool:
    """End the process group (if this process opened one); returns whether it did. ``synchronize`` (a run that
    finished normally on every rank): wait for all ranks first, so no rank tears Gloo down while another (rank 0
    writing its last checkpoint) still holds a connection. Objects that still hold the group (a finished
    trainer's DDP wrapper in a reference cycle) are collected first, while every rank is still connected."""
    if not (tdist.is_available() and tdist.is_initialized()):
        return False
    import gc

    gc.collect()
    if synchronize:
        tdist.barrier()
    tdist.destroy_process_group()
    return True


def exit_process(code: int) -> None:
    """End a torchrun worker whose process group is closed with ``code``, without the interpreter's shutdown.

    Why: in torch 2.13 a DistributedDataParallel wrapper leaves its process group alive in C++ after the wrapper,
    every Python reference and ``destroy_process_group`` are gone (Gloo's threads ``gloo_tcp_loop`` and two
    ``pt_gloo_runloop`` are still running; without DDP the same sequence stops them: doc/methods.md). Those
    threads then run while the interpreter finalises, and about one run in fifteen on 2 CPU processes ended
    with ``terminate called without an active exception`` (SIGABRT) on a rank that had finished everything, so
    torchrun reported a good run as failed. Every file is written and fsync'ed, the TensorBoard writer closed and
    the group destroyed by now: flush what was printed and leave with the run's status, before the finalisation
    those threads could race with."""
    import sys

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
