r"""MiniLM and MiniLMv2 self-attention distillation: the losses and the method (``run_minilm_distil.py``).

MiniLM: Wang, Wei, Dong, Bao, Yang, Zhou, "MiniLM: Deep Self-Attention Distillation for Task-Agnostic
Compression of Pre-Trained Transformers", NeurIPS 2020. The last layer's attention distributions and
value relations (eq. 5-7), each averaged over heads and the |x| tokens of the sequence::

    A_a = softmax(Q_a K_a^T / sqrt(d_k))                         (attention distribution, per head a)
    VR_a = softmax(V_a V_a^T / sqrt(d_k))                        (value relation)
    L_AT = 1/(A_h |x|) * sum_a sum_t KL(A^T_{a,t} || A^S_{a,t})
    L_VR = 1/(A_h |x|) * sum_a sum_t KL(VR^T_{a,t} || VR^S_{a,t})
    L = L_AT + L_VR

MiniLMv2: Wang, Bao, Huang, Dong, Wei, "MiniLMv2: Multi-Head Self-Attention Relation Distillation for
Compressing Pretrained Transformers", Findings of ACL 2021. The heads' queries (keys, values) are concatenated
and re-split into A_r *relation heads* (the same number for both models, whatever their head counts and
widths; d_r = D / A_r per model), and the Q-Q, K-K and V-V relations are distilled (eq. 1-3)::

    R_{ij,a} = softmax(A_{i,a} A_{j,a}^T / sqrt(d_r))            A in {Q, K, V}, a = 1..A_r
    L = sum_{(i,j) in {QQ, KK, VV}} 1/(A_r |x|) * sum_a sum_t KL(R^T_{ij,a,t} || R^S_{ij,a,t})

The papers write one sequence x. Over a batch of B sequences with n_b real tokens each, every KL is averaged
per sequence, then over the batch (``average="sequence"``, the default)::

    KL_batch = 1/B * sum_b 1/(H n_b) * sum_h sum_{t real in b} KL(P^T_{b,h,t} || P^S_{b,h,t})

as MiniLMv2's only public distillation code, Bloomberg's minilmv2.bb (``minilmv2/minilmv2.py``,
``MiniLM._get_kl_loss``: per sequence, ``KLDivLoss(reduction="sum")`` over its real rows and keys divided by
``A_r * cur_seq_len``, then ``loss /= batch_size``; Microsoft's microsoft/unilm publishes checkpoints and
fine-tuning examples, not the distillation code, so MiniLM v1 takes the same rule). Runs started before this
rule was chosen keep their batch-token average (``average="token"``: ``1/(H sum_b n_b) * sum_b sum_h sum_t``, a
long sequence weighing more), equal to it when every sequence has the same length. Padding keys get probability
exactly 0 (masked to -inf before the softmax) and padding query rows are left out, so neither average depends
on the padding.

Inputs: the last layer's query / key / value projections [B, S, D] (before the heads are split) and the
attention mask [B, S] (1 = real token, 0 = padding). Every function computes in fp32 (autocast off), whatever
the input dtype or the surrounding autocast.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F

from ..engine.protocol import PLAIN_RECORD, LayerRecord, ModelOutputs
from ..errors import UserError
from ..settings import _positive, flag
from .base import MethodSettings
from .layerwise import LayerwiseKD
from .logits_kd import logits_kd_loss
from .tinybert import check_recomputable_attention, split_heads, width_of

if TYPE_CHECKING:
    from transformers import PretrainedConfig


def _fp32_off(x: torch.Tensor) -> torch.autocast:
    """A context with autocast disabled on ``x``'s device type."""
    return torch.autocast(device_type=x.device.type, enabled=False)


def _real_keys(mask: torch.Tensor) -> torch.Tensor:
    """[B, S] mask -> bool [B, S], True at the keys a query attends to: the real ones (a sequence with no real token
    at all: every key, so no row is -inf only; its rows are ignored)."""
    keys = mask.bool()
    return keys | ~keys.any(-1, keepdim=True)


