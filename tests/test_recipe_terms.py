"""The recipe loss terms (fine_tune/methods/terms.py): every (feature, loss) against its equation written here in
plain float64 torch (explicit softmaxes, norms and per-sequence slices, none of the code under test), masked and
unmasked; and the terms the built-in methods have equal to those methods' own functions BIT FOR BIT (torch.equal),
so that a recipe reproduces a built-in method exactly.

Fixture: B = 3 sequences of S = 7 positions with 7, 5 and 3 real tokens (padding in two rows, random values at
the padding), width 8, 2 heads, a student of 2 layers and a teacher of 3, 3 classes, temperature 2.5.
"""

from __future__ import annotations

import math

import pytest
import torch

from fine_tune.engine.protocol import ModelOutputs
from fine_tune.errors import UserError
from fine_tune.methods.layerwise import HiddenPair, hidden_mse_loss
from fine_tune.methods.logits_kd import logits_kd_loss
from fine_tune.methods.minilm import minilm_loss, minilmv2_loss
from fine_tune.methods.pkd import PKD, normalized_cls_loss
from fine_tune.methods.terms import FEATURES, TERMS, features_needed, losses_of, term_loss
from fine_tune.methods.tinybert import TinyBERT, attention_mse, attention_scores, soft_cross_entropy
from fine_tune.models.projection import WidthProjection

B, S, D, HEADS, CLASSES = 3, 7, 8, 2, 3
LENGTHS = (7, 5, 3)
T = 2.5
RELATION_HEADS = 4  # not HEADS: a term reading num_heads instead would give another value
HIDDEN_PAIRS = ((0, 0), (1, 2), (2, 3))  # the embeddings, and unequal layer counts (2 of 3)
ATTENTION_PAIRS = ((1, 2), (2, 3))
TOL = dict(rtol=1e-5, atol=1e-6)


def outputs(seed: int, layers: int, width: int = D, classes: int = CLASSES) -> ModelOutputs:
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0):
        return torch.randn(*shape, generator=g) * scale

    mask = torch.tensor([[1 if s < n else 0 for s in range(S)] for n in LENGTHS])
    return ModelOutputs(
        logits=rand(B, classes, scale=2.0),
        hidden_states=tuple(rand(B, S, width) for _ in range(layers)),
        attention_mask=mask,
        embeddings=rand(B, S, width),
        attention_inputs=tuple(tuple(rand(B, S, width, scale=1.5) for _ in range(3)) for _ in range(layers)),
    )


STUDENT, TEACHER = outputs(1, 2), outputs(2, 3)
MASK = STUDENT.attention_mask
LABELS = torch.tensor([2, 0, 1])
SCORES = torch.tensor([0.3, -1.2, 2.5])  # regression labels
STUDENT_1, TEACHER_1 = outputs(3, 2, classes=1), outputs(4, 3, classes=1)  # one output (regression)


# ---------------------------------------------------------------- the equations, float64, plain torch


def log_softmax(x: torch.Tensor) -> torch.Tensor:
    return x - x.exp().sum(-1, keepdim=True).log()


def hidden(o: ModelOutputs, layer: int) -> torch.Tensor:
    return (o.embeddings if layer == 0 else o.hidden_states[layer - 1]).double()


def token_mean(per_token: torch.Tensor, mask) -> torch.Tensor:
    """Mean over the tokens ([B, S]; the real ones under a mask) or rows ([B])."""
    if mask is None or per_token.dim() == 1:
        return per_token.mean()
    m = mask.double()
    return (per_token * m).sum() / m.sum()


def vec_mse(s, t):
    return ((s - t) ** 2).mean(-1)


def vec_cosine(s, t):
    return 1 - (s * t).sum(-1) / (s.pow(2).sum(-1).sqrt() * t.pow(2).sum(-1).sqrt())


def vec_normalized(s, t):
    return (s / s.pow(2).sum(-1, keepdim=True).sqrt() - t / t.pow(2).sum(-1, keepdim=True).sqrt()).pow(2).mean(-1)


