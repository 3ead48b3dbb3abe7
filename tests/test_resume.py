"""Runs survive SIGKILL: the same command continues from the latest checkpoint and ends bit-identical to an
uninterrupted run; logs have every step once; a killed save leaves nothing that is picked up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import REPO
from test_scripts_e2e import tb_scalars

STEPS = 400


def start(script: str, args: list[str], data_root, exp_root) -> subprocess.Popen:
    env = dict(os.environ, FT_DATA_ROOT=str(data_root), FT_EXP_ROOT=str(exp_root), TQDM_DISABLE="1",
               OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, str(REPO / script), *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=str(data_root.parent))


def kill_after_first_checkpoint(proc: subprocess.Popen, folder, timeout: float = 120) -> None:
    """SIGKILL the run as soon as a resume state exists, i.e. somewhere between two checkpoints."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if any(folder.glob("resume-*.pt")):
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before it could be killed:\n{proc.stderr.read()}")
        time.sleep(0.01)
    proc.kill()
    raise AssertionError("no checkpoint appeared")


def finish(script, args, data_root, exp_root) -> subprocess.CompletedProcess:
    proc = start(script, args, data_root, exp_root)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def weights(path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


def assert_bitwise_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def check_resume(script: str, args: list[str], data_root, exp_root, extra_files=()) -> None:
    ref_args = [*args, "--experiment", "reference"]
    killed_args = [*args, "--experiment", "killed"]
    finish(script, ref_args, data_root, exp_root)
    name = lambda e: f"{e}_bert_qqp"  # noqa: E731
    killed = exp_root / name("killed")
    kill_after_first_checkpoint(start(script, killed_args, data_root, exp_root), killed)
    done = [int(p.stem.split("-")[1]) for p in killed.glob("model-*.pt")]
    assert done and max(done) < STEPS  # killed mid-run
    # the same command again (device flags may differ on resume)
    resumed = finish(script, [*killed_args, "--device_id", "-1"], data_root, exp_root)
    assert "resuming from model-" in resumed.stderr, resumed.stderr
    ref = exp_root / name("reference")
    assert_bitwise_equal(weights(ref / f"model-{STEPS}.pt"), weights(killed / f"model-{STEPS}.pt"))
    for f in extra_files:
        assert_bitwise_equal(weights(ref / f), weights(killed / f))
    assert [p.name for p in killed.glob("resume-*.pt")] == [f"resume-{STEPS}.pt"]  # only the latest is kept
    # logs: every logged step exactly once, same values as the uninterrupted run
    a, b = tb_scalars(exp_root / "log" / name("reference")), tb_scalars(exp_root / "log" / name("killed"))
    for tag in ("qqp/train/bert/loss", "qqp/train/bert/lr"):
        assert [s for s, _ in b[tag]] == list(range(10, STEPS + 1, 10)), tag
        assert [v for _, v in a[tag]] == pytest.approx([v for _, v in b[tag]], rel=1e-6), tag
    # a finished run says so and exits 0
    again = finish(script, killed_args, data_root, exp_root)
    assert "already finished" in again.stdout


COMMON = ["--task", "qqp", "--total_step", str(STEPS), "--warmup_step", "20", "--ckpt_step", "25", "--log_step", "10",
          "--batch_size", "8", "--accum_step", "2", "--max_seq_len", "24", "--seed", "7", "--dropout", "0.1"]


def test_fine_tune_killed_and_resumed_is_bit_identical(tiny_bert, data_root, exp_root):
    # 96 rows, micro-batch 4: 24 micro-batches an epoch, accumulation windows cross epochs
    check_resume("run_fine_tune.py", ["--model", "bert", "--ptrain_ver", str(tiny_bert), "--lr", "1e-3", *COMMON],
                 data_root, exp_root)


def test_lad_killed_and_resumed_is_bit_identical(tiny_bert, data_root, exp_root):
    finish("run_fine_tune.py", ["--experiment", "teacher", "--model", "bert", "--ptrain_ver", str(tiny_bert),
                                "--task", "qqp", "--total_step", "4", "--warmup_step", "1", "--max_seq_len", "24"],
           data_root, exp_root)
    args = ["--teacher_exp", "teacher", "--tmodel", "bert", "--tckpt", "4", "--model", "bert", "--d_model", "32",
            "--d_ff", "64", "--num_attention_heads", "2", "--num_hidden_layers", "1", "--mu", "10", "--lr", "1e-3",
            "--gate_lr", "1e-2", "--map_examples", "0", *[a for a in COMMON if a not in ("--max_seq_len", "24")]]
    check_resume("run_lad_distil.py", args, data_root, exp_root,
                 extra_files=[f"gate-{i}-{STEPS}.pt" for i in range(2)])


def test_killed_checkpoint_write_leaves_nothing_picked_up(tmp_path, monkeypatch):
    from fine_tune.engine.checkpoint import save_model_checkpoint
    from fine_tune.experiment import ExperimentDir

    exp = ExperimentDir(tmp_path, "x")
    exp.path.mkdir()
    model = torch.nn.Linear(4, 4)
    save_model_checkpoint(model, exp.checkpoint_path(5))
    good = exp.checkpoint_path(5).read_bytes()

    real_save = torch.save

    def dies_half_way(obj, f, *a, **k):
        f.write(b"partial bytes of a checkpoint")
        raise KeyboardInterrupt  # a kill during the save

    monkeypatch.setattr(torch, "save", dies_half_way)
    for target in (exp.checkpoint_path(10), exp.checkpoint_path(5)):
        with pytest.raises(KeyboardInterrupt):
            save_model_checkpoint(model, target)
    monkeypatch.setattr(torch, "save", real_save)
    assert exp.checkpoints() == [5] and exp.checkpoint_path(5).read_bytes() == good
    assert sorted(p.name for p in exp.path.iterdir()) == ["model-5.pt"]  # no temporary file left either
