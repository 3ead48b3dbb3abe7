"""TinyBERT's task-specific distillation as its authors released it (huawei-noah/Pretrained-Language-Model,
TinyBERT/task_distill.py): the prediction stage's soft cross-entropy averaged over the batch AND the classes, a
regression task's prediction stage trained toward the gold score with no teacher forward, the intermediate stage at
a constant learning rate (BertAdam's ``schedule='none'``), each epoch's incomplete batch skipped. Each has a flag
restoring the toolkit's earlier rule, and a run started before these fixes (its config.json without the flags)
resumes with its old rules, bit for bit.

The released formulas are written out here with plain numpy (float64), never through the toolkit's functions;
the real runs are checked against their TensorBoard scalars (loss and learning rate per step) and against the rows
each micro-batch held.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import method_from_flags, one_thread
from conftest import run_in_world as run
from test_glue_tasks import write_stsb
from test_scripts_e2e import tb_scalars

from fine_tune import synthetic
from fine_tune.engine.protocol import ModelOutputs, TeacherShape

OLD_RULES = {
    "tinybert_soft_reduction": "batchmean",
    "tinybert_regression_target": "teacher",
    "tinybert_intermediate_schedule": "linear",
    "tinybert_incomplete_batches": "train",
}
OLD_FLAGS = [a for k, v in OLD_RULES.items() for a in (f"--{k}", v)]
SHAPE = [
    "--d_model",
    "8",
    "--d_ff",
    "16",
    "--num_attention_heads",
    "2",
    "--num_hidden_layers",
    "2",
    "--max_seq_len",
    "6",
]


def t32(x) -> torch.Tensor:
    return torch.tensor(np.asarray(x), dtype=torch.float32)


def released_soft_ce(s: np.ndarray, t: np.ndarray, temperature: float) -> float:
    """task_distill.py: ``soft_cross_entropy(student_logits / T, teacher_logits / T)`` with
    ``(-softmax(targets) * log_softmax(predicts)).mean()``: the mean over batch AND classes."""
    zs, zt = s / temperature, t / temperature
    log_q = zs - np.log(np.exp(zs - zs.max(-1, keepdims=True)).sum(-1, keepdims=True)) - zs.max(-1, keepdims=True)
    p = np.exp(zt - zt.max(-1, keepdims=True))
    p = p / p.sum(-1, keepdims=True)
    return float((-p * log_q).sum() / s.size)


SMALL_TEACHER = TeacherShape(4, 8, 2)


def built(args: list[str], task: str = "mnli", teacher=SMALL_TEACHER):
    return method_from_flags("tinybert", [*SHAPE, *args], teacher, 0, task)


# ------------------------------------------------------------------ the losses, against the released formulas
def test_prediction_soft_cross_entropy_is_the_released_mean_over_batch_and_classes():
    """3 classes, an unbalanced batch (the teacher sure of class 0 in four rows of five, of class 2 in one), T = 2.5:
    the released value, and --tinybert_soft_reduction batchmean (the paper's eq. 11 per example) exactly C = 3
    times it; soft_weight and hard_weight weigh the parts."""
    from fine_tune.methods.tinybert import soft_cross_entropy

    rng = np.random.default_rng(30)
    s = (rng.standard_normal((5, 3)) * 1.5).astype(np.float32).astype(np.float64)
    t = np.array([[4.0, 0.5, -1.0], [3.5, 1.0, 0.0], [5.0, -0.5, 0.25], [2.75, 0.0, -2.0], [-1.0, 0.5, 3.0]])
    y = [0, 0, 1, 0, 2]
    ref = released_soft_ce(s, t, 2.5)
    assert abs(float(soft_cross_entropy(t32(s), t32(t), 2.5)) - ref) < 1e-6 * ref
    assert abs(float(soft_cross_entropy(t32(s), t32(t), 2.5, "batchmean")) - 3 * ref) < 3e-6 * ref
    outputs = (ModelOutputs(t32(s)), ModelOutputs(t32(t)))
    released = built(
        ["--tinybert_stage", "prediction", "--softmax_temp", "2.5", "--soft_weight", "0.6", "--hard_weight", "0.3"]
    )
    assert released.soft_reduction == "mean" and released.uses_teacher
    parts = released.losses({"labels": torch.tensor(y)}, *outputs)
    ce = float(np.mean([np.log(np.exp(s[b]).sum()) - s[b][y[b]] for b in range(5)]))
    assert abs(parts["soft_loss"].item() - ref) < 1e-6 * ref
    assert abs(parts["loss"].item() - (0.6 * ref + 0.3 * ce)) < 1e-6 * (0.6 * ref + 0.3 * ce)
    old = built(["--tinybert_stage", "prediction", "--softmax_temp", "2.5", "--tinybert_soft_reduction", "batchmean"])
    assert abs(old.losses({}, *outputs)["soft_loss"].item() - 3 * ref) < 3e-6 * ref


def test_regression_prediction_stage_is_the_mse_to_the_gold_score():
    """STS-B: MSELoss()(student_logits.view(-1), label_ids.view(-1)), fractional scores, no teacher (none is
    passed: the method must not read one); --tinybert_regression_target teacher restores MSE to the teacher's
    score, with a teacher forward."""
    s = np.array([[0.25], [3.5], [1.75], [4.0]])
    y = np.array([0.5, 3.125, 2.0, 4.75])
    t = np.array([[1.0], [2.0], [3.0], [4.5]])
    gold = built(["--tinybert_stage", "prediction"], task="stsb")
    assert gold.regression_target == "gold" and not gold.uses_teacher and not gold.needs_hidden_states
    parts = gold.losses({"labels": t32(y)}, ModelOutputs(t32(s)), None)
    mse = float(np.mean((s[:, 0] - y) ** 2))
    assert set(parts) == {"pred_loss", "loss"}
    assert abs(parts["pred_loss"].item() - mse) < 1e-6 * mse and abs(parts["loss"].item() - mse) < 1e-6 * mse
    old = built(["--tinybert_stage", "prediction", "--tinybert_regression_target", "teacher"], task="stsb")
    assert old.uses_teacher
    parts = old.losses({"labels": t32(y)}, ModelOutputs(t32(s)), ModelOutputs(t32(t)))
    to_teacher = float(np.mean((s[:, 0] - t[:, 0]) ** 2))
    assert abs(parts["loss"].item() - to_teacher) < 1e-6 * to_teacher


def test_regression_to_the_teacher_without_the_soft_loss_trains_without_a_teacher():
    """--tinybert_regression_target teacher --soft_weight 0: the teacher never runs (uses_teacher is False, so the
    engine passes none) and the loss is the weighted MSE to the gold score alone (it read the absent teacher's
    logits before)."""
    s = np.array([[0.25], [3.5], [1.75], [4.0]])
    y = np.array([0.5, 3.125, 2.0, 4.75])
    args = ["--tinybert_stage", "prediction", "--tinybert_regression_target", "teacher"]
    method = built([*args, "--soft_weight", "0", "--hard_weight", "0.75"], task="stsb")
    assert not method.uses_teacher
    parts = method.losses({"labels": t32(y)}, ModelOutputs(t32(s)), None)
    expected = 0.75 * float(np.mean((s[:, 0] - y) ** 2))
    assert abs(parts["loss"].item() - expected) < 1e-6 * expected


def test_the_method_resolves_its_schedule_and_incomplete_batches():
    """Intermediate stage: constant (W_h too, a student of another width), prediction stage: linear whatever the
    flag; incomplete batches skipped unless --tinybert_incomplete_batches train."""
    from fine_tune.engine.optim import OptimiserSettings, lr_schedule

    other_width = built(["--d_model", "6", "--num_attention_heads", "2"])
    assert other_width.schedule == "constant" and other_width.drop_last
    assert other_width.extra_parameters()[0].optimiser.schedule == "constant"
    linear = built(
        ["--d_model", "6", "--tinybert_intermediate_schedule", "linear", "--tinybert_incomplete_batches", "train"]
    )
    assert linear.schedule == "linear" and not linear.drop_last
    assert linear.extra_parameters()[0].optimiser.schedule == "linear"
    assert built(["--tinybert_stage", "prediction"]).schedule == "linear"
    # the schedule itself: peak at every step, whatever warmup_step says
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.25)
    sched = lr_schedule(opt, OptimiserSettings(lr=0.25, total_step=5, warmup_step=3, schedule="constant"))
    lrs = []
    for _ in range(5):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == [0.25] * 5 and sched.get_last_lr() == [0.25]
    with pytest.raises(ValueError):
        OptimiserSettings(lr=1.0, total_step=1, warmup_step=0, schedule="cosine")


def epoch_permutation(n: int, seed: int, epoch: int) -> list[int]:
    """The documented shuffle of an epoch (fine_tune/batching.py, MicroBatchStream)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)).tolist()


