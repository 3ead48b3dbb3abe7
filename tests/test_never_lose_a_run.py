"""Never lose a run, part two: names stay inside their roots, one writer per experiment, resume checks its inputs,
logits sets and eval outputs say whose they are, refused commands write nothing, a damaged final checkpoint is
not "finished", a full disk is one line, leftovers are cleaned and files respect the umask. Each test fails on
the code before issue 14."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import HANG_GUARD, REPO

BASE = [
    "--model",
    "bert",
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
    "24",
]


def tune(name: str, tiny: Path, *extra: str) -> list[str]:
    return ["--experiment", name, "--ptrain_ver", str(tiny), *BASE, *extra]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line_error(proc) -> str:
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def test_a_name_with_dotdot_and_overwrite_deletes_nothing(run, tiny_bert, exp_root):
    # the reported loss: --experiment ../t --overwrite resolved the TensorBoard folder to exp_root/log/../t_bert_qqp,
    # i.e. another experiment's folder, and deleted it
    run("run_fine_tune.py", *tune("t", tiny_bert, "--total_step", "2", "--warmup_step", "0"))
    (exp_root / "log" / "t_bert_qqp").mkdir(parents=True, exist_ok=True)
    before = snapshot(exp_root)
    proc = run("run_fine_tune.py", *tune("../t", tiny_bert, "--seed", "3", "--overwrite"), check=False)
    assert "--experiment '../t': must be a plain name" in one_line_error(proc)
    assert snapshot(exp_root) == before


def test_remove_inside_refuses_paths_outside_their_root(tmp_path):
    from fine_tune.errors import UserError
    from fine_tune.io_utils import remove_inside

    root, outside = tmp_path / "root", tmp_path / "other"
    (root / "a").mkdir(parents=True)
    outside.mkdir()
    (root / "link").symlink_to(outside)
    with pytest.raises(UserError, match="not inside"):
        remove_inside(root / ".." / "other", root)
    remove_inside(root / "link", root)  # the link goes, never what it points to
    assert outside.is_dir() and not (root / "link").exists()
    remove_inside(root / "a", root)
    assert not (root / "a").exists()


def test_the_demo_replaces_only_a_folder_it_wrote(tmp_path):
    """``--out`` of the demo (and of the check scripts) is deleted and re-created on every run: only when the
    tool wrote it. A user's folder named by mistake (or a link to one) is refused and left as it was."""
    from fine_tune.errors import UserError
    from fine_tune.io_utils import reset_own_folder

    mine = tmp_path / "mine"
    (mine / "thesis").mkdir(parents=True)
    (mine / "thesis" / "ch1.tex").write_text("x")
    link = tmp_path / "link"
    link.symlink_to(mine)
    for path in (mine, link):
        with pytest.raises(UserError, match="was not written by this tool"):
            reset_own_folder(path, ".mark", ("data",), "--out")
    assert (mine / "thesis" / "ch1.tex").read_text() == "x" and link.is_symlink()

    out = tmp_path / "out"
    reset_own_folder(out, ".mark", ("data",), "--out")
    (out / "data").mkdir()
    (out / "stale").write_text("from the last run")
    reset_own_folder(out, ".mark", ("data",), "--out")  # marked: replaced, whatever it holds
    assert sorted(p.name for p in out.iterdir()) == [".mark"]
    old = tmp_path / "old"  # an unmarked folder of the tool's own layout (written before the mark existed)
    (old / "data").mkdir(parents=True)
    reset_own_folder(old, ".mark", ("data",), "--out")
    assert sorted(p.name for p in old.iterdir()) == [".mark"]


def hold_lock(folder: Path) -> subprocess.Popen:
    """Another process that holds ``folder``'s writer lock until it is killed; returns once it holds it."""
    code = (
        "import sys; from fine_tune.locking import lock_folder; lock_folder(sys.argv[1], 'experiment'); "
        "print('locked', flush=True); sys.stdin.read()"
    )  # holds it until killed (or its stdin closes)
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(folder)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_one_writer_per_experiment(run, tiny_bert, exp_root):
    run("run_fine_tune.py", *tune("w", tiny_bert))
    folder = exp_root / "w_bert_qqp"
    holder = hold_lock(folder)
    try:
        before = snapshot(exp_root)
        for extra in ([], ["--seed", "5", "--overwrite"]):  # re-running, and replacing, are refused while it runs
            proc = run("run_fine_tune.py", *tune("w", tiny_bert, *extra), check=False)
            line = one_line_error(proc)
            assert f"experiment {folder.resolve()} is being written by another run (pid {holder.pid} on " in line
            assert snapshot(exp_root) == before
        # readers never block on a writer
        run("run_fine_tune_eval.py", "--experiment", "w", "--model", "bert", "--task", "qqp", "--dataset", "dev")
    finally:
        holder.kill()
        holder.wait()
    # the lock died with its process: nothing stale is left to clear by hand
    out = run("run_fine_tune.py", *tune("w", tiny_bert, "--seed", "5", "--overwrite"))
    assert (folder / "model-4.pt").is_file() and not (folder / ".writer.json").exists(), out.stderr


