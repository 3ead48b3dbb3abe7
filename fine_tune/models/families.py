"""The model families the toolkit trains, each through Hugging Face's Auto classes.

``--model`` (``--tmodel`` for a teacher) names one of :data:`FAMILIES`; the experiment folder stays
``{experiment}_{model}_{task}``. What differs between families is written here once: the names of their dropout
settings, how a student of given widths is configured, where their encoder layers and attention projections
live (for copying pretrained layers, and for the attention-based methods, TinyBERT and MiniLM), and which
attention implementation they run. Everything else (forward, ``output_hidden_states``, saving, loading) is the
Auto classes' own; the toolkit's padding-free forward (``models/padding_free.py``) serves BERT only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..errors import UserError


@dataclass(frozen=True)
class Family:
    name: str  # config.model_type
    dropout_names: tuple[str, ...]  # (hidden, attention, classifier head) dropout fields of the config
    layers: Callable[[torch.nn.Module], list[torch.nn.Module]]  # the encoder layers of the base model, in order
    qkv: tuple[str, str, str]  # names of the query/key/value projections inside each layer's attention
    attention_path: str  # the attention module inside one layer
    sdpa: bool = True  # PyTorch's scaled-dot-product attention (else Hugging Face's eager attention)
    relative_positions: bool = False  # attention scores hold terms beyond Q K^T (DeBERTa's disentangled attention)

    @property
    def attn_implementation(self) -> str:
        return "sdpa" if self.sdpa else "eager"

    def dropout_kwargs(self, dropout: float) -> dict:
        hidden, attention, head = self.dropout_names
        return {hidden: dropout, attention: dropout, head: dropout}

    def attention_modules(self, base: torch.nn.Module) -> list[torch.nn.Module]:
        """The attention block of every layer, in call order (ALBERT: the one shared block)."""
        out = []
        for layer in self.layers(base):
            m = layer
            for part in self.attention_path.split("."):
                m = getattr(m, part)
            out.append(m)
        return out

    def attention_only_prefixes(self) -> tuple[str, ...]:
        """State-dict prefixes (inside a layer) of the query/key/value projections (``--init_attn_only``)."""
        return tuple(f"{self.attention_path}.{name}" for name in self.qkv)


def _bert_layers(base) -> list[torch.nn.Module]:
    return list(base.encoder.layer)


def _albert_layers(base) -> list[torch.nn.Module]:
    # one shared layer group (num_hidden_groups == 1 in every released model)
    return [layer for group in base.encoder.albert_layer_groups for layer in group.albert_layers]


def _distilbert_layers(base) -> list[torch.nn.Module]:
    return list(base.transformer.layer)


_BERT_DROPOUT = ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout")
FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("bert", _BERT_DROPOUT, _bert_layers, ("query", "key", "value"), "attention.self"),
    Family("albert", ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout_prob"),
           _albert_layers, ("query", "key", "value"), "attention"),
    Family("roberta", _BERT_DROPOUT, _bert_layers, ("query", "key", "value"), "attention.self"),
    Family("distilbert", ("dropout", "attention_dropout", "seq_classif_dropout"), _distilbert_layers,
           ("q_lin", "k_lin", "v_lin"), "attention"),
    Family("electra", _BERT_DROPOUT, _bert_layers, ("query", "key", "value"), "attention.self"),
    Family("deberta-v2", ("hidden_dropout_prob", "attention_probs_dropout_prob", "cls_dropout"), _bert_layers,
           ("query_proj", "key_proj", "value_proj"), "attention.self", sdpa=False, relative_positions=True),
)}


def get_family(name: str, flag: str = "--model") -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise UserError(f"{flag} {name!r}: not a model family the toolkit trains ({', '.join(FAMILIES)})") from None


def family_of(model_or_config) -> Family:
    config = getattr(model_or_config, "config", model_or_config)
    return get_family(config.model_type, "model type")


def student_config_kwargs(family: str, *, vocab_size: int, num_class: int, d_model: int, d_ff: int,
                          num_attention_heads: int, num_hidden_layers: int, type_vocab_size: int, dropout: float,
                          max_position_embeddings: int, pad_token_id: int, d_emb: int | None) -> dict:
    """The config fields of a student of the given widths, in the family's own names."""
    f = get_family(family)
    if family == "distilbert":  # its own names; no token types
        return dict(vocab_size=vocab_size, dim=d_model, hidden_dim=d_ff, n_heads=num_attention_heads,
                    n_layers=num_hidden_layers, max_position_embeddings=max_position_embeddings, num_labels=num_class,
                    pad_token_id=pad_token_id, **f.dropout_kwargs(dropout))
    kwargs = dict(vocab_size=vocab_size, hidden_size=d_model, intermediate_size=d_ff,
                  num_attention_heads=num_attention_heads, num_hidden_layers=num_hidden_layers,
                  type_vocab_size=type_vocab_size, max_position_embeddings=max_position_embeddings,
                  num_labels=num_class, pad_token_id=pad_token_id, **f.dropout_kwargs(dropout))
    if family == "albert":
        kwargs.update(embedding_size=d_emb, hidden_act="gelu_new")
    if family == "electra":
        kwargs.update(embedding_size=d_model)
    if family == "roberta":  # positions count from pad_token_id + 1: room for max_position_embeddings tokens
        kwargs.update(max_position_embeddings=max_position_embeddings + pad_token_id + 1)
    if family == "deberta-v2":  # relative attention as the released DeBERTa-v3 models
        kwargs.update(relative_attention=True, position_biased_input=False, pos_att_type=["p2c", "c2p"],
                      max_relative_positions=-1, position_buckets=256, norm_rel_ebd="layer_norm",
                      share_att_key=True, type_vocab_size=0 if type_vocab_size <= 1 else type_vocab_size)
    return kwargs


def usable_positions(config) -> int:
    """How many tokens a model of ``config`` takes: its position table, less RoBERTa's offset (its positions
    start after the padding index)."""
    n = config.max_position_embeddings
    if config.model_type == "roberta":
        n -= (config.pad_token_id or 0) + 1
    return n


def takes_token_types(config) -> bool:
    """Whether a model of ``config`` reads token type ids (a table with more than one type)."""
    return (getattr(config, "type_vocab_size", 0) or 0) > 1
