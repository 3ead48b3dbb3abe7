"""torchrun with two CPU processes (Gloo): the same final weights as one process with the same effective batch
(dropout 0, float tolerance), for fine-tuning and for LAD (gates averaged across ranks); only rank 0 writes;
sharded evaluation counts every row once and gives the one-process table."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import HANG_GUARD, REPO
from test_scripts_e2e import tb_scalars

TINY = ["--d_model", "32", "--d_ff", "64", "--num_attention_heads", "2"]


def torchrun(script: str, args: list[str], data_root, exp_root, nproc: int = 2) -> subprocess.CompletedProcess:
    env = dict(
        os.environ, FT_DATA_ROOT=str(data_root), FT_EXP_ROOT=str(exp_root), TQDM_DISABLE="1", OMP_NUM_THREADS="1"
    )
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(nproc),
        str(REPO / script),
        *args,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=HANG_GUARD, cwd=str(data_root.parent))
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout}\n{proc.stderr[-4000:]}"
    return proc


def close(a: dict, b: dict, atol: float = 2e-5) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=atol, rtol=1e-4, msg=k)


def load(path):
    return torch.load(path, weights_only=True)


# 29 rows, micro-batches of 3 (batch 6, accum 2): two ranks get shares of 2 and 1 rows (loss weights 4/3 and 2/3),
# and each epoch ends with a 2-row micro-batch (1 and 1), so the loss weighting matters at every step
TRAIN = [
    "--task",
    "qqp",
    "--batch_size",
    "6",
    "--accum_step",
    "2",
    "--max_examples",
    "29",
    "--dropout",
    "0",
    "--lr",
    "1e-3",
    "--max_seq_len",
    "24",
    "--warmup_step",
    "1",
    "--log_step",
    "3",
    "--seed",
    "5",
    "--device_id",
    "-1",
]


def test_fine_tune_two_processes_match_one(run, tiny_bert, data_root, exp_root):
    # evaluation during training too: every 2 steps and at each checkpoint, sharded across the ranks
    common = [
        "--model",
        "bert",
        "--ptrain_ver",
        str(tiny_bert),
        *TRAIN,
        "--total_step",
        "9",
        "--ckpt_step",
        "3",
        "--eval_dataset",
        "dev",
        "--eval_step",
        "2",
        "--eval_batch_size",
        "5",
    ]
    run("run_fine_tune.py", "--experiment", "one", *common)
    # the two processes on two "nodes" (two torchrun launches, c10d rendezvous: README's multi-node command); the
    # killed job below runs as one launch of two processes and must end bit-identical to them
    outs, errs = two_nodes("run_fine_tune.py", ["--experiment", "two", *common], data_root, exp_root)
    one, two = exp_root / "one_bert_qqp", exp_root / "two_bert_qqp"
    close(load(one / "model-9.pt"), load(two / "model-9.pt"))
    assert json.loads((two / "config.json").read_text())["provenance"]["processes"] == 2
    assert json.loads((one / "config.json").read_text())["provenance"]["processes"] == 1
    assert sorted(p.name for p in two.glob("*.pt")) == ["model-3.pt", "model-6.pt", "model-9.pt", "resume-9.pt"]
    # rank 0 alone wrote the log: one event file, each logged step once, losses as one process (mean over ranks)
    assert len(list((exp_root / "log" / "two_bert_qqp").glob("events.out.tfevents.*"))) == 1
    a, b = tb_scalars(exp_root / "log" / "one_bert_qqp"), tb_scalars(exp_root / "log" / "two_bert_qqp")
    assert [s for s, _ in b["qqp/train/bert/lr"]] == [3, 6, 9]
    for tag in ("loss", "grad_norm"):
        np.testing.assert_allclose(
            [v for _, v in b[f"qqp/train/bert/{tag}"]],
            [v for _, v in a[f"qqp/train/bert/{tag}"]],
            rtol=1e-4,
            err_msg=tag,
        )
    assert sum(out.count("trained 9 steps") for out in outs) == 1  # rank 1 prints nothing to stdout
    # and says no start-up line (fine_tune/progress.say): each once, from rank 0 (before, every rank said them)
    said = "".join(errs)
    for line in ("two_bert_qqp: 29 examples, 9 steps of 6", "two_bert_qqp: evaluating on dev (29 rows) every 2 steps"):
        assert said.count(line) == 1, (line, said)

    # pre-empted: the whole two-process job SIGKILLed right after checkpoint 3, then the same command again ends
    # bit-identical to the uninterrupted two-process run
    from test_resume import World, assert_bitwise_equal, start_killed, wait_killed

    w = World(data_root, exp_root, tiny_bert)
    wait_killed(
        start_killed("after:resume-3.pt", "run_fine_tune.py", ["--experiment", "killed", *common], w, torchrun=2),
        torchrun=True,
    )
    killed = exp_root / "killed_bert_qqp"
    assert sorted(p.name for p in killed.glob("*.pt")) == ["model-3.pt", "resume-3.pt"]
    resumed = torchrun("run_fine_tune.py", ["--experiment", "killed", *common], data_root, exp_root)
    assert "resuming from model-3.pt" in resumed.stderr
    # one launch of two processes (their stderr together): every start-up line once
    for line in (
        "killed_bert_qqp: resuming from model-3.pt",
        "killed_bert_qqp: 29 examples, 9 steps of 6",
        "killed_bert_qqp: evaluating on dev (29 rows)",
    ):
        assert resumed.stderr.count(line) == 1, (line, resumed.stderr)
    for step in (3, 6, 9):
        assert_bitwise_equal(load(two / f"model-{step}.pt"), load(killed / f"model-{step}.pt"), str(step))
    sa, sb = tb_scalars(exp_root / "log" / "two_bert_qqp"), tb_scalars(exp_root / "log" / "killed_bert_qqp")
    assert "qqp/train/bert/loss" in sa and {t: v for t, v in sa.items() if "examples_per_s" not in t} == {
        t: v for t, v in sb.items() if "examples_per_s" not in t
    }

    # the evaluation during training of two processes (each row once: predict_logits checks it) equals one
    # process's evaluation of the same checkpoints; the killed and resumed job evaluated each step once
    def timeless(history):
        return [{k: v for k, v in r.items() if k != "examples_per_s"} for r in history["rows"]]

    during = json.loads((two / "training-eval-dev.json").read_text())
    assert [r["step"] for r in during["rows"]] == [2, 3, 4, 6, 8, 9]
    assert timeless(json.loads((killed / "training-eval-dev.json").read_text())) == timeless(during)
    run(
        "run_fine_tune_eval.py",
        "--experiment",
        "two",
        "--model",
        "bert",
        "--task",
        "qqp",
        "--dataset",
        "dev",
        "--batch_size",
        "5",
        "--device_id",
        "-1",
        "--max_examples",
        "29",
    )  # as the training run's --max_examples
    single = json.loads((two / "eval-dev.json").read_text())
    assert [(r["ckpt"], r["accuracy"], r["f1"]) for r in single["rows"]] == [
        (r["step"], r["accuracy"], r["f1"]) for r in during["rows"] if r["checkpoint"]
    ]
    for a, b in zip(json.loads((one / "training-eval-dev.json").read_text())["rows"], during["rows"]):
        assert a["step"] == b["step"] and abs(a["accuracy"] - b["accuracy"]) <= 1 / 29 + 1e-9  # weights to 2e-5

    # sharded evaluation: every dev row once, the same table as one process
    run(
        "run_fine_tune_eval.py",
        "--experiment",
        "one",
        "--model",
        "bert",
        "--task",
        "qqp",
        "--dataset",
        "dev",
        "--batch_size",
        "5",
        "--device_id",
        "-1",
    )
    torchrun(
        "run_fine_tune_eval.py",
        [
            "--experiment",
            "two",
            "--model",
            "bert",
            "--task",
            "qqp",
            "--dataset",
            "dev",
            "--batch_size",
            "5",
            "--device_id",
            "-1",
        ],
        data_root,
        exp_root,
    )
    e1 = json.loads((one / "eval-dev.json").read_text())
    e2 = json.loads((two / "eval-dev.json").read_text())
    assert e2["num_rows"] == e1["num_rows"] == 48
    assert [(r["ckpt"], r["accuracy"], r["f1"]) for r in e2["rows"]] == [
        (r["ckpt"], r["accuracy"], r["f1"]) for r in e1["rows"]
    ]
    p1, p2 = np.load(one / "eval-dev-predictions.npz"), np.load(two / "eval-dev-predictions.npz")
    assert np.array_equal(p1["pred_9"], p2["pred_9"]) and np.array_equal(p1["idx"], p2["idx"])


def layerwise_over_a_teacher(run, model_dir, student_layers: int) -> list[str]:
    """Fine-tune a teacher ("teacher", 2 steps, one process) from ``model_dir``; return the layer-wise flags that
    distil it into a student of ``student_layers`` layers (batch 6 = 2 micro-batches of 3 over 29 rows)."""
    run(
        "run_fine_tune.py",
        "--experiment",
        "teacher",
        "--model",
        "bert",
        "--ptrain_ver",
        str(model_dir),
        "--task",
        "qqp",
        "--total_step",
        "2",
        "--warmup_step",
        "1",
        "--ckpt_step",
        "2",
        "--batch_size",
        "16",
        "--max_seq_len",
        "24",
        "--device_id",
        "-1",
    )
    return [
        "--model",
        "bert",
        "--task",
        "qqp",
        "--teacher_exp",
        "teacher",
        "--tmodel",
        "bert",
        "--tckpt",
        "2",
        *TINY,
        "--num_hidden_layers",
        str(student_layers),
        "--batch_size",
        "6",
        "--accum_step",
        "2",
        "--max_examples",
        "29",
        "--dropout",
        "0",
        "--lr",
        "1e-3",
    ]


def test_lad_two_processes_match_one(run, tiny_bert12, data_root, exp_root):
    common = [
        *layerwise_over_a_teacher(run, tiny_bert12, 6),
        "--gate_lr",
        "1e-2",
        "--mu",
        "10",
        "--total_step",
        "6",
        "--warmup_step",
        "1",
        "--ckpt_step",
        "6",
        "--log_step",
        "3",
        "--map_examples",
        "0",
        "--device_id",
        "-1",
    ]
    run("run_lad_distil.py", "--experiment", "one", *common)
    torchrun("run_lad_distil.py", ["--experiment", "two", *common], data_root, exp_root)
    one, two = exp_root / "one_bert_qqp", exp_root / "two_bert_qqp"
    close(load(one / "model-6.pt"), load(two / "model-6.pt"))
    gates = sorted(p.name for p in one.glob("gate*-6.pt"))
    assert gates and gates == sorted(p.name for p in two.glob("gate*-6.pt"))
    for g in gates:  # gate gradients were averaged across the ranks: the gates agree with one process
        close(load(one / g), load(two / g))
    a, b = tb_scalars(exp_root / "log" / "one_bert_qqp"), tb_scalars(exp_root / "log" / "two_bert_qqp")
    for tag in ("loss", "hidden_loss", "soft_loss", "hard_loss", "gate_mean_6", "grad_norm"):
        np.testing.assert_allclose(
            [v for _, v in b[f"qqp/train/bert/{tag}"]],
            [v for _, v in a[f"qqp/train/bert/{tag}"]],
            rtol=1e-4,
            err_msg=tag,
        )


def test_hidden_losses_only_under_torchrun(run, tiny_bert, data_root, exp_root):
    """--hard_weight 0 --soft_weight 0: the student's pooler and classifier get no gradient. DDP used to stop on the
    second step ("Expected to have finished reduction"); such a student is now averaged without DDP's wrapper, and two
    processes end where one does, with the pooler and classifier untouched."""
    common = [
        *layerwise_over_a_teacher(run, tiny_bert, 1),
        "--hard_weight",
        "0",
        "--soft_weight",
        "0",
        "--mu",
        "10",
        "--total_step",
        "3",
        "--warmup_step",
        "1",
        "--ckpt_step",
        "1",
        "--log_step",
        "3",
        "--device_id",
        "-1",
    ]
    run("run_pkd_distill.py", "--experiment", "one", *common)
    torchrun("run_pkd_distill.py", ["--experiment", "two", *common], data_root, exp_root)
    one, two = load(exp_root / "one_bert_qqp" / "model-3.pt"), load(exp_root / "two_bert_qqp" / "model-3.pt")
    close(one, two)
    first = load(exp_root / "two_bert_qqp" / "model-1.pt")
    # no loss reaches the pooler and classifier: they never move; the encoder does
    for k in ("classifier.weight", "classifier.bias", "bert.pooler.dense.weight"):
        assert torch.equal(first[k], two[k]), k
    assert not torch.equal(
        first["bert.encoder.layer.0.output.dense.weight"], two["bert.encoder.layer.0.output.dense.weight"]
    )


@pytest.mark.parametrize("rows", [np.arange(7), np.arange(1)])
def test_shares_cover_each_row_once_and_weights_restore_the_mean(rows, monkeypatch):
    from fine_tune.engine import distributed

    shares, weights = [], []
    for rank in range(3):
        monkeypatch.setattr(distributed, "world", lambda rank=rank: distributed.World(rank, 3, rank))
        mine, w = distributed.shard(rows)
        shares.append(mine if w else mine[:0])
        weights.append(w)
    assert sorted(np.concatenate(shares).tolist()) == rows.tolist()
    # DDP averages over 3 ranks: sum_r w_r * mean_r / 3 == the mean over every row (values = the row ids)
    mean = sum(w * float(np.mean(s)) for w, s in zip(weights, shares) if len(s)) / 3
    assert mean == pytest.approx(float(np.mean(rows)))


def test_torchrun_worker_closes_then_exits_with_its_status(monkeypatch):
    """Under torchrun, run_main closes the process group (synchronised only after a normal finish) and then ends
    the worker at once with the run's status (engine/distributed.exit_process); a plain process just returns."""
    from fine_tune import cli
    from fine_tune.engine import distributed
    from fine_tune.errors import UserError

    calls = []
    monkeypatch.setattr(distributed, "silence_other_ranks", lambda: None)
    monkeypatch.setattr(distributed, "exit_process", lambda code: calls.append(("exit", code)))

    def refused(argv):
        raise UserError("bad flag")

    monkeypatch.setattr(distributed, "close", lambda synchronize=False: calls.append(("close", synchronize)) or True)
    assert cli.run_main(lambda argv: None, []) == 0
    assert cli.run_main(refused, []) == 2
    assert calls == [("close", True), ("exit", 0), ("close", False), ("exit", 2)]
    calls.clear()
    monkeypatch.setattr(distributed, "close", lambda synchronize=False: False)  # no process group: no early exit
    assert cli.run_main(lambda argv: None, []) == 0 and calls == []


