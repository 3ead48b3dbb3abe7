#!/usr/bin/env python
"""Real-model measurements behind the results tables of doc/ (long: tens of minutes on a 2-core CPU).

MiniLM-L6-H384 (../shared/models) fine-tuned on qp_pairs (../shared/data/qp_pairs, QQP layout) as the teacher;
a 3-layer student of the same width (d_model 384, d_ff 1536, 12 heads) distilled with every method for the
same number of optimizer steps, over 3 seeds; dev accuracy of the last checkpoint. Also the BoolQ teacher on
real BoolQ (train = first 2270 val rows, dev = last 1000). Every command is printed before it runs; finished
runs are skipped (the toolkit exits at once when model-{total_step}.pt exists), so the script can be re-run.

    python scripts/measure_real.py [--steps 200] [--mu 1] [--seeds 42,43,44] [--only qqp|boolq] [--options]
    python scripts/measure_real.py --only byo --steps 600   # teachers and students of other widths (issue 16)
    python scripts/measure_real.py --only qqp --seeds 42 --eval_during_training && \
        python scripts/measure_real.py --only deploy          # plots, curves and the best student as ONNX (issue 17)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("FT_SHARED", REPO.parent / "shared"))
MODEL = SHARED / "models" / "minilm-l6-h384-uncased"
WORK = REPO / "data" / "measure"
QQP_ROOT, BOOLQ_ROOT, EXP = WORK / "qp_pairs", WORK / "boolq", WORK / "experiments"
STUDENT = [
    "--d_model",
    "384",
    "--d_ff",
    "1536",
    "--num_attention_heads",
    "12",
    "--num_hidden_layers",
    "3",
    "--type_vocab_size",
    "2",
]


def sh(script: str, *args: str) -> float:
    cmd = [sys.executable, script, *args, "--data_root", str(args_root(script, args)), "--exp_root", str(EXP)]
    print("$ python " + " ".join([script, *args]), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, check=True, env={**os.environ, "TQDM_DISABLE": "1"})
    return time.perf_counter() - start


def args_root(script: str, args) -> Path:
    return BOOLQ_ROOT if "boolq" in args else QQP_ROOT


def prepare_data() -> None:
    (QQP_ROOT / "QQP").mkdir(parents=True, exist_ok=True)
    for split in ("train", "dev", "test"):
        shutil.copyfile(SHARED / "data" / "qp_pairs" / "QQP" / f"{split}.tsv", QQP_ROOT / "QQP" / f"{split}.tsv")
    (BOOLQ_ROOT / "BoolQ").mkdir(parents=True, exist_ok=True)
    val = (SHARED / "data" / "boolq" / "val.jsonl").read_text(encoding="utf-8").splitlines()
    (BOOLQ_ROOT / "BoolQ" / "train.jsonl").write_text("\n".join(val[:2270]) + "\n", encoding="utf-8")
    (BOOLQ_ROOT / "BoolQ" / "val.jsonl").write_text("\n".join(val[2270:]) + "\n", encoding="utf-8")
    shutil.copyfile(SHARED / "data" / "boolq" / "test.jsonl", BOOLQ_ROOT / "BoolQ" / "test.jsonl")


def dev_accuracy(experiment: str, task: str, split: str) -> float:
    table = json.loads((EXP / f"{experiment}_bert_{task}" / f"eval-{split}.json").read_text())
    return table["rows"][-1]["accuracy"]


def steps(n: int) -> list[str]:
    return [
        "--total_step",
        str(n),
        "--warmup_step",
        str(max(1, n // 10)),
        "--ckpt_step",
        str(n),
        "--log_step",
        str(max(1, n // 10)),
    ]


def qqp(args) -> None:
    teacher_steps = teacher_qqp()
    sh(
        "run_fine_tune_gen_logits.py",
        "--experiment",
        "teacher",
        "--model",
        "bert",
        "--task",
        "qqp",
        "--dataset",
        "train",
        "--ckpt",
        str(teacher_steps),
        "--batch_size",
        "256",
    )
    teacher = ["--teacher_exp", "teacher", "--tmodel", "bert", "--tckpt", str(teacher_steps)]
    # One setting for every method, so the table compares methods, not hyper-parameters: the seed document's
    # logits loss (T 20, soft 0.7, hard 0.3) and lr 1e-4; mu 1 for every hidden loss. The seed's mu (500 for
    # LAD) makes the hidden term ~800x the logits term, which a budget of a few hundred steps cannot afford.
    kd = ["--softmax_temp", "20", "--soft_weight", "0.7", "--hard_weight", "0.3", "--lr", "1e-4"]
    mu = ["--mu", str(args.mu)]
    # every student starts the same way: pretrained layers 2, 4, 6, the pooler and (unlike the original, whose
    # students keep random embeddings and need tens of thousands of steps) the pretrained embeddings. With random
    # embeddings no method gets past chance at this budget (LAD, LAD-NO, PKD at 200 steps: dev 0.500).
    init = ["--init_start", "2", "--init_end", "6", "--init_step", "2", "--init_embeddings"]
    teacher = [*teacher, *init]
    methods = {  # name -> (script, flags); the same steps, batch, lr and logits loss for all
        "LAD": ("run_lad_distil.py", [*teacher, *kd, *mu, "--gate_lr", "5e-7"]),
        "LAD-NO": ("run_lad_no_distil.py", [*teacher, *kd, *mu, "--gate_lr", "5e-7"]),
        "PKD": ("run_pkd_distill.py", [*teacher, *kd, *mu]),
        "ALP-KD (hidden)": ("run_alp_distil.py", [*teacher, "--alp_exp", "alp-kd-hidden", *kd, *mu]),
        "online logits KD (mu 0)": ("run_pkd_distill.py", [*teacher, *kd, "--mu", "0"]),
        "offline logits KD": (
            "run_fine_tune_distill.py",
            ["--dataset", "teacher_bert_qqp", "--num_class", "2", "--max_seq_len", "64", *kd, *init],
        ),
        "no teacher (hard labels)": (
            "run_pkd_distill.py",
            [*teacher, "--soft_weight", "0", "--hard_weight", "1", "--mu", "0", "--lr", "1e-4"],
        ),
    }
    if args.options:  # issue 5's options that change the trajectory, against the faithful rows above
        methods.update(
            {
                "LAD --padding dynamic": (
                    "run_lad_distil.py",
                    [*teacher, *kd, *mu, "--gate_lr", "5e-7", "--padding", "dynamic"],
                ),
                "PKD --padding dynamic": ("run_pkd_distill.py", [*teacher, *kd, *mu, "--padding", "dynamic"]),
                "PKD --group_by_length": ("run_pkd_distill.py", [*teacher, *kd, *mu, "--group_by_length"]),
            }
        )
    results: dict[str, list[float]] = {}
    seconds: dict[str, list[float]] = {}
    for seed in args.seeds:
        for name, (script, flags) in methods.items():
            exp = "m_" + "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_") + f"_{seed}"
            # --eval_during_training (issue 17): dev every steps/4 steps too (runtime flags: the same weights)
            watch = (
                ["--eval_dataset", "dev", "--eval_step", str(max(1, args.steps // 4)), "--eval_batch_size", "256"]
                if args.eval_during_training
                else []
            )
            secs = sh(
                script,
                "--experiment",
                exp,
                "--model",
                "bert",
                "--task",
                "qqp",
                *STUDENT,
                *flags,
                "--batch_size",
                "32",
                "--seed",
                str(seed),
                *steps(args.steps),
                *watch,
            )
            sh(
                "run_fine_tune_eval.py",
                "--experiment",
                exp,
                "--model",
                "bert",
                "--task",
                "qqp",
                "--dataset",
                "dev",
                "--batch_size",
                "256",
                "--ckpt",
                str(args.steps),
            )
            results.setdefault(name, []).append(dev_accuracy(exp, "qqp", "dev"))
            seconds.setdefault(name, []).append(secs)
    print(f"\nteacher dev accuracy: {dev_accuracy('teacher', 'qqp', 'dev'):.4f} ({teacher_steps} steps)")
    print(
        f"\n| method | dev accuracy, mean ± std over seeds {', '.join(map(str, args.seeds))} | per seed | "
        f"train+eval wall s (median) |\n|-|-|-|-|"
    )
    for name, accs in results.items():
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        print(
            f"| {name} | {statistics.mean(accs):.4f} ± {std:.4f} | {' / '.join(f'{a:.4f}' for a in accs)} | "
            f"{statistics.median(seconds[name]):.0f} |"
        )


def deploy(args) -> None:
    """Issue 17's check on the students of ``--only qqp``: the results table with its data, the accuracy-vs-size
    and accuracy-vs-speed plot and the learning curves, then the best student as ONNX (fp32 and int8)."""
    table = [
        "results_table.py",
        "--task",
        "qqp",
        "--select_on",
        "dev",
        "--experiments",
        "m_*,teacher",
        "--out",
        str(WORK / "results-qqp.md"),
    ]
    for cmd in (table + ["--plot"], table + ["--curves", "m_lad_*,m_pkd_*,m_no_teacher_*"]):
        print("$ python " + " ".join(cmd), flush=True)
        subprocess.run(
            [sys.executable, *cmd, "--exp_root", str(EXP), "--data_root", str(QQP_ROOT)], cwd=REPO, check=True
        )
    rows = json.loads((WORK / "results-qqp.json").read_text())["rows"]
    students = [r for r in rows if not r.get("is_teacher")]
    best = max(students, key=lambda r: r["splits"]["dev"]["metrics"]["accuracy"]["mean"])
    folder = sorted(best["members"])[0]
    experiment = folder[: -len("_bert_qqp")]
    sh(
        "export_model.py",
        "--experiment",
        experiment,
        "--model",
        "bert",
        "--task",
        "qqp",
        "--ckpt",
        "best",
        "--select_on",
        "dev",
        "--format",
        "onnx",
        "--quantize",
        "int8",
        "--overwrite",
    )


def teacher_qqp() -> int:
    """The MiniLM teacher fine-tuned on qp_pairs (shared by the qqp and byo measurements); returns its steps."""
    teacher_steps = 300
    sh(
        "run_fine_tune.py",
        "--experiment",
        "teacher",
        "--model",
        "bert",
        "--ptrain_ver",
        str(MODEL),
        "--task",
        "qqp",
        "--dataset",
        "train",
        "--batch_size",
        "32",
        "--lr",
        "5e-5",
        "--max_seq_len",
        "64",
        "--seed",
        "42",
        *steps(teacher_steps),
    )
    sh(
        "run_fine_tune_eval.py",
        "--experiment",
        "teacher",
        "--model",
        "bert",
        "--task",
        "qqp",
        "--dataset",
        "dev",
        "--batch_size",
        "256",
    )
    return teacher_steps


# issue 16's check: one student for every method, of another width than the teacher's (384) and with fewer layers
# than the teacher's 6, which 4 does not divide (every mapping spreads ceil(j * 6 / 4) = 2, 3, 5, 6)
BYO_STUDENT = ["--d_model", "256", "--d_ff", "1024", "--num_attention_heads", "8", "--num_hidden_layers", "4"]


def byo(args) -> None:
    """A 4-layer student of width 256 (random initialisation: no pretrained model of that width is at hand) of the
    MiniLM teacher, every method with the same steps, batch, lr, padding and seeds: no teacher, offline logits KD,
    PKD, LAD (hidden losses through the learned projection), TinyBERT (intermediate stage for half the steps,
    then the prediction stage from its export for the other half), MiniLM (MiniLMv2 relation heads: the student's 8
    heads are not the teacher's 12)."""
    teacher_steps = teacher_qqp()
    if not (QQP_ROOT / "logits" / "teacher_bert_qqp" / "train" / "meta.json").is_file():  # once for every seed
        sh(
            "run_fine_tune_gen_logits.py",
            "--experiment",
            "teacher",
            "--model",
            "bert",
            "--task",
            "qqp",
            "--dataset",
            "train",
            "--ckpt",
            str(teacher_steps),
            "--batch_size",
            "256",
        )
    n, half = args.steps, args.steps // 2
    teacher = ["--teacher_exp", "teacher", "--tmodel", "bert", "--tckpt", str(teacher_steps)]
    common = ["--model", "bert", "--task", "qqp", "--batch_size", "32", "--lr", str(args.lr), "--padding", "dynamic"]
    kd = ["--softmax_temp", "1", "--soft_weight", "0.7", "--hard_weight", "0.3"]
    mu = ["--mu", str(args.mu)]
    methods = {
        "no teacher (hard labels)": [
            ("run_pkd_distill.py", [*teacher, *BYO_STUDENT, "--soft_weight", "0", "--hard_weight", "1", "--mu", "0"], n)
        ],
        "offline logits KD": [
            ("run_fine_tune_distill.py", ["--dataset", "teacher_bert_qqp", "--max_seq_len", "64", *BYO_STUDENT, *kd], n)
        ],
        "PKD (projection)": [("run_pkd_distill.py", [*teacher, *BYO_STUDENT, *kd, *mu], n)],
        "LAD (projection)": [("run_lad_distil.py", [*teacher, *BYO_STUDENT, *kd, *mu, "--gate_lr", "5e-7"], n)],
        "TinyBERT (head-mean attention, W_h)": [
            ("run_tinybert_distil.py", [*teacher, *BYO_STUDENT, "--tinybert_attention", "head_mean", *mu], half),
            (
                "run_tinybert_distil.py",
                [*teacher, "--tinybert_stage", "prediction", "--student_ptrain_ver", "{stage1}", "--softmax_temp", "1"],
                n - half,
            ),
        ],
        "MiniLM (v2 relations, 4 heads)": [
            ("run_minilm_distil.py", [*teacher, *BYO_STUDENT, *kd, *mu, "--relation_heads", "4"], n)
        ],
    }
    results: dict[str, list[float]] = {}
    for seed in args.seeds:
        for name, stages in methods.items():
            base = (
                "b_" + "".join(c if c.isalnum() else "_" for c in name.lower().split(" (")[0]).strip("_") + f"_{seed}"
            )
            exp = base
            for i, (script, flags, count) in enumerate(stages):
                exp = base if len(stages) == 1 else f"{base}_stage{i + 1}"
                flags = [
                    f.replace("{stage1}", str(EXP / f"{base}_stage1_bert_qqp" / f"hf-model-{half}")) for f in flags
                ]
                sh(script, "--experiment", exp, *common, *flags, "--seed", str(seed), *steps(count))
                if i + 1 < len(stages):  # the next stage starts from this one's export
                    out = EXP / f"{exp}_bert_qqp" / f"hf-model-{count}"
                    if not out.is_dir():
                        sh("export_model.py", "--experiment", exp, "--model", "bert", "--task", "qqp")
            last = stages[-1][2]
            sh(
                "run_fine_tune_eval.py",
                "--experiment",
                exp,
                "--model",
                "bert",
                "--task",
                "qqp",
                "--dataset",
                "dev",
                "--batch_size",
                "256",
                "--ckpt",
                str(last),
            )
            results.setdefault(name, []).append(dev_accuracy(exp, "qqp", "dev"))
    print(f"\nteacher dev accuracy: {dev_accuracy('teacher', 'qqp', 'dev'):.4f} ({teacher_steps} steps)")
    print(f"\n| method | dev accuracy, mean ± std over seeds {', '.join(map(str, args.seeds))} | per seed |\n|-|-|-|")
    for name, accs in results.items():
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        print(f"| {name} | {statistics.mean(accs):.4f} ± {std:.4f} | {' / '.join(f'{a:.4f}' for a in accs)} |")


def boolq(args) -> None:
    n = 71  # one epoch of 2270 rows at batch 32
    sh(
        "run_fine_tune.py",
        "--experiment",
        "teacher",
        "--model",
        "bert",
        "--ptrain_ver",
        str(MODEL),
        "--task",
        "boolq",
        "--dataset",
        "train",
        "--batch_size",
        "32",
        "--lr",
        "5e-5",
        "--max_seq_len",
        "256",
        "--seed",
        "42",
        *steps(n),
    )
    sh(
        "run_fine_tune_eval.py",
        "--experiment",
        "teacher",
        "--model",
        "bert",
        "--task",
        "boolq",
        "--dataset",
        "val",
        "--batch_size",
        "128",
    )
    labels = [json.loads(line)["label"] for line in (BOOLQ_ROOT / "BoolQ" / "val.jsonl").read_text().splitlines()]
    major = max(labels.count(v) for v in set(labels)) / len(labels)
    print(
        f"\nBoolQ teacher val accuracy {dev_accuracy('teacher', 'boolq', 'val'):.4f} after {n} steps; "
        f"majority rate {major:.4f}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--mu", type=float, default=1.0, help="mu of every hidden loss")
    p.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[42, 43, 44])
    p.add_argument(
        "--only",
        choices=("qqp", "boolq", "byo", "deploy"),
        help="byo: issue 16's check (a 4-layer student of width 256, every method; not in the default run)",
    )
    p.add_argument("--lr", type=float, default=3e-4, help="the byo students' learning rate (random initialisation)")
    p.add_argument(
        "--eval_during_training",
        action="store_true",
        help="qqp students also evaluate on dev every steps/4 steps (issue 17's learning curves)",
    )
    p.add_argument(
        "--options", action="store_true", help="also LAD and PKD with --padding dynamic and PKD with --group_by_length"
    )
    args = p.parse_args()
    if not MODEL.is_dir():
        sys.exit(f"error: {MODEL} not found (needs ../shared beside the checkout)")
    prepare_data()
    if args.only in (None, "qqp"):
        qqp(args)
    if args.only in (None, "boolq"):
        boolq(args)
    if args.only == "byo":
        byo(args)
    if args.only == "deploy":  # after --only qqp: tables, plots, the best student as ONNX (issue 17)
        deploy(args)


if __name__ == "__main__":
    main()
