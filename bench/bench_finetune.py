#!/usr/bin/env python
"""Fine-tuning throughput: this toolkit's training engine vs the Hugging Face ``transformers.Trainer``.

Both contenders fine-tune the same pretrained model (MiniLM-L6-H384) on the same data (qp_pairs, QQP layout,
train split) with the same max_seq_len, batch size, dynamic padding, number of optimizer steps, AdamW
(lr 5e-5, betas 0.9/0.999, eps 1e-8, weight decay 0.01 except bias/LayerNorm), linear warmup and decay,
gradient clipping at 1.0, fp32, no evaluation, seed 42, no data-loader workers. Both see the same batches in the
same order: the toolkit's seeded shuffle (``fine_tune.batching.MicroBatchStream``) is laid out once and the
Trainer reads it with ``train_sampling_strategy="sequential"`` (``group_by_length`` off), so each step pads to
the same width on both sides and the ratio compares engines, not samples.

Every run is a fresh subprocess (``--contender toolkit|trainer``); the contenders alternate (A B, B A, ...).
Timed: ``--steps`` optimizer steps in steady state, from the beginning of step ``warm_steps + 1`` to the
beginning of step ``warm_steps + steps + 1`` (the toolkit: when its collator is called; the Trainer: its
``on_step_begin`` callback), so model loading, tokenisation, optimizer/accelerate set-up, one-time first-step
costs and the final checkpoint are outside the window on both sides. Also printed: the whole-process wall time
(Python start to exit, including imports, model load, tokenisation and writing the final model once on each
side).

    python bench/bench_finetune.py [--steps 40 --repeats 4 --batch_size 32 --max_seq_len 128] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("FT_SHARED", REPO.parent / "shared"))
DEFAULT_MODEL = SHARED / "models" / "minilm-l6-h384-uncased"
DEFAULT_DATA = SHARED / "data" / "qp_pairs"  # holds QQP/train.tsv
SEED = 42
LR = 5e-5
WEIGHT_DECAY = 0.01
MAX_NORM = 1.0


def total_steps(args) -> int:
    return args.warm_steps + args.steps + 1  # the window ends where step warm+steps+1 begins


def warmup_steps(args) -> int:
    return max(1, total_steps(args) // 10)


def load_examples(args):
    from fine_tune.tasks import get_task

    examples = get_task("qqp").load(Path(args.data), "train")
    return examples[: args.rows] if args.rows else examples


class Stamps:
    """Time stamps at the beginning of every optimizer step, and the padded width of every batch."""

    def __init__(self, args):
        self.begin: list[float] = []
        self.widths: list[int] = []
        self.args = args
        self.profiler = None

    def step_begins(self) -> None:
        self.begin.append(time.perf_counter())
        if self.args.profile:  # torch.profiler over the timed window (it slows the steps; diagnosis only)
            from torch.profiler import profile

            if len(self.begin) == self.args.warm_steps + 1:
                self.profiler = profile(record_shapes=False)
                self.profiler.__enter__()
            elif len(self.begin) == self.args.warm_steps + self.args.steps + 1:
                self.profiler.__exit__(None, None, None)
                table = self.profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=40)
                Path(self.args.profile).write_text(table + "\n")
                self.begin[-1] = time.perf_counter()  # exclude writing the table

    def result(self, args, contender: str, train_s: float, t0: float) -> dict:
        w = args.warm_steps
        if len(self.begin) != total_steps(args):
            raise SystemExit(f"{contender}: {len(self.begin)} steps seen, expected {total_steps(args)}")
        loop_s = self.begin[w + args.steps] - self.begin[w]
        return {"contender": contender, "steps": args.steps, "loop_s": loop_s,
                "examples_per_s": args.steps * args.batch_size / loop_s,
                "padded_tokens": args.batch_size * sum(self.widths[w:w + args.steps]),
                "train_call_s": train_s, "in_process_s": time.perf_counter() - t0}


def worker_toolkit(args, t0: float) -> dict:
    """The toolkit's public engine, exactly as ``run_fine_tune.py`` drives it (fine_tune.train.run_training)."""
    import torch

    from fine_tune.batching import Collator, tokenize
    from fine_tune.engine.device import resolve_device, resolve_precision
    from fine_tune.engine.trainer import Trainer, TrainSettings
    from fine_tune.experiment import ExperimentDir
    from fine_tune.methods import HardLabel
    from fine_tune.models.classifier import build_pretrained_classifier, load_tokenizer
    from fine_tune.train import seed_everything

    device = resolve_device(-1, None)
    precision = resolve_precision(False, "bf16", device)
    seed_everything(SEED)
    tok = load_tokenizer(args.model)
    features = tokenize(tok, load_examples(args), args.max_seq_len)
    model = build_pretrained_classifier(args.model, "bert", 2, 0.1)
    n = total_steps(args)
    settings = TrainSettings(total_step=n, batch_size=args.batch_size, accum_step=1, lr=LR, beta1=0.9,
                             beta2=0.999, eps=1e-8, weight_decay=WEIGHT_DECAY, max_norm=MAX_NORM,
                             warmup_step=warmup_steps(args), ckpt_step=10**9, log_step=n, seed=SEED,
                             tag_prefix="qqp/train/bert")
    stamps = Stamps(args)
    collator = Collator(features, tok.pad_token_id, args.max_seq_len, "dynamic")

    def timed_collator(rows):  # called once at the beginning of each step (accum_step 1)
        stamps.step_begins()
        batch = collator(rows)
        stamps.widths.append(batch["input_ids"].shape[1])
        return batch

    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(model, HardLabel(), timed_collator, len(features), settings,
                          ExperimentDir(Path(tmp), "bench"), device, precision, progress=False)
        start = time.perf_counter()
        trainer.train()  # writes model-{n}.pt once, at the end (outside the timed window)
        train_s = time.perf_counter() - start
    return stamps.result(args, "toolkit", train_s, t0)


