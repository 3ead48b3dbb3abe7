"""``--padding dynamic`` for the layer-wise methods: masked hidden losses and LAD's masked gate LayerNorm.

Expected values are computed here from the equations of doc/methods.md (plain tensor algebra), not with the
toolkit's helpers. Invariance: a batch padded to its longest member and the same batch padded to max_seq_len
(with garbage at the extra positions) give the same losses, gate outputs on real tokens and gradients.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_layerwise_methods import GATES, gated
from test_layerwise_scripts import TEACHER, TINY, teacher  # noqa: F401  (teacher: the fixture, 4 steps)

from fine_tune.engine.protocol import ModelOutputs
from fine_tune.methods import ALPKD, LAD, LADNO, PKD, PartialLAD
from fine_tune.methods.layerwise import HiddenPair, hidden_mse_loss
from fine_tune.models.gates import GateBlock, aggregate_chain

B, D, MAX = 3, 8, 9
LENGTHS = [5, 3, 2]  # right padding; the longest member is 5 < MAX


def mask_for(lengths: list[int], width: int) -> torch.Tensor:
    return (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).long()


def padded(real: torch.Tensor, width: int, seed: int) -> torch.Tensor:
    """``real`` [B, S0, D] (positions beyond each row's length are garbage too) padded to ``width`` with large
    garbage, and garbage again at every padding position of the row."""
    g = torch.Generator().manual_seed(seed)
    out = torch.randn(real.shape[0], width, real.shape[2], generator=g) * 50
    m = mask_for(LENGTHS, width).bool()[..., None]
    out[:, : real.shape[1]] = real
    return torch.where(m, out, torch.randn(out.shape, generator=g) * 50)


def random_gate(seed: int) -> GateBlock:
    torch.manual_seed(seed)
    gate = GateBlock(D, MAX)
    with torch.no_grad():  # a non-trivial affine, so that slicing it matters
        gate.layernorm.weight.normal_()
        gate.layernorm.bias.normal_()
    return gate


def manual_masked_ln(gate: GateBlock, prev: torch.Tensor, cur: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    """Per example: statistics over its n_b real tokens x D only, affine parameters [:n_b], zeros elsewhere."""
    W, b = gate.linear.weight.detach(), gate.linear.bias.detach()
    gamma, beta = gate.layernorm.weight.detach(), gate.layernorm.bias.detach()
    out = torch.zeros_like(cur)
    for i, n in enumerate(lengths):
        p, c = prev[i, :n], cur[i, :n]
        g = 1.0 / (1.0 + torch.exp(-(p @ W.T + b)))
        x = c * g + p * (1 - g)
        mean = x.sum() / x.numel()
        var = ((x - mean) ** 2).sum() / x.numel()
        out[i, :n] = (x - mean) / torch.sqrt(var + 1e-5) * gamma[:n] + beta[:n]
    return out


# ------------------------------------------------------------------------------------------- (a) masked loss


def test_masked_hidden_loss_against_an_independent_computation():
    g = torch.Generator().manual_seed(0)
    S = max(LENGTHS)
    mask = mask_for(LENGTHS, S)
    pairs = [HiddenPair(j, torch.randn(B, S, D, generator=g), torch.randn(B, S, D, generator=g)) for j in (1, 2, 3)]
    mu = 2.5
    total, per = hidden_mse_loss(pairs, mu, mask)
    for p in pairs:
        num = sum(((p.student[i, :n] - p.target[i, :n]) ** 2).sum() for i, n in enumerate(LENGTHS))
        expected = mu / len(pairs) * num / (sum(LENGTHS) * D)
        assert per[p.layer].item() == pytest.approx(expected.item(), rel=1e-5)
    assert total.item() == pytest.approx(sum(v.item() for v in per.values()), rel=1e-6)
    # no mask: the original's MSE over every position, padding included (unchanged)
    total0, _ = hidden_mse_loss(pairs, mu)
    full = sum(((p.student - p.target) ** 2).sum() / p.student.numel() for p in pairs) * mu / len(pairs)
    assert total0.item() == pytest.approx(full.item(), rel=1e-5) and total0.item() != pytest.approx(total.item())
    # [CLS]-only pairs ([B, D]) are compared as they are
    cls = [HiddenPair(1, p.student[:, 0], p.target[:, 0]) for p in pairs[:1]]
    assert hidden_mse_loss(cls, mu, mask)[0].item() == pytest.approx(hidden_mse_loss(cls, mu)[0].item())


def test_methods_use_the_masked_loss_only_with_dynamic_padding():
    assert not PKD(2, 4, 0.8, 0.2, 1.0, 1.0).ignores_padding  # the original: padding positions in the MSE
    assert PKD(2, 4, 0.8, 0.2, 1.0, 1.0, padding="dynamic").ignores_padding  # may run padding-free
    with pytest.raises(ValueError):
        PKD(2, 4, 0.8, 0.2, 1.0, 1.0, padding="longest")
    S = max(LENGTHS)
    g = torch.Generator().manual_seed(1)
    s = ModelOutputs(
        torch.randn(B, 2, generator=g), tuple(torch.randn(B, S, D, generator=g) for _ in range(2)), mask_for(LENGTHS, S)
    )
    t = ModelOutputs(
        torch.randn(B, 2, generator=g), tuple(torch.randn(B, S, D, generator=g) for _ in range(4)), s.attention_mask
    )
    y = torch.tensor([0, 1, 1])
    batch = {"labels": y}
    fixed = PKD(2, 4, 0.8, 0.2, 1.0, 3.0).losses(batch, s, t)
    dyn = PKD(2, 4, 0.8, 0.2, 1.0, 3.0, padding="dynamic").losses(batch, s, t)
    assert dyn["logits_loss"].item() == pytest.approx(fixed["logits_loss"].item())
    for j, tl in ((1, 2), (2, 4)):
        num = sum(
            ((s.hidden_states[j - 1][i, :n] - t.hidden_states[tl - 1][i, :n]) ** 2).sum() for i, n in enumerate(LENGTHS)
        )
        assert dyn[f"hidden_loss_{j}"].item() == pytest.approx(3.0 / 2 * (num / (sum(LENGTHS) * D)).item(), rel=1e-5)
        full = ((s.hidden_states[j - 1] - t.hidden_states[tl - 1]) ** 2).mean() * 3.0 / 2
        assert fixed[f"hidden_loss_{j}"].item() == pytest.approx(full.item(), rel=1e-5)
    # PKD normalized_cls: [CLS] only, the same either way
    a = PKD(2, 4, 0.8, 0.2, 1.0, 3.0, loss="normalized_cls").losses(batch, s, t)
    b = PKD(2, 4, 0.8, 0.2, 1.0, 3.0, loss="normalized_cls", padding="dynamic").losses(batch, s, t)
    assert a["hidden_loss"].item() == b["hidden_loss"].item()


# ------------------------------------------------------------------------------------- (c), (d) masked gate


def test_masked_gate_layernorm_against_an_independent_computation():
    gate = random_gate(0)
    g = torch.Generator().manual_seed(2)
    S = max(LENGTHS)
    prev, cur = torch.randn(B, S, D, generator=g), torch.randn(B, S, D, generator=g)
    mask = mask_for(LENGTHS, S)
    out, gv = gate.mix(prev, cur, mask)
    assert out.shape == (B, S, D) and gv.shape == (B, S, D)
    assert torch.allclose(out, manual_masked_ln(gate, prev, cur, LENGTHS), atol=1e-5)
    assert out[~mask.bool()].abs().max() == 0  # padding positions are 0
    assert torch.equal(gate(prev, cur, mask), out)  # forward: the same (prev is not all zeros)


def test_masked_gate_without_padding_is_the_original_gate():
    gate = random_gate(1)
    g = torch.Generator().manual_seed(3)
    prev, cur = torch.randn(B, MAX, D, generator=g), torch.randn(B, MAX, D, generator=g)
    full = torch.ones(B, MAX, dtype=torch.long)
    assert torch.allclose(gate.mix(prev, cur, full)[0], gate.mix(prev, cur)[0], atol=1e-5)
    hs = tuple(torch.randn(B, MAX, D, generator=g) for _ in range(4))
    gates = torch.nn.ModuleList(random_gate(10 + k) for k in range(4))
    for a, b in zip(aggregate_chain(gates, hs, mask=full), aggregate_chain(gates, hs)):
        assert torch.allclose(a, b, atol=1e-4)
    # a whole method: dynamic on an unpadded batch of width max_seq_len == the original
    torch.manual_seed(5)
    lad = gated(LAD, 2, 4, 0.8, 0.2, 1.0, 2.0, d_model=D, seq_len=MAX, gate_optimiser=GATES)
    s = ModelOutputs(torch.randn(B, 2), tuple(torch.randn(B, MAX, D) for _ in range(2)), full)
    t = ModelOutputs(torch.randn(B, 2), hs, full)
    fixed = lad.losses({"labels": torch.tensor([0, 1, 0])}, s, t)
    lad.padding = "dynamic"
    dyn = lad.losses({"labels": torch.tensor([0, 1, 0])}, s, t)
    for k in fixed:
        assert dyn[k].item() == pytest.approx(fixed[k].item(), rel=1e-5, abs=1e-6), k


# --------------------------------------------------------------------------------------------- (b) invariance


def batch_at(width: int, student_real, teacher_real, seed: int):
    mask = mask_for(LENGTHS, width)
    s = tuple(padded(h, width, seed + i).requires_grad_() for i, h in enumerate(student_real))
    t = tuple(padded(h, width, seed + 100 + i) for i, h in enumerate(teacher_real))
    logits = torch.tensor([[0.2, -0.1], [1.0, 0.3], [-0.5, 0.5]])
    return ModelOutputs(logits, s, mask), ModelOutputs(logits * 2, t, mask), {"labels": torch.tensor([1, 0, 1])}


def make_methods():
    torch.manual_seed(7)
    kw = dict(d_model=D, seq_len=MAX, gate_optimiser=GATES, padding="dynamic")
    methods = {
        "lad": gated(LAD, 2, 4, 0.8, 0.2, 1.0, 2.0, **kw),
        "lad_no": gated(LADNO, 2, 4, 0.8, 0.2, 1.0, 2.0, **kw),
        "partial_lad": gated(PartialLAD, 2, 4, 0.8, 0.2, 1.0, 2.0, gate_indices=[2], **kw),
        "alp-kd-hidden": ALPKD(2, 4, 0.8, 0.2, 1.0, 2.0, mode="alp-kd-hidden", padding="dynamic"),
        "alp-kd-hidden-v2": ALPKD(2, 4, 0.8, 0.2, 1.0, 2.0, mode="alp-kd-hidden-v2", padding="dynamic"),
        "pkd": PKD(2, 4, 0.8, 0.2, 1.0, 2.0, padding="dynamic"),
    }
    for m in methods.values():
        for gate in getattr(m, "gates", []):
            with torch.no_grad():
                gate.layernorm.weight.normal_()
                gate.layernorm.bias.normal_()
    return methods


@pytest.mark.parametrize("name", ["lad", "lad_no", "partial_lad", "alp-kd-hidden", "alp-kd-hidden-v2", "pkd"])
def test_losses_gates_and_gradients_do_not_depend_on_how_far_a_batch_is_padded(name):
    method = make_methods()[name]
    g = torch.Generator().manual_seed(11)
    S0 = max(LENGTHS)
    student_real = [torch.randn(B, S0, D, generator=g) for _ in range(2)]
    teacher_real = [torch.randn(B, S0, D, generator=g) for _ in range(4)]
    results = []
    for width, seed in ((S0, 20), (MAX, 40)):  # padded to the longest member / to max_seq_len, other garbage
        s, t, batch = batch_at(width, student_real, teacher_real, seed)
        params = [p for gate in getattr(method, "gates", []) for p in gate.parameters()]
        for p in params:
            p.grad = None
        parts = method.losses(batch, s, t)
        parts["loss"].backward()
        grads = [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in params]
        real = mask_for(LENGTHS, width).bool()
        hgrads = [h.grad[real] for h in s.hidden_states]
        gate_out = None
        if name in ("lad", "partial_lad"):
            with torch.no_grad():
                gate_out = [
                    a[:, :S0][real[:, :S0]]
                    for a in aggregate_chain(method.gates, t.hidden_states, len(method.gates), mask=t.attention_mask)[
                        1:
                    ]
                ]
        results.append(({k: v.item() for k, v in parts.items()}, grads, hgrads, gate_out))
    (p1, g1, h1, o1), (p2, g2, h2, o2) = results
    assert p1.keys() == p2.keys() and "hidden_loss_2" in p1
    for k in p1:
        assert p1[k] == pytest.approx(p2[k], rel=1e-5, abs=1e-7), k
    for a, b in zip(h1, h2):  # the student's gradient at its real tokens
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)
    for a, b in zip(g1, g2):  # gate gradients; affine rows beyond the longest member get none either way
        if a.dim() == 2 and a.shape[0] == MAX:
            assert b[S0:].abs().max() == 0 and a[S0:].abs().max() == 0
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
    if o1 is not None:
        for a, b in zip(o1, o2):
            assert torch.allclose(a, b, atol=1e-5)


# ------------------------------------------------------------------------------------------ (e) end to end


def test_lad_and_pkd_scripts_run_with_dynamic_padding(run, teacher, exp_root, batch_widths):
    common = [
        "--task",
        "qqp",
        *TINY,
        "--num_hidden_layers",
        "3",
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
        "--mu",
        "10",
        "--padding",
        "dynamic",
        "--map_examples",
        "8",
    ]
    proc = run("run_lad_distil.py", *TEACHER, "--experiment", "lad_dyn", *common)
    folder = exp_root / "lad_dyn_bert_qqp"
    assert json.loads((folder / "config.json").read_text())["padding"] == "dynamic"
    assert (folder / "model-2.pt").is_file()
    assert sorted(x.name for x in folder.glob("gate-*.pt")) == sorted(f"gate-{i}-2.pt" for i in range(12))
    gate = torch.load(folder / "gate-3-2.pt", weights_only=True)
    assert tuple(gate["layernorm.weight"].shape) == (24, 32)  # the same parameters as the fixed-length gate
    block = GateBlock(32, 24)
    missing, unexpected = block.load_state_dict(gate, strict=True)  # strict: raises on any other key or shape
    assert not missing and not unexpected
    assert all(torch.equal(block.state_dict()[k], v) for k, v in gate.items())
    m = json.loads((folder / "layer-map-2.json").read_text())["matrix"]  # heat-map on variable-length batches
    assert len(m) == 3 and all(abs(sum(r) - 1) < 1e-4 for r in m)
    assert (folder / "layer-map-2.png").is_file()
    assert min(batch_widths) < 24 and max(batch_widths) <= 24, batch_widths  # batches padded to their longest member
    assert "padding-free forward" in proc.stderr  # no loss looks at padding positions

    batch_widths.clear()
    run("run_pkd_distill.py", *TEACHER, "--experiment", "pkd_dyn", *common)
    folder = exp_root / "pkd_dyn_bert_qqp"
    assert json.loads((folder / "config.json").read_text())["padding"] == "dynamic"
    assert (folder / "model-2.pt").is_file() and min(batch_widths) < 24


# ------------------------------------------------------------------------------------------ (f) the collator

# Six rows of a hand-written token file (not from a tokenizer): lengths that differ, a second segment (token type
# 1) in most rows, labels neither sorted nor balanced, a pad id that is neither 0 nor a token of any row.
FILE_ROWS = [  # (ids, token types, label)
    ([11, 12, 13, 14], [0, 0, 1, 1], 2),
    ([21, 22, 23, 24, 25, 26, 27], [0, 0, 0, 1, 1, 1, 1], 0),
    ([31, 32], [0, 1], 1),
    ([41, 42, 43, 44, 45, 46, 47], [0, 0, 0, 0, 0, 1, 1], 2),
    ([51, 52, 53, 54, 55], [0, 0, 1, 1, 1], 2),
    ([61, 62, 63], [0, 0, 0], 1),
]
PAD_ID, MAX_SEQ = 3, 9


def file_features():
    from fine_tune.batching import Features

    ids = np.concatenate([np.asarray(r[0], dtype=np.int32) for r in FILE_ROWS])
    types = np.concatenate([np.asarray(r[1], dtype=np.int8) for r in FILE_ROWS])
    offsets = np.concatenate([[0], np.cumsum([len(r[0]) for r in FILE_ROWS])]).astype(np.int64)
    return Features(ids, types, offsets, np.asarray([r[2] for r in FILE_ROWS], dtype=np.int64))


@pytest.mark.parametrize("padding", ["dynamic", "max_length"])
def test_the_collator_pads_exactly_the_rows_it_is_given(padding):
    """Rows asked for out of file order and without the file's longest rows: every tensor is those rows, in that
    order, right-padded with the pad id (types 0, mask 0 there) to the longest of them (dynamic) or to
    max_seq_len; ``index`` is the rows' file positions; labels, teacher logits and the host-built layout follow."""
    from fine_tune.batching import Collator

    logits = np.arange(len(FILE_ROWS) * 3, dtype=np.float32).reshape(-1, 3) / 4 - 1
    seen = []

    def layout(lengths, width):
        seen.append((np.asarray(lengths).tolist(), width))
        return "layout"

    rows = np.array([4, 0, 2, 5])  # lengths 5, 4, 2, 3: the longest file rows (7 tokens) are not among them
    batch = Collator(file_features(), PAD_ID, MAX_SEQ, padding, teacher_logits=logits, layout=layout)(rows)
    width = 5 if padding == "dynamic" else MAX_SEQ
    expected_ids = [FILE_ROWS[r][0] + [PAD_ID] * (width - len(FILE_ROWS[r][0])) for r in rows]
    expected_types = [FILE_ROWS[r][1] + [0] * (width - len(FILE_ROWS[r][1])) for r in rows]
    expected_mask = [[1] * len(FILE_ROWS[r][0]) + [0] * (width - len(FILE_ROWS[r][0])) for r in rows]
    assert batch["input_ids"].tolist() == expected_ids
    assert batch["token_type_ids"].tolist() == expected_types
    assert batch["attention_mask"].tolist() == expected_mask
    assert all(batch[k].dtype == torch.long for k in ("input_ids", "token_type_ids", "attention_mask", "labels"))
    assert batch["index"].tolist() == [4, 0, 2, 5]
    assert batch["labels"].tolist() == [2, 2, 1, 1]
    assert batch["teacher_logits"].tolist() == logits[rows].tolist()
    assert seen == [([5, 4, 2, 3], width)] and batch["model_kwargs"] == {"layout": "layout"}
    # one row: its own length, nothing padded (dynamic)
    one = Collator(file_features(), PAD_ID, MAX_SEQ, padding)(np.array([1]))
    assert one["input_ids"].shape == (1, 7 if padding == "dynamic" else MAX_SEQ) and "teacher_logits" not in one
    assert one["input_ids"][0, :7].tolist() == FILE_ROWS[1][0]


def test_evaluation_batches_are_length_sorted_and_cover_every_row_once():
    """sequential_batches: rows in increasing length, ties in file order, cut into batches of batch_size with a
    short last one; without lengths, file order."""
    from fine_tune.batching import sequential_batches

    lengths = np.array([5, 2, 9, 2, 7, 3, 2])
    got = [b.tolist() for b in sequential_batches(7, 3, lengths)]
    assert got == [[1, 3, 6], [5, 0, 4], [2]]
    assert [b.tolist() for b in sequential_batches(7, 3)] == [[0, 1, 2], [3, 4, 5], [6]]
