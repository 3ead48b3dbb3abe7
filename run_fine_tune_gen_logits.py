#!/usr/bin/env python
"""Write a checkpoint's logits (or a teacher's fine-tuned elsewhere: --teacher_hf) for a split of the task: the
logits data set {experiment}_{model}_{task} that run_fine_tune_distill.py trains a student on.

Docs: README.md ("The pipeline"); doc/methods.md ("Logits data sets").
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from fine_tune.cli import parse_flags, run_main
from fine_tune.settings import GEN_LOGITS


def main(argv=None):
    flags = parse_flags("run_fine_tune_gen_logits.py", __doc__, GEN_LOGITS, argv)
    from fine_tune.evaluate import run_gen_logits
    from fine_tune.plan.inference import plan_gen_logits

    run_gen_logits(plan_gen_logits(flags))


if __name__ == "__main__":
    raise SystemExit(run_main(main))
