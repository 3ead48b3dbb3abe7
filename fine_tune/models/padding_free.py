"""Padding-free BERT: the position-wise layers run on the real tokens only.

In a padded batch [B, S] with N real tokens, every projection, feed-forward layer, LayerNorm, residual add and
dropout of a BERT layer works row by row; on padding rows it is wasted work whose result nothing uses when the
loss ignores padding positions. This forward keeps the hidden states packed as [N, D] (the technique of
"unpadded" BERT implementations, e.g. Zeng et al., "Boosting distributed training performance of the Unpadded
BERT model", 2022, and MosaicBERT) and pads only around the attention product, where the sequence structure
matters, and there only as far as each group of similar lengths needs::

    x = LN(E_word[ids] + E_pos[pos] + E_type[types])                       # [N, D], real tokens only
    for each layer:
        [Q K V] = x [W_q W_k W_v] + b                                       # one [N, 3D] matrix multiply
        for each bucket of sequences of similar length (padded to its longest, L_b):
            A_b = unpad(softmax(pad(Q) pad(K)^T / sqrt(d_h) + mask) pad(V)) # attention on [B_b, H, L_b, L_b]
        x' = LN(x + A W_o + b_o)
        x  = LN(x' + GELU(x' W_1 + b_1) W_2 + b_2)
    logits = W_c tanh(W_p x[CLS] + b_p) + b_c

The buckets (``plan_buckets``) split the length-sorted batch where that saves more attention work than a bucket
costs: a BoolQ batch padded to 256 whose rows hold from a few dozen to 256 tokens runs its attention on a few blocks of
similar widths instead of [32, 12, 256, 256] (sum of B_b L_b^2 instead of B S^2).

It computes exactly what the Hugging Face ``BertForSequenceClassification`` computes on the real tokens (same
weights, same module objects; float rounding aside: tested), so a checkpoint is the same either way. Hidden
states are returned re-padded to [B, S, D] with zeros at padding positions: use it only where the loss ignores
those positions (every loss under ``--padding dynamic``; not the original's full-sequence MSE under fixed
padding). Dropout masks are drawn for the real tokens only, and on CPU with models/dropout.py's cheaper
generator (the same Bernoulli masks, p rounded to a multiple of 2^-16), so a training run draws different
(equally distributed) masks than the padded forward.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, cast

import numpy as np
import torch
import torch.nn.functional as F

from ..engine.device import non_blocking
from ..engine.protocol import EVERY_LAYER, PLAIN_RECORD, LayerRecord
from .checkpointing import checkpointed, enable_hf_checkpointing
from .dropout import dropout
from .families import FAMILIES
from .teacher_set import TeacherSet

if TYPE_CHECKING:  # importing them loads transformers' modeling utilities (seconds): a model built loads them
    from transformers import BertForSequenceClassification, PretrainedConfig, PreTrainedModel


def supports_padding_free(config: object) -> bool:
    """A family whose record says ``padding_free`` (BERT), with absolute positions and no decoder/cross-attention
    (ALBERT and others: the padded forward)."""
    family = FAMILIES.get(getattr(config, "model_type", ""))  # (no family is named "")
    return (
        family is not None
        and family.padding_free
        and getattr(config, "position_embedding_type", "absolute") == "absolute"
        and not getattr(config, "is_decoder", False)
        and not getattr(config, "add_cross_attention", False)
    )


# What one attention bucket costs beyond its work, in per-head score elements (one query-key pair of one head):
# the extra kernel launches and Python of a bucket, forward and backward. Measured on a 2-core CPU with MiniLM
# (bench/bench_attention_buckets.py); a GPU launch costs far more next to its fast element-wise kernels.
BUCKET_OVERHEAD = {"cpu": 8192, "cuda": 1 << 18}


@dataclass
class Bucket:
    """Sequences [r0, r1) of the length-sorted batch, padded to the longest of them (``length``) for attention;
    their tokens are packed rows [start, stop)."""

    rows: int
    length: int
    start: int
    stop: int
    index: torch.Tensor | None  # real positions in the bucket's [rows * length] grid; None: no padding in it
    pad_index: torch.Tensor | None  # the other positions; None: no padding, or the compiled plan
    key_mask: torch.Tensor | None  # [rows, length], True = attend; None: every key is real


def plan_buckets(lengths: list[int], head_dim: int, overhead: float) -> list[tuple[int, int]]:
    """Split lengths sorted in descending order into runs [i, j) that minimise the attention cost

        sum over buckets of  rows * L * (L + 3 * head_dim) + overhead,    L = the bucket's longest length,

    (scores, softmax and dropout per query-key pair; padding and unpadding Q, K, V per position) by dynamic
    programming over the split points (O(B^2) for a batch of B). ``overhead=inf``: one bucket."""
    n = len(lengths)
    if overhead == float("inf"):
        return [(0, n)] if n else []
    best = [0.0] + [float("inf")] * n
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(j):
            width = lengths[i]
            c = best[i] + (j - i) * width * (width + 3 * head_dim) + overhead
            if c < best[j]:
                best[j], cut[j] = c, i
    runs, j = [], n
    while j:
        runs.append((cut[j], j))
        j = cut[j]
    return runs[::-1]


def check_right_padding(attention_mask: torch.Tensor) -> np.ndarray:
    """The sequence lengths of a right-padded mask (real tokens first, then padding, at least one real token),
    read back to the host; anything else is a ValueError. Costs host-device syncs: training batches bring their
    lengths from the collator instead (:class:`PackedLayout`)."""
    mask = attention_mask.bool()
    lengths = mask.sum(1)
    grid = torch.arange(mask.shape[1], device=mask.device)
    if not torch.equal(mask, grid < lengths[:, None]) or bool((lengths == 0).any()):
        raise ValueError(
            "padding-free forward: every sequence must be its real tokens first, then padding "
            "(right padding, at least one real token)"
        )
    return lengths.cpu().numpy()


def _host_index(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))


class PackedLayout:
    """The packing of one right-padded batch, computed on the host from its sequence lengths (which the
    collator knows) with NumPy: no host-device sync. Built once per batch and handed to the teacher and the
    student (:meth:`on` copies its index tensors to a model's device, once per device, without blocking).

    ``overhead`` (default: :data:`BUCKET_OVERHEAD` of ``device_type``) prices a bucket; ``inf`` gives one bucket.
    ``compiled``: the plan of the compiled forward, one graph for every batch (:func:`mark_sizes`): one bucket
    with index and key mask even where no row is padded, and no list of padding positions (a batch without
    padding would make it empty, a size TorchDynamo specialises): padding rows are zeroed with the rest."""

    def __init__(
        self,
        lengths: np.ndarray | Sequence[int],
        seq: int,
        head_dim: int = 64,
        device_type: str = "cpu",
        overhead: float | None = None,
        compiled: bool = False,
    ) -> None:
        lengths = np.asarray(lengths, dtype=np.int64)
        if lengths.ndim != 1 or (lengths < 1).any() or (lengths > seq).any():
            raise ValueError(f"padding-free forward: lengths must lie in 1..{seq}")
        self.batch, self.seq = len(lengths), seq
        self.compiled = compiled
        if compiled:
            overhead = float("inf")
        elif overhead is None:
            overhead = BUCKET_OVERHEAD.get(device_type, BUCKET_OVERHEAD["cuda"])
        order = np.argsort(-lengths, kind="stable")  # ties keep batch order
        sorted_lens = lengths[order]
        starts = np.zeros(self.batch + 1, dtype=np.int64)
        np.cumsum(sorted_lens, out=starts[1:])
        positions = np.arange(int(starts[-1]), dtype=np.int64) - np.repeat(starts[:-1], sorted_lens)
        self.index = _host_index(np.repeat(order, sorted_lens) * seq + positions)  # [N] positions in B * S
        self.pad_index = None if compiled else _host_index(np.flatnonzero(np.arange(seq)[None, :] >= lengths[:, None]))
        self.positions = _host_index(positions)  # position id of each real token
        first = np.empty(self.batch, dtype=np.int64)
        first[order] = starts[:-1]  # packed row of each [CLS], in batch order
        self.first = _host_index(first)
        self.buckets: list[Bucket] = []
        lens = sorted_lens.tolist()
        for r0, r1 in plan_buckets(lens, head_dim, overhead):
            width = lens[r0]
            index = pad_index = key_mask = None
            if lens[r1 - 1] != width or overhead == float("inf"):
                local = np.arange(width)[None, :] < sorted_lens[r0:r1, None]  # [rows, width]
                index = _host_index(np.flatnonzero(local))
                pad_index = None if compiled else _host_index(np.flatnonzero(~local))
                key_mask = torch.from_numpy(local)
            self.buckets.append(Bucket(r1 - r0, width, int(starts[r0]), int(starts[r1]), index, pad_index, key_mask))
        self._placed: dict[torch.device, Packing] = {}

    def pin_memory(self) -> PackedLayout:
        """Page-locked host tensors, so that :meth:`on` copies to a GPU without blocking (CUDA only)."""
        for name in ("index", "pad_index", "positions", "first"):
            if getattr(self, name) is not None:
                setattr(self, name, getattr(self, name).pin_memory())
        self.buckets = [
            Bucket(
                b.rows,
                b.length,
                b.start,
                b.stop,
                *(None if t is None else t.pin_memory() for t in (b.index, b.pad_index, b.key_mask)),
            )
            for b in self.buckets
        ]
        return self

    @torch.compiler.disable
    def on(self, attention_mask: torch.Tensor) -> Packing:
        """This layout on the device of ``attention_mask`` (the batch a model receives), copied there once."""
        device = attention_mask.device
        if device not in self._placed:
            self._placed[device] = Packing.placed(self, device, attention_mask)
        return self._placed[device]


class Packing:
    """Index bookkeeping of one batch with right padding on a model's device: which of the B * S positions hold
    real tokens, and the attention buckets. Real tokens are packed sequence by sequence in order of decreasing
    length, so each bucket of similar lengths is one contiguous block of packed rows.

    ``Packing(attention_mask)`` reads the lengths back from the mask (host-device syncs; for evaluation and
    direct calls); training batches come with a :class:`PackedLayout` built on the host."""

    def __init__(self, attention_mask: torch.Tensor, head_dim: int = 64, overhead: float | None = None) -> None:
        layout = PackedLayout(
            check_right_padding(attention_mask), attention_mask.shape[1], head_dim, attention_mask.device.type, overhead
        )
        self._copy(layout, attention_mask.device, attention_mask)

    @classmethod
    def placed(cls, layout: PackedLayout, device: torch.device, attention_mask: torch.Tensor) -> Packing:
        pk = cls.__new__(cls)
        pk._copy(layout, device, attention_mask)
        return pk

    def _copy(self, layout: PackedLayout, device: torch.device, attention_mask: torch.Tensor) -> None:
        def move(t):
            return None if t is None else t.to(device, non_blocking=non_blocking(t.device, device))

        self.shape_ref = attention_mask  # [B, S]: pad() takes the batch's shape from a tensor (symbolic when compiled)
        self.index, self.pad_index = move(layout.index), move(layout.pad_index)
        self.positions, self.first = move(layout.positions), move(layout.first)
        self.buckets = [
            Bucket(b.rows, b.length, b.start, b.stop, move(b.index), move(b.pad_index), move(b.key_mask))
            for b in layout.buckets
        ]

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """[B, S, ...] -> [N, ...]"""
        return _Pack.apply(x.flatten(0, 1), self.index, self.pad_index)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """[N, ...] -> [B, S, ...] with zeros at padding positions (differentiable)."""
        batch, seq = self.shape_ref.shape
        return _Pad.apply(x, self.index, self.pad_index, batch * seq).view(batch, seq, *x.shape[1:])

    def attention(
        self,
        qkv: torch.Tensor,
        heads: int,
        scale: float,
        dropout_p: float,
        record: list | None = None,
        head_major: bool = False,
    ) -> torch.Tensor:
        """Multi-head attention of packed [N, 3 * D] queries, keys and values, bucket by bucket: each bucket's
        sequences padded to its own longest length only. Returns the packed [N, D] context. A bucket's sizes
        are read from its tensors' shapes where it has them (one bucket with a key mask: the compiled plan).

        ``record`` (the attention-reading methods): appends this layer's (query, key, value). Over the padded
        grid (one bucket, no packing) they are [B, S, H, d_head] views of head-major [B, H, S, d_head] copies,
        made once and used by the attention too, so the losses' per-head products read them without copying;
        packed, the [N, 3 * D] projection itself (:class:`PaddingFree` pads it). ``head_major``: over the grid, the
        attention reads such a copy even unrecorded (in a forward that records some layers, every layer computes as
        when all are recorded: bit for bit the same results)."""
        d = qkv.shape[-1] // 3
        grid = len(self.buckets) == 1 and self.buckets[0].index is None
        if record is not None and not grid:
            record.append(qkv)
        parts = qkv.split([b.stop - b.start for b in self.buckets]) if len(self.buckets) > 1 else (qkv,)
        out = []
        for b, part in zip(self.buckets, parts):
            rows, length = b.key_mask.shape if b.key_mask is not None else (b.rows, b.length)
            if b.index is not None:
                part = _Pad.apply(part, b.index, b.pad_index, rows * length)
            if grid and (record is not None or head_major):  # one head-major copy, read by the attention and the losses
                q, k, v = part.view(rows, length, 3, heads, d // heads).permute(2, 0, 3, 1, 4).contiguous().unbind(0)
                if record is not None:
                    record.append((q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)))
            else:
                q, k, v = (
                    t.reshape(rows, length, heads, d // heads).transpose(1, 2)
                    for t in part.view(rows, length, 3 * d).chunk(3, dim=-1)
                )
            ctx = _attention(q, k, v, None if b.key_mask is None else b.key_mask[:, None, None, :], scale, dropout_p)
            ctx = ctx.transpose(1, 2).reshape(rows * length, d)
            out.append(_Pack.apply(ctx, b.index, b.pad_index) if b.index is not None else ctx)
        return torch.cat(out) if len(out) > 1 else out[0]


class GridLayout:
    """The host's knowledge of a batch for :class:`FullGrid`: whether every position is real (no key mask).
    ``compiled``: a key mask all the same (one graph for batches with and without padding)."""

    def __init__(self, all_real: bool, compiled: bool = False) -> None:
        self.all_real, self.compiled = all_real, compiled

    def pin_memory(self) -> GridLayout:
        return self

    @torch.compiler.disable
    def on(self, attention_mask: torch.Tensor) -> FullGrid:
        return FullGrid(attention_mask, self.all_real and not self.compiled)


class FullGrid(Packing):
    """The ``Packing`` interface over every position of the padded batch: rows are the B * S positions in order
    (padding positions included, as the original's full-sequence losses need them), one attention bucket with
    the batch's key mask. Any mask pattern is allowed. ``all_real`` (from the host: :class:`GridLayout`) saves
    reading the mask back."""

    def __init__(self, attention_mask: torch.Tensor, all_real: bool | None = None) -> None:
        batch, seq = attention_mask.shape
        self.shape_ref = attention_mask
        mask = attention_mask.bool()
        device = mask.device
        self.index = self.pad_index = None
        self.positions = torch.arange(seq, device=device).repeat(batch)
        self.first = torch.arange(batch, device=device) * seq
        if all_real is None:
            all_real = bool(mask.all())
        key_mask = None if all_real else mask
        self.buckets = [Bucket(batch, seq, 0, batch * seq, None, None, key_mask)]

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(0, 1)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(*self.shape_ref.shape, *x.shape[1:])


def _attention(q, k, v, key_mask, scale: float, dropout_p: float) -> torch.Tensor:
    """softmax(q k^T * scale, masked) v with dropout on the probabilities. PyTorch's fused kernels where they
    apply (no dropout, or CUDA); on CPU with dropout, where PyTorch's fallback draws its mask one element at a
    time, the same product written out with models/dropout.py's cheaper masks."""
    if dropout_p == 0.0 or q.device.type != "cpu":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, scale=scale, dropout_p=dropout_p)
    scores = torch.matmul(q * scale, k.transpose(-1, -2))
    if key_mask is not None:  # in place: the product's backward keeps its inputs, not its output
        scores.masked_fill_(~key_mask, float("-inf"))  # every row attends to at least its [CLS]
    return torch.matmul(dropout(scores.softmax(-1), dropout_p, True), v)


class _Pack(torch.autograd.Function):
    """rows ``index`` of x. The indices are unique, so the backward is a plain copy into zeros, not the
    accumulating scatter autograd would use for ``index_select`` (several times slower on CPU)."""

    @staticmethod
    def forward(ctx, x, index, pad_index):
        ctx.save_for_backward(index, pad_index)
        ctx.rows = x.shape[0]
        return x.index_select(0, index)

    @staticmethod
    def backward(ctx, grad):
        index, pad_index = ctx.saved_tensors
        return _scatter_rows(grad, index, pad_index, ctx.rows), None, None


class _Pad(torch.autograd.Function):
    """x copied into rows ``index`` of a zero tensor with ``rows`` rows; backward: the same rows of the grad."""

    @staticmethod
    def forward(ctx, x, index, pad_index, rows):
        ctx.save_for_backward(index)
        return _scatter_rows(x, index, pad_index, rows)

    @staticmethod
    def backward(ctx, grad):
        (index,) = ctx.saved_tensors
        return grad.index_select(0, index), None, None, None


def _scatter_rows(x: torch.Tensor, index: torch.Tensor, pad_index: torch.Tensor | None, rows) -> torch.Tensor:
    """[N, ...] into rows ``index`` of a new [rows, ...] tensor whose other rows (``pad_index``) are zero: only
    those rows are filled, cheaper than zeroing everything first; without ``pad_index`` (the compiled plan)
    everything is zeroed first."""
    if pad_index is None:
        return x.new_zeros(rows, *x.shape[1:]).index_copy_(0, index, x)
    out = x.new_empty(rows, *x.shape[1:]).index_copy_(0, index, x)
    return out.index_fill_(0, pad_index, 0) if len(pad_index) else out


@torch.compiler.disable
def mark_sizes(pk: Packing, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None) -> None:
    """Tell TorchDynamo how the compiled forward's inputs vary, so that one graph serves every batch of a run.
    By default it traces a size of 0 or 1 as a constant, and two sizes that happen to be equal in the first
    batch as one symbol: each a guard that a later batch fails (another graph). Here the batch size (1 for an
    epoch's tail or a one-row share under torchrun) is one unbacked size shared by every tensor that has it
    (``mark_unbacked``: never specialised, nothing guarded on it), and every other size (width, token count,
    bucket width: at least 2 for rows of two tokens or more, as every tokenized row is) a dynamic size of its own
    (``maybe_mark_dynamic``: no equality by coincidence). The compiled layouts hold no tensor whose size may be
    0 (no list of padding positions) and always a key mask."""
    from torch._dynamo.decorators import mark_unbacked, maybe_mark_dynamic

    (b,) = pk.buckets
    for t in (input_ids, token_type_ids, pk.shape_ref, pk.first, b.key_mask):
        if t is not None:
            mark_unbacked(t, 0, shape_id="rows")
    for t in (input_ids, token_type_ids, pk.shape_ref, b.key_mask):
        if t is not None:
            maybe_mark_dynamic(t, 1)
    for t in (pk.index, pk.positions, b.index):
        if t is not None:
            maybe_mark_dynamic(t, 0)


@dataclass
class PaddingFreeOutput:
    logits: torch.Tensor
    # [embeddings, layer 1, ..., layer L], each [B, S, D]; None at a layer the record does not keep
    hidden_states: tuple[torch.Tensor | None, ...] | None
    # per layer (query, key, value) of the layers recorded (None at the others): [B, S, D] (zeros at padding
    # positions) when packed, [B, S, H, d_head] views of head-major copies over the padded grid
    attention_inputs: tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None, ...] | None = None