def worker_trainer(args, t0: float) -> dict:
    """The Hugging Face Trainer with the same settings."""
    import torch
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainerCallback, TrainingArguments)
    from transformers.utils import logging as hf_logging

    from fine_tune.batching import MicroBatchStream

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch.manual_seed(SEED)
    tok = AutoTokenizer.from_pretrained(args.model)
    examples = load_examples(args)
    enc = tok([e.text for e in examples], [e.text_pair for e in examples], truncation=True,
              max_length=args.max_seq_len)
    rows = [{"input_ids": enc["input_ids"][i], "token_type_ids": enc["token_type_ids"][i],
             "attention_mask": enc["attention_mask"][i], "labels": e.label} for i, e in enumerate(examples)]
    n = total_steps(args)
    stream = MicroBatchStream(len(rows), args.batch_size, seed=SEED)  # the toolkit's batch order
    ordered = [rows[i] for _ in range(n) for i in stream.next()]
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=2)
    stamps = Stamps(args)
    pad = DataCollatorWithPadding(tok)

    def collate(features):
        batch = pad(features)
        stamps.widths.append(batch["input_ids"].shape[1])
        return batch

    class BeginStamp(TrainerCallback):
        def on_step_begin(self, *a, **k):
            stamps.step_begins()

    with tempfile.TemporaryDirectory() as tmp:
        targs = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=args.batch_size, max_steps=n, learning_rate=LR,
            adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8, warmup_steps=warmup_steps(args),
            lr_scheduler_type="linear", weight_decay=WEIGHT_DECAY, max_grad_norm=MAX_NORM, logging_steps=n,
            eval_strategy="no", save_strategy="no", report_to="none", dataloader_num_workers=0, seed=SEED,
            use_cpu=True, disable_tqdm=True, train_sampling_strategy="sequential")
        trainer = Trainer(model=model, args=targs, train_dataset=ordered, data_collator=collate,
                          callbacks=[BeginStamp()])
        start = time.perf_counter()
        trainer.train()
        train_s = time.perf_counter() - start
        trainer.save_model(tmp)  # the final model, once (the toolkit writes model-{n}.pt inside train())
    return stamps.result(args, "trainer", train_s, t0)


