"""The model families the toolkit trains, each through Hugging Face's Auto classes: one record per family.

``--model`` (``--tmodel`` for a teacher) names one of :data:`FAMILIES`; the experiment folder stays
``{experiment}_{model}_{task}``. Everything a family differs in is written once, in its :class:`Family` record;
the code that configures, builds, copies, probes or tests models reads the record and never branches on a
family's name. Everything else (forward, ``output_hidden_states``, saving, loading) is the Auto classes' own.

Adding a family is one new record in :data:`FAMILIES` (the ``--model`` choices, :data:`FAMILY_NAMES`, follow).
A record says:

* ``name``: the Hugging Face ``config.model_type`` (``AutoConfig.for_model(name, ...)`` must know it).
* ``dropout_names``: its config's (hidden, attention, classifier head) dropout fields, set from ``--dropout``.
* Configuring a student from the generic width flags (:func:`student_config_kwargs`):
  ``config_names``, its config's names of BERT's fields where they differ (DistilBERT's ``dim``, ``n_layers``...);
  ``token_types``, whether its config has a token type table (``type_vocab_size``) at all;
  ``single_type_as_none``, whether a table of one type is written as none (``type_vocab_size`` 0, DeBERTa-v2);
  ``positions_after_padding``, whether position ids start after ``pad_token_id`` (RoBERTa), so the position
  table holds ``pad_token_id + 1`` rows more than the tokens a model takes (:func:`usable_positions`);
  ``student_extras``, a function of the student's :class:`Widths` giving its further config fields
  (ALBERT's embedding size and activation, DeBERTa-v2's relative attention).
* Its encoder: ``layers``, the encoder layers of the base model in call order; ``shared_layers``, whether they
  share one set of weights (ALBERT: every student layer takes the one teacher layer); ``attention_path`` and
  ``qkv``, the attention module inside a layer and its query/key/value projections (copying pretrained layers,
  ``--init_attn_only``, the attention-reading methods TinyBERT and MiniLM); ``relative_positions``, whether its
  attention scores hold terms beyond Q K^T (those methods refuse it); ``sdpa``, PyTorch's scaled-dot-product
  attention (else Hugging Face's eager attention); ``padding_free``, whether the toolkit's own padding-free
  forward (``models/padding_free.py``) serves it; ``gradient_checkpointing``, whether its Hugging Face forward
  can recompute its layers in the backward pass (``--gradient_checkpointing``: ``supports_gradient_checkpointing``).
* The tiny test model (``synthetic.py``, for the tests and the offline demo): ``tokenizer``, the kind of tiny
  tokenizer (``"wordpiece"``: BERT's, ``[PAD]`` 0, token types 0/1; ``"bpe"``: RoBERTa's special tokens, ``<pad>``
  1, no token types), and ``tiny_extras``, a function of the tiny model's :class:`Widths` giving its further
  config fields.

This module imports neither torch nor transformers: the command line reads :data:`FAMILY_NAMES` before ``--help``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import UserError

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig


@dataclass(frozen=True)
class Widths:
    """The sizes a family's extra config fields are written from (a student's flags, or a tiny test model's)."""

    hidden: int  # the hidden size (--d_model)
    emb: int | None  # the embedding size where it is its own (--d_emb; ALBERT's factorised embeddings)


def _no_extras(widths: Widths) -> dict[str, Any]:
    return {}


TOKENIZER_KINDS = ("wordpiece", "bpe")


@dataclass(frozen=True)
class Family:
    name: str  # config.model_type
    dropout_names: tuple[str, str, str]  # (hidden, attention, classifier head) dropout fields of the config
    layers: Callable[[torch.nn.Module], list[torch.nn.Module]]  # the encoder layers of the base model, in order
    qkv: tuple[str, str, str]  # names of the query/key/value projections inside each layer's attention
    attention_path: str  # the attention module inside one layer
    sdpa: bool = True  # PyTorch's scaled-dot-product attention (else Hugging Face's eager attention)
    relative_positions: bool = False  # attention scores hold terms beyond Q K^T (DeBERTa's disentangled attention)
    shared_layers: bool = False  # every layer is one shared layer (ALBERT)
    padding_free: bool = False  # the toolkit's own padding-free forward serves the family (models/padding_free.py)
    gradient_checkpointing: bool = True  # Hugging Face's forward supports gradient checkpointing (not ALBERT's)
    # the config: BERT's field names -> the family's (where they differ), as (bert_name, own_name) pairs
    config_names: tuple[tuple[str, str], ...] = ()
    token_types: bool = True  # the config has a token type table (type_vocab_size)
    single_type_as_none: bool = False  # a table of one token type is written as none (type_vocab_size 0)
    positions_after_padding: bool = False  # position ids start at pad_token_id + 1 (RoBERTa)
    student_extras: Callable[[Widths], dict[str, Any]] = _no_extras  # further config fields of a student
    # the tiny test model (synthetic.py)
    tokenizer: str = "wordpiece"  # one of TOKENIZER_KINDS
    tiny_extras: Callable[[Widths], dict[str, Any]] = _no_extras  # further config fields of the tiny model

    def __post_init__(self) -> None:
        if self.tokenizer not in TOKENIZER_KINDS:
            raise ValueError(f"family {self.name!r}: tokenizer {self.tokenizer!r} is not one of {TOKENIZER_KINDS}")
        if len(self.dropout_names) != 3 or len(self.qkv) != 3:
            raise ValueError(f"family {self.name!r}: three dropout names and three q/k/v names")

    @property
    def attn_implementation(self) -> str:
        return "sdpa" if self.sdpa else "eager"

    def dropout_kwargs(self, dropout: float) -> dict[str, float]:
        hidden, attention, head = self.dropout_names
        return {hidden: dropout, attention: dropout, head: dropout}

    def position_offset(self, pad_token_id: int | None) -> int:
        """Rows of the position table before the first token's (RoBERTa: the padding index and those below it)."""
        return (pad_token_id or 0) + 1 if self.positions_after_padding else 0

    def config_kwargs(self, bert_named: dict[str, Any]) -> dict[str, Any]:
        """Config fields given in BERT's names, in this family's names and by its rules, in the given order:
        ``type_vocab_size`` dropped without a token type table (0 for a single type with
        ``single_type_as_none``); ``max_position_embeddings``, the tokens a model takes, grown by the position
        offset (read from ``pad_token_id``)."""
        names = dict(self.config_names)
        out: dict[str, Any] = {}
        for key, value in bert_named.items():
            if key == "type_vocab_size":
                if not self.token_types:
                    continue
                if self.single_type_as_none and value <= 1:
                    value = 0
            elif key == "max_position_embeddings":
                value += self.position_offset(bert_named.get("pad_token_id"))
            out[names.get(key, key)] = value
        return out

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


