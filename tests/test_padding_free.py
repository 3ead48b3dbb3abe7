"""models/padding_free.py against the Hugging Face forward it replaces: the same logits and hidden states on
the real tokens, zeros at padding, the same gradients for a loss that ignores padding (dropout 0)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AlbertConfig, BertConfig, BertForSequenceClassification

from fine_tune.models.padding_free import BUCKET_OVERHEAD, Packing, PaddingFree, plan_buckets, supports_padding_free


def tiny(dropout: float = 0.0, seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=50,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=40,
        type_vocab_size=2,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        num_labels=3,
    )
    model = BertForSequenceClassification(cfg)
    with torch.no_grad():  # BERT's init leaves every bias 0 and LayerNorm the identity: a dropped bias would pass
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.2)
    return model


def batch(lengths=(9, 3, 12, 1, 7), seq: int = 12, seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 50, (len(lengths), seq), generator=g)
    mask = torch.zeros(len(lengths), seq, dtype=torch.long)
    types = torch.zeros(len(lengths), seq, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
        types[i, n // 2 : n] = 1
    ids = ids * mask  # pad id 0 after each sequence
    return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}


@pytest.fixture(params=[0, 8192, float("inf")], ids=["bucket-per-length", "cpu-default", "one-bucket"])
def overhead(request, monkeypatch):
    """Attention buckets: one per distinct length, the CPU default's plan, one bucket for the whole batch."""
    monkeypatch.setitem(BUCKET_OVERHEAD, "cpu", request.param)
    return request.param


# Batches whose packing bugs differ: distinct lengths with one row filling the width; ties (two rows of 9, two of
# 3, whose stable order matters) padded beyond the longest member (fixed padding: no row fills the width).
SHAPES = {"distinct-one-full": ((9, 3, 12, 1, 7), 12), "ties-none-full": ((7, 3, 9, 3, 9, 1), 14)}


@pytest.fixture(params=list(SHAPES))
def shaped(request):
    lengths, seq = SHAPES[request.param]
    return batch(lengths, seq), torch.tensor([0, 2, 1, 1, 0, 2][: len(lengths)])


def test_forward_matches_hugging_face_on_real_tokens(overhead, shaped):
    model = tiny().eval()
    b, _ = shaped
    with torch.no_grad():
        ref = model(**b, output_hidden_states=True)
        got = PaddingFree(model)(**b, output_hidden_states=True)
    real = b["attention_mask"].bool()
    torch.testing.assert_close(got.logits, ref.logits, atol=1e-5, rtol=1e-5)
    assert len(got.hidden_states) == len(ref.hidden_states) == 4
    for h_got, h_ref in zip(got.hidden_states, ref.hidden_states):
        torch.testing.assert_close(h_got[real], h_ref[real], atol=1e-5, rtol=1e-5)
        assert h_got[~real].abs().max() == 0  # padding positions are zeros, never garbage


def test_gradients_match_for_a_loss_that_ignores_padding(overhead, shaped):
    b, labels = shaped
    real = b["attention_mask"].bool()
    targets = [torch.randn(*real.shape, 32, generator=torch.Generator().manual_seed(k)) for k in range(3)]

    def loss_and_grads(model, use_padding_free: bool):
        model.zero_grad()
        out = (PaddingFree(model) if use_padding_free else model)(**b, output_hidden_states=True)
        hidden = sum(((h - t) ** 2).mean(-1)[real].mean() for h, t in zip(out.hidden_states[1:], targets))
        (F.cross_entropy(out.logits, labels) + hidden).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    ref, got = loss_and_grads(tiny().train(), False), loss_and_grads(tiny().train(), True)
    assert ref.keys() == got.keys()
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], atol=2e-5, rtol=1e-4, msg=name)


def test_dropout_draws_masks_for_real_tokens_only():
    """With dropout the forward differs from the padded one (other masks) but is a proper dropout: outputs vary
    between calls in training mode and not in eval mode."""
    model = tiny(dropout=0.3)
    pf = PaddingFree(model)
    b = batch()
    torch.manual_seed(0)
    a = pf(**b).logits
    c = pf(**b).logits
    assert not torch.allclose(a, c)
    model.eval()
    torch.testing.assert_close(pf(**b).logits, pf(**b).logits)


def test_packing_round_trip_and_refusals():
    mask = batch()["attention_mask"]
    pk = Packing(mask)
    x = torch.randn(5, 12, 4)
    packed = pk.pack(x)
    assert packed.shape == (int(mask.sum()), 4)
    torch.testing.assert_close(pk.pad(packed)[mask.bool()], x[mask.bool()])
    # sequences packed longest first (12, 9, 7, 3, 1 tokens: rows 0, 12, 21, 28, 31), [CLS] rows in batch order
    assert pk.first.tolist() == [12, 28, 0, 31, 21]
    torch.testing.assert_close(packed[pk.first], x[:, 0])
    for bad in ([[0, 1, 1], [1, 1, 1]], [[1, 0, 1], [1, 1, 1]], [[0, 0, 0], [1, 1, 1]]):  # left, gap, empty
        with pytest.raises(ValueError, match="right padding"):
            Packing(torch.tensor(bad))
    assert not supports_padding_free(AlbertConfig())
    assert supports_padding_free(BertConfig())


