"""The one optimiser description (engine/optim.py) as the engine builds it: the student's and the LAD gates'
AdamW groups, learning rates, schedules and clipping, from the layer-wise scripts' own flags."""

from __future__ import annotations

import pytest
import torch

from fine_tune.cli import parse_layerwise
from fine_tune.engine.device import Precision
from fine_tune.engine.optim import GATE_NO_DECAY, STUDENT_NO_DECAY, decays
from fine_tune.engine.protocol import TeacherShape
from fine_tune.engine.trainer import Trainer, TrainSettings
from fine_tune.experiment import ExperimentDir
from fine_tune.methods import LAD
from fine_tune.models.classifier import build_from_config, student_config
from fine_tune.models.forward import forward
from fine_tune.plan.training import method_settings, optimiser_settings
from fine_tune.tasks import get_task

D, S, LT = 16, 8, 4


def lad_flags(*extra: str):
    return parse_layerwise(
        "run_lad_distil.py",
        "",
        "lad",
        [
            "--experiment",
            "x",
            "--task",
            "qqp",
            "--teacher_exp",
            "t",
            "--tckpt",
            "1",
            "--d_model",
            str(D),
            "--max_seq_len",
            str(S),
            "--num_hidden_layers",
            "2",
            *extra,
        ],
    )


def engine_for(flags, tmp_path) -> tuple[Trainer, LAD]:
    method = LAD.build(method_settings(flags, get_task("qqp"), LAD, TeacherShape(num_layers=LT, hidden_size=D)))
    method.create_parameters(None)
    student = build_from_config(
        student_config(
            "bert",
            vocab_size=50,
            num_class=2,
            d_model=D,
            d_ff=32,
            num_attention_heads=2,
            num_hidden_layers=2,
            type_vocab_size=2,
            dropout=0.0,
            max_position_embeddings=S,
            pad_token_id=0,
        )
    )
    o = flags.optimiser
    settings = TrainSettings(
        optimiser=optimiser_settings(o),
        batch_size=2,
        accum_step=1,
        ckpt_step=10,
        log_step=10,
        seed=0,
        tag_prefix="qqp/train/bert",
    )
    trainer = Trainer(
        student,
        method,
        lambda rows: {},
        4,
        settings,
        ExperimentDir(tmp_path, "opt"),
        torch.device("cpu"),
        Precision("cpu", None),
        progress=False,
        forward=forward,
    )
    return trainer, method


def test_no_decay_rules_by_name():
    # the original: the student exempts bias and LayerNorm.weight (ALBERT's full_layer_layer_norm.weight is
    # decayed); the gate optimiser also exempts the gates' own layernorm.weight
    assert not decays("bert.embeddings.LayerNorm.weight", STUDENT_NO_DECAY)
    assert decays("albert.encoder.albert_layer_groups.0.albert_layers.0.full_layer_layer_norm.weight", STUDENT_NO_DECAY)
    assert decays("0.layernorm.weight", STUDENT_NO_DECAY)
    assert not decays("0.layernorm.weight", GATE_NO_DECAY)
    assert not decays("3.layernorm.bias", GATE_NO_DECAY) and decays("3.linear.weight", GATE_NO_DECAY)


def test_gate_optimiser_groups_lr_and_schedule(tmp_path):
    flags = lad_flags(
        "--lr",
        "3e-4",
        "--total_step",
        "20",
        "--warmup_step",
        "4",
        "--gate_lr",
        "2e-3",
        "--gate_weight_decay",
        "0.05",
        "--gate_total_step",
        "10",
        "--gate_warmup_step",
        "2",
        "--gate_beta1",
        "0.8",
        "--gate_eps",
        "1e-7",
        "--gate_max_norm",
        "0.5",
    )
    trainer, method = engine_for(flags, tmp_path)
    student, gate = trainer.parts
    assert gate.name == "gate" and student.name == "student"

    # groups: only the gates' linear weights are decayed; their LayerNorm weights and every bias are not
    decayed, exempt = gate.optimizer.param_groups
    named = {f"{i}.{n}": p for i, g in enumerate(method.gates) for n, p in g.named_parameters()}
    assert {id(p) for p in decayed["params"]} == {id(p) for n, p in named.items() if n.endswith("linear.weight")}
    assert {id(p) for p in exempt["params"]} == {id(p) for n, p in named.items() if not n.endswith("linear.weight")}
    assert any(n.endswith("layernorm.weight") for n in named) and len(named) == 4 * LT
    assert decayed["weight_decay"] == 0.05 and exempt["weight_decay"] == 0.0
    assert decayed["betas"] == (0.8, 0.999) and decayed["eps"] == 1e-7
    assert gate.settings.max_norm == 0.5 and gate.settings.clip_per_module
    # the student's own groups are the student rule's
    s_decayed, s_exempt = student.optimizer.param_groups
    s_named = dict(trainer.student.named_parameters())
    assert {id(p) for p in s_exempt["params"]} == {
        id(p) for n, p in s_named.items() if "bias" in n or "LayerNorm.weight" in n
    }
    assert s_decayed["weight_decay"] == 0.01 and not student.settings.clip_per_module

    # schedules: each its own peak, warmup and length (linear warmup, then linear decay to 0)
    def lrs(part, steps):
        out = []
        for _ in range(steps):
            out.append(part.scheduler.get_last_lr()[0])
            part.optimizer.step()
            part.scheduler.step()
        return out

    assert lrs(gate, 11) == pytest.approx(
        [2e-3 * s / 2 for s in range(2)] + [2e-3 * (10 - s) / 8 for s in range(2, 11)]
    )
    assert lrs(student, 21) == pytest.approx(
        [3e-4 * s / 4 for s in range(4)] + [3e-4 * (20 - s) / 16 for s in range(4, 21)]
    )


