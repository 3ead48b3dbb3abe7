"""The catalogue of bad inputs (doc/errors.md): every one is refused with exit status 2 and exactly one line
``error: ...`` on stderr naming the flag, file or folder at fault, with no traceback, and nothing is written:
every file (and folder) under the experiment root and the data root is byte-for-byte what it was.

One module-scoped world holds a finished tiny teacher (12-layer tiny BERT, QQP, 4 steps), its train logits, a
finished logits-KD student, an evaluation and a submission file (so the tokenisation cache holds every split a
refused command could read), two damaged copies of the teacher (a truncated checkpoint, a checkpoint of another
shape) and small data roots with broken files. Each case runs one entry script in this process (no
interpreter start-up) and compares sha256 snapshots of the whole world taken before and after.

The expected error line of each case is the one doc/errors.md documents (its ``message`` column, placeholders
filled in with the case's own roots and paths), so the catalogue and the code cannot drift apart.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from conftest import REPO, run_in_process

from fine_tune import synthetic

SEQ = "24"
TEACHER_RUN = [
    "--experiment",
    "teacher",
    "--model",
    "bert",
    "--ptrain_ver",
    "{tiny}",
    "--task",
    "qqp",
    "--total_step",
    "4",
    "--warmup_step",
    "1",
    "--ckpt_step",
    "2",
    "--log_step",
    "2",
    "--batch_size",
    "8",
    "--lr",
    "1e-3",
    "--max_seq_len",
    SEQ,
]
# a new fine-tuning run (BoolQ); cases append flags (argparse keeps the last value of a repeated flag)
FT = [
    "--experiment",
    "new",
    "--model",
    "bert",
    "--ptrain_ver",
    "{tiny}",
    "--task",
    "boolq",
    "--total_step",
    "2",
    "--warmup_step",
    "0",
    "--ckpt_step",
    "2",
    "--batch_size",
    "8",
    "--lr",
    "1e-3",
    "--max_seq_len",
    SEQ,
]
# a new logits-KD student of the teacher's train logits
KD = [
    "--experiment",
    "kd",
    "--model",
    "bert",
    "--task",
    "qqp",
    "--dataset",
    "teacher_bert_qqp",
    "--d_model",
    "16",
    "--d_ff",
    "32",
    "--num_attention_heads",
    "2",
    "--num_hidden_layers",
    "1",
    "--total_step",
    "2",
    "--warmup_step",
    "0",
    "--ckpt_step",
    "2",
    "--log_step",
    "1",
    "--batch_size",
    "8",
    "--lr",
    "1e-3",
    "--max_seq_len",
    SEQ,
]
# a new layer-wise student of the teacher (its widths: hidden 32, feed-forward 64, 2 heads; 12 layers)
LW = [
    "--teacher_exp",
    "teacher",
    "--tmodel",
    "bert",
    "--tckpt",
    "4",
    "--experiment",
    "lw",
    "--task",
    "qqp",
    "--d_model",
    "32",
    "--d_ff",
    "64",
    "--num_attention_heads",
    "2",
    "--num_hidden_layers",
    "6",
    "--total_step",
    "2",
    "--warmup_step",
    "0",
    "--batch_size",
    "8",
    "--map_examples",
    "0",
]
PROBE = ["--probing_exp", "partial_lad", *LW]
# a new layer-wise student of a teacher fine-tuned elsewhere (--teacher_hf FOLDER appended: its value last)
HF = [*LW[6:], "--max_seq_len", SEQ, "--teacher_hf"]
# reading an existing experiment
EXP = ["--model", "bert", "--task", "qqp", "--batch_size", "16"]
EV = ["--experiment", "teacher", *EXP, "--dataset", "dev"]
# the QQP teacher's copy as an rte_superglue experiment (issue 30 (C): the diagnostics)
DIAG = [
    "--experiment",
    "teacher",
    "--model",
    "bert",
    "--task",
    "rte_superglue",
    "--batch_size",
    "16",
    "--exp_root",
    "{base}/diag_exp",
    "--data_root",
    "{base}/diag_data",
]


# QQP submission files (in {base}/hand_glue/<name>_bert_qqp) that break the task's rules, the split's data absent
SUBMISSION_FILES = {
    "prediction_not_a_label": "index\tprediction\n0\tbanana\n",
    "prediction_empty": "index\tprediction\n0\t\n",
    "duplicate_ids": "index\tprediction\n0\t1\n1\t0\n0\t0\n",
    "header_extra_cell": "index\tprediction\textra\n0\t1\n",
    "fractional_id": "index\tprediction\n0.5\t1\n",
}


@dataclass(frozen=True)
class Case:
    id: str
    script: str
    args: list[str]
    patch: str | None = None  # no_hub | hub_offline | fake_cuda | readonly:<folder under the world> | no_module:<name>
    marks: list = field(default_factory=list)
    # placeholders of the documented message beyond the ones every case has (<data_root>, <exp_root>: the roots
    # given; <path>, <model>: the --ptrain_ver given), e.g. {"<file>": "{base}/afile"}; {base}... are filled in
    where: dict[str, str] = field(default_factory=dict)


CASES = [
    # ---- data files ------------------------------------------------------------------------------------------
    Case("missing_data_file", "run_fine_tune.py", [*FT, "--data_root", "{base}/nodata"]),
    Case("missing_data_file_eval", "run_fine_tune_eval.py", [*EV, "--data_root", "{base}/nodata"]),
    Case("empty_data_file", "run_fine_tune.py", [*FT, "--data_root", "{base}/emptydata"]),
    Case("malformed_boolq_json", "run_fine_tune.py", [*FT, "--data_root", "{base}/badjson"]),
    Case("boolq_unknown_label", "run_fine_tune.py", [*FT, "--data_root", "{base}/badlabel"]),
    Case("qqp_wrong_columns", "run_fine_tune.py", [*FT, "--task", "qqp", "--data_root", "{base}/badtsv"]),
    Case("qqp_wrong_header", "run_fine_tune.py", [*FT, "--task", "qqp", "--data_root", "{base}/badheader"]),
    Case("data_file_not_utf8", "run_fine_tune.py", [*FT, "--data_root", "{base}/latin1"]),
    Case("boolq_test_row_without_idx", "run_fine_tune.py", [*FT, "--dataset", "test", "--data_root", "{base}/noidx"]),
    Case("duplicate_test_ids", "run_fine_tune.py", [*FT, "--dataset", "test", "--data_root", "{base}/twiceidx"]),
    # Tasks of your own (issue 29): task.json by its typed schema, data files by their format's rules
    *[
        Case(f"own_{name}", "run_fine_tune.py", [*FT, "--task", name, "--data_root", "{base}/own"])
        for name in (
            "regression_string",
            "metrics_number",
            "text_pair_list",
            "id_list",
            "unlabelled_string",
            "dev_split_unknown",
            "unknown_field",
            "csv_unclosed_quote",
            "csv_line_after_quoted_newline",
            "tsv_cell_count",
            "jsonl_text_number",
            "fractional_id",
            "corrupt_parquet",
            # the adversarial run of issue 29: lists, metrics that cannot score the task, control characters, exact
            # ids, JSON beyond Python's limits, a folder where a file goes
            "metrics_twice",
            "metrics_empty",
            "f1_of_three_labels",
            "regression_accuracy",
            "label_with_tab",
            "id_leading_zero",
            "id_outside_int64",
            "jsonl_key_twice",
            "task_json_nested_deep",
            "score_too_large",
            "task_json_folder",
            "train_file_folder",
        )
    ],
    # ---- names: task, model family, split, method modes ----------------------------------------------------
    Case("unknown_task", "run_fine_tune.py", [*FT, "--task", "squad"]),
    Case("unknown_model_family", "run_fine_tune.py", [*FT, "--model", "gpt2"]),
    Case("unknown_split", "run_fine_tune.py", [*FT, "--dataset", "validation"]),
    Case("unknown_split_eval", "run_fine_tune_eval.py", [*EV, "--dataset", "val"]),
    Case("unknown_probing_mode", "run_probing_lad.py", [*PROBE, "--probing_exp", "full_lad"]),
    Case("unknown_alp_mode", "run_alp_distil.py", [*LW, "--alp_exp", "alp-kd-v3"]),
    Case("non_integer_flag", "run_fine_tune.py", [*FT, "--total_step", "ten"]),
    # ---- teacher, experiments, checkpoints -----------------------------------------------------------------
    Case("missing_teacher_experiment", "run_lad_distil.py", [*LW, "--teacher_exp", "nope"]),
    Case("missing_teacher_checkpoint", "run_lad_distil.py", [*LW, "--tckpt", "3"]),
    Case("corrupted_teacher_checkpoint", "run_pkd_distill.py", [*LW, "--teacher_exp", "corrupt"]),
    Case("missing_experiment_eval", "run_fine_tune_eval.py", [*EV, "--experiment", "nope"]),
    Case("misspelt_experiment_eval", "run_fine_tune_eval.py", [*EV, "--experiment", "teachr"]),
    Case("misspelt_teacher_experiment", "run_lad_distil.py", [*LW, "--teacher_exp", "teachr"]),
    Case("missing_checkpoint_eval", "run_fine_tune_eval.py", [*EV, "--ckpt", "99"]),
    Case(
        "missing_checkpoint_predict",
        "generate_test_prediction.py",
        ["--experiment", "teacher", *EXP, "--dataset", "test", "--ckpt", "3"],
    ),
    Case("corrupted_checkpoint_eval", "run_fine_tune_eval.py", [*EV, "--experiment", "corrupt", "--ckpt", "4"]),
    Case(
        "corrupted_checkpoint_predict",
        "generate_test_prediction.py",
        ["--experiment", "corrupt", *EXP, "--dataset", "test", "--ckpt", "4"],
    ),
    Case("checkpoint_of_other_shape_eval", "run_fine_tune_eval.py", [*EV, "--experiment", "shape", "--ckpt", "4"]),
    Case(
        "checkpoint_of_other_shape_logits",
        "run_fine_tune_gen_logits.py",
        ["--experiment", "shape", *EXP, "--dataset", "dev", "--ckpt", "4"],
    ),
    Case("existing_experiment_other_config", "run_fine_tune.py", [*TEACHER_RUN, "--seed", "7", "--lr", "5e-4"]),
    Case(
        "existing_student_other_config",
        "run_fine_tune_distill.py",
        [*KD, "--experiment", "student", "--soft_weight", "0.5"],
    ),
    Case("missing_logits_dataset", "run_fine_tune_distill.py", [*KD, "--dataset", "nope_bert_qqp"]),
    Case("missing_logits_split", "run_fine_tune_distill.py", [*KD, "--dataset", "teacher_bert_qqp:dev"]),
    Case("changed_logits_file", "run_fine_tune_distill.py", [*KD, "--data_root", "{base}/changedlogits"]),
    Case("logits_row_not_finite", "run_fine_tune_distill.py", [*KD, "--data_root", "{base}/nanlogits"]),
    Case("logits_row_of_other_width", "run_fine_tune_distill.py", [*KD, "--data_root", "{base}/widelogits"]),
    Case("logits_meta_not_json", "run_fine_tune_distill.py", [*KD, "--data_root", "{base}/badmeta"]),
    Case("config_not_an_object", "run_fine_tune_eval.py", [*EV, "--experiment", "listconfig"]),
    Case("config_without_max_seq_len", "run_fine_tune_eval.py", [*EV, "--experiment", "noseqlen"]),
    Case(
        "select_on_not_a_split",
        "generate_test_prediction.py",
        ["--experiment", "teacher", *EXP, "--dataset", "test", "--ckpt", "best", "--select_on", "validation"],
    ),
    # ---- numbers ------------------------------------------------------------------------------------------
    # names that become folders
    Case("experiment_name_with_dotdot", "run_fine_tune.py", [*FT, "--experiment", "../t"]),
    Case("experiment_name_absolute", "run_fine_tune_distill.py", [*KD, "--experiment", "/tmp/t"]),
    Case("teacher_name_with_separator", "run_lad_distil.py", [*LW, "--teacher_exp", "../exp/teacher"]),
    Case("logits_name_with_dotdot", "run_fine_tune_distill.py", [*KD, "--dataset", "../logits/teacher_bert_qqp"]),
    Case("eval_name_with_separator", "run_fine_tune_eval.py", [*EV, "--experiment", "../exp/teacher"]),
    # numbers
    Case("max_seq_len_without_room", "run_fine_tune.py", [*FT, "--max_seq_len", "2"]),
    Case("negative_weight_decay", "run_fine_tune.py", [*FT, "--weight_decay", "-0.1"]),
    Case("beta_out_of_range", "run_fine_tune.py", [*FT, "--beta2", "1.0"]),
    Case("zero_gate_eps", "run_lad_distil.py", [*LW, "--gate_eps", "0"]),
    Case("both_loss_weights_zero", "run_fine_tune_distill.py", [*KD, "--hard_weight", "0", "--soft_weight", "0"]),
    Case(
        "all_layerwise_weights_zero",
        "run_pkd_distill.py",
        [*LW, "--hard_weight", "0", "--soft_weight", "0", "--mu", "0"],
    ),
    Case("negative_loss_weight", "run_alp_distil.py", [*LW, "--soft_weight", "-1"]),
    Case("zero_temperature", "run_fine_tune_distill.py", [*KD, "--softmax_temp", "0"]),
    Case("zero_gate_max_norm", "run_lad_distil.py", [*LW, "--gate_max_norm", "0"]),
    Case("zero_gate_total_step", "run_lad_distil.py", [*LW, "--gate_total_step", "0"]),
    Case(
        "gate_warmup_beyond_gate_total", "run_lad_distil.py", [*LW, "--gate_total_step", "3", "--gate_warmup_step", "5"]
    ),
    Case("gate_warmup_beyond_total_step", "run_probing_lad.py", [*PROBE, "--gate_warmup_step", "5"]),
    Case("seed_out_of_range", "run_fine_tune.py", [*FT, "--seed", "-1"]),
    Case("zero_resamples", "results_table.py", ["--task", "qqp", "--resamples", "0"]),
    Case("batch_not_divisible_by_accum", "run_fine_tune.py", [*FT, "--batch_size", "10", "--accum_step", "4"]),
    Case(
        "d_model_not_divisible_by_heads",
        "run_fine_tune_distill.py",
        [*KD, "--d_model", "30", "--num_attention_heads", "4"],
    ),
    Case("max_seq_len_beyond_positions", "run_fine_tune.py", [*FT, "--max_seq_len", "512"]),
    Case("max_seq_len_beyond_teacher_positions", "run_pkd_distill.py", [*LW, "--max_seq_len", "512"]),
    Case("zero_total_step", "run_fine_tune.py", [*FT, "--total_step", "0"]),
    Case("negative_total_step", "run_lad_distil.py", [*LW, "--total_step", "-5"]),
    Case("negative_warmup_step", "run_fine_tune.py", [*FT, "--warmup_step", "-1"]),
    Case("warmup_beyond_total_step", "run_fine_tune_distill.py", [*KD, "--warmup_step", "5"]),
    # ---- layer-wise methods -------------------------------------------------------------------------------
    Case("gate_index_out_of_range", "run_probing_lad.py", [*PROBE, "--gate_indices", "2,4,14"]),
    Case("gate_index_zero", "run_probing_lad.py", [*PROBE, "--gate_indices", "0,2"]),
    Case(
        "init_layers_of_another_width",
        "run_lad_distil.py",
        [*LW, "--d_model", "64", "--init_start", "2", "--init_end", "12", "--init_step", "2"],
    ),
    Case("student_layers_not_dividing_teacher", "run_lad_no_distil.py", [*LW, "--num_hidden_layers", "5"]),
    Case("student_ff_differs_for_layer_copy", "run_pkd_distill.py", [*LW, "--d_ff", "48"]),
    Case(
        "init_layers_beyond_teacher",
        "run_fine_tune_distill.py",
        [*KD, "--d_model", "32", "--d_ff", "64", "--init_start", "1", "--init_end", "14"],
    ),
    # ---- teachers and students from elsewhere ------------------------------------------------------------
    Case(
        "teacher_hf_labels_not_the_tasks",
        "run_lad_distil.py",
        [*HF, "{base}/hf_generic"],
        where={"<teacher>": "{base}/hf_generic"},
    ),
    Case(
        "teacher_hf_label_map_not_a_permutation",
        "run_lad_distil.py",
        [*HF, "{base}/hf_generic", "--teacher_label_map", "0,0"],
    ),
    Case("teacher_hf_not_a_classifier", "run_pkd_distill.py", [*HF, "{tiny}"], where={"<teacher>": "{tiny}"}),
    Case(
        "teacher_hf_without_max_seq_len",
        "run_alp_distil.py",
        [*LW[6:], "--teacher_hf", "{base}/hf_teacher"],
        where={"<teacher>": "{base}/hf_teacher"},
    ),
    Case("teacher_hf_and_teacher_exp", "run_lad_distil.py", [*LW, "--teacher_hf", "{base}/hf_teacher"]),
    Case(
        "teacher_hf_class_count", "run_lad_distil.py", [*HF, "{base}/hf_three"], where={"<teacher>": "{base}/hf_three"}
    ),
    Case(
        "student_tokenizer_differs",
        "run_pkd_distill.py",
        [*HF, "{base}/hf_teacher", "--model", "roberta", "--student_ptrain_ver", "{base}/roberta_student"],
        where={"<teacher>": "{base}/hf_teacher", "<student>": "{base}/roberta_student"},
    ),
    Case(
        "student_ptrain_ver_with_init_start",
        "run_lad_distil.py",
        [*LW, "--student_ptrain_ver", "{tiny}", "--init_start", "1", "--init_end", "6"],
    ),
    Case(
        "student_ptrain_ver_of_other_family",
        "run_fine_tune_distill.py",
        [*KD, "--student_ptrain_ver", "{base}/roberta_student"],
        where={"<student>": "{base}/roberta_student"},
    ),
    Case("tinybert_head_counts_differ", "run_tinybert_distil.py", [*LW, "--num_attention_heads", "4"]),
    Case("minilm_head_counts_differ", "run_minilm_distil.py", [*LW, "--num_attention_heads", "4"]),
    Case("minilm_relation_heads_not_dividing", "run_minilm_distil.py", [*LW, "--relation_heads", "3"]),
    Case(
        "tinybert_on_relative_attention",
        "run_tinybert_distil.py",
        [*HF, "{base}/hf_deberta", "--num_hidden_layers", "2"],
    ),
    Case(
        "gen_logits_teacher_hf_of_other_family",
        "run_fine_tune_gen_logits.py",
        [
            "--experiment",
            "hf",
            "--model",
            "roberta",
            "--task",
            "qqp",
            "--teacher_hf",
            "{base}/hf_teacher",
            "--max_seq_len",
            SEQ,
        ],
        where={"<teacher>": "{base}/hf_teacher"},
    ),
    Case(
        "gen_logits_teacher_hf_with_ckpt",
        "run_fine_tune_gen_logits.py",
        ["--experiment", "hf", *EXP, "--teacher_hf", "{base}/hf_teacher", "--max_seq_len", SEQ, "--ckpt", "4"],
    ),
    # ---- evaluation during training, re-runs, results, deployment -----------------------------------------
    Case("eval_dataset_without_labels", "run_fine_tune.py", [*FT, "--eval_dataset", "test"]),
    Case("eval_dataset_not_a_split", "run_fine_tune.py", [*FT, "--eval_dataset", "validation"]),
    Case("eval_step_without_eval_dataset", "run_pkd_distill.py", [*LW, "--eval_step", "5"]),
    Case(
        "config_not_json",
        "run_fine_tune.py",
        ["--config", "{base}/cfg_broken.json"],
        where={"<file>": "{base}/cfg_broken.json"},
    ),
    Case(
        "config_unknown_field",
        "run_fine_tune.py",
        ["--config", "{base}/cfg_unknown.json"],
        where={"<file>": "{base}/cfg_unknown.json"},
    ),
    Case(
        "config_wrong_type",
        "run_fine_tune.py",
        ["--config", "{base}/cfg_type.json", "--experiment", "again"],
        where={"<file>": "{base}/cfg_type.json"},
    ),
    Case("quantize_without_onnx", "export_model.py", ["--experiment", "teacher", *EXP[:4], "--quantize", "int8"]),
    Case(
        "curves_matching_nothing",
        "results_table.py",
        ["--task", "qqp", "--curves", "nothing*", "--exp_root", "{base}/results_exp"],
    ),
    Case(
        "results_out_is_a_folder",
        "results_table.py",
        ["--task", "qqp", "--exp_root", "{base}/results_exp", "--out", "{base}/results_exp"],
    ),
    # ---- the pretrained model -----------------------------------------------------------------------------
    Case(
        "missing_ptrain_ver_absolute", "run_fine_tune.py", [*FT, "--ptrain_ver", "/nonexistent/model"], patch="no_hub"
    ),
    Case("missing_ptrain_ver_relative", "run_fine_tune.py", [*FT, "--ptrain_ver", "./no/such/model"], patch="no_hub"),
    Case("missing_ptrain_ver_hub_name", "run_fine_tune.py", [*FT, "--ptrain_ver", "nosuch/model"], patch="hub_offline"),
    Case("ptrain_ver_is_a_file", "run_fine_tune.py", [*FT, "--ptrain_ver", "{base}/afile"], patch="no_hub"),
    Case("ptrain_ver_not_a_model", "run_fine_tune.py", [*FT, "--ptrain_ver", "{base}/nodata"]),
    Case("ptrain_ver_without_weights", "run_fine_tune.py", [*FT, "--ptrain_ver", "{base}/noweights"]),
    Case("ptrain_ver_without_tokenizer", "run_fine_tune.py", [*FT, "--ptrain_ver", "{base}/notokenizer"]),
    Case("ptrain_ver_of_other_family", "run_fine_tune.py", [*FT, "--model", "albert"]),
    # ---- devices ------------------------------------------------------------------------------------------
    Case("missing_cuda_device", "run_fine_tune.py", [*FT, "--device_id", "3"], patch="fake_cuda"),
    Case(
        "missing_teacher_cuda_device",
        "run_pkd_distill.py",
        [*LW, "--device_id", "0", "--tdevice_id", "3"],
        patch="fake_cuda",
    ),
    # ---- roots --------------------------------------------------------------------------------------------
    Case("unwritable_exp_root", "run_fine_tune.py", [*FT, "--exp_root", "{base}/ro_exp"], patch="readonly:ro_exp"),
    Case(
        "exp_root_under_a_file",
        "run_fine_tune.py",
        [*FT, "--exp_root", "{base}/afile/exp"],
        where={"<file>": "{base}/afile"},
    ),
    Case(
        "unwritable_data_root",
        "run_fine_tune_gen_logits.py",
        [*EV, "--ckpt", "4", "--data_root", "{base}/ro_data"],
        patch="readonly:ro_data",
    ),
    Case(
        "data_root_under_a_file_logits",
        "run_fine_tune_gen_logits.py",
        [*EV, "--ckpt", "4", "--data_root", "{base}/qqp_in_file"],
    ),
    # Outputs and the file system (issue 29)
    Case(
        "results_out_beside_a_file_it_did_not_write",
        "results_table.py",
        ["--task", "qqp", "--exp_root", "{base}/results_exp", "--out", "{base}/reports/report.md"],
        where={"<out>": "{base}/reports/report.md", "<file>": "{base}/reports/report.csv"},
    ),
    Case(
        "results_out_under_a_file",
        "results_table.py",
        ["--task", "qqp", "--exp_root", "{base}/results_exp", "--out", "{base}/afile/report.md"],
        where={"<file>": "{base}/afile"},
    ),
    Case(
        "submission_out_replaces_a_file",
        "make_submission.py",
        ["--benchmark", "glue", "--exp_root", "{exp}", "--out", "{base}/reports/other.zip"],
        where={"<out>": "{base}/reports/other.zip"},
    ),
    Case(
        "submission_out_is_a_folder",
        "make_submission.py",
        ["--benchmark", "glue", "--exp_root", "{exp}", "--out", "{base}/reports/folder.zip"],
        where={"<out>": "{base}/reports/folder.zip"},
    ),
    Case(
        "prediction_replaces_a_file_it_did_not_write",
        "generate_test_prediction.py",
        ["--experiment", "teacher", *EXP, "--dataset", "dev", "--ckpt", "4"],
    ),
    Case(
        "prediction_in_a_read_only_experiment",
        "generate_test_prediction.py",
        ["--experiment", "teacher", *EXP, "--dataset", "test", "--ckpt", "4", "--exp_root", "{base}/ro_teacher"],
        patch="readonly:ro_teacher/teacher_bert_qqp",
    ),
    Case(
        "training_in_a_read_only_experiment",
        "run_fine_tune.py",
        [*TEACHER_RUN, "--exp_root", "{base}/ro_teacher"],
        patch="readonly:ro_teacher/teacher_bert_qqp",
    ),
    Case(
        "export_out_under_a_file",
        "export_model.py",
        ["--experiment", "teacher", *EXP[:4], "--out", "{base}/afile/x"],
        where={"<file>": "{base}/afile"},
    ),
    Case(
        "export_out_is_a_file",
        "export_model.py",
        ["--experiment", "teacher", *EXP[:4], "--out", "{base}/afile"],
        where={"<file>": "{base}/afile"},
    ),
    Case("experiment_name_too_long", "run_fine_tune.py", [*FT, "--experiment", "x" * 300]),
    Case("experiment_folder_name_too_long", "run_fine_tune.py", [*FT, "--experiment", "x" * 250]),
    Case("ptrain_ver_weights_truncated", "run_fine_tune.py", [*FT, "--ptrain_ver", "{base}/truncweights"]),
    Case(
        "teacher_hf_weights_truncated",
        "run_lad_distil.py",
        [*HF, "{base}/hf_trunc"],
        where={"<teacher>": "{base}/hf_trunc"},
    ),
    Case(
        "gen_logits_teacher_hf_weights_truncated",
        "run_fine_tune_gen_logits.py",
        ["--experiment", "hf", *EXP[:4], "--teacher_hf", "{base}/hf_trunc", "--max_seq_len", SEQ],
        where={"<teacher>": "{base}/hf_trunc"},
    ),
    Case("results_out_root", "results_table.py", ["--task", "qqp", "--exp_root", "{base}/results_exp", "--out", "/"]),
    Case("results_out_dot", "results_table.py", ["--task", "qqp", "--exp_root", "{base}/results_exp", "--out", "."]),
    Case("results_out_empty", "results_table.py", ["--task", "qqp", "--exp_root", "{base}/results_exp", "--out", ""]),
    Case(
        "results_out_trailing_slash",
        "results_table.py",
        ["--task", "qqp", "--exp_root", "{base}/results_exp", "--out", "{base}/newdir/"],
        where={"<dir>": "{base}/newdir"},
    ),
    Case(
        "results_out_name_too_long",
        "results_table.py",
        ["--task", "qqp", "--exp_root", "{base}/results_exp", "--out", "{base}/reports/" + "r" * 253 + ".md"],
        where={"<out>": "{base}/reports/" + "r" * 253 + ".md"},
    ),
    Case(
        "results_out_beside_name_too_long",
        "results_table.py",
        ["--task", "qqp", "--exp_root", "{base}/results_exp", "--out", "{base}/reports/" + "s" * 252 + ".md"],
        where={"<out>": "{base}/reports/" + "s" * 252 + ".md"},
    ),
    Case(
        "results_out_record_not_the_toolkits",
        "results_table.py",
        ["--task", "qqp", "--exp_root", "{base}/results_exp", "--out", "{base}/foreign_record/report.md"],
        where={"<out>": "{base}/foreign_record/report.md", "<dir>": "{base}/foreign_record"},
    ),
    Case("submission_out_empty", "make_submission.py", ["--benchmark", "glue", "--exp_root", "{exp}", "--out", ""]),
    Case(
        "submission_out_trailing_slash",
        "make_submission.py",
        ["--benchmark", "glue", "--exp_root", "{exp}", "--out", "{base}/newdir/"],
        where={"<dir>": "{base}/newdir"},
    ),
    Case("export_out_empty", "export_model.py", ["--experiment", "teacher", *EXP[:4], "--out", ""]),
    Case(
        "export_out_name_too_long",
        "export_model.py",
        ["--experiment", "teacher", *EXP[:4], "--out", "{base}/" + "e" * 256],
        where={"<out>": "{base}/" + "e" * 256},
    ),
    *[
        Case(
            f"submission_{name}",
            "make_submission.py",
            [
                "--benchmark",
                "glue",
                "--exp_root",
                "{base}/hand_glue",
                "--data_root",
                "{base}/nodata",
                "--use",
                f"qqp={name}_bert_qqp",
                "--out",
                "{base}/reports/glue.zip",
            ],
        )
        for name in SUBMISSION_FILES
    ],
    Case("logits_write_killed_during_swap", "run_fine_tune_distill.py", [*KD, "--data_root", "{base}/killedlogits"]),
    # Results and resume (issue 29)
    Case(
        "config_edited_since_the_run_wrote_it",
        "run_fine_tune.py",
        [*TEACHER_RUN, "--total_step", "6", "--exp_root", "{base}/edited_exp"],
    ),
    Case(
        "recorded_inputs_cleared_since_the_run_wrote_them",
        "run_fine_tune.py",
        [*TEACHER_RUN, "--total_step", "6", "--exp_root", "{base}/cleared_exp"],
    ),
    # issue 30 (B)
    Case(
        "tinybert_fit_dense_of_other_shape",
        "run_tinybert_distil.py",
        [*LW, "--num_hidden_layers", "2", "--student_ptrain_ver", "{base}/fit_dense_student"],
        where={"<student>": "{base}/fit_dense_student"},
    ),
    # issue 30 (A)
    Case("tinybert_no_full_micro_batch", "run_tinybert_distil.py", [*LW, "--max_examples", "3"]),
    # issue 30 (C): SuperGLUE's diagnostics scored (AX-g's minimal pairs), never training data nor a chooser; GLUE's
    # AX without labels. The rte_superglue and mnli "teachers" are copies of the QQP teacher in a root of their own
    *[
        Case(f"axg_{name}", "run_fine_tune_eval.py", [*DIAG, "--dataset", "axg", "--data_root", f"{{base}}/axg_{name}"])
        for name in (
            "row_without_pair_id",
            "pair_id_on_three_rows",
            "pair_id_alone_among_pairs",
            "odd_rows_of_own_ids",
            "pair_hypotheses_differ",
        )
    ],
    Case(
        "axg_max_examples_cut_a_pair",
        "run_fine_tune_eval.py",
        [*DIAG, "--dataset", "axg", "--data_root", "{base}/diag_data", "--max_examples", "3"],
    ),
    Case(
        "diagnostic_as_training_split",
        "run_fine_tune.py",
        [*FT, "--task", "rte_superglue", "--dataset", "axb", "--exp_root", "{base}/diag_exp"],
    ),
    Case("diagnostic_logits_set", "run_fine_tune_gen_logits.py", [*DIAG, "--dataset", "axb", "--ckpt", "4"]),
    Case(
        "distill_from_an_old_diagnostic_logits_set",
        "run_fine_tune_distill.py",
        [
            *KD,
            "--task",
            "rte_superglue",
            "--dataset",
            "teacher_bert_rte_superglue:axb",
            "--data_root",
            "{base}/diag_data",
            "--exp_root",
            "{base}/diag_exp",
        ],
    ),
    Case(
        "diagnostic_chooses_the_checkpoint",
        "generate_test_prediction.py",
        [*DIAG, "--dataset", "axb", "--ckpt", "best", "--select_on", "axb"],
    ),
    Case(
        "results_diagnostic_chooses_the_checkpoint",
        "results_table.py",
        ["--task", "rte_superglue", "--exp_root", "{base}/diag_exp", "--select_on", "axg"],
    ),
    Case(
        "results_compare_on_a_diagnostic",
        "results_table.py",
        [
            "--task",
            "rte_superglue",
            "--exp_root",
            "{base}/diag_exp",
            "--compare",
            "teacher_bert_rte_superglue",
            "teacher_bert_rte_superglue",
            "--compare_split",
            "axb",
        ],
    ),
    Case(
        "glue_ax_evaluated",
        "run_fine_tune_eval.py",
        [
            "--experiment",
            "teacher",
            "--model",
            "bert",
            "--task",
            "mnli",
            "--dataset",
            "ax",
            "--exp_root",
            "{base}/diag_exp",
        ],
    ),
    # issue 32, table lane: results_table.py --columns (doc/errors.md, "Results table columns (issue 32)")
    Case(
        "results_column_unknown",
        "results_table.py",
        ["--task", "qqp", "--exp_root", "{base}/results_exp", "--columns", "experiment,lrr"],
    ),
    Case(
        "results_columns_empty",
        "results_table.py",
        ["--task", "qqp", "--exp_root", "{base}/results_exp", "--columns", ","],
    ),
    # issue 31: DDP settings (doc/errors.md, "DDP settings (issue 31)")
    Case("ddp_timeout_not_positive", "run_fine_tune.py", [*FT, "--ddp_timeout", "0"]),
    # Memory (issue 31)
    Case(
        "gradient_checkpointing_without_support",
        "run_fine_tune_distill.py",
        [*KD, "--model", "albert", "--gradient_checkpointing"],
    ),
    # help lane (issue 32, item 7): a misspelt name is answered with the closest valid one (doc/errors.md, "Help and
    # suggestions"): tasks, splits (and another library's name of the dev split), methods, every choices flag
    Case("misspelt_task", "run_fine_tune.py", [*FT, "--task", "sst-2"]),
    Case("misspelt_task_results", "results_table.py", ["--task", "QQP"]),
    Case("misspelt_split", "run_fine_tune_eval.py", [*EV, "--dataset", "dve"]),
    Case(
        "misspelt_select_on",
        "generate_test_prediction.py",
        ["--experiment", "teacher", *EXP, "--ckpt", "best", "--select_on", "deev"],
    ),
    Case("misspelt_method", "run_distil.py", ["--method", "minlm", *LW]),
    Case("misspelt_model_family", "run_fine_tune.py", [*FT, "--model", "BERT"]),
    Case("misspelt_choice", "run_fine_tune.py", [*FT, "--padding", "dynamc"]),
    Case("misspelt_download_task", "download_data.py", ["--task", "sst-2", "--data_root", "{base}/nodata"]),
    Case("misspelt_submission_task", "make_submission.py", ["--benchmark", "glue", "--use", "qqq=teacher_bert_qqp"]),
    # issue 32, lane train: epochs and the best checkpoint (doc/errors.md, "Epochs and the best checkpoint");
    # FT[:8] + FT[12:]: the new fine-tuning run without --total_step / --warmup_step
    Case("num_epochs_with_total_step", "run_fine_tune.py", [*FT, "--num_epochs", "3"]),
    Case("warmup_ratio_with_warmup_step", "run_fine_tune.py", [*FT, "--warmup_ratio", "0.1"]),
    Case("zero_num_epochs", "run_fine_tune.py", [*FT[:8], *FT[12:], "--num_epochs", "0"]),
    Case("warmup_ratio_of_one", "run_fine_tune.py", [*FT[:8], *FT[12:], "--warmup_ratio", "1"]),
    Case("default_warmup_beyond_the_epochs", "run_fine_tune.py", [*FT[:8], *FT[12:], "--num_epochs", "1"]),
    Case("unknown_metric_for_best", "run_fine_tune.py", [*FT, "--metric_for_best", "acuracy"]),
    Case("tckpt_best_without_evaluation", "run_pkd_distill.py", [*LW, "--teacher_exp", "student", "--tckpt", "best"]),
    Case("tckpt_neither_step_nor_best", "run_lad_distil.py", [*LW, "--tckpt", "last"]),
    # issue 32, tracking lane: experiment tracking (doc/errors.md, "Experiment tracking")
    Case("report_to_unknown_tracker", "run_fine_tune.py", [*FT, "--report_to", "tensorboard", "comet"]),
    Case(
        "report_to_mlflow_not_installed", "run_fine_tune.py", [*FT, "--report_to", "mlflow"], patch="no_module:mlflow"
    ),
    Case(
        "report_to_wandb_not_installed_eval",
        "run_fine_tune_eval.py",
        [*EV, "--report_to", "wandb"],
        patch="no_module:wandb",
    ),
    # progress lane (issue 32): generate_test_prediction.py --predict_file (doc/errors.md, "Progress and predictions")
    *[
        Case(
            f"predict_file_{name}",
            "generate_test_prediction.py",
            ["--experiment", "teacher", *EXP, "--ckpt", "4", "--predict_file", f"{{base}}/topredict/{file}", *more],
            where={"<file>": f"{{base}}/topredict/{file}", "<out>": "{base}/topredict/rows.predictions.csv"},
        )
        for name, file, more in (
            ("missing_text_column", "no_question2.csv", []),
            ("not_a_format", "rows.txt", []),
            ("not_there", "absent.csv", []),
            ("a_folder", "folder.csv", []),
            ("without_rows", "header_only.tsv", []),
            ("output_of_someone_else", "rows.csv", []),
            ("output_is_the_input", "rows.csv", ["--out", "{base}/topredict/rows.csv", "--overwrite"]),
            ("output_is_a_data_file", "rows.csv", ["--out", "{data}/QQP/dev.tsv", "--overwrite"]),
            ("output_in_an_experiment", "rows.csv", ["--out", "{exp}/teacher_bert_qqp/mine.csv"]),
            ("output_format", "rows.csv", ["--out", "{base}/topredict/out.txt"]),
            ("with_a_split", "rows.csv", ["--dataset", "dev"]),
            ("with_max_examples", "rows.csv", ["--max_examples", "1"]),
        )
    ],
    Case(
        "predict_out_without_predict_file",
        "generate_test_prediction.py",
        ["--experiment", "teacher", *EXP, "--out", "{base}/topredict/out.csv"],
    ),
]


# --------------------------------------------------------------------------------------------------------------
# The world
# --------------------------------------------------------------------------------------------------------------


def _run(world: dict, script: str, *args: str, check: bool = True):
    return run_in_process(script, *args, data_root=world["data"], exp_root=world["exp"], check=check)


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_bert12):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models on a shared 2-core machine: one thread is several times faster
    try:
        yield make_world(tmp_path_factory.mktemp("bad_inputs"), tiny_bert12)
    finally:
        torch.set_num_threads(threads)


def write_own_tasks(root: Path) -> None:
    """Tasks of your own under ``root``, each a folder (its name the case's id without ``own_``) with a task.json
    and a train file that break one rule of the definition's schema or of the file's format."""
    base = {
        "files": {"train": "train.csv", "dev": "dev.csv"},
        "text": "first",
        "label": "verdict",
        "labels": ["same", "different"],
    }
    csv_head = "first,verdict\n"
    tasks = {
        "regression_string": ({**base, "regression": "false"}, None),
        "metrics_number": ({**base, "metrics": 5}, None),
        "text_pair_list": ({**base, "text_pair": ["passage"]}, None),
        "id_list": ({**base, "id": ["pair_id"]}, None),
        "unlabelled_string": ({**base, "unlabelled": "test"}, None),
        "dev_split_unknown": ({**base, "dev_split": "validation"}, None),
        "unknown_field": ({**base, "colour": "red"}, None),
        "csv_unclosed_quote": (base, csv_head + 'a b,same\n"c d,different\ne f,same\n'),
        "csv_line_after_quoted_newline": (base, csv_head + '"a\nb",same\nc,different\nd,maybe\n'),
        "tsv_cell_count": ({**base, "files": {"train": "train.tsv"}}, 'first\tverdict\n"a\tsame\nb"\n'),
        "jsonl_text_number": (
            {**base, "files": {"train": "train.jsonl"}},
            '{"first": "a", "verdict": "same"}\n{"first": 12345, "verdict": "same"}\n',
        ),
        "fractional_id": (
            {**base, "files": {"train": "train.jsonl"}, "id": "n"},
            '{"n": 1, "first": "a", "verdict": "same"}\n{"n": 1.5, "first": "b", "verdict": "same"}\n',
        ),
        "corrupt_parquet": ({**base, "files": {"train": "train.parquet"}}, b"PAR1 cut short"),
        "metrics_twice": ({**base, "metrics": ["accuracy", "accuracy"]}, None),
        "metrics_empty": ({**base, "metrics": []}, None),
        "f1_of_three_labels": ({**base, "labels": ["x", "y", "z"], "metrics": ["accuracy", "f1"]}, None),
        "regression_accuracy": ({**base, "labels": None, "regression": True, "metrics": ["accuracy"]}, None),
        "label_with_tab": ({**base, "labels": ["a\tb", "c"]}, None),
        "id_leading_zero": ({**base, "id": "n"}, "n,first,verdict\n1,a,same\n007,b,same\n"),
        "id_outside_int64": (
            {**base, "files": {"train": "train.jsonl"}, "id": "n"},
            json.dumps({"n": 2**64, "first": "a", "verdict": "same"}) + "\n",
        ),
        "jsonl_key_twice": (
            {**base, "files": {"train": "train.jsonl"}},
            '{"first": "a", "verdict": "same"}\n{"first": "b", "verdict": "same", "verdict": "x"}\n',
        ),
        "task_json_nested_deep": ('{"text": ' + "[" * 100_000 + "]" * 100_000 + "}", None),
        "score_too_large": (
            {**base, "labels": None, "regression": True, "files": {"train": "train.jsonl"}},
            '{"first": "a", "verdict": 1' + "0" * 400 + "}\n",
        ),
        "task_json_folder": (None, None),  # task.json is a folder
        "train_file_folder": (base, None),  # train.csv is a folder
    }
    for name, (spec, train) in tasks.items():
        (root / name).mkdir(parents=True)
        if spec is None:
            (root / name / "task.json").mkdir()
            continue
        if isinstance(spec, dict):
            spec = {k: v for k, v in spec.items() if v is not None}
        (root / name / "task.json").write_text(spec if isinstance(spec, str) else json.dumps(spec))
        if name == "train_file_folder":
            (root / name / "train.csv").mkdir()
        if train is not None:
            target = root / name / spec["files"]["train"]
            target.write_bytes(train if isinstance(train, bytes) else train.encode())


def make_world(base: Path, tiny_bert12: Path) -> dict:
    data, exp = base / "data", base / "exp"
    synthetic.write_boolq(data, n_train=32, n_val=16, n_test=16)
    synthetic.write_qqp(data, n_train=32, n_dev=16, n_test=16)
    w = {"base": base, "data": data, "exp": exp, "tiny": tiny_bert12}
    fill = lambda args: [a.format(**w) for a in args]  # noqa: E731

    # finished experiments: teacher, its train logits, a logits-KD student; an evaluation and a submission
    _run(w, "run_fine_tune.py", *fill(TEACHER_RUN))
    _run(w, "run_fine_tune_gen_logits.py", "--experiment", "teacher", *EXP, "--dataset", "train", "--ckpt", "4")
    _run(w, "run_fine_tune_distill.py", *KD[:1], "student", *KD[2:])
    _run(w, "run_fine_tune_eval.py", *EV)
    _run(w, "generate_test_prediction.py", "--experiment", "teacher", *EXP, "--dataset", "test", "--ckpt", "4")

    # damaged copies of the teacher: a truncated checkpoint, a checkpoint of another shape (the student's)
    teacher = exp / "teacher_bert_qqp"
    for name in ("corrupt", "shape"):
        shutil.copytree(teacher, exp / f"{name}_bert_qqp")
    ckpt = exp / "corrupt_bert_qqp" / "model-4.pt"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    shutil.copyfile(exp / "student_bert_qqp" / "model-2.pt", exp / "shape_bert_qqp" / "model-4.pt")
    # a config.json that is JSON but no object, one without max_seq_len
    for name, config in (("listconfig", "[1, 2]\n"), ("noseqlen", json.dumps({"task": "qqp"}) + "\n")):
        shutil.copytree(teacher, exp / f"{name}_bert_qqp")
        (exp / f"{name}_bert_qqp" / "config.json").write_text(config)
    # Results and resume (issue 29): the teacher's folder in a root of its own, its config.json edited by hand to
    # train on (--total_step 6): a resume from model-4.pt whose config.json is not the one the run wrote
    edited = base / "edited_exp" / "teacher_bert_qqp"
    shutil.copytree(teacher, edited)
    config = json.loads((edited / "config.json").read_text())
    (edited / "config.json").write_text(json.dumps({**config, "total_step": 6}, indent=2))
    # ... and one of a run of 6 steps killed after its resume state at 4, its recorded inputs (provenance) cleared
    cleared = base / "cleared_exp" / "teacher_bert_qqp"
    shutil.copytree(teacher, cleared)
    from fine_tune.config import config_digest

    state = torch.load(cleared / "resume-4.pt", weights_only=True)
    torch.save({**state, "config_sha256": config_digest({**config, "total_step": 6})}, cleared / "resume-4.pt")
    config = {**config, "total_step": 6, "provenance": {**config["provenance"], "data_files": {}}}
    (cleared / "config.json").write_text(json.dumps(config, indent=2))

    # data roots: one without data files, one with an empty file, four with malformed files
    (base / "nodata").mkdir()
    boolq_lines = (data / "BoolQ" / "train.jsonl").read_text().splitlines(keepends=True)
    qqp_lines = (data / "QQP" / "train.tsv").read_text().splitlines(keepends=True)
    broken = {
        "emptydata/BoolQ/train.jsonl": "",
        "badjson/BoolQ/train.jsonl": "".join(boolq_lines[:2]) + '{"question": "is it", "passage": \n',
        "badlabel/BoolQ/train.jsonl": boolq_lines[0]
        + boolq_lines[1].replace('"label": true', '"label": "maybe"').replace('"label": false', '"label": "maybe"'),
        "badtsv/QQP/train.tsv": "".join(qqp_lines[:2]) + "7\t1\t2\tonly one question\n",
        "badheader/QQP/train.tsv": "id\tquestion1\tquestion2\n" + "".join(qqp_lines[1:3]),
    }
    test_lines = (data / "BoolQ" / "test.jsonl").read_text().splitlines(keepends=True)
    no_idx = json.loads(test_lines[1])
    del no_idx["idx"]
    twice = json.loads(test_lines[2])
    twice["idx"] = json.loads(test_lines[0])["idx"]
    broken.update(
        {
            "noidx/BoolQ/test.jsonl": test_lines[0] + json.dumps(no_idx) + "\n",
            "twiceidx/BoolQ/test.jsonl": test_lines[0] + test_lines[1] + json.dumps(twice) + "\n",
        }
    )
    for rel, text in broken.items():
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        (base / rel).write_text(text)
    latin = base / "latin1/BoolQ/train.jsonl"  # a data file saved in Latin-1: line 2 holds an é as byte 0xe9
    latin.parent.mkdir(parents=True)
    latin.write_bytes(boolq_lines[0].encode() + boolq_lines[1].replace("is", "caf\u00e9 is", 1).encode("latin-1"))
    assert '"maybe"' in (base / "badlabel/BoolQ/train.jsonl").read_text()
    write_own_tasks(base / "own")  # tasks of your own (issue 29)

    # a data root whose logits data set was edited after it was written (one row's logits changed, same rows)
    shutil.copytree(data, base / "changedlogits")
    rows = base / "changedlogits" / "logits" / "teacher_bert_qqp" / "train" / "logits.jsonl"
    lines = rows.read_text().splitlines(keepends=True)
    first = json.loads(lines[0])
    first["logits"] = [-x for x in first["logits"]]
    rows.write_text(json.dumps(first) + "\n" + "".join(lines[1:]))
    # logits sets that hold a NaN row, a row of another width (meta.json's hash updated: written so), and a
    # meta.json that is not JSON
    for name, change in (("nanlogits", lambda r: [float("nan")] * len(r)), ("widelogits", lambda r: r + [0.5])):
        shutil.copytree(data, base / name)
        folder = base / name / "logits" / "teacher_bert_qqp" / "train"
        second = json.loads(lines[1])
        second["logits"] = change(second["logits"])
        (folder / "logits.jsonl").write_text(lines[0] + json.dumps(second) + "\n" + "".join(lines[2:]))
        meta = json.loads((folder / "meta.json").read_text())
        meta["logits_sha256"] = hashlib.sha256((folder / "logits.jsonl").read_bytes()).hexdigest()
        (folder / "meta.json").write_text(json.dumps(meta))
    shutil.copytree(data, base / "badmeta")
    (base / "badmeta" / "logits" / "teacher_bert_qqp" / "train" / "meta.json").write_text('{"task": "qqp",\n')

    # teachers fine-tuned "elsewhere": the teacher exported as a Hugging Face folder; a copy whose labels are
    # unnamed (LABEL_0, LABEL_1); a 3-class classifier; a DeBERTa-v2 classifier; a pretrained RoBERTa student
    _run(w, "export_model.py", "--experiment", "teacher", *EXP[:4], "--ckpt", "4", "--out", str(base / "hf_teacher"))
    shutil.copytree(base / "hf_teacher", base / "hf_generic")
    for name, labels in (("hf_generic", ["LABEL_0", "LABEL_1"]), ("hf_three", ["a", "b", "c"])):
        if name == "hf_three":
            from transformers import AutoModelForSequenceClassification

            three = AutoModelForSequenceClassification.from_config(synthetic.tiny_config("bert", num_labels=3))
            three.save_pretrained(base / name)
            synthetic.tiny_tokenizer("bert").save_pretrained(base / name)
        config = json.loads((base / name / "config.json").read_text())
        config["id2label"] = dict(enumerate(labels))
        config["label2id"] = {v: k for k, v in enumerate(labels)}
        (base / name / "config.json").write_text(json.dumps(config))
    from transformers import AutoModelForSequenceClassification

    AutoModelForSequenceClassification.from_config(
        synthetic.tiny_config("deberta-v2", id2label={0: "0", 1: "1"}, label2id={"0": 0, "1": 1})
    ).save_pretrained(base / "hf_deberta")
    synthetic.tiny_tokenizer("deberta-v2").save_pretrained(base / "hf_deberta")
    synthetic.write_tiny_model(base / "roberta_student", "roberta")

    # pretrained folders lacking weights / tokenizer
    for name, keep in (
        ("noweights", ("config.json", "tokenizer.json", "tokenizer_config.json")),
        ("notokenizer", ("config.json", "model.safetensors")),
    ):
        (base / name).mkdir()
        for f in keep:
            shutil.copyfile(tiny_bert12 / f, base / name / f)

    # roots: a read-only experiment root, a read-only data root (QQP files only), a regular file, and a data
    # root whose logits/ is a regular file
    (base / "ro_exp").mkdir()
    for root in ("ro_data", "qqp_in_file"):
        shutil.copytree(data / "QQP", base / root / "QQP")
    (base / "qqp_in_file" / "logits").write_text("not a folder\n")
    # a cold cache: a refused gen-logits must not even tokenise (and cache) the split
    (base / "afile").write_text("a regular file\n")
    # --config files: not JSON, an unknown field, a value of the wrong type (the teacher's config otherwise)
    teacher_config = json.loads((exp / "teacher_bert_qqp" / "config.json").read_text())
    (base / "cfg_broken.json").write_text('{"experiment": "teacher",\n')
    (base / "cfg_unknown.json").write_text(json.dumps({**teacher_config, "colour": "blue"}))
    (base / "cfg_type.json").write_text(json.dumps({**teacher_config, "lr": "fast"}))
    # an experiment root holding only the evaluated teacher (the world's root also holds broken folders)
    shutil.copytree(exp / "teacher_bert_qqp", base / "results_exp" / "teacher_bert_qqp")
    # outputs and the file system (issue 29): files no command wrote where outputs would go; a copy of the teacher
    # to make read-only; pretrained and fine-tuned folders whose model.safetensors was cut in half
    (base / "reports" / "folder.zip").mkdir(parents=True)
    (base / "reports" / "report.csv").write_text("a table of my own\n")
    (base / "reports" / "other.zip").write_bytes(b"PK\x05\x06" + bytes(18))  # an empty zip of someone else's
    (exp / "teacher_bert_qqp" / "QQP-dev.tsv").write_text("index\tprediction\n0\t1\n")
    shutil.copytree(exp / "teacher_bert_qqp", base / "ro_teacher" / "teacher_bert_qqp")
    for name, source in (("truncweights", tiny_bert12), ("hf_trunc", base / "hf_teacher")):
        shutil.copytree(source, base / name)
        weights = base / name / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    # ... a record of outputs that is not the toolkit's; a GLUE experiment root of valid hand-written submission files
    # beside QQP files that break the task's rules (SUBMISSION_FILES); a logits set killed during its swap (its
    # meta.json moved into the stage folder, write_logits' first rename)
    (base / "foreign_record").mkdir()
    (base / "foreign_record" / ".fine_tune-outputs.json").write_text("not json\n")
    from fine_tune.submission import writers
    from fine_tune.tasks import TASKS

    for name, (task, _) in writers("glue").items():
        synthetic.write_submission_file(base / "hand_glue" / f"hand_bert_{task}" / name, TASKS[task], [0, 1], 1)
        (base / "hand_glue" / f"hand_bert_{task}" / "config.json").write_text(json.dumps({"task": task}))
    for name, text in SUBMISSION_FILES.items():
        (base / "hand_glue" / f"{name}_bert_qqp").mkdir()
        (base / "hand_glue" / f"{name}_bert_qqp" / "config.json").write_text(json.dumps({"task": "qqp"}))
        (base / "hand_glue" / f"{name}_bert_qqp" / "QQP.tsv").write_text(text)
    shutil.copytree(data, base / "killedlogits")
    killed = base / "killedlogits" / "logits" / "teacher_bert_qqp" / "train"
    (killed / ".tmp-new.killed").mkdir()
    os.replace(killed / "meta.json", killed / ".tmp-new.killed" / "old-meta.json")
    # issue 30 (B): a pretrained student (2 layers, the teacher's width 32) whose weights hold a fit_dense (TinyBERT's
    # W_h) mapping 32 -> 16
    from safetensors.torch import load_file, save_file

    student = synthetic.write_tiny_model(base / "fit_dense_student", "bert")
    state = dict(
        load_file(student / "model.safetensors"),
        **{"fit_dense.weight": torch.zeros(16, 32), "fit_dense.bias": torch.zeros(16)},
    )
    save_file(state, student / "model.safetensors", metadata={"format": "pt"})
    make_diagnostics_world(base, teacher, data)
    # progress lane (issue 32): files to predict with --predict_file (QQP's columns), one beside a file of someone
    # else's where its predictions would go, one without the question2 column, one of another format, one without
    # rows, a folder named like a file
    (base / "topredict" / "folder.csv").mkdir(parents=True)
    for name, text in (
        ("rows.csv", "id,question1,question2\n7,a b,c d\n"),
        ("rows.predictions.csv", "mine\n"),
        ("no_question2.csv", "id,question1\n7,a b\n"),
        ("rows.txt", "a b\tc d\n"),
        ("header_only.tsv", "question1\tquestion2\n"),
    ):
        (base / "topredict" / name).write_text(text)
    return w


def make_diagnostics_world(base: Path, teacher: Path, data: Path) -> None:
    """issue 30 (C): an experiment root whose rte_superglue and mnli experiments are copies of the QQP teacher (two
    classes: RTE's count), a data root with SuperGLUE's AX-b and AX-g (shared pair_ids, pairs not on adjacent rows)
    and an AX-b logits set made before diagnostics were refused as training data, and data roots whose AX-g breaks
    the minimal pairs."""
    for task in ("rte_superglue", "mnli"):
        folder = base / "diag_exp" / f"teacher_bert_{task}"
        shutil.copytree(teacher, folder)
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "task": task}, indent=2))
    axg = [
        {
            "hypothesis": f"h{p}",
            "idx": i,
            "label": ("entailment", "not_entailment")[i % 2],
            "pair_id": 551600 + p,
            "premise": f"p{p} {('his', 'her')[i in (2, 4, 5)]}",
        }
        for i, p in enumerate((50, 62, 50, 70, 62, 70))
    ]
    axb = [{"sentence1": f"s{i}", "sentence2": f"t{i}", "label": "not_entailment", "idx": str(i)} for i in range(4)]
    broken = {
        "diag_data": axg,
        "axg_row_without_pair_id": [axg[0], {k: v for k, v in axg[1].items() if k != "pair_id"}] + axg[2:],
        "axg_pair_id_on_three_rows": axg + [dict(axg[0], idx=6)],
        "axg_pair_id_alone_among_pairs": axg[:3] + [dict(axg[3], pair_id=7)] + axg[4:],
        "axg_odd_rows_of_own_ids": [dict(a, pair_id=100 + i) for i, a in enumerate(axg[:5])],
        "axg_pair_hypotheses_differ": axg[:4] + [dict(axg[4], hypothesis="another")] + axg[5:],
    }
    for root, rows in broken.items():
        (base / root / "AX-g").mkdir(parents=True)
        (base / root / "AX-g" / "AX-g.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (base / "diag_data" / "AX-b").mkdir()
    (base / "diag_data" / "AX-b" / "AX-b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in axb))
    old_set = base / "diag_data" / "logits" / "teacher_bert_rte_superglue" / "axb"
    shutil.copytree(data / "logits" / "teacher_bert_qqp" / "train", old_set)
    meta = json.loads((old_set / "meta.json").read_text())
    (old_set / "meta.json").write_text(json.dumps({**meta, "task": "rte_superglue", "split": "axb"}))


def snapshot(base: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file, '<dir>' for every folder, under ``base``."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(base):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), base)] = "<dir>"
        for f in filenames:
            path = os.path.join(dirpath, f)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, base)] = hashlib.sha256(fh.read()).hexdigest()
    return out


class _NoHub:
    """Stands in for transformers' Auto* loaders: a path that does not exist must never reach the hub."""

    @staticmethod
    def from_pretrained(name, *args, **kwargs):
        raise AssertionError(f"{name!r} was looked up (hub or folder) instead of being refused as a missing folder")


def apply_patch(patch: str | None, world: dict, monkeypatch) -> Callable[[], None]:
    """Install the case's patch; returns the undo that must run before the after-snapshot."""
    if patch is None:
        return lambda: None
    if patch == "no_hub":
        import fine_tune.models.classifier as classifier

        monkeypatch.setattr(classifier, "AutoConfig", _NoHub)
        monkeypatch.setattr(classifier, "AutoTokenizer", _NoHub)
        return lambda: None
    if patch == "hub_offline":  # a hub name on a machine without network (without waiting for its retries)
        import fine_tune.models.classifier as classifier

        class Offline:
            @staticmethod
            def from_pretrained(name, *args, **kwargs):
                raise OSError(
                    "We couldn't connect to 'https://huggingface.co' to load the files, and couldn't find "
                    "them in the cached files.\nCheck your internet connection."
                )

        monkeypatch.setattr(classifier, "AutoConfig", Offline)
        return lambda: None
    if patch == "fake_cuda":  # a machine with one CUDA device (the test machine may have none)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
        return lambda: None
    if patch.startswith("no_module:"):  # a package that is not installed: importing it fails
        monkeypatch.setitem(sys.modules, patch.split(":", 1)[1], None)
        return lambda: None
    if patch.startswith("readonly:"):
        folder = world["base"] / patch.split(":", 1)[1]
        folder.chmod(0o500)
        if os.geteuid() == 0:  # root writes through chmod: make os.access report what a user would see
            real = os.access

            def access(path, mode, *args, **kwargs):
                p = Path(path).absolute()
                if mode & os.W_OK and (p == folder or folder in p.parents):
                    return False
                return real(path, mode, *args, **kwargs)

            monkeypatch.setattr(os, "access", access)
        return lambda: folder.chmod(0o755)
    raise ValueError(patch)


# --------------------------------------------------------------------------------------------------------------
# The test
# --------------------------------------------------------------------------------------------------------------


def test_catalogue_is_large_and_ids_are_unique():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 24


# --------------------------------------------------------------------------------------------------------------
# The documented messages (doc/errors.md)
# --------------------------------------------------------------------------------------------------------------

DOC = REPO / "doc" / "errors.md"
TABLE_HEADER = ["bad input", "command (shortened)", "message", "test id"]
SAME_AS_ABOVE = "same message as above"
PLACEHOLDER = re.compile(r"<[a-z_]+>|…")


def _cell_code(cell: str) -> str:
    """The text of a markdown code span: ``…`` (may hold a backtick) or `…`."""
    for fence in ("``", "`"):
        if len(cell) > 2 * len(fence) and cell.startswith(fence) and cell.endswith(fence):
            return cell[len(fence) : -len(fence)].strip()
    raise ValueError(f"not a code span: {cell!r}")


def doc_rows() -> list[tuple[str, str]]:
    """(test id, documented message) for every row of the catalogue's tables, in order; "same message as above"
    stands for the message of the row before it."""
    rows: list[tuple[str, str]] = []
    in_table = False
    for n, line in enumerate(DOC.read_text(encoding="utf-8").splitlines(), 1):
        if not line.startswith("|"):
            in_table = False
            continue
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if cells == TABLE_HEADER:
            in_table = True
            continue
        if not in_table or set(line) <= set("|-: "):
            continue
        assert len(cells) == 4, f"{DOC}:{n}: expected 4 cells, got {len(cells)}: {line}"
        message = rows[-1][1] if cells[2] == SAME_AS_ABOVE and rows else _cell_code(cells[2])
        assert message.startswith("error: "), f"{DOC}:{n}: message does not start with 'error: ': {message}"
        rows.append((_cell_code(cells[3]), message))
    return rows


DOC_MESSAGES = dict(doc_rows())


def expected_line(message: str, values: dict[str, str]) -> re.Pattern:
    """The documented ``message`` as a regex for the whole real line: placeholders replaced by ``values`` (the
    case's roots and paths, escaped), ``…`` by ``.*``, everything else literal."""
    parts, pos = [], 0
    for m in PLACEHOLDER.finditer(message):
        parts.append(re.escape(message[pos : m.start()]))
        token = m.group()
        if token == "…":
            parts.append(".*")
        else:
            assert token in values, f"placeholder {token} in {message!r} has no value for this case ({sorted(values)})"
            parts.append(re.escape(values[token]))
        pos = m.end()
    parts.append(re.escape(message[pos:]))
    return re.compile("".join(parts))


def placeholder_values(case: Case, args: list[str], world: dict) -> dict[str, str]:
    """<data_root> / <exp_root>: the roots the command is given (its last --data_root / --exp_root, else the
    world's, passed as FT_DATA_ROOT / FT_EXP_ROOT); <path> / <model>: its last --ptrain_ver; plus the case's own."""

    def last(flag: str) -> str | None:  # argparse keeps the last value of a repeated flag
        given = [value for name, value in zip(args, args[1:]) if name == flag]
        return given[-1] if given else None

    values = {
        "<data_root>": last("--data_root") or str(world["data"]),
        "<exp_root>": last("--exp_root") or str(world["exp"]),
    }
    if (ptrain := last("--ptrain_ver")) is not None:
        values["<path>"] = values["<model>"] = ptrain
    values.update({k: v.format(**world) for k, v in case.where.items()})
    return values


def test_doc_lists_every_case_once():
    ids = [i for i, _ in doc_rows()]
    duplicated = sorted({i for i in ids if ids.count(i) > 1})
    assert not duplicated, f"test ids with more than one row in {DOC}: {duplicated}"
    cases = {c.id for c in CASES}
    assert set(ids) == cases, (
        f"cases without a doc row: {sorted(cases - set(ids))}; doc rows without a case: {sorted(set(ids) - cases)}"
    )


def test_expected_line_is_literal_but_for_placeholders():
    pattern = expected_line("error: a (b) <data_root>/x.* c … d", {"<data_root>": "/r.1"})
    assert pattern.fullmatch("error: a (b) /r.1/x.* c anything at all d")
    assert not pattern.fullmatch("error: a (b) /rX1/x.* c anything d")  # the root is literal, not a regex
    assert not pattern.fullmatch("error: a (b) /r.1/xyz c anything d")
    assert not pattern.fullmatch("error: a (b) /r.1/x.* c anything d and more")  # the whole line
    with pytest.raises(AssertionError, match="<path>"):
        expected_line("error: <path>", {})


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in CASES])
def test_bad_input_is_refused_in_one_line_writing_nothing(case: Case, world, monkeypatch):
    args = [a.format(**world) for a in case.args]
    documented = DOC_MESSAGES.get(case.id)
    assert documented is not None, f"{case.id} has no row in {DOC}"
    expected = expected_line(documented, placeholder_values(case, args, world))
    before = snapshot(world["base"])
    undo = apply_patch(case.patch, world, monkeypatch)
    try:
        proc = _run(world, case.script, *args, check=False)
    finally:
        undo()
        monkeypatch.undo()
    after = snapshot(world["base"])

    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and lines[0][len("error: ") :].strip(), proc.stderr
    assert expected.fullmatch(lines[0]), (
        f"the error line differs from {DOC.relative_to(REPO)}"
        f"\ndocumented: {documented}\n   pattern: {expected.pattern}"
        f"\n       got: {lines[0]}"
    )
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    assert not (added or removed or changed), f"added {added}, removed {removed}, changed {changed}"


