"""Recording only the layers a method reads (issue 31): each method declares which layers of the student and of
the teacher its losses read (Method.recorded_layers); the training forwards keep only those (their hidden states
and query/key/value projections), the results stay bit for bit those of recording every layer, and reading an
undeclared layer fails loudly. MiniLM's relation KL computed in chunks, equal (value and gradients) to the whole
[B, H, S, S] formula written out here."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from fine_tune import synthetic
from fine_tune.engine.protocol import EVERY_LAYER, LayerRecord, RecordedLayers
from fine_tune.methods.minilm import MiniLM, relation_kl
from fine_tune.methods.pkd import PKD
from fine_tune.methods.tinybert import TinyBERT
from fine_tune.models.forward import forward
from fine_tune.models.padding_free import training_forwards

LENGTHS = (9, 5, 3, 9)


def models(seed: int = 0):
    """A 4-layer teacher and a 2-layer student (tiny BERTs, dropout on), sharper attention than at initialisation."""
    torch.manual_seed(seed)
    teacher = AutoModelForSequenceClassification.from_config(synthetic.tiny_config("bert", num_layers=4))
    student = AutoModelForSequenceClassification.from_config(synthetic.tiny_config("bert", num_layers=2))
    for model in (teacher, student):
        for layer in model.bert.encoder.layer:
            layer.attention.self.query.weight.data.mul_(4.0)
    return teacher, student


def batches(count: int, width: int = 9):
    g = torch.Generator().manual_seed(1)
    mask = torch.tensor([[1 if s < n else 0 for s in range(width)] for n in LENGTHS])
    return [
        {
            "input_ids": torch.randint(5, 100, (len(LENGTHS), width), generator=g) * mask,
            "token_type_ids": torch.zeros(len(LENGTHS), width, dtype=torch.long),
            "attention_mask": mask,
            "labels": torch.randint(0, 2, (len(LENGTHS),), generator=g),
        }
        for _ in range(count)
    ]


METHODS = {
    # TinyBERT's intermediate stage: 2 of 4 teacher layers (2 and 4) and the embeddings, every student layer
    "tinybert": lambda padding: TinyBERT(
        2,
        4,
        0.0,
        0.0,
        1.0,
        1.0,
        stage="intermediate",
        student_heads=2,
        teacher_heads=2,
        padding=padding,
        student_width=32,
        teacher_width=32,
        fit_dense="when_widths_differ",
    ),
    # MiniLM: the student's last layer learns teacher layer 3 (not the last: an off-by-one shows)
    "minilm": lambda padding: MiniLM(
        2,
        4,
        0.5,
        0.5,
        2.0,
        1.0,
        student_heads=2,
        teacher_heads=2,
        teacher_layer=3,
        student_width=32,
        teacher_width=32,
        padding=padding,
    ),
    "minilmv2": lambda padding: MiniLM(
        2,
        4,
        0.0,
        0.0,
        1.0,
        1.0,
        student_heads=2,
        teacher_heads=2,
        relation_heads=4,
        teacher_layer=3,
        student_width=32,
        teacher_width=32,
        padding=padding,
    ),
}
# own packed: the padding-free forward; own grid: its layers over the padded batch (TinyBERT's fixed padding);
# hugging_face: --padding_free off (AttentionCapture's hooks)
FORWARDS = {
    "packed": dict(enabled=True, ignores_padding=True),
    "grid": dict(enabled=True, ignores_padding=False),
    "hugging_face": dict(enabled=False, ignores_padding=True),
}


def train(name: str, kind: str, restricted: bool, steps: int = 2):
    """``steps`` AdamW steps of the student through the run's training forwards, recording the method's declared
    layers (``restricted``) or every layer: the losses, the student's final weights and the last step's outputs."""
    teacher, student = models()
    method = METHODS[name]("max_length" if kind == "grid" else "dynamic")
    records = (
        {"student_record": method.recorded_layers("student"), "teacher_record": method.recorded_layers("teacher")}
        if restricted
        else {"student_record": EVERY_LAYER, "teacher_record": EVERY_LAYER}
    )
    fw = training_forwards(student, teacher, **FORWARDS[kind], **records)
    assert fw.kind == kind
    teacher.eval()
    opt = torch.optim.AdamW(student.parameters(), lr=1e-3)
    torch.manual_seed(5)
    losses = []
    for batch in batches(steps):
        with torch.no_grad():
            t = forward(fw.teacher, batch, method.needs_hidden_states)
        s = forward(fw.student, batch, method.needs_hidden_states)
        parts = method.losses(batch, s, t)
        parts["loss"].backward()
        opt.step()
        opt.zero_grad()
        losses.append({k: v.item() for k, v in parts.items()})
    return losses, {k: v.clone() for k, v in student.state_dict().items()}, (s, t), method


@pytest.mark.parametrize(
    "name,kind",
    [
        ("tinybert", "packed"),
        ("tinybert", "grid"),
        ("tinybert", "hugging_face"),
        ("minilm", "packed"),
        ("minilm", "hugging_face"),
        ("minilmv2", "grid"),
    ],
)
def test_recording_only_the_declared_layers_changes_nothing_but_what_is_kept(name, kind):
    """Two training steps recording the method's declared layers give exactly (bit for bit) the losses and
    weights of recording every layer; the restricted forwards kept exactly the declared layers."""
    losses, weights, (s, t), method = train(name, kind, restricted=True)
    all_losses, all_weights, _, _ = train(name, kind, restricted=False)
    assert losses == all_losses
    for key, value in all_weights.items():
        assert torch.equal(weights[key], value), key
    for role, out, layers in (("student", s, 2), ("teacher", t, 4)):
        record = method.recorded_layers(role)
        assert [out.attention_inputs.kept(i) for i in range(layers)] == [
            record.records_attention(j) for j in range(1, layers + 1)
        ], role
        if out.hidden_states is not None:
            assert [out.hidden_states.kept(i) for i in range(layers)] == [
                record.keeps_hidden(j) for j in range(1, layers + 1)
            ], role
    expected = {"tinybert": ([2, 4], [1, 2]), "minilm": ([3], [2]), "minilmv2": ([3], [2])}[name]
    assert [j for j in range(1, 5) if t.attention_inputs.kept(j - 1)] == expected[0]
    assert [j for j in range(1, 3) if s.attention_inputs.kept(j - 1)] == expected[1]
    if name == "tinybert":  # the teacher's hidden states: the embeddings and the mapped layers only
        assert t.embeddings is not None
        assert [j for j in range(1, 5) if t.hidden_states.kept(j - 1)] == [2, 4]


def test_reading_an_undeclared_layer_fails_loudly():
    """A layer the forward did not keep raises, by index, negative index or iteration, naming the layer and the
    declared ones; the kept ones read as ever (slices keep the layers' numbers)."""
    layers = RecordedLayers(("e", None, "two", None), "hidden states", first=0)
    assert layers[2] == "two" and layers[-2] == "two" and layers[0] == "e"
    for read in (lambda: layers[1], lambda: layers[-1], lambda: list(layers)):
        with pytest.raises(LookupError, match=r"hidden states of layer [13] were not recorded.*\[0, 2\]"):
            read()
    tail = layers[1:]
    assert tail[1] == "two"
    with pytest.raises(LookupError, match="layer 3 "):
        tail[2]
    # a method reading a layer it did not declare: MiniLM's teacher layer 3 recorded, layer 4 read
    teacher, student = models()
    method = METHODS["minilm"]("dynamic")
    fw = training_forwards(
        student, teacher, enabled=True, ignores_padding=True, teacher_record=method.recorded_layers("teacher")
    )
    with torch.no_grad():
        t = forward(fw.teacher, batches(1)[0], False)
    assert t.attention_inputs[2] is not None
    with pytest.raises(LookupError, match=r"attention inputs of layer 4 were not recorded.*\[3\]"):
        t.attention_inputs[3]


def test_pkd_keeps_the_teachers_matched_hidden_states_only():
    """PKD (2 of 4: teacher layers 2 and 4) keeps those of the teacher's hidden states, through the own forward
    and through Hugging Face's (the others dropped as the forward returns), and its loss is the same."""
    teacher, student = (m.eval() for m in models())
    method = PKD(2, 4, 0.5, 0.5, 1.0, 1.0, padding="dynamic")
    assert method.recorded_layers("teacher") == LayerRecord(hidden=frozenset({2, 4}))
    batch = batches(1)[0]
    values = []
    for enabled in (True, False):
        fw = training_forwards(
            student,
            teacher,
            enabled=enabled,
            ignores_padding=True,
            student_record=method.recorded_layers("student"),
            teacher_record=method.recorded_layers("teacher"),
        )
        with torch.no_grad():
            t = forward(fw.teacher, batch, True)
            s = forward(fw.student, batch, True)
        assert [t.hidden_states.kept(i) for i in range(4)] == [False, True, False, True]
        assert t.embeddings is None and s.embeddings is not None
        values.append(method.losses(batch, s, t)["loss"].item())
    assert values[0] == pytest.approx(values[1], rel=1e-5)


# ---------------------------------------------------------------- MiniLM's relation KL in chunks


def whole_relation_kl(s_left, s_right, t_left, t_right, s_heads, t_heads, mask, average):
    """The unchunked formula: both [B, H, S, S] log relations (padding keys -inf), KL(teacher || student) summed
    over the real keys, averaged over heads and real query rows per sequence then over the batch (sequence), or
    over every real row of the batch (token)."""

    def log_relation(a, b, heads):
        batch, length, width = a.shape
        left = a.view(batch, length, heads, width // heads).transpose(1, 2)
        right = b.view(batch, length, heads, width // heads).transpose(1, 2)
        scores = left @ right.transpose(-1, -2) / math.sqrt(width // heads)
        return scores.masked_fill(~mask.bool()[:, None, None, :], float("-inf")).log_softmax(-1)

    log_s, log_t = log_relation(s_left, s_right, s_heads), log_relation(t_left, t_right, t_heads)
    real = mask.bool()
    keys = real[:, None, None, :]
    log_s, log_t = log_s.masked_fill(~keys, 0), log_t.masked_fill(~keys, 0)  # no -inf - -inf, no 0 * inf
    per_row = torch.where(keys, log_t.exp() * (log_t - log_s), 0).sum(-1)  # [B, H, S]
    per_row = per_row.masked_fill(~real[:, None, :], 0)
    heads, n = per_row.shape[1], real.sum(-1).double()
    if average == "token":
        return per_row.sum() / (heads * n.sum())
    return (per_row.sum((1, 2)) / (heads * n)).mean()


@pytest.mark.parametrize("average", ["sequence", "token"])
@pytest.mark.parametrize("heads,chunk_rows", [(2, 1), (4, 3), (4, 100)])
def test_the_chunked_relation_kl_equals_the_whole_formula(average, heads, chunk_rows):
    """Value and gradients (student and teacher inputs, a relation of x with itself and of q with k) equal the
    whole-tensor formula to float tolerance, whatever the chunk (one (sequence, head) row at a time, chunks across
    sequences, everything at once); student and teacher of different widths and head sizes."""
    g = torch.Generator().manual_seed(7)
    mask = torch.tensor([[1 if s < n else 0 for s in range(9)] for n in LENGTHS])

    def inputs(width):
        return [(torch.randn(len(LENGTHS), 9, width, generator=g) * 1.5).requires_grad_() for _ in range(2)]

    def whole(*xs):  # in float64: the fp32 computation is within float tolerance of it
        return whole_relation_kl(*(x.double() for x in xs), heads, heads, mask, average).float()

    def check(got, expected, leaves):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)
        for a, b in zip(torch.autograd.grad(got, leaves), torch.autograd.grad(expected, leaves)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)

    sq, sk = inputs(8)
    tq, tk = inputs(12)
    expected = whole(sq, sk, tq, tk)
    assert expected.item() > 0.05
    check(relation_kl(sq, sk, tq, tk, heads, heads, mask, average, chunk_rows=chunk_rows), expected, (sq, sk, tq, tk))
    # a relation of x with itself (MiniLM's value relation, MiniLMv2's three): the two gradients add up
    check(
        relation_kl(sq, sq, tq, tq, heads, heads, mask, average, chunk_rows=chunk_rows), whole(sq, sq, tq, tq), (sq, tq)
    )
