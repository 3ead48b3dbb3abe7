"""--compile wires torch.compile into the training forward without changing the result (dropout 0). The test
compiles with a counting backend (graph capture through TorchDynamo, then the captured graph runs eagerly: no
code generation, fast) and checks that the student's forward really was captured; users get inductor."""

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


def test_compile_trains_to_the_same_weights(run, tiny_bert, exp_root, monkeypatch):
    register_counting_backend()
    monkeypatch.setenv("FT_COMPILE_BACKEND", COUNTING)
    torch._dynamo.reset()
    GRAPHS.clear()
    common = ["--model", "bert", "--ptrain_ver", str(tiny_bert), "--task", "qqp", "--total_step", "3",
              "--warmup_step", "1", "--ckpt_step", "3", "--batch_size", "8", "--dropout", "0", "--lr", "1e-3",
              "--max_seq_len", "24"]
    run("run_fine_tune.py", "--experiment", "plain", *common)
    assert GRAPHS == []  # without --compile nothing is captured
    out = run("run_fine_tune.py", "--experiment", "compiled", "--compile", *common)
    assert "torch.compile" in out.stderr
    # the training forward went through TorchDynamo: graphs holding the student's embedding and encoder weights
    captured = " ".join(str(gm.code) for gm in GRAPHS)
    assert GRAPHS and "word_embeddings" in captured and "encoder" in captured, captured[:2000]
    a = torch.load(exp_root / "plain_bert_qqp" / "model-3.pt", weights_only=True)
    b = torch.load(exp_root / "compiled_bert_qqp" / "model-3.pt", weights_only=True)
    assert a.keys() == b.keys()  # the checkpoint is the plain student's state_dict, no compile prefixes
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4, msg=k)