def test_exit_process_flushes_and_exits_with_the_code():
    code = (
        "import sys; from fine_tune.engine.distributed import exit_process; print('printed', end=''); "
        "sys.stderr.write('said'); exit_process(3)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=str(REPO), timeout=HANG_GUARD
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (3, "printed", "said")


# -- issue 31: --ddp_timeout, broadcast_buffers, the bucketed gradient average, two "nodes" -----------------------
def test_ddp_timeout_reaches_the_process_group(run, tiny_bert, monkeypatch):
    """The process group is created (first use, after the flags are parsed) with --ddp_timeout's seconds, 1800 by
    default; faked here: the run ends at the group's creation, before anything is written."""
    from datetime import timedelta

    from fine_tune.engine import distributed
    from fine_tune.errors import UserError

    seen = []

    def init_process_group(backend, timeout=None, **kwargs):
        seen.append(timeout)
        raise UserError("no other rank in this test")

    monkeypatch.setattr(distributed.tdist, "init_process_group", init_process_group)
    monkeypatch.setattr(distributed, "_group_timeout", distributed.DEFAULT_TIMEOUT)  # restored afterwards
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    distributed.world.cache_clear()
    args = ["--model", "bert", "--ptrain_ver", str(tiny_bert), *TRAIN, "--total_step", "1"]
    try:
        for timeout in (["--ddp_timeout", "7"], []):
            out = run("run_fine_tune.py", "--experiment", "timeout", *args, *timeout, check=False)
            assert (out.returncode, out.stderr.splitlines()[-1]) == (2, "error: no other rank in this test")
    finally:
        distributed.world.cache_clear()
    assert seen == [timedelta(seconds=7), timedelta(seconds=1800)]


def test_no_buffer_is_broadcast_and_none_changes_in_training(monkeypatch):
    """Every family's model holds integer index constants only, unchanged by a training step: DDP is told not to
    broadcast them before each forward; a model with running statistics (BatchNorm) still gets them broadcast."""
    import torch.nn.parallel
    from transformers import AutoModelForSequenceClassification

    from fine_tune.engine import distributed
    from fine_tune.models.families import FAMILY_NAMES
    from fine_tune.synthetic import tiny_config

    told = []
    monkeypatch.setattr(
        torch.nn.parallel,
        "DistributedDataParallel",
        lambda model, device_ids=None, **kw: told.append(kw["broadcast_buffers"]),
    )
    for family in FAMILY_NAMES:
        model = AutoModelForSequenceClassification.from_config(tiny_config(family)).train()
        before = {n: b.clone() for n, b in model.named_buffers()}
        assert before and not any(b.is_floating_point() for b in before.values()), family
        ids = torch.randint(5, 50, (2, 6))
        model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=torch.tensor([0, 1])).loss.backward()
        assert all(torch.equal(before[n], b) for n, b in model.named_buffers()), family
        distributed.wrap_ddp(model, torch.device("cpu"))
    distributed.wrap_ddp(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2)), torch.device("cpu"))
    assert told == [False] * len(FAMILY_NAMES) + [True]