def test_gate_schedule_defaults_to_the_students(tmp_path):
    trainer, _ = engine_for(lad_flags("--total_step", "30", "--warmup_step", "6"), tmp_path)
    gate = trainer.parts[1]
    assert (gate.settings.total_step, gate.settings.warmup_step, gate.settings.lr) == (30, 6, 1e-5)
    assert gate.settings.no_decay == GATE_NO_DECAY


def _set_grads(params, norm, gen):
    """Give ``params`` random gradients whose joint L2 norm is exactly ``norm``; returns them (copies)."""
    grads = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params]
    total = torch.sqrt(sum((g.double() ** 2).sum() for g in grads)).item()
    for p, g in zip(params, grads):
        p.grad = (g * (norm / total)).to(p.dtype)
    return [p.grad.clone() for p in params]


def _clipped(grads, max_norm):
    """torch.nn.utils.clip_grad_norm_'s rule, written out: scale by max_norm / (norm + 1e-6) when that is < 1."""
    norm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads)).item()
    coef = min(1.0, max_norm / (norm + 1e-6))
    return [g * coef for g in grads], norm


def test_each_gate_is_clipped_with_its_own_norm_and_the_student_as_a_whole(tmp_path):
    """The original clips every LAD gate on its own (``--gate_max_norm``) and the student over all its parameters
    (``--max_norm``). Gates given different gradient norms (two above the limit by different factors, two below)
    must each come out of the step at their own clip: a joint clip over all the gates would scale every gate by
    the same factor, a clip with the student's limit (or no clip) would leave other norms."""
    flags = lad_flags(
        "--max_norm",
        "0.7",
        "--gate_max_norm",
        "0.5",
        "--lr",
        "1e-3",
        "--gate_lr",
        "1e-3",
        "--total_step",
        "4",
        "--warmup_step",
        "1",
    )
    trainer, method = engine_for(flags, tmp_path)
    student, gate = trainer.parts
    assert student.settings.max_norm == 0.7 and gate.settings.max_norm == 0.5 and len(method.gates) == LT
    gen = torch.Generator().manual_seed(7)
    student_params = [p for p in trainer.student.parameters() if p.requires_grad]
    # the student's parameters in two halves with very different norms: only the whole set's norm matters
    half = len(student_params) // 2
    student_grads = _set_grads(student_params[:half], 2.5, gen) + _set_grads(student_params[half:], 0.3, gen)
    gate_norms = [2.0, 0.2, 5.0, 0.4]  # above, below, far above, below gate_max_norm
    gate_grads = [_set_grads(list(g.parameters()), n, gen) for g, n in zip(method.gates, gate_norms)]

    seen = {}
    for part in trainer.parts:  # the gradients each optimiser steps with (the step zeroes them after)
        part.optimizer.register_step_pre_hook(
            lambda opt, args, kwargs, _part=part: seen.__setitem__(_part.name, [p.grad.clone() for p in _part.params])
        )
    grad_norm, skipped = trainer._optimizer_step()
    assert not skipped and set(seen) == {"student", "gate"}

    want_student, student_norm = _clipped(student_grads, 0.7)
    assert student_norm > 0.7 * 3  # clipped, by one factor over the whole set
    assert grad_norm.item() == pytest.approx(student_norm, rel=1e-5)  # the logged norm: the student's, before clipping
    by_id = {id(p): g for p, g in zip(student.params, seen["student"])}
    for p, want in zip(student_params, want_student):
        assert torch.allclose(by_id[id(p)].double(), want.double(), rtol=1e-5, atol=1e-9)

    got = dict(zip([id(p) for p in gate.params], seen["gate"]))
    for g, grads, n in zip(method.gates, gate_grads, gate_norms):
        want, norm = _clipped(grads, 0.5)
        assert norm == pytest.approx(n, rel=1e-6)
        after = [got[id(p)] for p in g.parameters()]
        after_norm = torch.sqrt(sum((a.double() ** 2).sum() for a in after)).item()
        assert after_norm == pytest.approx(min(n, 0.5), rel=1e-4), (n, after_norm)
        for a, w in zip(after, want):
            assert torch.allclose(a.double(), w.double(), rtol=1e-5, atol=1e-9)
