"""Typed flags: each script's groups, one default each (the original scripts'), frozen on their way down."""

from __future__ import annotations

import dataclasses

import pytest

from fine_tune.cli import build_parser, parse_flags, parse_layerwise
from fine_tune.settings import FINE_TUNE, LAYERWISE, OFFLINE_DISTILL, BatchingFlags, Flags, OptimiserFlags
from fine_tune.errors import UserError

# shared/reference/original_methods.md: the 2020 run_fine_tune.py / run_fine_tune_distill.py and the layer-wise
# scripts' argparse defaults
ORIGINAL_2020 = dict(num_class=2, accum_step=1, batch_size=32, beta1=0.9, beta2=0.999, ckpt_step=1000, dropout=0.1,
                     eps=1e-8, log_step=500, lr=3e-5, max_norm=1.0, max_seq_len=512, seed=42, total_step=50000,
                     warmup_step=10000, weight_decay=0.01)
STUDENT_2020 = dict(d_emb=128, d_ff=3072, d_model=768, num_attention_heads=16, num_hidden_layers=6, type_vocab_size=2)
LAYERWISE_ORIGINAL = dict(soft_weight=0.2, hard_weight=0.8, softmax_temp=1.0, mu=1.0, lr=3e-5, num_attention_heads=16,
                          total_step=50000, warmup_step=10000, ckpt_step=1000, log_step=500, gate_lr=1e-5,
                          gate_beta1=0.9, gate_beta2=0.999, gate_eps=1e-8, gate_max_norm=1.0, gate_weight_decay=0.01,
                          padding="max_length")
REQUIRED = ["--experiment", "x", "--task", "qqp"]


def subset(record: dict, expected: dict) -> dict:
    return {k: record[k] for k in expected}


def test_fine_tune_defaults_are_the_original_scripts():
    record = parse_flags("run_fine_tune.py", "", FINE_TUNE, [*REQUIRED, "--ptrain_ver", "m"]).record()
    expected = dict(ORIGINAL_2020, num_class=None)  # from the task: 2 for BoolQ and QQP, as the original's default
    assert subset(record, expected) == expected


def test_offline_distill_defaults_are_the_original_scripts():
    record = parse_flags("run_fine_tune_distill.py", "", OFFLINE_DISTILL, REQUIRED).record()
    expected = dict(ORIGINAL_2020, num_class=None, **STUDENT_2020, hard_weight=1.0, soft_weight=1.0, softmax_temp=1.0)
    assert subset(record, expected) == expected  # num_class: from the logits data set (doc/methods.md)


@pytest.mark.parametrize("method", ["lad", "lad_no", "partial_lad", "alp", "pkd"])
def test_layerwise_defaults_are_the_original_scripts(method):
    extra = ["--probing_exp", "partial_lad"] if method == "partial_lad" else []
    flags = parse_layerwise("x", "", method, [*REQUIRED, "--teacher_exp", "t", "--tckpt", "1", *extra])
    record = flags.record()
    expected = {k: v for k, v in LAYERWISE_ORIGINAL.items() if k in record}
    assert subset(record, expected) == expected
    assert (method in ("lad", "lad_no", "partial_lad")) == ("gate_lr" in record)
    # from the teacher's config unless given
    assert record["max_seq_len"] is None and record["num_class"] is None and record["dataset"] is None


def test_groups_are_frozen_and_replace_makes_new_flags():
    flags = parse_flags("x", "", LAYERWISE, [*REQUIRED, "--teacher_exp", "t", "--tckpt", "1"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        flags.batching.max_seq_len = 64
    with pytest.raises(AttributeError):
        flags.batching = BatchingFlags()
    resolved = flags.replace(batching={"max_seq_len": 64}, experiment={"dataset": "train"})
    assert isinstance(resolved, Flags) and resolved.batching.max_seq_len == 64 and resolved.experiment.dataset == "train"
    assert flags.batching.max_seq_len is None and flags.experiment.dataset is None  # the parsed flags are unchanged
    assert resolved.optimiser is flags.optimiser


def test_bad_values_are_one_line_errors_at_parse_time():
    with pytest.raises(UserError, match=r"^--warmup_step 20 exceeds --total_step 10$"):
        parse_flags("x", "", [OptimiserFlags], ["--total_step", "10", "--warmup_step", "20"])
    with pytest.raises(UserError, match=r"^--batch_size 10 is not divisible by --accum_step 4$"):
        parse_flags("x", "", [BatchingFlags], ["--batch_size", "10", "--accum_step", "4"])


def test_a_flag_lives_in_one_group():
    with pytest.raises(ValueError, match="--lr is in two groups"):
        build_parser("x", "", [OptimiserFlags, OptimiserFlags])


def test_results_and_checkpoint_defaults_are_the_documented_ones():
    """README.md: results_table.py reports the best checkpoint on the reported split itself and compares with a
    paired bootstrap of 10,000 resamples (seed 0); --ckpt defaults to the newest checkpoint, --select_on to the task's
    dev split; export_model.py writes a Hugging Face folder unless --format onnx."""
    from fine_tune.settings import CheckpointFlags, ExportFlags, ResultsFlags, SweepFlags

    record = parse_flags("results_table.py", "", [ResultsFlags], ["--task", "qqp"]).record()
    expected = dict(rule="best", select_on=None, resamples=10000, bootstrap_seed=0, splits=None, compare_split=None)
    assert subset(record, expected) == expected
    record = parse_flags("x", "", [CheckpointFlags, ExportFlags], []).record()
    assert subset(record, dict(ckpt=None, select_on=None, format="hf", quantize=None)) == \
        dict(ckpt=None, select_on=None, format="hf", quantize=None)
    record = parse_flags("x", "", [SweepFlags], []).record()
    assert (record["ckpt"], record["save_predictions"]) == (0, False)  # every checkpoint, no per-example files
