"""The offline demo: the whole pipeline on a synthetic BoolQ-format data set and a tiny generated model.

``python -m fine_tune.demo`` (or ``bash scripts/demo.sh``, which installs the requirements first) runs, as a
user would, the entry scripts: teacher fine-tune -> eval -> logits -> student distillation -> eval -> test
predictions, and prints a results table. Everything lands in ``data/demo/`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from . import synthetic
from .errors import UserError
from .experiment import REPO_ROOT
from .io_utils import reset_own_folder

TEACHER = ["--experiment", "teacher", "--model", "bert", "--task", "boolq"]
STUDENT = ["--experiment", "student", "--model", "bert", "--task", "boolq"]
COMMON = ["--max_seq_len", "64", "--seed", "42"]


def _run(script: str, args: list[str], env: dict[str, str]) -> None:
    cmd = [sys.executable, str(REPO_ROOT / script), *args]
    print("$ " + " ".join([Path(cmd[0]).name, script, *args]), flush=True)
    proc = subprocess.run(cmd, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"demo step failed: {script} (exit {proc.returncode})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO_ROOT / "data" / "demo"), help="folder for everything the demo writes")
    args = parser.parse_args(argv)
    out = Path(args.out)
    try:  # a folder the demo wrote before is replaced; any other existing folder is refused
        reset_own_folder(out, ".fine_tune_demo", ("tiny-bert", "data", "experiments"), "--out")
    except UserError as e:  # one line, exit status 2, as every entry script refuses a bad input
        print(f"error: {e}", file=sys.stderr)
        return 2
    start = time.time()
    model_dir = synthetic.write_tiny_model(out / "tiny-bert", "bert", num_layers=4, hidden=64, heads=4, ff=128)
    data_root, exp_root = out / "data", out / "experiments"
    synthetic.write_boolq(data_root, n_train=1024, n_val=256, n_test=128)
    env = dict(os.environ, FT_DATA_ROOT=str(data_root), FT_EXP_ROOT=str(exp_root))
    _run(
        "run_fine_tune.py",
        TEACHER
        + [
            "--ptrain_ver",
            str(model_dir),
            "--dataset",
            "train",
            "--batch_size",
            "32",
            "--lr",
            "1e-3",
            "--total_step",
            "150",
            "--warmup_step",
            "15",
            "--ckpt_step",
            "50",
            "--log_step",
            "25",
            *COMMON,
        ],
        env,
    )
    _run("run_fine_tune_eval.py", TEACHER + ["--dataset", "val", "--batch_size", "128"], env)
    _run("run_fine_tune_gen_logits.py", TEACHER + ["--dataset", "train", "--ckpt", "150", "--batch_size", "128"], env)
    _run(
        "run_fine_tune_distill.py",
        STUDENT
        + [
            "--dataset",
            "teacher_bert_boolq",
            "--batch_size",
            "32",
            "--lr",
            "1e-3",
            "--total_step",
            "150",
            "--warmup_step",
            "15",
            "--ckpt_step",
            "50",
            "--log_step",
            "25",
            "--d_model",
            "64",
            "--d_ff",
            "128",
            "--num_attention_heads",
            "4",
            "--num_hidden_layers",
            "2",
            "--init_start",
            "2",
            "--init_end",
            "4",
            "--init_step",
            "2",
            *COMMON,
        ],
        env,
    )
    _run("run_fine_tune_eval.py", STUDENT + ["--dataset", "val", "--batch_size", "128"], env)
    _run("generate_test_prediction.py", STUDENT + ["--dataset", "test", "--ckpt", "150", "--batch_size", "128"], env)

    print("\nResults on the synthetic BoolQ val split (256 rows):")
    _run("results_table.py", ["--task", "boolq", "--splits", "val"], env)
    print(f"\nSubmission file: {exp_root / 'student_bert_boolq' / 'BoolQ.jsonl'}")
    print(f"TensorBoard: tensorboard --logdir {exp_root / 'log'}")
    print(f"Demo finished in {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
