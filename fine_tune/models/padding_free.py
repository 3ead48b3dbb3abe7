"""Padding-free BERT: the position-wise layers run on the real tokens only.

In a padded batch [B, S] with N real tokens, every projection, feed-forward layer, LayerNorm, residual add and
dropout of a BERT layer works row by row; on padding rows it is wasted work whose result nothing uses when the
loss ignores padding positions. This forward keeps the hidden states packed as [N, D] (the technique of
"unpadded" BERT implementations, e.g. Zeng et al., "Boosting distributed training performance of the Unpadded
BERT model", 2022, and MosaicBERT) and pads only around the attention product, where the sequence structure
matters::

    x = LN(E_word[ids] + E_pos[pos] + E_type[types])                       # [N, D], real tokens only
    for each layer:
        [Q K V] = x [W_q W_k W_v] + b                                       # one [N, 3D] matrix multiply
        A = unpad(softmax(pad(Q) pad(K)^T / sqrt(d_h) + mask) pad(V))       # attention on [B, H, S, S]
        x' = LN(x + A W_o + b_o)
        x  = LN(x' + GELU(x' W_1 + b_1) W_2 + b_2)
    logits = W_c tanh(W_p x[CLS] + b_p) + b_c

It computes exactly what the Hugging Face ``BertForSequenceClassification`` computes on the real tokens (same
weights, same module objects; float rounding aside: tested), so a checkpoint is the same either way. Hidden
states are returned re-padded to [B, S, D] with zeros at padding positions: use it only where the loss ignores
those positions (every loss under ``--padding dynamic``; not the original's full-sequence MSE under fixed
padding). Dropout masks are drawn for the real tokens only, so a training run draws different (equally
distributed) masks than the padded forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def supports_padding_free(config) -> bool:
    """BERT with absolute positions and no decoder/cross-attention (ALBERT and others: the padded forward)."""
    return (getattr(config, "model_type", None) == "bert"
            and getattr(config, "position_embedding_type", "absolute") == "absolute"
            and not getattr(config, "is_decoder", False) and not getattr(config, "add_cross_attention", False))


class Packing:
    """Index bookkeeping of one batch: which of the B * S positions hold real tokens (right padding)."""

    def __init__(self, attention_mask: torch.Tensor):
        self.batch, self.seq = attention_mask.shape
        flat = attention_mask.reshape(-1).bool()
        self.index = flat.nonzero(as_tuple=True)[0]  # [N] positions in B * S, row-major
        self.pad_index = (~flat).nonzero(as_tuple=True)[0]  # the padding positions
        self.positions = self.index % self.seq  # position id of each real token
        self.first = (self.positions == 0).nonzero(as_tuple=True)[0]  # packed row of each sequence's [CLS]
        if len(self.first) != self.batch:
            raise ValueError("padding-free forward: every sequence must start with a real token (right padding)")

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """[B, S, ...] -> [N, ...]"""
        return _Pack.apply(x.reshape(self.batch * self.seq, *x.shape[2:]), self.index, self.pad_index)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """[N, ...] -> [B, S, ...] with zeros at padding positions (differentiable)."""
        return _Pad.apply(x, self.index, self.pad_index).view(self.batch, self.seq, *x.shape[1:])


class _Pack(torch.autograd.Function):
    """rows ``index`` of x. The indices are unique, so the backward is a plain copy into zeros, not the
    accumulating scatter autograd would use for ``index_select`` (several times slower on CPU)."""

    @staticmethod
    def forward(ctx, x, index, pad_index):
        ctx.save_for_backward(index, pad_index)
        return x.index_select(0, index)

    @staticmethod
    def backward(ctx, grad):
        index, pad_index = ctx.saved_tensors
        return _scatter_rows(grad, index, pad_index), None, None


class _Pad(torch.autograd.Function):
    """x copied into rows ``index`` of a zero tensor with ``rows`` rows; backward: the same rows of the grad."""

    @staticmethod
    def forward(ctx, x, index, pad_index):
        ctx.save_for_backward(index, pad_index)
        return _scatter_rows(x, index, pad_index)

    @staticmethod
    def backward(ctx, grad):
        index, _ = ctx.saved_tensors
        return grad.index_select(0, index), None, None


def _scatter_rows(x: torch.Tensor, index: torch.Tensor, pad_index: torch.Tensor) -> torch.Tensor:
    """[N, ...] into rows ``index`` of a new [N + P, ...] tensor whose rows ``pad_index`` are zero (only those
    rows are filled: cheaper than zeroing everything first)."""
    out = x.new_empty(len(index) + len(pad_index), *x.shape[1:]).index_copy_(0, index, x)
    return out.index_fill_(0, pad_index, 0) if len(pad_index) else out


@dataclass
class PaddingFreeOutput:
    logits: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...] | None  # [embeddings, layer 1, ..., layer L], each [B, S, D]


def _embeddings(emb, input_ids, token_type_ids, pk: Packing) -> torch.Tensor:
    ids = pk.pack(input_ids)
    types = pk.pack(token_type_ids) if token_type_ids is not None else torch.zeros_like(ids)
    x = emb.word_embeddings(ids) + emb.token_type_embeddings(types) + emb.position_embeddings(pk.positions)
    return emb.dropout(emb.LayerNorm(x))


def _layer(layer, x: torch.Tensor, pk: Packing, key_mask: torch.Tensor) -> torch.Tensor:
    sa = layer.attention.self
    heads, head_dim = sa.num_attention_heads, sa.attention_head_size
    w = torch.cat([sa.query.weight, sa.key.weight, sa.value.weight])
    b = torch.cat([sa.query.bias, sa.key.bias, sa.value.bias])
    qkv = pk.pad(F.linear(x, w, b))  # [B, S, 3D]
    q, k, v = (t.reshape(pk.batch, pk.seq, heads, head_dim).transpose(1, 2) for t in qkv.chunk(3, dim=-1))
    attn = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, scale=sa.scaling,
                                          dropout_p=sa.dropout.p if sa.training else 0.0)
    attn = pk.pack(attn.transpose(1, 2).reshape(pk.batch, pk.seq, heads * head_dim))
    so = layer.attention.output
    x = so.LayerNorm(so.dropout(so.dense(attn)) + x)
    inter = layer.intermediate.intermediate_act_fn(layer.intermediate.dense(x))
    out = layer.output
    return out.LayerNorm(out.dropout(out.dense(inter)) + x)


class PaddingFree(torch.nn.Module):
    """Wraps a ``BertForSequenceClassification`` (its parameters, not copies) with the padding-free forward.
    Call it like the model: ``(input_ids, token_type_ids, attention_mask, output_hidden_states=...)``."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        if not supports_padding_free(model.config):
            raise ValueError(f"padding-free forward supports BERT only, not {model.config.model_type}")
        self.model = model

    @property
    def config(self):
        return self.model.config

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, output_hidden_states: bool = False,
                return_dict: bool = True) -> PaddingFreeOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        pk = Packing(attention_mask)
        bert = self.model.bert
        key_mask = attention_mask.bool()[:, None, None, :]  # [B, 1, 1, S]: True = attend
        x = _embeddings(bert.embeddings, input_ids, token_type_ids, pk)
        hidden = [x] if output_hidden_states else None
        for layer in bert.encoder.layer:
            x = _layer(layer, x, pk, key_mask)
            if hidden is not None:
                hidden.append(x)
        pooled = bert.pooler.activation(bert.pooler.dense(x.index_select(0, pk.first)))
        logits = self.model.classifier(self.model.dropout(pooled))
        return PaddingFreeOutput(logits, tuple(pk.pad(h) for h in hidden) if hidden is not None else None)