def test_bucketed_average_overlaps_backward_and_equals_the_flat_average(monkeypatch):
    """Two ranks, faked: the other rank's gradient is 0.25 everywhere. Over a step of two micro-batches the buckets
    are all-reduced during the last backward only (in bucket order), and every gradient ends as
    (accumulated + 0.25) / 2, bit for bit all_reduce_mean_'s average; a parameter without gradient stays without
    one, and after the first step it no longer holds a bucket back."""
    import copy

    from fine_tune.engine import distributed

    launched = []

    class Done:
        def wait(self):
            pass

    def all_reduce(flat, async_op=False):
        launched.append(flat.numel())
        flat += 0.25
        return Done() if async_op else None

    monkeypatch.setattr(distributed, "world", lambda: distributed.World(0, 2, 0))
    monkeypatch.setattr(distributed.tdist, "all_reduce", all_reduce)
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)
    )
    unused = torch.nn.Linear(3, 3)  # the last parameters: the first bucket, which they would hold back
    batches = [torch.randn(5, 4) for _ in range(4)]

    def backward(m, x):
        m(x).square().mean().backward()

    reference = copy.deepcopy(model)
    average = distributed.BucketedGradientAverage([*model.parameters(), *unused.parameters()], bucket_bytes=200)
    assert len(average.buckets) >= 3
    for step in range(2):
        for m in (model, reference):
            m.zero_grad(set_to_none=True)
        backward(model, batches[2 * step])  # the step's first micro-batch: nothing averaged yet
        assert launched == []
        average.arm()
        backward(model, batches[2 * step + 1])
        during = list(launched)
        average.finish()
        # the first step: the bucket of the unused parameters holds the others back until finish(); then none does
        assert during == ([] if step == 0 else launched)
        assert sum(launched) == sum(p.numel() for p in model.parameters())  # each gradient once
        launched.clear()
        for x in batches[2 * step : 2 * step + 2]:
            backward(reference, x)
        expected = [p.grad.clone() for p in reference.parameters()]
        distributed.all_reduce_mean_(expected)
        launched.clear()
        for got, want in zip(model.parameters(), expected):
            assert torch.equal(got.grad, want)
        assert all(p.grad is None for p in unused.parameters())
    average.remove()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_nodes(script: str, args: list[str], data_root, exp_root) -> tuple[list[str], list[str]]:
    """Several machines, on this host: two torchrun launches ("nodes", one process each) meeting at a c10d
    rendezvous, as README's multi-node command. Both must exit 0; returns their stdouts and their stderrs."""
    env = dict(
        os.environ, FT_DATA_ROOT=str(data_root), FT_EXP_ROOT=str(exp_root), TQDM_DISABLE="1", OMP_NUM_THREADS="1"
    )
    endpoint = f"127.0.0.1:{free_port()}"
    nodes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes",
                "2",
                "--nproc_per_node",
                "1",
                "--rdzv_backend",
                "c10d",
                "--rdzv_endpoint",
                endpoint,
                "--rdzv_id",
                "two-nodes",
                "--rdzv_conf",
                f"is_host={int(node == 0)}",
                "--local_addr",
                "127.0.0.1",
                str(REPO / script),
                *args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=str(data_root.parent),
        )
        for node in range(2)
    ]
    outputs = [node.communicate(timeout=HANG_GUARD) for node in nodes]
    for node, (out, err) in zip(nodes, outputs):
        assert node.returncode == 0, f"{out}\n{err[-4000:]}"
    return [out for out, _ in outputs], [err for _, err in outputs]