def killed_after(kill: str, script: str, args: list[str], data_root: Path, exp_root: Path) -> None:
    env = dict(os.environ, FT_DATA_ROOT=str(data_root), FT_EXP_ROOT=str(exp_root), TQDM_DISABLE="1")
    proc = subprocess.run(
        [sys.executable, str(REPO / "tests" / "killpoint.py"), kill, str(REPO / script), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
    )
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr)


def flip_first_label(path: Path) -> None:
    """Change a QQP file's first data row: its label (the last cell) 0 <-> 1."""
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:1] + [lines[1].replace("\t0\n", "\t1\n").replace("\t1\n", "\t0\n")] + lines[2:]))


def test_resume_refuses_a_changed_training_file(run, tiny_bert, data_root, exp_root):
    killed_after("after:resume-2.pt", "run_fine_tune.py", tune("r", tiny_bert), data_root, exp_root)
    train = data_root / "QQP" / "train.tsv"
    flip_first_label(train)
    folder = exp_root / "r_bert_qqp"
    config = (folder / "config.json").read_bytes()
    line = one_line_error(run("run_fine_tune.py", *tune("r", tiny_bert), check=False))
    assert line.startswith(f"error: {train} changed since this run started") and "--overwrite to start over" in line
    assert (folder / "config.json").read_bytes() == config and not (folder / "model-4.pt").exists()
    out = run("run_fine_tune.py", *tune("r", tiny_bert, "--overwrite"))  # --overwrite starts over
    assert (folder / "model-4.pt").is_file(), out.stderr


def test_distillation_refuses_logits_of_a_retrained_teacher(run, tiny_bert, data_root, exp_root):
    run("run_fine_tune.py", *tune("teach", tiny_bert))
    run(
        "run_fine_tune_gen_logits.py",
        "--experiment",
        "teach",
        "--model",
        "bert",
        "--task",
        "qqp",
        "--dataset",
        "train",
        "--ckpt",
        "4",
    )
    run("run_fine_tune.py", *tune("teach", tiny_bert, "--seed", "9", "--overwrite"))  # another teacher, same name
    kd = [
        "--experiment",
        "kd",
        "--model",
        "bert",
        "--task",
        "qqp",
        "--dataset",
        "teach_bert_qqp",
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
        "--batch_size",
        "8",
        "--max_seq_len",
        "24",
    ]
    line = one_line_error(run("run_fine_tune_distill.py", *kd, check=False))
    assert "its logits were computed by" in line and "now holds other weights" in line
    assert not (exp_root / "kd_bert_qqp").exists()


def test_results_never_combine_predictions_of_another_evaluation(run, tiny_bert, exp_root):
    for name, seed in (("a", "1"), ("b", "2")):
        run("run_fine_tune.py", *tune(name, tiny_bert, "--seed", seed))
        run("run_fine_tune_eval.py", "--experiment", name, "--model", "bert", "--task", "qqp", "--dataset", "dev")
    # a kill between the two files of a's second evaluation: its predictions are from another evaluation
    a, b = exp_root / "a_bert_qqp", exp_root / "b_bert_qqp"
    (a / "eval-dev-predictions.npz").write_bytes((b / "eval-dev-predictions.npz").read_bytes())
    proc = run("results_table.py", "--task", "qqp", "--compare", "a_bert_qqp", "b_bert_qqp", check=False)
    assert "is not the predictions file of eval-dev.json" in one_line_error(proc)


def test_a_refused_value_writes_nothing_and_the_corrected_command_runs(run, tiny_bert, exp_root):
    for bad in (["--beta1", "1.5"], ["--weight_decay", "-1"], ["--max_seq_len", "2"]):
        one_line_error(run("run_fine_tune.py", *tune("fix", tiny_bert, *bad), check=False))
        assert not exp_root.exists() or not any(exp_root.rglob("*"))
    run("run_fine_tune.py", *tune("fix", tiny_bert))
    assert (exp_root / "fix_bert_qqp" / "model-4.pt").is_file()