def _embeddings(emb, input_ids, token_type_ids, pk: Packing) -> torch.Tensor:
    ids = pk.pack(input_ids)
    types = pk.pack(token_type_ids) if token_type_ids is not None else torch.zeros_like(ids)
    x = emb.word_embeddings(ids) + emb.token_type_embeddings(types) + emb.position_embeddings(pk.positions)
    return dropout(emb.LayerNorm(x), emb.dropout.p, emb.training)


def _layer(
    layer, x: torch.Tensor, pk: Packing, qkv_record: list | None = None, head_major: bool = False
) -> torch.Tensor:
    sa = layer.attention.self
    w = torch.cat([sa.query.weight, sa.key.weight, sa.value.weight])
    b = torch.cat([sa.query.bias, sa.key.bias, sa.value.bias])
    qkv = F.linear(x, w, b)  # [N, 3D]
    # the attention-reading methods (TinyBERT, MiniLM) read Q, K, V: qkv_record gets them (Packing.attention)
    attn = pk.attention(
        qkv, sa.num_attention_heads, sa.scaling, sa.dropout.p if sa.training else 0.0, qkv_record, head_major
    )  # [N, D]
    so = layer.attention.output
    x = so.LayerNorm(dropout(so.dense(attn), so.dropout.p, so.training) + x)
    inter = layer.intermediate.intermediate_act_fn(layer.intermediate.dense(x))
    out = layer.output
    return out.LayerNorm(dropout(out.dense(inter), out.dropout.p, out.training) + x)


