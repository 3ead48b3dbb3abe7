"""--compile wires torch.compile into the training forward without changing the result (dropout 0). The test
compiles with the "eager" backend (graph capture without code generation) to stay fast; users get inductor."""

import torch


def test_compile_trains_to_the_same_weights(run, tiny_bert, exp_root, monkeypatch):
    monkeypatch.setenv("FT_COMPILE_BACKEND", "eager")
    common = ["--model", "bert", "--ptrain_ver", str(tiny_bert), "--task", "qqp", "--total_step", "3",
              "--warmup_step", "1", "--ckpt_step", "3", "--batch_size", "8", "--dropout", "0", "--lr", "1e-3",
              "--max_seq_len", "24"]
    run("run_fine_tune.py", "--experiment", "plain", *common)
    out = run("run_fine_tune.py", "--experiment", "compiled", "--compile", *common)
    assert "torch.compile" in out.stderr
    a = torch.load(exp_root / "plain_bert_qqp" / "model-3.pt", weights_only=True)
    b = torch.load(exp_root / "compiled_bert_qqp" / "model-3.pt", weights_only=True)
    assert a.keys() == b.keys()  # the checkpoint is the plain student's state_dict, no compile prefixes
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4, msg=k)
