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

from fine_tune.cli import ExperimentFlags, ExportFlags, PathFlags, PredictFlags, parse_args, run_main


def main(argv=None):
    args = parse_args("export_model.py", __doc__.splitlines()[0], [ExperimentFlags, PredictFlags, ExportFlags, PathFlags],
                      argv)
    from fine_tune.export import run_export

    run_export(args)


if __name__ == "__main__":
    raise SystemExit(run_main(main))
