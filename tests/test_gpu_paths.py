"""The GPU paths, proven on a CPU (issue 20): device placement under torchrun, logged parts from another device,
fp16 loss-scaling semantics with a GradScaler forced on, no host-device sync in a training step, a shape-stable
compiled forward, ALP-KD in fp32 under autocast, only what a method reads crossing devices, a teacher on another
device queued to overlap the student (issue 31), CUDA random streams restored by role. The torchrun run with hidden
losses only is in test_distributed.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_scripts_e2e import tb_scalars
from transformers import BertConfig, BertForSequenceClassification

from fine_tune.engine.device import Precision
from fine_tune.engine.optim import GATE_NO_DECAY, OptimiserSettings
from fine_tune.engine.protocol import ExtraParameters
from fine_tune.engine.trainer import Trainer, TrainSettings
from fine_tune.errors import UserError
from fine_tune.experiment import ExperimentDir
from fine_tune.methods import LAD, PKD, HardLabel
from fine_tune.models.forward import forward

D, S = 8, 12


def bert(layers: int, seed: int = 0, dropout: float = 0.0, positions: int = S) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    return BertForSequenceClassification(
        BertConfig(
            vocab_size=300,
            hidden_size=D,
            intermediate_size=16,
            num_attention_heads=2,
            max_position_embeddings=positions,
            num_hidden_layers=layers,
            hidden_dropout_prob=dropout,
            attention_probs_dropout_prob=dropout,
        )
    )


def fixed_batch(lengths=(12, 7, 3, 9)):
    g = torch.Generator().manual_seed(1)
    n = len(lengths)
    mask = (torch.arange(S)[None, :] < torch.tensor(lengths)[:, None]).long()
    return {
        "input_ids": torch.randint(5, 60, (n, S), generator=g) * mask,
        "token_type_ids": torch.zeros(n, S, dtype=torch.long),
        "attention_mask": mask,
        "labels": torch.tensor([0, 1] * (n // 2)),
    }


def trainer_for(
    tmp_path,
    name,
    method,
    steps,
    *,
    log_step=None,
    ckpt_step=None,
    precision=None,
    teacher=None,
    teacher_device=None,
    collator=None,
    rows=4,
    **kw,
):
    optimiser = OptimiserSettings(lr=1e-3, total_step=steps, warmup_step=1, weight_decay=0.0, max_norm=1.0)
    settings = TrainSettings(
        optimiser=optimiser,
        batch_size=4,
        accum_step=1,
        ckpt_step=ckpt_step or steps,
        log_step=log_step or steps,
        seed=0,
        tag_prefix="qqp/train/bert",
    )
    exp = ExperimentDir(tmp_path, name)
    exp.path.mkdir(parents=True, exist_ok=True)
    batch = fixed_batch()
    from fine_tune.reporting import TensorBoardReporter

    return Trainer(
        kw.pop("student", None) or bert(2),
        method,
        collator or (lambda r: dict(batch)),
        rows,
        settings,
        exp,
        torch.device("cpu"),
        precision or Precision("cpu", None),
        teacher=teacher,
        teacher_device=teacher_device,
        progress=False,
        forward=forward,
        reporter=TensorBoardReporter(exp.log_dir),
        **kw,
    )


# ------------------------------------------------------------------ 1. torchrun: teacher and gate devices per rank


def fake_cuda(monkeypatch, count: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def fake_rank(monkeypatch, rank: int, size: int) -> None:
    for k, v in {"WORLD_SIZE": size, "RANK": rank, "LOCAL_RANK": rank, "LOCAL_WORLD_SIZE": size}.items():
        monkeypatch.setenv(k, str(v))


def test_teacher_and_gate_devices_are_relative_to_each_rank_under_torchrun(monkeypatch):
    from fine_tune.engine.device import resolve_device, resolve_placement

    fake_cuda(monkeypatch, 4)
    placed = {}
    for rank in (0, 1):
        fake_rank(monkeypatch, rank, 2)
        student = resolve_device(0, None)  # LOCAL_RANK wins over --device_id
        placed[rank] = (
            student,
            resolve_placement(0, "--tdevice_id", student, 0),
            resolve_placement(1, "--tdevice_id", student, 0),
            resolve_placement(1, "--gate_device_id", student, 0),
            resolve_placement(None, "--gate_device_id", student, 0),
            resolve_placement(-1, "--tdevice_id", student, 0),
        )
        with pytest.raises(
            UserError,
            match=r"--tdevice_id 2: under torchrun it is relative to each rank .* use "
            r"--tdevice_id 0\.\.1",
        ):
            resolve_placement(2, "--tdevice_id", student, 0)
    cuda = [torch.device(f"cuda:{i}") for i in range(4)]
    cpu = torch.device("cpu")
    assert placed[0] == (cuda[0], cuda[0], cuda[2], cuda[2], cuda[0], cpu)
    assert placed[1] == (cuda[1], cuda[1], cuda[3], cuda[3], cuda[1], cpu)  # no device shared by two ranks
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):  # one process: absolute indices, as before
        monkeypatch.delenv(k)
    assert resolve_placement(3, "--tdevice_id", cuda[1], 1) == cuda[3]
    assert resolve_placement(1, "--tdevice_id", cuda[1], 1) == cuda[1]
    with pytest.raises(UserError, match="--gate_device_id 4: this machine has 4 CUDA device"):
        resolve_placement(4, "--gate_device_id", cuda[0], 0)


# ------------------------------------------------------------------ 2. logged parts from another device


class OnAnotherDevice(torch.Tensor):
    """A CPU tensor that behaves as if it lived on another device: mixing it with an ordinary tensor fails as
    CUDA does ("Expected all tensors to be on the same device"); ``.to(device)`` / ``.cpu()`` bring it back."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        with torch._C.DisableTorchFunctionSubclass():
            if name in ("to", "cpu"):
                return func(*args, **kwargs).as_subclass(torch.Tensor)
            tensors = [a for a in list(args) + list(kwargs.values()) if isinstance(a, torch.Tensor)]
            if any(not isinstance(t, OnAnotherDevice) for t in tensors) and name not in ("__get__", "__set__"):
                raise RuntimeError("Expected all tensors to be on the same device (simulated)")
            out = func(*args, **kwargs)
        return out.as_subclass(OnAnotherDevice) if isinstance(out, torch.Tensor) else out


