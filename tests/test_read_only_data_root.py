"""Training, evaluation and prediction on a READ-ONLY data root (a data folder users share but cannot write).

The data root holds the data files, the tokenisation cache (``cache/``) and logits data sets (``logits/``); the
experiment root is separate and writable. On a read-only data root the toolkit must still train, evaluate and
predict (it only skips writing the tokenisation cache), compute exactly what it computes on a writable one, and
leave the data root byte-for-byte unchanged.

The data root is made really read-only for the processes under test, not by patching ``os.access``: as root
(CI), whom file permission bits do not stop, every entry script runs in its own private mount namespace
(``unshare -m``, propagation private: nothing reaches the host's mount table and the mount ends with the process)
in which the data root is bind-mounted read-only; as another user, the data root is ``chmod -R a-w`` for the
duration (permissions restored afterwards). Either way a wrapper first checks, in the same namespace and as the
same user, that creating a file in the data root fails, so the tests cannot pass vacuously.

Two data roots with the same synthetic QQP files:

- ``ro``: a cold root (no cache): fine-tuning, dev evaluation, test prediction and BERT-PKD from the fine-tuned
  teacher run on it read-only;
- ``rw``: the control. The same commands run on it writable (in this process), which writes the tokenisation
  cache and a logits data set there; then it too is made read-only, as a shared root with a ready cache and
  ``logits/``, and a logits-KD student is distilled from it (reading the cache and the logits data set).

Each read-only run must match its writable twin: identical checkpoints, evaluation table, submission file.
(Logits generation, which must write into the data root, refuses a read-only one: tests/test_bad_inputs.py.)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from conftest import HANG_GUARD, REPO, run_in_process

from fine_tune import synthetic
from fine_tune.models.classifier import weight_file_hashes

SEQ = "24"
CPU = ["--device_id", "-1"]
EXP = ["--model", "bert", "--task", "qqp"]


def fine_tune_args(tiny: Path) -> list[str]:
    return [
        "--experiment",
        "teacher",
        *EXP,
        "--ptrain_ver",
        str(tiny),
        "--dataset",
        "train",
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
        "--seed",
        "42",
        *CPU,
    ]


EVAL = ["--experiment", "teacher", *EXP, "--dataset", "dev", "--batch_size", "8", *CPU]
PREDICT = ["--experiment", "teacher", *EXP, "--dataset", "test", "--batch_size", "8", "--ckpt", "4", *CPU]
# BERT-PKD from the fine-tuned teacher (2 layers, hidden 32, feed-forward 64, 2 heads): online, layer-wise
PKD = [
    "--teacher_exp",
    "teacher",
    "--tmodel",
    "bert",
    "--tckpt",
    "4",
    "--experiment",
    "pkd",
    "--task",
    "qqp",
    "--d_model",
    "32",
    "--d_ff",
    "64",
    "--num_attention_heads",
    "2",
    "--num_hidden_layers",
    "1",
    "--total_step",
    "2",
    "--warmup_step",
    "1",
    "--ckpt_step",
    "2",
    "--log_step",
    "1",
    "--batch_size",
    "8",
    "--lr",
    "1e-3",
    *CPU,
]
GEN_LOGITS = ["--experiment", "teacher", *EXP, "--dataset", "train", "--batch_size", "8", "--ckpt", "4", *CPU]


def distill_args(name: str) -> list[str]:
    """A logits-KD student of the teacher's train logits (data root ``logits/teacher_bert_qqp/train``)."""
    return [
        "--experiment",
        name,
        *EXP,
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
        "--seed",
        "42",
        *CPU,
    ]


# --------------------------------------------------------------------------------------------------------------
# A really read-only data root
# --------------------------------------------------------------------------------------------------------------

