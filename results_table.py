#!/usr/bin/env python
"""Scan the experiment root and print (and write as markdown) the results table of a task.

Every evaluated experiment is a row (seeds of one config are grouped into mean ± std with n, n counting seeds:
several runs of one config and seed count once, as the newest evaluated); each number names its checkpoint (one on
disk: an evaluation whose checkpoint is gone is skipped, with a note) and the rule that chose it (--rule /
--select_on). --compare A B adds a paired bootstrap
95 % interval of the accuracy difference. The same table is written as numbers beside the markdown (.csv, .json);
ONNX exports (export_model.py --format onnx) add their ONNX Runtime examples/s. --commands prints each row's
command lines, --plot the Pareto plot (main metric vs parameters and vs examples/s: <out>-pareto.png and .json),
--curves GLOBS the learning curves from the TensorBoard logs (<out>-curves.png and .json). Example:

    python results_table.py --task qqp --select_on dev
    python results_table.py --task boolq --compare lad_bert_boolq pkd_bert_boolq
    python results_table.py --task qqp --select_on dev --commands --plot --curves 'lad_s*'
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from fine_tune.cli import parse_flags, run_main
from fine_tune.settings import ResultsFlags


def main(argv=None):
    flags = parse_flags("results_table.py", __doc__.splitlines()[0], [ResultsFlags], argv)
    from fine_tune.plan.inference import plan_results
    from fine_tune.results import run_results

    run_results(plan_results(flags.results))


if __name__ == "__main__":
    raise SystemExit(run_main(main))
