#!/usr/bin/env python
"""TinyBERT task-specific distillation (Jiao et al., Findings of EMNLP 2020), --tinybert_stage intermediate or prediction.

The teacher is a toolkit experiment ({teacher_exp}_{tmodel}_{task}/model-{tckpt}.pt) or a fine-tuned Hugging Face
classifier (--teacher_hf); the student is built from --d_model ... or pretrained (--student_ptrain_ver, e.g. a
General TinyBERT). Stage 1 (intermediate): attention-score, hidden-state and embedding MSE of the mapped layers,
through a learned projection W_h (the released code's fit_dense, at any widths; a pretrained student's own when its
weights hold one), at a constant learning rate. Stage 2 (prediction): soft cross-entropy with the teacher's logits
(a regression task: MSE to the gold scores), from stage 1's student (--student_ptrain_ver of its export_model.py
folder). Each epoch's incomplete batch is skipped, as the released code does. doc/methods.md, "TinyBERT".
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from fine_tune.cli import parse_layerwise, run_main


def main(argv=None):
    flags = parse_layerwise("run_tinybert_distil.py", __doc__, "tinybert", argv)
    from fine_tune.plan.training import plan_online_distill
    from fine_tune.run import run

    run(plan_online_distill(flags, "tinybert"))


if __name__ == "__main__":
    raise SystemExit(run_main(main))
