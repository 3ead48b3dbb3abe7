#!/usr/bin/env python
"""Fine-tune a pretrained BERT/ALBERT teacher on BoolQ or QQP (cross-entropy on gold labels).

Example: see doc/fine_tune_boolq.md and doc/fine_tune_qqp.md.
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from fine_tune.cli import parse_flags, run_main
from fine_tune.settings import FINE_TUNE


def main(argv=None):
    flags = parse_flags("run_fine_tune.py", __doc__.splitlines()[0], FINE_TUNE, argv)
    from fine_tune.plan.training import plan_fine_tune
    from fine_tune.run import run

    run(plan_fine_tune(flags))


if __name__ == "__main__":
    raise SystemExit(run_main(main))
