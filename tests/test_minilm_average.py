"""MiniLM / MiniLMv2: each relation KL averaged per sequence, then over the batch, as MiniLMv2's public code
(Bloomberg's minilmv2.bb, ``minilmv2/minilmv2.py``, ``MiniLM._get_kl_loss``), whatever the padding; a run
started before keeps the batch-token average it started with (``minilm_average``, fine_tune/config.py).

The reference below is that code's reduction written out with plain torch ops in float64: per sequence, its
real rows and keys sliced out (no mask), the teacher's softmax against the student's log-softmax, summed and
divided by ``heads * n_b``; the sum over the sequences divided by the batch size.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys

import pytest
import torch
from conftest import REPO, run_in_process
from transformers import AutoModelForSequenceClassification

from fine_tune import synthetic
from fine_tune.engine.protocol import TeacherShape
from fine_tune.methods.minilm import minilm_loss, minilmv2_loss, relation_kl

LENGTHS = (7, 4, 2)


def split(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, S, D] -> [B, heads, S, D / heads] (the heads' columns side by side, as BERT's and minilmv2.bb's)."""
    b, s, d = x.shape
    return x.view(b, s, heads, d // heads).permute(0, 2, 1, 3)


def released_kl(s_left, s_right, t_left, t_right, heads: int, lengths) -> float:
    """minilmv2.bb's ``_get_kl_loss`` on the scaled dot products of (left, right), float64: per sequence b of
    n_b real tokens, KL(softmax(teacher) || softmax(student)) over its [heads, n_b, n_b] block, summed, divided
    by heads * n_b; then the mean over the batch."""

    def scores(left, right):
        a, b_ = split(left.double(), heads), split(right.double(), heads)
        return a @ b_.transpose(-1, -2) / math.sqrt(a.shape[-1])

    rel_s, rel_t = scores(s_left, s_right), scores(t_left, t_right)
    loss = 0.0
    for b, n in enumerate(lengths):
        p_t = torch.softmax(rel_t[b, :, :n, :n], dim=-1)
        log_p_s = torch.log_softmax(rel_s[b, :, :n, :n], dim=-1)
        loss += float((p_t * (p_t.log() - log_p_s)).sum()) / (heads * n)
    return loss / len(lengths)


def token_kl(s_left, s_right, t_left, t_right, heads: int, lengths) -> float:
    """The batch-token average of runs started before: the same sums over every sequence's real rows, divided
    once by heads * sum_b n_b."""
    total = sum(
        released_kl(s_left[b : b + 1], s_right[b : b + 1], t_left[b : b + 1], t_right[b : b + 1], heads, [n])
        * heads
        * n
        for b, n in enumerate(lengths)
    )
    return total / (heads * sum(lengths))


def qkv(seed: int, width: int, lengths=LENGTHS, length: int = 7, pad_value: float | None = None):
    """(q, k, v) [B, S, D] float32 with random values (also at the padding positions, or ``pad_value`` there) and
    the mask [B, S] of right-padded ``lengths``."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.tensor([[1 if s < n else 0 for s in range(length)] for n in lengths])
    out = []
    for _ in range(3):
        x = torch.randn(len(lengths), length, width, generator=g) * 2.0
        if pad_value is not None:
            x = x.masked_fill(~mask.bool()[..., None], pad_value)
        out.append(x)
    return out, mask


def test_per_sequence_average_is_the_released_reduction_and_differs_from_the_token_average():
    """Lengths 7 / 4 / 2 (the padded rows filled with random values): every part of MiniLMv2 (4 relation heads,
    student 8 wide, teacher 12) and of MiniLM (2 heads each) equals minilmv2.bb's per-sequence reduction; the
    token average of runs started before is a different number (the short sequences weigh less in it)."""
    (sq, sk, sv), mask = qkv(1, 8)
    (tq, tk, tv), _ = qkv(2, 12)
    total, parts = minilmv2_loss(sq, sk, sv, tq, tk, tv, 4, mask)
    expected = [released_kl(s, s, t, t, 4, LENGTHS) for s, t in ((sq, tq), (sk, tk), (sv, tv))]
    for name, value in zip(("qq_kl", "kk_kl", "vv_kl"), expected):
        assert parts[name].item() == pytest.approx(value, rel=1e-5)
    assert total.item() == pytest.approx(sum(expected), rel=1e-5)
    old_total, old_parts = minilmv2_loss(sq, sk, sv, tq, tk, tv, 4, mask, average="token")
    old = [token_kl(s, s, t, t, 4, LENGTHS) for s, t in ((sq, tq), (sk, tk), (sv, tv))]
    for name, value in zip(("qq_kl", "kk_kl", "vv_kl"), old):
        assert old_parts[name].item() == pytest.approx(value, rel=1e-5)
    assert abs(old_total.item() - total.item()) > 0.05 * total.item()  # not the same number under another name

    (tq8, tk8, tv8), _ = qkv(3, 8)
    total, parts = minilm_loss(sq, sk, sv, tq8, tk8, tv8, 2, 2, mask)
    attention = released_kl(sq, sk, tq8, tk8, 2, LENGTHS)
    value = released_kl(sv, sv, tv8, tv8, 2, LENGTHS)
    assert parts["attention_kl"].item() == pytest.approx(attention, rel=1e-5)
    assert parts["value_kl"].item() == pytest.approx(value, rel=1e-5)
    assert total.item() == pytest.approx(attention + value, rel=1e-5)
    _, old_parts = minilm_loss(sq, sk, sv, tq8, tk8, tv8, 2, 2, mask, average="token")
    assert old_parts["attention_kl"].item() == pytest.approx(token_kl(sq, sk, tq8, tk8, 2, LENGTHS), rel=1e-5)
    assert abs(old_parts["attention_kl"].item() - attention) > 0.05 * attention


def test_equal_lengths_give_the_same_value_either_way():
    (sq, sk, sv), mask = qkv(4, 8, lengths=(5, 5, 5), length=5)
    (tq, tk, tv), _ = qkv(5, 12, lengths=(5, 5, 5), length=5)
    new, _ = minilmv2_loss(sq, sk, sv, tq, tk, tv, 4, mask)
    old, _ = minilmv2_loss(sq, sk, sv, tq, tk, tv, 4, mask, average="token")
    unmasked, _ = minilmv2_loss(sq, sk, sv, tq, tk, tv, 4, None)
    assert new.item() == pytest.approx(old.item(), rel=1e-6) and new.item() == pytest.approx(unmasked.item(), rel=1e-6)


@pytest.mark.parametrize("average", ["sequence", "token"])
def test_extra_padding_changes_nothing(average):
    """The same real tokens padded to 7 or to 12 positions, the padding filled with other values, and a batch with
    an extra all-padding row: the same loss (its gradient on the real tokens too)."""
    (sq, sk, sv), mask = qkv(6, 8)
    (tq, tk, tv), _ = qkv(7, 12)

    def widened(x, width, fill):
        out = torch.full((x.shape[0], width, x.shape[2]), fill)
        out[:, :7] = x
        return out.masked_fill(~wide_mask.bool()[..., None], fill)

    wide_mask = torch.zeros(3, 12, dtype=torch.long)
    wide_mask[:, :7] = mask
    narrow = [x.clone().requires_grad_() for x in (sq, sk, sv)]
    wide = [widened(x, 12, 50.0).requires_grad_() for x in (sq, sk, sv)]
    loss7, _ = minilmv2_loss(*narrow, tq, tk, tv, 4, mask, average)
    loss12, _ = minilmv2_loss(*wide, *(widened(x, 12, -3.0) for x in (tq, tk, tv)), 4, wide_mask, average)
    assert loss12.item() == pytest.approx(loss7.item(), rel=1e-6)
    loss7.backward()
    loss12.backward()
    real = mask.bool()[..., None]
    for a, b in zip(narrow, wide):
        torch.testing.assert_close(b.grad[:, :7] * real, a.grad * real, rtol=1e-5, atol=1e-7)
        assert not b.grad[:, 7:].any() and not (b.grad[:, :7] * ~real).any()
    # a row with no real token at all (no sequence): neither counted nor NaN
    extra = [torch.cat([x, torch.randn(1, 7, x.shape[2])]) for x in (sq, sk, sv, tq, tk, tv)]
    loss, _ = minilmv2_loss(*extra, 4, torch.cat([mask, torch.zeros(1, 7, dtype=torch.long)]), average)
    assert loss.item() == pytest.approx(loss7.item(), rel=1e-6)


def test_a_batch_is_the_row_weighted_mean_of_its_shards():
    """Per sequence, the batch loss is a mean over rows: what gradient accumulation (micro-batches of equal size)
    and torchrun's shard weights (``world * len(share) / len(rows)``, fine_tune/engine/distributed.py) assume, so
    2 processes compute what one does. The token average is not (its shards weigh by rows, not by tokens)."""
    (sq, sk, sv), mask = qkv(8, 8)
    (tq, tk, tv), _ = qkv(9, 12)
    tensors = (sq, sk, sv, tq, tk, tv)
    for average, equal in (("sequence", True), ("token", False)):
        whole, _ = minilmv2_loss(*tensors, 4, mask, average)
        shards = [[0, 2], [1]]  # rows[rank::2]
        mean = (
            sum(
                2 * len(rows) / 3 * minilmv2_loss(*(x[rows] for x in tensors), 4, mask[rows], average)[0].item()
                for rows in shards
            )
            / 2
        )
        assert (mean == pytest.approx(whole.item(), rel=1e-6)) is equal, average


def test_relation_kl_refuses_an_unknown_average():
    x = torch.randn(1, 3, 4)
    with pytest.raises(ValueError, match="sequence"):
        relation_kl(x, x, x, x, 2, 2, None, "tokens")


# ---------------------------------------------------------------- real models, every forward


@pytest.mark.parametrize("relation_heads", [None, 4], ids=["minilm", "minilmv2"])
def test_max_length_dynamic_and_padding_free_give_the_same_loss(relation_heads):
    """The same three sequences (7, 4 and 2 tokens) through a tiny BERT teacher and student: padded to 12
    positions (--padding max_length, Hugging Face's forward with the attention hooks), to the longest row
    (--padding dynamic) and packed (the padding-free forward): one MiniLM loss, the released per-sequence
    reduction of the models' own projections."""
    from fine_tune.methods import MiniLM
    from fine_tune.models.attention_capture import AttentionCapture
    from fine_tune.models.forward import forward
    from fine_tune.models.padding_free import PaddingFree

    torch.manual_seed(3)
    teacher = AutoModelForSequenceClassification.from_config(synthetic.tiny_config("bert", num_layers=2)).eval()
    student = AutoModelForSequenceClassification.from_config(
        synthetic.tiny_config("bert", num_layers=1, hidden=16, ff=32)
    ).eval()
    for model in (teacher, student):  # sharper attention than the initialisation's near-uniform maps
        for layer in model.bert.encoder.layer:
            layer.attention.self.query.weight.data.mul_(8.0)
            layer.attention.self.key.weight.data.mul_(8.0)
    ids = torch.randint(5, 100, (3, 12))

    def batch(width: int) -> dict:
        mask = torch.tensor([[1 if s < n else 0 for s in range(width)] for n in LENGTHS])
        return {
            "input_ids": ids[:, :width] * mask,
            "token_type_ids": torch.zeros(3, width, dtype=torch.long),
            "attention_mask": mask,
        }

    method = MiniLM(
        1,
        2,
        0.0,
        0.0,
        1.0,
        1.0,
        student_heads=2,
        teacher_heads=2,
        relation_heads=relation_heads,
        student_width=16,
        teacher_width=32,
        padding="dynamic",
    )
    values = {}
    with torch.no_grad():
        for name, width, wrap in (
            ("max_length", 12, AttentionCapture),
            ("dynamic", 7, AttentionCapture),
            ("padding_free", 7, lambda m: PaddingFree(m, True, record_attention=True)),
        ):
            b = batch(width)
            values[name] = method.losses(b, forward(wrap(student), b, False), forward(wrap(teacher), b, False))[
                "attention_relation_loss"
            ].item()
        b = batch(7)
        hidden_s = student.bert(**b, output_hidden_states=True).hidden_states[0]
        hidden_t = teacher.bert(**b, output_hidden_states=True).hidden_states[1]
        att_s, att_t = student.bert.encoder.layer[0].attention.self, teacher.bert.encoder.layer[1].attention.self
        s = [f(hidden_s) for f in (att_s.query, att_s.key, att_s.value)]
        t = [f(hidden_t) for f in (att_t.query, att_t.key, att_t.value)]
    if relation_heads is None:
        expected = released_kl(s[0], s[1], t[0], t[1], 2, LENGTHS) + released_kl(s[2], s[2], t[2], t[2], 2, LENGTHS)
    else:
        expected = sum(released_kl(a, a, c, c, 4, LENGTHS) for a, c in zip(s, t))
    assert expected > 0.05  # relations that differ: the comparison can tell averages apart
    for name, value in values.items():
        assert value == pytest.approx(expected, rel=1e-5), name


# ---------------------------------------------------------------- runs started before the choice


def build(legacy: dict, relation_heads: int | None):
    from fine_tune.cli import parse_layerwise
    from fine_tune.methods import get_method
    from fine_tune.plan.training import method_settings
    from fine_tune.tasks import get_task

    flags = parse_layerwise(
        "run_minilm_distil.py",
        "",
        "minilm",
        [
            "--experiment",
            "x",
            "--task",
            "qqp",
            "--teacher_exp",
            "t",
            "--tckpt",
            "1",
            "--max_seq_len",
            "128",
            "--d_model",
            "8",
            "--d_ff",
            "16",
            "--num_attention_heads",
            "2",
            "--num_hidden_layers",
            "1",
            "--mu",
            "0.5",
            "--hard_weight",
            "0",
            "--soft_weight",
            "0",
            *(["--relation_heads", str(relation_heads)] if relation_heads else []),
        ],
    )
    return get_method("minilm").build(
        method_settings(flags, get_task("qqp"), get_method("minilm"), TeacherShape(2, 12, 2), legacy)
    )


@pytest.mark.parametrize("relation_heads", [None, 4], ids=["minilm", "minilmv2"])
def test_a_run_started_before_keeps_the_token_average(relation_heads):
    """Built for a new run the method records ``minilm_average: sequence``; built for a run whose config.json
    lacks the field (``legacy``, fine_tune/plan/training._legacy) it records and computes the token average."""
    from fine_tune.engine.protocol import ModelOutputs

    (sq, sk, sv), mask = qkv(10, 8)
    (tq, tk, tv), _ = qkv(11, 12)
    student = ModelOutputs(torch.zeros(3, 2), None, mask, ((sq, sk, sv),))
    teacher = ModelOutputs(torch.zeros(3, 2), None, mask, ((tq, tk, tv), (tq, tk, tv)))
    batch = {"labels": torch.tensor([0, 1, 1])}
    new, old = build({}, relation_heads), build({"minilm_average": "token"}, relation_heads)
    assert new.record() == {"minilm_average": "sequence"} and old.record() == {"minilm_average": "token"}
    if relation_heads:  # Q-Q, K-K, V-V over 4 relation heads
        pairs, heads = ((sq, sq, tq, tq), (sk, sk, tk, tk), (sv, sv, tv, tv)), 4
    else:  # attention distributions and value relations, head by head
        pairs, heads = ((sq, sk, tq, tk), (sv, sv, tv, tv)), 2
    assert new.losses(batch, student, teacher)["loss"].item() == pytest.approx(
        0.5 * sum(released_kl(*p, heads, LENGTHS) for p in pairs), rel=1e-5
    )
    assert old.losses(batch, student, teacher)["loss"].item() == pytest.approx(
        0.5 * sum(token_kl(*p, heads, LENGTHS) for p in pairs), rel=1e-5
    )


def test_an_old_run_resumes_with_the_token_average(tiny_bert, data_root, exp_root):
    """A MiniLM run whose config.json has no ``minilm_average`` (as one started before the choice writes it),
    SIGKILLed right after its checkpoint 2, resumes with the token average: it says so, its config.json still
    lacks the field, and it ends bit-identical to such a run left uninterrupted. A new run under another name
    records the per-sequence average and trains to other weights (dynamic padding: rows of different lengths)."""
    from fine_tune.cli import parse_layerwise
    from fine_tune.plan.training import plan_online_distill

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # computes like the killed subprocess (OMP_NUM_THREADS=1)
    try:
        run_in_process(
            "run_fine_tune.py",
            "--experiment",
            "teacher",
            "--model",
            "bert",
            "--ptrain_ver",
            str(tiny_bert),
            "--task",
            "qqp",
            "--total_step",
            "2",
            "--warmup_step",
            "1",
            "--ckpt_step",
            "2",
            "--batch_size",
            "16",
            "--lr",
            "1e-3",
            "--max_seq_len",
            "24",
            data_root=data_root,
            exp_root=exp_root,
        )
        args = [
            "--teacher_exp",
            "teacher",
            "--tmodel",
            "bert",
            "--tckpt",
            "2",
            "--model",
            "bert",
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
            "--padding",
            "dynamic",
            "--relation_heads",
            "4",
            "--mu",
            "5",
            "--total_step",
            "4",
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
            "--seed",
            "7",
            "--map_examples",
            "0",
        ]

        def folder(name: str):
            return exp_root / f"{name}_bert_qqp"

        def as_before(name: str) -> dict:  # what a run started before the choice wrote: no minilm_average
            argv = ["--experiment", name, *args, "--data_root", str(data_root), "--exp_root", str(exp_root)]
            plan = plan_online_distill(parse_layerwise("run_minilm_distil.py", "", "minilm", argv), "minilm")
            assert plan.record["minilm_average"] == "sequence" and plan.legacy == {}
            old = {k: v for k, v in plan.record.items() if k != "minilm_average"}
            folder(name).mkdir(parents=True)
            (folder(name) / "config.json").write_text(json.dumps(old))
            return old

        as_before("old_whole")
        run_in_process(
            "run_minilm_distil.py", "--experiment", "old_whole", *args, data_root=data_root, exp_root=exp_root
        )
        as_before("old")
        env = dict(
            os.environ,
            FT_DATA_ROOT=str(data_root),
            FT_EXP_ROOT=str(exp_root),
            TQDM_DISABLE="1",
            OMP_NUM_THREADS="1",
            PYTHONUNBUFFERED="1",
        )
        killed = subprocess.run(
            [
                sys.executable,
                str(REPO / "tests" / "killpoint.py"),
                "after:resume-2.pt",
                str(REPO / "run_minilm_distil.py"),
                "--experiment",
                "old",
                *args,
            ],
            env=env,
            capture_output=True,
            text=True,
            cwd=str(data_root.parent),
        )
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        assert not (folder("old") / "model-4.pt").exists()
        resumed = run_in_process(
            "run_minilm_distil.py", "--experiment", "old", *args, data_root=data_root, exp_root=exp_root
        )
        run_in_process("run_minilm_distil.py", "--experiment", "new", *args, data_root=data_root, exp_root=exp_root)
    finally:
        torch.set_num_threads(threads)
    assert "resuming from model-2.pt" in resumed.stderr
    assert "fidelity fix" in resumed.stderr and "minilm_average" in resumed.stderr, resumed.stderr
    assert "minilm_average" not in json.loads((folder("old") / "config.json").read_text())
    assert json.loads((folder("new") / "config.json").read_text())["minilm_average"] == "sequence"
    final = {name: torch.load(folder(name) / "model-4.pt", weights_only=True) for name in ("old", "old_whole", "new")}
    for key in final["old"]:
        assert torch.equal(final["old"][key], final["old_whole"][key]), key
    query = "bert.encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(final["new"][query], final["old_whole"][query])