class PaddingFree(torch.nn.Module):
    """Wraps a ``BertForSequenceClassification`` (its parameters, not copies) with the padding-free forward.
    Call it like the model: ``(input_ids, token_type_ids, attention_mask, output_hidden_states=...)``.

    ``packed=False``: the same layers over every position of the padded batch (``FullGrid``), for losses that
    read padding positions (the original's full-sequence hidden MSE, the fixed-length LAD gate): no work is
    skipped, but the fused Q/K/V projection and the cheaper CPU dropout masks still apply, and the outputs
    equal Hugging Face's at every position, padding included."""

    def __init__(
        self,
        model: torch.nn.Module,
        packed: bool = True,
        record_attention: bool = False,
        record: LayerRecord | None = None,
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        # a Hugging Face BertForSequenceClassification (any other model is refused next): its modules are read by name
        bert = cast("BertForSequenceClassification", model)
        if not supports_padding_free(bert.config):
            raise ValueError(f"padding-free forward supports BERT only, not {bert.config.model_type}")
        self.model = bert
        self.packed = packed
        # the layers whose outputs are kept (the method's LayerRecord): their hidden states, and their query/key/value
        # projections (the attention-reading methods), from the fused projection this forward computes anyway
        # (models/attention_capture.py does it for other forwards); record_attention: every layer's
        self.record = record if record is not None else EVERY_LAYER if record_attention else PLAIN_RECORD
        self.gradient_checkpointing = gradient_checkpointing  # each layer recomputed in the backward pass

    @property
    def config(self) -> PretrainedConfig:
        return self.model.config

    @torch.compiler.disable(recursive=False)
    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        return_dict: bool = True,
        layout: PackedLayout | GridLayout | None = None,
    ) -> PaddingFreeOutput:
        """``layout``: the batch's packing built on the host (:meth:`TrainingForwards.layout`); without it the
        packing is read from ``attention_mask`` (host-device syncs).

        Under torch.compile this method runs eagerly (it places the packing on the device and, with a compiled
        layout, marks its sizes: :func:`mark_sizes`) and :meth:`encode` is the compiled frame."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        cfg = self.model.config
        if layout is not None:
            pk = layout.on(attention_mask)
            if layout.compiled:
                mark_sizes(pk, input_ids, token_type_ids)
        else:
            pk = (
                Packing(attention_mask, head_dim=cfg.hidden_size // cfg.num_attention_heads)
                if self.packed
                else FullGrid(attention_mask)
            )
        return self.encode(input_ids, token_type_ids, pk, output_hidden_states)

    def encode(
        self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None, pk: Packing, output_hidden_states: bool
    ) -> PaddingFreeOutput:
        """The forward on a batch whose packing ``pk`` is on the model's device."""
        bert = self.model.bert
        x = _embeddings(bert.embeddings, input_ids, token_type_ids, pk)
        rec = self.record
        # only the layers the record keeps stay alive (padded as they come, so no packed copy waits beside them)
        hidden = [pk.pad(x) if rec.keeps_hidden(0) else None] if output_hidden_states else None
        attention: list | None = [] if rec.reads_attention else None
        for i, layer in enumerate(bert.encoder.layer, 1):
            qkv: list | None = [] if rec.records_attention(i) else None
            if self.gradient_checkpointing and torch.is_grad_enabled():
                x = checkpointed(partial(_layer, head_major=attention is not None), layer, x, pk, record=qkv)
            else:
                x = _layer(layer, x, pk, qkv, attention is not None)
            if attention is not None:
                attention.append(
                    None
                    if qkv is None
                    else qkv[0]
                    if isinstance(qkv[0], tuple)
                    else tuple(pk.pad(qkv[0]).chunk(3, dim=-1))
                )
            if hidden is not None:
                hidden.append(pk.pad(x) if rec.keeps_hidden(i) else None)
        pooler = bert.pooler
        assert pooler is not None  # a sequence classifier's BERT has its pooler
        pooled = pooler.activation(pooler.dense(x.index_select(0, pk.first)))
        logits = self.model.classifier(dropout(pooled, self.model.dropout.p, self.model.training))
        return PaddingFreeOutput(
            logits, None if hidden is None else tuple(hidden), None if attention is None else tuple(attention)
        )


