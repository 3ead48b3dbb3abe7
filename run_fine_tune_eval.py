#!/usr/bin/env python
"""Evaluate every checkpoint of an experiment (from --ckpt on) on one labelled split of its task: the task's
metrics for each checkpoint, in eval-{split}.json in the experiment folder.

Docs: README.md ("Results tables, significance, export"); doc/methods.md ("Evaluation").
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from fine_tune.cli import parse_flags, run_main
from fine_tune.settings import EVAL


def main(argv=None):
    flags = parse_flags("run_fine_tune_eval.py", __doc__, EVAL, argv)
    from fine_tune.evaluate import run_eval
    from fine_tune.plan.inference import plan_eval

    run_eval(plan_eval(flags))


if __name__ == "__main__":
    raise SystemExit(run_main(main))
