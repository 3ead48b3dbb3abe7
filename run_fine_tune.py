#!/usr/bin/env python
"""Fine-tune a pretrained BERT/ALBERT teacher on BoolQ or QQP (cross-entropy on gold labels).

Example: see doc/fine_tune_boolq.md and doc/fine_tune_qqp.md.
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from fine_tune.cli import DeviceFlags, ExperimentFlags, OptimFlags, PathFlags, PretrainedFlags, parse_args, run_main


def main(argv=None):
    args = parse_args("run_fine_tune.py", __doc__.splitlines()[0],
                      [ExperimentFlags, PretrainedFlags, OptimFlags, DeviceFlags, PathFlags], argv)
    from fine_tune.train import run_fine_tune

    run_fine_tune(args)


if __name__ == "__main__":
    raise SystemExit(run_main(main))