@dataclass(frozen=True)
class TrainingForwards:
    """The modules a training run's forward passes go through, and which forward that is: ``packed`` (real tokens
    only), ``grid`` (this file's layers over the padded batch) or ``hugging_face`` (the model's own forward).

    When every model of the run takes this file's forward, :meth:`layout` builds each batch's packing on the host
    from the lengths the collator knows, once for teacher and student (``Collator(layout=...)``): the training
    step then makes no host-device sync to find its real tokens."""

    student: torch.nn.Module
    teacher: torch.nn.Module | None
    kind: str
    head_dim: int = 64
    device_type: str = "cpu"
    compile: bool = False

    def describe(self) -> str:
        return {"packed": ", padding-free forward", "grid": ", own BERT forward over the padded batch"}.get(
            self.kind, ""
        )

    @property
    def takes_layout(self) -> bool:
        """Whether the batches should carry a host-built layout (every forward of the run is :class:`PaddingFree`)."""
        return self.kind != "hugging_face" and (self.teacher is None or isinstance(self.teacher, PaddingFree))

    def layout(self, lengths: np.ndarray, width: int) -> PackedLayout | GridLayout:
        """The packing of a batch of rows with these ``lengths`` padded to ``width``. Compiled runs get the
        compiled plan (one graph for every batch: :func:`mark_sizes`)."""
        if self.kind == "grid":
            return GridLayout(bool((lengths == width).all()), compiled=self.compile)
        return PackedLayout(lengths, width, self.head_dim, self.device_type, compiled=self.compile)