def run_worker(contender: str, args, script: str = __file__) -> dict:
    """Run one contender in a fresh subprocess of ``script`` (``--contender``); its last stdout line is JSON."""
    cmd = [sys.executable, str(Path(script).resolve()), "--contender", contender, "--steps", str(args.steps),
           "--warm_steps", str(args.warm_steps), "--batch_size", str(args.batch_size), "--max_seq_len",
           str(args.max_seq_len), "--rows", str(args.rows), "--model", str(args.model), "--data", str(args.data)]
    env = {**os.environ, "TQDM_DISABLE": "1", "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"{contender} worker failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["wall_s"] = wall
    return result


def machine() -> dict:
    import torch
    import transformers

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python":
            platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "load_avg_start": os.getloadavg()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--contender", choices=("toolkit", "trainer"), help="run one contender in this process (worker)")
    p.add_argument("--steps", type=int, default=40, help="timed optimizer steps per run (default 40)")
    p.add_argument("--warm_steps", type=int, default=3, help="untimed optimizer steps before the window (default 3)")
    p.add_argument("--repeats", type=int, default=4, help="alternations: toolkit/Trainer pairs (default 4)")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--max_seq_len", type=int, default=128)
    p.add_argument("--rows", type=int, default=0, help="use only the first ROWS training rows (0 = all)")
    p.add_argument("--model", default=str(DEFAULT_MODEL), help="pretrained BERT folder (default: MiniLM of ../shared)")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="data root holding QQP/train.tsv (default: qp_pairs)")
    p.add_argument("--profile", metavar="TXT", help="worker only: write a torch.profiler table of the timed steps")
    p.add_argument("--json", metavar="OUT", help="write every figure to this JSON file")
    args = p.parse_args(argv)
    if args.steps < 1 or args.warm_steps < 1 or args.repeats < 1:
        p.error("--steps, --warm_steps and --repeats must be >= 1")
    missing = [x for x in (Path(args.model) / "config.json", Path(args.data) / "QQP" / "train.tsv") if not x.is_file()]
    if missing:
        print(f"skipped: {', '.join(map(str, missing))} not found (the MiniLM model and the qp_pairs data of "
              f"../shared; pass --model / --data or set FT_SHARED)")
        return 0
    if args.contender:
        t0 = time.perf_counter()
        worker = worker_toolkit if args.contender == "toolkit" else worker_trainer
        print(json.dumps(worker(args, t0)))
        return 0

    info = machine()
    print(f"fine-tuning {Path(args.model).name} on {Path(args.data).name}/QQP train: {args.steps} timed steps "
          f"(after {args.warm_steps} untimed) x batch {args.batch_size}, max_seq_len {args.max_seq_len}, dynamic "
          f"padding, fp32; torch {info['torch']}, transformers {info['transformers']}, {info['cores']} cores, "
          f"{info['torch_threads']} torch threads; load average at start {info['load_avg_start'][0]:.2f}")
    runs, ratios = [], []
    print("\n| run | contender | examples/s | timed loop s | train() s | process wall s |\n|---|---|---|---|---|---|")
    for r in range(args.repeats):
        order = ("toolkit", "trainer") if r % 2 == 0 else ("trainer", "toolkit")
        pair = {}
        for c in order:
            res = run_worker(c, args)
            res["run"] = r
            pair[c] = res
            runs.append(res)
            print(f"| {r + 1} | {c} | {res['examples_per_s']:.2f} | {res['loop_s']:.1f} | {res['train_call_s']:.1f} "
                  f"| {res['wall_s']:.1f} |", flush=True)
        if pair["toolkit"]["padded_tokens"] != pair["trainer"]["padded_tokens"]:
            raise SystemExit(f"the contenders padded differently ({pair['toolkit']['padded_tokens']} vs "
                             f"{pair['trainer']['padded_tokens']} tokens): the comparison would be unfair")
        ratios.append(pair["toolkit"]["examples_per_s"] / pair["trainer"]["examples_per_s"])

    def med(key: str, c: str) -> float:
        return statistics.median(x[key] for x in runs if x["contender"] == c)

    summary = {c: {"examples_per_s": med("examples_per_s", c), "wall_s": med("wall_s", c)}
               for c in ("toolkit", "trainer")}
    ratio = statistics.median(ratios)
    wall_ratio = summary["trainer"]["wall_s"] / summary["toolkit"]["wall_s"]
    print(f"\nmedian examples/s: toolkit {summary['toolkit']['examples_per_s']:.2f}, "
          f"Trainer {summary['trainer']['examples_per_s']:.2f}")
    print(f"median process wall s: toolkit {summary['toolkit']['wall_s']:.1f}, Trainer {summary['trainer']['wall_s']:.1f}"
          f" (Trainer / toolkit {wall_ratio:.3f})")
    print(f"median ratio toolkit / Trainer examples/s (per alternation): {ratio:.3f} "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f}) -> toolkit {'not slower' if ratio >= 1.0 else 'SLOWER'}")
    print(f"load average at end {os.getloadavg()[0]:.2f} (other processes share this machine)")
    if args.json:
        out = {"args": {k: v for k, v in vars(args).items() if k != "contender"}, "machine": info,
               "load_avg_end": os.getloadavg(), "runs": runs, "ratios": ratios, "median_ratio": ratio,
               "median": summary, "wall_ratio_trainer_over_toolkit": wall_ratio}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
