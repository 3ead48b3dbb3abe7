r"""The loss terms a distillation recipe composes: one function per (feature, loss), dispatched by :data:`TERMS`
through :func:`term_loss`, each returning one scalar.

Each term reuses the built-in methods' functions wherever a method computes the same thing (the same fp32
arithmetic, the same masking, the same reductions), so that a recipe written as a built-in method reproduces it
bit for bit; a combination no method has (cosine on hidden states, probabilities' MSE) follows their conventions.
Notation: ``s`` the student, ``t`` the teacher, ``T`` the temperature, ``m`` the [B, S] attention mask (1 = real
token), ``n_b`` the real tokens of sequence b.

Features and losses:

- ``logits``: ``kl``, Hinton et al. (2015) as :func:`~fine_tune.methods.logits_kd.logits_kd_loss`'s soft part,
  ``T^2 * KL(softmax(t/T) || softmax(s/T))`` averaged over the batch; ``mse``, ``MSE(s, t)`` over every logit
  (a one-output model: the regression soft loss ``MSE(s[:, 0], t[:, 0])``); ``ce``, TinyBERT's eq. 11 as its
  released code, :func:`~fine_tune.methods.tinybert.soft_cross_entropy` (``1/(B C) sum_{b,c} -softmax(t/T)
  log_softmax(s/T)``, no T^2).
- ``hard_labels``: ``ce``, ``CE(s, y)`` (batch mean); ``mse``, ``MSE(s[:, 0], y)`` (a regression task). No teacher.
- ``hidden`` (layers, 0 = the embedding output), ``cls`` (their position 0, [B, D]), ``embeddings`` (the
  embedding output alone): ``mse``, :func:`~fine_tune.methods.layerwise.hidden_mse_loss`'s MSE (masked: the mean
  over real tokens and every dimension, :func:`~fine_tune.methods.layerwise.masked_mean`); ``cosine``,
  ``1 - s.t / (|s| |t|)`` over D (``F.cosine_similarity``, norms clamped at 1e-8), the mean over the tokens (masked:
  the real ones) or rows; ``normalized_mse``, Sun et al. (2019) eq. 3 as
  :func:`~fine_tune.methods.pkd.normalized_cls_loss`, ``mean (s/|s| - t/|t|)^2`` over every vector and dimension
  (masked: over the real tokens' vectors). The student's hidden states go through ``project`` first (the whole
  [B, S, D] state, then position 0 for ``cls``, as the layer-wise methods).
- ``attention_scores``: ``mse``, TinyBERT's eq. 7-8 (:func:`~fine_tune.methods.tinybert.attention_mse` of
  :func:`~fine_tune.methods.tinybert.attention_scores` ``Q K^T / sqrt(d)`` per head), computed as the method
  does by :func:`~fine_tune.methods.tinybert.attention_mse_from_projections`. As the released code the padding
  KEYS are 0 in both maps whatever ``mask`` (taken from the student's attention mask when ``mask`` is None); ``mask``
  None: the mean over all B H S^2 entries; a mask: over the real (query, key) pairs and heads.
- ``attention_probs``: ``kl``, MiniLM's eq. 5 (:func:`~fine_tune.methods.minilm.relation_kl` of the query-key
  relation), ``1/B' sum_b 1/(H n_b) sum_{h, q real} sum_{k real} p^T log(p^T / p^S)`` with
  ``p = softmax(Q K^T / sqrt(d))`` over the real keys; ``mse``, the MSE of the probability maps, as ``attention_mse``
  (a mask: over the real (query, key) pairs and heads). ``mask`` None: every position is a real token.
- ``value_relation``: ``kl``, MiniLM's value relation ``softmax(V V^T / sqrt(d))`` (eq. 6), reduced as ``kl`` above.
- ``qkv_relation``: ``kl``, MiniLMv2's Q-Q + K-K + V-V relation KL over ``relation_heads`` relation heads
  (:func:`~fine_tune.methods.minilm.minilmv2_loss`; any head counts and widths).

``head_mean`` (``attention_scores``, ``attention_probs``): compare the maps averaged over each model's heads,
``1/H sum_h A_h`` (unequal head counts; for ``attention_probs kl`` the KL of the heads' mean distributions).

Layer pairs (``hidden``, ``cls`` and the attention features): the term is ``1/|P| sum_{(j, i) in P} L(s_j, t_i)``
computed as :func:`hidden_mse_loss` computes its sum (each pair's loss times ``weight / |P|``, then summed);
``reduction="sum"`` sums them instead, ``weight * sum_P L`` (TinyBERT's per-layer sums, eq. 7-10 as its released
code), and its vectors' masked ``mse`` is TinyBERT's :func:`~fine_tune.methods.tinybert.hidden_mse` (the squared
differences of the real tokens summed whole, then divided by ``D sum_b n_b`` once) where ``"mean"`` takes
:func:`~fine_tune.methods.layerwise.masked_mean`'s per-token means: one equation, each built-in's order of
additions, so each reproduces its method bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..engine.protocol import ModelOutputs
from ..recipes.format import HEAD_MEAN_FEATURES, LAYER_FEATURES
from .layerwise import HiddenPair, hidden_mse_loss, masked_mean
from .logits_kd import logits_kd_loss
from .minilm import minilmv2_loss, relation, relation_kl
from .pkd import normalized_cls_loss
from .tinybert import attention_mse, attention_mse_from_projections, hidden_mse, soft_cross_entropy

Projection = Callable[[int, torch.Tensor], torch.Tensor]
# one layer's (query, key, value) projections (ModelOutputs.attention_inputs)
QKV = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
REDUCTIONS = ("mean", "sum")


def _fp32_off(x: torch.Tensor) -> torch.autocast:
    """A context with autocast disabled on ``x``'s device type."""
    return torch.autocast(device_type=x.device.type, enabled=False)


