"""Runs survive SIGKILL, for every method and option: the same command continues from the last complete
checkpoint and ends bit-identical to an uninterrupted run (every checkpoint, every method file, every logged
scalar); a kill in the middle of a write leaves a ``.tmp-*`` file that nothing picks up; a kill at the last step
between ``model-N.pt`` and the method's files is not taken for a finished run.

Kills are deterministic: tests/killpoint.py SIGKILLs the process at a chosen file write (before the rename of a
half-written temporary file, or right after a rename), so each case interrupts the same place every time. The
killed run is a real child process (forked from this one: tests/killpoint.py's Forked); the uninterrupted reference
runs in this process at the same time (one torch thread each, so both compute bit for bit alike), and so does the
resumed run.
"""

from __future__ import annotations

import dataclasses
import os
import select
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from conftest import HANG_GUARD, REPO, run_in_process
from killpoint import Forked
from test_scripts_e2e import tb_scalars

from fine_tune import synthetic

# LOG does not divide CKPT: a checkpoint falls inside an open logging window (steps 4 and 7-8 of the windows 4-6 and
# 7-9), so a resumed run must restore the window's sums, step and example counts to log what the uninterrupted run logs
STEPS, CKPT, LOG = 12, 4, 3
TINY = ["--d_model", "32", "--d_ff", "64", "--num_attention_heads", "2"]  # the tiny teacher's widths
TEACHER = ["--teacher_exp", "teacher", "--tmodel", "bert", "--tckpt", "4"]
# 30 training rows in micro-batches of 4 (batch 8, accum 2): epochs end with a 2-row micro-batch and accumulation
# windows cross epoch boundaries; dropout on, so a resumed run must also continue every random stream
RUN = [
    "--task",
    "qqp",
    "--total_step",
    str(STEPS),
    "--warmup_step",
    "2",
    "--ckpt_step",
    str(CKPT),
    "--log_step",
    str(LOG),
    "--batch_size",
    "8",
    "--accum_step",
    "2",
    "--seed",
    "7",
    "--dropout",
    "0.1",
    "--lr",
    "1e-3",
    "--max_examples",
    "30",
]
LAYERWISE = [
    *TEACHER,
    "--model",
    "bert",
    *TINY,
    "--num_hidden_layers",
    "6",
    "--gate_lr",
    "1e-2",
    "--mu",
    "10",
    "--map_examples",
    "0",
    *RUN,
]


@dataclasses.dataclass(frozen=True)
class World:
    data: Path
    exp: Path
    tiny_bert: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_bert, tiny_bert12) -> World:
    """A 12-layer tiny teacher fine-tuned on synthetic QQP and its train logits (for offline distillation)."""
    base = tmp_path_factory.mktemp("resume")
    w = World(base / "data", base / "exp", tiny_bert)
    synthetic.write_qqp(w.data, n_train=40, n_dev=16, n_test=8)
    run_in_process(
        "run_fine_tune.py",
        "--experiment",
        "teacher",
        "--model",
        "bert",
        "--ptrain_ver",
        str(tiny_bert12),
        "--task",
        "qqp",
        "--total_step",
        "4",
        "--warmup_step",
        "1",
        "--ckpt_step",
        "4",
        "--batch_size",
        "16",
        "--lr",
        "1e-3",
        "--max_seq_len",
        "24",
        data_root=w.data,
        exp_root=w.exp,
    )
    run_in_process(
        "run_fine_tune_gen_logits.py",
        "--experiment",
        "teacher",
        "--model",
        "bert",
        "--task",
        "qqp",
        "--ckpt",
        "4",
        "--dataset",
        "train",
        data_root=w.data,
        exp_root=w.exp,
    )
    return w