def _deberta_v3_attention(position_buckets: int) -> dict[str, Any]:
    """Relative attention as the released DeBERTa-v3 models have it."""
    return dict(
        relative_attention=True,
        position_biased_input=False,
        pos_att_type=["p2c", "c2p"],
        max_relative_positions=-1,
        position_buckets=position_buckets,
        norm_rel_ebd="layer_norm",
        share_att_key=True,
    )


_BERT_DROPOUT = ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout")
_BERT_QKV = ("query", "key", "value")
FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("bert", _BERT_DROPOUT, _bert_layers, _BERT_QKV, "attention.self", padding_free=True),
        Family(
            "albert",
            ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout_prob"),
            _albert_layers,
            _BERT_QKV,
            "attention",
            shared_layers=True,
            gradient_checkpointing=False,
            student_extras=lambda w: dict(embedding_size=w.emb, hidden_act="gelu_new"),
            tiny_extras=lambda w: dict(embedding_size=w.emb),
        ),
        Family(
            "roberta",
            _BERT_DROPOUT,
            _bert_layers,
            _BERT_QKV,
            "attention.self",
            positions_after_padding=True,
            tokenizer="bpe",
            tiny_extras=lambda w: dict(bos_token_id=0, eos_token_id=2),
        ),  # <s>, </s>
        Family(
            "distilbert",
            ("dropout", "attention_dropout", "seq_classif_dropout"),
            _distilbert_layers,
            ("q_lin", "k_lin", "v_lin"),
            "attention",
            token_types=False,
            config_names=(
                ("hidden_size", "dim"),
                ("intermediate_size", "hidden_dim"),
                ("num_attention_heads", "n_heads"),
                ("num_hidden_layers", "n_layers"),
            ),
        ),
        Family(
            "electra",
            _BERT_DROPOUT,
            _bert_layers,
            _BERT_QKV,
            "attention.self",
            student_extras=lambda w: dict(embedding_size=w.hidden),
            tiny_extras=lambda w: dict(embedding_size=w.emb),
        ),
        Family(
            "deberta-v2",
            ("hidden_dropout_prob", "attention_probs_dropout_prob", "cls_dropout"),
            _bert_layers,
            ("query_proj", "key_proj", "value_proj"),
            "attention.self",
            sdpa=False,
            relative_positions=True,
            single_type_as_none=True,
            tokenizer="bpe",
            student_extras=lambda w: _deberta_v3_attention(256),
            tiny_extras=lambda w: _deberta_v3_attention(32),
        ),
    )
}
FAMILY_NAMES: tuple[str, ...] = tuple(FAMILIES)  # the --model / --tmodel choices


def get_family(name: str, flag: str = "--model") -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise UserError(f"{flag} {name!r}: not a model family the toolkit trains ({', '.join(FAMILIES)})") from None


def family_of(model_or_config) -> Family:
    config = getattr(model_or_config, "config", model_or_config)
    return get_family(config.model_type, "model type")


def student_config_kwargs(
    family: str,
    *,
    vocab_size: int,
    num_class: int,
    d_model: int,
    d_ff: int,
    num_attention_heads: int,
    num_hidden_layers: int,
    type_vocab_size: int,
    dropout: float,
    max_position_embeddings: int,
    pad_token_id: int,
    d_emb: int | None,
) -> dict[str, Any]:
    """The config fields of a student of the given widths, in the family's own names (its record's rules);
    ``max_position_embeddings`` is the number of tokens the student takes."""
    f = get_family(family)
    kwargs = f.config_kwargs(
        dict(
            vocab_size=vocab_size,
            hidden_size=d_model,
            intermediate_size=d_ff,
            num_attention_heads=num_attention_heads,
            num_hidden_layers=num_hidden_layers,
            type_vocab_size=type_vocab_size,
            max_position_embeddings=max_position_embeddings,
            num_labels=num_class,
            pad_token_id=pad_token_id,
        )
    )
    kwargs.update(f.dropout_kwargs(dropout))
    kwargs.update(f.student_extras(Widths(hidden=d_model, emb=d_emb)))
    return kwargs


def usable_positions(config: PretrainedConfig) -> int:
    """How many tokens a model of ``config`` takes: its position table, less its family's position offset
    (RoBERTa's positions start after the padding index)."""
    family = FAMILIES.get(config.model_type)
    offset = family.position_offset(getattr(config, "pad_token_id", None)) if family is not None else 0
    return config.max_position_embeddings - offset


def takes_token_types(config) -> bool:
    """Whether a model of ``config`` reads token type ids (a table with more than one type)."""
    return (getattr(config, "type_vocab_size", 0) or 0) > 1
