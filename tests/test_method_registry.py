"""Methods by name: the registry, each method's name and flag groups, and doc/methods.md's "Adding a method"
walkthrough run through the engine exactly as written there."""

from __future__ import annotations

import json
import re
import sys
import types

import pytest
import torch
from conftest import REPO
from test_layerwise_scripts import TEACHER, TINY, teacher  # noqa: F401  (teacher: the fixture)

from fine_tune.cli import parse_layerwise
from fine_tune.methods import METHODS, Method, get_method
from fine_tune.methods.registry import METHODS as REGISTRY
from fine_tune.settings import LAYERWISE

SCRIPTS = {
    "run_lad_distil.py": "lad",
    "run_lad_no_distil.py": "lad_no",
    "run_probing_lad.py": "partial_lad",
    "run_alp_distil.py": "alp",
    "run_pkd_distill.py": "pkd",
    "run_tinybert_distil.py": "tinybert",
    "run_minilm_distil.py": "minilm",
}


def test_every_method_is_registered_under_its_name():
    assert METHODS is REGISTRY
    assert set(METHODS) == {
        "fine_tune",
        "offline_logits_kd",
        "lad",
        "lad_no",
        "partial_lad",
        "alp",
        "pkd",
        "tinybert",
        "minilm",
        "recipe",
    }
    for name, cls in METHODS.items():
        assert issubclass(cls, Method) and cls.name == name and get_method(name) is cls
    with pytest.raises(Exception, match="unknown method 'nope'; methods: fine_tune, offline_logits_kd"):
        get_method("nope")


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_each_layerwise_script_runs_its_registered_method(script):
    source = (REPO / script).read_text(encoding="utf-8")
    name = SCRIPTS[script]
    assert f'parse_layerwise("{script}", __doc__, "{name}", argv)' in source
    assert f'run(plan_online_distill(flags, "{name}"))' in source
    # the script's flags are the layer-wise groups plus the method's own
    argv = ["--experiment", "x", "--task", "qqp", *TEACHER]
    if name == "partial_lad":
        argv += ["--probing_exp", "partial_lad"]
    flags = parse_layerwise(script, "", name, argv)
    own = {g.key for g in get_method(name).flag_groups}
    assert {g.key for g in LAYERWISE} | own == {
        k
        for k in (
            "experiment",
            "teacher",
            "student",
            "distil",
            "layerwise",
            "classifier",
            "optimiser",
            "batching",
            "run",
            "speed",
            "device",
            "paths",
            "gate",
            "probing",
            "alp",
            "pkd",
            "tinybert",
            "minilm",
        )
        if flags.has(k)
    }


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_run_distil_takes_each_scripts_flags_and_defaults(script, run):
    """``run_distil.py --method NAME`` is NAME's script: the same flags with the same defaults (its --help differs
    in the program name and the description only), the same parsed values, the same one-line errors."""
    from fine_tune.cli import parse_distil

    name = SCRIPTS[script]
    argv = ["--experiment", "x", "--task", "qqp", *TEACHER, "--mu", "2.5", "--seed", "3"]
    if name == "partial_lad":
        argv += ["--probing_exp", "partial_lad"]
    method, flags = parse_distil("run_distil.py", "", ["--method", name, *argv])
    assert method == name and flags.record() == parse_layerwise(script, "", name, argv).record()
    assert parse_distil("run_distil.py", "", [*argv, f"--method={name}"])[1].record() == flags.record()

    def usage(*args):
        proc = run(*args, "--help", check=False)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout[proc.stdout.index("options:") :]

    assert usage("run_distil.py", "--method", name) == usage(script)
    bad = run("run_distil.py", "--method", name, *argv, "--batch_size", "0", check=False)
    assert bad.returncode == 2 and bad.stderr == run(script, *argv, "--batch_size", "0", check=False).stderr


