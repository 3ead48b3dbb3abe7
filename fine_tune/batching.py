"""Token batches: the tokenisation cache, padding (dynamic or fixed) and the shuffled micro-batch stream
(optionally length-grouped, ``--group_by_length``).

Each (tokenizer, data file, max_seq_len) is tokenised once and cached under ``{data_root}/cache/``; the
training loop only gathers and pads pre-computed ids. Batches are padded to their longest member
(``padding="dynamic"``) or to ``max_seq_len`` (``"max_length"``: the original, whose layer-wise losses and LAD
gate LayerNorm over [max_seq_len, D] include padding positions). Both give the same logits up to float rounding
because padding positions are masked out of attention.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .io_utils import atomic_torch_save, sha256_text, writable
from .tasks.example import Example, examples_digest

CACHE_VERSION = 1


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A hash that changes whenever the tokenizer would produce different ids."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        spec = json.loads(backend.to_str())
        spec.pop("truncation", None), spec.pop("padding", None)  # call-time settings, not the tokenizer
        body = json.dumps(spec, sort_keys=True)
    else:
        body = json.dumps(sorted(tokenizer.get_vocab().items()))
    return sha256_text(type(tokenizer).__name__ + "\n" + body)[:16]


@dataclass
class Features:
    """Token ids of a list of examples, stored flat (one int32 array + offsets) without padding."""

    input_ids: np.ndarray  # int32, all rows concatenated
    token_type_ids: np.ndarray  # int8
    offsets: np.ndarray  # int64, len n + 1
    labels: np.ndarray | None  # int64 or None when the split is unlabelled

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def head(self, n: int) -> Features:
        n = min(n, len(self))
        end = self.offsets[n]
        return Features(
            self.input_ids[:end],
            self.token_type_ids[:end],
            self.offsets[: n + 1],
            None if self.labels is None else self.labels[:n],
        )

    def to_state(self) -> dict[str, Any]:
        return {
            "version": CACHE_VERSION,
            "input_ids": torch.from_numpy(self.input_ids),
            "token_type_ids": torch.from_numpy(self.token_type_ids),
            "offsets": torch.from_numpy(self.offsets),
            "labels": None if self.labels is None else torch.from_numpy(self.labels),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Features:
        labels = state["labels"]
        return cls(
            state["input_ids"].numpy(),
            state["token_type_ids"].numpy(),
            state["offsets"].numpy(),
            None if labels is None else labels.numpy(),
        )


def tokenize(
    tokenizer: Any,
    examples: Sequence[Example],
    max_seq_len: int,
    chunk: int = 4096,
    progress: bool = False,
    regression: bool = False,
) -> Features:
    """Tokenise (text, text_pair) with truncation 'longest_first' to ``max_seq_len`` (as the original). The labels:
    class indices (int64), or scores (float32) for a ``regression`` task (the task's ``Task.regression``)."""
    from .progress import progress as progress_bar

    ids: list[np.ndarray] = []
    types: list[np.ndarray] = []
    lengths = np.zeros(len(examples), dtype=np.int64)
    pairs = examples[0].text_pair is not None if examples else False
    bar = progress_bar(total=len(examples), desc="tokenising", unit="rows", enabled=progress, leave=False)
    for start in range(0, len(examples), chunk):
        part = examples[start : start + chunk]
        enc = tokenizer(
            [e.text for e in part],
            [e.text_pair or "" for e in part] if pairs else None,
            truncation=True,
            max_length=max_seq_len,
            return_attention_mask=False,
            return_token_type_ids=True,
        )
        # one flat array per chunk (not one per row): the conversion costs a fraction of the tokenisation
        n = np.fromiter(map(len, enc["input_ids"]), dtype=np.int64, count=len(part))
        lengths[start : start + len(part)] = n
        total = int(n.sum())
        ids.append(np.fromiter(chain.from_iterable(enc["input_ids"]), dtype=np.int32, count=total))
        types.append(np.fromiter(chain.from_iterable(enc["token_type_ids"]), dtype=np.int8, count=total))
        bar.update(len(part))
    bar.close()
    offsets = np.zeros(len(examples) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    labels = None
    if examples and examples[0].label is not None:
        if not regression and any(isinstance(e.label, float) for e in examples):
            raise ValueError("scores as labels of a task that is not a regression task (pass regression=True)")
        labels = np.asarray([e.label for e in examples], dtype=np.float32 if regression else np.int64)

    def cat(xs: list[np.ndarray], dt: type[np.generic]) -> np.ndarray:
        return np.concatenate(xs) if xs else np.zeros(0, dtype=dt)

    return Features(cat(ids, np.int32), cat(types, np.int8), offsets, labels)


def cached_features(
    cache_dir: Path, tokenizer: Any, examples: Sequence[Example], max_seq_len: int, *, regression: bool
) -> Features:
    """Tokenise once per (tokenizer, rows' content, max_seq_len); reuse afterwards.

    The rows are identified by their content (:func:`~fine_tune.tasks.example.examples_digest`), not by the file
    they came from: a changed data file, task definition (label order, columns) or ``--max_examples`` is a miss.
    The cache file is written atomically, so two runs sharing it at the same moment both end with a complete file.
    """
    key = sha256_text(f"{tokenizer_fingerprint(tokenizer)}|{examples_digest(examples)}|{max_seq_len}|v{CACHE_VERSION}")[
        :24
    ]
    path = Path(cache_dir) / f"features-{key}.pt"
    if path.is_file():
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            if state.get("version") == CACHE_VERSION:
                return Features.from_state(state)
        except Exception:  # a corrupt cache file is rebuilt, never trusted
            pass
    features = tokenize(tokenizer, examples, max_seq_len, progress=len(examples) > 20000, regression=regression)
    if writable(path.parent):  # a read-only data root only costs time: nothing is written there
        try:
            atomic_torch_save(features.to_state(), path)
        except OSError:
            pass
    return features


class Collator:
    """Gathers rows into padded tensors: ``input_ids``, ``token_type_ids``, ``attention_mask``, ``labels``,
    ``index`` (row positions) and, for logits data sets, ``teacher_logits``.

    ``layout(lengths, width)``: the models' packing of the batch, built here on the host from the lengths this
    collator knows (``batch["model_kwargs"]["layout"]``, which the engine hands to the model;
    models/padding_free.TrainingForwards.layout). ``pin_memory``: page-locked
    tensors, so the copy to a GPU does not block the host."""

    def __init__(
        self,
        features: Features,
        pad_token_id: int,
        max_seq_len: int,
        padding: str = "dynamic",
        teacher_logits: np.ndarray | None = None,
        layout: Callable[[np.ndarray, int], Any] | None = None,
        pin_memory: bool = False,
    ) -> None:
        if padding not in ("dynamic", "max_length"):
            raise ValueError(padding)
        self.layout = layout
        self.pin_memory = pin_memory
        self.f = features
        self.pad = pad_token_id
        self.max_seq_len = max_seq_len
        self.padding = padding
        self.teacher_logits = None if teacher_logits is None else torch.as_tensor(teacher_logits, dtype=torch.float32)
        self._lengths = features.lengths()

    def __call__(self, rows: np.ndarray) -> dict[str, Any]:
        rows = np.asarray(rows, dtype=np.int64)
        lengths = self._lengths[rows]
        width = int(lengths.max()) if self.padding == "dynamic" else self.max_seq_len
        n = len(rows)
        ids = np.full((n, width), self.pad, dtype=np.int64)
        types = np.zeros((n, width), dtype=np.int64)
        mask = np.zeros((n, width), dtype=np.int64)
        starts = self.f.offsets[rows]
        for i, (s, ln) in enumerate(zip(starts, lengths)):
            ids[i, :ln] = self.f.input_ids[s : s + ln]
            types[i, :ln] = self.f.token_type_ids[s : s + ln]
            mask[i, :ln] = 1
        batch: dict[str, Any] = {
            "input_ids": torch.from_numpy(ids),
            "token_type_ids": torch.from_numpy(types),
            "attention_mask": torch.from_numpy(mask),
            "index": torch.from_numpy(rows),
        }
        if self.f.labels is not None:
            batch["labels"] = torch.from_numpy(self.f.labels[rows])
        if self.teacher_logits is not None:
            batch["teacher_logits"] = self.teacher_logits[torch.from_numpy(rows)]
        if self.pin_memory:
            batch = {k: v.pin_memory() for k, v in batch.items()}
        if self.layout is not None:
            layout = self.layout(lengths, width)
            batch["model_kwargs"] = {"layout": layout.pin_memory() if self.pin_memory else layout}
        return batch


def micro_batches_per_epoch(num_rows: int, micro_batch: int, drop_last: bool = False) -> int:
    """The micro-batches of one epoch of :class:`MicroBatchStream`: ``ceil(num_rows / micro_batch)``, or with
    ``drop_last`` the ``num_rows // micro_batch`` full ones (the plan's --num_epochs counts in them too)."""
    return num_rows // micro_batch if drop_last else math.ceil(num_rows / micro_batch)


class MicroBatchStream:
    """The training data order: each epoch a fresh shuffle (seeded by ``seed`` and the epoch number),
    cut into micro-batches of ``micro_batch`` rows; epochs follow each other without a break, so an accumulation
    window can cross an epoch boundary (the original's behaviour).

    ``drop_last=False`` (the original's): the epoch's last micro-batch holds the ``num_rows % micro_batch`` rows
    left over, so ``ceil(num_rows / micro_batch)`` micro-batches per epoch. ``drop_last=True`` (TinyBERT's
    released loop, which skips a batch smaller than its batch size): only the ``num_rows // micro_batch`` full
    micro-batches; the rows at the end of the epoch's shuffle that do not fill one are left out of that epoch (others
    each epoch, as the shuffle changes). The micro-batch is the global one: under torchrun each rank then takes its
    share of a full micro-batch (engine/distributed.shard).

    The position is one integer (micro-batches consumed), so a run can restart anywhere.
    """

    def __init__(self, num_rows: int, micro_batch: int, seed: int, position: int = 0, drop_last: bool = False) -> None:
        if drop_last and num_rows < micro_batch:
            raise ValueError(f"{num_rows} rows hold no full micro-batch of {micro_batch} (drop_last)")
        self.n = num_rows
        self.mb = micro_batch
        self.seed = seed
        self.position = position
        self.drop_last = drop_last
        self.per_epoch = micro_batches_per_epoch(num_rows, micro_batch, drop_last)
        self._epoch = -1
        self._perm: np.ndarray | None = None

    @property
    def epoch(self) -> int:
        return self.position // self.per_epoch

    def _generator(self, epoch: int) -> torch.Generator:
        """The epoch's seeded generator: its first draw is the epoch's shuffle of the rows."""
        return torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            self._perm = torch.randperm(self.n, generator=self._generator(epoch)).numpy()
            self._epoch = epoch
        assert self._perm is not None  # drawn above on the first call (self._epoch starts at -1)
        return self._perm

    def _batch(self, epoch: int, i: int) -> np.ndarray:
        """Micro-batch ``i`` of ``epoch``."""
        return self._permutation(epoch)[i * self.mb : (i + 1) * self.mb]

    def next(self) -> np.ndarray:
        epoch, i = divmod(self.position, self.per_epoch)
        self.position += 1
        return self._batch(epoch, i)

    def __iter__(self) -> Iterator[np.ndarray]:
        while True:
            yield self.next()


class LengthGroupedMicroBatchStream(MicroBatchStream):
    """``--group_by_length``: micro-batches of rows of similar length, so dynamic padding pads little. It
    changes the training order (and so the trajectory) compared with :class:`MicroBatchStream`.

    Epoch ``e`` (a pure function of ``seed`` and ``e``):

    1. the same shuffle as :class:`MicroBatchStream`: ``torch.randperm(num_rows)`` seeded with
       ``seed * 1_000_003 + e``;
    2. that permutation is cut into mega-batches of ``MEGA_BATCHES * micro_batch`` rows (50 micro-batches, as
       the Hugging Face Trainer's ``LengthGroupedSampler``); the last mega-batch may be shorter;
    3. each mega-batch is sorted by length, longest first (a stable sort, so ties keep their shuffled order),
       and cut into micro-batches of ``micro_batch`` rows; only the very last micro-batch of the epoch can
       be short (``drop_last=False``: ``num_rows % micro_batch`` rows, the shortest of the last mega-batch).
       ``drop_last=True``: the ``num_rows % micro_batch`` rows at the end of step 1's permutation are left out
       before the mega-batches are cut (the rows the plain stream leaves out), so every micro-batch is full;
    4. the order of the epoch's ``ceil(num_rows / micro_batch)`` micro-batches (``drop_last``:
       ``num_rows // micro_batch``) is shuffled by a second ``torch.randperm`` drawn from the same generator, right
       after step 1's (so the longest micro-batches are not all first); the short micro-batch can land anywhere in
       the epoch.

    Every row appears exactly once per epoch (``drop_last``: at most once); epochs follow each other without a
    break, and ``position`` (micro-batches consumed) restarts the stream anywhere, as for :class:`MicroBatchStream`.
    """

    MEGA_BATCHES = 50

    def __init__(
        self,
        num_rows: int,
        micro_batch: int,
        seed: int,
        lengths: np.ndarray,
        position: int = 0,
        drop_last: bool = False,
    ) -> None:
        lengths = np.asarray(lengths)
        if lengths.shape != (num_rows,):
            raise ValueError(f"lengths has shape {lengths.shape}, expected ({num_rows},)")
        super().__init__(num_rows, micro_batch, seed, position, drop_last)
        self.lengths = lengths
        self._batches: list[np.ndarray] = []

    def _epoch_batches(self, epoch: int) -> list[np.ndarray]:
        if epoch != self._epoch:
            g = self._generator(epoch)
            perm = torch.randperm(self.n, generator=g).numpy()
            if self.drop_last:  # the rows that fill no micro-batch, as the plain stream leaves them out
                perm = perm[: self.per_epoch * self.mb]
            mega = self.MEGA_BATCHES * self.mb
            batches: list[np.ndarray] = []
            for start in range(0, self.n, mega):
                chunk = perm[start : start + mega]
                chunk = chunk[np.argsort(-self.lengths[chunk].astype(np.int64), kind="stable")]
                batches.extend(chunk[i : i + self.mb] for i in range(0, len(chunk), self.mb))
            order = torch.randperm(len(batches), generator=g).tolist()
            self._batches = [batches[j] for j in order]
            self._epoch = epoch
        return self._batches

    def _batch(self, epoch: int, i: int) -> np.ndarray:
        return self._epoch_batches(epoch)[i]


def make_stream(
    num_rows: int, micro_batch: int, seed: int, lengths: np.ndarray | None = None, *, drop_last: bool = False
) -> MicroBatchStream:
    """The training order: :class:`MicroBatchStream` (the original's), or with ``lengths`` (``--group_by_length``)
    :class:`LengthGroupedMicroBatchStream`; ``drop_last``: full micro-batches only. Both expose ``position`` (saved
    in the resume state) and ``next()``."""
    if lengths is not None:
        return LengthGroupedMicroBatchStream(num_rows, micro_batch, seed, lengths, drop_last=drop_last)
    return MicroBatchStream(num_rows, micro_batch, seed, drop_last=drop_last)


def sequential_batches(num_rows: int, batch_size: int, lengths: np.ndarray | None = None) -> list[np.ndarray]:
    """Evaluation order. With ``lengths``, rows are sorted by length so each batch pads little; callers
    restore file order through the batch's ``index``."""
    order = np.argsort(lengths, kind="stable") if lengths is not None else np.arange(num_rows)
    return [order[i : i + batch_size] for i in range(0, num_rows, batch_size)]