# Refuses to run the command unless creating a file in the data root ($1) fails right here.
_PROBE = (
    'if touch "$D/.read-only-probe" 2>/dev/null; then rm -f "$D/.read-only-probe"; '
    'echo "read-only wrapper: $D is writable" >&2; exit 97; fi; exec "$@"'
)
# Inside a private mount namespace: bind the data root onto itself, remount the bind read-only, probe, exec.
_MOUNT = (
    'mount --bind "$D" "$D" && mount -o remount,ro,bind "$D" "$D" '
    '|| { echo "read-only wrapper: cannot mount $D read-only" >&2; exit 98; }; '
)
_NO_MOUNT = 98


def mounts_at(path: Path) -> list[str]:
    """Lines of this process's mount table whose mount point is ``path``."""
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        return [line for line in f if line.split()[4] == str(path)]


@contextlib.contextmanager
def read_only(root: Path) -> Iterator[Callable[[list[str]], list[str]]]:
    """Make ``root`` read-only for commands run through the yielded ``wrap(argv) -> argv``.

    As root: each wrapped command runs in a private mount namespace of its own with a read-only bind mount of
    ``root``; the mount lives and dies with that process. Otherwise: ``chmod -R a-w root`` until the block ends.
    """
    root = Path(root).resolve()
    if os.geteuid() == 0:
        if shutil.which("unshare") is None or shutil.which("mount") is None:
            pytest.skip("running as root without unshare/mount: cannot make the data root read-only")

        def wrap(argv: list[str]) -> list[str]:
            return [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                'D=$1; shift; ' + _MOUNT + _PROBE,
                "read-only-wrapper",
                str(root),
                *argv,
            ]

        check = subprocess.run(wrap(["true"]), capture_output=True, text=True, timeout=HANG_GUARD)
        if check.returncode == _NO_MOUNT or (check.returncode != 0 and "unshare" in check.stderr):
            pytest.skip(f"running as root without mount namespaces here: {check.stderr.strip()}")
        assert check.returncode == 0, check.stderr
        try:
            yield wrap
        finally:
            assert not mounts_at(root), f"a mount at {root} leaked into the host's mount table"
    else:

        def wrap(argv: list[str]) -> list[str]:
            return ["sh", "-c", 'D=$1; shift; ' + _PROBE, "read-only-wrapper", str(root), *argv]

        modes = {p: stat.S_IMODE(p.lstat().st_mode) for p in (root, *root.rglob("*"))}
        try:
            for p, mode in modes.items():
                os.chmod(p, mode & ~0o222)
            yield wrap
        finally:
            for p, mode in modes.items():
                os.chmod(p, mode)