class GateStatFromElsewhere(HardLabel):
    """Fine-tuning that also logs a statistic computed on another device (as LAD's gate means on the gates' GPU)."""

    def losses(self, batch, student, teacher=None):
        parts = super().losses(batch, student, teacher)
        parts["gate_mean_1"] = torch.tensor(0.25).as_subclass(OnAnotherDevice)
        return parts


def test_a_resumed_window_meets_parts_logged_on_another_device(tmp_path):
    """The checkpoint (step 2) falls inside the logging window (steps 1-4): the resumed run's restored window sums
    live on the student's device and meet the next step's part from the other device."""

    class Killed(Exception):
        pass

    first = trainer_for(tmp_path, "run", GateStatFromElsewhere(), 4, log_step=4, ckpt_step=2)
    save = first.save

    def save_then_die(step):
        save(step)
        raise Killed

    first.save = save_then_die
    with pytest.raises(Killed):
        first.train()
    resumed = trainer_for(tmp_path, "run", GateStatFromElsewhere(), 4, log_step=4, ckpt_step=2)
    resumed.train(resume_step=2)
    logged = tb_scalars(resumed.exp.log_dir)["qqp/train/bert/gate_mean_1"]
    assert logged == [(4, pytest.approx(0.25))]


# ------------------------------------------------------------------ 3. fp16 loss scaling (GradScaler on CPU)


FP16 = Precision("cpu", torch.float16)


@pytest.fixture()
def scaler_on_cpu(monkeypatch):
    """fp16 with a GradScaler on this CPU (Precision("cpu", torch.float16) uses one)."""
    monkeypatch.setattr(Precision, "use_scaler", property(lambda self: self.dtype == torch.float16))


class Probe(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(3))