@pytest.mark.parametrize("grouped", [False, True], ids=["plain", "group_by_length"])
def test_streams_skip_the_incomplete_micro_batch(grouped):
    """30 rows in micro-batches of 4: 7 full micro-batches per epoch; the 2 rows at the end of the epoch's shuffle
    are left out (the plain and the length-grouped streams alike); a restart from any position continues exactly."""
    from fine_tune.batching import make_stream

    n, mb, seed = 30, 4, 5
    lengths = np.random.default_rng(1).integers(3, 40, n) if grouped else None
    stream = make_stream(n, mb, seed, lengths, drop_last=True)
    batches = [stream.next().tolist() for _ in range(21)]  # 3 epochs
    assert all(len(b) == mb for b in batches)
    for epoch in range(3):
        perm = epoch_permutation(n, seed, epoch)
        seen = [r for b in batches[7 * epoch : 7 * epoch + 7] for r in b]
        assert sorted(seen) == sorted(perm[:28]), epoch  # each row at most once; the last 2 of the shuffle not
        if not grouped:
            assert seen == perm[:28]
    for k in (3, 7, 12):
        resumed = make_stream(n, mb, seed, lengths, drop_last=True)
        resumed.position = k
        assert [resumed.next().tolist() for _ in range(21 - k)] == batches[k:]
    kept = make_stream(n, mb, seed, lengths)
    assert sorted(len(kept.next()) for _ in range(8)) == [2] + [4] * 7  # drop_last=False: the short one trains
    with pytest.raises(ValueError):
        make_stream(3, 4, seed, None, drop_last=True)


