"""bench/bench_distill.py's recipe contenders (issue 33), without models or data: the contender lists and what each
is divided by; ``recipe_pkd`` builds a RecipeKD whose loss is the ``pkd`` contender's PKD loss bit for bit; and
``recipe_mixed``'s recipe and ``textbrewer_mixed``'s GeneralDistiller matches compute the same loss on the same
tensors (TextBrewer's soft cross-entropy minus the teacher's entropy, which the KL leaves out).

Fixture: B = 3 sequences of S = 7 positions with 7, 5 and 3 real tokens (random values at the padding), the bench's
widths and heads (384, 12 heads; a 3-layer student, a 6-layer teacher), 2 classes, labels 1 0 1."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from fine_tune.engine.protocol import ModelOutputs
from fine_tune.methods.pkd import PKD

BENCH = Path(__file__).resolve().parent.parent / "bench" / "bench_distill.py"
B, S, D, HEADS = 3, 7, 384, 12
LENGTHS = (7, 5, 3)
LABELS = torch.tensor([1, 0, 1])


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_distill_under_test", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(BENCH.parent))  # its `from common import ...`
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH.parent))
    return module


def outputs(seed: int, layers: int) -> ModelOutputs:
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0):
        return torch.randn(*shape, generator=g) * scale

    mask = torch.tensor([[1 if s < n else 0 for s in range(S)] for n in LENGTHS])
    return ModelOutputs(
        logits=rand(B, 2, scale=3.0),
        hidden_states=tuple(rand(B, S, D) for _ in range(layers)),
        attention_mask=mask,
        embeddings=rand(B, S, D),
        attention_inputs=tuple(tuple(rand(B, S, D, scale=0.4) for _ in range(3)) for _ in range(layers)),
    )


STUDENT, TEACHER = outputs(1, 3), outputs(2, 6)
TEACHER_MODEL = SimpleNamespace(
    config=SimpleNamespace(num_hidden_layers=6, hidden_size=D, num_attention_heads=HEADS, model_type="bert")
)


def build(bench, contender: str, tmp_path: Path):
    return bench.build_recipe(contender, tmp_path, TEACHER_MODEL, bench.padding_of(contender), 128, None)


def test_recipe_contenders_and_their_references(bench):
    assert bench.contenders_of("recipe", "both") == (
        "pkd",
        "recipe_pkd",
        "textbrewer_mixed",
        "recipe_mixed",
        "pkd_dyn",
        "recipe_pkd_dyn",
        "textbrewer_mixed_dyn",
        "recipe_mixed_dyn",
    )
    assert bench.contenders_of("recipe", "dynamic") == bench.RECIPE_DYN
    assert set(bench.contenders_of("all", "both")) == set(bench.CONTENDERS)
    assert len(bench.contenders_of("all", "both")) == len(bench.CONTENDERS)  # pkd once
    refs = {
        c: bench.reference_of(c)
        for c in (
            "recipe_pkd",
            "recipe_pkd_dyn",
            "recipe_mixed",
            "recipe_mixed_dyn",
            "pkd",
            "lad_dyn",
            "tinybert",
            "tinybert_dyn",
        )
    }
    assert refs == {
        "recipe_pkd": "pkd",
        "recipe_pkd_dyn": "pkd_dyn",
        "recipe_mixed": "textbrewer_mixed",
        "recipe_mixed_dyn": "textbrewer_mixed_dyn",
        "pkd": "textbrewer",
        "lad_dyn": "textbrewer_dyn",
        "tinybert": "textbrewer_tinybert",
        "tinybert_dyn": "textbrewer_tinybert_dyn",
    }


@pytest.mark.parametrize("contender", ["recipe_pkd", "recipe_pkd_dyn"])
def test_recipe_pkd_is_the_pkd_contenders_loss_bit_for_bit(bench, tmp_path, contender):
    padding = bench.padding_of(contender)
    recipe = build(bench, contender, tmp_path)
    terms = [(t.term.feature, t.term.loss, t.weight, t.temperature, t.pairs) for t in recipe.terms]
    assert terms == [
        ("hard_labels", "ce", 0.3, 1.0, ()),
        ("logits", "kl", 0.7, 20.0, ()),
        ("hidden", "mse", 100.0, 1.0, ((1, 2), (2, 4), (3, 6))),
    ]
    pkd = PKD(3, 6, bench.HARD, bench.SOFT, bench.TEMP, bench.MU, padding=padding)
    assert recipe.ignores_padding == pkd.ignores_padding == (padding == "dynamic")
    mine = recipe.losses({"labels": LABELS}, STUDENT, TEACHER)["loss"]
    theirs = pkd.losses({"labels": LABELS}, STUDENT, TEACHER)["loss"]
    assert torch.equal(mine, theirs)
    other = PKD(
        3, 6, bench.HARD, bench.SOFT, bench.TEMP, bench.MU, padding="max_length" if padding == "dynamic" else "dynamic"
    )
    assert not torch.equal(mine, other.losses({"labels": LABELS}, STUDENT, TEACHER)["loss"])  # padding tells


def hf_probabilities(outputs: ModelOutputs) -> tuple[torch.Tensor, ...]:
    """What Hugging Face's eager attention returns (output_attentions) from each layer's Q and K: softmax over the
    keys of Q K^T / sqrt(d) plus the extended mask's finfo.min at padding keys, [B, H, S, S]."""
    bias = (1.0 - outputs.attention_mask.float())[:, None, None, :] * torch.finfo(torch.float32).min
    out = []
    for q, k, _ in outputs.attention_inputs:
        qh, kh = (x.view(B, S, HEADS, D // HEADS).transpose(1, 2) for x in (q, k))
        out.append(torch.softmax(qh @ kh.transpose(-1, -2) / math.sqrt(D // HEADS) + bias, dim=-1))
    return tuple(out)


def test_recipe_mixed_and_textbrewer_mixed_compute_the_same_loss(bench, tmp_path):
    """Dynamic padding (TextBrewer given inputs_mask): every term the same, the soft CE's teacher entropy aside."""
    pytest.importorskip("textbrewer")
    from textbrewer import DistillationConfig, GeneralDistiller, TrainingConfig
    from textbrewer.distiller_utils import post_adaptor

    recipe = build(bench, "recipe_mixed_dyn", tmp_path)
    assert [t.term.name for t in recipe.terms] == [
        "logits_kl",
        "hard_labels_ce",
        "hidden_mse",
        "hidden_cosine",
        "attention_probs_mse",
    ]
    mine = recipe.losses({"labels": LABELS}, STUDENT, TEACHER)["loss"]

    adaptor = bench.textbrewer_adaptor("textbrewer_mixed_dyn")
    batch = {"attention_mask": STUDENT.attention_mask}

    def hf(outputs: ModelOutputs, loss):
        return SimpleNamespace(
            logits=outputs.logits,
            hidden_states=(outputs.embeddings, *outputs.hidden_states),
            attentions=hf_probabilities(outputs),
            loss=loss,
        )

    hard = torch.nn.functional.cross_entropy(STUDENT.logits, LABELS)  # Hugging Face's loss given the labels
    tconf = TrainingConfig(device="cpu", log_dir=None, output_dir=str(tmp_path / "tb"), fp16=False)
    dconf = DistillationConfig(**bench.textbrewer_distillation("textbrewer_mixed_dyn"))
    distiller = GeneralDistiller(tconf, dconf, torch.nn.Linear(1, 1), torch.nn.Linear(1, 1), adaptor, adaptor)
    theirs, _ = distiller.compute_loss(
        post_adaptor(adaptor(batch, hf(STUDENT, hard))), post_adaptor(adaptor(batch, hf(TEACHER, hard)))
    )
    t = bench.MIXED_T
    p_t = torch.softmax(TEACHER.logits / t, dim=-1)
    entropy = -(p_t * p_t.log()).sum(-1).mean()  # the soft CE minus the KL, weighted as TextBrewer's kd weight
    assert theirs.item() == pytest.approx((mine + bench.MIXED_KD * t * t * entropy).item(), rel=1e-5)
    # the attention and cosine matches count: without them the two differ
    dconf.intermediate_matches = [m for m in dconf.intermediate_matches if m.feature == "hidden" and m.loss != "cos"]
    fewer, _ = GeneralDistiller(
        tconf, dconf, torch.nn.Linear(1, 1), torch.nn.Linear(1, 1), adaptor, adaptor
    ).compute_loss(post_adaptor(adaptor(batch, hf(STUDENT, hard))), post_adaptor(adaptor(batch, hf(TEACHER, hard))))
    assert fewer.item() < theirs.item() - 1e-3
