#!/usr/bin/env python
"""MiniLM distillation (Wang et al., NeurIPS 2020; MiniLMv2 relation heads with --relation_heads), task-specific.

The student's last layer learns the teacher's self-attention distributions and value relations (MiniLM), or its
Q-Q, K-K and V-V relations over --relation_heads relation heads (MiniLMv2), beside the logits loss. Relations are
[S, S] whatever the width, so the student may be of any width (no projection). The teacher is a toolkit experiment
(--teacher_exp/--tckpt) or a fine-tuned Hugging Face classifier (--teacher_hf). doc/methods.md, "MiniLM".
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from fine_tune.cli import parse_layerwise, run_main


def main(argv=None):
    flags = parse_layerwise("run_minilm_distil.py", __doc__, "minilm", argv)
    from fine_tune.plan.training import plan_online_distill
    from fine_tune.run import run

    run(plan_online_distill(flags, "minilm"))


if __name__ == "__main__":
    raise SystemExit(run_main(main))
