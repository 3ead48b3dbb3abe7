"""Typed flags: each script's groups, one default each (the original scripts'), frozen on their way down."""

from __future__ import annotations

import dataclasses

import pytest

from fine_tune.cli import build_parser, parse_flags, parse_layerwise
from fine_tune.errors import UserError
from fine_tune.settings import FINE_TUNE, LAYERWISE, OFFLINE_DISTILL, BatchingFlags, Flags, OptimiserFlags

# shared/reference/original_methods.md: the 2020 run_fine_tune.py / run_fine_tune_distill.py and the layer-wise
# scripts' argparse defaults
ORIGINAL_2020 = dict(
    num_class=2,
    accum_step=1,
    batch_size=32,
    beta1=0.9,
    beta2=0.999,
    ckpt_step=1000,
    dropout=0.1,
    eps=1e-8,
    log_step=500,
    lr=3e-5,
    max_norm=1.0,
    max_seq_len=512,
    seed=42,
    total_step=50000,
    warmup_step=10000,
    weight_decay=0.01,
)
STUDENT_2020 = dict(d_emb=128, d_ff=3072, d_model=768, num_attention_heads=16, num_hidden_layers=6, type_vocab_size=2)
LAYERWISE_ORIGINAL = dict(
    soft_weight=0.2,
    hard_weight=0.8,
    softmax_temp=1.0,
    mu=1.0,
    lr=3e-5,
    num_attention_heads=16,
    total_step=50000,
    warmup_step=10000,
    ckpt_step=1000,
    log_step=500,
    gate_lr=1e-5,
    gate_beta1=0.9,
    gate_beta2=0.999,
    gate_eps=1e-8,
    gate_max_norm=1.0,
    gate_weight_decay=0.01,
    padding="max_length",
)
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
    assert (
        isinstance(resolved, Flags) and resolved.batching.max_seq_len == 64 and resolved.experiment.dataset == "train"
    )
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
    assert subset(record, dict(ckpt=None, select_on=None, format="hf", quantize=None)) == dict(
        ckpt=None, select_on=None, format="hf", quantize=None
    )
    record = parse_flags("x", "", [SweepFlags], []).record()
    assert (record["ckpt"], record["save_predictions"]) == (0, False)  # every checkpoint, no per-example files


# -- issue 32 (train): the schedule in epochs, the metric for "best" ------------------------------------------
def _ft(*extra: str):
    return parse_flags("run_fine_tune.py", "", FINE_TUNE, [*REQUIRED, "--ptrain_ver", "m", *extra])


