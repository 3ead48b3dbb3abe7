#!/usr/bin/env python
"""Predict a split of the task (default: test) with a checkpoint and write the task's official submission file
for it into the experiment folder (e.g. QQP.tsv for qqp, BoolQ.jsonl for boolq), as make_submission.py takes it.

With --predict_file FILE (.csv, .tsv or .jsonl holding the task's text columns) it predicts the rows of FILE instead:
one line per row with the label and each class's probability, written beside FILE as <stem>.predictions.<ext> or
to --out (doc/deploy.md, "Predicting a file of your own").

Docs: doc/methods.md ("Test predictions"); README.md ("Results tables, significance, export").
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from fine_tune.cli import parse_flags, run_main
from fine_tune.settings import PREDICT


def main(argv=None):
    flags = parse_flags("generate_test_prediction.py", __doc__, PREDICT, argv)
    from fine_tune.evaluate import run_test_prediction
    from fine_tune.plan.inference import plan_prediction

    run_test_prediction(plan_prediction(flags))


if __name__ == "__main__":
    raise SystemExit(run_main(main))
