#!/usr/bin/env python
"""Distil a student from a logits data set (made by run_fine_tune_gen_logits.py):
hard_weight * CE(s, y) + soft_weight * T^2 * KL(softmax(t/T) || softmax(s/T)), T = --softmax_temp.

--dataset NAME is a logits data set; NAME:split picks a split other than train. Docs: README.md ("The pipeline");
doc/methods.md ("Losses", "Defaults of every training script").
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from fine_tune.cli import parse_flags, run_main
from fine_tune.settings import OFFLINE_DISTILL


def main(argv=None):
    flags = parse_flags("run_fine_tune_distill.py", __doc__, OFFLINE_DISTILL, argv)
    from fine_tune.plan.training import plan_offline_distill
    from fine_tune.run import run

    run(plan_offline_distill(flags))


if __name__ == "__main__":
    raise SystemExit(run_main(main))