def test_engine_uses_it_only_where_no_loss_sees_padding():
    from fine_tune.methods import PKD, HardLabel, OfflineLogitsKD

    assert HardLabel().ignores_padding and OfflineLogitsKD().ignores_padding
    assert PKD(3, 6, 0.3, 0.7, 1.0, mu=0).ignores_padding  # online logits KD
    assert not PKD(3, 6, 0.3, 0.7, 1.0, mu=1.0).ignores_padding  # the original's MSE over padding too


def test_fine_tune_with_and_without_padding_free_end_alike(run, tiny_bert, exp_root):
    common = [
        "--model",
        "bert",
        "--ptrain_ver",
        str(tiny_bert),
        "--task",
        "qqp",
        "--total_step",
        "6",
        "--warmup_step",
        "1",
        "--ckpt_step",
        "6",
        "--batch_size",
        "8",
        "--dropout",
        "0",
        "--lr",
        "1e-3",
        "--max_seq_len",
        "24",
    ]
    for mode in ("auto", "off"):
        out = run("run_fine_tune.py", "--experiment", mode, "--padding_free", mode, *common)
        assert ("padding-free forward" in out.stderr) == (mode == "auto"), out.stderr
    a = torch.load(exp_root / "auto_bert_qqp" / "model-6.pt", weights_only=True)
    b = torch.load(exp_root / "off_bert_qqp" / "model-6.pt", weights_only=True)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4, msg=k)


def test_attention_buckets_are_the_cheapest_split():
    """plan_buckets against every way of cutting the sorted lengths into runs, by its stated cost."""
    import itertools

    def cost(lengths, runs, head_dim, overhead):
        return sum((j - i) * lengths[i] * (lengths[i] + 3 * head_dim) + overhead for i, j in runs)

    g = torch.Generator().manual_seed(0)
    for trial in range(30):
        lengths = sorted(
            torch.randint(1, 256, (int(torch.randint(1, 9, (1,), generator=g)),), generator=g).tolist(), reverse=True
        )
        overhead = [0, 2000, 8192, 1e9][trial % 4]
        runs = plan_buckets(lengths, 32, overhead)
        assert runs[0][0] == 0 and runs[-1][1] == len(lengths)
        assert all(a[1] == b[0] for a, b in zip(runs, runs[1:]))
        brute = min(
            cost(lengths, list(zip((0,) + cuts, cuts + (len(lengths),))), 32, overhead)
            for k in range(len(lengths))
            for cuts in itertools.combinations(range(1, len(lengths)), k)
        )
        assert cost(lengths, runs, 32, overhead) == pytest.approx(brute)
    assert plan_buckets([256, 250, 40, 30], 32, 0) == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert plan_buckets([256, 250, 40, 30], 32, 8192) == [(0, 2), (2, 4)]
    assert plan_buckets([256, 250, 40, 30], 32, float("inf")) == [(0, 4)]


def test_buckets_of_a_batch():
    pk = Packing(batch()["attention_mask"], head_dim=8, overhead=0)  # lengths 9, 3, 12, 1, 7
    assert [(b.rows, b.length, b.start, b.stop) for b in pk.buckets] == [
        (1, 12, 0, 12),
        (1, 9, 12, 21),
        (1, 7, 21, 28),
        (1, 3, 28, 31),
        (1, 1, 31, 32),
    ]
    assert all(b.index is None and b.key_mask is None for b in pk.buckets)  # no padding left to mask
    pk = Packing(batch()["attention_mask"], head_dim=8, overhead=float("inf"))
    (b,) = pk.buckets
    assert (b.rows, b.length, b.start, b.stop) == (5, 12, 0, 32)
    assert b.key_mask.shape == (5, 12) and int(b.key_mask.sum()) == 32
    short = batch(lengths=(5, 3), seq=12)["attention_mask"]  # fixed padding to 12, longest real 5
    assert [(b.rows, b.length) for b in Packing(short, overhead=float("inf")).buckets] == [(2, 5)]


