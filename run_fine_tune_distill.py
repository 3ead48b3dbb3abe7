#!/usr/bin/env python
"""Distil a student from a logits data set (made by run_fine_tune_gen_logits.py).

Loss: hard_weight * CE(s, y) + soft_weight * T^2 * KL(softmax(t/T) || softmax(s/T)); defaults 1, 1, T = 1
(gradient-identical to the original 2020 loss). --dataset NAME is a logits data set; NAME:split picks a
split other than train.
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from fine_tune.cli import parse_flags, run_main
from fine_tune.settings import OFFLINE_DISTILL


def main(argv=None):
    flags = parse_flags("run_fine_tune_distill.py", __doc__.splitlines()[0], OFFLINE_DISTILL, argv)
    from fine_tune.plan.training import plan_offline_distill
    from fine_tune.run import run

    run(plan_offline_distill(flags))


if __name__ == "__main__":
    raise SystemExit(run_main(main))