def test_run_distil_trains_what_the_method_script_trains(run, teacher, exp_root):  # noqa: F811
    argv = [
        "--model",
        "bert",
        "--task",
        "qqp",
        *TEACHER,
        *TINY,
        "--num_hidden_layers",
        "2",
        "--total_step",
        "3",
        "--warmup_step",
        "1",
        "--ckpt_step",
        "3",
        "--batch_size",
        "8",
        "--mu",
        "2.5",
        "--seed",
        "5",
    ]
    run("run_lad_distil.py", "--experiment", "script", *argv)
    run("run_distil.py", "--method", "lad", "--experiment", "entry", *argv)
    a = torch.load(exp_root / "script_bert_qqp" / "model-3.pt", map_location="cpu", weights_only=True)
    b = torch.load(exp_root / "entry_bert_qqp" / "model-3.pt", map_location="cpu", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    runs = [json.loads((exp_root / f"{n}_bert_qqp" / "config.json").read_text()) for n in ("script", "entry")]
    assert runs[1]["method"] == "lad" and {
        k: v for k, v in runs[0].items() if k not in ("experiment", "provenance")
    } == {k: v for k, v in runs[1].items() if k not in ("experiment", "provenance")}
    # its config.json re-issues it through the same entry: the method is read from the file
    proc = run("run_distil.py", "--config", str(exp_root / "entry_bert_qqp" / "config.json"))
    assert "already finished" in proc.stdout
    for argv_, message in (
        (["--experiment", "x"], "--method is required (one of lad, lad_no, partial_lad"),
        (["--method", "fine_tune"], '--method "fine_tune": not a distillation method'),
        (["--experiment", "x", "--method"], "argument --method: expected one argument"),
    ):
        proc = run("run_distil.py", *argv_, check=False)
        assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.splitlines()) == 1


def walkthrough_code() -> str:
    text = (REPO / "doc" / "methods.md").read_text(encoding="utf-8")
    section = text[text.index("## Adding a method") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_docs_new_method_trains_through_the_engine(run, teacher, data_root, exp_root, monkeypatch):  # noqa: F811
    """doc/methods.md's "Adding a method": a method with an option of its own is its file and one registry line;
    run_distil.py then parses its flag, the plan builds it, the engine trains it, config.json records the option."""
    # the walkthrough's file, as fine_tune/methods/cosine.py
    module = types.ModuleType("fine_tune.methods.cosine")
    module.__package__ = "fine_tune.methods"
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(compile(walkthrough_code(), "doc/methods.md#adding-a-method", "exec"), module.__dict__)
    cosine = module.CosineKD
    # ... and its one registry line
    monkeypatch.setitem(REGISTRY, "cosine", cosine)
    assert get_method("cosine") is cosine

    argv = [
        "--experiment",
        "cos",
        "--model",
        "bert",
        "--task",
        "qqp",
        *TEACHER,
        *TINY,
        "--num_hidden_layers",
        "4",
        "--total_step",
        "2",
        "--warmup_step",
        "0",
        "--ckpt_step",
        "2",
        "--log_step",
        "1",
        "--batch_size",
        "8",
        "--mu",
        "3",
    ]
    assert "--cosine_power" in run("run_distil.py", "--method", "cosine", "--help").stdout
    bad = run("run_distil.py", "--method", "cosine", *argv, "--cosine_power", "0", check=False)
    assert bad.returncode == 2 and bad.stderr == "error: --cosine_power must be positive, got 0.0\n"
    run("run_distil.py", "--method", "cosine", *argv, "--cosine_power", "2")
    folder = exp_root / "cos_bert_qqp"
    config = json.loads((folder / "config.json").read_text())
    assert config["method"] == "cosine" and config["hidden_mapping"] == "S1<-T3, S2<-T6, S3<-T9, S4<-T12"
    assert config["cosine_power"] == 2.0
    assert (folder / "model-2.pt").is_file() and (folder / "resume-2.pt").is_file()
    assert "already finished" in run("run_distil.py", "--config", str(folder / "config.json")).stdout

    # its loss is the docstring's equation, at the option's value
    method = cosine(2, 4, 0.0, 0.0, 1.0, 3.0, power=2.0)
    torch.manual_seed(0)
    hs = tuple(torch.randn(2, 5, 8) for _ in range(2))
    ht = tuple(torch.randn(2, 5, 8) for _ in range(4))
    from fine_tune.engine.protocol import ModelOutputs

    mask = torch.ones(2, 5, dtype=torch.long)
    parts = method.losses(
        {"labels": torch.tensor([0, 1])},
        ModelOutputs(torch.zeros(2, 2), hs, mask),
        ModelOutputs(torch.zeros(2, 2), ht, mask),
    )

    def cos(a, b):
        return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))

    expected = 3.0 / 2 * sum(((1 - cos(hs[j - 1], ht[2 * j - 1])) ** 2).mean() for j in (1, 2))
    assert parts["hidden_loss"].item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("name", ["lad", "lad_no", "partial_lad"])
