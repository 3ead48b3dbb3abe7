#!/usr/bin/env python
"""Write a checkpoint's logits for a split as a logits data set for run_fine_tune_distill.py.

Example: see doc/fine_tune_boolq.md and doc/fine_tune_qqp.md. --ckpt defaults to the latest checkpoint.
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from fine_tune.cli import parse_flags, run_main
from fine_tune.settings import GEN_LOGITS


def main(argv=None):
    flags = parse_flags("run_fine_tune_gen_logits.py", __doc__.splitlines()[0], GEN_LOGITS, argv)
    from fine_tune.evaluate import run_gen_logits
    from fine_tune.plan.inference import plan_gen_logits

    run_gen_logits(plan_gen_logits(flags))


if __name__ == "__main__":
    raise SystemExit(run_main(main))
