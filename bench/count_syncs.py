#!/usr/bin/env python
"""Host-device syncs per training step of the default paths (fine-tuning, LAD, PKD), counted on any machine.

    python bench/count_syncs.py [--steps 8] [--batch_size 32] [--max_seq_len 64] [--json OUT]

Each contender trains a tiny random BERT (teacher 4 layers, student 2, hidden 32) on the synthetic QQP rows for
``--steps`` optimizer steps (fp32; the fp16 row with a GradScaler, which this engine builds on any device for
fp16 autocast) through the toolkit's engine exactly as the scripts wire it (the training forward of
models/padding_free.training_forwards, the collator of run/training), with
fine_tune.engine.syncs.SyncCounter active; the logging step, the finiteness check and the checkpoint at the end
(which read values on purpose) are left out. A sync is a call that makes the host wait for the device: a tensor
turned into a Python number or list, ``bool()`` of a tensor, ``nonzero``, ``torch.equal``... (see
fine_tune/engine/syncs.py). The count does not depend on the model size; the padding-free forward's count grew
with the number of attention buckets of each batch.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

CONTENDERS = {
    "fine_tune": "fine-tuning (dynamic padding, padding-free forward)",
    "lad": "LAD (the script's defaults: padding to max_seq_len, own forward over the grid)",
    "pkd": "PKD (the script's defaults: padding to max_seq_len, own forward over the grid)",
    "lad_dynamic": "LAD --padding dynamic (padding-free forward)",
    "pkd_dynamic": "PKD --padding dynamic (padding-free forward)",
    "fine_tune_fp16": "fine-tuning, fp16 autocast + GradScaler (the skip decision)",
}


def count(contender: str, args, root: Path) -> dict:
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    from fine_tune import synthetic
    from fine_tune.batching import Collator, tokenize
    from fine_tune.engine.device import Precision
    from fine_tune.engine.optim import GATE_NO_DECAY, OptimiserSettings
    from fine_tune.engine.seeding import seed_everything
    from fine_tune.engine.syncs import count_training_syncs
    from fine_tune.engine.trainer import Trainer, TrainSettings
    from fine_tune.models.forward import forward
    from fine_tune.experiment import ExperimentDir
    from fine_tune.methods import LAD, PKD, HardLabel
    from fine_tune.models.padding_free import training_forwards
    from fine_tune.tasks import get_task

    seed_everything(0)
    teacher_dir = synthetic.write_tiny_model(root / "teacher", "bert", num_layers=4)
    student_dir = synthetic.write_tiny_model(root / "student", "bert", num_layers=2)
    data = root / "data"
    synthetic.write_qqp(data, n_train=4 * args.batch_size, n_dev=8, n_test=8)
    tok = AutoTokenizer.from_pretrained(teacher_dir)
    features = tokenize(tok, get_task("qqp").load(data, "train"), args.max_seq_len)
    padding = "dynamic" if contender in ("fine_tune", "fine_tune_fp16", "lad_dynamic", "pkd_dynamic") else "max_length"
    n = args.steps
    teacher = None
    if contender.startswith("fine_tune"):
        method = HardLabel()
    else:
        teacher = BertForSequenceClassification.from_pretrained(teacher_dir, num_labels=2)
        if contender.startswith("pkd"):
            method = PKD(2, 4, 0.5, 0.5, 1.0, 10.0, padding=padding)
        else:
            gates = OptimiserSettings(lr=1e-4, total_step=n, warmup_step=1, no_decay=GATE_NO_DECAY, clip_per_module=True)
            method = LAD(2, 4, 0.5, 0.5, 1.0, 10.0, d_model=32, seq_len=args.max_seq_len, gate_optimiser=gates,
                         padding=padding)
            method.create_parameters(None)
    student = BertForSequenceClassification.from_pretrained(student_dir, num_labels=2)
    try:
        forwards = training_forwards(student, teacher, enabled=True, ignores_padding=method.ignores_padding,
                                     device_type="cpu")
    except TypeError:  # the engine before host-built layouts (for the "before" column)
        forwards = training_forwards(student, teacher, enabled=True, ignores_padding=method.ignores_padding)
    layout = {"layout": forwards.layout} if getattr(forwards, "takes_layout", False) else {}
    collator = Collator(features, tok.pad_token_id, args.max_seq_len, padding, **layout)
    optimiser = OptimiserSettings(lr=1e-4, total_step=n, warmup_step=1)
    settings = TrainSettings(optimiser=optimiser, batch_size=args.batch_size, accum_step=1, ckpt_step=n, log_step=n,
                             seed=0, tag_prefix="qqp/train/bert")
    exp = ExperimentDir(root / "exp", contender)
    exp.path.mkdir(parents=True)
    trainer = Trainer(student, method, collator, len(features), settings, exp, torch.device("cpu"),
                      Precision("cpu", torch.float16 if contender.endswith("fp16") else None), teacher=teacher,
                      progress=False,
                      student_forward=forwards.student, teacher_forward=forwards.teacher, forward=forward)
    counter = count_training_syncs(trainer)
    return {"contender": contender, "steps": n, "syncs": counter.total, "per_step": counter.total / n,
            "by_op": dict(counter.by_op), "by_site": dict(counter.by_site.most_common(8))}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch_size", type=int, default=32)
    ap.add_argument("--max_seq_len", type=int, default=64)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    rows = []
    for name in CONTENDERS:
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(count(name, args, Path(tmp)))
    print("| path | syncs per training step | by operator |\n|---|---|---|")
    for r in rows:
        ops = ", ".join(f"{k} {v}" for k, v in sorted(r["by_op"].items())) or "none"
        print(f"| {CONTENDERS[r['contender']]} | {r['per_step']:.1f} | {ops} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