@dataclass(frozen=True)
class _Options:
    labels: torch.Tensor | None
    temperature: float
    mask: torch.Tensor | None
    key_mask: torch.Tensor | None  # the padding keys attention scores zero (mask, else the student's own)
    num_heads: tuple[int, int | None] | None  # (student, teacher; None: unknown)
    relation_heads: int | None
    head_mean: bool


# ---- the whole model's outputs: logits and gold labels ------------------------------------------------------


def _logits_kl(s: ModelOutputs, t: ModelOutputs, o: _Options) -> torch.Tensor:
    """``T^2 * KL(softmax(t/T) || softmax(s/T))``, batch mean (logits_kd_loss's soft part, itself)."""
    return logits_kd_loss(s.logits, t.logits, None, 0.0, 1.0, o.temperature)["soft_loss"]


def _logits_mse(s: ModelOutputs, t: ModelOutputs, o: _Options) -> torch.Tensor:
    """``MSE(s, t)`` over every logit; one output: logits_kd_loss's regression soft loss ``MSE(s[:, 0], t[:, 0])``."""
    if s.logits.shape[-1] == 1:
        return logits_kd_loss(s.logits, t.logits, None, 0.0, 1.0, 1.0, regression=True)["soft_loss"]
    with _fp32_off(s.logits):
        return F.mse_loss(s.logits.float(), t.logits.float().to(s.logits.device))


def _logits_ce(s: ModelOutputs, t: ModelOutputs, o: _Options) -> torch.Tensor:
    """TinyBERT's soft cross-entropy ``1/(B C) sum -softmax(t/T) log_softmax(s/T)`` (its released reduction)."""
    return soft_cross_entropy(s.logits, t.logits, o.temperature, "mean")


def _hard_ce(s: ModelOutputs, t: ModelOutputs | None, o: _Options) -> torch.Tensor:
    """``CE(s, y)``, batch mean (logits_kd_loss's hard part, itself)."""
    return logits_kd_loss(s.logits, None, _labels(o), 1.0, 0.0, 1.0)["hard_loss"]


def _hard_mse(s: ModelOutputs, t: ModelOutputs | None, o: _Options) -> torch.Tensor:
    """``MSE(s[:, 0], y)`` (a regression task's hard loss, logits_kd_loss's)."""
    return logits_kd_loss(s.logits, None, _labels(o), 1.0, 0.0, 1.0, regression=True)["hard_loss"]


def _labels(o: _Options) -> torch.Tensor:
    if o.labels is None:
        raise ValueError("the hard_labels term needs the batch's labels")
    return o.labels


# ---- vectors: hidden states, [CLS] vectors, the embedding output ---------------------------------------------