def test_the_gate_flags_reach_the_gated_methods(name):
    """Every gate flag, given away from its default, is what the built method's gates train with; the gates work
    in the teacher's width over --max_seq_len positions (a flag plumbed as its default would pass unnoticed with
    default values)."""
    from fine_tune.engine.protocol import TeacherShape

    argv = [
        "--experiment",
        "x",
        "--task",
        "qqp",
        *TEACHER,
        "--d_model",
        "6",
        "--d_ff",
        "16",
        "--num_attention_heads",
        "2",
        "--num_hidden_layers",
        "3",
        "--max_seq_len",
        "7",
        "--total_step",
        "20",
        "--warmup_step",
        "2",
        "--gate_lr",
        "3e-4",
        "--gate_beta1",
        "0.8",
        "--gate_beta2",
        "0.95",
        "--gate_eps",
        "1e-7",
        "--gate_weight_decay",
        "0.05",
        "--gate_max_norm",
        "2.5",
        "--gate_total_step",
        "9",
        "--gate_warmup_step",
        "3",
        "--padding",
        "dynamic",
    ]
    if name == "partial_lad":
        argv = ["--probing_exp", "partial_lad", "--gate_indices", "1,3", *argv]
    from fine_tune.plan.training import method_settings
    from fine_tune.tasks import get_task

    def built(flags):
        return get_method(name).build(method_settings(flags, get_task("qqp"), get_method(name), TeacherShape(6, 10, 2)))

    method = built(parse_layerwise(f"run_{name}.py", "", name, argv))
    o = method.gate_optimiser
    assert (o.lr, o.beta1, o.beta2, o.eps, o.weight_decay, o.max_norm, o.total_step, o.warmup_step) == (
        3e-4,
        0.8,
        0.95,
        1e-7,
        0.05,
        2.5,
        9,
        3,
    )
    assert o.clip_per_module and method.padding == "dynamic"
    assert (method.d_model, method.seq_len, method.student_width, method.teacher_width) == (10, 7, 6, 10)
    assert method.projection_optimiser.lr == parse_layerwise("x", "", name, argv).optimiser.lr
    torch.manual_seed(0)
    method.create_parameters(None, None)
    assert tuple(method.gates[0].layernorm.weight.shape) == (7, 10) and method.projection is not None
    assert [e.name for e in method.extra_parameters()] == ["gate", "projection"]
    expected = {
        "lad": (6, "S1<-A2, S2<-A4, S3<-A6"),
        "lad_no": (3, "S1<-gate(T1,T2), S2<-gate(T3,T4), S3<-gate(T5,T6)"),
        "partial_lad": (3, "S1<-A1, S2<-A3, S3<-T5"),
    }[name]
    assert (len(method.gates), method.describe_mapping()) == expected
    # without the gate schedule flags the gates follow the student's
    default = built(parse_layerwise("x", "", name, argv[: argv.index("--gate_lr")]))
    d = default.gate_optimiser
    assert (d.lr, d.total_step, d.warmup_step, d.weight_decay) == (1e-5, 20, 2, 0.01)
    assert default.padding == "max_length"
