"""Outputs and the file system (issue 29): a command writes only paths it owns (fine_tune/outputs.py), a partial
prediction never takes the official name, a logits data set is replaced only once its new version is whole, a
killed export's temporary folder does not survive the next export, and operating-system failures (the file-size
limit during an export, a read-only experiment folder, weight files cut short) are one line that leaves nothing.

Refusals that fit the catalogue (a refused command writing nothing) are rows of doc/errors.md, "Outputs and the
file system" (tests/test_bad_inputs.py); here are the behaviours around them: what a command does write, and
what a failure in the middle of a write leaves.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import HANG_GUARD, REPO, one_thread
from conftest import run_in_world as run

from fine_tune import synthetic
from fine_tune.tasks import TASKS

COMMON = ["--experiment", "ft", "--model", "bert", "--task", "qqp"]


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_bert):
    """Synthetic QQP, a tiny BERT fine-tuned for 2 steps and evaluated on dev."""
    base = tmp_path_factory.mktemp("outputs")
    w = {"base": base, "data": base / "data", "exp": base / "exp", "tiny": tiny_bert}
    synthetic.write_qqp(w["data"], n_train=32, n_dev=16, n_test=16)
    with one_thread():
        run(
            w,
            "run_fine_tune.py",
            *COMMON,
            "--ptrain_ver",
            str(tiny_bert),
            "--max_seq_len",
            "24",
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
        )
        run(w, "run_fine_tune_eval.py", *COMMON, "--dataset", "dev", "--batch_size", "16")
        w["folder"] = w["exp"] / "ft_bert_qqp"
        yield w


def subprocess_run(w, argv: list[str], file_size_limit: int | None = None) -> subprocess.CompletedProcess:
    """An entry script as a user's shell runs it, optionally under ``ulimit -f``."""

    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    env = dict(
        os.environ, FT_DATA_ROOT=str(w["data"]), FT_EXP_ROOT=str(w["exp"]), TQDM_DISABLE="1", OMP_NUM_THREADS="1"
    )
    return subprocess.run(
        [sys.executable, *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
        preexec_fn=limited if file_size_limit else None,
    )


def tree(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file, '<dir>' of every folder, under ``root``."""
    return {
        str(p.relative_to(root)): "<dir>" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
    }


def one_line(proc) -> str:
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


# -- class 1: outputs replace only files their command wrote --------------------------------------------------


def test_results_table_replaces_its_own_files_and_refuses_others(world):
    w = world
    out = w["base"] / "reports" / "report.md"
    args = ["--task", "qqp", "--out", str(out)]
    run(w, "results_table.py", *args)
    first = tree(out.parent)
    assert {"report.md", "report.csv", "report.json", ".fine_tune-outputs.json"} <= set(first)
    run(w, "results_table.py", *args)  # its own, unchanged: replaced without --overwrite
    assert tree(out.parent) == first
    # a file beside the table that is not its own (edited since): refused before any of the three is written
    (out.parent / "report.json").write_text('{"mine": true}\n')
    (out.parent / "report.md").unlink()
    before = tree(out.parent)
    line = one_line(run(w, "results_table.py", *args, check=False))
    assert line == (
        f"error: --out {out}: {out.parent / 'report.json'} exists and was not written by results_table.py "
        f"(or was changed since); pass --overwrite to replace it"
    )
    assert tree(out.parent) == before and not out.exists()
    # a file the plot would replace is checked only when the plot is asked for
    (out.parent / "report-pareto.png").write_bytes(b"someone's picture")
    run(w, "results_table.py", *args, "--overwrite")
    assert json.loads((out.parent / "report.json").read_text()) != {"mine": True}
    assert (out.parent / "report-pareto.png").read_bytes() == b"someone's picture"
    line = one_line(run(w, "results_table.py", *args, "--plot", check=False))
    assert f"{out.parent / 'report-pareto.png'} exists and was not written by results_table.py" in line


def test_a_partial_prediction_never_takes_the_official_name_and_a_zip_is_replaced_only_if_its_own(world):
    w = world
    from fine_tune.submission import writers

    hand = w["base"] / "hand_exp"  # every other GLUE file, written by hand (zipped as they are)
    for task in {t for t, _ in writers("glue").values()} - {"qqp"}:
        folder = hand / f"hand_bert_{task}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps({"task": task}))
        for name, (t, _) in writers("glue").items():
            if t == task:
                synthetic.write_submission_file(folder / name, TASKS[task], [0], 1)
    run(w, "generate_test_prediction.py", *COMMON)
    official = w["folder"] / "QQP.tsv"
    whole = official.read_bytes()
    run(w, "generate_test_prediction.py", *COMMON, "--max_examples", "5")
    assert official.read_bytes() == whole
    partial = w["folder"] / "QQP.partial-5.tsv"
    assert len(partial.read_text().splitlines()) == 6  # header and 5 rows
    assert json.loads((w["folder"] / "QQP.partial-5.tsv.json").read_text())["complete"] is False
    import shutil

    shutil.copytree(w["folder"], hand / w["folder"].name, dirs_exist_ok=True)
    zip_ = w["base"] / "glue.zip"
    argv = [
        "make_submission.py",
        "--benchmark",
        "glue",
        "--exp_root",
        str(hand),
        "--data_root",
        str(w["data"]),
        "--out",
        str(zip_),
    ]
    run(w, *argv)
    with zipfile.ZipFile(zip_) as z:
        assert z.read("QQP.tsv") == whole and not any("partial" in n for n in z.namelist())
    run(w, *argv)  # its own zip: replaced
    zip_.write_bytes(zip_.read_bytes() + b"\0")  # changed since: not its own any more
    line = one_line(run(w, *argv, check=False))
    assert line == (
        f"error: --out {zip_}: exists and was not written by make_submission.py (or was changed since); "
        f"pass --overwrite to replace it"
    )
    run(w, *argv, "--overwrite")
    assert zipfile.ZipFile(zip_).testzip() is None


# -- class 5: a logits data set is replaced only once the new one is whole --------------------------------------


def test_regenerating_logits_under_the_file_size_limit_leaves_the_old_set_whole(world):
    w = world
    args = [*COMMON, "--dataset", "dev", "--ckpt", "2", "--batch_size", "16"]
    run(w, "run_fine_tune_gen_logits.py", *args)
    folder = w["data"] / "logits" / "ft_bert_qqp" / "dev"
    before = tree(folder)
    assert (folder / "logits.jsonl").stat().st_size > 2000
    proc = subprocess_run(w, [str(REPO / "run_fine_tune_gen_logits.py"), *args], file_size_limit=2000)
    line = one_line(proc)
    assert line == (
        f"error: could not write the logits data set {folder}: the file-size limit (ulimit -f) of 2000 "
        f"bytes; nothing was replaced (the set there, if any, is as it was)"
    )
    assert tree(folder) == before  # meta.json included, byte for byte; no staging folder left
    from fine_tune.tasks.logits import read_logits

    assert read_logits(w["data"], "ft_bert_qqp:dev", "qqp").logits.shape == (16, 2)
    run(w, "run_fine_tune_gen_logits.py", *args)  # and the same command, without the limit, replaces it
    assert not list(folder.glob(".tmp-*")) and read_logits(w["data"], "ft_bert_qqp:dev", "qqp").meta["checkpoint"] == 2


# -- class 4: operating-system failures are one line and leave nothing ------------------------------------------


def test_an_export_under_the_file_size_limit_is_one_line_and_leaves_nothing(world):
    w = world
    out = w["base"] / "limited-export"
    before = tree(w["folder"])
    proc = subprocess_run(w, [str(REPO / "export_model.py"), *COMMON, "--out", str(out)], file_size_limit=60_000)
    line = one_line(proc)  # safetensors' SafetensorError (os error 27), not a traceback
    assert line == (
        f"error: could not write {out}: the file-size limit (ulimit -f) of 60000 bytes; nothing was "
        f"replaced (its previous version and every earlier file are intact)"
    )
    assert not out.exists() and not list(w["base"].glob(".tmp-*")) and tree(w["folder"]) == before


def test_weights_damaged_after_the_check_are_one_line_naming_the_file(tmp_path, tiny_bert):
    """The plan checks weight files whole (doc/errors.md, ptrain_ver_weights_truncated); the one function that loads
    pretrained weights also turns safetensors' own error into one line naming the file, should the file change
    after the check."""
    import shutil

    from fine_tune.errors import UserError
    from fine_tune.models import classifier

    cut = tmp_path / "cut"
    shutil.copytree(tiny_bert, cut)
    config = classifier.load_pretrained_config(str(cut), "bert")
    weights = cut / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(UserError) as e:
        classifier._from_pretrained(str(cut), config, classifier.get_family("bert"), "--ptrain_ver")
    assert str(e.value).startswith(f"--ptrain_ver '{cut}': {weights} is not a readable weights file (")
    # PyTorch weight files: one of the zip format cut short is refused by the check; the legacy format is read at load
    bin_folder = tmp_path / "bin"
    bin_folder.mkdir()
    state = {"w": torch.arange(4096, dtype=torch.float32)}
    torch.save(state, bin_folder / "pytorch_model.bin")
    classifier.check_weight_files(bin_folder, "--teacher_hf 'bin'")
    whole = (bin_folder / "pytorch_model.bin").read_bytes()
    (bin_folder / "pytorch_model.bin").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(UserError, match=r"^--teacher_hf 'bin': .*pytorch_model.bin is not a readable weights file"):
        classifier.check_weight_files(bin_folder, "--teacher_hf 'bin'")
    torch.save(state, bin_folder / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    classifier.check_weight_files(bin_folder, "--teacher_hf 'bin'")


def test_a_read_only_experiment_folder_is_one_line_for_every_command_that_writes_there(world, tmp_path):
    """Really read-only (a read-only bind mount as root, chmod otherwise: tests/test_read_only_data_root.py)."""
    import shutil

    from test_read_only_data_root import read_only

    w = dict(world, exp=tmp_path / "exp")
    shutil.copytree(world["folder"], w["exp"] / "ft_bert_qqp")
    folder = w["exp"] / "ft_bert_qqp"
    before = tree(w["exp"])
    commands = {
        "run_fine_tune.py": [
            *COMMON,
            "--ptrain_ver",
            str(w["tiny"]),
            "--max_seq_len",
            "24",
            "--total_step",
            "4",
            "--warmup_step",
            "0",
            "--ckpt_step",
            "2",
            "--batch_size",
            "8",
            "--lr",
            "1e-3",
            "--overwrite",
        ],
        "generate_test_prediction.py": COMMON,
    }
    expected = {
        "run_fine_tune.py": f"error: --exp_root {w['exp']}: folder {folder} is not writable",
        "generate_test_prediction.py": f"error: {folder / 'QQP.tsv'}: its folder {folder} is not writable",
    }
    with read_only(folder) as wrap:
        for script, args in commands.items():
            argv = wrap([sys.executable, str(REPO / script), *args])
            env = dict(os.environ, FT_DATA_ROOT=str(w["data"]), FT_EXP_ROOT=str(w["exp"]), TQDM_DISABLE="1")
            proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=HANG_GUARD)
            assert one_line(proc) == expected[script], script
    assert tree(w["exp"]) == before


# -- hygiene: a killed export's temporary folder ------------------------------------------------------------------


def test_a_killed_exports_temporary_folder_does_not_survive_the_next_export(world):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from fine_tune import io_utils

    w = world
    out = w["folder"] / "onnx-model-2"
    argv = [
        str(REPO / "tests" / "killpoint.py"),
        "before:onnx-model-2",
        str(REPO / "export_model.py"),
        *COMMON,
        "--format",
        "onnx",
        "--max_examples",
        "8",
    ]
    proc = subprocess_run(w, argv)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    stale = list(w["folder"].glob(".tmp-onnx-model-2.*"))
    assert len(stale) == 1 and (stale[0] / "model.onnx").is_file() and not out.exists()
    # a live writer's temporary folder (this process) and another machine's are left alone
    live = w["folder"] / f".tmp-onnx-model-2.{io_utils._writer_tag()}.live"
    elsewhere = w["folder"] / ".tmp-onnx-model-2.00000000-1.elsewhere"
    live.mkdir()
    elsewhere.mkdir()
    run(w, "export_model.py", *COMMON, "--format", "onnx", "--max_examples", "8")
    assert not stale[0].exists() and live.is_dir() and elsewhere.is_dir()
    live.rmdir()
    elsewhere.rmdir()
    record = json.loads((out / "export.json").read_text())
    assert record["checkpoint"] == "model-2.pt" and record["onnx"]["rows"] == 8
    assert sorted(p.name for p in w["folder"].glob(".tmp-*")) == []
    import onnxruntime

    onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])


def test_a_kill_between_the_two_renames_of_a_replacement_puts_the_previous_version_back(world):
    """A replacement moves the old folder aside, then the new one in: a kill in between leaves neither in place; the
    next writer of that path restores the old one before it starts."""
    from fine_tune import io_utils

    w = world
    out = w["folder"] / "hf-model-2"
    run(w, "export_model.py", *COMMON)
    old = tree(out)
    argv = [
        str(REPO / "tests" / "killpoint.py"),
        "after:hf-model-2",
        str(REPO / "export_model.py"),
        *COMMON,
        "--overwrite",
    ]
    proc = subprocess_run(w, argv)  # killed right after the old export was moved aside
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not out.exists()
    io_utils.remove_dead_writers_temporaries(out)
    assert tree(out) == old and not list(w["folder"].glob(".tmp-hf-model-2.*"))


# -- issue 29, second round: kills, foreign records, long names ------------------------------------------------


def test_a_killed_results_table_neither_blocks_its_rerun_nor_leaves_temporaries(world):
    """results_table.py replaces its three files as one (fine_tune/outputs.py, write_outputs): killed after the table
    and its CSV were replaced and in the middle of the JSON, its re-run takes them back without --overwrite, and
    removes the killed writer's temporary; a live writer's (this process's) and another machine's stay."""
    from fine_tune import io_utils
    from fine_tune.outputs import OWNERS_FILE

    w = world
    out = w["base"] / "killed" / "k.md"
    args = ["--task", "qqp", "--out", str(out)]
    run(w, "results_table.py", *args)
    first = out.read_text()
    argv = [str(REPO / "tests" / "killpoint.py"), "before:k.json", str(REPO / "results_table.py"), *args, "--commands"]
    proc = subprocess_run(w, argv)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert out.read_text().startswith(first) and out.read_text() != first  # the new table (--commands)
    stale = list(out.parent.glob(".tmp-k.json.*"))
    assert len(stale) == 1 and stale[0].is_file()
    live = out.parent / f".tmp-k.json.{io_utils._writer_tag()}.live"
    elsewhere = out.parent / ".tmp-k.json.00000000-1.elsewhere"
    live.write_text("a live writer's")
    elsewhere.write_text("another machine's")
    run(w, "results_table.py", *args)  # no --overwrite: every file is in a version its record accepts
    assert out.read_text() == first and not stale[0].exists() and live.is_file() and elsewhere.is_file()
    live.unlink()
    elsewhere.unlink()
    record = json.loads((out.parent / OWNERS_FILE).read_text())["files"]
    assert {name: entry for name, entry in record.items()} == {
        p.name: {"by": "results_table.py", "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
        for p in (out, out.with_suffix(".csv"), out.with_suffix(".json"))
    }
    assert sorted(p.name for p in out.parent.glob(".tmp-*")) == []


def test_a_record_that_is_not_the_toolkits_is_replaced_only_with_overwrite(world):
    """The refusal is doc/errors.md's results_out_record_not_the_toolkits; --overwrite writes a record in its place."""
    from fine_tune.outputs import OWNERS_FILE

    w = world
    out = w["base"] / "foreign" / "t.md"
    out.parent.mkdir()
    (out.parent / OWNERS_FILE).write_text('{"files": ["not", "a", "record"]}\n')
    line = one_line(run(w, "results_table.py", "--task", "qqp", "--out", str(out), check=False))
    assert line.startswith(f"error: --out {out}: {out.parent / OWNERS_FILE} exists and is not the toolkit's record")
    assert not out.exists()
    run(w, "results_table.py", "--task", "qqp", "--out", str(out), "--overwrite")
    assert set(json.loads((out.parent / OWNERS_FILE).read_text())["files"]) == {"t.md", "t.csv", "t.json"}
    run(w, "results_table.py", "--task", "qqp", "--out", str(out))  # its own record now: no --overwrite needed
    # an output named as the record (the table's JSON beside .fine_tune-outputs.md replaced the record, and with it
    # every other command's entries) is refused, --overwrite or not
    record = (out.parent / OWNERS_FILE).read_bytes()
    clash = out.parent / ".fine_tune-outputs.md"
    for extra in ([], ["--overwrite"]):
        line = one_line(run(w, "results_table.py", "--task", "qqp", "--out", str(clash), *extra, check=False))
        assert line == (
            f"error: --out {clash}: {out.parent / OWNERS_FILE} is the name of the record of the files "
            f"written in its folder; name another file"
        )
    assert (out.parent / OWNERS_FILE).read_bytes() == record and not clash.exists()


def test_any_legal_output_name_is_written(world):
    """A 248-byte table name (its CSV and JSON beside it: 249 and 250 bytes) and a 250-byte export folder name are
    written: the temporaries' names shorten a long name (unique still) to stay within 255 bytes."""
    from fine_tune import io_utils

    w = world
    out = w["base"] / "long" / ("l" * 245 + ".md")
    run(w, "results_table.py", "--task", "qqp", "--out", str(out))
    assert {p.name for p in out.parent.iterdir()} == {
        out.name,
        "l" * 245 + ".csv",
        "l" * 245 + ".json",
        ".fine_tune-outputs.json",
    }
    export = w["base"] / ("b" * 250)
    run(w, "export_model.py", *COMMON, "--out", str(export))
    assert json.loads((export / "export.json").read_text())["checkpoint"] == "model-2.pt"
    assert not list(w["base"].glob(".tmp-*"))
    a, b = w["base"] / ("n" * 254 + "a"), w["base"] / ("n" * 254 + "b")
    assert io_utils.tmp_prefix(a) != io_utils.tmp_prefix(b)
    assert len((io_utils.tmp_prefix(a) + "12345678.old").encode()) <= 255


def test_a_logits_write_killed_during_its_swap_is_named_incomplete_and_the_rerun_completes(world):
    from fine_tune.errors import UserError
    from fine_tune.tasks.logits import read_logits

    w = world
    args = [*COMMON, "--dataset", "train", "--ckpt", "2", "--batch_size", "16"]
    run(w, "run_fine_tune_gen_logits.py", *args)
    folder = w["data"] / "logits" / "ft_bert_qqp" / "train"
    argv = [
        str(REPO / "tests" / "killpoint.py"),
        "after:old-meta.json",
        str(REPO / "run_fine_tune_gen_logits.py"),
        *args,
        "--overwrite",
    ]
    proc = subprocess_run(w, argv)  # killed right after the old meta.json was moved into the stage folder
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not (folder / "meta.json").exists() and len(list(folder.glob(".tmp-new.*"))) == 1
    with pytest.raises(UserError) as e:
        read_logits(w["data"], "ft_bert_qqp", "qqp")
    assert str(e.value) == (
        f"--dataset 'ft_bert_qqp': logits data set {folder} is incomplete: a write of it was "
        f"killed; run run_fine_tune_gen_logits.py again"
    )
    run(w, "run_fine_tune_gen_logits.py", *args)  # the same command, without --overwrite, completes it
    assert read_logits(w["data"], "ft_bert_qqp", "qqp").logits.shape == (32, 2) and not list(folder.glob(".tmp-*"))


def test_a_prediction_killed_between_its_file_and_its_record_does_not_block_its_rerun(world):
    """generate_test_prediction.py writes its file and the file's record as one replacement (write_outputs)."""
    from fine_tune.submission import record_path

    w = world
    out = w["folder"] / "QQP-dev.tsv"
    argv = [
        str(REPO / "tests" / "killpoint.py"),
        "after:QQP-dev.tsv",
        str(REPO / "generate_test_prediction.py"),
        *COMMON,
        "--dataset",
        "dev",
    ]
    proc = subprocess_run(w, argv)  # killed right after the file, before its record
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert out.is_file() and not record_path(out).exists()
    run(w, "generate_test_prediction.py", *COMMON, "--dataset", "dev")  # no --overwrite
    record = json.loads(record_path(out).read_text())
    assert record["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest() and record["num_rows"] == 16
    assert not list(w["folder"].glob(".tmp-QQP-dev*"))