# ------------------------------------------------------------------ real runs of run_tinybert_distil.py
TEACHER = ["--model", "bert", "--teacher_exp", "teacher", "--tckpt", "4"]
STEPS = [
    "--total_step",
    "4",
    "--warmup_step",
    "2",
    "--ckpt_step",
    "4",
    "--log_step",
    "1",
    "--lr",
    "1e-3",
    "--seed",
    "3",
    "--dropout",
    "0",
]
NARROW = ["--d_model", "24", "--d_ff", "48", "--num_attention_heads", "2", "--num_hidden_layers", "2"]
ROWS = 30  # micro-batches of 4: 7 full ones per epoch and 2 rows over


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_bert):
    """30 rows of synthetic QQP and STS-B; a 2-layer tiny teacher fine-tuned on each (exported: the STS-B one is
    also the student of the regression tests); the intermediate stage's student (exported) for the prediction
    stage."""
    base = tmp_path_factory.mktemp("tinybert_released")
    w = {"base": base, "data": base / "data", "exp": base / "exp"}
    synthetic.write_qqp(w["data"], n_train=ROWS, n_dev=8, n_test=4)
    write_stsb(w["data"], ROWS, 8, 4)
    with one_thread():
        for task in ("qqp", "stsb"):
            run(
                w,
                "run_fine_tune.py",
                "--experiment",
                "teacher",
                "--model",
                "bert",
                "--ptrain_ver",
                str(tiny_bert),
                "--task",
                task,
                "--total_step",
                "4",
                "--warmup_step",
                "1",
                "--ckpt_step",
                "4",
                "--batch_size",
                "8",
                "--lr",
                "1e-3",
                "--max_seq_len",
                "24",
            )
            run(
                w,
                "export_model.py",
                "--experiment",
                "teacher",
                "--model",
                "bert",
                "--task",
                task,
                "--out",
                str(base / f"teacher-{task}"),
            )
        run(
            w,
            "run_tinybert_distil.py",
            "--experiment",
            "stage1",
            "--task",
            "qqp",
            *TEACHER,
            *NARROW,
            *STEPS,
            "--batch_size",
            "8",
            "--accum_step",
            "2",
        )
        run(
            w,
            "export_model.py",
            "--experiment",
            "stage1",
            "--model",
            "bert",
            "--task",
            "qqp",
            "--out",
            str(base / "stage1"),
        )
        yield w


