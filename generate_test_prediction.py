#!/usr/bin/env python
"""Write the official submission file (QQP.tsv / BoolQ.jsonl) of a checkpoint's predictions.

Example: see doc/fine_tune_boolq.md and doc/fine_tune_qqp.md. --ckpt defaults to the latest checkpoint; --ckpt best takes the best
checkpoint on --select_on (default: the dev split, val for BoolQ) as evaluated by run_fine_tune_eval.py.
With --predict_file FILE (.csv, .tsv or .jsonl holding the task's text columns) it predicts the rows of FILE instead:
one line per row with the label and each class's probability, written beside FILE as <stem>.predictions.<ext> or
to --out (doc/deploy.md, "Predicting a file of your own").
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from fine_tune.cli import parse_flags, run_main
from fine_tune.settings import PREDICT


def main(argv=None):
    flags = parse_flags("generate_test_prediction.py", __doc__.splitlines()[0], PREDICT, argv)
    from fine_tune.evaluate import run_test_prediction
    from fine_tune.plan.inference import plan_prediction

    run_test_prediction(plan_prediction(flags))


if __name__ == "__main__":
    raise SystemExit(run_main(main))