class WithExtra(HardLabel):
    """Fine-tuning plus a small extra parameter set (as LAD's gates) with its own optimiser and schedule; ``bad``
    maps a step (1-based, counted by forward calls) to what goes wrong there: "inf_extra" (an inf gradient in
    the extra set only), "inf_student" (in the student), "nan_loss" (a NaN loss from the forward)."""

    def __init__(self, bad: dict[int, str], total_step: int):
        super().__init__()
        self.bad, self.calls = bad, 0
        self.probe = Probe()
        self.settings = OptimiserSettings(lr=1e-2, total_step=total_step, warmup_step=1, weight_decay=0.0)

    def extra_parameters(self):
        return [ExtraParameters("gate", [self.probe], self.settings)]

    def losses(self, batch, student, teacher=None):
        self.calls += 1
        what = self.bad.get(self.calls, "")
        loss = super().losses(batch, student)["loss"] + 1e-3 * (self.probe.weight**2).sum()
        if what == "inf_extra":  # a finite loss whose gradient overflows in the extra set only
            w = self.probe.weight * 1.0
            w.register_hook(lambda g: torch.full_like(g, float("inf")))
            loss = loss + 1e-3 * w.sum()
        elif what == "inf_student":
            student.logits.register_hook(lambda g: torch.full_like(g, float("inf")))
        elif what == "nan_loss":
            loss = loss * float("nan")
        return {"loss": loss}


def test_a_skipped_fp16_step_moves_no_optimiser_and_no_schedule(tmp_path, scaler_on_cpu):
    method = WithExtra({2: "inf_extra"}, total_step=4)
    trainer = trainer_for(tmp_path, "skip", method, 4, log_step=4, precision=FP16)
    trainer.train()
    for part in trainer.parts:  # one skipped step of four: 3 updates, 3 schedule steps, for both sets alike
        state = part.optimizer.state_dict()["state"]
        assert {int(s["step"]) for s in state.values()} == {3}, part.name
        assert part.scheduler.last_epoch == 3, part.name
    assert torch.isfinite(method.probe.weight).all()
    assert trainer.scaler.get_scale() == 65536.0 / 2  # halved once
    logged = tb_scalars(trainer.exp.log_dir)
    assert logged["qqp/train/bert/skipped_steps"] == [(4, 1.0)]
    assert logged["qqp/train/bert/loss_scale"] == [(4, 32768.0)]
    ((step, norm),) = logged["qqp/train/bert/grad_norm"]
    assert step == 4 and np.isfinite(norm) and norm > 0  # the mean over the 3 applied steps, not poisoned by inf


def test_a_nan_loss_stops_an_fp16_run_at_once(tmp_path, scaler_on_cpu):
    """A NaN loss is an overflow in the forward, not a skipped step: the run stops at the next check, before the
    checkpoint, with the step named (it was tolerated 99 times before)."""
    method = WithExtra({3: "nan_loss"}, total_step=8)
    trainer = trainer_for(tmp_path, "nan", method, 8, log_step=2, ckpt_step=2, precision=FP16)
    with pytest.raises(
        UserError,
        match=r"non-finite loss \(loss\) at step 3 of nan: run stopped at step 4; the last "
        r"good checkpoint is model-2\.pt \(lower --lr, use --amp_dtype bf16",
    ):
        trainer.train()
    assert trainer.exp.checkpoints() == [2]


def test_a_collapsing_loss_scale_stops_the_run_and_says_so(tmp_path, scaler_on_cpu):
    method = WithExtra({k: "inf_student" for k in range(1, 40)}, total_step=40)
    trainer = trainer_for(tmp_path, "collapse", method, 40, log_step=20, ckpt_step=20, precision=FP16)
    with pytest.raises(
        UserError,
        match=r"fp16 loss scale collapsed to 0\.5 at step 17 of collapse \(17 consecutive "
        r"steps skipped.*no checkpoint was written",
    ):
        trainer.train()
    assert trainer.exp.checkpoints() == []


# ------------------------------------------------------------------ 4. no host-device sync in a training step