class Recorder:
    """The rows of every micro-batch the collator builds, and the first batch (in-process runs)."""

    def __init__(self, monkeypatch):
        from fine_tune import batching

        self.rows: list[list[int]] = []
        self.first: dict | None = None
        call = batching.Collator.__call__

        def recording(collator, rows):
            batch = call(collator, rows)
            self.rows.append(batch["index"].tolist())
            if self.first is None:
                self.first = batch
            return batch

        monkeypatch.setattr(batching.Collator, "__call__", recording)

    def reset(self):
        self.rows, self.first = [], None


def scalars(w, folder: str, tag: str) -> list[float]:
    found = tb_scalars(w["exp"] / "log" / folder)
    key = next(k for k in found if k.endswith(f"/{tag}"))
    return [v for _, v in sorted(found[key])]


def test_intermediate_stage_runs_at_a_constant_rate_on_full_micro_batches(world, monkeypatch):
    """The intermediate stage as released: the student's and W_h's learning rate --lr at every step (read from the
    run's TensorBoard), every micro-batch full: epoch 0 trains rows perm[0:28] in order, the 8th micro-batch is
    epoch 1's first. The old rules' flags: warmup 2 / linear decay over 4 steps, and epoch 0's short micro-batch of
    perm[28:30] trains."""
    w = world
    rec = Recorder(monkeypatch)
    batch = ["--batch_size", "8", "--accum_step", "2"]
    with one_thread():
        proc = run(
            w, "run_tinybert_distil.py", "--experiment", "const", "--task", "qqp", *TEACHER, *NARROW, *STEPS, *batch
        )
    assert "--warmup_step 2 and the linear decay do not apply" in proc.stderr
    assert scalars(w, "const_bert_qqp", "lr") == pytest.approx([1e-3] * 4, rel=1e-6)
    assert scalars(w, "const_bert_qqp", "projection_lr") == pytest.approx([1e-3] * 4, rel=1e-6)
    p0, p1 = epoch_permutation(ROWS, 3, 0), epoch_permutation(ROWS, 3, 1)
    assert rec.rows == [p0[i : i + 4] for i in range(0, 28, 4)] + [p1[:4]]
    rec.reset()
    with one_thread():
        proc = run(
            w,
            "run_tinybert_distil.py",
            "--experiment",
            "linear",
            "--task",
            "qqp",
            *TEACHER,
            *NARROW,
            *STEPS,
            *batch,
            "--tinybert_intermediate_schedule",
            "linear",
            "--tinybert_incomplete_batches",
            "train",
        )
    assert "do not apply" not in proc.stderr
    assert scalars(w, "linear_bert_qqp", "lr") == pytest.approx([5e-4, 1e-3, 5e-4, 0.0], rel=1e-6, abs=1e-12)
    assert scalars(w, "linear_bert_qqp", "projection_lr") == pytest.approx([5e-4, 1e-3, 5e-4, 0.0], rel=1e-6, abs=1e-12)
    assert rec.rows == [p0[i : i + 4] for i in range(0, 28, 4)] + [p0[28:30]]


def hf_logits(folder: Path, batch: dict) -> np.ndarray:
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        out = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], token_type_ids=batch["token_type_ids"]
        )
    return out.logits.double().numpy()


