#!/usr/bin/env python
"""Fine-tuning throughput: this toolkit's training engine vs the Hugging Face ``transformers.Trainer``.

Both contenders fine-tune the same pretrained model (MiniLM-L6-H384) on the same data (qp_pairs, QQP layout,
train split, or real BoolQ passages with ``--dataset boolq``) with the same max_seq_len, batch size, number of
optimizer steps, AdamW (lr 5e-5, betas 0.9/0.999, eps 1e-8, weight decay 0.01 except bias/LayerNorm), linear
warmup and decay, gradient clipping at 1.0, fp32 (``--amp``: fp16 on CUDA), no evaluation, seed 42, no
data-loader workers.

This script's own comparison (``main``) is ``toolkit`` vs ``trainer``: both see the same batches in the same
order, dynamically padded: the toolkit's seeded shuffle (``fine_tune.batching.MicroBatchStream``) is laid out
once and the Trainer reads it with ``train_sampling_strategy="sequential"`` (``group_by_length`` off), so each
step pads to the same width on both sides and the ratio compares engines, not samples. ``bench/bench.py``
also runs the other workers here:

* ``toolkit_fast``: the toolkit with ``--group_by_length`` (``TrainSettings(group_by_length=True)``, ``lengths=``);
* ``toolkit_padded``: the toolkit with ``--padding_free off`` (BERT runs on the padded batch), the ablation;
* ``trainer_glue``: the Trainer as ``run_glue.py`` runs it by default: every example padded to max_seq_len at
  tokenisation, ``default_data_collator``, the random sampler;
* ``trainer_best``: the Trainer with dynamic padding (``DataCollatorWithPadding``; ``pad_to_multiple_of=8``
  under fp16, as run_glue) and the length-grouped sampler;
* ``trainer_best_same``: the Trainer's best settings (dynamic padding) fed ``toolkit_fast``'s batches in its
  order (the toolkit's length-grouped stream laid out, read sequentially): every step pads to the same width on
  both sides, so ``toolkit_fast / trainer_best_same`` compares the engines on the same work, where
  ``toolkit_fast / trainer_best`` compares two samplers' different windows of the data too.

Every run is a fresh subprocess (``--contender NAME``); the contenders alternate (A B, B A, ...).
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
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    SEED,
    Stamps,
    add_worker_args,
    alternate,
    device_of,
    load_examples,
    machine,
    median_of,
    pair_ratios,
    parse_args,
    precision_name,
    run_worker,
    toolkit_precision,
    total_steps,
    warmup_steps,
    write_json,
)

LR = 5e-5
WEIGHT_DECAY = 0.01
MAX_NORM = 1.0
CONTENDERS = (
    "toolkit",
    "toolkit_fast",
    "toolkit_padded",
    "trainer",
    "trainer_glue",
    "trainer_best",
    "trainer_best_same",
)


def worker_toolkit(
    args,
    t0: float,
    *,
    group_by_length: bool = False,
    padding: str = "dynamic",
    count_flops: bool = False,
    name: str = "toolkit",
    padding_free: bool = True,
) -> dict:
    """The toolkit's public engine, exactly as ``run_fine_tune.py`` drives it (fine_tune.run.training) with
    its default flags (dynamic padding, ``--padding_free auto``: BERT's position-wise layers on the real tokens
    only); ``group_by_length``: plus its fastest data option (``--group_by_length``)."""
    from fine_tune.batching import Collator, tokenize
    from fine_tune.engine.optim import OptimiserSettings
    from fine_tune.engine.seeding import seed_everything
    from fine_tune.engine.trainer import Trainer, TrainSettings
    from fine_tune.experiment import ExperimentDir
    from fine_tune.methods import HardLabel
    from fine_tune.models.classifier import build_pretrained_classifier, load_tokenizer
    from fine_tune.models.forward import forward
    from fine_tune.models.padding_free import training_forwards
    from fine_tune.reporting import TensorBoardReporter

    device = device_of(args)
    precision = toolkit_precision(args, device)
    seed_everything(SEED)
    tok = load_tokenizer(args.model)
    features = tokenize(tok, load_examples(args), args.max_seq_len)
    model = build_pretrained_classifier(args.model, "bert", 2, 0.1)
    n = total_steps(args)
    task = "boolq" if args.dataset == "boolq" else "qqp"
    optimiser = OptimiserSettings(
        lr=LR, total_step=n, warmup_step=warmup_steps(args), weight_decay=WEIGHT_DECAY, max_norm=MAX_NORM
    )
    settings = TrainSettings(
        optimiser=optimiser,
        batch_size=args.batch_size,
        accum_step=1,
        ckpt_step=10**9,
        log_step=n,
        seed=SEED,
        tag_prefix=f"{task}/train/bert",
        group_by_length=group_by_length,
    )
    forwards = training_forwards(model, None, enabled=padding_free, ignores_padding=True, device_type=device.type)
    stamps = Stamps(args, count_flops=count_flops)
    collator = stamps.wrap(
        Collator(
            features,
            tok.pad_token_id,
            args.max_seq_len,
            padding,
            layout=forwards.layout if forwards.takes_layout else None,
            pin_memory=device.type == "cuda",
        )
    )
    extra = {"lengths": features.lengths()} if group_by_length else {}

    with tempfile.TemporaryDirectory() as tmp:
        exp = ExperimentDir(Path(tmp), "bench")
        trainer = Trainer(
            model,
            HardLabel(),
            collator,
            len(features),
            settings,
            exp,
            device,
            precision,
            progress=False,
            student_forward=forwards.student,
            forward=forward,
            reporter=TensorBoardReporter(exp.log_dir),
            **extra,
        )  # as the scripts' default --report_to
        start = time.perf_counter()
        trainer.train()  # writes model-{n}.pt once, at the end (outside the timed window)
        train_s = time.perf_counter() - start
    return stamps.result(args, name, train_s, t0, device.type)


def sampling_args(strategy: str) -> dict:
    """``TrainingArguments`` for a sampler, in the installed transformers' spelling (``train_sampling_strategy``
    since 5.x, ``group_by_length=True`` before)."""
    import dataclasses

    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    if "train_sampling_strategy" in names:
        return {"train_sampling_strategy": strategy}
    if strategy == "group_by_length":
        return {"group_by_length": True}
    if strategy == "sequential":
        raise SystemExit("this transformers has no train_sampling_strategy='sequential'")
    return {}


def worker_trainer(args, t0: float, mode: str = "same_order") -> dict:
    """The Hugging Face Trainer with the same optimizer, schedule and steps. ``mode``: ``same_order`` (the toolkit's
    batches, dynamic padding), ``run_glue`` (run_glue.py defaults: pad to max_seq_len, random order), ``best``
    (dynamic padding, length-grouped sampler) or ``best_same_order`` (dynamic padding, the toolkit's
    length-grouped batches)."""
    import numpy as np
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        TrainingArguments,
        default_data_collator,
    )
    from transformers.utils import logging as hf_logging

    from fine_tune.batching import LengthGroupedMicroBatchStream, MicroBatchStream

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch.manual_seed(SEED)
    prec = precision_name(args)
    tok = AutoTokenizer.from_pretrained(args.model)
    examples = load_examples(args)
    enc = tok(
        [e.text for e in examples],
        [e.text_pair for e in examples],
        truncation=True,
        max_length=args.max_seq_len,
        padding="max_length" if mode == "run_glue" else False,
    )
    rows = [
        {
            "input_ids": enc["input_ids"][i],
            "token_type_ids": enc["token_type_ids"][i],
            "attention_mask": enc["attention_mask"][i],
            "labels": e.label,
        }
        for i, e in enumerate(examples)
    ]
    n = total_steps(args)
    if mode in ("same_order", "best_same_order"):
        if mode == "same_order":
            stream = MicroBatchStream(len(rows), args.batch_size, seed=SEED)  # the toolkit's batch order
        else:  # toolkit_fast's order (worker_toolkit(group_by_length=True): the same seed and lengths)
            lengths = np.array([len(r["input_ids"]) for r in rows])
            stream = LengthGroupedMicroBatchStream(len(rows), args.batch_size, SEED, lengths)
        dataset = [rows[i] for _ in range(n) for i in stream.next()]
        sampling = sampling_args("sequential")
        pad = DataCollatorWithPadding(
            tok, pad_to_multiple_of=8 if mode == "best_same_order" and prec == "fp16" else None
        )
    elif mode == "run_glue":
        dataset, sampling, pad = rows, {}, default_data_collator  # the random sampler, TrainingArguments' default
    else:
        dataset, sampling = rows, sampling_args("group_by_length")
        pad = DataCollatorWithPadding(tok, pad_to_multiple_of=8 if prec == "fp16" else None)  # as run_glue
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=2)
    stamps = Stamps(args)

    def collate(features):
        return stamps.batch(pad(features))

    class BeginStamp(TrainerCallback):
        def on_step_begin(self, *a, **k):
            stamps.step_begins()

    name = {
        "same_order": "trainer",
        "run_glue": "trainer_glue",
        "best": "trainer_best",
        "best_same_order": "trainer_best_same",
    }[mode]
    with tempfile.TemporaryDirectory() as tmp:
        targs = TrainingArguments(
            output_dir=tmp,
            per_device_train_batch_size=args.batch_size,
            max_steps=n,
            learning_rate=LR,
            adam_beta1=0.9,
            adam_beta2=0.999,
            adam_epsilon=1e-8,
            warmup_steps=warmup_steps(args),
            lr_scheduler_type="linear",
            weight_decay=WEIGHT_DECAY,
            max_grad_norm=MAX_NORM,
            logging_steps=n,
            eval_strategy="no",
            save_strategy="no",
            report_to="none",
            dataloader_num_workers=0,
            seed=SEED,
            use_cpu=args.device == "cpu",
            fp16=prec == "fp16",
            bf16=prec == "bf16",
            disable_tqdm=True,
            **sampling,
        )
        trainer = Trainer(
            model=model, args=targs, train_dataset=dataset, data_collator=collate, callbacks=[BeginStamp()]
        )
        start = time.perf_counter()
        trainer.train()
        train_s = time.perf_counter() - start
        trainer.save_model(tmp)  # the final model, once (the toolkit writes model-{n}.pt inside train())
    return stamps.result(args, name, train_s, t0, args.device)


def run_contender(name: str, args, t0: float) -> dict:
    if name == "toolkit":
        return worker_toolkit(args, t0)
    if name == "toolkit_fast":
        return worker_toolkit(args, t0, group_by_length=True, name="toolkit_fast")
    if name == "toolkit_padded":  # --padding_free off: the padded forward, for profiles and the ablation
        return worker_toolkit(args, t0, name="toolkit_padded", padding_free=False)
    return worker_trainer(
        args,
        t0,
        {
            "trainer": "same_order",
            "trainer_glue": "run_glue",
            "trainer_best": "best",
            "trainer_best_same": "best_same_order",
        }[name],
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--contender", choices=CONTENDERS, help="run one contender in this process (worker)")
    add_worker_args(p, steps=40, rows=0, repeats=4)
    args = parse_args(p, argv)
    if args is None:
        return 0
    if args.contender:
        print(json.dumps(run_contender(args.contender, args, time.perf_counter())))
        return 0

    info = machine()
    data = "qp_pairs/QQP train" if args.dataset == "qp_pairs" else f"BoolQ {Path(args.boolq).name}"
    print(
        f"fine-tuning {Path(args.model).name} on {data}: {args.steps} timed steps "
        f"(after {args.warm_steps} untimed) x batch {args.batch_size}, max_seq_len {args.max_seq_len}, dynamic "
        f"padding, {precision_name(args)} on {args.device}; torch {info['torch']}, transformers "
        f"{info['transformers']}, {info['cores']} cores, {info['torch_threads']} torch threads; load average at "
        f"start {info['load_avg_start'][0]:.2f}"
    )
    print(
        "\n| run | contender | examples/s | timed loop s | train() s | process wall s | peak MiB |"
        "\n|---|---|---|---|---|---|---|"
    )

    def show(res: dict) -> None:
        print(
            f"| {res['run'] + 1} | {res['contender']} | {res['examples_per_s']:.2f} | {res['loop_s']:.1f} "
            f"| {res['train_call_s']:.1f} | {res['wall_s']:.1f} | {res['peak_mib']:.0f} |",
            flush=True,
        )
        mate = [x for x in runs_so_far if x["run"] == res["run"] and x["contender"] != res["contender"]]
        if mate and mate[0]["padded_tokens"] != res["padded_tokens"]:
            raise SystemExit(
                f"the contenders padded differently ({mate[0]['padded_tokens']} vs "
                f"{res['padded_tokens']} tokens): the comparison would be unfair"
            )
        runs_so_far.append(res)

    runs_so_far: list[dict] = []
    runs = alternate(("toolkit", "trainer"), args.repeats, lambda c: run_worker(c, args, __file__), show)
    ratios = pair_ratios(runs, "toolkit", "trainer")
    summary = {
        c: {k: median_of(runs, c, k) for k in ("examples_per_s", "wall_s", "peak_mib")} for c in ("toolkit", "trainer")
    }
    ratio = statistics.median(ratios)
    wall_ratio = summary["trainer"]["wall_s"] / summary["toolkit"]["wall_s"]
    print(
        f"\nmedian examples/s: toolkit {summary['toolkit']['examples_per_s']:.2f}, "
        f"Trainer {summary['trainer']['examples_per_s']:.2f}"
    )
    print(
        f"median process wall s: toolkit {summary['toolkit']['wall_s']:.1f}, Trainer {summary['trainer']['wall_s']:.1f}"
        f" (Trainer / toolkit {wall_ratio:.3f})"
    )
    print(
        f"median peak memory MiB: toolkit {summary['toolkit']['peak_mib']:.0f}, "
        f"Trainer {summary['trainer']['peak_mib']:.0f}"
    )
    print(
        f"median ratio toolkit / Trainer examples/s (per alternation): {ratio:.3f} "
        f"(min {min(ratios):.3f}, max {max(ratios):.3f}) -> toolkit {'not slower' if ratio >= 1.0 else 'SLOWER'}"
    )
    print(f"load average at end {os.getloadavg()[0]:.2f} (other processes share this machine)")
    if args.json:
        write_json(
            args.json,
            {
                "args": {k: v for k, v in vars(args).items() if k != "contender"},
                "machine": info,
                "load_avg_end": os.getloadavg(),
                "runs": runs,
                "ratios": ratios,
                "median_ratio": ratio,
                "median": summary,
                "wall_ratio_trainer_over_toolkit": wall_ratio,
            },
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
