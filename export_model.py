#!/usr/bin/env python
"""Export an experiment's checkpoint as a Hugging Face model folder (the default) or as an ONNX model checked
against PyTorch's logits on the task's dev split (--format onnx; --quantize int8 adds an int8 model).

    python export_model.py --experiment lad --model bert --task qqp --ckpt best --out data/lad-qqp
    python export_model.py --experiment lad --model bert --task qqp --ckpt best --format onnx --quantize int8

model.onnx is ONNX Runtime's transformer optimiser's fused graph where it fuses the family's attention (BERT,
RoBERTa, DistilBERT, ELECTRA; the exporter's plain graph kept as model.plain.onnx), else the plain graph.

Docs: doc/deploy.md (what the ONNX export checks and writes, its speed); README.md ("Results tables, significance,
export").
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from fine_tune.cli import parse_flags, run_main
from fine_tune.settings import EXPORT


def main(argv=None):
    flags = parse_flags("export_model.py", __doc__, EXPORT, argv)
    from fine_tune.export import run_export
    from fine_tune.plan.inference import plan_export

    run_export(plan_export(flags))


if __name__ == "__main__":
    raise SystemExit(run_main(main))
