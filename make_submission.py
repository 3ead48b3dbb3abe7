#!/usr/bin/env python
"""Assemble a whole GLUE or SuperGLUE submission (the zip the server accepts) from the experiments' files.

Each file comes from the experiment named with --use TASK=FOLDER, else from the experiment of that task holding
it (written by generate_test_prediction.py) with the best main metric on the task's dev split. A missing file is
refused with the command that writes it, before anything is written. Example:

    python make_submission.py --benchmark glue --use mnli=lad_s42_bert_mnli
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from fine_tune.cli import parse_flags, run_main
from fine_tune.settings import SubmissionFlags


def main(argv=None):
    flags = parse_flags("make_submission.py", __doc__.splitlines()[0], [SubmissionFlags], argv)
    from fine_tune.plan.inference import plan_submission
    from fine_tune.submission import run_submission

    run_submission(plan_submission(flags))


if __name__ == "__main__":
    raise SystemExit(run_main(main))
