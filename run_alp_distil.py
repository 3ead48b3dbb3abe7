#!/usr/bin/env python
"""ALP-KD: the student learns attention-weighted mixtures of teacher layers (Passban et al., AAAI 2021).

The fine-tuned teacher is {teacher_exp}_{tmodel}_{task}/model-{tckpt}.pt (or --teacher_hf, a Hugging Face
classifier); max_seq_len, num_class and the training split come from its config. Defaults are the original
script's (doc/methods.md, "Defaults of every training script").
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from fine_tune.cli import parse_layerwise, run_main


def main(argv=None):
    flags = parse_layerwise("run_alp_distil.py", __doc__, "alp", argv)
    from fine_tune.plan.training import plan_online_distill
    from fine_tune.run import run

    run(plan_online_distill(flags, "alp"))


if __name__ == "__main__":
    raise SystemExit(run_main(main))