def test_a_damaged_final_checkpoint_is_not_finished(run, tiny_bert, exp_root):
    run("run_fine_tune.py", *tune("d", tiny_bert))
    final = exp_root / "d_bert_qqp" / "model-4.pt"
    whole = final.read_bytes()
    final.write_bytes(whole[: len(whole) // 2])
    out = run("run_fine_tune.py", *tune("d", tiny_bert))
    assert "already finished" not in out.stdout
    assert "model-4.pt: not a readable checkpoint" in out.stderr
    from fine_tune.engine.checkpoint import read_checkpoint

    assert set(read_checkpoint(final)) == set(torch.load(final, weights_only=True))  # whole again


def test_the_file_size_limit_is_one_line_and_the_previous_checkpoint_stays(tiny_bert, data_root, exp_root):
    # a limit between the size of config.json/model folder and a checkpoint: checkpoint 2 cannot be written
    def limited():
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    env = dict(os.environ, FT_DATA_ROOT=str(data_root), FT_EXP_ROOT=str(exp_root), TQDM_DISABLE="1")
    proc = subprocess.run(
        [sys.executable, str(REPO / "run_fine_tune.py"), *tune("full", tiny_bert)],
        env=env,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
        preexec_fn=limited,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]  # after the run's banner line
    folder = exp_root / "full_bert_qqp"
    assert line.startswith(
        f"error: could not write {folder}/model-2.pt: the file-size limit (ulimit -f) of 100000 "
        f"bytes; nothing was replaced"
    ), line
    assert not list(folder.glob("model-*.pt")) and not list(folder.glob("resume-*.pt"))
    assert not list(folder.glob(".tmp-*"))


def test_leftovers_of_killed_writes_are_cleaned_at_the_next_start(run, tiny_bert, data_root, exp_root):
    killed_after("before:model-4.pt", "run_fine_tune.py", tune("k", tiny_bert), data_root, exp_root)
    folder = exp_root / "k_bert_qqp"
    assert list(folder.glob(".tmp-model-4.pt.*"))
    run("run_fine_tune.py", *tune("k", tiny_bert))
    assert not list(folder.glob(".tmp-*")) and (folder / "model-4.pt").is_file()


def test_outputs_respect_the_umask(run, tiny_bert, exp_root):
    old = os.umask(0o002)  # a shared group folder
    try:
        run("run_fine_tune.py", *tune("u", tiny_bert, "--total_step", "2", "--warmup_step", "0"))
    finally:
        os.umask(old)
    folder = exp_root / "u_bert_qqp"
    assert (folder / "model-2.pt").stat().st_mode & 0o777 == 0o664
    assert (folder / "config.json").stat().st_mode & 0o777 == 0o664
    assert (folder / "model").stat().st_mode & 0o777 == 0o775


# Runs an entry script with a barrier around the experiment lock: "ready" on stdout and a wait for a line on stdin
# just before lock_folder, "locked" and another wait right after taking it.
AT_THE_LOCK = """
import runpy, sys
from fine_tune.run import start
real = start.lock_folder

def lock_folder(*a, **k):
    print("ready", flush=True)
    sys.stdin.readline()
    real(*a, **k)
    print("locked", flush=True)
    sys.stdin.readline()

start.lock_folder = lock_folder
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_two_runs_started_at_once_write_one_event_stream(tiny_bert, data_root, exp_root):
    """Two runs of one experiment reach the lock at the same moment (both wait at a barrier just before it, the
    test releases both): exactly one takes it and trains, the other is refused naming it, while the first still
    holds it; one event stream is written."""

    env = dict(
        os.environ,
        FT_DATA_ROOT=str(data_root),
        FT_EXP_ROOT=str(exp_root),
        TQDM_DISABLE="1",
        OMP_NUM_THREADS="1",
        PYTHONPATH=str(REPO),
    )
    cmd = [sys.executable, "-c", AT_THE_LOCK, str(REPO / "run_fine_tune.py"), *tune("twin", tiny_bert)]
    procs = [
        subprocess.Popen(
            cmd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=str(data_root.parent),
        )
        for _ in range(2)
    ]
    try:
        for p in procs:  # both passed the first guard and stand before the lock
            assert p.stdout.readline().strip() == "ready", p.communicate(timeout=HANG_GUARD)
        for p in procs:
            p.stdin.write("\n")
            p.stdin.flush()
        # one says "locked" and waits; the other is refused and exits while the first holds the lock
        firsts = {i: p.stdout.readline().strip() for i, p in enumerate(procs)}
        assert sorted(firsts.values()) == ["", "locked"], firsts
        winner, loser = (procs[0], procs[1]) if firsts[0] == "locked" else (procs[1], procs[0])
        _, lerr = loser.communicate(timeout=HANG_GUARD)
        assert loser.returncode == 2 and "is being written by another run (" in lerr, lerr
        # it names the winner, or says the holder has not yet written who it is (between its flock and .writer.json)
        assert f"(pid {winner.pid} on " in lerr or "(a process that has not yet said who it is)" in lerr, lerr
        wout, werr = winner.communicate("\n", timeout=HANG_GUARD)
        assert winner.returncode == 0, werr
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert (exp_root / "twin_bert_qqp" / "model-4.pt").is_file()
    events = list((exp_root / "log" / "twin_bert_qqp").glob("events.out.tfevents.*"))
    assert len(events) == 1, events


def test_overwrite_removes_the_old_runs_exports_and_predictions(run, tiny_bert, exp_root):
    run("run_fine_tune.py", *tune("x", tiny_bert))
    common = ["--experiment", "x", "--model", "bert", "--task", "qqp"]
    run("run_fine_tune_eval.py", *common, "--dataset", "dev", "--save_predictions")
    run("export_model.py", *common, "--ckpt", "4")
    folder = exp_root / "x_bert_qqp"
    assert (folder / "hf-model-4").is_dir() and list(folder.glob("predictions-dev-*.tsv"))
    run("run_fine_tune.py", *tune("x", tiny_bert, "--seed", "8", "--overwrite"))
    left = sorted(p.name for p in folder.iterdir())
    assert left == ["config.json", "model", "model-2.pt", "model-4.pt", "resume-4.pt"], left


def test_a_checkpoint_deleted_during_the_sweep_is_skipped(run, tiny_bert, exp_root, monkeypatch):
    run("run_fine_tune.py", *tune("s", tiny_bert))
    import fine_tune.evaluate as evaluate

    folder = exp_root / "s_bert_qqp"
    real = evaluate.load_checkpoint_into

    def pruned_meanwhile(model, path):  # a running training run's --save_total_limit deletes model-2.pt
        if path.name == "model-2.pt":
            path.unlink()
        return real(model, path)

    monkeypatch.setattr(evaluate, "load_checkpoint_into", pruned_meanwhile)
    out = run("run_fine_tune_eval.py", "--experiment", "s", "--model", "bert", "--task", "qqp", "--dataset", "dev")
    assert "note: model-2.pt was deleted while this evaluation ran" in out.stderr
    table = json.loads((folder / "eval-dev.json").read_text())
    assert [r["ckpt"] for r in table["rows"]] == [4]


def test_an_unreadable_checkpoint_says_what_is_wrong(tmp_path):
    """torch's own reasons for a truncated checkpoint are sometimes "[Errno 22] Invalid argument" or nothing at
    all; the error names the file and says it is truncated or damaged (or empty)."""
    from fine_tune.engine.checkpoint import read_checkpoint
    from fine_tune.errors import UserError

    whole = tmp_path / "whole.pt"
    torch.save({"w": torch.arange(1000, dtype=torch.float32)}, whole)
    data = whole.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[:-10])
    with pytest.raises(OSError, match="Invalid argument"):  # what torch itself says of this file
        torch.load(cut, weights_only=True)
    with pytest.raises(
        UserError,
        match=rf"^{cut}: not a readable checkpoint \(truncated or damaged: its "
        rf"{len(data) - 10} bytes do not hold a whole PyTorch checkpoint\)$",
    ):
        read_checkpoint(cut)
    cut.write_bytes(b"")
    with pytest.raises(UserError, match=r"\(an empty file, 0 bytes\)$"):
        read_checkpoint(cut, mmap=True)


def flock_free(folder: Path) -> bool:
    """Whether a new descriptor can take ``folder``'s writer lock now (flock locks belong to the open file, so this
    tells a lock held by this very process too); the probe lets it go again."""
    import fcntl

    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # closing the probe's descriptor drops its lock
    return True


def test_a_workflow_that_fails_in_process_releases_what_it_holds(run, tiny_bert, exp_root, monkeypatch):
    """A run that fails inside this process (not killed: the kernel would drop its lock) still gives back the
    experiment lock (the flock and .writer.json), the TensorBoard writer and its thread, and the same command then
    runs. The failure is injected after the lock is taken and training has logged (a crash in step 3)."""
    import threading

    from fine_tune import locking
    from fine_tune.methods import logits_kd

    folder = (exp_root / "f_bert_qqp").resolve()
    writers, seen = [], {}

    from torch.utils import tensorboard

    class Writer(tensorboard.SummaryWriter):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            writers.append(self)

    real = logits_kd.HardLabel.losses
    calls = {"n": 0}

    def crash(self, batch, student, teacher=None):
        calls["n"] += 1
        if calls["n"] == 3:  # step 3 of 4: after checkpoint 2 and the log at step 2
            # inside the run: the lock is held, by this process, and says so
            seen.update(
                held=folder in locking._held,
                free=flock_free(folder),
                holder=json.loads((folder / locking.HOLDER_FILE).read_text())["pid"],
            )
            raise RuntimeError("injected failure")
        return real(self, batch, student, teacher)

    monkeypatch.setattr(tensorboard, "SummaryWriter", Writer)  # what the TensorBoard reporter opens
    monkeypatch.setattr(logits_kd.HardLabel, "losses", crash)
    threads = set(threading.enumerate())
    with pytest.raises(RuntimeError, match="injected failure"):
        run("run_fine_tune.py", *tune("f", tiny_bert))
    assert seen == {"held": True, "free": False, "holder": os.getpid()}
    # released: nothing in this process holds it, the kernel lock is free, the holder note is gone
    assert locking._held == {} and flock_free(folder)
    assert not (folder / locking.HOLDER_FILE).exists()
    assert len(writers) == 1 and writers[0].file_writer is None  # closed (close() drops its file writer)
    assert set(threading.enumerate()) <= threads  # the writer's flushing thread ended with it
    assert sorted(p.name for p in folder.glob("model-*.pt")) == ["model-2.pt"]

    # the same command now runs: it resumes from the checkpoint the failed run left and finishes
    monkeypatch.setattr(logits_kd.HardLabel, "losses", real)
    proc = run("run_fine_tune.py", *tune("f", tiny_bert))
    assert "resuming from model-2.pt" in proc.stderr
    assert (folder / "model-4.pt").is_file() and locking._held == {} and flock_free(folder)
    assert not (folder / locking.HOLDER_FILE).exists()


def test_an_operating_system_failure_is_one_line_and_writes_nothing(run, tiny_bert, data_root, exp_root, tmp_path):
    """The one boundary (cli.run_main): an OSError no check foresaw is one line naming the path and the cause, exit
    status 2, never a traceback: an --exp_root with a 300-character folder name is longer than a file name may be
    (a 300-character --experiment is refused by the name check, before: tests/test_bad_inputs.py)."""
    common = [
        "--experiment",
        "x",
        "--model",
        "bert",
        "--task",
        "qqp",
        "--ptrain_ver",
        str(tiny_bert),
        "--max_seq_len",
        "24",
        "--total_step",
        "1",
        "--warmup_step",
        "0",
        "--device_id",
        "-1",
    ]
    for runner in (False, True):  # in this process, and as a user's shell runs it
        proc = run(
            "run_fine_tune.py", *common, "--exp_root", str(exp_root / ("x" * 300)), check=False, subprocess=runner
        )
        assert proc.returncode == 2 and proc.stdout == "", proc.stderr
        assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
        assert "x" * 300 in proc.stderr and "File name too long" in proc.stderr
        assert not exp_root.exists() or not any(exp_root.rglob("*"))
    from fine_tune.errors import os_error_line

    assert (
        os_error_line(OSError(28, "No space left on device", "/d/f", None, "/d/g"))
        == "/d/f -> /d/g: No space left on device"
    )
    assert os_error_line(OSError("no path")) == "no path (OSError)"


def test_a_lock_is_released_when_its_holder_file_cannot_be_removed(tmp_path, monkeypatch):
    """A folder that stopped letting the run remove its holder file (made read-only while the run wrote) must not
    turn the end of the run into a second error: the lock is released, the next writer takes it."""
    import pathlib

    from fine_tune import locking

    folder = tmp_path / "exp"
    folder.mkdir()
    locking.lock_folder(folder, "experiment")
    real = pathlib.Path.unlink

    def refuse(self, missing_ok=False):
        if self.name == locking.HOLDER_FILE:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, missing_ok=missing_ok)

    monkeypatch.setattr(pathlib.Path, "unlink", refuse)
    locking.release_all()  # no exception
    monkeypatch.undo()
    assert not locking._held
    locking.lock_folder(folder, "experiment")  # free again (flock released)
    locking.release_all()
