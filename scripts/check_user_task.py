#!/usr/bin/env python
"""Real-model check of the user-data path: ``../shared/data/qp_pairs`` as ``--task qqp`` and rewritten as a task of
your own (a CSV with other column names and string labels), the MiniLM teacher fine-tuned the same way on both,
dev accuracy of each.

    python scripts/check_user_task.py [--steps 80] [--out /tmp/user_task_check]

Flags of both runs: MiniLM-L6-H384 (``../shared/models``), batch 32, lr 5e-5, warmup steps/10, max_seq_len 64, seed
42, fp32; evaluation of the last checkpoint on all 1,000 dev rows.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
sys.path.insert(0, str(REPO))
from fine_tune.io_utils import reset_own_folder  # noqa: E402


def to_csv(src: Path, dest: Path, labelled: bool) -> None:
    with open(src, encoding="utf-8") as f, open(dest, "w", newline="", encoding="utf-8") as out:
        rows = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        names = ["pair_id", "query", "passage"] + (["match"] if labelled else [])
        w = csv.DictWriter(out, fieldnames=names)
        w.writeheader()
        for r in rows:
            row = {"pair_id": r["id"], "query": r["question1"], "passage": r["question2"]}
            if labelled:
                row["match"] = ("no", "yes")[int(r["is_duplicate"])]
            w.writerow(row)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=80)
    ap.add_argument("--out", type=Path, default=Path("/tmp/user_task_check"))
    args = ap.parse_args()
    data, exps = args.out / "data", args.out / "exp"
    reset_own_folder(args.out, ".check_user_task", ("data", "exp"), "--out")
    shutil.copytree(SHARED / "data" / "qp_pairs" / "QQP", data / "QQP")
    mine = data / "qp_csv"
    mine.mkdir(parents=True)
    for split in ("train", "dev", "test"):
        to_csv(data / "QQP" / f"{split}.tsv", mine / f"{split}.csv", labelled=split != "test")
    (mine / "task.json").write_text(
        json.dumps(
            {
                "files": {"train": "train.csv", "dev": "dev.csv", "test": "test.csv"},
                "text": "query",
                "text_pair": "passage",
                "label": "match",
                "labels": ["no", "yes"],
                "id": "pair_id",
                "metrics": ["accuracy", "f1"],
            },
            indent=1,
        )
    )
    env = dict(os.environ, FT_DATA_ROOT=str(data), FT_EXP_ROOT=str(exps), TQDM_DISABLE="1")
    model = SHARED / "models" / "minilm-l6-h384-uncased"
    results = {}
    for task in ("qqp", "qp_csv"):
        common = ["--experiment", "check", "--model", "bert", "--task", task]
        subprocess.run(
            [
                sys.executable,
                str(REPO / "run_fine_tune.py"),
                *common,
                "--ptrain_ver",
                str(model),
                "--total_step",
                str(args.steps),
                "--warmup_step",
                str(max(1, args.steps // 10)),
                "--ckpt_step",
                str(args.steps),
                "--batch_size",
                "32",
                "--lr",
                "5e-5",
                "--max_seq_len",
                "64",
                "--seed",
                "42",
                "--device_id",
                "-1",
            ],
            check=True,
            env=env,
        )
        subprocess.run(
            [sys.executable, str(REPO / "run_fine_tune_eval.py"), *common, "--dataset", "dev"], check=True, env=env
        )
        table = json.loads((exps / f"check_bert_{task}" / "eval-dev.json").read_text())
        results[task] = table["rows"][-1]
    for task, row in results.items():
        print(f"{task}: dev accuracy {row['accuracy']:.4f}, F1 {row['f1']:.4f} at model-{row['ckpt']}.pt")


if __name__ == "__main__":
    main()