@pytest.fixture()
def one_thread():
    """The in-process runs compute like the killed subprocess (OMP_NUM_THREADS=1)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def env_for(w: World) -> dict:
    return dict(
        os.environ,
        FT_DATA_ROOT=str(w.data),
        FT_EXP_ROOT=str(w.exp),
        TQDM_DISABLE="1",
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
    )


def start_killed(kill: str, script: str, args: list[str], w: World, torchrun: int = 0):
    """``script args`` in a child process that tests/killpoint.py SIGKILLs at ``kill`` (WHEN:PATTERN): forked from
    this one (killpoint's Forked: no interpreter start-up), or under torchrun a subprocess job whose every rank holds
    the write end of a named pipe whose read end the test keeps (``proc.alive``): end-of-file on it says that every
    rank is gone (tests/killpoint.py, KILLPOINT_ALIVE)."""
    env = env_for(w)
    if not torchrun:
        proc = Forked(kill, str(REPO / script), args, env, w.data.parent)
        proc.alive, proc.ranks = None, 0
        return proc
    # the whole job (launcher and every rank) is killed at once, as a pre-emption does
    launcher = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(torchrun),
        str(REPO / "tests" / "killpoint.py"),
        kill,
        str(REPO / script),
    ]
    env["KILLPOINT_GROUP"] = "1"
    fifo = Path(tempfile.mkdtemp()) / "alive"
    os.mkfifo(fifo)
    alive = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # open before any rank opens its write end
    env["KILLPOINT_ALIVE"] = str(fifo)
    proc = subprocess.Popen(
        [*launcher, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(w.data.parent)
    )
    proc.alive, proc.ranks = alive, torchrun
    return proc


def wait_killed(proc: subprocess.Popen, torchrun: bool = False) -> str:
    """Drain the child's output and check it died by the planned SIGKILL (not by finishing or by an error); under
    torchrun, wait for every rank to be gone too (end-of-file on the pipe each rank holds open until it dies)."""
    out, err = proc.communicate(timeout=HANG_GUARD)
    assert proc.returncode == -signal.SIGKILL, f"not killed at the planned write ({proc.returncode}):\n{out}\n{err}"
    if torchrun:  # every rank went with the launcher: none of the job's processes is left running
        fd, held = proc.alive, b""
        try:
            while True:  # one "+" from each rank when it started, then end-of-file when the last one has exited
                ready, _, _ = select.select([fd], [], [], HANG_GUARD)  # a hang guard only, never reached
                assert ready, f"processes of the killed job still running ({len(held)} started)"
                chunk = os.read(fd, 64)
                if not chunk:
                    break
                held += chunk
        finally:
            os.close(fd)
        assert held == b"+" * proc.ranks, held  # every rank held it (an empty pipe would say nothing)
    return err


def outputs(folder: Path) -> dict[str, dict]:
    """Every checkpoint and method file (``*.pt`` except resume states), loaded."""
    return {
        p.name: torch.load(p, weights_only=True)
        for p in sorted(folder.glob("*.pt"))
        if not p.name.startswith("resume-")
    }


def assert_bitwise_equal(a: dict, b: dict, what: str = "") -> None:
    assert a.keys() == b.keys(), what
    for k in a:
        if isinstance(a[k], dict):
            assert_bitwise_equal(a[k], b[k], f"{what}/{k}")
        else:
            assert torch.equal(a[k], b[k]), f"{what}/{k}"


def check_same_run(w: World, ref: str, killed: str, name=lambda e: f"{e}_bert_qqp") -> None:
    """Every checkpoint/method file bit-identical, only the last resume state kept, every logged step once with
    the reference's values."""
    a, b = w.exp / name(ref), w.exp / name(killed)
    ref_files, got = outputs(a), outputs(b)
    assert sorted(got) == sorted(ref_files)
    assert {f"model-{s}.pt" for s in range(CKPT, STEPS + 1, CKPT)} <= set(got)
    for f in ref_files:
        assert_bitwise_equal(ref_files[f], got[f], f)
    assert [p.name for p in b.glob("resume-*.pt")] == [f"resume-{STEPS}.pt"]
    sa, sb = tb_scalars(w.exp / "log" / name(ref)), tb_scalars(w.exp / "log" / name(killed))
    assert sa.keys() == sb.keys() and {t.rsplit("/", 1)[1] for t in sa} >= {"loss", "lr"}, sorted(sa)
    for tag in sa:
        if tag.endswith("examples_per_s"):
            continue
        assert [s for s, _ in sb[tag]] == list(range(LOG, STEPS + 1, LOG)), tag
        assert [v for _, v in sb[tag]] == [v for _, v in sa[tag]], tag


def deterministic_state() -> tuple:
    """What ``--deterministic`` sets (engine/determinism.py), as torch and the environment hold it now."""
    b = torch.backends
    return (
        torch.are_deterministic_algorithms_enabled(),
        os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        b.cudnn.deterministic,
        b.cuda.flash_sdp_enabled(),
        b.cuda.mem_efficient_sdp_enabled(),
        b.cuda.cudnn_sdp_enabled(),
        b.cuda.math_sdp_enabled(),
    )


DETERMINISTIC = (True, ":4096:8", True, False, False, False, True)
NOT_DETERMINISTIC = (False, None, False, True, True, True, True)


def deterministic_states(monkeypatch) -> list[tuple]:
    """:func:`deterministic_state` at each optimizer step of the runs in this process (filled as they train)."""
    from fine_tune.engine.trainer import Trainer

    states, step = [], Trainer._optimizer_step

    def recording(self):
        states.append(deterministic_state())
        return step(self)

    monkeypatch.setattr(Trainer, "_optimizer_step", recording)
    return states


# (id, script, flags, where the kill lands, the checkpoint the resumed run starts from)
CASES = [
    # --deterministic: the condition for a bit-exact resume on a GPU; on this CPU the flag must reach torch and keep it
    (
        "fine_tune",
        "run_fine_tune.py",
        ["--model", "bert", "--ptrain_ver", "{tiny}", "--max_seq_len", "24", "--deterministic", *RUN],
        "after:resume-4.pt",
        4,
    ),
    (
        "fine_tune_group_by_length",
        "run_fine_tune.py",
        ["--model", "bert", "--ptrain_ver", "{tiny}", "--max_seq_len", "24", "--group_by_length", *RUN],
        "before:model-8.pt",
        4,
    ),
    (
        "offline_distill",
        "run_fine_tune_distill.py",
        [
            "--model",
            "bert",
            "--dataset",
            "teacher_bert_qqp",
            "--d_model",
            "16",
            "--d_ff",
            "32",
            "--num_attention_heads",
            "2",
            "--num_hidden_layers",
            "2",
            "--max_seq_len",
            "24",
            "--softmax_temp",
            "2",
            "--soft_weight",
            "0.7",
            "--hard_weight",
            "0.3",
            *RUN,
        ],
        "before:resume-8.pt",
        4,
    ),
    # the last step: model-12.pt written, the gates and the resume state not yet; the run is not finished
    ("lad_last_step", "run_lad_distil.py", LAYERWISE, "after:model-12.pt", 8),
    ("lad_no", "run_lad_no_distil.py", LAYERWISE, "before:gate-2-8.pt", 4),
    (
        "partial_lad",
        "run_probing_lad.py",
        ["--probing_exp", "partial_lad", "--gate_indices", "2,4", *LAYERWISE],
        "after:resume-4.pt",
        4,
    ),
    ("pkd", "run_pkd_distill.py", [a for a in LAYERWISE if a not in ("--gate_lr", "1e-2")], "after:resume-8.pt", 8),
    (
        "alp_kd_hidden",
        "run_alp_distil.py",
        ["--alp_exp", "alp-kd-hidden", *[a for a in LAYERWISE if a not in ("--gate_lr", "1e-2")]],
        "before:resume-4.pt",
        0,
    ),
    # a student of another width (48 vs the teacher's 32): the learned projection is saved beside each checkpoint
    # and in the resume state; killed before its file of checkpoint 8
    (
        "lad_other_width",
        "run_lad_distil.py",
        [*LAYERWISE, "--d_model", "48", "--d_ff", "96", "--num_hidden_layers", "3"],
        "before:projection-8.pt",
        4,
    ),
    (
        "tinybert_other_width",
        "run_tinybert_distil.py",
        [
            *[a for a in LAYERWISE if a not in ("--gate_lr", "1e-2")],
            "--d_model",
            "48",
            "--d_ff",
            "96",
            "--num_hidden_layers",
            "3",
        ],
        "after:resume-4.pt",
        4,
    ),
    # a recipe (issue 33) of two teachers adding terms to LAD: weight and temperature schedules continue where the
    # killed run stopped; LAD's gates, its projection and the terms' own (recipe_projection); the teacher set
    (
        "recipe_scheduled_with_lad",
        "run_distil.py",
        [
            "--recipe",
            str(REPO / "tests" / "data" / "recipes" / "scheduled.yaml"),
            "--model",
            "bert",
            *TINY,
            "--d_model",
            "48",
            "--d_ff",
            "96",
            "--num_hidden_layers",
            "3",
            "--gate_lr",
            "1e-2",
            "--mu",
            "10",
            "--map_examples",
            "0",
            "--padding",
            "dynamic",
            *RUN,
        ],
        "after:resume-4.pt",
        4,
    ),
    (
        "lad_dynamic_padding_with_maps",
        "run_lad_distil.py",
        [*[a for a in LAYERWISE if a not in ("--map_examples", "0")], "--padding", "dynamic", "--map_examples", "8"],
        "before:layer-map-8.png",
        4,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_killed_and_resumed_is_bit_identical(case, world, one_thread, monkeypatch):
    cid, script, flags, kill, resume_from = case
    flags = [f.replace("{tiny}", str(world.tiny_bert)) for f in flags]
    killed_args, ref_args = [*flags, "--experiment", f"{cid}_killed"], [*flags, "--experiment", f"{cid}_ref"]
    proc = start_killed(kill, script, killed_args, world)
    states = deterministic_states(monkeypatch)
    run_in_process(script, *ref_args, data_root=world.data, exp_root=world.exp)  # meanwhile, uninterrupted
    # at every step: deterministic algorithms, cuBLAS's workspace, cuDNN's, attention by the math kernel only; after
    # the run torch is as before (engine/determinism.py)
    assert states and set(states) == {DETERMINISTIC if "--deterministic" in flags else NOT_DETERMINISTIC}
    assert deterministic_state() == NOT_DETERMINISTIC
    wait_killed(proc)
    folder = world.exp / f"{cid}_killed_bert_qqp"
    when, pattern = kill.split(":")
    if when == "before":  # the half-written temporary file is left as a kill leaves it; the target is not there
        assert list(folder.glob(f".tmp-{pattern}.*")) and not list(folder.glob(pattern)), sorted(os.listdir(folder))
    else:
        assert list(folder.glob(pattern))
    assert not (folder / f"resume-{STEPS}.pt").exists()

    # the same command again; device flags may differ on resume
    resumed = run_in_process(script, *killed_args, "--device_id", "-1", data_root=world.data, exp_root=world.exp)
    if resume_from:
        assert f"resuming from model-{resume_from}.pt" in resumed.stderr, resumed.stderr
    else:  # killed before the first checkpoint was complete: nothing to resume, a fresh start
        assert "resuming" not in resumed.stderr and "have no resume state; starting over" in resumed.stderr
    check_same_run(world, f"{cid}_ref", f"{cid}_killed")
    if "maps" in cid:  # the heat-maps of every checkpoint, the interrupted one written again
        assert sorted(p.name for p in folder.glob("layer-map-*.png")) == [f"layer-map-{s}.png" for s in (12, 4, 8)]
    # a finished run says so and exits 0
    again = run_in_process(script, *killed_args, data_root=world.data, exp_root=world.exp)
    assert "already finished" in again.stdout


def test_killed_checkpoint_write_leaves_nothing_picked_up(tmp_path, monkeypatch):
    from fine_tune.engine.checkpoint import save_model_checkpoint
    from fine_tune.experiment import ExperimentDir

    exp = ExperimentDir(tmp_path, "x")
    exp.path.mkdir()
    model = torch.nn.Linear(4, 4)
    save_model_checkpoint(model, exp.checkpoint_path(5))
    good = exp.checkpoint_path(5).read_bytes()

    real_save = torch.save

    def dies_half_way(obj, f, *a, **k):
        f.write(b"partial bytes of a checkpoint")
        raise KeyboardInterrupt  # a kill during the save

    monkeypatch.setattr(torch, "save", dies_half_way)
    for target in (exp.checkpoint_path(10), exp.checkpoint_path(5)):
        with pytest.raises(KeyboardInterrupt):
            save_model_checkpoint(model, target)
    monkeypatch.setattr(torch, "save", real_save)
    assert exp.checkpoints() == [5] and exp.checkpoint_path(5).read_bytes() == good
    assert sorted(p.name for p in exp.path.iterdir()) == ["model-5.pt"]  # no temporary file left either