def tree(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file, '<dir>' of every folder, under ``root``."""
    out = {}
    for p in sorted(root.rglob("*")):
        out[str(p.relative_to(root))] = "<dir>" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


# --------------------------------------------------------------------------------------------------------------
# Running the entry scripts
# --------------------------------------------------------------------------------------------------------------


class Runs:
    """Entry scripts started as subprocesses (read-only data root) and waited for; output goes to files, so
    several may run at once without filling a pipe. Every process still running at the end is killed."""

    def __init__(self, logs: Path):
        self.logs = logs
        logs.mkdir()
        self.procs: list[subprocess.Popen] = []

    def start(self, wrap, name: str, script: str, *args: str, data_root: Path, exp_root: Path) -> tuple:
        env = dict(
            os.environ,
            FT_DATA_ROOT=str(data_root),
            FT_EXP_ROOT=str(exp_root),
            TQDM_DISABLE="1",
            PYTHONUNBUFFERED="1",
            OMP_NUM_THREADS="1",
        )
        argv = [sys.executable, str(REPO / script), *args]
        with open(self.logs / f"{name}.out", "w") as out, open(self.logs / f"{name}.err", "w") as err:
            proc = subprocess.Popen(wrap(argv), stdout=out, stderr=err, env=env, cwd=str(self.logs))
        self.procs.append(proc)
        return name, script, proc

    def wait(self, started: tuple, expect: int = 0, timeout: int = HANG_GUARD) -> subprocess.CompletedProcess:
        name, script, proc = started
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
        done = subprocess.CompletedProcess(
            [script], proc.returncode, (self.logs / f"{name}.out").read_text(), (self.logs / f"{name}.err").read_text()
        )
        assert done.returncode == expect, (
            f"{name}: {script} exited {done.returncode} (expected {expect}):\n{done.stdout}\n{done.stderr}"
        )
        return done

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def control(script: str, *args: str, data_root: Path, exp_root: Path) -> subprocess.CompletedProcess:
    """The same command on a writable data root, in this process, computing as the subprocesses do (one thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_in_process(script, *args, data_root=data_root, exp_root=exp_root)
    finally:
        torch.set_num_threads(threads)


def table_lines(stdout: str) -> list[str]:
    """The evaluation table an eval run prints: 'ckpt<TAB>accuracy<TAB>f1' rows and the 'best ...' lines."""
    return [line for line in stdout.splitlines() if re.match(r"^(\d+\t|best )", line)]


def metric_rows(eval_json: Path) -> list[dict]:
    return [{k: r[k] for k in ("ckpt", "accuracy", "f1")} for r in json.loads(eval_json.read_text())["rows"]]


def assert_same_checkpoint(a: Path, b: Path) -> None:
    sa, sb = (torch.load(p, map_location="cpu", weights_only=True) for p in (a, b))
    assert sa.keys() == sb.keys(), (a, b)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), f"{a.name}: {k} differs from the writable-root run"


def checkpoint_names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("model-*.pt"))


# --------------------------------------------------------------------------------------------------------------
# The test
# --------------------------------------------------------------------------------------------------------------


def assert_really_read_only(wrap, root: Path) -> None:
    """Creating a file in ``root`` fails for a wrapped command (root included), though not for this process."""
    probe = subprocess.run(
        wrap(["touch", str(root / "QQP" / "new-file")]), capture_output=True, text=True, timeout=HANG_GUARD
    )
    assert probe.returncode != 0 and "read-only wrapper" not in probe.stderr, probe
    assert ("Read-only file system" if os.geteuid() == 0 else "Permission denied") in probe.stderr, probe.stderr
    assert not (root / "QQP" / "new-file").exists()