@pytest.mark.parametrize(
    "kind",
    ["fine_tune", "lad", "pkd", "lad_dynamic", "tinybert_intermediate", "tinybert_prediction", "minilm", "lad_fp16"],
)
def test_a_training_step_makes_no_host_device_sync(kind, tmp_path, tiny_bert, data_root):
    """The default training path of each method, counted by fine_tune.engine.syncs.SyncCounter (tensor-to-Python
    conversions, bool() of a tensor, nonzero, torch.equal, blocking host-device copies, ...) outside the logging
    and checkpoint steps: none in fp32; under fp16 the one skip decision per step."""
    from transformers import AutoTokenizer

    from fine_tune.batching import Collator, tokenize
    from fine_tune.engine.syncs import count_training_syncs
    from fine_tune.methods import MiniLM, TinyBERT
    from fine_tune.models.padding_free import training_forwards
    from fine_tune.tasks import get_task

    tok = AutoTokenizer.from_pretrained(tiny_bert)
    features = tokenize(tok, get_task("qqp").load(data_root, "train", 32), S)
    padding = "dynamic" if kind in ("fine_tune", "lad_dynamic") else "max_length"
    teacher = None if kind == "fine_tune" else bert(4, seed=3)
    gates = OptimiserSettings(lr=1e-3, total_step=4, warmup_step=1, no_decay=GATE_NO_DECAY, clip_per_module=True)
    projection = OptimiserSettings(lr=1e-3, total_step=4, warmup_step=1)
    heads = dict(student_heads=2, teacher_heads=2, student_width=D, teacher_width=D)
    method = {
        "fine_tune": lambda: HardLabel(),
        "pkd": lambda: PKD(2, 4, 0.5, 0.5, 1.0, 1.0, padding=padding),
        "lad": lambda: LAD(2, 4, 0.5, 0.5, 1.0, 1.0, d_model=D, seq_len=S, gate_optimiser=gates, padding=padding),
        "tinybert_intermediate": lambda: TinyBERT(
            2, 4, 0.0, 1.0, 1.0, 1.0, padding=padding, projection_optimiser=projection, **heads
        ),
        "tinybert_prediction": lambda: TinyBERT(2, 4, 0.0, 1.0, 1.0, 1.0, stage="prediction", padding=padding, **heads),
        "minilm": lambda: MiniLM(2, 4, 0.5, 0.5, 1.0, 1.0, padding=padding, **heads),
    }.get(kind, lambda: LAD(2, 4, 0.5, 0.5, 1.0, 1.0, d_model=D, seq_len=S, gate_optimiser=gates, padding=padding))()
    method.create_parameters(None)
    student = bert(2, dropout=0.1)
    forwards = training_forwards(
        student, teacher, enabled=True, ignores_padding=method.ignores_padding, record_attention=method.reads_attention
    )
    assert forwards.takes_layout and forwards.kind == ("packed" if method.ignores_padding else "grid")
    collator = Collator(features, tok.pad_token_id, S, padding, layout=forwards.layout)
    trainer = trainer_for(
        tmp_path,
        kind,
        method,
        4,
        log_step=2,
        ckpt_step=4,
        teacher=teacher,
        collator=collator,
        rows=len(features),
        student=student,
        student_forward=forwards.student,
        teacher_forward=forwards.teacher,
        precision=FP16 if kind.endswith("fp16") else None,
    )
    if kind.endswith("fp16"):  # the skip decision (with the loss scale), one read per step, skipped steps included
        trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**40, backoff_factor=2.0**-30)  # 1st skipped
        counter = count_training_syncs(trainer)
        assert dict(counter.by_op) == {"tolist": 4}, dict(counter.by_site)
        assert trainer.scaler.get_scale() == 2.0**10  # one step skipped, then three applied
        return
    counter = count_training_syncs(trainer)
    assert counter.total == 0, dict(counter.by_site)
    # the counter does see syncs: the padding-free forward without a layout reads the lengths back
    from fine_tune.engine.syncs import SyncCounter
    from fine_tune.engine.trainer import to_device

    with SyncCounter() as c:
        batch = to_device(collator(np.arange(4)), torch.device("cpu"))
        forwards.student(**{k: v for k, v in batch.items() if k != "model_kwargs" and k != "index" and k != "labels"})
    assert c.total > 0


# ------------------------------------------------------------------ 5. --compile: one graph per model

