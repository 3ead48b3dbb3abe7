#!/usr/bin/env python
"""Distillation throughput: this toolkit's engine (BERT-PKD, LAD) vs TextBrewer's ``GeneralDistiller``.

The same teacher (MiniLM-L6-H384 with a classification head), the same student (3 layers, hidden 384, d_ff 1536,
12 heads), the same batches in the same order (``fine_tune.batching.MicroBatchStream``), batch size, max_seq_len
and padding (every batch padded to max_seq_len, as LAD needs), fp32, the same optimizer (AdamW, fused kernel, lr
1e-4, weight decay 0.01 except biases and LayerNorm weights, built by ``fine_tune.engine.optim.build_adamw``),
linear warmup/decay, clipping at 1.0, and the same loss: hard_weight * CE + soft_weight * soft loss at
temperature T + mu * (1/3) * sum_j MSE(H_s[j], H_t[2j]) over every token (TextBrewer: ``hidden_mse`` matches
with weight mu/3, no input mask; its soft loss is the soft cross-entropy without T^2, the same work).
TextBrewer runs with ``log_dir=None`` (no TensorBoard), the toolkit logs every ``--steps`` steps. With
``--device cuda --amp`` the toolkit runs fp16 autocast with its GradScaler while TextBrewer stays fp32 (its
``fp16=True`` needs NVIDIA apex), so that ratio is not the same work.

Contenders, one fresh subprocess per run, alternating in one run: ``pkd`` (toolkit, the same work as
TextBrewer), ``lad`` (toolkit LAD: also runs and trains 6 gate blocks with their own optimizer), ``textbrewer``;
and the same three with dynamic padding (``pkd_dyn``, ``lad_dyn``, ``textbrewer_dyn``: each batch padded to its
longest row, hidden-state MSE averaged over the real tokens on both sides: the toolkit's ``--padding dynamic``,
TextBrewer's ``inputs_mask``), where the toolkit's padding-free forward skips the padding positions.
Timed: ``--steps`` optimizer steps after ``--warm_steps``, from the beginning of step warm+1 to the beginning of
step warm+steps+1 (when the batch is fetched).

    pip install -r bench/requirements.txt
    python bench/bench_distill.py [--padding fixed|dynamic|both] [--steps 20 --repeats 3 --max_seq_len 128] [--json OUT]
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
from common import (SEED, Stamps, add_worker_args, alternate, device_of, load_examples, parse_args,  # noqa: E402
                    machine, median_of, pair_ratios, precision_name, run_worker,
                    toolkit_precision, total_steps, write_json)

LR, WEIGHT_DECAY, MAX_NORM = 1e-4, 0.01, 1.0
HARD, SOFT, TEMP, MU = 0.3, 0.7, 20.0, 100.0
STUDENT = dict(d_model=384, d_ff=1536, num_attention_heads=12, num_hidden_layers=3)
FIXED = ("textbrewer", "pkd", "lad")  # the order of the first alternation
DYNAMIC = tuple(f"{c}_dyn" for c in FIXED)  # the same with dynamic padding and masked hidden losses
# TinyBERT-style distillation (issue 16): a student of another width than the teacher's, TinyBERT's 4-layer shape
# scaled to the 6-layer teacher (3 layers, width 312, d_ff 1200, 12 heads); attention-score MSE of the mapped
# layers, hidden MSE of the mapped layers and the embeddings through a learned projection to width 384
TINY_STUDENT = dict(d_model=312, d_ff=1200, num_attention_heads=12, num_hidden_layers=3)
TINYBERT = ("textbrewer_tinybert", "tinybert")
TINYBERT_DYN = tuple(f"{c}_dyn" for c in TINYBERT)
CONTENDERS = FIXED + DYNAMIC + TINYBERT + TINYBERT_DYN


def padding_of(contender: str) -> str:
    return "dynamic" if contender.endswith("_dyn") else "max_length"


def student_of(contender: str) -> dict:
    return TINY_STUDENT if "tinybert" in contender else STUDENT


def build(args, padding: str = "max_length", student_shape: dict = STUDENT):
    """Features, teacher (eval, frozen), student, in a fixed seed; batches padded to max_seq_len or, with
    ``padding="dynamic"``, to the longest row of each batch."""
    import torch

    from fine_tune.batching import Collator, tokenize
    from fine_tune.models.classifier import (build_from_config, build_pretrained_classifier, load_tokenizer,
                                             student_config)
    from fine_tune.engine.seeding import seed_everything

    seed_everything(SEED)
    tok = load_tokenizer(args.model)
    features = tokenize(tok, load_examples(args), args.max_seq_len)
    teacher = build_pretrained_classifier(args.model, "bert", 2, 0.1).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    cfg = student_config("bert", vocab_size=teacher.config.vocab_size, num_class=2, type_vocab_size=2, dropout=0.1,
                         max_position_embeddings=teacher.config.max_position_embeddings,
                         pad_token_id=tok.pad_token_id, **student_shape)
    student = build_from_config(cfg)
    collator = Collator(features, tok.pad_token_id, args.max_seq_len, padding)
    return torch, features, teacher, student, collator


def optimizer_for(student, device):
    from fine_tune.engine.optim import OptimiserSettings, build_adamw

    settings = OptimiserSettings(lr=LR, total_step=1, warmup_step=0, weight_decay=WEIGHT_DECAY)
    return build_adamw(student.named_parameters(), settings, device)


def worker_toolkit(args, contender: str, t0: float) -> dict:
    """The toolkit's engine as run_pkd_distill.py / run_lad_distil.py drive it with their default flags (fixed
    padding; ``--padding_free auto``, which applies only where no loss reads padding positions) or, for the
    ``_dyn`` contenders, with ``--padding dynamic`` (masked hidden losses, so the position-wise layers of
    teacher and student run on the real tokens only)."""
    from fine_tune.engine.optim import GATE_NO_DECAY, OptimiserSettings
    from fine_tune.engine.trainer import Trainer, TrainSettings
    from fine_tune.reporting import TensorBoardReporter
    from fine_tune.models.forward import forward
    from fine_tune.experiment import ExperimentDir
    from fine_tune.methods import LAD, PKD
    from fine_tune.models.padding_free import training_forwards

    padding = padding_of(contender)
    torch, features, teacher, student, collator = build(args, padding, student_of(contender))
    n = total_steps(args)
    ls, lt = student_of(contender)["num_hidden_layers"], teacher.config.num_hidden_layers
    device = device_of(args)
    optimiser = OptimiserSettings(lr=LR, total_step=n, warmup_step=max(1, n // 10), weight_decay=WEIGHT_DECAY,
                                  max_norm=MAX_NORM)
    if contender.startswith("tinybert"):  # as run_tinybert_distil.py --tinybert_stage intermediate
        from fine_tune.methods import TinyBERT

        method = TinyBERT(ls, lt, 0.0, 1.0, 1.0, 1.0, stage="intermediate", student_heads=12, teacher_heads=12,
                          padding=padding, student_width=TINY_STUDENT["d_model"], teacher_width=384,
                          projection_optimiser=optimiser)
        method.create_parameters(None, device)
    elif contender.startswith("pkd"):
        method = PKD(ls, lt, HARD, SOFT, TEMP, MU, padding=padding)
    else:
        gates = OptimiserSettings(lr=5e-7, weight_decay=0.01, max_norm=1.0, total_step=n, warmup_step=max(1, n // 10),
                                  no_decay=GATE_NO_DECAY, clip_per_module=True)
        method = LAD(ls, lt, HARD, SOFT, TEMP, MU, d_model=384, seq_len=args.max_seq_len, gate_optimiser=gates,
                     padding=padding)
        method.create_parameters(None)
    settings = TrainSettings(optimiser=optimiser, batch_size=args.batch_size, accum_step=1, ckpt_step=10**9,
                             log_step=args.steps, seed=SEED, tag_prefix="qqp/train/bert")
    forwards = training_forwards(student, teacher, enabled=True, ignores_padding=method.ignores_padding,
                                 device_type=device.type, student_record=method.recorded_layers("student"),
                                 teacher_record=method.recorded_layers("teacher"))
    if forwards.takes_layout:  # as fine_tune.run.training: the packing built on the host, once per batch
        collator.layout = forwards.layout
    collator.pin_memory = device.type == "cuda"
    stamps = Stamps(args)

    with tempfile.TemporaryDirectory() as tmp:
        exp = ExperimentDir(Path(tmp), "bench")
        exp.path.mkdir()
        trainer = Trainer(student, method, stamps.wrap(collator), len(features), settings, exp, device,
                          toolkit_precision(args, device), teacher=teacher, progress=False,
                          student_forward=forwards.student, teacher_forward=forwards.teacher, forward=forward,
                          reporter=TensorBoardReporter(exp.log_dir))  # as the scripts' default --report_to
        start = time.perf_counter()
        trainer.train()
        train_s = time.perf_counter() - start
    return stamps.result(args, contender, train_s, t0, device.type)


def worker_textbrewer(args, t0: float, contender: str = "textbrewer") -> dict:
    """TextBrewer's GeneralDistiller on the toolkit's batches; ``textbrewer_dyn``: dynamic padding, and the
    adaptors return ``inputs_mask`` so that its ``hidden_mse`` averages over the real tokens only."""
    from textbrewer import DistillationConfig, GeneralDistiller, TrainingConfig
    from transformers import get_linear_schedule_with_warmup

    from fine_tune.batching import MicroBatchStream

    padding = padding_of(contender)
    tiny = "tinybert" in contender
    torch, features, teacher, student, collator = build(args, padding, student_of(contender))
    device = device_of(args)
    if tiny:  # Hugging Face returns attention maps (output_attentions) from its eager attention only
        teacher.set_attn_implementation("eager")
        student.set_attn_implementation("eager")
    teacher.to(device)
    student.to(device)
    n = total_steps(args)
    stamps = Stamps(args)
    stream = MicroBatchStream(len(features), args.batch_size, SEED)

    class Batches:  # the toolkit's batch order and padding; stamps the beginning of each step
        def __iter__(self):
            while True:
                stamps.step_begins()
                b = stamps.batch(collator(stream.next()))
                yield {k: b[k] for k in ("input_ids", "token_type_ids", "attention_mask", "labels")}

    def adaptor(batch, out):
        res = {"logits": out.logits, "hidden": out.hidden_states, "losses": [out.loss]}
        if tiny:
            res["attention"] = out.attentions
        if padding == "dynamic":
            res["inputs_mask"] = batch["attention_mask"]
        return res

    ls = student_of(contender)["num_hidden_layers"]
    matches = [{"layer_T": 2 * j, "layer_S": j, "feature": "hidden", "loss": "hidden_mse", "weight": MU / ls}
               for j in range(1, ls + 1)]  # hidden_states[0] is the embedding output: index j is layer j
    if tiny:  # TinyBERT's matches: attention of layers (j, 2j), hidden of (j, 2j) and the embeddings, with proj
        width = TINY_STUDENT["d_model"]
        matches = [{"layer_T": 2 * j - 1, "layer_S": j - 1, "feature": "attention", "loss": "attention_mse",
                    "weight": 1} for j in range(1, ls + 1)]
        matches += [{"layer_T": 2 * j, "layer_S": j, "feature": "hidden", "loss": "hidden_mse", "weight": 1,
                     "proj": ["linear", width, 384, {}]} for j in range(0, ls + 1)]
    with tempfile.TemporaryDirectory() as tmp:
        # fp32 always: TextBrewer's fp16 needs NVIDIA apex (amp.initialize), not torch.amp
        tconf = TrainingConfig(device=str(device), log_dir=None, output_dir=tmp, ckpt_steps=10**9, fp16=False)
        dconf = DistillationConfig(temperature=TEMP if not tiny else 1.0, hard_label_weight=0.0 if tiny else HARD,
                                   kd_loss_type="ce", kd_loss_weight=0.0 if tiny else SOFT,
                                   intermediate_matches=matches)
        distiller = GeneralDistiller(tconf, dconf, teacher, student, adaptor, adaptor)
        opt = optimizer_for(student, device)
        start = time.perf_counter()
        with distiller:
            distiller.train(opt, Batches(), num_steps=n, scheduler_class=get_linear_schedule_with_warmup,
                            scheduler_args={"num_warmup_steps": max(1, n // 10), "num_training_steps": n},
                            max_grad_norm=MAX_NORM, output_hidden_states=True, **({"output_attentions": True}
                                                                                   if tiny else {}))
        train_s = time.perf_counter() - start
    # TextBrewer fetches one more batch than it trains on only when it cycles past the end: trim to n stamps
    stamps.begin, stamps.widths, stamps.real = stamps.begin[:n], stamps.widths[:n], stamps.real[:n]
    return stamps.result(args, contender, train_s, t0, device.type, precision="fp32")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--contender", choices=CONTENDERS, help="run one contender here (worker)")
    p.add_argument("--padding", choices=("fixed", "dynamic", "both"), default="both",
                   help="fixed: every batch padded to max_seq_len (the scripts' default, as LAD's original gates "
                        "need); dynamic: padded to the batch's longest row, hidden losses masked (default: both)")
    p.add_argument("--methods", choices=("pkd_lad", "tinybert", "all"), default="pkd_lad",
                   help="pkd_lad: PKD and LAD vs TextBrewer's hidden_mse matches (the default); tinybert: TinyBERT's "
                        "intermediate stage vs TextBrewer's attention_mse + hidden_mse with proj matches")
    add_worker_args(p, steps=20, rows=2048, repeats=3)
    args = parse_args(p, argv)
    if args is None:
        return 0
    if args.contender:
        t0 = time.perf_counter()
        c = args.contender
        res = worker_textbrewer(args, t0, c) if c.startswith("textbrewer") else worker_toolkit(args, c, t0)
        print(json.dumps(res))
        return 0
    pkd_lad = {"fixed": FIXED, "dynamic": DYNAMIC, "both": FIXED + DYNAMIC}[args.padding]
    tinybert = {"fixed": TINYBERT, "dynamic": TINYBERT_DYN, "both": TINYBERT + TINYBERT_DYN}[args.padding]
    names = {"pkd_lad": pkd_lad, "tinybert": tinybert, "all": pkd_lad + tinybert}[args.methods]
    info = machine()
    print(f"distilling {Path(args.model).name} (6 layers) into a 3-layer student on {args.dataset}: {args.steps} timed "
          f"steps (after {args.warm_steps}) x batch {args.batch_size}, max_seq_len {args.max_seq_len}, padding "
          f"{args.padding}, toolkit {precision_name(args)}, TextBrewer fp32, on {args.device}; torch {info['torch']}, "
          f"{info['cores']} cores; load average at start {info['load_avg_start'][0]:.2f}")
    print("\n| run | contender | examples/s | timed loop s | process wall s | peak MiB |\n|---|---|---|---|---|---|")

    def show(res: dict) -> None:
        print(f"| {res['run'] + 1} | {res['contender']} | {res['examples_per_s']:.2f} | {res['loop_s']:.1f} "
              f"| {res['wall_s']:.1f} | {res['peak_mib']:.0f} |", flush=True)

    runs = alternate(names, args.repeats, lambda c: run_worker(c, args, __file__, ["--padding", args.padding]), show)
    pairs = [(c, "textbrewer_" + c if c.startswith("tinybert") else "textbrewer" + c[3:]) for c in names
             if not c.startswith("textbrewer")]
    ratios = {c: pair_ratios(runs, c, ref) for c, ref in pairs}
    med = {c: median_of(runs, c, "examples_per_s") for c in names}
    print("\nmedian examples/s: " + ", ".join(f"{c} {med[c]:.2f}" for c in names))
    for c, ref in pairs:
        rs = ratios[c]
        print(f"median ratio toolkit {c} / {ref}: {statistics.median(rs):.3f} (min {min(rs):.3f}, max {max(rs):.3f})")
    print(f"load average at end {os.getloadavg()[0]:.2f}")
    if args.json:
        write_json(args.json, {"args": vars(args), "machine": info, "runs": runs, "ratios": ratios, "median": med})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