# --------------------------------------------------------------------------------------------------------------
# "did you mean": a missing experiment among many names the closest few, not every experiment of the root
# --------------------------------------------------------------------------------------------------------------


def test_missing_experiment_suggests_close_names_not_all(tmp_path):
    from fine_tune.errors import UserError
    from fine_tune.experiment import ExperimentDir, closest_experiments
    from fine_tune.teacher import open_teacher

    root = tmp_path / "exp"
    names = [f"{method}_{seed}_bert_qqp" for method in ("lad", "pkd", "alp", "kd", "ft", "probe") for seed in range(5)]
    names[-1] = "lad_soft_bert_qqp"
    for name in names:
        (root / name).mkdir(parents=True)
        (root / name / "config.json").write_text("{}")
    (root / "log").mkdir()  # not an experiment: no config.json
    assert len(names) == 30

    assert closest_experiments(root, "lda_3_bert_qqp")[0] == "lad_3_bert_qqp"
    assert len(closest_experiments(root, "pkd_bert_qqp")) == 5  # many are close: the 5 closest
    assert closest_experiments(root, "xyzzy_bert_qqp") == []
    assert closest_experiments(tmp_path / "none", "lad_3_bert_qqp") == []

    for call, head in (
        (
            lambda: ExperimentDir.of(root, "lda_3", "bert", "qqp").require(),
            f"experiment folder {root}/lda_3_bert_qqp not found (no config.json); ",
        ),
        (
            lambda: open_teacher(root, "lda_3", "bert", "qqp", 4),
            f"--teacher_exp lda_3 --tmodel bert: teacher folder {root}/lda_3_bert_qqp not found; ",
        ),
    ):
        with pytest.raises(UserError) as err:
            call()
        line = str(err.value)
        assert "\n" not in line and line.startswith(head), line
        m = re.fullmatch(
            re.escape(head) + r"did you mean (.+)\? \(30 experiments in " + re.escape(str(root)) + r"\)", line
        )
        assert m, line
        suggested = m.group(1).split(", ")
        assert suggested[0] == "lad_3_bert_qqp" and 1 <= len(suggested) <= 5 and set(suggested) <= set(names), line
        assert sum(name in line for name in names) <= 5, line  # not the whole root

    with pytest.raises(UserError, match=re.escape(f"; {root} holds 30 experiments, none with a similar name") + "$"):
        ExperimentDir.of(root, "xyzzy", "bert", "qqp").require()
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=re.escape(f"; {tmp_path / 'empty'} holds no experiment") + "$"):
        open_teacher(tmp_path / "empty", "lad_3", "bert", "qqp", 4)
