#!/usr/bin/env python
"""Distil a student from a fine-tuned teacher with any registered method (--method NAME: lad, pkd, tinybert...).

`run_distil.py --method NAME ...` takes exactly the flags of NAME's own script (run_lad_distil.py ...), with the
same defaults; `--method NAME --help` lists them. The fine-tuned teacher is
{teacher_exp}_{tmodel}_{task}/model-{tckpt}.pt (or --teacher_hf); max_seq_len, num_class and the training split
come from its config.json. Docs: doc/methods.md ("Layer-wise distillation", "Adding a method").
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from fine_tune.cli import parse_distil, run_main


def main(argv=None):
    method, flags = parse_distil("run_distil.py", __doc__, argv)
    from fine_tune.plan.training import plan_online_distill
    from fine_tune.run import run

    run(plan_online_distill(flags, method))


if __name__ == "__main__":
    raise SystemExit(run_main(main))
