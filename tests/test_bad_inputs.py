"""The catalogue of bad inputs (doc/errors.md): every one is refused with exit status 2 and exactly one line
``error: ...`` on stderr naming the flag, file or folder at fault, with no traceback, and nothing is written:
every file (and folder) under the experiment root and the data root is byte-for-byte what it was.

One module-scoped world holds a finished tiny teacher (12-layer tiny BERT, QQP, 4 steps), its train logits, a
finished logits-KD student, an evaluation and a submission file (so the tokenisation cache holds every split a
refused command could read), two damaged copies of the teacher (a truncated checkpoint, a checkpoint of another
shape) and small data roots with broken files. Each case runs one entry script in this process (no
interpreter start-up) and compares sha256 snapshots of the whole world taken before and after.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import torch

from conftest import run_in_process
from fine_tune import synthetic

SEQ = "24"
TEACHER_RUN = ["--experiment", "teacher", "--model", "bert", "--ptrain_ver", "{tiny}", "--task", "qqp",
               "--total_step", "4", "--warmup_step", "1", "--ckpt_step", "2", "--log_step", "2", "--batch_size", "8",
               "--lr", "1e-3", "--max_seq_len", SEQ]
# a new fine-tuning run (BoolQ); cases append flags (argparse keeps the last value of a repeated flag)
FT = ["--experiment", "new", "--model", "bert", "--ptrain_ver", "{tiny}", "--task", "boolq", "--total_step", "2",
      "--warmup_step", "0", "--ckpt_step", "2", "--batch_size", "8", "--lr", "1e-3", "--max_seq_len", SEQ]
# a new logits-KD student of the teacher's train logits
KD = ["--experiment", "kd", "--model", "bert", "--task", "qqp", "--dataset", "teacher_bert_qqp", "--d_model", "16",
      "--d_ff", "32", "--num_attention_heads", "2", "--num_hidden_layers", "1", "--total_step", "2", "--warmup_step",
      "0", "--ckpt_step", "2", "--log_step", "1", "--batch_size", "8", "--lr", "1e-3", "--max_seq_len", SEQ]
# a new layer-wise student of the teacher (its widths: hidden 32, feed-forward 64, 2 heads; 12 layers)
LW = ["--teacher_exp", "teacher", "--tmodel", "bert", "--tckpt", "4", "--experiment", "lw", "--task", "qqp",
      "--d_model", "32", "--d_ff", "64", "--num_attention_heads", "2", "--num_hidden_layers", "6", "--total_step", "2",
      "--warmup_step", "0", "--batch_size", "8", "--map_examples", "0"]
PROBE = ["--probing_exp", "partial_lad", *LW]
# reading an existing experiment
EXP = ["--model", "bert", "--task", "qqp", "--batch_size", "16"]
EV = ["--experiment", "teacher", *EXP, "--dataset", "dev"]


@dataclass(frozen=True)
class Case:
    id: str
    script: str
    args: list[str]
    message: str  # a distinctive part of the one error line ({base}, {exp}, {data}, {tiny} are filled in)
    patch: str | None = None  # no_hub | hub_offline | fake_cuda | readonly:<folder under the world>
    marks: list = field(default_factory=list)


CASES = [
    # ---- data files ------------------------------------------------------------------------------------------
    Case("missing_data_file", "run_fine_tune.py", [*FT, "--data_root", "{base}/nodata"],
         "data file {base}/nodata/BoolQ/train.jsonl not found; run `python download_data.py --task boolq`"),
    Case("missing_data_file_eval", "run_fine_tune_eval.py", [*EV, "--data_root", "{base}/nodata"],
         "data file {base}/nodata/QQP/dev.tsv not found"),
    Case("empty_data_file", "run_fine_tune.py", [*FT, "--data_root", "{base}/emptydata"],
         "data file {base}/emptydata/BoolQ/train.jsonl holds no examples"),
    Case("malformed_boolq_json", "run_fine_tune.py", [*FT, "--data_root", "{base}/badjson"],
         "{base}/badjson/BoolQ/train.jsonl, line 3: not valid JSON"),
    Case("boolq_unknown_label", "run_fine_tune.py", [*FT, "--data_root", "{base}/badlabel"],
         "{base}/badlabel/BoolQ/train.jsonl, line 2: unknown label 'maybe' (expected true/false)"),
    Case("qqp_wrong_columns", "run_fine_tune.py", [*FT, "--task", "qqp", "--data_root", "{base}/badtsv"],
         "{base}/badtsv/QQP/train.tsv, line 3: 4 tab-separated columns, expected 6"),
    Case("qqp_wrong_header", "run_fine_tune.py", [*FT, "--task", "qqp", "--data_root", "{base}/badheader"],
         "{base}/badheader/QQP/train.tsv, line 1: header"),
    # ---- names: task, model family, split, method modes ----------------------------------------------------
    Case("unknown_task", "run_fine_tune.py", [*FT, "--task", "mnli"], "argument --task: invalid choice: 'mnli'"),
    Case("unknown_model_family", "run_fine_tune.py", [*FT, "--model", "gpt2"],
         "argument --model: invalid choice: 'gpt2'"),
    Case("unknown_split", "run_fine_tune.py", [*FT, "--dataset", "validation"],
         "--dataset 'validation' is not a boolq split; valid splits: train, val, test"),
    Case("unknown_split_eval", "run_fine_tune_eval.py", [*EV, "--dataset", "val"],
         "--dataset 'val' is not a qqp split; valid splits: train, dev, test"),
    Case("unknown_probing_mode", "run_probing_lad.py", [*PROBE, "--probing_exp", "full_lad"],
         "argument --probing_exp: invalid choice: 'full_lad'"),
    Case("unknown_alp_mode", "run_alp_distil.py", [*LW, "--alp_exp", "alp-kd-v3"],
         "argument --alp_exp: invalid choice: 'alp-kd-v3'"),
    Case("non_integer_flag", "run_fine_tune.py", [*FT, "--total_step", "ten"],
         "argument --total_step: invalid int value: 'ten'"),
    # ---- teacher, experiments, checkpoints -----------------------------------------------------------------
    Case("missing_teacher_experiment", "run_lad_distil.py", [*LW, "--teacher_exp", "nope"],
         "--teacher_exp nope --tmodel bert: teacher folder {exp}/nope_bert_qqp not found; experiments there: "),
    Case("missing_teacher_checkpoint", "run_lad_distil.py", [*LW, "--tckpt", "3"],
         "--tckpt 3: teacher checkpoint {exp}/teacher_bert_qqp/model-3.pt not found; checkpoints there: 2, 4"),
    Case("corrupted_teacher_checkpoint", "run_pkd_distill.py", [*LW, "--teacher_exp", "corrupt"],
         "{exp}/corrupt_bert_qqp/model-4.pt: not a readable checkpoint"),
    Case("missing_experiment_eval", "run_fine_tune_eval.py", [*EV, "--experiment", "nope"],
         "experiment folder {exp}/nope_bert_qqp not found (no config.json); experiments there: "),
    Case("missing_checkpoint_eval", "run_fine_tune_eval.py", [*EV, "--ckpt", "99"],
         "no checkpoint at or after --ckpt 99 in {exp}/teacher_bert_qqp; checkpoints there: 2, 4"),
    Case("missing_checkpoint_predict", "generate_test_prediction.py",
         ["--experiment", "teacher", *EXP, "--dataset", "test", "--ckpt", "3"],
         "model-3.pt not found in {exp}/teacher_bert_qqp; checkpoints there: 2, 4"),
    Case("corrupted_checkpoint_eval", "run_fine_tune_eval.py", [*EV, "--experiment", "corrupt", "--ckpt", "4"],
         "{exp}/corrupt_bert_qqp/model-4.pt: not a readable checkpoint"),
    Case("corrupted_checkpoint_predict", "generate_test_prediction.py",
         ["--experiment", "corrupt", *EXP, "--dataset", "test", "--ckpt", "4"],
         "{exp}/corrupt_bert_qqp/model-4.pt: not a readable checkpoint"),
    Case("checkpoint_of_other_shape_eval", "run_fine_tune_eval.py", [*EV, "--experiment", "shape", "--ckpt", "4"],
         "{exp}/shape_bert_qqp/model-4.pt does not fit the experiment's model (shape"),
    Case("checkpoint_of_other_shape_logits", "run_fine_tune_gen_logits.py",
         ["--experiment", "shape", *EXP, "--dataset", "dev", "--ckpt", "4"],
         "{exp}/shape_bert_qqp/model-4.pt does not fit the experiment's model (shape"),
    Case("existing_experiment_other_config", "run_fine_tune.py", [*TEACHER_RUN, "--seed", "7", "--lr", "5e-4"],
         "{exp}/teacher_bert_qqp holds a run with a different config: lr (0.001 -> 0.0005), seed (42 -> 7); "
         "use another --experiment or pass --overwrite"),
    Case("existing_student_other_config", "run_fine_tune_distill.py",
         [*KD, "--experiment", "student", "--soft_weight", "0.5"],
         "{exp}/student_bert_qqp holds a run with a different config: soft_weight (1.0 -> 0.5)"),
    Case("missing_logits_dataset", "run_fine_tune_distill.py", [*KD, "--dataset", "nope_bert_qqp"],
         "--dataset 'nope_bert_qqp': logits data set {data}/logits/nope_bert_qqp/train not found (make it with "
         "run_fine_tune_gen_logits.py); logits data sets there: teacher_bert_qqp:train"),
    Case("missing_logits_split", "run_fine_tune_distill.py", [*KD, "--dataset", "teacher_bert_qqp:dev"],
         "logits data set {data}/logits/teacher_bert_qqp/dev not found"),
    # ---- numbers ------------------------------------------------------------------------------------------
    Case("batch_not_divisible_by_accum", "run_fine_tune.py", [*FT, "--batch_size", "10", "--accum_step", "4"],
         "--batch_size 10 is not divisible by --accum_step 4"),
    Case("d_model_not_divisible_by_heads", "run_fine_tune_distill.py",
         [*KD, "--d_model", "30", "--num_attention_heads", "4"], "--d_model 30 is not divisible by --num_attention_heads 4"),
    Case("max_seq_len_beyond_positions", "run_fine_tune.py", [*FT, "--max_seq_len", "512"],
         "--max_seq_len 512 exceeds the 128 positions of --ptrain_ver '{tiny}'"),
    Case("max_seq_len_beyond_teacher_positions", "run_pkd_distill.py", [*LW, "--max_seq_len", "512"],
         "--max_seq_len 512 exceeds the 128 positions of the teacher teacher_bert_qqp"),
    Case("zero_total_step", "run_fine_tune.py", [*FT, "--total_step", "0"], "--total_step must be positive, got 0"),
    Case("negative_total_step", "run_lad_distil.py", [*LW, "--total_step", "-5"],
         "--total_step must be positive, got -5"),
    Case("negative_warmup_step", "run_fine_tune.py", [*FT, "--warmup_step", "-1"],
         "--warmup_step must be >= 0, got -1"),
    Case("warmup_beyond_total_step", "run_fine_tune_distill.py", [*KD, "--warmup_step", "5"],
         "--warmup_step 5 exceeds --total_step 2"),
    # ---- layer-wise methods -------------------------------------------------------------------------------
    Case("gate_index_out_of_range", "run_probing_lad.py", [*PROBE, "--gate_indices", "2,4,14"],
         "--gate_indices 2,4,14: 14 is out of range; the teacher has 12 layers"),
    Case("gate_index_zero", "run_probing_lad.py", [*PROBE, "--gate_indices", "0,2"],
         "--gate_indices 0,2: 0 is out of range; the teacher has 12 layers"),
    Case("student_width_differs_from_teacher", "run_lad_distil.py", [*LW, "--d_model", "64"],
         "--d_model 64 differs from the teacher's hidden size 32"),
    Case("student_layers_not_dividing_teacher", "run_alp_distil.py", [*LW, "--num_hidden_layers", "5"],
         "--num_hidden_layers 5: the teacher's 12 layers are not a multiple of the student's"),
    Case("student_ff_differs_for_layer_copy", "run_pkd_distill.py", [*LW, "--d_ff", "48"],
         "cannot copy teacher layers: student --d_ff 48 differs from the teacher's feed-forward size 64"),
    Case("init_layers_beyond_teacher", "run_fine_tune_distill.py",
         [*KD, "--d_model", "32", "--d_ff", "64", "--init_start", "1", "--init_end", "14"],
         "--init_start 1 --init_end 14: teacher layers must lie in 1..12"),
    # ---- the pretrained model -----------------------------------------------------------------------------
    Case("missing_ptrain_ver_absolute", "run_fine_tune.py", [*FT, "--ptrain_ver", "/nonexistent/model"],
         "--ptrain_ver '/nonexistent/model': pretrained model folder not found", patch="no_hub"),
    Case("missing_ptrain_ver_relative", "run_fine_tune.py", [*FT, "--ptrain_ver", "./no/such/model"],
         "--ptrain_ver './no/such/model': pretrained model folder not found", patch="no_hub"),
    Case("missing_ptrain_ver_hub_name", "run_fine_tune.py", [*FT, "--ptrain_ver", "nosuch/model"],
         "--ptrain_ver 'nosuch/model': no local folder of that name, and the hub lookup failed", patch="hub_offline"),
    Case("ptrain_ver_is_a_file", "run_fine_tune.py", [*FT, "--ptrain_ver", "{base}/afile"],
         "--ptrain_ver '{base}/afile': is a file, not a model folder", patch="no_hub"),
    Case("ptrain_ver_not_a_model", "run_fine_tune.py", [*FT, "--ptrain_ver", "{base}/nodata"],
         "--ptrain_ver '{base}/nodata': no config.json in the folder"),
    Case("ptrain_ver_without_weights", "run_fine_tune.py", [*FT, "--ptrain_ver", "{base}/noweights"],
         "--ptrain_ver '{base}/noweights': no weights in the folder"),
    Case("ptrain_ver_without_tokenizer", "run_fine_tune.py", [*FT, "--ptrain_ver", "{base}/notokenizer"],
         "--ptrain_ver '{base}/notokenizer': no tokenizer file in the folder (tokenizer.json, vocab.txt, spiece.model)"),
    Case("ptrain_ver_of_other_family", "run_fine_tune.py", [*FT, "--model", "albert"],
         "--ptrain_ver '{tiny}' is a 'bert' model but --model is 'albert'"),
    # ---- devices ------------------------------------------------------------------------------------------
    Case("missing_cuda_device", "run_fine_tune.py", [*FT, "--device_id", "3"],
         "--device_id 3: this machine has 1 CUDA device(s) (indices 0..0)", patch="fake_cuda"),
    Case("missing_teacher_cuda_device", "run_pkd_distill.py", [*LW, "--device_id", "0", "--tdevice_id", "3"],
         "--tdevice_id 3: this machine has 1 CUDA device(s) (indices 0..0)", patch="fake_cuda"),
    # ---- roots --------------------------------------------------------------------------------------------
    Case("unwritable_exp_root", "run_fine_tune.py", [*FT, "--exp_root", "{base}/ro_exp"],
         "--exp_root {base}/ro_exp: folder is not writable", patch="readonly:ro_exp"),
    Case("exp_root_under_a_file", "run_fine_tune.py", [*FT, "--exp_root", "{base}/afile/exp"],
         "--exp_root {base}/afile/exp: {base}/afile is a file, not a folder"),
    Case("unwritable_data_root", "run_fine_tune_gen_logits.py",
         [*EV, "--ckpt", "4", "--data_root", "{base}/ro_data"],
         "--data_root {base}/ro_data: folder is not writable", patch="readonly:ro_data"),
    Case("data_root_under_a_file_logits", "run_fine_tune_gen_logits.py",
         [*EV, "--ckpt", "4", "--data_root", "{base}/qqp_in_file"],
         "--data_root {base}/qqp_in_file: {base}/qqp_in_file/logits is a file, not a folder"),
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

    # data roots: one without data files, one with an empty file, four with malformed files
    (base / "nodata").mkdir()
    boolq_lines = (data / "BoolQ" / "train.jsonl").read_text().splitlines(keepends=True)
    qqp_lines = (data / "QQP" / "train.tsv").read_text().splitlines(keepends=True)
    broken = {
        "emptydata/BoolQ/train.jsonl": "",
        "badjson/BoolQ/train.jsonl": "".join(boolq_lines[:2]) + '{"question": "is it", "passage": \n',
        "badlabel/BoolQ/train.jsonl": boolq_lines[0] + boolq_lines[1].replace('"label": true', '"label": "maybe"')
        .replace('"label": false', '"label": "maybe"'),
        "badtsv/QQP/train.tsv": "".join(qqp_lines[:2]) + "7\t1\t2\tonly one question\n",
        "badheader/QQP/train.tsv": "id\tquestion1\tquestion2\n" + "".join(qqp_lines[1:3]),
    }
    for rel, text in broken.items():
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        (base / rel).write_text(text)
    assert '"maybe"' in (base / "badlabel/BoolQ/train.jsonl").read_text()

    # pretrained folders lacking weights / tokenizer
    for name, keep in (("noweights", ("config.json", "tokenizer.json", "tokenizer_config.json")),
                       ("notokenizer", ("config.json", "model.safetensors"))):
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
    return w


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
                raise OSError("We couldn't connect to 'https://huggingface.co' to load the files, and couldn't find "
                              "them in the cached files.\nCheck your internet connection.")

        monkeypatch.setattr(classifier, "AutoConfig", Offline)
        return lambda: None
    if patch == "fake_cuda":  # a machine with one CUDA device (the test machine may have none)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
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


def test_doc_lists_every_case():
    import re

    from conftest import REPO

    doc = (REPO / "doc" / "errors.md").read_text(encoding="utf-8")
    assert set(re.findall(r"\| `([a-z0-9_]+)` \|\s*$", doc, flags=re.M)) == {c.id for c in CASES}


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in CASES])
def test_bad_input_is_refused_in_one_line_writing_nothing(case: Case, world, monkeypatch):
    args = [a.format(**world) for a in case.args]
    message = case.message.format(**world)
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
    assert len(lines) == 1 and lines[0].startswith("error: ") and lines[0][len("error: "):].strip(), proc.stderr
    assert message in lines[0], f"\nexpected: {message}\n     got: {lines[0]}"
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    assert not (added or removed or changed), f"added {added}, removed {removed}, changed {changed}"
