#!/usr/bin/env python
"""Export an experiment checkpoint as a Hugging Face model folder (default) or as an ONNX model (--format onnx).

    python export_model.py --experiment lad --model bert --task qqp --ckpt best --out data/lad-qqp
    # then: AutoModelForSequenceClassification.from_pretrained("data/lad-qqp"), AutoTokenizer.from_pretrained(...)
    python export_model.py --experiment lad --model bert --task qqp --ckpt best --format onnx --quantize int8

--ckpt: a step, 'last' (default) or 'best' (best accuracy on --select_on, default val / dev, as evaluated by
run_fine_tune_eval.py). --out defaults to <experiment folder>/hf-model-<step> (onnx-model-<step> with --format onnx).
--format onnx writes model.onnx (inputs input_ids, attention_mask and, where the model reads them, token_type_ids;
output logits; dynamic batch and sequence axes), the tokenizer, config.json and export.json, after checking ONNX
Runtime's logits against PyTorch's on the task's dev split (all rows, or the first --max_examples): every logit
within 1e-4 + 1e-4*|logit|, else refused and nothing is written. --quantize int8 adds model.int8.onnx (dynamic
quantization) with its dev metrics and agreement with fp32. model.onnx is ONNX Runtime's transformer optimiser's
fused graph where it fuses the family's attention (BERT, RoBERTa, DistilBERT, ELECTRA; the exporter's plain graph
kept as model.plain.onnx), else the plain graph. The ONNX export prints the dev metrics and examples/s of PyTorch
and ONNX Runtime on the CPU (doc/deploy.md).
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from fine_tune.cli import parse_flags, run_main
from fine_tune.settings import EXPORT


def main(argv=None):
    flags = parse_flags("export_model.py", __doc__.splitlines()[0], EXPORT, argv)
    from fine_tune.export import run_export
    from fine_tune.plan.inference import plan_export

    run_export(plan_export(flags))


if __name__ == "__main__":
    raise SystemExit(run_main(main))