def test_prediction_stage_logs_the_released_soft_cross_entropy(world, monkeypatch):
    """Stage 2 from stage 1's student, T = 2: the soft loss logged at step 1 is the released formula of the student's
    and the teacher's logits on that step's rows (the Hugging Face models, dropout off); with --tinybert_soft_reduction
    batchmean the same batch logs C = 2 times it. The prediction stage warms up linearly."""
    w = world
    rec = Recorder(monkeypatch)
    args = [
        "--task",
        "qqp",
        *TEACHER,
        "--tinybert_stage",
        "prediction",
        "--student_ptrain_ver",
        str(w["base"] / "stage1"),
        "--softmax_temp",
        "2",
        *STEPS,
        "--total_step",
        "2",
        "--batch_size",
        "4",
    ]
    with one_thread():
        run(w, "run_tinybert_distil.py", "--experiment", "pred", *args)
    batch = rec.first
    assert batch["input_ids"].shape[0] == 4
    ref = released_soft_ce(hf_logits(w["base"] / "stage1", batch), hf_logits(w["base"] / "teacher-qqp", batch), 2.0)
    logged = scalars(w, "pred_bert_qqp", "soft_loss")
    assert logged[0] == pytest.approx(ref, rel=2e-5)
    assert scalars(w, "pred_bert_qqp", "lr") == pytest.approx([5e-4, 0.0], rel=1e-6, abs=1e-12)  # warmup 2 of 2
    rec.reset()
    with one_thread():
        run(
            w,
            "run_tinybert_distil.py",
            "--experiment",
            "pred_batchmean",
            *args,
            "--tinybert_soft_reduction",
            "batchmean",
        )
    assert torch.equal(rec.first["index"], batch["index"])
    assert scalars(w, "pred_batchmean_bert_qqp", "soft_loss")[0] == pytest.approx(2 * ref, rel=2e-5)


def test_regression_prediction_stage_trains_on_gold_scores_without_the_teacher(world, monkeypatch):
    """STS-B, the student a copy of the teacher: the logged loss is the MSE to the gold scores of step 1's rows (not
    0, as the MSE to the teacher would be), and the teacher never runs; --tinybert_regression_target teacher: the
    teacher runs and the MSE to its score is 0 (up to rounding)."""
    import fine_tune.run as run_module

    w = world
    rec = Recorder(monkeypatch)
    teachers = []
    real = run_module.run_training

    def recording(*a, **k):
        teachers.append(k.get("teacher"))
        return real(*a, **k)

    monkeypatch.setattr(run_module, "run_training", recording)
    args = [
        "--task",
        "stsb",
        *TEACHER,
        "--tinybert_stage",
        "prediction",
        "--student_ptrain_ver",
        str(w["base"] / "teacher-stsb"),
        *STEPS,
        "--total_step",
        "2",
        "--batch_size",
        "4",
    ]
    with one_thread():
        run(w, "run_tinybert_distil.py", "--experiment", "gold", *args)
    assert teachers == [None]
    batch = rec.first
    s = hf_logits(w["base"] / "teacher-stsb", batch)[:, 0]
    y = batch["labels"].double().numpy()
    assert len(set(y.tolist())) > 1 and any(v != round(v) for v in y)  # fractional gold scores
    mse = float(np.mean((s - y) ** 2))
    assert mse > 0.01
    assert scalars(w, "gold_bert_stsb", "pred_loss")[0] == pytest.approx(mse, rel=2e-5)
    assert scalars(w, "gold_bert_stsb", "loss")[0] == pytest.approx(mse, rel=2e-5)
    with one_thread():
        run(w, "run_tinybert_distil.py", "--experiment", "to_teacher", *args, "--tinybert_regression_target", "teacher")
    assert teachers[1] is not None
    assert scalars(w, "to_teacher_bert_stsb", "soft_loss")[0] < 1e-9


def test_a_training_set_without_one_full_micro_batch_is_refused(world):
    """Skipping incomplete batches, 3 rows in micro-batches of 4 would train nothing: refused in one line before
    anything is written; --tinybert_incomplete_batches train trains them."""
    w = world
    args = [
        "--task",
        "qqp",
        *TEACHER,
        *NARROW,
        *STEPS,
        "--total_step",
        "1",
        "--warmup_step",
        "0",
        "--batch_size",
        "4",
        "--max_examples",
        "3",
    ]
    proc = run(w, "run_tinybert_distil.py", "--experiment", "tiny", *args, check=False)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "3 rows, fewer than one micro-batch (4 rows" in proc.stderr
    assert "--tinybert_incomplete_batches train" in proc.stderr
    assert not (w["exp"] / "tiny_bert_qqp").exists()
    with one_thread():
        run(w, "run_tinybert_distil.py", "--experiment", "tiny", *args, "--tinybert_incomplete_batches", "train")
    assert (w["exp"] / "tiny_bert_qqp" / "model-1.pt").is_file()


