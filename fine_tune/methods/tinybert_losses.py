r"""TinyBERT's distillation losses and layer mapping, as pure functions (the Method comes later).

Jiao, Yin, Shang, Jiang, Chen, Li, Wang, Liu, "TinyBERT: Distilling BERT for Natural Language Understanding",
Findings of EMNLP 2020. Transformer-layer distillation (eq. 7-9), embedding-layer distillation (eq. 10) and
prediction-layer distillation (eq. 11)::

    L_attn = 1/h * sum_{i=1..h} MSE(A_i^S, A_i^T)          A = Q K^T / sqrt(d_k)   (pre-softmax, eq. 7-8)
    L_hidn = MSE(H^S W_h, H^T)                              (eq. 9; eq. 10 for the embeddings, W_e)
    L_pred = CE(z^T / t, z^S / t) = -softmax(z^T/t) . log_softmax(z^S/t)        (eq. 11)

with the uniform layer mapping n = g(m) = m * N / M (student layer m learns teacher layer g(m); g(0) = 0 for
the embeddings). Conventions follow the authors' released code (huawei-noah/Pretrained-Language-Model,
TinyBERT/task_distill.py): the attention maps are BERT's attention *scores* (before softmax, the -10000 mask
already added) with every value <= -1e2 replaced by 0, so padded keys contribute 0 on both sides, and every
MSE is ``nn.MSELoss()`` (a plain mean over all elements).

Inputs: per layer, the attention's query / key / value projections [B, S, D] (D the hidden size, before the
heads are split) and the attention mask [B, S] (1 = real token, 0 = padding, right padding). Every function
computes in fp32 (autocast off), whatever the input dtype or the surrounding autocast.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import UserError


def _fp32_off(x: torch.Tensor):
    """A context with autocast disabled on ``x``'s device type."""
    return torch.autocast(device_type=x.device.type, enabled=False)


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """[B, S, D] -> [B, H, S, D/H] (BERT's ``transpose_for_scores``: head h takes dims h*D/H .. (h+1)*D/H - 1).
    Raises :class:`UserError` when D is not a multiple of ``num_heads``."""
    batch, length, width = x.shape
    if num_heads < 1 or width % num_heads:
        raise UserError(f"cannot split a hidden size of {width} into {num_heads} heads: "
                        f"{width} is not a multiple of {num_heads}")
    return x.reshape(batch, length, num_heads, width // num_heads).permute(0, 2, 1, 3)


def _key_mask(mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    """[B, S] mask -> bool [B, 1, 1, S] (True = real key), on ``like``'s device; None stays None."""
    if mask is None:
        return None
    return mask.to(like.device).bool()[:, None, None, :]


def attention_scores(query: torch.Tensor, key: torch.Tensor, num_heads: int,
                     mask: torch.Tensor | None) -> torch.Tensor:
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


def attention_mse(student_scores: torch.Tensor, teacher_scores: torch.Tensor, mask: torch.Tensor | None,
                  masked: bool) -> torch.Tensor:
    r"""TinyBERT's attention loss (eq. 8) between [B, H, S, S] score maps, head by head, in fp32.

    ``masked=False`` (the released code, fixed-length padding): ``nn.MSELoss()``, the plain mean over all
    B*H*S*S elements (padded keys are 0 on both sides and count in the denominator)::

        1/(B H S^2) * sum_{b,h,q,k} (A^S - A^T)^2

    ``masked=True`` (the toolkit's dynamic padding): the mean over the real (query, key) pairs only, over
    heads too, so the loss does not depend on how far a batch is padded::

        1/(H * sum_b n_b^2) * sum_{b,h} sum_{q,k real} (A^S - A^T)^2        (n_b real tokens of sequence b)

    The student and teacher must have the same number of heads (:class:`UserError` otherwise)."""
    if student_scores.shape[1] != teacher_scores.shape[1]:
        raise UserError(f"TinyBERT's attention loss compares head by head: the student has "
                        f"{student_scores.shape[1]} attention heads, the teacher {teacher_scores.shape[1]}")
    with _fp32_off(student_scores):
        squared = (student_scores.float() - teacher_scores.float().to(student_scores.device)).pow(2)
        if not masked or mask is None:
            return squared.mean()
        real = mask.to(squared.device).float()
        pairs = real[:, None, :, None] * real[:, None, None, :]  # [B, 1, S, S]
        count = pairs.sum() * squared.shape[1]
        return (squared * pairs).sum() / count.clamp_min(1.0)


def hidden_mse(student_projected: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None,
               masked: bool) -> torch.Tensor:
    r"""TinyBERT's hidden-state / embedding loss (eq. 9-10), MSE(H^S W_h, H^T) of [B, S, D_t] tensors (the
    student already projected by W_h / W_e), in fp32. ``masked=False`` (the released code): the plain mean
    over all B*S*D_t elements. ``masked=True`` (dynamic padding): the mean over the real tokens and every
    dimension, ``sum_{b, s real, d} (h^S - h^T)^2 / (D_t * sum_b n_b)``."""
    with _fp32_off(student_projected):
        squared = (student_projected.float() - teacher.float().to(student_projected.device)).pow(2)
        if not masked or mask is None:
            return squared.mean()
        real = mask.to(squared.device).float()
        count = real.sum() * squared.shape[-1]
        return (squared * real[..., None]).sum() / count.clamp_min(1.0)


def soft_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                       temperature: float) -> torch.Tensor:
    r"""TinyBERT's prediction-layer loss (eq. 11), the released code's ``soft_cross_entropy`` of the logits
    divided by the temperature T, in fp32::

        1/B * sum_b sum_c -softmax(z^T_b / T)_c * log_softmax(z^S_b / T)_c

    With NO T^2 factor (the released code has none, unlike Hinton et al.'s KD), so at T > 1 its gradients are
    T^2 times smaller than a T^2-scaled KL's."""
    if not temperature > 0:
        raise UserError(f"the temperature must be positive, got {temperature}")
    with _fp32_off(student_logits):
        log_student = F.log_softmax(student_logits.float() / temperature, dim=-1)
        teacher = F.softmax(teacher_logits.float().to(student_logits.device) / temperature, dim=-1)
        return (-teacher * log_student).sum(-1).mean()


def tinybert_layer_map(num_student_layers: int, num_teacher_layers: int) -> list[int]:
    """TinyBERT's uniform mapping g(m) = m * N / M: student layer m (1-based, m = 1..M) learns teacher layer
    g(m) (1-based), for the attention maps and hidden states alike; the embeddings map 0 <- 0 (not listed).
    4 of 12: [3, 6, 9, 12]; 6 of 12: [2, 4, ..., 12]; 4 of 24: [6, 12, 18, 24]. Raises :class:`UserError`
    when M > N or N is not a multiple of M."""
    m, n = num_student_layers, num_teacher_layers
    if m < 1 or n < 1:
        raise UserError(f"TinyBERT's layer map needs at least one layer: student {m}, teacher {n}")
    if m > n or n % m:
        raise UserError(f"TinyBERT maps student layer m to teacher layer m*N/M: the teacher's {n} layers "
                        f"must be a multiple of the student's {m}")
    step = n // m
    return [layer * step for layer in range(1, m + 1)]