def _log_relation(left: torch.Tensor, right: torch.Tensor, keys: torch.Tensor | None) -> torch.Tensor:
    """``log_softmax(left right^T / sqrt(d))`` over the keys of fp32 [..., S, d] rows, -inf at the keys ``keys``
    (broadcastable to [..., S, S], True = real) leaves out."""
    scores = torch.matmul(left, right.transpose(-1, -2)) / math.sqrt(left.shape[-1])
    if keys is not None:
        scores.masked_fill_(~keys, float("-inf"))  # a new tensor whose backward needs no output
    return F.log_softmax(scores, dim=-1)


def relation(a: torch.Tensor, b: torch.Tensor, num_heads: int, mask: torch.Tensor | None) -> torch.Tensor:
    r"""Log-probabilities ``log_softmax(a_h b_h^T / sqrt(d_head))`` over the keys, [B, H, S, S], fp32, for
    a, b [B, S, D] (or [B, S, H', D/H']) split into ``num_heads`` heads (d_head = D / H). relation(query, key) is MiniLM's
    attention distribution, relation(value, value) its value relation, relation(x, x) MiniLMv2's relations. (The
    losses never hold it whole: :func:`relation_kl` computes the same a chunk of heads at a time.)

    Padding keys (``mask`` [B, S] == 0) are set to -inf before the softmax: exactly zero probability, a log
    of -inf. Padding query rows are computed as usual (over the real keys) and are for the caller to ignore
    (:func:`relation_kl` does). A sequence with no real token at all is left unmasked (a finite, ignored row)."""
    with _fp32_off(a):
        left = split_heads(a.float(), num_heads)
        right = split_heads(b.float().to(a.device), num_heads)
        keys = None if mask is None else _real_keys(mask.to(left.device))[:, None, None, :]
        return _log_relation(left, right, keys)


# How each relation KL is averaged over a batch: "sequence" (MiniLMv2's public code, new runs), "token" (runs
# started before; the field minilm_average of their config.json is missing)
MINILM_AVERAGES = ("sequence", "token")

# The most elements of one fp32 [rows, S, S] chunk of relations (64 MB): relation_kl never holds more of them at
# once (a few such tensors per chunk), in the forward or the backward, instead of whole [B, H, S, S] relations
RELATION_CHUNK_ELEMENTS = 1 << 24