def _vector_mse(s: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """hidden_mse_loss's MSE of one pair (itself, with mu = 1 and one pair: ``MSE * 1.0`` exactly)."""
    return hidden_mse_loss([HiddenPair(0, s, t)], 1.0, mask)[0]


def _vector_summed_mse(s: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """TinyBERT's hidden_mse (itself): masked, ``sum_{b, s real, d} (s - t)^2 / (D sum_b n_b)`` summed whole and
    divided once (the same value as :func:`_vector_mse`'s per-token means, rounded otherwise)."""
    return hidden_mse(s, t, mask, mask is not None and s.dim() > 2)


def _vector_cosine(s: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``1 - cos(s, t)`` over the last dimension, the mean over the tokens (masked: the real ones) or rows."""
    with _fp32_off(s):
        distance = 1.0 - F.cosine_similarity(s.float(), t.float(), dim=-1)
        if mask is None or distance.dim() < 2:
            return distance.mean()
        return masked_mean(distance, mask.to(distance.device))


def _vector_normalized_mse(s: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """normalized_cls_loss (PKD's ``mean (s/|s| - t/|t|)^2``); masked [B, S, D]: the mean over the real tokens."""
    if mask is None or s.dim() < 3:
        return normalized_cls_loss(s, t)
    with _fp32_off(s):
        squared = (F.normalize(s.float(), dim=-1) - F.normalize(t.float(), dim=-1)).pow(2)
        return masked_mean(squared, mask.to(squared.device))


def _hidden(outputs: ModelOutputs, layer: int, who: str) -> torch.Tensor:
    """Layer ``layer`` of ``outputs``: 0 the embedding output, l >= 1 ``hidden_states[l - 1]``."""
    if layer == 0:
        if outputs.embeddings is None:
            raise ValueError(f"layer 0 (the embeddings) of the {who}: its forward kept no embedding output")
        return outputs.embeddings
    if outputs.hidden_states is None:
        raise ValueError(f"layer {layer} of the {who}: its forward kept no hidden states")
    return outputs.hidden_states[layer - 1]


def _vector_pairs(
    feature: str,
    student: ModelOutputs,
    teacher: ModelOutputs,
    pairs: tuple[tuple[int, int], ...],
    project: Projection | None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(student, teacher) tensors of each pair, the student's projected (the whole state, before position 0)."""
    if feature == "embeddings":
        pairs = ((0, 0),)
    for j, i in pairs:
        s = _hidden(student, j, "student")
        if project is not None:
            s = project(j, s)
        t = _hidden(teacher, i, "teacher").to(s.device)
        yield (s[:, 0], t[:, 0]) if feature == "cls" else (s, t)


# ---- attention: the query / key / value projections of each layer -------------------------------------------


def _heads(o: _Options) -> tuple[int, int]:
    if o.num_heads is None or o.num_heads[1] is None:
        raise ValueError("an attention term needs num_heads (student heads, teacher heads)")
    return o.num_heads[0], o.num_heads[1]


def _scores_mse(s: QKV, t: QKV, o: _Options) -> torch.Tensor:
    """TinyBERT's attention-score MSE (padding keys 0 on both sides; a mask: real (query, key) pairs only)."""
    (sq, sk, _), (tq, tk, _) = s, t
    hs, ht = _heads(o)
    return attention_mse_from_projections(sq, sk, tq, tk, hs, ht, o.key_mask, o.mask is not None, head_mean=o.head_mean)


def _probs(query: torch.Tensor, key: torch.Tensor, heads: int, o: _Options) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d)) over the real keys, [B, H, S, S] fp32 ([B, 1, S, S]: the heads' mean)."""
    probs = relation(query, key, heads, o.mask).exp()
    return probs.mean(1, keepdim=True) if o.head_mean else probs


def _probs_kl(s: QKV, t: QKV, o: _Options) -> torch.Tensor:
    """MiniLM's attention-distribution KL (relation_kl, itself); head_mean: the KL of the heads' mean maps."""
    (sq, sk, _), (tq, tk, _) = s, t
    hs, ht = _heads(o)
    if not o.head_mean:
        return relation_kl(sq, sk, tq.to(sq.device), tk.to(sq.device), hs, ht, o.mask)
    with _fp32_off(sq):
        p_s = _probs(sq, sk, hs, o)[:, 0]
        p_t = _probs(tq.to(sq.device), tk.to(sq.device), ht, o)[:, 0]
        batch, length = p_s.shape[:2]
        real = (
            torch.ones(batch, length, dtype=torch.bool, device=p_s.device)
            if o.mask is None
            else o.mask.to(p_s.device).bool()
        )
        keys = (real | ~real.any(-1, keepdim=True))[:, None, :]  # (an all-padding row: every key; its rows weigh 0)
        # log of the real keys' probabilities only (log 1 = 0 at a padding key, p = 0 there): no NaN, nor in grad
        log_s, log_t = (torch.where(keys, p, torch.ones_like(p)).log() for p in (p_s, p_t))
        kl = (p_t * (log_t - log_s)).sum(-1)  # [B, S]
        tokens = real.sum(-1).float()
        weights = real / tokens.clamp_min(1.0)[:, None] / (tokens > 0).sum().float().clamp_min(1.0)
        return (kl * weights).sum()


def _probs_mse(s: QKV, t: QKV, o: _Options) -> torch.Tensor:
    """MSE of the attention probabilities, as attention_mse (a mask: over the real (query, key) pairs)."""
    (sq, sk, _), (tq, tk, _) = s, t
    hs, ht = _heads(o)
    with _fp32_off(sq):
        return attention_mse(
            _probs(sq, sk, hs, o), _probs(tq.to(sq.device), tk.to(sq.device), ht, o), o.mask, o.mask is not None
        )


def _value_kl(s: QKV, t: QKV, o: _Options) -> torch.Tensor:
    """MiniLM's value-relation KL (relation_kl of V with itself, as minilm_loss)."""
    sv, tv = s[2], t[2].to(s[2].device)
    hs, ht = _heads(o)
    return relation_kl(sv, sv, tv, tv, hs, ht, o.mask)


def _qkv_kl(s: QKV, t: QKV, o: _Options) -> torch.Tensor:
    """MiniLMv2's Q-Q + K-K + V-V relation KL over ``relation_heads`` (minilmv2_loss's total, itself)."""
    if o.relation_heads is None:
        raise ValueError("the qkv_relation term needs relation_heads")
    dev = s[0].device
    tq, tk, tv = (x.to(dev) for x in t)
    return minilmv2_loss(*s, tq, tk, tv, o.relation_heads, o.mask)[0]


def _attention_pairs(
    student: ModelOutputs, teacher: ModelOutputs, pairs: tuple[tuple[int, int], ...]
) -> Iterator[tuple[QKV, QKV]]:
    for j, i in pairs:
        if j < 1 or i < 1:
            raise ValueError(f"pair ({j}, {i}): attention is read from layers 1..L (0 is the embeddings)")
        if student.attention_inputs is None:
            raise ValueError("the student's forward recorded no attention inputs")
        if teacher.attention_inputs is None:
            raise ValueError("the teacher's forward recorded no attention inputs")
        yield student.attention_inputs[j - 1], teacher.attention_inputs[i - 1]


# ---- the table ----------------------------------------------------------------------------------------------

# how a feature is read: "outputs" (the whole ModelOutputs), "vectors" (hidden states per pair), "attention"
# (per layer pair, the (query, key, value) projections)
FEATURE_KINDS: dict[str, str] = {
    "logits": "outputs",
    "hard_labels": "outputs",
    "hidden": "vectors",
    "cls": "vectors",
    "embeddings": "vectors",
    "attention_scores": "attention",
    "attention_probs": "attention",
    "value_relation": "attention",
    "qkv_relation": "attention",
}
_VECTOR_LOSSES = {"mse": _vector_mse, "cosine": _vector_cosine, "normalized_mse": _vector_normalized_mse}
_SUMMED_VECTOR_LOSSES = {"mse": _vector_summed_mse}  # reduction "sum": TinyBERT's form where it differs
# each kind's functions take its own arguments: (student, teacher, options) of whole outputs, (student, teacher,
# mask) of vectors, (student, teacher, options) of one layer pair's (query, key, value)
TERMS: dict[tuple[str, str], Callable[..., torch.Tensor]] = {
    ("logits", "kl"): _logits_kl,
    ("logits", "mse"): _logits_mse,
    ("logits", "ce"): _logits_ce,
    ("hard_labels", "ce"): _hard_ce,
    ("hard_labels", "mse"): _hard_mse,
    **{(feature, loss): fn for feature in ("hidden", "cls", "embeddings") for loss, fn in _VECTOR_LOSSES.items()},
    ("attention_scores", "mse"): _scores_mse,
    ("attention_probs", "kl"): _probs_kl,
    ("attention_probs", "mse"): _probs_mse,
    ("value_relation", "kl"): _value_kl,
    ("qkv_relation", "kl"): _qkv_kl,
}
FEATURES: tuple[str, ...] = tuple(FEATURE_KINDS)
# the features read per (student layer, teacher layer) pair, and those head_mean applies to: the recipe format's
PAIRED = frozenset(LAYER_FEATURES)
HEAD_MEAN = frozenset(HEAD_MEAN_FEATURES)


def losses_of(feature: str) -> tuple[str, ...]:
    """The losses a feature takes (empty for an unknown feature)."""
    return tuple(loss for f, loss in TERMS if f == feature)


def features_needed(feature: str, pairs: tuple[tuple[int, int], ...] = ()) -> set[str]:
    """What a forward must keep for ``feature``: of ``"hidden"`` (hidden states), ``"attention"`` (the query / key
    / value projections), ``"embeddings"`` (the embedding output: the ``embeddings`` feature, or a layer 0 in
    ``pairs`` of ``hidden`` / ``cls``). Logits and labels need nothing beyond the forward's logits."""
    kind = FEATURE_KINDS.get(feature)
    if kind is None:
        raise KeyError(f"unknown feature {feature!r}")
    if kind == "attention":
        return {"attention"}
    if feature == "embeddings":
        return {"embeddings"}
    if kind == "vectors":
        return {"hidden"} | ({"embeddings"} if any(0 in pair for pair in pairs) else set())
    return set()


def term_loss(
    feature: str,
    loss: str,
    student: ModelOutputs,
    teacher: ModelOutputs | None,
    *,
    pairs: tuple[tuple[int, int], ...] = (),
    labels: torch.Tensor | None = None,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
    num_heads: tuple[int, int | None] | None = None,
    relation_heads: int | None = None,
    head_mean: bool = False,
    project: Projection | None = None,
    weight: float = 1.0,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""The scalar loss of ``feature`` under ``loss`` (the module's list), fp32, UNWEIGHTED by default.

    ``pairs``: (student layer, teacher layer) of a paired feature (:data:`PAIRED`; 0 = the embedding output);
    ``labels``: the gold labels (``hard_labels``); ``mask``: the [B, S] attention mask for the masked versions (real
    tokens only), None for the full-sequence ones; ``num_heads``: (student, teacher) attention heads;
    ``relation_heads``: MiniLMv2's; ``head_mean``: compare head-averaged maps; ``project(layer, tensor)``: the
    student's hidden state of ``layer`` in the teacher's width (None: as it is).

    ``weight`` (default 1) is applied where the built-in methods apply theirs, so that a weighted term equals the
    method's part bit for bit: a paired term is ``sum_P L_P * (weight / |P|)`` (``reduction="mean"``,
    hidden_mse_loss's and PKD's) or ``weight * sum_P L_P`` (``"sum"``, TinyBERT's); any other ``weight * L``."""
    fn = TERMS.get((feature, loss))
    if fn is None:
        raise KeyError(f"unknown term ({feature!r}, {loss!r})")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction {reduction!r}: one of {', '.join(REDUCTIONS)}")
    if head_mean and feature not in HEAD_MEAN:
        raise ValueError(f"head_mean applies to {', '.join(sorted(HEAD_MEAN))}, not {feature}")
    if teacher is None and feature != "hard_labels":
        raise ValueError(f"the {feature} term needs the teacher's outputs")
    kind = FEATURE_KINDS[feature]
    key_mask = mask if mask is not None else student.attention_mask
    o = _Options(labels, temperature, mask, key_mask, num_heads, relation_heads, head_mean)
    if kind == "outputs":
        return fn(student, teacher, o) * weight
    assert teacher is not None  # refused above for every feature but hard_labels (of kind "outputs")
    if feature in PAIRED and not pairs:
        raise ValueError(f"the {feature} term needs at least one (student layer, teacher layer) pair")
    if kind == "vectors":
        fn = _SUMMED_VECTOR_LOSSES.get(loss, fn) if reduction == "sum" else fn
        terms = [fn(s, t, mask) for s, t in _vector_pairs(feature, student, teacher, pairs, project)]
    else:
        terms = [fn(s, t, o) for s, t in _attention_pairs(student, teacher, pairs)]
    if reduction == "sum":
        return weight * torch.stack(terms).sum()
    return torch.stack([term * (weight / len(terms)) for term in terms]).sum()