# Batch lengths of each forward: padded batches, batches without padding, full-width rows, 1-row batches. Packed
# (MiniLM: Q/K/V recorded, --padding dynamic: widths vary) starts with 1 row without padding (its token count
# equals its width: sizes a default trace would tie); grid (PKD's hidden MSE over every position: width 12
# always, full-width batches without a key mask in the eager plan) with 4 rows, then 1.
COMPILE_BATCHES = {
    "packed": [(7,), (5, 9, 3), (9, 9), (6,), (12, 4, 12, 2), (2, 2)],
    "grid": [(12, 7, 3, 9), (12,), (12, 12, 12), (5,), (4, 8)],
}


@pytest.mark.parametrize("kind", list(COMPILE_BATCHES))
def test_the_compiled_forwards_make_one_graph_each_for_every_batch(kind, tmp_path, monkeypatch):
    """Distillation steps under --compile (TorchDynamo, eager backend: capture only) on batches of 1 row, without
    padding, of full width and padded: the first step compiles one graph for the teacher and one for the student,
    and no later batch recompiles anything (TorchDynamo made to raise on a recompile); every step's losses
    equal the eager run's (dropout 0)."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    from fine_tune.methods import MiniLM
    from fine_tune.models.padding_free import training_forwards

    monkeypatch.setenv("FT_COMPILE_BACKEND", "eager")
    method = (
        MiniLM(1, 2, 0.5, 0.5, 2.0, 1.0, student_heads=2, teacher_heads=2, padding="dynamic")
        if kind == "packed"
        else PKD(1, 2, 0.5, 0.5, 2.0, 1.0)
    )

    def batches(forwards):
        for lengths in COMPILE_BATCHES[kind]:
            lengths = np.asarray(lengths)
            width = int(lengths.max()) if kind == "packed" else S
            mask = torch.from_numpy((np.arange(width)[None, :] < lengths[:, None]).astype(np.int64))
            yield {
                "input_ids": torch.randint(
                    5, 60, (len(lengths), width), generator=torch.Generator().manual_seed(len(lengths))
                )
                * mask,
                "token_type_ids": torch.zeros_like(mask),
                "attention_mask": mask,
                "labels": torch.arange(len(lengths)) % 2,
                "model_kwargs": {"layout": forwards.layout(lengths, width)},
            }

    def steps(compile: bool):
        student, teacher = bert(1), bert(2, seed=3)
        forwards = training_forwards(
            student,
            teacher,
            enabled=True,
            ignores_padding=method.ignores_padding,
            compile=compile,
            record_attention=method.reads_attention,
        )
        assert forwards.kind == kind
        queue = batches(forwards)
        settings = TrainSettings(
            optimiser=OptimiserSettings(lr=1e-3, total_step=1, warmup_step=0),
            batch_size=4,
            accum_step=1,
            ckpt_step=1,
            log_step=1,
            seed=0,
            tag_prefix="qqp/train/bert",
            compile=compile,
        )
        exp = ExperimentDir(tmp_path, f"compile-{compile}")
        exp.path.mkdir(parents=True, exist_ok=True)
        trainer = Trainer(
            student,
            method,
            lambda rows: next(queue),
            4,
            settings,
            exp,
            torch.device("cpu"),
            Precision("cpu", None),
            teacher=teacher,
            progress=False,
            forward=forward,
            student_forward=forwards.student,
            teacher_forward=forwards.teacher,
        )
        for i, lengths in enumerate(COMPILE_BATCHES[kind]):
            with torch._dynamo.config.patch(error_on_recompile=i > 0):  # teacher and student compile in step 1
                yield {k: v.item() for k, v in trainer._micro_step(np.arange(len(lengths))).items()}
            if compile:
                assert counters["stats"]["unique_graphs"] == 2, (lengths, dict(counters["stats"]))

    torch._dynamo.reset()
    counters.clear()
    for compiled, eager in zip(steps(True), steps(False), strict=True):
        assert compiled.keys() == eager.keys()
        for k in eager:
            assert compiled[k] == pytest.approx(eager[k], rel=1e-5, abs=1e-6), k
    torch._dynamo.reset()


# ------------------------------------------------------------------ 6. ALP-KD in fp32 under autocast


def test_alp_scores_and_targets_stay_fp32_under_autocast():
    from fine_tune.engine.protocol import ModelOutputs
    from fine_tune.methods.alp import ALPKD, alp_target, alp_weights

    g = torch.Generator().manual_seed(0)
    student = [torch.randn(2, 5, D, generator=g) for _ in range(2)]
    teacher = [torch.randn(2, 5, D, generator=g) for _ in range(4)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        w = alp_weights(student[0], torch.stack(teacher))
        target = alp_target(w, torch.stack(teacher))
        pairs, _ = ALPKD(2, 4, 0.5, 0.5, 1.0, 1.0, mode="alp-kd-hidden").hidden_pairs(
            ModelOutputs(torch.zeros(2, 2), tuple(student)), ModelOutputs(torch.zeros(2, 2), tuple(teacher))
        )
    assert w.dtype == target.dtype == torch.float32
    assert all(p.target.dtype == torch.float32 for p in pairs)
    exact = torch.softmax(
        torch.einsum("bsd,kbsd->bsk", student[0].double(), torch.stack(teacher).double()) / D**0.5, -1
    )
    torch.testing.assert_close(w.double(), exact, atol=1e-6, rtol=1e-6)  # bf16 would miss by ~1e-2


# ------------------------------------------------------------------ 8. what crosses devices; RNG by role


class Recording(torch.nn.Module):
    """The teacher's forward, remembering the hidden states it returned."""

    def __init__(self, model):
        super().__init__()
        self.model, self.hidden_ids, self.kept = model, set(), []

    def forward(self, **kw):
        out = self.model(**kw)
        self.kept += out.hidden_states  # alive, so that no other tensor can take one of their ids
        self.hidden_ids |= {id(h) for h in out.hidden_states}
        return out


