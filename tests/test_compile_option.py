"""--compile wires torch.compile into the training forward without changing the result (dropout 0). The test
compiles with a counting backend (graph capture through TorchDynamo, then the captured graph runs eagerly: no
code generation, fast) and checks that the student's forward (with dynamic shapes: one graph for every batch
width, the padding-free forward's and Hugging Face's) and the teacher's really were captured; users get
inductor. One graph for 1-row, unpadded and full-width batches too: tests/test_gpu_paths.py."""

import re

import numpy as np
import pytest
import torch

COUNTING = "ft_test_counting"
GRAPHS: list = []


def counting_backend(gm, example_inputs):
    GRAPHS.append(gm)
    return gm.forward


def register_counting_backend() -> None:
    from torch._dynamo.backends.registry import _COMPILER_FNS, register_backend

    if COUNTING not in _COMPILER_FNS:
        register_backend(counting_backend, COUNTING)


def test_compile_trains_to_the_same_weights(run, tiny_bert, exp_root, monkeypatch, batch_widths):
    register_counting_backend()
    monkeypatch.setenv("FT_COMPILE_BACKEND", COUNTING)
    torch._dynamo.reset()
    GRAPHS.clear()
    common = [
        "--model",
        "bert",
        "--ptrain_ver",
        str(tiny_bert),
        "--task",
        "qqp",
        "--total_step",
        "3",
        "--warmup_step",
        "1",
        "--ckpt_step",
        "3",
        "--batch_size",
        "8",
        "--dropout",
        "0",
        "--lr",
        "1e-3",
        "--max_seq_len",
        "24",
        "--padding",
        "dynamic",
    ]
    run("run_fine_tune.py", "--experiment", "plain", *common)
    assert GRAPHS == []  # without --compile nothing is captured
    batch_widths.clear()  # the compiled run's batches only
    out = run("run_fine_tune.py", "--experiment", "compiled", "--compile", *common)
    assert "torch.compile" in out.stderr
    # the training forward went through TorchDynamo: graphs holding the student's embedding and encoder weights
    captured = " ".join(str(gm.code) for gm in GRAPHS)
    assert GRAPHS and "word_embeddings" in captured and "encoder" in captured, captured[:2000]
    # compiled with dynamic shapes: batches of different widths (dynamic padding) reuse the one graph
    assert len(set(batch_widths)) > 1 and len(GRAPHS) == 1, (batch_widths, len(GRAPHS))
    a = torch.load(exp_root / "plain_bert_qqp" / "model-3.pt", weights_only=True)
    b = torch.load(exp_root / "compiled_bert_qqp" / "model-3.pt", weights_only=True)
    assert a.keys() == b.keys()  # the checkpoint is the plain student's state_dict, no compile prefixes
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4, msg=k)
    # Hugging Face's forward (--padding_free off) compiled with dynamic shapes too: one graph for every width
    GRAPHS.clear()
    batch_widths.clear()
    run("run_fine_tune.py", "--experiment", "compiled_hf", "--compile", "--padding_free", "off", *common)
    assert len(set(batch_widths)) > 1 and len(GRAPHS) == 1, (batch_widths, len(GRAPHS))


def test_compile_captures_the_teacher_forward_too(tmp_path, monkeypatch):
    """A distillation step (logits KD, T = 2) under compile=True: TorchDynamo captures the teacher's forward as well
    as the student's (a 2-layer teacher, a 1-layer student, both through the padding-free forward with the batch's
    host-built layout: one graph with 1 encoder layer, one with 2), and the step's losses equal the eager step's."""
    from test_gpu_paths import bert, fixed_batch

    from fine_tune.engine.device import Precision
    from fine_tune.engine.optim import OptimiserSettings
    from fine_tune.engine.trainer import Trainer, TrainSettings
    from fine_tune.experiment import ExperimentDir
    from fine_tune.methods import PKD
    from fine_tune.models.forward import forward
    from fine_tune.models.padding_free import training_forwards

    register_counting_backend()
    monkeypatch.setenv("FT_COMPILE_BACKEND", COUNTING)

    def step(compile: bool) -> dict[str, float]:
        torch._dynamo.reset()
        GRAPHS.clear()
        settings = TrainSettings(
            optimiser=OptimiserSettings(lr=1e-3, total_step=1, warmup_step=0),
            batch_size=4,
            accum_step=1,
            ckpt_step=1,
            log_step=1,
            seed=0,
            tag_prefix="qqp/train/bert",
            compile=compile,
        )
        exp = ExperimentDir(tmp_path, f"compile-{compile}")
        exp.path.mkdir(parents=True, exist_ok=True)
        student, teacher, method = bert(1), bert(2, seed=3), PKD(1, 2, 0.5, 0.5, 2.0, 0.0)
        forwards = training_forwards(
            student, teacher, enabled=True, ignores_padding=method.ignores_padding, compile=compile
        )
        batch = fixed_batch()
        batch["model_kwargs"] = {"layout": forwards.layout(batch["attention_mask"].sum(1).numpy(), 12)}
        trainer = Trainer(
            student,
            method,
            lambda rows: dict(batch),
            4,
            settings,
            exp,
            torch.device("cpu"),
            Precision("cpu", None),
            teacher=teacher,
            progress=False,
            forward=forward,
            student_forward=forwards.student,
            teacher_forward=forwards.teacher,
        )
        return {k: v.item() for k, v in trainer._micro_step(np.arange(4)).items()}

    eager = step(False)
    assert GRAPHS == []
    compiled = step(True)
    layers = sorted(len(set(re.findall(r"layer_modules_(\d+)_", str(gm.code)))) for gm in GRAPHS)
    assert [n for n in layers if n] == [1, 2], layers
    assert compiled.keys() == eager.keys() and "soft_loss" in eager
    for k in eager:
        assert compiled[k] == pytest.approx(eager[k], rel=1e-5, abs=1e-7), k
    torch._dynamo.reset()
