#!/usr/bin/env python
"""Fine-tune a pretrained teacher of any --model family on a task (GLUE, SuperGLUE or your own): cross-entropy on
the gold labels (MSE on a regression task's scores), a checkpoint model-{step}.pt every --ckpt_step steps.

Docs: README.md ("The pipeline"); doc/fine_tune_boolq.md and doc/fine_tune_qqp.md (the original commands);
doc/methods.md ("Defaults of every training script").
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from fine_tune.cli import parse_flags, run_main
from fine_tune.settings import FINE_TUNE


def main(argv=None):
    flags = parse_flags("run_fine_tune.py", __doc__, FINE_TUNE, argv)
    from fine_tune.plan.training import plan_fine_tune
    from fine_tune.run import run

    run(plan_fine_tune(flags))


if __name__ == "__main__":
    raise SystemExit(run_main(main))
