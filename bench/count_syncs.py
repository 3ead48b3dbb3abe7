#!/usr/bin/env python
"""Host-device syncs per training step of every method, fp32 and fp16, BERT and non-BERT students, counted on any
machine.

    python bench/count_syncs.py [--steps 8] [--batch_size 32] [--max_seq_len 64] [--only NAME,...] [--json OUT]

Each contender trains tiny random models (teacher 4 layers, student 2, hidden 32, 2 heads) on the synthetic QQP
rows for ``--steps`` optimizer steps through the toolkit's engine as the scripts wire it (the method with the
script's default padding, the training forward of models/padding_free.training_forwards with the attention
projections recorded where the method reads them, the collator of run/training), fp32, or fp16 autocast with
the GradScaler this engine builds on any device for fp16, with fine_tune.engine.syncs.SyncCounter active; the
logging step, the finiteness check and the checkpoint at the end (which read values on purpose) are left out. A
sync is a call that makes the host wait for the device: a tensor turned into a Python number or list,
``bool()`` of a tensor, ``nonzero``, ``torch.equal``, a blocking host-to-device or device-to-host copy, a host
tensor as a device operation's operand (see fine_tune/engine/syncs.py: on this CPU the counter keeps the host
and the training device apart itself). The count does not depend on the model size. The non-BERT rows (and
``--padding_free off``) run Hugging Face's own forward: teacher and student of that family, so every forward of
the step is theirs.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


@dataclass(frozen=True)
class Contender:
    method: str  # a key of BUILDERS
    label: str
    padding: str = "max_length"  # the layer-wise scripts' default; fine-tuning and logits KD: dynamic
    family: str = "bert"  # teacher and student
    fp16: bool = False
    padding_free: bool = True  # --padding_free auto (off: Hugging Face's forward)


def _contenders() -> dict[str, Contender]:
    methods = [
        ("fine_tune", "fine-tuning", "dynamic"),
        ("logits_kd", "logits KD (a logits data set)", "dynamic"),
        ("lad", "LAD", "max_length"),
        ("pkd", "PKD", "max_length"),
        ("alp", "ALP-KD", "max_length"),
        ("tinybert_intermediate", "TinyBERT, intermediate stage", "max_length"),
        ("tinybert_prediction", "TinyBERT, prediction stage", "max_length"),
        ("minilm", "MiniLM", "max_length"),
    ]
    found = {}
    for key, label, padding in methods:
        found[key] = Contender(key, label, padding)
        found[f"{key}_fp16"] = Contender(key, f"{label}, fp16", padding, fp16=True)
    found["lad_dynamic"] = Contender("lad", "LAD `--padding dynamic`", "dynamic")
    found["pkd_dynamic"] = Contender("pkd", "PKD `--padding dynamic`", "dynamic")
    found["fine_tune_hf"] = Contender(
        "fine_tune", "fine-tuning, BERT `--padding_free off`", "dynamic", padding_free=False
    )
    for family in ("roberta", "distilbert"):
        found[f"fine_tune_{family}"] = Contender("fine_tune", f"fine-tuning, {family}", "dynamic", family)
        found[f"fine_tune_{family}_fp16"] = Contender(
            "fine_tune", f"fine-tuning, {family}, fp16", "dynamic", family, fp16=True
        )
    found["lad_roberta"] = Contender("lad", "LAD, roberta", "max_length", "roberta")
    found["minilm_roberta"] = Contender("minilm", "MiniLM, roberta", "max_length", "roberta")
    found["tinybert_intermediate_distilbert"] = Contender(
        "tinybert_intermediate", "TinyBERT intermediate, distilbert", "max_length", "distilbert"
    )
    return found


CONTENDERS = _contenders()


def build_method(name: str, padding: str, args, width: int = 32, heads: int = 2):
    """The method as its script builds it, for a 2-layer student of a 4-layer teacher."""
    from fine_tune.engine.optim import GATE_NO_DECAY, OptimiserSettings
    from fine_tune.methods import ALPKD, LAD, PKD, HardLabel, MiniLM, OfflineLogitsKD, TinyBERT

    n = args.steps
    projection = OptimiserSettings(lr=1e-4, total_step=n, warmup_step=1)
    shapes = dict(student_width=width, teacher_width=width)
    if name == "fine_tune":
        return HardLabel()
    if name == "logits_kd":
        return OfflineLogitsKD(0.5, 0.5, 2.0)
    if name == "lad":
        gates = OptimiserSettings(lr=1e-4, total_step=n, warmup_step=1, no_decay=GATE_NO_DECAY, clip_per_module=True)
        return LAD(
            2,
            4,
            0.5,
            0.5,
            1.0,
            10.0,
            d_model=width,
            seq_len=args.max_seq_len,
            gate_optimiser=gates,
            padding=padding,
            **shapes,
        )
    if name == "pkd":
        return PKD(2, 4, 0.5, 0.5, 1.0, 10.0, padding=padding, **shapes)
    if name == "alp":
        return ALPKD(2, 4, 0.5, 0.5, 1.0, 10.0, mode="alp-kd-hidden", padding=padding, **shapes)
    if name.startswith("tinybert"):
        stage = name.split("_", 1)[1]
        return TinyBERT(
            2,
            4,
            0.0,
            1.0,
            1.0,
            1.0,
            stage=stage,
            student_heads=heads,
            teacher_heads=heads,
            padding=padding,
            projection_optimiser=projection,
            **shapes,
        )
    if name == "minilm":
        return MiniLM(2, 4, 0.5, 0.5, 1.0, 1.0, student_heads=heads, teacher_heads=heads, padding=padding, **shapes)
    raise ValueError(name)


def count(key: str, args, root: Path) -> dict:
    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from fine_tune import synthetic
    from fine_tune.batching import Collator, tokenize
    from fine_tune.engine.device import Precision
    from fine_tune.engine.optim import OptimiserSettings
    from fine_tune.engine.seeding import seed_everything
    from fine_tune.engine.syncs import count_training_syncs
    from fine_tune.engine.trainer import Trainer, TrainSettings
    from fine_tune.experiment import ExperimentDir
    from fine_tune.models.forward import forward
    from fine_tune.models.padding_free import training_forwards
    from fine_tune.reporting import TensorBoardReporter
    from fine_tune.tasks import get_task

    c = CONTENDERS[key]
    seed_everything(0)
    teacher_dir = synthetic.write_tiny_model(root / "teacher", c.family, num_layers=4)
    student_dir = synthetic.write_tiny_model(root / "student", c.family, num_layers=2)
    data = root / "data"
    synthetic.write_qqp(data, n_train=4 * args.batch_size, n_dev=8, n_test=8)
    tok = AutoTokenizer.from_pretrained(teacher_dir)
    features = tokenize(tok, get_task("qqp").load(data, "train"), args.max_seq_len)
    n = args.steps
    method = build_method(c.method, c.padding, args)
    method.create_parameters(None)
    teacher = None
    if method.uses_teacher and c.method not in ("fine_tune", "logits_kd"):
        teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir, num_labels=2)
    student = AutoModelForSequenceClassification.from_pretrained(student_dir, num_labels=2)
    forwards = training_forwards(
        student,
        teacher,
        enabled=c.padding_free,
        ignores_padding=method.ignores_padding,
        device_type="cpu",
        record_attention=method.reads_attention,
    )
    logits = (
        np.random.default_rng(0).normal(size=(len(features), 2)).astype(np.float32) if c.method == "logits_kd" else None
    )
    collator = Collator(
        features,
        tok.pad_token_id,
        args.max_seq_len,
        c.padding,
        logits,
        layout=forwards.layout if forwards.takes_layout else None,
    )
    optimiser = OptimiserSettings(lr=1e-4, total_step=n, warmup_step=1)
    settings = TrainSettings(
        optimiser=optimiser,
        batch_size=args.batch_size,
        accum_step=1,
        ckpt_step=n,
        log_step=n,
        seed=0,
        tag_prefix="qqp/train/bert",
    )
    exp = ExperimentDir(root / "exp", key)
    exp.path.mkdir(parents=True)
    trainer = Trainer(
        student,
        method,
        collator,
        len(features),
        settings,
        exp,
        torch.device("cpu"),
        Precision("cpu", torch.float16 if c.fp16 else None),
        teacher=teacher,
        progress=False,
        student_forward=forwards.student,
        teacher_forward=forwards.teacher,
        forward=forward,
        reporter=TensorBoardReporter(exp.log_dir),
    )  # as the scripts' default --report_to
    counter = count_training_syncs(trainer)
    forwards_per_step = 1 + (teacher is not None)
    return {
        "contender": key,
        "forward": forwards.kind,
        "forwards_per_step": forwards_per_step,
        "steps": n,
        "syncs": counter.total,
        "per_step": counter.total / n,
        "by_op": dict(counter.by_op),
        "by_site": dict(counter.by_site.most_common(8)),
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch_size", type=int, default=32)
    ap.add_argument("--max_seq_len", type=int, default=64)
    ap.add_argument("--only", help="comma-separated contenders (default: all): " + ", ".join(CONTENDERS))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the load reports of the random models
    names = args.only.split(",") if args.only else list(CONTENDERS)
    unknown = [n for n in names if n not in CONTENDERS]
    if unknown:
        ap.error(f"--only: unknown contender(s) {', '.join(unknown)}")
    rows = []
    for name in names:
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(count(name, args, Path(tmp)))
    print("| path | forward | syncs per training step | by operator (per step) | sites |\n|---|---|---|---|---|")
    for r in rows:
        ops = ", ".join(f"`{k}` {v / r['steps']:g}" for k, v in sorted(r["by_op"].items())) or "none"
        sites = ", ".join(f"{k} ({v / r['steps']:g})" for k, v in r["by_site"].items()) or ""
        print(f"| {CONTENDERS[r['contender']].label} | {r['forward']} | {r['per_step']:g} | {ops} | {sites} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
