#!/usr/bin/env python
"""Scan the experiment root and write the results table of a task (markdown, CSV, JSON): every evaluated
experiment a row, seeds of one config grouped, each number naming its checkpoint and the rule that chose it.

    python results_table.py --task qqp --select_on dev
    python results_table.py --task boolq --compare lad_bert_boolq pkd_bert_boolq
    python results_table.py --task qqp --select_on dev --commands --plot --curves 'lad_s*'

Docs: README.md ("Results tables, significance, export").
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from fine_tune.cli import parse_flags, run_main
from fine_tune.settings import ResultsFlags


def main(argv=None):
    flags = parse_flags("results_table.py", __doc__, [ResultsFlags], argv)
    from fine_tune.plan.inference import plan_results
    from fine_tune.results import run_results

    run_results(plan_results(flags.results))


if __name__ == "__main__":
    raise SystemExit(run_main(main))