class CountTeacherMoves(torch.overrides.TorchFunctionMode):
    def __init__(self, ids):
        super().__init__()
        self.ids, self.moves = ids, 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") == "to" and args and id(args[0]) in self.ids:
            self.moves += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("kind, moves", [("pkd", 2), ("lad", 0)])
def test_only_what_a_method_reads_crosses_from_the_teacher_device(kind, moves, tmp_path, monkeypatch):
    """Teacher (4 layers) on another device (cpu:0 stands for it), student with 2 layers: PKD moves the 2 teacher
    layers it reads, LAD with its gates beside the teacher moves none of them (only its 2 targets travel); the
    engine moves none (it moved all 4 before)."""
    from fine_tune.engine import trainer as engine

    # cpu:0 stands for another device in the engine (the methods still know it is this CPU: no copies there)
    monkeypatch.setattr(engine, "same_device", lambda a, b: a == b)
    gate_device = torch.device("cpu", 0)
    gates = OptimiserSettings(lr=1e-3, total_step=1, warmup_step=0, no_decay=GATE_NO_DECAY, clip_per_module=True)
    method = (
        PKD(2, 4, 0.5, 0.5, 1.0, 1.0)
        if kind == "pkd"
        else LAD(2, 4, 0.5, 0.5, 1.0, 1.0, d_model=D, seq_len=S, gate_optimiser=gates)
    )
    method.create_parameters(gate_device)
    teacher = bert(4, seed=3)
    recording = Recording(teacher)
    trainer = trainer_for(
        tmp_path, kind, method, 1, teacher=teacher, teacher_device=gate_device, teacher_forward=recording
    )
    with CountTeacherMoves(recording.hidden_ids) as counter:
        trainer._micro_step(np.arange(4))
    assert len(recording.hidden_ids) == 5 and counter.moves == moves


class Noted(torch.nn.Module):
    """A forward that notes each of its calls in ``events`` and keeps the logits it returned (``logits``)."""

    def __init__(self, model, name, events):
        super().__init__()
        self.model, self.name, self.events, self.logits = model, name, events, []

    def forward(self, **kw):
        self.events.append(self.name)
        out = self.model(**kw)
        self.logits.append(out.logits)
        return out


class NoteLogitsMoves(torch.overrides.TorchFunctionMode):
    def __init__(self, logits, events):
        super().__init__()
        self.logits, self.events = logits, events

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") == "to" and args and any(args[0] is t for t in self.logits):
            self.events.append(("teacher logits moved", (kwargs or {}).get("non_blocking", False)))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("teacher_on, order", [("gpu", ["teacher", "student"]), ("cpu", ["student", "teacher"])])
