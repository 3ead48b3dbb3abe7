r"""TinyBERT's task-specific distillation: its losses, its layer mapping and the method (``run_tinybert_distil.py``).

Jiao, Yin, Shang, Jiang, Chen, Li, Wang, Liu, "TinyBERT: Distilling BERT for Natural Language Understanding",
Findings of EMNLP 2020. Transformer-layer distillation (eq. 7-9), embedding-layer distillation (eq. 10) and
prediction-layer distillation (eq. 11)::

    L_attn = 1/h * sum_{i=1..h} MSE(A_i^S, A_i^T)          A = Q K^T / sqrt(d_k)   (pre-softmax, eq. 7-8)
    L_hidn = MSE(H^S W_h, H^T)                              (eq. 9; eq. 10 for the embeddings, W_e)
    L_pred = CE(z^T / t, z^S / t) = -softmax(z^T/t) . log_softmax(z^S/t)        (eq. 11; the released code
                                                                               averages it over the classes too)

with the uniform layer mapping n = g(m) = m * N / M (student layer m learns teacher layer g(m); g(0) = 0 for
the embeddings). Conventions follow the authors' released code (huawei-noah/Pretrained-Language-Model,
TinyBERT/task_distill.py): the attention maps are BERT's attention *scores* (before softmax, the -10000 mask
already added) with every value <= -1e2 replaced by 0, so padded keys contribute 0 on both sides, and every
MSE is ``nn.MSELoss()`` (a plain mean over all elements).

Inputs: per layer, the attention's query / key / value projections [B, S, D] (D the hidden size, before the
heads are split; or [B, S, H, D/H], the heads already split) and the attention mask [B, S] (1 = real token,
0 = padding, right padding). Every function
computes in fp32 (autocast off), whatever the input dtype or the surrounding autocast.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F

from ..engine.protocol import PLAIN_RECORD, LayerRecord, ModelOutputs
from ..errors import UserError
from ..layer_mapping import uniform_layers
from ..models.projection import PretrainedProjection
from ..settings import DistilFlags, LayerwiseFlags, flag
from .base import MethodSettings
from .layerwise import LayerwiseKD
from .logits_kd import check_temperature, logits_kd_loss

if TYPE_CHECKING:
    from transformers import PretrainedConfig


def _fp32_off(x: torch.Tensor) -> torch.autocast:
    """A context with autocast disabled on ``x``'s device type."""
    return torch.autocast(device_type=x.device.type, enabled=False)


def full_width(x: torch.Tensor) -> torch.Tensor:
    """[B, S, D] as it is; [B, S, H, D/H] (heads split) -> [B, S, D]."""
    return x.flatten(2) if x.dim() == 4 else x


def width_of(x: torch.Tensor) -> int:
    """The full width D of [B, S, D] or [B, S, H, D/H] (without flattening a head-split view)."""
    return x.shape[2] * x.shape[3] if x.dim() == 4 else x.shape[-1]


