#!/usr/bin/env python
"""Export an experiment checkpoint as a Hugging Face model folder (config, safetensors weights, tokenizer).

    python export_model.py --experiment lad --model bert --task qqp --ckpt best --out data/lad-qqp
    # then: AutoModelForSequenceClassification.from_pretrained("data/lad-qqp"), AutoTokenizer.from_pretrained(...)

--ckpt: a step, 'last' (default) or 'best' (best accuracy on --select_on, default val / dev, as evaluated by
run_fine_tune_eval.py). --out defaults to <experiment folder>/hf-model-<step>.
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from fine_tune.cli import EXPORT, parse_flags, run_main


def main(argv=None):
    flags = parse_flags("export_model.py", __doc__.splitlines()[0], EXPORT, argv)
    from fine_tune.export import run_export

    run_export(flags)


if __name__ == "__main__":
    raise SystemExit(run_main(main))