def test_grid_forward_equals_hugging_face_at_every_position():
    """packed=False (losses that read padding positions): logits, every hidden state at every position (padding
    included) and the gradients of a full-sequence loss equal the Hugging Face forward's (dropout 0)."""
    b = batch()
    labels = torch.tensor([0, 2, 1, 1, 0])
    targets = [torch.randn(5, 12, 32, generator=torch.Generator().manual_seed(k)) for k in range(3)]

    def run(model, own: bool):
        model.zero_grad()
        out = (PaddingFree(model, packed=False) if own else model)(**b, output_hidden_states=True)
        full = sum(((h - t) ** 2).mean() for h, t in zip(out.hidden_states[1:], targets))  # padding included
        (F.cross_entropy(out.logits, labels) + full).backward()
        return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    (ref, ref_g), (got, got_g) = run(tiny().train(), False), run(tiny().train(), True)
    torch.testing.assert_close(got.logits, ref.logits, atol=1e-5, rtol=1e-5)
    for h_got, h_ref in zip(got.hidden_states, ref.hidden_states):
        torch.testing.assert_close(h_got, h_ref, atol=1e-5, rtol=1e-5)
    assert ref_g.keys() == got_g.keys()
    for name in ref_g:
        torch.testing.assert_close(got_g[name], ref_g[name], atol=2e-5, rtol=1e-4, msg=name)
    gap = {"input_ids": b["input_ids"], "attention_mask": torch.tensor([[1, 0, 1] + [1] * 9] * 5)}  # any mask
    with torch.no_grad():
        torch.testing.assert_close(
            PaddingFree(tiny().eval(), packed=False)(**gap).logits, tiny().eval()(**gap).logits, atol=1e-5, rtol=1e-5
        )


@pytest.mark.parametrize("packed", [True, False], ids=["packed", "full-grid"])
def test_every_dropout_site_runs_with_its_own_p_in_training(packed, monkeypatch):
    """The own forward draws dropout where Hugging Face's BERT does, each with its configured p: the embeddings
    (hidden p), in every layer the attention probabilities (attention p, on each bucket's [rows, heads, L, L]),
    the attention output and the feed-forward output (hidden p), and the classifier input (classifier p). In eval
    mode no site drops anything."""
    from fine_tune.models import padding_free

    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=50,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=40,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.2,
        classifier_dropout=0.3,
        num_labels=3,
    )
    model = BertForSequenceClassification(cfg)
    calls = []
    real = padding_free.dropout

    def recording(x, p, training):
        calls.append((tuple(x.shape), p, training))
        return real(x, p, training)

    monkeypatch.setattr(padding_free, "dropout", recording)
    b = batch()
    lengths = b["attention_mask"].sum(1).tolist()
    wrapped = PaddingFree(model, packed=packed)
    model.train()
    wrapped(**b)
    rows = sum(lengths) if packed else len(lengths) * 12  # positions the position-wise layers run on
    pk = Packing(b["attention_mask"], head_dim=8) if packed else padding_free.FullGrid(b["attention_mask"])
    probs = [((bk.rows, 4, bk.length, bk.length), 0.2, True) for bk in pk.buckets]
    expected = [((rows, 32), 0.1, True)]
    for _ in range(3):
        expected += [*probs, ((rows, 32), 0.1, True), ((rows, 32), 0.1, True)]
    expected.append(((5, 32), 0.3, True))
    assert calls == expected
    calls.clear()
    model.eval()
    wrapped(**b)
    assert all(not training for _, _, training in calls)


@pytest.mark.parametrize("kind, compile", [("packed", False), ("packed", True), ("grid", False)])
def test_the_training_forward_with_a_host_built_layout_equals_hugging_face(kind, compile):
    """What training runs: ``forward`` (models/forward.py) through ``training_forwards``' module with the batch's
    host-built layout in ``model_kwargs`` (the planned buckets, the compiled one-bucket plan, the padded grid),
    on a batch whose one full-width row sits between padded ones (so the grid still needs its key mask), with
    token types 1 in every row's second half: the logits, the embeddings and each layer's hidden states equal
    Hugging Face's (real positions; the grid: every position)."""
    from fine_tune.models.forward import forward
    from fine_tune.models.padding_free import training_forwards

    lengths, seq = (7, 14, 3, 7, 1), 14
    b = batch(lengths, seq)
    model = tiny().eval()
    forwards = training_forwards(model, None, enabled=True, ignores_padding=kind == "packed", compile=compile)
    assert forwards.kind == kind and forwards.takes_layout
    b["model_kwargs"] = {"layout": forwards.layout(np.asarray(lengths), seq)}
    with torch.no_grad():
        ref = model(**{k: b[k] for k in ("input_ids", "token_type_ids", "attention_mask")}, output_hidden_states=True)
        got = forward(forwards.student, b, hidden=True)
    at = b["attention_mask"].bool() if kind == "packed" else torch.ones(len(lengths), seq, dtype=torch.bool)
    torch.testing.assert_close(got.logits, ref.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.embeddings[at], ref.hidden_states[0][at], atol=1e-5, rtol=1e-5)
    assert len(got.hidden_states) == 3
    for h_got, h_ref in zip(got.hidden_states, ref.hidden_states[1:]):
        torch.testing.assert_close(h_got[at], h_ref[at], atol=1e-5, rtol=1e-5)
    # the token types matter here: without them the logits differ
    with torch.no_grad():
        no_types = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
    assert not torch.allclose(no_types, ref.logits, atol=1e-3)