def training_forwards(
    student: torch.nn.Module,
    teacher: torch.nn.Module | None,
    *,
    enabled: bool,
    ignores_padding: bool,
    device_type: str = "cpu",
    compile: bool = False,
    record_attention: bool = False,
    student_record: LayerRecord | None = None,
    teacher_record: LayerRecord | None = None,
    gradient_checkpointing: bool = False,
) -> TrainingForwards:
    """Choose the training forward: with ``enabled`` (``--padding_free auto``) and a BERT, :class:`PaddingFree`,
    packed when no loss reads padding positions (``ignores_padding``), over the padded grid otherwise; else the
    models' own forward. The teacher gets the same treatment where it is a BERT. ``device_type`` (the student's)
    prices the attention buckets; ``compile``: the one-bucket plan.

    ``student_record`` / ``teacher_record`` (the method's ``recorded_layers``): the layers whose outputs each
    forward keeps: their hidden states, and their query/key/value projections (TinyBERT, MiniLM), from
    :class:`PaddingFree` or, for a model running Hugging Face's forward, through
    :class:`fine_tune.models.attention_capture.AttentionCapture`. Default: every hidden state, and every layer's
    attention inputs with ``record_attention`` (benches) or none. ``gradient_checkpointing``: the student's layers
    recomputed in the backward pass (models/checkpointing.py)."""
    from .attention_capture import AttentionCapture

    default = EVERY_LAYER if record_attention else PLAIN_RECORD
    student_record, teacher_record = student_record or default, teacher_record or default

    def own(model: torch.nn.Module, record: LayerRecord) -> torch.nn.Module:
        return model if record == PLAIN_RECORD else AttentionCapture(model, record)

    def teacher_forward(model: torch.nn.Module) -> torch.nn.Module:
        if enabled and supports_padding_free(model.config):
            return PaddingFree(model, packed=ignores_padding, record=teacher_record)
        return own(model, teacher_record)  # no hooks on a teacher that runs the own forward

    # several teachers (a recipe's): each member gets its own training forward
    teacher_fwd = (
        None
        if teacher is None
        else (teacher.map(teacher_forward) if isinstance(teacher, TeacherSet) else teacher_forward(teacher))
    )
    hf_student = cast("PreTrainedModel", student)  # a Hugging Face model: its config is read
    if not (enabled and supports_padding_free(student.config)):
        if gradient_checkpointing:
            enable_hf_checkpointing(hf_student)
        return TrainingForwards(own(student, student_record), teacher_fwd, "hugging_face")
    cfg = hf_student.config
    return TrainingForwards(
        PaddingFree(
            student, packed=ignores_padding, record=student_record, gradient_checkpointing=gradient_checkpointing
        ),
        teacher_fwd,
        "packed" if ignores_padding else "grid",
        cfg.hidden_size // cfg.num_attention_heads,
        device_type,
        compile,
    )
