#!/usr/bin/env python
"""Distillation throughput: this toolkit's engine (BERT-PKD, LAD) vs TextBrewer's ``GeneralDistiller``.

The same teacher (MiniLM-L6-H384 with a classification head), the same student (3 layers, hidden 384, d_ff 1536,
12 heads), the same batches in the same order (``fine_tune.batching.MicroBatchStream``), batch size, max_seq_len
and padding (every batch padded to max_seq_len, as LAD needs), fp32, the same optimizer (AdamW, fused kernel, lr
1e-4, weight decay 0.01 except biases and LayerNorm weights, built by ``fine_tune.engine.optim.build_adamw``),
linear warmup/decay, clipping at 1.0, and the same loss: hard_weight * CE + soft_weight * soft loss at
temperature T + mu * (1/3) * sum_j MSE(H_s[j], H_t[2j]) over every token (TextBrewer: ``hidden_mse`` matches
with weight mu/3, no input mask; its soft loss is the soft cross-entropy without T^2, the same work).
TextBrewer runs with ``log_dir=None`` (no TensorBoard), the toolkit logs every ``--steps`` steps.

Contenders, one fresh subprocess per run, alternating in one run: ``pkd`` (toolkit, the same work as
TextBrewer), ``lad`` (toolkit LAD: also runs and trains 6 gate blocks with their own optimizer), ``textbrewer``.
Timed: ``--steps`` optimizer steps after ``--warm_steps``, from the beginning of step warm+1 to the beginning of
step warm+steps+1 (when the batch is fetched).

    pip install -r bench/requirements.txt
    python bench/bench_distill.py [--steps 20 --repeats 3 --max_seq_len 128] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_finetune import (DEFAULT_DATA, DEFAULT_MODEL, SEED, Stamps, load_examples, machine,  # noqa: E402
                            run_worker, total_steps)

LR, WEIGHT_DECAY, MAX_NORM = 1e-4, 0.01, 1.0
HARD, SOFT, TEMP, MU = 0.3, 0.7, 20.0, 100.0
STUDENT = dict(d_model=384, d_ff=1536, num_attention_heads=12, num_hidden_layers=3)


def build(args):
    """Features, teacher (eval, frozen), student, in a fixed seed."""
    import torch

    from fine_tune.batching import Collator, tokenize
    from fine_tune.models.classifier import (build_from_config, build_pretrained_classifier, load_tokenizer,
                                             student_config)
    from fine_tune.train import seed_everything

    seed_everything(SEED)
    tok = load_tokenizer(args.model)
    features = tokenize(tok, load_examples(args), args.max_seq_len)
    teacher = build_pretrained_classifier(args.model, "bert", 2, 0.1).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    cfg = student_config("bert", vocab_size=teacher.config.vocab_size, num_class=2, type_vocab_size=2, dropout=0.1,
                         max_position_embeddings=teacher.config.max_position_embeddings,
                         pad_token_id=tok.pad_token_id, **STUDENT)
    student = build_from_config(cfg)
    collator = Collator(features, tok.pad_token_id, args.max_seq_len, "max_length")
    return torch, features, teacher, student, collator


def optimizer_for(student):
    import torch

    from fine_tune.engine.optim import build_adamw

    return build_adamw(student.named_parameters(), lr=LR, beta1=0.9, beta2=0.999, eps=1e-8,
                       weight_decay=WEIGHT_DECAY, device=torch.device("cpu"))


def worker_toolkit(args, method_name: str, t0: float) -> dict:
    from fine_tune.engine.device import resolve_device, resolve_precision
    from fine_tune.engine.trainer import Trainer, TrainSettings
    from fine_tune.experiment import ExperimentDir
    from fine_tune.methods import LAD, PKD

    torch, features, teacher, student, collator = build(args)
    n = total_steps(args)
    ls, lt = STUDENT["num_hidden_layers"], teacher.config.num_hidden_layers
    if method_name == "pkd":
        method = PKD(ls, lt, HARD, SOFT, TEMP, MU)
    else:
        gates = dict(lr=5e-7, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01, max_norm=1.0, total_step=n,
                     warmup_step=max(1, n // 10))
        method = LAD(ls, lt, HARD, SOFT, TEMP, MU, d_model=384, seq_len=args.max_seq_len, gate_settings=gates)
    device = resolve_device(-1, None)
    settings = TrainSettings(total_step=n, batch_size=args.batch_size, accum_step=1, lr=LR, beta1=0.9, beta2=0.999,
                             eps=1e-8, weight_decay=WEIGHT_DECAY, max_norm=MAX_NORM, warmup_step=max(1, n // 10),
                             ckpt_step=10**9, log_step=args.steps, seed=SEED, tag_prefix="qqp/train/bert")
    stamps = Stamps(args)

    def timed_collator(rows):
        stamps.step_begins()
        batch = collator(rows)
        stamps.widths.append(batch["input_ids"].shape[1])
        return batch

    with tempfile.TemporaryDirectory() as tmp:
        exp = ExperimentDir(Path(tmp), "bench")
        exp.path.mkdir()
        trainer = Trainer(student, method, timed_collator, len(features), settings, exp, device,
                          resolve_precision(False, "bf16", device), teacher=teacher, progress=False)
        start = time.perf_counter()
        trainer.train()
        train_s = time.perf_counter() - start
    return stamps.result(args, method_name, train_s, t0)


def worker_textbrewer(args, t0: float) -> dict:
    from textbrewer import DistillationConfig, GeneralDistiller, TrainingConfig
    from transformers import get_linear_schedule_with_warmup

    from fine_tune.batching import MicroBatchStream

    torch, features, teacher, student, collator = build(args)
    n = total_steps(args)
    stamps = Stamps(args)
    stream = MicroBatchStream(len(features), args.batch_size, SEED)

    class Batches:  # the toolkit's batch order and padding; stamps the beginning of each step
        def __iter__(self):
            while True:
                stamps.step_begins()
                b = collator(stream.next())
                stamps.widths.append(b["input_ids"].shape[1])
                yield {k: b[k] for k in ("input_ids", "token_type_ids", "attention_mask", "labels")}

    def adaptor(batch, out):
        return {"logits": out.logits, "hidden": out.hidden_states, "losses": [out.loss]}

    ls = STUDENT["num_hidden_layers"]
    matches = [{"layer_T": 2 * j, "layer_S": j, "feature": "hidden", "loss": "hidden_mse", "weight": MU / ls}
               for j in range(1, ls + 1)]  # hidden_states[0] is the embedding output: index j is layer j
    with tempfile.TemporaryDirectory() as tmp:
        tconf = TrainingConfig(device="cpu", log_dir=None, output_dir=tmp, ckpt_steps=10**9, fp16=False)
        dconf = DistillationConfig(temperature=TEMP, hard_label_weight=HARD, kd_loss_type="ce", kd_loss_weight=SOFT,
                                   intermediate_matches=matches)
        distiller = GeneralDistiller(tconf, dconf, teacher, student, adaptor, adaptor)
        opt = optimizer_for(student)
        start = time.perf_counter()
        with distiller:
            distiller.train(opt, Batches(), num_steps=n, scheduler_class=get_linear_schedule_with_warmup,
                            scheduler_args={"num_warmup_steps": max(1, n // 10), "num_training_steps": n},
                            max_grad_norm=MAX_NORM, output_hidden_states=True)
        train_s = time.perf_counter() - start
    # TextBrewer fetches one more batch than it trains on only when it cycles past the end: trim to n stamps
    stamps.begin, stamps.widths = stamps.begin[:n], stamps.widths[:n]
    return stamps.result(args, "textbrewer", train_s, t0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--contender", choices=("pkd", "lad", "textbrewer"), help="run one contender here (worker)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warm_steps", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--max_seq_len", type=int, default=128)
    p.add_argument("--rows", type=int, default=2048, help="first ROWS training rows (0 = all)")
    p.add_argument("--model", default=str(DEFAULT_MODEL))
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--profile", help=argparse.SUPPRESS)
    p.add_argument("--json", metavar="OUT")
    args = p.parse_args(argv)
    missing = [x for x in (Path(args.model) / "config.json", Path(args.data) / "QQP" / "train.tsv") if not x.is_file()]
    if missing:
        print(f"skipped: {', '.join(map(str, missing))} not found")
        return 0
    if args.contender:
        t0 = time.perf_counter()
        res = worker_textbrewer(args, t0) if args.contender == "textbrewer" else worker_toolkit(args, args.contender, t0)
        print(json.dumps(res))
        return 0
    info = machine()
    print(f"distilling {Path(args.model).name} (6 layers) into a 3-layer student on qp_pairs: {args.steps} timed steps "
          f"(after {args.warm_steps}) x batch {args.batch_size}, max_seq_len {args.max_seq_len} (fixed padding), fp32; "
          f"torch {info['torch']}, {info['cores']} cores; load average at start {info['load_avg_start'][0]:.2f}")
    print("\n| run | contender | examples/s | timed loop s | process wall s |\n|---|---|---|---|---|")
    runs, ratios = [], {"pkd": [], "lad": []}
    for r in range(args.repeats):
        order = ("textbrewer", "pkd", "lad") if r % 2 == 0 else ("lad", "pkd", "textbrewer")
        got = {}
        for c in order:
            res = run_worker(c, args, __file__)
            res["run"] = r
            got[c] = res
            runs.append(res)
            print(f"| {r + 1} | {c} | {res['examples_per_s']:.2f} | {res['loop_s']:.1f} | {res['wall_s']:.1f} |", flush=True)
        for c in ("pkd", "lad"):
            ratios[c].append(got[c]["examples_per_s"] / got["textbrewer"]["examples_per_s"])
    med = {c: statistics.median(x["examples_per_s"] for x in runs if x["contender"] == c) for c in ("textbrewer", "pkd", "lad")}
    print(f"\nmedian examples/s: TextBrewer {med['textbrewer']:.2f}, toolkit PKD {med['pkd']:.2f}, toolkit LAD {med['lad']:.2f}")
    for c, label in (("pkd", "PKD (same work)"), ("lad", "LAD (+ gates)")):
        rs = ratios[c]
        print(f"median ratio toolkit {label} / TextBrewer: {statistics.median(rs):.3f} (min {min(rs):.3f}, max {max(rs):.3f})")
    print(f"load average at end {os.getloadavg()[0]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "machine": info, "runs": runs, "ratios": ratios,
                                               "median": med}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
