#!/usr/bin/env python
"""Stress the end of multi-process runs: N consecutive two-process torchrun runs that train to the end, counting
the ones whose exit status is not 0.

A run that trained to the end and wrote every checkpoint must exit 0 on every rank, every time: a seed sweep or a
cluster scheduler trusts that status. Each run here is ``torchrun --standalone --nproc_per_node 2`` (Gloo on CPU,
one thread per process) of a fine-tune (``run_fine_tune.py``) or a LAD distillation (``run_lad_distil.py``) of the
tiny generated model on synthetic QQP files: batch 16, max_seq_len 64, 60 steps, a checkpoint every 10 steps. Each
run starts in a fresh experiment. A failed run's exit status and the last lines of its stderr are printed.

    python scripts/stress_torchrun.py --runs 50                # 50 fine-tunes and 50 LAD runs (about 20 min, 2 cores)
    python scripts/stress_torchrun.py --runs 5 --only lad --steps 20

Not part of the test suite (it is slow); doc/methods.md quotes its figures.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def torchrun(script: str, args: list[str], env: dict, cwd: Path) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(REPO / script),
        *args,
    ]
    return subprocess.run(cmd, env=env, cwd=str(cwd), capture_output=True, text=True, timeout=900)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=50, help="runs of each kind (default 50)")
    ap.add_argument("--only", choices=("fine_tune", "lad"), help="one kind only")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--ckpt_step", type=int, default=10)
    args = ap.parse_args()
    from fine_tune import synthetic

    kinds = [args.only] if args.only else ["fine_tune", "lad"]
    failures: dict[str, list[tuple[int, int, str]]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory(prefix="stress-torchrun-") as tmp:
        base = Path(tmp)
        data, exp = base / "data", base / "exp"
        synthetic.write_qqp(data, n_train=256, n_dev=32, n_test=16)
        tiny = synthetic.write_tiny_model(base / "tiny-bert12", "bert", num_layers=12)
        env = dict(
            os.environ,
            FT_DATA_ROOT=str(data),
            FT_EXP_ROOT=str(exp),
            TQDM_DISABLE="1",
            OMP_NUM_THREADS="1",
            TMPDIR=str(base),
        )
        common = [
            "--task",
            "qqp",
            "--batch_size",
            "16",
            "--max_seq_len",
            "64",
            "--total_step",
            str(args.steps),
            "--warmup_step",
            "2",
            "--ckpt_step",
            str(args.ckpt_step),
            "--log_step",
            "5",
            "--lr",
            "1e-3",
            "--device_id",
            "-1",
        ]
        if "lad" in kinds:  # the LAD runs' teacher (one process)
            subprocess.run(
                [
                    sys.executable,
                    str(REPO / "run_fine_tune.py"),
                    "--experiment",
                    "teacher",
                    "--model",
                    "bert",
                    "--ptrain_ver",
                    str(tiny),
                    *common,
                    "--total_step",
                    "4",
                    "--ckpt_step",
                    "4",
                ],
                env=env,
                cwd=str(base),
                check=True,
                capture_output=True,
            )
        start = time.perf_counter()
        for i in range(args.runs):
            for kind in kinds:
                if kind == "fine_tune":
                    proc = torchrun(
                        "run_fine_tune.py",
                        ["--experiment", f"ft{i}", "--model", "bert", "--ptrain_ver", str(tiny), *common],
                        env,
                        base,
                    )
                else:
                    proc = torchrun(
                        "run_lad_distil.py",
                        [
                            "--experiment",
                            f"lad{i}",
                            "--teacher_exp",
                            "teacher",
                            "--tmodel",
                            "bert",
                            "--tckpt",
                            "4",
                            "--model",
                            "bert",
                            "--d_model",
                            "32",
                            "--d_ff",
                            "64",
                            "--num_attention_heads",
                            "2",
                            "--num_hidden_layers",
                            "6",
                            "--map_examples",
                            "0",
                            *common,
                        ],
                        env,
                        base,
                    )
                folder = exp / (f"ft{i}_bert_qqp" if kind == "fine_tune" else f"lad{i}_bert_qqp")
                finished = (folder / f"resume-{args.steps}.pt").is_file()
                if proc.returncode != 0 or not finished:
                    lines = proc.stderr.strip().splitlines()
                    said = [line for line in lines if "terminate" in line or "Abort" in line or "what()" in line]
                    tail = "\n    ".join([*said, *lines[-6:]])
                    failures[kind].append((i, proc.returncode, tail))
                    print(f"run {i} {kind}: exit {proc.returncode}, finished={finished}\n    {tail}", flush=True)
            if (i + 1) % 5 == 0:
                done = {k: f"{len(failures[k])} failed of {i + 1}" for k in kinds}
                print(f"after {i + 1} runs of each ({time.perf_counter() - start:.0f} s): {done}", flush=True)
    for kind in kinds:
        print(f"{kind}: {args.runs} two-process runs, {len(failures[kind])} with a non-zero exit status or unfinished")
    return 0 if not any(failures.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