def _token_mask(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """[B, S] mask -> float, broadcastable over ``like`` ([B, S, D] or [B, S, H, d]), on its device."""
    real = mask.to(like.device).float()
    return real.view(*real.shape, *([1] * (like.dim() - 2)))


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """[B, S, D] -> [B, H, S, D/H] (BERT's ``transpose_for_scores``: head h takes dims h*D/H .. (h+1)*D/H - 1).
    ``x`` may come with its heads split already, [B, S, H', D/H'] (a view of head-major storage: then the result
    is that storage, no copy, when H' = H). Raises :class:`UserError` when D is not a multiple of ``num_heads``."""
    if x.dim() == 4:
        if x.shape[2] == num_heads:
            return x.transpose(1, 2)
        x = full_width(x)
    batch, length, width = x.shape
    if num_heads < 1 or width % num_heads:
        raise UserError(
            f"cannot split a hidden size of {width} into {num_heads} heads: {width} is not a multiple of {num_heads}"
        )
    return x.reshape(batch, length, num_heads, width // num_heads).permute(0, 2, 1, 3)


def _key_mask(mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    """[B, S] mask -> bool [B, 1, 1, S] (True = real key), on ``like``'s device; None stays None."""
    if mask is None:
        return None
    return mask.to(like.device).bool()[:, None, None, :]


def attention_scores(query: torch.Tensor, key: torch.Tensor, num_heads: int, mask: torch.Tensor | None) -> torch.Tensor:
    r"""TinyBERT's attention map A = Q K^T / sqrt(d_head) per head, [B, H, S, S], fp32, *before* softmax
    (unnormalised, as the released code takes BERT's attention scores), with every padding KEY position
    set to 0 (the released code adds BERT's -10000 mask, then replaces values <= -1e2 by 0; here exactly the
    padded keys are zeroed, so a genuine score below -100 is kept). Padding query rows are left as computed.
    ``mask`` [B, S] (1 = real) or None (no padding)."""
    with _fp32_off(query):
        q = split_heads(query.float(), num_heads)
        k = split_heads(key.float(), num_heads)
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
        keys = _key_mask(mask, scores)
        if keys is not None:
            scores = scores.masked_fill(~keys, 0.0)
        return scores


def attention_mse(
    student_scores: torch.Tensor, teacher_scores: torch.Tensor, mask: torch.Tensor | None, masked: bool
) -> torch.Tensor:
    r"""TinyBERT's attention loss (eq. 8) between [B, H, S, S] score maps, head by head, in fp32.

    ``masked=False`` (the released code, fixed-length padding): ``nn.MSELoss()``, the plain mean over all
    B*H*S*S elements (padded keys are 0 on both sides and count in the denominator)::

        1/(B H S^2) * sum_{b,h,q,k} (A^S - A^T)^2

    ``masked=True`` (the toolkit's dynamic padding): the mean over the real (query, key) pairs only, over
    heads too, so the loss does not depend on how far a batch is padded::

        1/(H * sum_b n_b^2) * sum_{b,h} sum_{q,k real} (A^S - A^T)^2        (n_b real tokens of sequence b)

    The student and teacher must have the same number of heads (:class:`UserError` otherwise)."""
    if student_scores.shape[1] != teacher_scores.shape[1]:
        raise UserError(
            f"TinyBERT's attention loss compares head by head: the student has "
            f"{student_scores.shape[1]} attention heads, the teacher {teacher_scores.shape[1]}"
        )
    with _fp32_off(student_scores):
        squared = (student_scores.float() - teacher_scores.float().to(student_scores.device)).pow(2)
        if not masked or mask is None:
            return squared.mean()
        real = mask.to(squared.device).float()
        pairs = real[:, None, :, None] * real[:, None, None, :]  # [B, 1, S, S]
        count = pairs.sum() * squared.shape[1]
        return (squared * pairs).sum() / count.clamp_min(1.0)


def attention_mse_from_projections(
    s_query: torch.Tensor,
    s_key: torch.Tensor,
    t_query: torch.Tensor,
    t_key: torch.Tensor,
    s_heads: int,
    t_heads: int,
    mask: torch.Tensor | None,
    masked: bool,
    head_mean: bool = False,
) -> torch.Tensor:
    r""":func:`attention_mse` of the :func:`attention_scores` maps, computed from the projections without forming
    any [S, S] map. With ``A = Q K^T / sqrt(d)`` (padding keys zeroed: ``K`` masked; under ``masked`` padding
    queries too)::

        sum_{q,k} (A^S - A^T)^2 = ||A^S||^2 + ||A^T||^2 - 2 <A^S, A^T>
        ||Q K^T||_F^2 = sum((Q^T Q) * (K^T K)),   <Q_s K_s^T, Q_t K_t^T> = sum((Q_s^T Q_t) * (K_s^T K_t))

    per batch row and head: d x d Gram matrices, O(S d^2) work instead of O(S^2 d) and no B*H*S*S tensor. The
    equality is exact, but the right-hand side subtracts squared norms of the size of ||A||^2 to get a loss that
    can be many orders of magnitude smaller (a student near its teacher): made in fp32, the Grams' rounding
    (relative to ||A||^2, and far worse under TF32 matmuls) swamps the loss, which can even come out negative.
    So the Grams are made and combined in float64 from the fp32 inputs (every product of two fp32 numbers is
    exact in float64, and TF32 never applies to float64): the loss stays accurate relative to itself down to
    ``MSE / mean(A^2) = 1e-10`` and below (tests/test_attention_losses.py), at about twice the fp32 Grams' cost
    on a CPU, small beside the models' forward. A result below 0 (float64 rounding, at most ~1e-16 ||A||^2) is
    clamped to 0. ``head_mean``: the heads' mean maps, ``(1/h) sum_i Q_i K_i^T / sqrt(d)``, i.e. ``Q K^T / (h
    sqrt(d))`` over the full width. Same value and gradient as ``attention_mse(attention_scores(...), ...)``."""
    if not head_mean and s_heads != t_heads:
        raise UserError(
            f"TinyBERT's attention loss compares head by head: the student has {s_heads} attention "
            f"heads, the teacher {t_heads}"
        )
    with _fp32_off(s_query):
        dev = s_query.device
        sq, sk = s_query.float(), s_key.float()
        tq, tk = t_query.to(dev).float(), t_key.to(dev).float()
        if mask is not None:  # (elementwise products keep a head-major input head-major)
            sk, tk = sk * _token_mask(mask, sk), tk * _token_mask(mask, tk)
            if masked:
                sq, tq = sq * _token_mask(mask, sq), tq * _token_mask(mask, tq)
        s_width, t_width = width_of(s_query), width_of(t_query)
        if head_mean:  # one "head" of the full width, scaled by 1 / (h sqrt(d_head))
            s_scale = 1.0 / (s_heads * math.sqrt(s_width // s_heads))
            t_scale = 1.0 / (t_heads * math.sqrt(t_width // t_heads))
            sq, sk, tq, tk = (full_width(x)[:, None] for x in (sq, sk, tq, tk))
        else:
            s_scale, t_scale = 1.0 / math.sqrt(s_width // s_heads), 1.0 / math.sqrt(t_width // t_heads)
            sq, sk = split_heads(sq, s_heads), split_heads(sk, s_heads)
            tq, tk = split_heads(tq, t_heads), split_heads(tk, t_heads)

        sq, sk, tq, tk = sq.double(), sk.double(), tq.double(), tk.double()

        def gram(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # [B, H, d_a, d_b], float64
            return torch.matmul(a.transpose(-1, -2), b)

        student = (gram(sq, sq) * gram(sk, sk)).sum() * s_scale**2
        teacher = (gram(tq, tq) * gram(tk, tk)).sum() * t_scale**2
        cross = (gram(sq, tq) * gram(sk, tk)).sum() * (s_scale * t_scale)
        total = (student + teacher - 2 * cross).clamp_min(0.0)
        heads = sq.shape[1]
        if masked and mask is not None:
            return (total / (heads * mask.to(dev).double().sum(-1).pow(2).sum()).clamp_min(1.0)).float()
        return (total / max(float(sq.shape[0] * heads * s_query.shape[1] ** 2), 1.0)).float()


def hidden_mse(
    student_projected: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None, masked: bool
) -> torch.Tensor:
    r"""TinyBERT's hidden-state / embedding loss (eq. 9-10), MSE(H^S W_h, H^T) of [B, S, D_t] tensors (the
    student already projected by W_h / W_e), in fp32. ``masked=False`` (the released code): the plain mean
    over all B*S*D_t elements. ``masked=True`` (dynamic padding): the mean over the real tokens and every
    dimension, ``sum_{b, s real, d} (h^S - h^T)^2 / (D_t * sum_b n_b)``."""
    with _fp32_off(student_projected):
        if not masked or mask is None:  # one fused kernel (forward and backward)
            return F.mse_loss(student_projected.float(), teacher.float().to(student_projected.device))
        squared = (student_projected.float() - teacher.float().to(student_projected.device)).pow(2)
        real = mask.to(squared.device).float()
        count = real.sum() * squared.shape[-1]
        return (squared * real[..., None]).sum() / count.clamp_min(1.0)


def soft_cross_entropy(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float, reduction: str = "mean"
) -> torch.Tensor:
    r"""TinyBERT's prediction-layer loss (eq. 11): the soft cross-entropy of the logits [B, C] divided by the
    temperature T, in fp32.

    ``reduction="mean"`` (the released code: ``soft_cross_entropy(predicts, targets) = (-softmax(targets) *
    log_softmax(predicts)).mean()``, called on ``logits / T``, task_distill.py), the mean over the batch AND the
    C classes::

        1/(B C) * sum_b sum_c -softmax(z^T_b / T)_c * log_softmax(z^S_b / T)_c

    ``reduction="batchmean"`` (the paper's eq. 11 as a per-example cross-entropy, TextBrewer's form), summed over
    the classes and averaged over the batch, C times the released value::

        1/B * sum_b sum_c -softmax(z^T_b / T)_c * log_softmax(z^S_b / T)_c

    Either with NO T^2 factor (the released code has none, unlike Hinton et al.'s KD), so at T > 1 its gradients
    are T^2 times smaller than a T^2-scaled KL's."""
    if not temperature > 0:
        raise UserError(f"the temperature must be positive, got {temperature}")
    if reduction not in SOFT_REDUCTIONS:
        raise ValueError(f"reduction {reduction!r}: expected one of {SOFT_REDUCTIONS}")
    with _fp32_off(student_logits):
        log_student = F.log_softmax(student_logits.float() / temperature, dim=-1)
        teacher = F.softmax(teacher_logits.float().to(student_logits.device) / temperature, dim=-1)
        terms = -teacher * log_student
        return terms.mean() if reduction == "mean" else terms.sum(-1).mean()


def tinybert_layer_map(num_student_layers: int, num_teacher_layers: int) -> list[int]:
    """TinyBERT's uniform mapping g(m) = m * N / M: student layer m (1-based, m = 1..M) learns teacher layer
    g(m) (1-based), for the attention maps and hidden states alike; the embeddings map 0 <- 0 (not listed).
    4 of 12: [3, 6, 9, 12]; 6 of 12: [2, 4, ..., 12]; 4 of 24: [6, 12, 18, 24]. When M does not divide N,
    g(m) = ceil(m * N / M), evenly spread up to the last layer (4 of 6: [2, 3, 5, 6]). Raises
    :class:`UserError` when M > N."""
    m, n = num_student_layers, num_teacher_layers
    if m < 1 or n < 1:
        raise UserError(f"TinyBERT's layer map needs at least one layer: student {m}, teacher {n}")
    if m > n:
        raise UserError(
            f"TinyBERT maps student layer m to teacher layer m*N/M: the student's {m} layers exceed the teacher's {n}"
        )
    return uniform_layers(m, n)


@dataclass(frozen=True)
class TinyBertFlags:
    key: ClassVar[str] = "tinybert"
    tinybert_stage: str = flag(
        "intermediate",
        "TinyBERT's task-specific distillation stage: intermediate (attention-score "
        "and hidden-state MSE of the mapped layers, embedding MSE; no prediction "
        "loss) or prediction (soft cross-entropy with the teacher's logits, "
        "from the intermediate stage's student: --student_ptrain_ver of its export)",
        choices=("intermediate", "prediction"),
    )
    tinybert_attention: str = flag(
        "per_head",
        "per_head: attention-score MSE head by head (TinyBERT; equal head "
        "counts); head_mean: MSE of the head-averaged score maps, for a student "
        "whose head count differs from the teacher's (a deviation)",
        choices=("per_head", "head_mean"),
    )
    tinybert_soft_reduction: str = flag(
        "mean",
        "prediction stage: mean: the soft cross-entropy averaged over the "
        "batch and the classes (the released code); batchmean: summed over "
        "the classes, averaged over the batch (the paper's eq. 11, "
        "TextBrewer's; C times larger)",
        choices=("mean", "batchmean"),
    )
    tinybert_regression_target: str = flag(
        "gold",
        "prediction stage on a regression task: gold: MSE to the gold "
        "score, no teacher forward (the released code); teacher: MSE to "
        "the teacher's score",
        choices=("gold", "teacher"),
    )
    tinybert_intermediate_schedule: str = flag(
        "constant",
        "intermediate stage's learning rate: constant, no warmup "
        "(the released code's schedule 'none'); linear: "
        "--warmup_step warmup, then linear decay (the prediction "
        "stage's, always)",
        choices=("constant", "linear"),
    )
    tinybert_incomplete_batches: str = flag(
        "skip",
        "skip: each epoch trains only full micro-batches (the released "
        "loop skips a batch smaller than batch_size / accumulation); "
        "train: its short last micro-batch trains too",
        choices=("skip", "train"),
    )
    tinybert_fit_dense: str = flag(
        "always",
        "the intermediate stage's W_h (the released code's fit_dense, one learned "
        "projection shared by every student layer and the embeddings): always "
        "(the released code: also at equal widths, started from the pretrained "
        "student's fit_dense when its weights hold one) or when_widths_differ "
        "(none at the teacher's width, always started from N(0, 0.02): the "
        "toolkit's earlier rule, doc/methods.md \"Fidelity fixes\")",
        choices=("always", "when_widths_differ"),
    )


@dataclass(frozen=True)
class TinyBertDistilFlags(DistilFlags):
    """TinyBERT's prediction stage: the soft cross-entropy alone (its released code's defaults)."""

    soft_weight: float = flag(
        1.0,
        "weight of TinyBERT's prediction-layer loss (prediction stage): the soft "
        "cross-entropy -softmax(t/T) . log_softmax(s/T); on a regression task the MSE "
        "to --tinybert_regression_target",
    )
    hard_weight: float = flag(
        0.0,
        "weight of the cross-entropy with the gold labels (regression: the MSE to the gold score) (prediction stage)",
    )


class TinyBERT(LayerwiseKD):
    r"""TinyBERT's task-specific distillation (``run_tinybert_distil.py``), its two stages as its released code:

    ``--tinybert_stage intermediate``: the Transformer-layer and embedding-layer losses, no prediction loss::

        L = mu * ( sum_{m=1..M} L_attn(A^S_m, A^T_{g(m)}) + sum_{m=1..M} MSE(H^S_m W_h, H^T_{g(m)})
                   + MSE(E^S W_h, E^T) )

    (sums over layers, as the released code; W_h one learned projection shared by every layer and the
    embeddings, :mod:`fine_tune.models.projection`, at any widths as the released code's ``fit_dense``, started
    from a pretrained student's ``fit_dense`` when its weights hold one; ``fit_dense="when_widths_differ"``, the
    toolkit's rule before issue 30: none at equal widths, always started from N(0, 0.02)).

    ``--tinybert_stage prediction``: ``L = soft_weight * soft_cross_entropy(s, t, T) + hard_weight * CE(s, y)``
    (defaults 1 and 0: the released code's ``--pred_distill``; the soft cross-entropy averaged over batch and
    classes, ``soft_reduction="mean"``, or summed over the classes, ``"batchmean"``), started from the
    intermediate stage's student (``--student_ptrain_ver`` of its export). A regression task (one output):
    ``L = soft_weight * MSE(s, y) + hard_weight * MSE(s, y)`` against the gold score (``regression_target="gold"``,
    the released code's ``MSELoss()(student_logits.view(-1), label_ids.view(-1))``; no teacher forward), or
    ``hard_weight * MSE(s, y) + soft_weight * MSE(s, t)`` (``"teacher"``).

    How it trains, as the released code (the run plan resolves :attr:`schedule` and :attr:`drop_last` into the
    engine's settings): the intermediate stage at a constant learning rate (``intermediate_schedule="constant"``,
    BertAdam's ``schedule='none'``; ``"linear"``: the warmup/decay of every script), the prediction stage with the
    linear warmup/decay; W_h with the student's schedule; each epoch's incomplete last micro-batch skipped
    (``incomplete_batches="skip"``; ``"train"`` keeps it).

    The attention maps are recomputed from each layer's query and key projections
    (:mod:`fine_tune.models.attention_capture`); student and teacher need the same number of heads, unless
    ``--tinybert_attention head_mean`` (a deviation) compares the maps averaged over each model's heads,
    ``MSE(1/h_S sum_i A^S_i, 1/h_T sum_i A^T_i)``."""

    name = "tinybert"
    flag_groups = (TinyBertFlags, TinyBertDistilFlags)
    shared_projection = True
    projection_weights = "fit_dense"

    def __init__(
        self,
        num_student_layers: int,
        num_teacher_layers: int,
        hard_weight: float,
        soft_weight: float,
        temperature: float,
        mu: float,
        *,
        stage: str = "intermediate",
        student_heads: int | None = None,
        teacher_heads: int | None = None,
        attention: str = "per_head",
        padding: str = "max_length",
        soft_reduction: str = "mean",
        regression_target: str = "gold",
        intermediate_schedule: str = "constant",
        incomplete_batches: str = "skip",
        fit_dense: str = "always",
        pretrained_projection: PretrainedProjection | None = None,
        **common: Any,
    ) -> None:
        if stage not in TINYBERT_STAGES:
            raise UserError(f"--tinybert_stage {stage!r}: choose one of {', '.join(TINYBERT_STAGES)}")
        super().__init__(
            num_student_layers, num_teacher_layers, hard_weight, soft_weight, temperature, mu, padding, **common
        )
        self.stage = stage
        self.teacher_layers = tinybert_layer_map(num_student_layers, num_teacher_layers)
        # the intermediate stage reads every student layer, and of the teacher the embeddings and the mapped layers;
        # the prediction stage logits only
        mapped = frozenset(self.teacher_layers)
        self.records = (
            {
                "student": LayerRecord(hidden=None, attention=None),
                "teacher": LayerRecord(hidden=mapped | {0}, attention=mapped),
            }
            if stage == "intermediate"
            else dict.fromkeys(("student", "teacher"), PLAIN_RECORD)
        )
        if attention not in TINYBERT_ATTENTION:
            raise UserError(f"--tinybert_attention {attention!r}: choose one of {', '.join(TINYBERT_ATTENTION)}")
        self.attention = attention
        if (
            stage == "intermediate"
            and attention == "per_head"
            and student_heads is not None
            and teacher_heads is not None
            and student_heads != teacher_heads
        ):
            raise UserError(
                f"TinyBERT's attention loss compares head by head: the student has {student_heads} "
                f"attention heads (--num_attention_heads), the teacher {teacher_heads} (or pass "
                f"--tinybert_attention head_mean)"
            )
        self.student_heads, self.teacher_heads = student_heads, teacher_heads
        for name, value, choices in (
            ("--tinybert_soft_reduction", soft_reduction, SOFT_REDUCTIONS),
            ("--tinybert_regression_target", regression_target, REGRESSION_TARGETS),
            ("--tinybert_intermediate_schedule", intermediate_schedule, INTERMEDIATE_SCHEDULES),
            ("--tinybert_incomplete_batches", incomplete_batches, INCOMPLETE_BATCHES),
            ("--tinybert_fit_dense", fit_dense, TINYBERT_FIT_DENSE),
        ):
            if value not in choices:
                raise UserError(f"{name} {value!r}: choose one of {', '.join(choices)}")
        self.soft_reduction, self.regression_target = soft_reduction, regression_target
        self.schedule = intermediate_schedule if stage == "intermediate" else "linear"
        self.drop_last = incomplete_batches == "skip"
        if self.projection_optimiser is not None:  # W_h learns on the student's schedule
            self.projection_optimiser = replace(self.projection_optimiser, schedule=self.schedule)
        self.fit_dense = fit_dense
        # the pretrained student's fit_dense: W_h starts from it (checked here, before anything is written), as the
        # released code's does; when_widths_differ keeps the old rule whole (N(0, 0.02))
        self.found_projection = pretrained_projection
        used = self.needs_projection and fit_dense == "always"
        self.pretrained_projection = pretrained_projection if used else None
        if self.pretrained_projection is not None:
            if self.student_width is None or self.teacher_width is None:
                raise ValueError(
                    "a pretrained W_h is checked against both widths: give student_width and teacher_width"
                )
            way_around = (
                "to compare the hidden states without W_h, as before issue 30"
                if self.student_width == self.teacher_width
                else "to start W_h from N(0, 0.02)"
            )
            self.pretrained_projection.check(
                self.student_width,
                self.teacher_width,
                "TinyBERT's W_h",
                f"pass --tinybert_fit_dense when_widths_differ {way_around}",
            )

    @classmethod
    def build(cls, settings: MethodSettings) -> TinyBERT:
        d, stage, mu = (
            settings.group(DistilFlags),
            settings.group(TinyBertFlags).tinybert_stage,
            settings.group(LayerwiseFlags).mu,
        )
        if stage == "intermediate" and not mu:
            raise UserError("--mu 0: TinyBERT's intermediate stage has no other loss; the student would learn nothing")
        if stage == "prediction" and not (d.hard_weight or d.soft_weight):
            raise UserError(
                "--hard_weight and --soft_weight are both 0: TinyBERT's prediction stage would learn nothing"
            )
        rules = cls.released_rules(settings)
        check_temperature(
            settings.regression,
            d.softmax_temp,
            "the MSE to the gold score" if rules["regression_target"] == "gold" else "the MSE to the teacher's score",
        )
        student, teacher = settings.need_student(), settings.need_teacher()
        return cls(
            student.num_layers,
            teacher.num_layers,
            d.hard_weight,
            d.soft_weight,
            d.softmax_temp,
            mu,
            stage=stage,
            student_heads=student.num_heads,
            teacher_heads=teacher.num_heads,
            attention=settings.group(TinyBertFlags).tinybert_attention,
            padding=settings.padding,
            student_width=student.hidden_size,
            teacher_width=teacher.hidden_size,
            projection_optimiser=settings.optimiser,
            regression=settings.regression,
            **rules,
            pretrained_projection=settings.student_projection,
        )

    @staticmethod
    def released_rules(settings: MethodSettings) -> dict[str, Any]:
        """The rules a fidelity fix made the released code's (issue 30), from their flags; a run started before a
        fix keeps its old rule (``settings.legacy``, config.LEGACY_FIELDS)."""
        t, old = settings.group(TinyBertFlags), settings.legacy
        return {
            "soft_reduction": old.get("tinybert_soft_reduction", t.tinybert_soft_reduction),
            "regression_target": old.get("tinybert_regression_target", t.tinybert_regression_target),
            "intermediate_schedule": old.get("tinybert_intermediate_schedule", t.tinybert_intermediate_schedule),
            "incomplete_batches": old.get("tinybert_incomplete_batches", t.tinybert_incomplete_batches),
            "fit_dense": old.get("tinybert_fit_dense", t.tinybert_fit_dense),
        }

    def check_training_rows(self, rows: int, micro_batch: int, source: str) -> None:
        if self.drop_last and rows < micro_batch:
            raise UserError(
                f"{source}: {rows} rows, fewer than one micro-batch ({micro_batch} rows: --batch_size / "
                f"--accum_step); TinyBERT skips incomplete batches as its released code, so nothing would "
                f"train: lower --batch_size, or pass --tinybert_incomplete_batches train"
            )

    def check_models(self, teacher_config: PretrainedConfig, student_family: str) -> None:
        if self.intermediate:
            check_recomputable_attention(teacher_config.model_type, student_family, "TinyBERT")

    @property
    def intermediate(self) -> bool:
        return self.stage == "intermediate"

    @property
    def needs_hidden_states(self) -> bool:  # type: ignore[override]  # a property where Method has a plain attribute
        return self.intermediate

    def recorded_layers(self, role: str) -> LayerRecord:
        return self.records[role]

    @property
    def needs_projection(self) -> bool:
        """The intermediate stage's W_h: at any widths (``fit_dense="always"``, the released code's student always
        applies its ``fit_dense``), or only where the student's width differs from the teacher's."""
        if not (self.intermediate and self.mu and self.student_width is not None):
            return False
        return self.fit_dense == "always" or super().needs_projection

    def notes(self) -> list[str]:
        found = self.found_projection
        if found is None or not self.intermediate:
            return []
        if self.pretrained_projection is not None:
            return [
                f"W_h starts from the pretrained student's {found.prefix}weight/bias in {found.file} (the "
                f"released code's fit_dense), not from N(0, 0.02)"
            ]
        return [
            f"{found.file} holds a {found.prefix}weight: unused under --tinybert_fit_dense {self.fit_dense} (W_h "
            f"starts from N(0, 0.02), or there is none at the teacher's width)"
        ]

    @property
    def every_parameter_learns(self) -> bool:  # type: ignore[override]  # a property where Method has a plain attribute
        """The intermediate stage trains no classifier head (nor the pooler)."""
        return not self.intermediate

    @property
    def ignores_padding(self) -> bool:  # type: ignore[override]  # a property where Method has a plain attribute
        return not self.intermediate or self.masked

    @property
    def gold_regression(self) -> bool:
        """The prediction stage of a regression task against the gold score: no teacher forward."""
        return not self.intermediate and self.regression and self.regression_target == "gold"

    @property
    def uses_teacher(self) -> bool:  # type: ignore[override]  # a property where Method has a plain attribute
        return self.intermediate or (bool(self.soft_weight) and not self.gold_regression)

    def losses(
        self, batch: Mapping[str, Any], student: ModelOutputs, teacher: ModelOutputs | None
    ) -> dict[str, torch.Tensor]:
        if not self.intermediate:
            if self.gold_regression:  # the released code: MSELoss()(student_logits.view(-1), label_ids.view(-1))
                return gold_regression_loss(student.logits, batch["labels"], self.hard_weight, self.soft_weight)
            if self.regression:  # --tinybert_regression_target teacher: MSE to the teacher's score
                parts = logits_kd_loss(
                    student.logits,
                    None if teacher is None else teacher.logits,  # none with --soft_weight 0 (uses_teacher)
                    batch.get("labels"),
                    self.hard_weight,
                    self.soft_weight,
                    1.0,
                    regression=True,
                )
                parts["loss"] = parts["logits_loss"]
                return parts
            parts = {}
            loss = student.logits.new_zeros((), dtype=torch.float32)
            if self.soft_weight:
                assert teacher is not None  # uses_teacher: a soft loss not against the gold score
                parts["soft_loss"] = soft_cross_entropy(
                    student.logits, teacher.logits, self.temperature, self.soft_reduction
                )
                loss = loss + self.soft_weight * parts["soft_loss"]
            if self.hard_weight and batch.get("labels") is not None:
                parts["hard_loss"] = F.cross_entropy(student.logits.float(), batch["labels"])
                loss = loss + self.hard_weight * parts["hard_loss"]
            parts["loss"] = loss
            return parts
        mask = student.attention_mask
        student = self.in_teacher_space(student)
        # the intermediate stage: uses_teacher, and both forwards keep what recorded_layers declares
        assert (
            student.hidden_states is not None
            and student.attention_inputs is not None
            and student.embeddings is not None
        )
        assert teacher is not None and teacher.hidden_states is not None and teacher.attention_inputs is not None
        assert teacher.embeddings is not None
        dev = student.hidden_states[0].device
        parts = {}
        attention, hidden = [], []
        for m, t in enumerate(self.teacher_layers, 1):
            sq, sk, _ = student.attention_inputs[m - 1]
            tq, tk, _ = teacher.attention_inputs[t - 1]
            # = attention_mse(attention_scores(...)), without the [B, H, S, S] maps (head_mean: the heads' mean maps)
            attention.append(
                attention_mse_from_projections(
                    sq,
                    sk,
                    tq,
                    tk,
                    self.student_heads or 1,
                    self.teacher_heads or 1,
                    mask,
                    self.masked,
                    head_mean=self.attention == "head_mean",
                )
            )
            hidden.append(
                hidden_mse(student.hidden_states[m - 1], teacher.hidden_states[t - 1].to(dev), mask, self.masked)
            )
        embedding = hidden_mse(student.embeddings, teacher.embeddings.to(dev), mask, self.masked)
        parts["attention_loss"] = self.mu * torch.stack(attention).sum()
        parts["hidden_loss"] = self.mu * torch.stack(hidden).sum()
        parts["embedding_loss"] = self.mu * embedding
        parts.update({f"attention_loss_{m}": self.mu * a for m, a in enumerate(attention, 1)})
        parts.update({f"hidden_loss_{m}": self.mu * h for m, h in enumerate(hidden, 1)})
        parts["loss"] = parts["attention_loss"] + parts["hidden_loss"] + parts["embedding_loss"]
        return parts

    def record(self) -> dict[str, Any]:
        return {"tinybert_layers": self.teacher_layers}

    def describe_mapping(self) -> str:
        if not self.intermediate:
            return "prediction layer"
        return "E<-E, " + ", ".join(f"S{m}<-T{t}" for m, t in enumerate(self.teacher_layers, 1))


TINYBERT_STAGES = ("intermediate", "prediction")
TINYBERT_ATTENTION = ("per_head", "head_mean")
SOFT_REDUCTIONS = ("mean", "batchmean")
REGRESSION_TARGETS = ("gold", "teacher")
INTERMEDIATE_SCHEDULES = ("constant", "linear")
INCOMPLETE_BATCHES = ("skip", "train")
TINYBERT_FIT_DENSE = ("always", "when_widths_differ")


def gold_regression_loss(
    student_logits: torch.Tensor, labels: torch.Tensor, hard_weight: float, soft_weight: float
) -> dict[str, torch.Tensor]:
    r"""TinyBERT's prediction stage on a regression task, as its released code: the student's score [B, 1] against
    the GOLD score, no teacher (``MSELoss()(student_logits.view(-1), label_ids.view(-1))``), in fp32::

        pred_loss = 1/B * sum_b (s_b - y_b)^2,      L = soft_weight * pred_loss + hard_weight * MSE(s, y)

    (``soft_weight`` weighs the prediction-layer loss, ``hard_weight`` the gold-label loss, here the same MSE)."""
    with _fp32_off(student_logits):
        mse = F.mse_loss(student_logits.float().reshape(-1), labels.float().to(student_logits.device).reshape(-1))
    parts: dict[str, torch.Tensor] = {}
    loss = mse.new_zeros(())
    if soft_weight:
        parts["pred_loss"] = mse
        loss = loss + soft_weight * mse
    if hard_weight:
        parts["hard_loss"] = mse
        loss = loss + hard_weight * mse
    parts["loss"] = loss
    return parts


def check_recomputable_attention(teacher_family: str, student_family: str, method: str) -> None:
    """The attention-reading methods recompute attention from each layer's query/key/value projections: a family
    whose scores hold more (DeBERTa's relative-position terms) is refused, before anything is written."""
    from ..models.families import get_family

    for role, family in (("teacher", teacher_family), ("student", student_family)):
        if get_family(family, "model type").relative_positions:
            raise UserError(
                f"{method} recomputes attention from the query and key projections; the {role}'s "
                f"{family!r} attention adds relative-position terms it cannot reproduce: use another "
                f"family for the {role}, or another method"
            )
