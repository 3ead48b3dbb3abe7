"""Memory (issue 31, item 4): ``--gradient_checkpointing`` recomputes the student's layers in the backward pass
and trains to the same weights, bit for bit, on the toolkit's own forward and on Hugging Face's; the teacher's
linear weights cast once to the autocast dtype leave its outputs bit-identical and its other weights fp32."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from conftest import one_thread
from test_gpu_paths import D, S, bert, fixed_batch, trainer_for

from fine_tune.engine.device import Precision
from fine_tune.engine.optim import GATE_NO_DECAY, OptimiserSettings
from fine_tune.errors import UserError
from fine_tune.methods import LAD, HardLabel
from fine_tune.methods.minilm import MiniLM
from fine_tune.models.forward import forward
from fine_tune.models.padding_free import PaddingFree, training_forwards

STEPS = 3


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():  # tiny models: threads only add overhead
        yield


def _method(name: str):
    if name == "fine_tune":
        return HardLabel()
    if name == "minilm":  # reads the recorded attention projections
        return MiniLM(2, 4, 0.0, 0.0, 1.0, 1.0, student_heads=2, teacher_heads=2, padding="dynamic")
    gates = OptimiserSettings(lr=1e-3, total_step=STEPS, warmup_step=1, no_decay=GATE_NO_DECAY, clip_per_module=True)
    method = LAD(2, 4, 0.5, 0.5, 1.0, 1.0, d_model=D, seq_len=S, gate_optimiser=gates, padding="max_length")
    method.create_parameters(None)
    return method


class SavedBytes:
    """Bytes of the tensors autograd keeps for the backward pass outside a checkpointed region (a checkpoint's own
    hooks take the tensors saved inside it), over one forward."""

    def __init__(self):
        self.total = 0

    def __enter__(self):
        def pack(t):
            self.total += t.numel() * t.element_size()
            return t

        self._hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self._hooks.__exit__(*exc)


def _train(tmp_path, method_name: str, forward_kind: str, checkpointing: bool):
    """The student's weights (and the method's) after a few steps with dropout on, how many times its layers'
    feed-forward ran, and the bytes one training forward keeps for the backward pass."""
    student = bert(2, seed=0, dropout=0.1)
    teacher = None if method_name == "fine_tune" else bert(4, seed=3)
    method = _method(method_name)
    forwards = training_forwards(
        student,
        teacher,
        enabled=forward_kind != "hugging_face",
        ignores_padding=method.ignores_padding,
        record_attention=method.reads_attention,
        gradient_checkpointing=checkpointing,
    )
    assert forwards.kind == forward_kind
    runs = []
    for layer in student.bert.encoder.layer:  # the feed-forward's activation module: both forwards call it
        layer.intermediate.intermediate_act_fn.register_forward_hook(lambda *a: runs.append(1))
    trainer = trainer_for(
        tmp_path,
        f"{method_name}_{forward_kind}_{checkpointing}",
        method,
        STEPS,
        student=student,
        teacher=teacher,
        student_forward=forwards.student,
        teacher_forward=forwards.teacher,
    )
    trainer.train()
    weights = {
        **student.state_dict(),
        **{f"{part.name}.{i}": p for part in trainer.parts[1:] for i, p in enumerate(part.params)},
    }
    student.train()
    with SavedBytes() as saved:
        out = forward(forwards.student, fixed_batch(), method.needs_hidden_states)
    if method.reads_attention:
        assert len(out.attention_inputs) == 2  # one record per layer: a recomputation records nothing
    return {k: v.detach().clone() for k, v in weights.items()}, len(runs), saved.total


@pytest.mark.parametrize(
    "method_name,forward_kind",
    [
        ("fine_tune", "packed"),
        ("fine_tune", "hugging_face"),
        ("lad", "grid"),
        ("lad", "hugging_face"),
        ("minilm", "packed"),
        ("minilm", "hugging_face"),
    ],
)
def test_gradient_checkpointing_recomputes_each_layer_and_trains_to_the_same_weights(
    method_name, forward_kind, tmp_path
):
    """Dropout on (its masks replayed by the recomputation from the restored random state): the same weights bit
    for bit after a few steps; each layer ran twice per step (forward, recomputation) and one forward keeps fewer
    bytes for the backward pass."""
    plain, plain_runs, plain_bytes = _train(tmp_path, method_name, forward_kind, False)
    ckpt, ckpt_runs, ckpt_bytes = _train(tmp_path, method_name, forward_kind, True)
    assert plain_runs == 2 * STEPS + 2 and ckpt_runs == 2 * (2 * STEPS) + 2  # + the measured forward's 2 layers
    assert ckpt_bytes < plain_bytes, (ckpt_bytes, plain_bytes)
    assert plain.keys() == ckpt.keys()
    assert [k for k in plain if not torch.equal(plain[k], ckpt[k])] == []
    start = bert(2, seed=0).state_dict()
    assert any(not torch.equal(v, plain[k]) for k, v in start.items())  # it trained


def test_the_flag_reaches_the_training_forward(run, tiny_bert, exp_root, monkeypatch):
    """``run_fine_tune.py --gradient_checkpointing`` (dropout 0.1): recorded in config.json, said on stderr, its
    layers checkpointed (and only then), the same checkpoint bit for bit as without."""
    from fine_tune.models import padding_free

    calls = []

    def counting(*args, **kw):
        calls.append(1)
        return real(*args, **kw)

    real = padding_free.checkpointed
    monkeypatch.setattr(padding_free, "checkpointed", counting)
    common = [
        "--model",
        "bert",
        "--ptrain_ver",
        str(tiny_bert),
        "--task",
        "qqp",
        "--total_step",
        "2",
        "--warmup_step",
        "1",
        "--ckpt_step",
        "2",
        "--batch_size",
        "8",
        "--lr",
        "1e-3",
        "--max_seq_len",
        "24",
        "--padding",
        "dynamic",
    ]
    run("run_fine_tune.py", "--experiment", "plain", *common)
    assert calls == []
    out = run("run_fine_tune.py", "--experiment", "ckpt", "--gradient_checkpointing", *common)
    assert len(calls) == 2 * 2  # 2 steps of 2 layers
    assert "gradient checkpointing" in out.stderr
    assert json.loads((exp_root / "ckpt_bert_qqp" / "config.json").read_text())["gradient_checkpointing"] is True
    a, b = (torch.load(exp_root / f"{name}_bert_qqp" / "model-2.pt", weights_only=True) for name in ("plain", "ckpt"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_gradient_checkpointing_is_refused_for_a_family_without_it():
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from fine_tune.models.checkpointing import check_gradient_checkpointing
    from fine_tune.models.families import FAMILIES

    for name, family in FAMILIES.items():  # each record says what transformers supports
        model_class = AutoModelForSequenceClassification._model_mapping[type(AutoConfig.for_model(name))]
        assert family.gradient_checkpointing == model_class.supports_gradient_checkpointing, name
    with pytest.raises(UserError, match="--gradient_checkpointing: --model albert"):
        check_gradient_checkpointing("albert")
    check_gradient_checkpointing("roberta")


# ------------------------------------------------------------------ the teacher's weights cast once


@pytest.mark.parametrize("wrap", ["hugging_face", "packed", "grid"])
def test_the_teachers_linear_weights_cast_once_give_the_same_outputs(wrap):
    """bf16 autocast on CPU: the teacher's outputs (logits, every hidden state, the recorded projections) are
    bit-identical with its linear weights cast once; embeddings and LayerNorm stay fp32."""
    precision = Precision("cpu", torch.bfloat16)
    teacher = bert(3, seed=3).eval()
    cast = copy.deepcopy(teacher)
    assert precision.cast_frozen_linears(cast, torch.device("cpu")) == 3 * 2 * 6 + 4
    own = {
        "hugging_face": lambda m: m,
        "packed": lambda m: PaddingFree(m, True, record_attention=True),
        "grid": lambda m: PaddingFree(m, False, record_attention=True),
    }[wrap]
    with torch.no_grad(), precision.autocast():
        a, b = (forward(own(m), fixed_batch(), True) for m in (teacher, cast))
    assert a.logits.dtype == torch.bfloat16 and torch.equal(a.logits, b.logits)
    assert all(torch.equal(x, y) for x, y in zip((a.embeddings, *a.hidden_states), (b.embeddings, *b.hidden_states)))
    if a.attention_inputs is not None:
        assert all(torch.equal(x, y) for u, v in zip(a.attention_inputs, b.attention_inputs) for x, y in zip(u, v))
    for name, p in cast.named_parameters():
        linear = not ("embeddings" in name or "LayerNorm" in name)
        assert p.dtype == (torch.bfloat16 if linear else torch.float32), name
    # a linear weight tied to an embedding stays the embedding's fp32 table
    tied = torch.nn.ModuleDict({"emb": torch.nn.Embedding(10, 4), "out": torch.nn.Linear(4, 10)})
    tied.out.weight = tied.emb.weight
    assert precision.cast_frozen_linears(tied, torch.device("cpu")) == 1  # the bias
    assert tied.emb.weight.dtype == torch.float32 and tied.out.bias.dtype == torch.bfloat16
    # no autocast on the teacher's device (fp32, or a teacher on another kind of device): nothing cast
    assert Precision("cpu", None).cast_frozen_linears(cast, torch.device("cpu")) == 0
    assert Precision("cuda", torch.float16).cast_frozen_linears(teacher, torch.device("cpu")) == 0


def test_the_trainer_casts_the_teacher_once_and_trains_as_before(tmp_path, monkeypatch):
    """LAD under bf16 autocast: the trainer casts the teacher's linear weights (and nothing of the student's),
    and the student and gates train to the same weights bit for bit as with an fp32 teacher re-cast every step."""
    precision = Precision("cpu", torch.bfloat16)

    def run(name):
        student, teacher = bert(2, seed=0, dropout=0.1), bert(4, seed=3)
        trainer = trainer_for(tmp_path, name, _method("lad"), 2, precision=precision, teacher=teacher, student=student)
        trainer.train()
        return trainer, {**student.state_dict(), **{f"g{i}": p for i, p in enumerate(trainer.parts[1].params)}}

    trainer, cast = run("cast")
    assert trainer.teacher.bert.encoder.layer[0].output.dense.weight.dtype == torch.bfloat16
    assert trainer.teacher.bert.embeddings.LayerNorm.weight.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in trainer.student.parameters())
    monkeypatch.setattr(Precision, "cast_frozen_linears", lambda self, module, device: 0)
    trainer, plain = run("plain")
    assert trainer.teacher.bert.encoder.layer[0].output.dense.weight.dtype == torch.float32
    assert [k for k in plain if not torch.equal(plain[k], cast[k])] == []