def _row_kl(log_s: torch.Tensor, log_t: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) of each query row, summed over the real keys (``keys`` [rows, 1, S]): [rows, S].
    In place on one new tensor (no autograd here: :class:`_ChunkedRelationKL` writes its gradient)."""
    terms = log_t - log_s
    return terms.mul_(log_t.exp()).masked_fill_(~keys, 0.0).sum(-1)  # a padding key's -inf - -inf NaN -> 0


class _ChunkedRelationKL(torch.autograd.Function):
    r"""``sum_{r, q} w[r, q] * KL_q(R^T_r || R^S_r)`` over (sequence, head) rows r of relations
    ``R_r = softmax(left_r right_r^T / sqrt(d))``, computed ``chunk`` rows at a time: only one chunk's relations
    exist at once. Nothing of them is kept for the backward, which recomputes each chunk's relations and applies
    the KL's gradient with respect to the scores z (per query row, with the real keys' probabilities summing to 1)::

        dKL/dz^S = p^S - p^T,        dKL/dz^T = p^T * (log p^T - log p^S - KL)

    through ``z = left right^T / sqrt(d)``. Inputs: fp32 [R, S, d] rows of each side (R = B * H), the keys each row
    attends to [R, 1, S], the weights [R, S] of its query rows (0 at a padding row)."""

    @staticmethod
    def forward(
        ctx: Any,  # torch's FunctionCtx, which carries the chunk too
        s_left: torch.Tensor,
        s_right: torch.Tensor,
        t_left: torch.Tensor,
        t_right: torch.Tensor,
        keys: torch.Tensor,
        weights: torch.Tensor,
        chunk: int,
    ) -> torch.Tensor:
        ctx.save_for_backward(s_left, s_right, t_left, t_right, keys, weights)
        ctx.chunk = chunk
        total = s_left.new_zeros(())
        for r in range(0, len(s_left), chunk):
            rows = slice(r, r + chunk)
            log_s = _log_relation(s_left[rows], s_right[rows], keys[rows])
            log_t = _log_relation(t_left[rows], t_right[rows], keys[rows])
            total = total + (_row_kl(log_s, log_t, keys[rows]) * weights[rows]).sum()
        return total

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        s_left, s_right, t_left, t_right, keys, weights = ctx.saved_tensors
        student, teacher = any(ctx.needs_input_grad[:2]), any(ctx.needs_input_grad[2:4])
        grads = [
            torch.zeros_like(x) if need else None
            for x, need in zip((s_left, s_right, t_left, t_right), (student, student, teacher, teacher))
        ]
        with _fp32_off(s_left):
            for r in range(0, len(s_left), ctx.chunk):
                rows = slice(r, r + ctx.chunk)
                log_s = _log_relation(s_left[rows], s_right[rows], keys[rows])
                log_t = _log_relation(t_left[rows], t_right[rows], keys[rows])
                w = (weights[rows] * grad)[..., None]  # [rows, S, 1]
                if teacher:  # first: the student's writes over log_s
                    assert grads[2] is not None and grads[3] is not None  # made above for the teacher
                    kl = _row_kl(log_s, log_t, keys[rows])[..., None]
                    d_scores = (log_t - log_s).sub_(kl).mul_(log_t.exp()).masked_fill_(~keys[rows], 0.0).mul_(w)
                    _score_grads(grads[2], grads[3], d_scores, t_left, t_right, rows)
                if student:  # p^S - p^T (both exactly 0 at a padding key), weighted, in place
                    assert grads[0] is not None and grads[1] is not None  # made above for the student
                    d_scores = log_s.exp_().sub_(log_t.exp_()).mul_(w)
                    _score_grads(grads[0], grads[1], d_scores, s_left, s_right, rows)
        return (*grads, None, None, None)


def _score_grads(
    left_grad: torch.Tensor,
    right_grad: torch.Tensor,
    d_scores: torch.Tensor,
    left: torch.Tensor,
    right: torch.Tensor,
    rows: slice,
) -> None:
    """Fill rows ``rows`` of the gradients of ``left`` and ``right`` from ``d_scores``, the gradient of the scores
    ``left right^T / sqrt(d)`` of those rows."""
    d_scores = d_scores.div_(math.sqrt(left.shape[-1]))
    left_grad[rows] = torch.matmul(d_scores, right[rows])
    right_grad[rows] = torch.matmul(d_scores.transpose(-1, -2), left[rows])


def _head_rows(x: torch.Tensor, num_heads: int, device: torch.device) -> torch.Tensor:
    """[B, S, D] (or [B, S, H', D/H']) -> fp32 [B * H, S, D/H]: one row per (sequence, head)."""
    heads = split_heads(x.float().to(device), num_heads)
    return heads.reshape(-1, *heads.shape[2:])


def relation_kl(
    s_left: torch.Tensor,
    s_right: torch.Tensor,
    t_left: torch.Tensor,
    t_right: torch.Tensor,
    s_heads: int,
    t_heads: int,
    mask: torch.Tensor | None,
    average: str = "sequence",
    chunk_rows: int | None = None,
) -> torch.Tensor:
    r"""KL(teacher || student) of the relations ``relation(s_left, s_right, s_heads)`` and ``relation(t_left,
    t_right, t_heads)`` (:func:`relation`), summed over the keys, in fp32, averaged over the heads and the REAL
    query positions of each sequence, then over the sequences (``average="sequence"``, MiniLMv2's public code)::

        1/B' * sum_b 1/(H n_b) * sum_{h, q real} sum_k p^T log(p^T / p^S)

    (n_b: the real tokens of sequence b; B': the sequences with at least one, so an all-padding row changes
    nothing), or over the heads and the real query positions of the whole batch (``average="token"``, runs
    started before)::

        1/(H * sum_b n_b) * sum_{b, h, q real} sum_k p^T log(p^T / p^S)

    Padding query rows are left out; padding keys (p^T = p^S = 0) contribute exactly 0, with no NaN in the value
    or the gradient. With ``mask`` None every position is real (the two averages agree). Student and teacher must
    have the same number of (relation) heads and length.

    Computed ``chunk_rows`` (sequence, head) rows at a time (default: as many as fit
    :data:`RELATION_CHUNK_ELEMENTS`), forward and backward (:class:`_ChunkedRelationKL`): no [B, H, S, S] relation
    is ever held whole. A relation of x with itself takes the same tensor twice."""
    if average not in MINILM_AVERAGES:
        raise ValueError(f"average {average!r}: one of {', '.join(MINILM_AVERAGES)}")
    device = s_left.device
    with _fp32_off(s_left):
        s_rows = [_head_rows(x, s_heads, device) for x in (s_left,) + ((s_right,) if s_right is not s_left else ())]
        t_rows = [_head_rows(x, t_heads, device) for x in (t_left,) + ((t_right,) if t_right is not t_left else ())]
        batch, length = s_left.shape[:2]
        if s_heads != t_heads or t_left.shape[:2] != (batch, length):
            raise UserError(
                f"relation shapes differ: student {(batch, s_heads, length, length)}, teacher "
                f"{(t_left.shape[0], t_heads, t_left.shape[1], t_left.shape[1])} (the same heads and "
                f"length are needed)"
            )
        real = torch.ones(batch, length, dtype=torch.bool, device=device) if mask is None else mask.to(device).bool()
        tokens = real.sum(-1).float()  # n_b, [B]
        if average == "token":
            weights = real / (tokens.sum() * s_heads).clamp_min(1.0)
        else:  # 0 for an all-padding row
            weights = real / (tokens * s_heads).clamp_min(1.0)[:, None] / (tokens > 0).sum().float().clamp_min(1.0)
        keys = _real_keys(real)[:, None, :].repeat_interleave(s_heads, 0)  # [B * H, 1, S]
        chunk = chunk_rows or max(1, RELATION_CHUNK_ELEMENTS // (length * length))
        total: torch.Tensor = _ChunkedRelationKL.apply(  # type: ignore[no-untyped-call]  # torch's apply is unannotated
            s_rows[0], s_rows[-1], t_rows[0], t_rows[-1], keys, weights.repeat_interleave(s_heads, 0), chunk
        )
        return total


def minilm_loss(
    s_q: torch.Tensor,
    s_k: torch.Tensor,
    s_v: torch.Tensor,
    t_q: torch.Tensor,
    t_k: torch.Tensor,
    t_v: torch.Tensor,
    s_heads: int,
    t_heads: int,
    mask: torch.Tensor | None,
    average: str = "sequence",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    r"""MiniLM (v1) loss of the LAST layers: attention-distribution KL (query-key) + value-relation KL
    (value-value), each computed with each model's own head count (d_k = D / heads per model) and reduced by
    :func:`relation_kl` with ``average``. Requires ``s_heads == t_heads`` (MiniLM compares head by head),
    :class:`UserError` otherwise. Returns ``(total, {"attention_kl": ..., "value_kl": ...})``."""
    if s_heads != t_heads:
        raise UserError(
            f"MiniLM distils attention head by head: the student has {s_heads} heads, the teacher "
            f"{t_heads}; pass --relation_heads R (MiniLMv2's relation heads, R dividing both hidden sizes)"
        )
    attention = relation_kl(s_q, s_k, t_q, t_k, s_heads, t_heads, mask, average)
    value = relation_kl(s_v, s_v, t_v, t_v, s_heads, t_heads, mask, average)
    return attention + value, {"attention_kl": attention, "value_kl": value}


def minilmv2_loss(
    s_q: torch.Tensor,
    s_k: torch.Tensor,
    s_v: torch.Tensor,
    t_q: torch.Tensor,
    t_k: torch.Tensor,
    t_v: torch.Tensor,
    relation_heads: int,
    mask: torch.Tensor | None,
    average: str = "sequence",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    r"""MiniLMv2 loss: both models' concatenated heads re-split into ``relation_heads`` (A_r) relation heads
    (D_s / A_r and D_t / A_r wide; :class:`UserError` unless A_r divides both widths), the Q-Q, K-K and V-V
    relations (each scaled by 1 / sqrt(D / A_r) of its own model), each KL reduced by :func:`relation_kl` with
    ``average``, total = their sum (minilmv2.bb's default relation weights, 1 each). Works across widths (no
    projection). Returns ``(total, {"qq_kl": ..., "kk_kl": ..., "vv_kl": ...})``."""
    s_width, t_width = width_of(s_q), width_of(t_q)
    if relation_heads < 1 or s_width % relation_heads or t_width % relation_heads:
        raise UserError(
            f"--relation_heads {relation_heads} must divide both hidden sizes: student {s_width}, teacher {t_width}"
        )
    parts: dict[str, torch.Tensor] = {}
    for name, student, teacher in (("qq_kl", s_q, t_q), ("kk_kl", s_k, t_k), ("vv_kl", s_v, t_v)):
        parts[name] = relation_kl(student, student, teacher, teacher, relation_heads, relation_heads, mask, average)
    return parts["qq_kl"] + parts["kk_kl"] + parts["vv_kl"], parts


@dataclass(frozen=True)
class MiniLMFlags:
    key: ClassVar[str] = "minilm"
    relation_heads: int | None = flag(
        None,
        "MiniLMv2: Q-Q, K-K and V-V relations over R relation heads (R dividing both "
        "widths; works for any head counts); default: MiniLM's attention distributions "
        "and value relations, head by head (equal head counts)",
    )
    minilm_teacher_layer: int | None = flag(
        None,
        "the teacher layer (1-based) the student's last layer learns (default: the "
        "teacher's last, as MiniLM; MiniLMv2 takes an upper-middle one of large "
        "teachers)",
    )

    def __post_init__(self) -> None:
        _positive(self, "relation_heads", "minilm_teacher_layer")


class MiniLM(LayerwiseKD):
    r"""MiniLM distillation (``run_minilm_distil.py``), task-specific: the student's last layer learns the
    teacher layer ``--minilm_teacher_layer`` (default its last) by the self-attention losses above, beside the
    layer-wise scripts' logits loss::

        L = hard_weight * CE(s, y) + soft_weight * T^2 * KL(softmax(t / T) || softmax(s / T))
            + mu * L_MiniLM

    ``L_MiniLM``: MiniLM's attention-distribution and value-relation KL (equal head counts), or with
    ``--relation_heads R`` MiniLMv2's Q-Q, K-K and V-V relation KL over R relation heads (any head counts).
    Relations are [S, S] whatever the width: no projection, so a student of any width learns from any teacher.
    The relations are recomputed from the last layer's query/key/value projections
    (:mod:`fine_tune.models.attention_capture`). Each KL is averaged per sequence, then over the batch
    (``average="sequence"``, recorded as ``minilm_average``); a run started before keeps its batch-token average
    (``"token"``, :func:`relation_kl`)."""

    name = "minilm"
    flag_groups = (MiniLMFlags,)
    projects = False

    def __init__(
        self,
        num_student_layers: int,
        num_teacher_layers: int,
        hard_weight: float,
        soft_weight: float,
        temperature: float,
        mu: float,
        *,
        student_heads: int,
        teacher_heads: int,
        relation_heads: int | None = None,
        teacher_layer: int | None = None,
        student_width: int | None = None,
        teacher_width: int | None = None,
        padding: str = "max_length",
        average: str = "sequence",
        **common: Any,
    ) -> None:
        super().__init__(
            num_student_layers,
            num_teacher_layers,
            hard_weight,
            soft_weight,
            temperature,
            mu,
            padding,
            student_width=student_width,
            teacher_width=teacher_width,
            **common,
        )
        self.teacher_layer = teacher_layer or num_teacher_layers
        if not 1 <= self.teacher_layer <= num_teacher_layers:
            raise UserError(
                f"--minilm_teacher_layer {self.teacher_layer}: the teacher has {num_teacher_layers} "
                f"layers (1..{num_teacher_layers})"
            )
        self.student_heads, self.teacher_heads, self.relation_heads = student_heads, teacher_heads, relation_heads
        # the relations of one layer of each model: the student's last and the chosen teacher layer (no hidden state)
        self.records = (
            {
                "student": LayerRecord(hidden=frozenset(), attention=frozenset({num_student_layers})),
                "teacher": LayerRecord(hidden=frozenset(), attention=frozenset({self.teacher_layer})),
            }
            if mu
            else dict.fromkeys(("student", "teacher"), PLAIN_RECORD)
        )
        if average not in MINILM_AVERAGES:
            raise ValueError(f"average {average!r}: one of {', '.join(MINILM_AVERAGES)}")
        self.average = average
        if relation_heads is None and student_heads != teacher_heads:
            raise UserError(
                f"MiniLM distils attention head by head: the student has {student_heads} heads, the "
                f"teacher {teacher_heads}; pass --relation_heads R (MiniLMv2's relation heads, R dividing "
                f"both hidden sizes)"
            )
        if (
            relation_heads is not None
            and student_width
            and teacher_width
            and (student_width % relation_heads or teacher_width % relation_heads)
        ):
            raise UserError(
                f"--relation_heads {relation_heads} must divide both hidden sizes: student "
                f"{student_width}, teacher {teacher_width}"
            )

    @classmethod
    def own_arguments(cls, settings: MethodSettings) -> dict[str, Any]:
        student, teacher = settings.need_student(), settings.need_teacher()
        return {
            "student_heads": student.num_heads,
            "teacher_heads": teacher.num_heads or student.num_heads,
            "relation_heads": settings.group(MiniLMFlags).relation_heads,
            "average": settings.legacy.get("minilm_average", "sequence"),
            "teacher_layer": settings.group(MiniLMFlags).minilm_teacher_layer,
        }

    def record(self) -> dict[str, Any]:
        return {"minilm_average": self.average}

    def check_models(self, teacher_config: PretrainedConfig, student_family: str) -> None:
        if self.mu:
            check_recomputable_attention(teacher_config.model_type, student_family, "MiniLM")

    @property
    def needs_hidden_states(self) -> bool:  # type: ignore[override]  # a property where Method has a plain attribute
        return False  # the attention projections only

    def recorded_layers(self, role: str) -> LayerRecord:
        return self.records[role]

    @property
    def ignores_padding(self) -> bool:  # type: ignore[override]  # a property where Method has a plain attribute
        return True  # relations exclude padding keys and padding query rows in either padding

    def losses(
        self, batch: Mapping[str, Any], student: ModelOutputs, teacher: ModelOutputs | None
    ) -> dict[str, torch.Tensor]:
        parts = logits_kd_loss(
            student.logits,
            None if teacher is None else teacher.logits,
            batch.get("labels"),
            self.hard_weight,
            self.soft_weight,
            self.temperature,
            self.regression,
        )
        loss = parts["logits_loss"]
        if self.mu:
            # uses_teacher, and the forwards record the attention inputs this method declares (recorded_layers)
            assert teacher is not None and student.attention_inputs is not None and teacher.attention_inputs is not None
            mask = student.attention_mask
            sq, sk, sv = student.attention_inputs[-1]
            dev = sq.device
            tq, tk, tv = (x.to(dev) for x in teacher.attention_inputs[self.teacher_layer - 1])
            if self.relation_heads is None:
                total, kl = minilm_loss(
                    sq, sk, sv, tq, tk, tv, self.student_heads, self.teacher_heads, mask, self.average
                )
            else:
                total, kl = minilmv2_loss(sq, sk, sv, tq, tk, tv, self.relation_heads, mask, self.average)
            parts.update({k: self.mu * v for k, v in kl.items()})
            parts["attention_relation_loss"] = self.mu * total
            loss = loss + self.mu * total
        parts["loss"] = loss
        return parts

    def describe_mapping(self) -> str:
        what = (
            "attention, value relation"
            if self.relation_heads is None
            else f"Q-Q, K-K, V-V relations, {self.relation_heads} relation heads"
        )
        return f"S{self.ls}<-T{self.teacher_layer} ({what})"