def vector_ref(feature, per_token, project=None):
    def ref(student, teacher, mask, pairs=HIDDEN_PAIRS):
        pairs = ((0, 0),) if feature == "embeddings" else pairs
        total = 0.0
        for j, i in pairs:
            s = hidden(student, j) if project is None else project(j, hidden(student, j).float()).double()
            t = hidden(teacher, i)
            if feature == "cls":
                s, t = s[:, 0], t[:, 0]
            total = total + token_mean(per_token(s, t), mask)
        return total / len(pairs)

    return ref


def heads_of(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, S, D] -> [B, heads, S, D / heads], float64 (head h: columns h*D/H .. (h+1)*D/H - 1)."""
    b, s, d = x.shape
    return x.double().reshape(b, s, heads, d // heads).permute(0, 2, 1, 3)


def scaled_dots(left, right, heads):
    a, b = heads_of(left, heads), heads_of(right, heads)
    return a @ b.transpose(-1, -2) / math.sqrt(a.shape[-1])


def lengths_of(mask):
    return LENGTHS if mask is not None else (S,) * B


def real_pairs(lengths) -> torch.Tensor:
    """[B, 1, S, S]: 1 where query and key are both real."""
    real = torch.tensor([[1.0 if s < n else 0.0 for s in range(S)] for n in lengths], dtype=torch.float64)
    return real[:, None, :, None] * real[:, None, None, :]


def scores_mse_ref(s_qkv, t_qkv, mask, hs=HEADS, ht=HEADS, head_mean=False):
    """TinyBERT: A = Q K^T / sqrt(d) per head, padding KEYS 0 (always, the released code's -10000 then 0), MSE over
    every entry (no mask) or the real (query, key) pairs and heads."""
    maps = []
    for (q, k, _), heads in ((s_qkv, hs), (t_qkv, ht)):
        a = scaled_dots(q, k, heads).clone()
        for b, n in enumerate(LENGTHS):
            a[b, :, :, n:] = 0.0
        maps.append(a.mean(1, keepdim=True) if head_mean else a)
    squared = (maps[0] - maps[1]) ** 2
    if mask is None:
        return squared.mean()
    pairs = real_pairs(LENGTHS)
    return (squared * pairs).sum() / (pairs.sum() * squared.shape[1])


def probabilities(left, right, heads, lengths) -> torch.Tensor:
    """softmax over each sequence's real keys (0 at a padding key), [B, H, S, S] float64."""
    z = scaled_dots(left, right, heads)
    p = torch.zeros_like(z)
    for b, n in enumerate(lengths):
        p[b, :, :, :n] = log_softmax(z[b, :, :, :n]).exp()
    return p


def relation_kl_ref(s_left, s_right, t_left, t_right, hs, ht, mask, head_mean=False):
    """MiniLM: per sequence, KL(p^T || p^S) summed over its real rows and keys (a slice), divided by H * n_b;
    the mean over the sequences. head_mean: the heads' mean distributions (H = 1)."""
    lengths = lengths_of(mask)
    ps, pt = probabilities(s_left, s_right, hs, lengths), probabilities(t_left, t_right, ht, lengths)
    total = 0.0
    for b, n in enumerate(lengths):
        a, c = ps[b, :, :n, :n], pt[b, :, :n, :n]
        if head_mean:
            a, c = a.mean(0, keepdim=True), c.mean(0, keepdim=True)
        total = total + (c * (c.log() - a.log())).sum() / (a.shape[0] * n)
    return total / len(lengths)


def probs_mse_ref(s_qkv, t_qkv, mask, hs=HEADS, ht=HEADS, head_mean=False):
    lengths = lengths_of(mask)
    ps, pt = probabilities(s_qkv[0], s_qkv[1], hs, lengths), probabilities(t_qkv[0], t_qkv[1], ht, lengths)
    if head_mean:
        ps, pt = ps.mean(1, keepdim=True), pt.mean(1, keepdim=True)
    squared = (ps - pt) ** 2
    if mask is None:
        return squared.mean()
    pairs = real_pairs(LENGTHS)
    return (squared * pairs).sum() / (pairs.sum() * squared.shape[1])


def attention_ref(per_pair, pairs=ATTENTION_PAIRS):
    def ref(student, teacher, mask):
        return sum(
            per_pair(student.attention_inputs[j - 1], teacher.attention_inputs[i - 1], mask) for j, i in pairs
        ) / len(pairs)

    return ref


def logits_kl_ref(student, teacher, mask):
    log_s, log_t = log_softmax(student.logits.double() / T), log_softmax(teacher.logits.double() / T)
    return T * T * (log_t.exp() * (log_t - log_s)).sum(-1).mean()


def logits_ce_ref(student, teacher, mask):
    log_s, log_t = log_softmax(student.logits.double() / T), log_softmax(teacher.logits.double() / T)
    return (-log_t.exp() * log_s).mean()  # over the batch and the classes: TinyBERT's released reduction


REFS = {
    ("logits", "kl"): logits_kl_ref,
    ("logits", "mse"): lambda s, t, m: ((s.logits.double() - t.logits.double()) ** 2).mean(),
    ("logits", "ce"): logits_ce_ref,
    ("hard_labels", "ce"): lambda s, t, m: -log_softmax(s.logits.double())[torch.arange(B), LABELS].mean(),
    ("hard_labels", "mse"): lambda s, t, m: ((STUDENT_1.logits[:, 0].double() - SCORES.double()) ** 2).mean(),
    **{(f, "mse"): vector_ref(f, vec_mse) for f in ("hidden", "cls", "embeddings")},
    **{(f, "cosine"): vector_ref(f, vec_cosine) for f in ("hidden", "cls", "embeddings")},
    **{(f, "normalized_mse"): vector_ref(f, vec_normalized) for f in ("hidden", "cls", "embeddings")},
    ("attention_scores", "mse"): attention_ref(scores_mse_ref),
    ("attention_probs", "kl"): attention_ref(lambda s, t, m: relation_kl_ref(s[0], s[1], t[0], t[1], HEADS, HEADS, m)),
    ("attention_probs", "mse"): attention_ref(probs_mse_ref),
    ("value_relation", "kl"): attention_ref(lambda s, t, m: relation_kl_ref(s[2], s[2], t[2], t[2], HEADS, HEADS, m)),
    ("qkv_relation", "kl"): attention_ref(
        lambda s, t, m: sum(
            relation_kl_ref(s[x], s[x], t[x], t[x], RELATION_HEADS, RELATION_HEADS, m) for x in range(3)
        )
    ),
}


def term(feature, loss, masked, student=STUDENT, teacher=TEACHER, **kw):
    """term_loss with the fixture's arguments for ``feature``."""
    if feature == "hard_labels":
        kw.setdefault("labels", SCORES if loss == "mse" else LABELS)
        student = STUDENT_1 if loss == "mse" else student
    if feature in ("hidden", "cls"):
        kw.setdefault("pairs", HIDDEN_PAIRS)
    elif feature not in ("logits", "hard_labels", "embeddings"):
        kw.setdefault("pairs", ATTENTION_PAIRS)
    kw.setdefault("num_heads", (HEADS, HEADS))
    return term_loss(
        feature,
        loss,
        student,
        teacher,
        temperature=T,
        mask=MASK if masked else None,
        relation_heads=RELATION_HEADS,
        **kw,
    )


# ---------------------------------------------------------------- every term against its equation


def test_every_term_has_an_equation_here():
    assert set(REFS) == set(TERMS)
    assert set(FEATURES) == {f for f, _ in TERMS}
    assert losses_of("hidden") == ("mse", "cosine", "normalized_mse") and losses_of("nope") == ()
    # every (feature, loss) a recipe file may name has its term
    from fine_tune.recipes.format import ALLOWED

    assert {(f, loss) for f, losses in ALLOWED.items() for loss in losses} <= set(TERMS)


@pytest.mark.parametrize("masked", [False, True], ids=["full_sequence", "masked"])
@pytest.mark.parametrize("feature,loss", sorted(TERMS))
def test_each_term_is_its_equation(feature, loss, masked):
    got = term(feature, loss, masked)
    assert got.dtype == torch.float32 and got.dim() == 0
    want = REFS[feature, loss](STUDENT, TEACHER, MASK if masked else None)
    torch.testing.assert_close(got.double(), torch.as_tensor(want, dtype=torch.float64), **TOL)
    if feature in ("hidden", "embeddings") or FEATURES.index(feature) >= FEATURES.index("attention_scores"):
        # the padding holds random values: a term that reads the mask must change with it
        other = term(feature, loss, not masked)
        assert not torch.allclose(got, other, rtol=1e-3), "the mask changed nothing"


def test_logits_mse_of_one_output_is_the_regression_soft_loss():
    got = term("logits", "mse", False, STUDENT_1, TEACHER_1)
    want = ((STUDENT_1.logits.double() - TEACHER_1.logits.double()) ** 2).mean()
    torch.testing.assert_close(got.double(), want, **TOL)
    assert torch.equal(
        got, logits_kd_loss(STUDENT_1.logits, TEACHER_1.logits, None, 0.0, 1.0, 1.0, regression=True)["soft_loss"]
    )


def test_a_weight_and_the_sum_over_pairs():
    """weight w: sum_P L_P * w/|P| (mean) or w * sum_P L_P (sum); |P| = 3, so the two differ by 3."""
    mean = term("hidden", "cosine", True, weight=0.7)
    total = term("hidden", "cosine", True, weight=0.7, reduction="sum")
    want = REFS["hidden", "cosine"](STUDENT, TEACHER, MASK)
    torch.testing.assert_close(mean.double(), 0.7 * want, **TOL)
    torch.testing.assert_close(total.double(), 0.7 * 3 * want, **TOL)
    torch.testing.assert_close(
        term("logits", "kl", False, weight=0.4).double(), 0.4 * logits_kl_ref(STUDENT, TEACHER, None), **TOL
    )


def test_a_projection_maps_the_student_before_position_0():
    """A teacher of width 12: the student's states go through project(layer, state) (layer 0: the embeddings)."""
    teacher = outputs(5, 3, width=12)
    torch.manual_seed(0)
    project = WidthProjection(D, 12, 2, shared=True)
    with torch.no_grad():
        project.maps[0].bias.normal_()
    for feature, loss in (("hidden", "mse"), ("cls", "cosine"), ("embeddings", "normalized_mse")):
        got = term(feature, loss, True, teacher=teacher, project=project)
        per_token = {"mse": vec_mse, "cosine": vec_cosine, "normalized_mse": vec_normalized}[loss]
        with torch.no_grad():
            want = vector_ref(feature, per_token, project)(STUDENT, teacher, MASK)
        torch.testing.assert_close(got.double(), want, **TOL)
    with pytest.raises(RuntimeError):  # without the projection the widths do not meet
        term("hidden", "mse", True, teacher=teacher)


@pytest.mark.parametrize("masked", [False, True], ids=["full_sequence", "masked"])
def test_head_mean_compares_the_heads_mean_maps_of_unequal_head_counts(masked):
    """Student 2 heads, teacher 4 (same width 8): per head is refused, the heads' mean maps compared."""
    mask = MASK if masked else None
    for feature, loss, ref in (
        ("attention_scores", "mse", lambda s, t: scores_mse_ref(s, t, mask, 2, 4, True)),
        ("attention_probs", "mse", lambda s, t: probs_mse_ref(s, t, mask, 2, 4, True)),
        ("attention_probs", "kl", lambda s, t: relation_kl_ref(s[0], s[1], t[0], t[1], 2, 4, mask, True)),
    ):
        got = term(feature, loss, masked, num_heads=(2, 4), head_mean=True)
        want = attention_ref(lambda s, t, m, ref=ref: ref(s, t))(STUDENT, TEACHER, mask)
        torch.testing.assert_close(got.double(), want, **TOL)
        with pytest.raises(UserError):
            term(feature, loss, masked, num_heads=(2, 4))


def test_head_mean_kl_has_a_finite_gradient_at_padding_keys():
    student = outputs(1, 2)
    q = student.attention_inputs[0][0].clone().requires_grad_()
    student.attention_inputs = ((q,) + student.attention_inputs[0][1:],) + student.attention_inputs[1:]
    term("attention_probs", "kl", True, student=student, num_heads=(2, 4), head_mean=True).backward()
    assert torch.isfinite(q.grad).all() and q.grad.abs().sum() > 0


def test_qkv_relation_across_widths():
    teacher = outputs(6, 3, width=12)  # 12 / 4 and 8 / 4 relation heads
    for masked in (False, True):
        mask = MASK if masked else None
        got = term("qkv_relation", "kl", masked, teacher=teacher)
        want = attention_ref(
            lambda s, t, m: sum(
                relation_kl_ref(s[x], s[x], t[x], t[x], RELATION_HEADS, RELATION_HEADS, m) for x in range(3)
            )
        )(STUDENT, teacher, mask)
        torch.testing.assert_close(got.double(), want, **TOL)


def test_head_split_views_read_as_full_width():
    """attention_inputs as [B, S, H, D/H] views (the own BERT forward's) give the value of [B, S, D]."""
    split = ModelOutputs(
        logits=STUDENT.logits,
        attention_mask=MASK,
        attention_inputs=tuple(
            tuple(x.view(B, S, HEADS, D // HEADS) for x in layer) for layer in STUDENT.attention_inputs
        ),
    )
    for feature, loss in (
        ("attention_scores", "mse"),
        ("attention_probs", "kl"),
        ("value_relation", "kl"),
        ("qkv_relation", "kl"),
    ):
        torch.testing.assert_close(term(feature, loss, True, student=split), term(feature, loss, True), **TOL)


# ---------------------------------------------------------------- bit for bit with the built-in methods


@pytest.mark.parametrize("masked", [False, True], ids=["full_sequence", "masked"])
def test_logits_terms_are_logits_kd_loss(masked):
    parts = logits_kd_loss(STUDENT.logits, TEACHER.logits, LABELS, 0.3, 0.6, T)
    assert torch.equal(term("logits", "kl", masked), parts["soft_loss"])
    assert torch.equal(term("hard_labels", "ce", masked), parts["hard_loss"])
    composed = (
        STUDENT.logits.new_zeros(())
        + term("hard_labels", "ce", masked, weight=0.3)
        + term("logits", "kl", masked, weight=0.6)
    )
    assert torch.equal(composed, parts["logits_loss"])
    reg = logits_kd_loss(STUDENT_1.logits, None, SCORES, 1.0, 0.0, 1.0, regression=True)
    assert torch.equal(term("hard_labels", "mse", masked), reg["hard_loss"])


@pytest.mark.parametrize("mu", [1.0, 0.7])
@pytest.mark.parametrize("masked", [False, True], ids=["full_sequence", "masked"])
def test_hidden_and_cls_mse_are_hidden_mse_loss(masked, mu):
    pairs = [
        HiddenPair(n, hidden(STUDENT, j).float(), hidden(TEACHER, i).float()) for n, (j, i) in enumerate(HIDDEN_PAIRS)
    ]
    mask = MASK if masked else None
    assert torch.equal(term("hidden", "mse", masked, weight=mu), hidden_mse_loss(pairs, mu, mask)[0])
    cls = [HiddenPair(p.layer, p.student[:, 0], p.target[:, 0]) for p in pairs]
    assert torch.equal(term("cls", "mse", masked, weight=mu), hidden_mse_loss(cls, mu, mask)[0])


def test_cls_normalized_mse_is_pkds_loss():
    """One pair: normalized_cls_loss; PKD's normalized_cls hidden loss with mu = 0.7 over two pairs."""
    pair = ((2, 3),)
    assert torch.equal(
        term("cls", "normalized_mse", True, pairs=pair),
        normalized_cls_loss(STUDENT.hidden_states[1][:, 0], TEACHER.hidden_states[2][:, 0]),
    )
    pkd = PKD(3, 3, 0.0, 0.0, 1.0, 0.7, loss="normalized_cls")
    pairs = [HiddenPair(j, STUDENT.hidden_states[j - 1], TEACHER.hidden_states[i - 1]) for j, i in ATTENTION_PAIRS]
    assert torch.equal(
        term("cls", "normalized_mse", False, pairs=ATTENTION_PAIRS, weight=0.7), pkd.hidden_loss(pairs)[0]
    )


@pytest.mark.parametrize("padding", ["max_length", "dynamic"])
def test_attention_scores_hidden_and_embeddings_are_tinyberts(padding):
    """TinyBERT's intermediate stage (2 of 3 layers: g = [2, 3]), mu = 0.7, summed over its layers."""
    tiny = TinyBERT(
        2,
        3,
        0.0,
        0.0,
        1.0,
        0.7,
        stage="intermediate",
        student_heads=HEADS,
        teacher_heads=HEADS,
        padding=padding,
        student_width=D,
        teacher_width=D,
        fit_dense="when_widths_differ",
    )
    assert tiny.teacher_layers == [2, 3] and tiny.projection is None
    parts = tiny.losses({}, STUDENT, TEACHER)
    masked = padding == "dynamic"
    attention = term("attention_scores", "mse", masked, weight=0.7, reduction="sum")
    assert torch.equal(attention, parts["attention_loss"])
    hidden_ = term("hidden", "mse", masked, pairs=ATTENTION_PAIRS, weight=0.7, reduction="sum")
    embedding = term("embeddings", "mse", masked, weight=0.7, reduction="sum")
    # reduction sum: TinyBERT's own masked MSE (a sum, then one division), bit for bit in either padding
    assert torch.equal(hidden_, parts["hidden_loss"]) and torch.equal(embedding, parts["embedding_loss"])
    assert torch.equal(attention + hidden_ + embedding, parts["loss"])
    # the mean's masked_mean (per-token means) is the same value, rounded otherwise
    mean_form = sum(term("hidden", "mse", masked, pairs=((j, i),), weight=0.7) for j, i in ATTENTION_PAIRS)
    torch.testing.assert_close(mean_form, parts["hidden_loss"], **TOL)
    if masked:
        assert not torch.equal(mean_form, parts["hidden_loss"])
    # and the paper's path, the [B, H, S, S] score maps
    mask = MASK if masked else None
    maps = sum(
        attention_mse(
            attention_scores(*STUDENT.attention_inputs[j - 1][:2], HEADS, MASK),
            attention_scores(*TEACHER.attention_inputs[i - 1][:2], HEADS, MASK),
            mask,
            masked,
        )
        for j, i in ATTENTION_PAIRS
    )
    torch.testing.assert_close(attention, 0.7 * maps, **TOL)


def test_logits_ce_is_tinyberts_prediction_loss():
    assert torch.equal(term("logits", "ce", False), soft_cross_entropy(STUDENT.logits, TEACHER.logits, T))


@pytest.mark.parametrize("masked", [False, True], ids=["full_sequence", "masked"])
def test_relations_are_minilms(masked):
    """MiniLM's student last layer <- the teacher's layer 3; MiniLMv2's relations over 4 relation heads."""
    mask = MASK if masked else None
    s, t = STUDENT.attention_inputs[-1], TEACHER.attention_inputs[2]
    _, v1 = minilm_loss(*s, *t, HEADS, HEADS, mask)
    assert torch.equal(term("attention_probs", "kl", masked, pairs=((2, 3),)), v1["attention_kl"])
    assert torch.equal(term("value_relation", "kl", masked, pairs=((2, 3),)), v1["value_kl"])
    total, _ = minilmv2_loss(*s, *t, RELATION_HEADS, mask)
    assert torch.equal(term("qkv_relation", "kl", masked, pairs=((2, 3),)), total)
    assert torch.equal(term("qkv_relation", "kl", masked, pairs=((2, 3),), weight=0.7), 0.7 * total)


# ---------------------------------------------------------------- what a forward keeps, and misuse


def test_features_needed():
    assert features_needed("logits") == features_needed("hard_labels") == set()
    assert features_needed("hidden", ((1, 2),)) == features_needed("cls") == {"hidden"}
    assert features_needed("hidden", ((0, 0), (1, 2))) == {"hidden", "embeddings"}
    assert features_needed("embeddings") == {"embeddings"}
    for feature in ("attention_scores", "attention_probs", "value_relation", "qkv_relation"):
        assert features_needed(feature) == {"attention"}


def test_misuse_is_refused():
    with pytest.raises(KeyError):
        term("hidden", "kl", False)
    with pytest.raises(ValueError, match="teacher"):
        term_loss("hidden", "mse", STUDENT, None, pairs=((1, 2),))
    with pytest.raises(ValueError, match="pair"):
        term("hidden", "mse", False, pairs=())
    with pytest.raises(ValueError, match="head_mean"):
        term("hidden", "mse", False, head_mean=True)
    with pytest.raises(ValueError, match="embeddings"):
        term("attention_scores", "mse", False, pairs=((0, 0),))
    assert term_loss("hard_labels", "ce", STUDENT, None, labels=LABELS) > 0
