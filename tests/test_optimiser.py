"""The one optimiser description (engine/optim.py) as the engine builds it: the student's and the LAD gates'
AdamW groups, learning rates, schedules and clipping, from the layer-wise scripts' own flags."""

from __future__ import annotations

import pytest
import torch

from fine_tune.cli import parse_layerwise
from fine_tune.engine.device import Precision
from fine_tune.engine.optim import GATE_NO_DECAY, STUDENT_NO_DECAY, decays
from fine_tune.engine.trainer import Trainer, TrainSettings
from fine_tune.models.forward import forward
from fine_tune.experiment import ExperimentDir
from fine_tune.methods import LAD, TeacherShape
from fine_tune.models.classifier import build_from_config, student_config

D, S, LT = 16, 8, 4


def lad_flags(*extra: str):
    return parse_layerwise("run_lad_distil.py", "", "lad", ["--experiment", "x", "--task", "qqp", "--teacher_exp", "t",
                                                            "--tckpt", "1", "--d_model", str(D), "--max_seq_len", str(S),
                                                            "--num_hidden_layers", "2", *extra])


def engine_for(flags, tmp_path) -> tuple[Trainer, LAD]:
    method = LAD.from_flags(flags, TeacherShape(num_layers=LT, hidden_size=D))
    method.create_parameters(None)
    student = build_from_config(student_config("bert", vocab_size=50, num_class=2, d_model=D, d_ff=32,
                                               num_attention_heads=2, num_hidden_layers=2, type_vocab_size=2,
                                               dropout=0.0, max_position_embeddings=S, pad_token_id=0))
    o = flags.optimiser
    settings = TrainSettings(optimiser=o.settings(), batch_size=2, accum_step=1, ckpt_step=10, log_step=10, seed=0,
                             tag_prefix="qqp/train/bert")
    trainer = Trainer(student, method, lambda rows: {}, 4, settings, ExperimentDir(tmp_path, "opt"),
                      torch.device("cpu"), Precision("cpu", None), progress=False, forward=forward)
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
    flags = lad_flags("--lr", "3e-4", "--total_step", "20", "--warmup_step", "4", "--gate_lr", "2e-3",
                      "--gate_weight_decay", "0.05", "--gate_total_step", "10", "--gate_warmup_step", "2",
                      "--gate_beta1", "0.8", "--gate_eps", "1e-7", "--gate_max_norm", "0.5")
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
    assert {id(p) for p in s_exempt["params"]} == {id(p) for n, p in s_named.items()
                                                   if "bias" in n or "LayerNorm.weight" in n}
    assert s_decayed["weight_decay"] == 0.01 and not student.settings.clip_per_module

    # schedules: each its own peak, warmup and length (linear warmup, then linear decay to 0)
    def lrs(part, steps):
        out = []
        for _ in range(steps):
            out.append(part.scheduler.get_last_lr()[0])
            part.optimizer.step()
            part.scheduler.step()
        return out

    assert lrs(gate, 11) == pytest.approx([2e-3 * s / 2 for s in range(2)] + [2e-3 * (10 - s) / 8 for s in range(2, 11)])
    assert lrs(student, 21) == pytest.approx([3e-4 * s / 4 for s in range(4)] + [3e-4 * (20 - s) / 16 for s in range(4, 21)])


def test_gate_schedule_defaults_to_the_students(tmp_path):
    trainer, _ = engine_for(lad_flags("--total_step", "30", "--warmup_step", "6"), tmp_path)
    gate = trainer.parts[1]
    assert (gate.settings.total_step, gate.settings.warmup_step, gate.settings.lr) == (30, 6, 1e-5)
    assert gate.settings.no_decay == GATE_NO_DECAY