@pytest.mark.parametrize(
    "rows, batch, accum, epochs, ratio, drop_last",
    [
        (90, 8, 1, "1", "0.05", False),  # rows not a multiple of the batch: the last micro-batch is short
        (90, 8, 2, "2.5", "0.1", False),  # accumulation: 23 micro-batches an epoch, 11.5 steps
        (100, 2, 1, "1.1", "0.3", False),  # decimals exact: 1.1 x 50 is 55 steps (the float product, 55.00000000000001)
        (90, 8, 1, "3", "0", True),  # a method that trains full micro-batches only (TinyBERT): 11 an epoch
    ],
)
def test_num_epochs_and_warmup_ratio_resolve_into_the_steps_of_the_data_stream(
    rows, batch, accum, epochs, ratio, drop_last
):
    """--num_epochs N: as many optimizer steps as N epochs of the training rows take (the stream's micro-batches of
    batch_size / accum_step rows, accum_step a step), counted here on the stream itself; --warmup_ratio R:
    ceil(R x steps) (Hugging Face's rule)."""
    from fractions import Fraction

    from fine_tune.batching import MicroBatchStream
    from fine_tune.plan.training import resolve_schedule

    flags = _ft("--batch_size", str(batch), "--accum_step", str(accum), "--num_epochs", epochs, "--warmup_ratio", ratio)
    resolved, note = resolve_schedule(flags, rows, drop_last)
    stream = MicroBatchStream(rows, batch // accum, 0, drop_last=drop_last)
    epoch_rows = sum(len(stream.next()) for _ in range(stream.per_epoch))  # one epoch, as the stream serves it
    steps = 0
    served = 0
    while served < Fraction(epochs) * epoch_rows:  # optimizer steps until N epochs' rows were served
        served += sum(len(stream.next()) for _ in range(accum))
        steps += 1
    assert resolved.optimiser.total_step == steps
    assert resolved.optimiser.warmup_step == -(-Fraction(ratio) * steps // 1)
    assert note is None and (resolved.optimiser.num_epochs, resolved.optimiser.warmup_ratio) == (
        float(epochs),
        float(ratio),
    )
    assert flags.optimiser.total_step == 50000  # the parsed flags are unchanged: the plan's are new


def test_the_default_length_is_kept_and_said_in_epochs():
    from fine_tune.plan.training import resolve_schedule

    flags = _ft("--batch_size", "8")
    resolved, note = resolve_schedule(flags, 96)
    assert resolved is flags and (resolved.optimiser.total_step, resolved.optimiser.warmup_step) == (50000, 10000)
    assert note == ("50000 steps = 4,167 epochs of 96 examples (batch 8); --num_epochs or --total_step to choose")
    given, note = resolve_schedule(_ft("--total_step", "12", "--warmup_step", "1"), 96)
    assert (given.optimiser.total_step, given.optimiser.warmup_step, note) == (12, 1, None)
    with pytest.raises(
        UserError,
        match=r"^--warmup_step 10000 exceeds the 12 steps of --num_epochs 1 \(96 rows, 12 "
        r"steps per epoch\): give a smaller --warmup_step, or --warmup_ratio$",
    ):
        resolve_schedule(_ft("--batch_size", "8", "--num_epochs", "1"), 96)


def test_a_method_that_skips_short_batches_is_built_for_its_own_epochs():
    """The plan builds the method from the resolved flags, again when the built method trains full micro-batches
    only and that changes the schedule (its own parameter sets follow the student's schedule)."""
    from types import SimpleNamespace

    from fine_tune.plan.training import _schedule_and_method

    built = []

    def build(f, drop_last=True):
        built.append(f.optimiser.total_step)
        return SimpleNamespace(drop_last=drop_last, total_step=f.optimiser.total_step)

    flags, method, _ = _schedule_and_method(
        _ft("--batch_size", "8", "--num_epochs", "1", "--warmup_step", "0"), 90, build
    )
    assert built == [12, 11] and method.total_step == flags.optimiser.total_step == 11
    built.clear()
    _schedule_and_method(
        _ft("--batch_size", "8", "--num_epochs", "1", "--warmup_step", "0"), 90, lambda f: build(f, drop_last=False)
    )
    assert built == [12]


def test_lad_gates_follow_the_students_resolved_schedule():
    from fine_tune.engine.protocol import TeacherShape
    from fine_tune.methods import get_method
    from fine_tune.plan.training import method_settings, resolve_schedule
    from fine_tune.tasks import get_task

    flags = parse_layerwise(
        "x",
        "",
        "lad",
        [
            *REQUIRED,
            "--teacher_exp",
            "t",
            "--tckpt",
            "1",
            "--batch_size",
            "8",
            "--num_epochs",
            "2",
            "--warmup_ratio",
            "0.25",
            "--d_model",
            "8",
            "--num_attention_heads",
            "2",
            "--num_hidden_layers",
            "2",
            "--max_seq_len",
            "8",
        ],
    )
    flags, _ = resolve_schedule(flags, 20)  # 3 micro-batches an epoch: 6 steps, warmup 2
    method = get_method("lad").build(method_settings(flags, get_task("qqp"), get_method("lad"), TeacherShape(4, 8, 2)))
    assert (method.gate_optimiser.total_step, method.gate_optimiser.warmup_step) == (6, 2)


@pytest.mark.parametrize("method", [None, "lad", "tinybert", "minilm"])
def test_every_training_script_takes_epochs_and_refuses_them_with_the_step_count(method):
    given = ["--num_epochs", "3", "--total_step", "10"]
    if method is None:
        for groups, extra in ((FINE_TUNE, ["--ptrain_ver", "m"]), (OFFLINE_DISTILL, [])):
            assert parse_flags("x", "", groups, [*REQUIRED, *extra, "--num_epochs", "3"]).optimiser.num_epochs == 3.0
            with pytest.raises(
                UserError,
                match=r"^--num_epochs 3.0 and --total_step 10: give one or the other "
                r"\(--num_epochs sets --total_step\)$",
            ):
                parse_flags("x", "", groups, [*REQUIRED, *extra, *given])
        return
    teacher = [*REQUIRED, "--teacher_exp", "t", "--tckpt", "best"]
    assert parse_layerwise("x", "", method, [*teacher, "--warmup_ratio", "0.1"]).optimiser.warmup_ratio == 0.1
    with pytest.raises(UserError, match=r"^--warmup_ratio 0.1 and --warmup_step 3: give one or the other"):
        parse_layerwise("x", "", method, [*teacher, "--warmup_ratio", "0.1", "--warmup_step", "3"])


def test_config_of_an_epochs_run_reissues_the_epochs_and_the_command_line_wins(tmp_path):
    """config.json records the resolved steps beside --num_epochs / --warmup_ratio: --config re-resolves them from
    the epochs (the file's step counts do not count as given), and a flag of a pair given on the command line
    replaces the file's other one; an old config with an int --tckpt reads as before, one with "best" too."""
    import json

    path = tmp_path / "config.json"
    path.write_text(
        json.dumps(
            {
                "experiment": "x",
                "task": "qqp",
                "ptrain_ver": "m",
                "num_epochs": 3.0,
                "total_step": 57,
                "warmup_ratio": 0.1,
                "warmup_step": 6,
            }
        )
    )
    o = parse_flags("x", "", FINE_TUNE, ["--config", str(path)]).optimiser
    assert (o.num_epochs, o.total_step, o.warmup_ratio, o.warmup_step) == (3.0, 50000, 0.1, 10000)
    o = parse_flags("x", "", FINE_TUNE, ["--config", str(path), "--total_step", "100", "--warmup_step", "5"]).optimiser
    assert (o.num_epochs, o.total_step, o.warmup_ratio, o.warmup_step) == (None, 100, None, 5)
    path.write_text(
        json.dumps({"experiment": "x", "task": "qqp", "ptrain_ver": "m", "total_step": 57, "warmup_step": 6})
    )
    o = parse_flags("x", "", FINE_TUNE, ["--config", str(path), "--num_epochs", "2"]).optimiser
    assert (o.num_epochs, o.total_step, o.warmup_step) == (2.0, 50000, 6)
    for tckpt in (4, "best"):
        path.write_text(json.dumps({"experiment": "x", "task": "qqp", "teacher_exp": "t", "tckpt": tckpt}))
        assert parse_layerwise("x", "", "pkd", ["--config", str(path)]).teacher.tckpt == tckpt
    path.write_text(json.dumps({"experiment": "x", "task": "qqp", "teacher_exp": "t", "tckpt": "last"}))
    with pytest.raises(UserError, match=r'field "tckpt": --tckpt takes a checkpoint step or \'best\', got \'last\''):
        parse_layerwise("x", "", "pkd", ["--config", str(path)])


def test_best_is_one_rule_with_each_metrics_direction():
    from fine_tune.engine.evaluation import EvalHistory, EvalSettings, best_checkpoint_row
    from fine_tune.selection import best_row, metric_for_best
    from fine_tune.tasks import get_task

    rows = [
        {"ckpt": 1, "accuracy": 0.5, "loss": 0.4},
        {"ckpt": 2, "accuracy": 0.9, "loss": 0.4},
        {"ckpt": 3, "accuracy": 0.9, "loss": 0.6},
    ]
    assert [best_row(rows, m)["ckpt"] for m in ("accuracy", "loss")] == [3, 2]  # ties: the later row
    assert [best_row(rows, m, ties="earlier")["ckpt"] for m in ("accuracy", "loss")] == [2, 1]
    history = [{"step": r["ckpt"], "checkpoint": r["ckpt"] != 2, **r} for r in rows]
    assert best_checkpoint_row(history, "loss")["step"] == 1 and best_checkpoint_row(history, "accuracy")["step"] == 3
    qqp = get_task("qqp")
    assert [metric_for_best(qqp, m) for m in (None, "f1", "loss")] == ["accuracy", "f1", "loss"]
    import numpy as np

    from fine_tune.evaluate import evaluation_loss  # the loss: cross-entropy, or MSE of a regression task's score

    logits = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=np.float32)
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    assert evaluation_loss(qqp, np.array([0, 0, 1]), logits) == pytest.approx(
        -(log_p[0, 0] + log_p[1, 0] + log_p[2, 1]) / 3, rel=1e-6
    )
    assert evaluation_loss(get_task("stsb"), np.array([1.0, 4.5]), np.array([[2.0], [4.0]])) == pytest.approx(0.625)
    with pytest.raises(
        UserError,
        match=r"^--metric_for_best 'bleu': not a metric of qqp; its metrics: accuracy, "
        r"f1, loss$",
    ):
        metric_for_best(qqp, "bleu")
    with pytest.raises(UserError, match=r"; did you mean accuracy\? its metrics: accuracy, f1, loss$"):
        metric_for_best(qqp, "acuracy")

    def said(rows, on_disk=lambda step: True, metric="accuracy"):
        h = EvalHistory(EvalSettings("dev", None, None, metric, "qqp/dev"))
        h.rows = [{"step": s, "checkpoint": c, metric: v} for s, c, v in rows]
        return h.describe_best(on_disk, 2)

    assert said([(4, True, 0.5), (8, True, 0.9)]) == "best dev accuracy 0.900000 at step 8: best checkpoint model-8.pt"
    assert said([(4, True, 0.9), (6, False, 0.9), (8, True, 0.9)], on_disk=lambda s: s != 4) == (
        "best dev accuracy 0.900000 first at step 4, tied at 6, 8 (ties go to the later checkpoint; model-4.pt was "
        "pruned by --save_total_limit 2): best checkpoint model-8.pt"
    )
    assert said([(3, False, 0.2), (4, True, 0.3), (8, True, 0.25)], metric="loss") == (
        "best dev loss 0.200000 at step 3 (step 3 was an evaluation between checkpoints: no model-3.pt): best "
        "checkpoint model-8.pt (loss 0.250000)"
    )
    assert said([(3, False, 0.9), (4, True, 0.9)]) == (
        "best dev accuracy 0.900000 first at step 3, tied at 4 (ties go to the later checkpoint; step 3 was an "
        "evaluation between checkpoints: no model-3.pt): best checkpoint model-4.pt"
    )


def test_a_group_is_read_by_its_class_and_a_missing_or_other_one_is_refused():
    """``Flags.group(cls)`` / ``MethodSettings.group(cls)``: the typed way to a method's group or a script's subclass
    of a group; the group under the class's key must be of that class (a script's subclass is one)."""
    from fine_tune.methods.base import MethodSettings
    from fine_tune.methods.lad import GateFlags, ProbingFlags
    from fine_tune.methods.pkd import PkdFlags
    from fine_tune.settings import DistilExperimentFlags, ExperimentFlags, LayerwiseBatchingFlags

    flags = parse_layerwise("x", "", "lad", [*REQUIRED, "--teacher_exp", "t", "--tckpt", "3", "--gate_lr", "0.25"])
    assert flags.group(GateFlags).gate_lr == 0.25 and flags.group(GateFlags) is flags.gate
    assert isinstance(flags.group(BatchingFlags), LayerwiseBatchingFlags)  # the script's subclass is a BatchingFlags
    assert flags.group(ExperimentFlags) is flags.experiment
    with pytest.raises(AttributeError, match=r"^no flag group PkdFlags \(groups: experiment, .*gate\)$"):
        flags.group(PkdFlags)  # not one of run_lad_distil.py's groups
    with pytest.raises(AttributeError, match=r"^no flag group DistilExperimentFlags "):
        flags.group(DistilExperimentFlags)  # the key is there, holding another class
    with pytest.raises(AttributeError, match=r"^no flag group 'probing' "):
        flags.probing  # noqa: B018  (the attribute way says the same)
    settings = MethodSettings(groups={"gate": flags.gate, "experiment": flags.experiment}, num_class=3)
    assert settings.group(GateFlags) is flags.gate
    with pytest.raises(AttributeError, match=r"^no flag group ProbingFlags \(groups: gate, experiment\)$"):
        settings.group(ProbingFlags)
    with pytest.raises(AttributeError, match=r"^no flag group DistilExperimentFlags "):
        settings.group(DistilExperimentFlags)


def test_a_needed_value_is_refused_only_when_none():
    """``settings.needed``: a flag's value the run needs (a split, max_seq_len, num_class resolved by the plan): None
    is one line naming the flag; every other value, 0 and "" included, is itself."""
    from fine_tune.settings import needed

    assert needed(0, "--max_examples") == 0 and needed("", "--dataset") == "" and needed(0.0, "--mu") == 0.0
    assert needed(128, "--max_seq_len") == 128
    with pytest.raises(
        UserError, match=r"^--max_seq_len: give a value \(none was given, and none could be resolved\)$"
    ):
        needed(None, "--max_seq_len")


def test_every_flag_field_is_typed_to_admit_its_default_and_argparse_reads_its_kind():
    """A flag's annotation says what it holds: a default of None is ``X | None``; the command line converts with the
    annotation's first type unless the flag gives its own (``--tckpt``: a step or best)."""
    from fine_tune.cli import _all_flag_groups, _kind

    seen = 0
    for group in _all_flag_groups():
        for f in dataclasses.fields(group):
            annotation = str(f.type)
            if f.default is None and not f.metadata.get("required"):  # (a required flag's None is never kept)
                assert annotation.endswith(" | None"), (group.__name__, f.name, annotation)
            kind = _kind(f)
            if f.metadata.get("nargs"):
                assert kind is str and annotation.startswith("tuple[str, ...]"), (f.name, annotation)
            elif f.default is not None and f.metadata.get("type") is None:
                assert isinstance(f.default, kind) or (kind is float and isinstance(f.default, int)), f.name
            seen += 1
    assert seen > 100