def test_the_students_forward_is_queued_before_anything_crosses_from_the_teacher_device(
    teacher_on, order, tmp_path, monkeypatch
):
    """MiniLM (it reads the teacher's attention inputs and logits), teacher on another device (cpu:0 stands for
    it): the teacher's batch comes from the host, both forwards are called before the teacher's logits move to the
    student's device (a teacher on another GPU first; a CPU teacher under a GPU student's queued forward after it),
    the method gets the teacher's attention inputs, and every loss and gradient equals the one-device run's."""
    from fine_tune.engine import trainer as engine
    from fine_tune.methods import MiniLM
    from fine_tune.models.attention_capture import AttentionCapture

    def run(teacher_device):
        events, batches = [], []
        method = MiniLM(2, 4, 0.5, 0.5, 1.0, 1.0, student_heads=2, teacher_heads=2)
        student, teacher = bert(2), bert(4, seed=3)
        noted_teacher = Noted(AttentionCapture(teacher), "teacher", events)
        host = fixed_batch()
        trainer = trainer_for(
            tmp_path,
            f"minilm-{teacher_device}",
            method,
            1,
            student=student,
            teacher=teacher,
            teacher_device=teacher_device,
            teacher_forward=noted_teacher,
            student_forward=Noted(AttentionCapture(student), "student", events),
            collator=lambda rows: host,
        )
        real_to_device, real_losses = engine.to_device, method.losses
        monkeypatch.setattr(engine, "to_device", lambda b, d: batches.append((b is host, d)) or real_to_device(b, d))
        monkeypatch.setattr(method, "losses", lambda b, s, t: events.append(t) or real_losses(b, s, t))
        with NoteLogitsMoves(noted_teacher.logits, events):
            parts = trainer._micro_step(np.arange(4))
        return events, batches, parts, {n: p.grad for n, p in student.named_parameters()}

    single = run(None)
    monkeypatch.setattr(engine, "same_device", lambda a, b: a == b)
    # which device the host computes on: the CPU (a cpu:0 teacher with teacher_on="cpu"); every other one queues
    monkeypatch.setattr(engine, "computed_by_host", lambda d: teacher_on == "cpu" and d.index == 0)
    events, batches, parts, grads = run(torch.device("cpu", 0))
    assert events[:3] == order + [("teacher logits moved", True)]  # to a device that queues: without blocking
    assert events[3].attention_inputs is not None  # what the teacher's forward gave, the logits moved
    assert batches == [(True, torch.device("cpu")), (True, torch.device("cpu", 0))]  # both copies from the host
    assert single[0][:2] == ["teacher", "student"] and len(single[0]) == 3  # no move: the method
    assert parts.keys() == single[2].keys() and all(torch.equal(parts[k], single[2][k]) for k in parts)
    assert all(torch.equal(grads[n], single[3][n]) for n in grads)


def test_cuda_random_streams_are_restored_by_role_not_by_index(monkeypatch, capsys):
    """Saved with the student on cuda:1, resumed with it on cuda:0 (another machine, or rank k under torchrun):
    the student's stream continues on cuda:0. A run saved on CPU says that the stream starts afresh."""
    from fine_tune.engine import checkpoint

    fake_cuda(monkeypatch, 2)
    streams = {0: torch.tensor([0], dtype=torch.uint8), 1: torch.tensor([1], dtype=torch.uint8)}
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device: streams[torch.device(device).index].clone())
    monkeypatch.setattr(
        torch.cuda, "set_rng_state", lambda s, device: streams.__setitem__(torch.device(device).index, s)
    )
    saved = checkpoint.rng_state({"student": torch.device("cuda:1")})
    streams[1] = torch.tensor([7], dtype=torch.uint8)
    assert checkpoint.set_rng_state(saved, {"student": torch.device("cuda:0")}) == []
    assert streams[0].tolist() == [1]  # cuda:1's saved stream now drives the student on cuda:0
    on_cpu = checkpoint.rng_state({"student": torch.device("cpu")})
    notes = checkpoint.set_rng_state(on_cpu, {"student": torch.device("cuda:0")})
    assert notes == ["the student's CUDA random stream on cuda:0 starts afresh (the run was saved without one)"]