def test_read_only_data_root_trains_evaluates_predicts_like_a_writable_one(tmp_path, tiny_bert):
    ro_data, ro_exp = tmp_path / "ro" / "data", tmp_path / "ro" / "exp"
    rw_data, rw_exp = tmp_path / "rw" / "data", tmp_path / "rw" / "exp"
    synthetic.write_qqp(ro_data, n_train=48, n_dev=32, n_test=24)
    shutil.copytree(ro_data, rw_data)
    ro_before = tree(ro_data)
    assert ro_before == tree(rw_data) and sorted(ro_before) == ["QQP", "QQP/dev.tsv", "QQP/test.tsv", "QQP/train.tsv"]
    ro_teacher, rw_teacher = ro_exp / "teacher_bert_qqp", rw_exp / "teacher_bert_qqp"
    runs = Runs(tmp_path / "logs")
    try:
        with read_only(ro_data) as wrap_ro:
            assert_really_read_only(wrap_ro, ro_data)
            # fine-tuning on the read-only root, while the control commands run here on the writable one
            fine_tune = runs.start(
                wrap_ro, "fine_tune", "run_fine_tune.py", *fine_tune_args(tiny_bert), data_root=ro_data, exp_root=ro_exp
            )
            control("run_fine_tune.py", *fine_tune_args(tiny_bert), data_root=rw_data, exp_root=rw_exp)
            rw_eval = control("run_fine_tune_eval.py", *EVAL, data_root=rw_data, exp_root=rw_exp)
            rw_rows = metric_rows(rw_teacher / "eval-dev.json")
            control("generate_test_prediction.py", *PREDICT, data_root=rw_data, exp_root=rw_exp)
            control("run_pkd_distill.py", *PKD, data_root=rw_data, exp_root=rw_exp)
            control("run_fine_tune_gen_logits.py", *GEN_LOGITS, data_root=rw_data, exp_root=rw_exp)
            control("run_fine_tune_distill.py", *distill_args("kd"), data_root=rw_data, exp_root=rw_exp)

            # the writable root got a tokenisation cache (train, dev, test) and a logits data set
            rw_before = tree(rw_data)
            assert len([p for p in rw_before if re.fullmatch(r"cache/features-\w+\.pt", p)]) >= 3, sorted(rw_before)
            assert "logits/teacher_bert_qqp/train/logits.jsonl" in rw_before, sorted(rw_before)

            with read_only(rw_data) as wrap_rw:
                assert_really_read_only(wrap_rw, rw_data)
                # a shared root holding a cache and logits: a student distilled from its logits data set
                distill = runs.start(
                    wrap_rw,
                    "distill",
                    "run_fine_tune_distill.py",
                    *distill_args("kd_ro"),
                    data_root=rw_data,
                    exp_root=rw_exp,
                )
                runs.wait(fine_tune)
                started = [
                    runs.start(wrap_ro, "eval", "run_fine_tune_eval.py", *EVAL, data_root=ro_data, exp_root=ro_exp),
                    runs.start(
                        wrap_ro, "predict", "generate_test_prediction.py", *PREDICT, data_root=ro_data, exp_root=ro_exp
                    ),
                    runs.start(wrap_ro, "pkd", "run_pkd_distill.py", *PKD, data_root=ro_data, exp_root=ro_exp),
                    distill,
                ]
                done = {s[0]: runs.wait(s) for s in started}
    finally:
        runs.kill_all()

    # neither data root changed in any byte while read-only: no cache/, no logits, no stray file
    assert tree(ro_data) == ro_before
    assert tree(rw_data) == rw_before

    # fine-tuning: finished, checkpoints in the experiment root, the very weights of the writable-root run
    assert checkpoint_names(ro_teacher) == checkpoint_names(rw_teacher) == ["model-2.pt", "model-4.pt"]
    for name in checkpoint_names(ro_teacher):
        assert_same_checkpoint(ro_teacher / name, rw_teacher / name)
    config = json.loads((ro_teacher / "config.json").read_text())
    train_file = ro_data / "QQP" / "train.tsv"
    data_files = {Path(k): v for k, v in config["provenance"]["data_files"].items()}
    assert data_files[train_file] == ro_before["QQP/train.tsv"]  # the read-only file, hashed
    assert set(data_files) - {train_file} == {Path(k) for k in weight_file_hashes(config["ptrain_ver"])}

    # evaluation on dev: the same table, printed and written, as on the writable root
    assert table_lines(done["eval"].stdout) == table_lines(rw_eval.stdout)
    assert [line.split("\t")[0] for line in table_lines(done["eval"].stdout)[:2]] == ["2", "4"]
    assert metric_rows(ro_teacher / "eval-dev.json") == rw_rows
    assert (ro_teacher / "eval-dev-predictions.npz").is_file()

    # test prediction: the same submission file
    submission = (ro_teacher / "QQP.tsv").read_text()
    assert submission == (rw_teacher / "QQP.tsv").read_text()
    assert submission.splitlines()[0] == "index\tprediction" and len(submission.splitlines()) == 24 + 1

    # layer-wise (BERT-PKD) from the teacher, and logits KD from the read-only logits data set: the same students
    for ro_student, rw_student in (
        (ro_exp / "pkd_bert_qqp", rw_exp / "pkd_bert_qqp"),
        (rw_exp / "kd_ro_bert_qqp", rw_exp / "kd_bert_qqp"),
    ):
        assert checkpoint_names(ro_student) == checkpoint_names(rw_student) == ["model-2.pt"]
        assert_same_checkpoint(ro_student / "model-2.pt", rw_student / "model-2.pt")