# ------------------------------------------------------------------ runs started before the fixes
LEGACY_CASES = {
    # the intermediate stage: linear schedule (student and W_h) and the short micro-batch trained
    "intermediate": ["--task", "qqp", *NARROW],
    # the prediction stage: the soft cross-entropy summed over the classes (T = 2), the short micro-batch trained
    "prediction": [
        "--task",
        "qqp",
        "--tinybert_stage",
        "prediction",
        "--student_ptrain_ver",
        "{stage1}",
        "--softmax_temp",
        "2",
    ],
    # a regression task: the MSE to the teacher's score (the student a copy of the teacher, moved apart by dropout)
    "regression": ["--task", "stsb", "--tinybert_stage", "prediction", "--student_ptrain_ver", "{teacher_stsb}"],
}


class Stopped(BaseException):
    """The run stops here, as a kill right after a complete checkpoint stops it."""


@pytest.mark.parametrize("cid", list(LEGACY_CASES))
def test_a_run_started_before_the_fixes_resumes_with_its_old_rules(cid, world, monkeypatch):
    """A run made with the old rules (the flags set to them) and stopped right after its checkpoint 2, its
    config.json then stripped of the four fields (as the code before the fixes wrote it; the resume state's config
    digest as that code recorded it): the command without the flags resumes it with the old rules, says so, keeps
    its config.json without the fields and ends bit-identical to the old rules' uninterrupted run (weights, W_h,
    every logged loss). The same command under a new name trains with the released rules, to other weights."""
    from fine_tune import config as cfg
    from fine_tune.engine import trainer
    from fine_tune.engine.checkpoint import resume_path

    real_save = trainer.save_resume_state

    def stop_after_two(folder, step, state):
        real_save(folder, step, state)
        if step == 2 and "_old_" in Path(folder).name:
            raise Stopped

    monkeypatch.setattr(trainer, "save_resume_state", stop_after_two)
    w = world
    flags = [
        a.replace("{stage1}", str(w["base"] / "stage1")).replace("{teacher_stsb}", str(w["base"] / "teacher-stsb"))
        for a in LEGACY_CASES[cid]
    ]
    task = flags[flags.index("--task") + 1]
    command = [
        *TEACHER,
        *flags,
        *STEPS,
        "--ckpt_step",
        "2",
        "--batch_size",
        "8",
        "--accum_step",
        "2",
        "--dropout",
        "0.1",
    ]
    with one_thread():
        run(w, "run_tinybert_distil.py", "--experiment", f"{cid}_ref", *command, *OLD_FLAGS)
        with pytest.raises(Stopped):
            run(w, "run_tinybert_distil.py", "--experiment", f"{cid}_old", *command, *OLD_FLAGS)
    ref, old = w["exp"] / f"{cid}_ref_bert_{task}", w["exp"] / f"{cid}_old_bert_{task}"
    assert (old / "resume-2.pt").is_file() and not (old / "model-4.pt").exists()
    config = json.loads((old / "config.json").read_text(encoding="utf-8"))
    assert {k: config[k] for k in OLD_RULES} == OLD_RULES
    config = {k: v for k, v in config.items() if k not in OLD_RULES}
    (old / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    state = torch.load(resume_path(old, 2), weights_only=True)
    state["config_sha256"] = cfg.config_digest(config)
    torch.save(state, resume_path(old, 2))

    with one_thread():
        resumed = run(w, "run_tinybert_distil.py", "--experiment", f"{cid}_old", *command)
    assert "resuming from model-2.pt" in resumed.stderr, resumed.stderr
    assert "started before a fidelity fix" in resumed.stderr and all(k in resumed.stderr for k in OLD_RULES)
    after = json.loads((old / "config.json").read_text(encoding="utf-8"))
    assert not set(OLD_RULES) & set(after)
    files = ["model-4.pt", *(["projection-4.pt"] if cid == "intermediate" else [])]
    for name in files:
        a, b = (torch.load(f / name, weights_only=True) for f in (ref, old))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f"{cid}/{name}"
    assert scalars(w, f"{cid}_old_bert_{task}", "loss") == scalars(w, f"{cid}_ref_bert_{task}", "loss")

    # re-issued with --config from the old run's config.json into a folder of its own: that older run again (its
    # rules, its config.json without the fields), bit for bit
    with one_thread():
        again = run(w, "run_tinybert_distil.py", "--config", str(old / "config.json"), "--experiment", f"{cid}_cfg")
    assert "re-issued from" in again.stderr and all(k in again.stderr for k in OLD_RULES), again.stderr
    cfg_run = w["exp"] / f"{cid}_cfg_bert_{task}"
    assert not set(OLD_RULES) & set(json.loads((cfg_run / "config.json").read_text(encoding="utf-8")))
    for name in files:
        a, b = (torch.load(f / name, weights_only=True) for f in (ref, cfg_run))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f"{cid}/--config/{name}"

    with one_thread():
        fresh = run(w, "run_tinybert_distil.py", "--experiment", f"{cid}_new", *command)
    assert "fidelity fix" not in fresh.stderr
    new = w["exp"] / f"{cid}_new_bert_{task}"
    recorded = json.loads((new / "config.json").read_text(encoding="utf-8"))
    assert {k: recorded[k] for k in OLD_RULES} == {
        "tinybert_soft_reduction": "mean",
        "tinybert_regression_target": "gold",
        "tinybert_intermediate_schedule": "constant",
        "tinybert_incomplete_batches": "skip",
    }
    a, b = (torch.load(f / "model-4.pt", weights_only=True) for f in (ref, new))
    assert not all(torch.equal(a[k], b[k]) for k in a)


def test_skipping_incomplete_batches_under_torchrun_matches_one_process(run, tiny_bert, data_root, exp_root):
    """The micro-batch skipped is the global one: 29 rows in micro-batches of 3 (batch 6, accum 2) leave 2 rows out
    of each epoch, and two ranks (shares of 2 and 1 rows of every full micro-batch) end where one process does, at
    the intermediate stage's constant rate, W_h included."""
    from test_distributed import close, layerwise_over_a_teacher, load, torchrun

    common = [
        *layerwise_over_a_teacher(run, tiny_bert, 2),
        "--d_model",
        "24",
        "--d_ff",
        "48",
        "--mu",
        "10",
        "--total_step",
        "6",
        "--warmup_step",
        "1",
        "--ckpt_step",
        "6",
        "--log_step",
        "3",
        "--device_id",
        "-1",
    ]
    run("run_tinybert_distil.py", "--experiment", "one", *common)
    torchrun("run_tinybert_distil.py", ["--experiment", "two", *common], data_root, exp_root)
    one, two = exp_root / "one_bert_qqp", exp_root / "two_bert_qqp"
    for name in ("model-6.pt", "projection-6.pt"):
        close(load(one / name), load(two / name))
    a, b = tb_scalars(exp_root / "log" / "one_bert_qqp"), tb_scalars(exp_root / "log" / "two_bert_qqp")
    for tag in ("loss", "attention_loss", "hidden_loss", "embedding_loss"):
        np.testing.assert_allclose(
            [v for _, v in b[f"qqp/train/bert/{tag}"]],
            [v for _, v in a[f"qqp/train/bert/{tag}"]],
            rtol=1e-4,
            err_msg=tag,
        )
    assert [v for _, v in b["qqp/train/bert/lr"]] == pytest.approx([1e-3, 1e-3], rel=1e-6)


def test_a_regression_temperature_refusal_names_the_soft_loss_of_the_rule():
    """--softmax_temp on a regression task is refused; the message says what the soft loss is under the rule in
    force (the MSE to the gold score by default, to the teacher's score under --tinybert_regression_target teacher)."""
    from conftest import method_from_flags

    from fine_tune.engine.protocol import TeacherShape
    from fine_tune.errors import UserError

    shape = TeacherShape(2, 32, 2)
    stage = ["--tinybert_stage", "prediction", "--softmax_temp", "2"]
    with pytest.raises(UserError, match=r"the soft loss is the MSE to the gold score \(leave --softmax_temp at 1\)"):
        method_from_flags("tinybert", stage, shape, 0, task="stsb")
    with pytest.raises(UserError, match=r"the soft loss is the MSE to the teacher's score"):
        method_from_flags("tinybert", [*stage, "--tinybert_regression_target", "teacher"], shape, 0, task="stsb")
