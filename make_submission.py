#!/usr/bin/env python
"""Assemble a whole GLUE or SuperGLUE submission (the zip the server accepts) from the experiments' files
(generate_test_prediction.py's), each task's from --use TASK=FOLDER or else from its best experiment on dev.

    python make_submission.py --benchmark glue --use mnli=lad_s42_bert_mnli

A missing file is refused with the command that writes it, before anything is written. Docs: README.md ("The
pipeline"); doc/methods.md ("Test predictions").
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from fine_tune.cli import parse_flags, run_main
from fine_tune.settings import SubmissionFlags


def main(argv=None):
    flags = parse_flags("make_submission.py", __doc__, [SubmissionFlags], argv)
    from fine_tune.plan.inference import plan_submission
    from fine_tune.submission import run_submission

    run_submission(plan_submission(flags))


if __name__ == "__main__":
    raise SystemExit(run_main(main))
