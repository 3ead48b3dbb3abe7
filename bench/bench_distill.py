#!/usr/bin/env python
"""Distillation throughput: this toolkit's engine (BERT-PKD, LAD) vs TextBrewer's ``GeneralDistiller``.

The same teacher (MiniLM-L6-H384 with a classification head), the same student (3 layers, hidden 384, d_ff 1536,
12 heads), the same batches in the same order (``fine_tune.batching.MicroBatchStream``), batch size, max_seq_len
and padding (every batch padded to max_seq_len, as LAD needs), fp32, the same optimizer (AdamW, fused kernel, lr
1e-4, weight decay 0.01 except biases and LayerNorm weights, built by ``fine_tune.engine.optim.build_adamw``),
linear warmup/decay, clipping at 1.0, and the same loss: hard_weight * CE + soft_weight * soft loss at
temperature T + mu * (1/3) * sum_j MSE(H_s[j], H_t[2j]) over every token (TextBrewer: ``hidden_mse`` matches
with weight mu/3, no input mask; its soft loss is the soft cross-entropy without T^2, the same work).
TextBrewer runs with ``log_dir=None`` (no TensorBoard), the toolkit logs every ``--steps`` steps. With
``--device cuda --amp`` the toolkit runs fp16 autocast with its GradScaler while TextBrewer stays fp32 (its
``fp16=True`` needs NVIDIA apex), so that ratio is not the same work.

Contenders, one fresh subprocess per run, alternating in one run: ``pkd`` (toolkit, the same work as
TextBrewer), ``lad`` (toolkit LAD: also runs and trains 6 gate blocks with their own optimizer), ``textbrewer``;
and the same three with dynamic padding (``pkd_dyn``, ``lad_dyn``, ``textbrewer_dyn``: each batch padded to its
longest row, hidden-state MSE averaged over the real tokens on both sides: the toolkit's ``--padding dynamic``,
TextBrewer's ``inputs_mask``), where the toolkit's padding-free forward skips the padding positions.
Timed: ``--steps`` optimizer steps after ``--warm_steps``, from the beginning of step warm+1 to the beginning of
step warm+steps+1 (when the batch is fetched).

Recipes (``--methods recipe``, issue 33): the engine running ``RecipeKD`` (``run_distil.py --recipe FILE``), built as
the run plan builds it (``RecipeKD.build`` of a ``MethodSettings`` holding the ``recipe`` flag group):

- ``recipe_pkd`` / ``recipe_pkd_dyn`` vs ``pkd`` / ``pkd_dyn``: recipes/pkd.yaml's three terms (hard_labels ce,
  logits kl, hidden mse over the ``skip`` pairs S_j <- T_2j) with the bench's PKD values (weights HARD, SOFT, MU,
  temperature TEMP instead of the file's script defaults; written to a temporary JSON recipe): the same loss as the
  ``pkd`` contender (the recipe equals run_pkd_distill.py bit for bit, tests/test_recipe_method.py), so the ratio
  recipe_pkd / pkd is the recipe machinery's cost alone.
- ``recipe_mixed`` / ``recipe_mixed_dyn`` vs TextBrewer's ``GeneralDistiller`` (``textbrewer_mixed`` /
  ``textbrewer_mixed_dyn``) with the same matches (:data:`MIXED`; pairs (S_j, T_2j), j = 1..3, as
  [student, teacher] layers, 0 = the embeddings):

  ====================================  ===================================  ======================================
  recipe term (toolkit)                 TextBrewer                           the same?
  ====================================  ===================================  ======================================
  logits kl, T = MIXED_T, weight w_kd   kd_loss_type ce, temperature T,      KL = soft CE - H(teacher) (constant):
  (T^2 KL(p_t^T || p_s^T), batch mean)  kd_loss_weight w_kd * T^2            the same gradients
  hard_labels ce, weight w_ce           hard_label_weight w_ce (HF's CE)     yes
  hidden mse, the 3 pairs, weight w_h   3 hidden_mse matches, weight w_h/3   yes (dynamic: both the mean over real
  (1/3 sum of pair MSEs)                                                     tokens x D; fixed: over every token)
  hidden cosine, pair (3, 6), w_cos     cos match (S3, T6), weight w_cos     yes: mean over tokens of 1 - cos (real
                                                                             tokens under dynamic)
  attention_probs mse, the 3 pairs,     3 attention_mse matches (S_j - 1,    dynamic: yes, both the MSE over real
  weight w_a (1/3 sum)                  T_2j - 1) on HF's output_attentions  (query, key) pairs and heads; fixed:
                                        (probabilities), weight w_a/3        TextBrewer averages over all B H S^2
                                                                             (padding rows too), the recipe over
                                                                             the real pairs (its attention terms
                                                                             always exclude padding)
  ====================================  ===================================  ======================================

  How each side gets the attention probabilities differs by design: TextBrewer needs Hugging Face's eager
  attention (``output_attentions``: the probabilities of every layer of both models; SDPA returns none), the toolkit
  records Q and K of the mapped layers and recomputes ``softmax(Q K^T / sqrt(d))`` over the real keys in the loss
  (its forward keeps SDPA; with dynamic padding the padding-free forward).

    pip install -r bench/requirements.txt
    python bench/bench_distill.py [--methods pkd_lad|tinybert|recipe|all] [--padding fixed|dynamic|both]
        [--steps 20 --repeats 3 --max_seq_len 128] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    SEED,
    Stamps,
    add_worker_args,
    alternate,
    device_of,
    load_examples,
    machine,
    median_of,
    pair_ratios,
    parse_args,
    precision_name,
    run_worker,
    toolkit_precision,
    total_steps,
    write_json,
)

LR, WEIGHT_DECAY, MAX_NORM = 1e-4, 0.01, 1.0
HARD, SOFT, TEMP, MU = 0.3, 0.7, 20.0, 100.0
STUDENT = dict(d_model=384, d_ff=1536, num_attention_heads=12, num_hidden_layers=3)
FIXED = ("textbrewer", "pkd", "lad")  # the order of the first alternation
DYNAMIC = tuple(f"{c}_dyn" for c in FIXED)  # the same with dynamic padding and masked hidden losses
# TinyBERT-style distillation (issue 16): a student of another width than the teacher's, TinyBERT's 4-layer shape
# scaled to the 6-layer teacher (3 layers, width 312, d_ff 1200, 12 heads); attention-score MSE of the mapped
# layers, hidden MSE of the mapped layers and the embeddings through a learned projection to width 384
TINY_STUDENT = dict(d_model=312, d_ff=1200, num_attention_heads=12, num_hidden_layers=3)
TINYBERT = ("textbrewer_tinybert", "tinybert")
TINYBERT_DYN = tuple(f"{c}_dyn" for c in TINYBERT)
# recipes (issue 33): the PKD recipe beside the PKD method, and a mixed recipe beside TextBrewer's same matches
RECIPE = ("pkd", "recipe_pkd", "textbrewer_mixed", "recipe_mixed")
RECIPE_DYN = tuple(f"{c}_dyn" for c in RECIPE)
CONTENDERS = tuple(dict.fromkeys(FIXED + DYNAMIC + TINYBERT + TINYBERT_DYN + RECIPE + RECIPE_DYN))
PKD_RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "pkd.yaml"
# the mixed recipe's values (module docstring): weights and the logits' temperature; pairs S_j <- T_2j
MIXED_T, MIXED_KD, MIXED_CE, MIXED_HIDDEN, MIXED_COS, MIXED_ATT = 2.0, 0.5, 0.5, 3.0, 0.25, 1.5
MIXED_PAIRS = [[1, 2], [2, 4], [3, 6]]
MIXED = {
    "terms": [
        {"feature": "logits", "loss": "kl", "temperature": MIXED_T, "weight": MIXED_KD},
        {"feature": "hard_labels", "loss": "ce", "weight": MIXED_CE},
        {"feature": "hidden", "loss": "mse", "layers": MIXED_PAIRS, "weight": MIXED_HIDDEN},
        {"feature": "hidden", "loss": "cosine", "layers": [MIXED_PAIRS[-1]], "weight": MIXED_COS},
        {"feature": "attention_probs", "loss": "mse", "layers": MIXED_PAIRS, "weight": MIXED_ATT},
    ]
}


def padding_of(contender: str) -> str:
    return "dynamic" if contender.endswith("_dyn") else "max_length"


def student_of(contender: str) -> dict:
    return TINY_STUDENT if "tinybert" in contender else STUDENT


def reads_attention(contender: str) -> bool:
    """Whether TextBrewer's matches of a contender read attention maps (TinyBERT's, the mixed recipe's)."""
    return "tinybert" in contender or "mixed" in contender


def reference_of(contender: str) -> str:
    """The contender a toolkit contender's examples/s are divided by: the PKD method for the PKD recipe, TextBrewer
    with the same matches for the others."""
    if contender.startswith("recipe_pkd"):
        return contender[len("recipe_") :]
    if contender.startswith("recipe_"):
        return "textbrewer_" + contender[len("recipe_") :]
    if contender.startswith("tinybert"):
        return "textbrewer_" + contender
    return "textbrewer" + contender[3:]


def pkd_recipe() -> dict:
    """recipes/pkd.yaml with the bench's PKD values (HARD, SOFT, TEMP, MU) in place of the file's (the script's
    defaults): the same three terms, in the file's order."""
    import yaml

    data = yaml.safe_load(PKD_RECIPE.read_text())
    values = {
        "hard_labels": {"weight": HARD},
        "logits": {"weight": SOFT, "temperature": TEMP},
        "hidden": {"weight": MU},
    }
    assert [t["feature"] for t in data["terms"]] == ["hard_labels", "logits", "hidden"], data
    return {**data, "terms": [{**t, **values[t["feature"]]} for t in data["terms"]]}


def build_recipe(contender: str, folder: Path, teacher, padding: str, max_seq_len: int, optimiser):
    """``RecipeKD`` as the run plan builds it (``fine_tune.plan.training.method_settings``, then
    ``check_models``): ``recipe_pkd*`` the bench's PKD recipe (:func:`pkd_recipe`), ``recipe_mixed*`` :data:`MIXED`,
    written to ``folder``."""
    from fine_tune.engine.protocol import TeacherShape
    from fine_tune.methods.base import MethodSettings, StudentShape
    from fine_tune.methods.recipe import RecipeFlags, RecipeKD

    path = folder / f"{contender.removesuffix('_dyn')}.json"
    path.write_text(json.dumps(pkd_recipe() if contender.startswith("recipe_pkd") else MIXED, indent=1) + "\n")
    s, c = STUDENT, teacher.config
    settings = MethodSettings(
        groups={"recipe": RecipeFlags(recipe=str(path))},
        num_class=2,
        regression=False,
        student=StudentShape(s["num_hidden_layers"], s["d_model"], s["num_attention_heads"]),
        teacher=TeacherShape(c.num_hidden_layers, c.hidden_size, c.num_attention_heads),
        padding=padding,
        max_seq_len=max_seq_len,
        optimiser=optimiser,
    )
    method = RecipeKD.build(settings)
    method.check_models(c, student_family="bert")
    return method


def textbrewer_matches(contender: str) -> list[dict]:
    """TextBrewer's ``intermediate_matches`` of a contender: hidden_mse of (S_j, T_2j) with weight MU/3 (PKD), TinyBERT's
    attention + projected hidden matches, or :data:`MIXED`'s (module docstring). Hugging Face's ``hidden_states[0]``
    is the embedding output (index j: layer j), ``attentions[j - 1]`` layer j's."""
    ls = student_of(contender)["num_hidden_layers"]
    if "tinybert" in contender:
        width = TINY_STUDENT["d_model"]
        matches = [
            {"layer_T": 2 * j - 1, "layer_S": j - 1, "feature": "attention", "loss": "attention_mse", "weight": 1}
            for j in range(1, ls + 1)
        ]
        return matches + [
            {
                "layer_T": 2 * j,
                "layer_S": j,
                "feature": "hidden",
                "loss": "hidden_mse",
                "weight": 1,
                "proj": ["linear", width, 384, {}],
            }
            for j in range(0, ls + 1)
        ]
    if "mixed" in contender:
        n = len(MIXED_PAIRS)
        return (
            [
                {"layer_T": t, "layer_S": j, "feature": "hidden", "loss": "hidden_mse", "weight": MIXED_HIDDEN / n}
                for j, t in MIXED_PAIRS
            ]
            + [
                {
                    "layer_T": MIXED_PAIRS[-1][1],
                    "layer_S": MIXED_PAIRS[-1][0],
                    "feature": "hidden",
                    "loss": "cos",
                    "weight": MIXED_COS,
                }
            ]
            + [
                {
                    "layer_T": t - 1,
                    "layer_S": j - 1,
                    "feature": "attention",
                    "loss": "attention_mse",
                    "weight": MIXED_ATT / n,
                }
                for j, t in MIXED_PAIRS
            ]
        )
    return [
        {"layer_T": 2 * j, "layer_S": j, "feature": "hidden", "loss": "hidden_mse", "weight": MU / ls}
        for j in range(1, ls + 1)
    ]


def textbrewer_adaptor(contender: str):
    """TextBrewer's adaptor (the same for teacher and student) of a Hugging Face output: logits, hidden states, the
    model's CE on the labels, the attention probabilities where a match reads them, and under dynamic padding the
    ``inputs_mask`` its masked losses use."""
    attention = reads_attention(contender)
    dynamic = padding_of(contender) == "dynamic"

    def adaptor(batch, out):
        res = {"logits": out.logits, "hidden": out.hidden_states, "losses": [out.loss]}
        if attention:
            res["attention"] = out.attentions
        if dynamic:
            res["inputs_mask"] = batch["attention_mask"]
        return res

    return adaptor


def textbrewer_distillation(contender: str) -> dict:
    """TextBrewer's ``DistillationConfig`` arguments: temperature, the hard-label and soft-loss weights (its soft
    loss is the soft CE without T^2: the mixed recipe's T^2 KL is matched by weight w_kd * T^2), the matches."""
    if "tinybert" in contender:
        t, hard, soft = 1.0, 0.0, 0.0
    elif "mixed" in contender:
        t, hard, soft = MIXED_T, MIXED_CE, MIXED_KD * MIXED_T**2
    else:
        t, hard, soft = TEMP, HARD, SOFT
    return dict(
        temperature=t,
        hard_label_weight=hard,
        kd_loss_type="ce",
        kd_loss_weight=soft,
        intermediate_matches=textbrewer_matches(contender),
    )


def build(args, padding: str = "max_length", student_shape: dict = STUDENT):
    """Features, teacher (eval, frozen), student, in a fixed seed; batches padded to max_seq_len or, with
    ``padding="dynamic"``, to the longest row of each batch."""
    import torch

    from fine_tune.batching import Collator, tokenize
    from fine_tune.engine.seeding import seed_everything
    from fine_tune.models.classifier import (
        build_from_config,
        build_pretrained_classifier,
        load_tokenizer,
        student_config,
    )

    seed_everything(SEED)
    tok = load_tokenizer(args.model)
    features = tokenize(tok, load_examples(args), args.max_seq_len)
    teacher = build_pretrained_classifier(args.model, "bert", 2, 0.1).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    cfg = student_config(
        "bert",
        vocab_size=teacher.config.vocab_size,
        num_class=2,
        type_vocab_size=2,
        dropout=0.1,
        max_position_embeddings=teacher.config.max_position_embeddings,
        pad_token_id=tok.pad_token_id,
        **student_shape,
    )
    student = build_from_config(cfg)
    collator = Collator(features, tok.pad_token_id, args.max_seq_len, padding)
    return torch, features, teacher, student, collator


def optimizer_for(student, device):
    from fine_tune.engine.optim import OptimiserSettings, build_adamw

    settings = OptimiserSettings(lr=LR, total_step=1, warmup_step=0, weight_decay=WEIGHT_DECAY)
    return build_adamw(student.named_parameters(), settings, device)


def worker_toolkit(args, contender: str, t0: float) -> dict:
    """The toolkit's engine as run_pkd_distill.py / run_lad_distil.py drive it with their default flags (fixed
    padding; ``--padding_free auto``, which applies only where no loss reads padding positions) or, for the
    ``_dyn`` contenders, with ``--padding dynamic`` (masked hidden losses, so the position-wise layers of
    teacher and student run on the real tokens only)."""
    from fine_tune.engine.optim import GATE_NO_DECAY, OptimiserSettings
    from fine_tune.engine.trainer import Trainer, TrainSettings
    from fine_tune.experiment import ExperimentDir
    from fine_tune.methods import LAD, PKD
    from fine_tune.models.forward import forward
    from fine_tune.models.padding_free import training_forwards
    from fine_tune.reporting import TensorBoardReporter

    padding = padding_of(contender)
    torch, features, teacher, student, collator = build(args, padding, student_of(contender))
    n = total_steps(args)
    ls, lt = student_of(contender)["num_hidden_layers"], teacher.config.num_hidden_layers
    device = device_of(args)
    optimiser = OptimiserSettings(
        lr=LR, total_step=n, warmup_step=max(1, n // 10), weight_decay=WEIGHT_DECAY, max_norm=MAX_NORM
    )
    if contender.startswith("tinybert"):  # as run_tinybert_distil.py --tinybert_stage intermediate
        from fine_tune.methods import TinyBERT

        method = TinyBERT(
            ls,
            lt,
            0.0,
            1.0,
            1.0,
            1.0,
            stage="intermediate",
            student_heads=12,
            teacher_heads=12,
            padding=padding,
            student_width=TINY_STUDENT["d_model"],
            teacher_width=384,
            projection_optimiser=optimiser,
        )
        method.create_parameters(None, device)
    elif contender.startswith("pkd"):
        method = PKD(ls, lt, HARD, SOFT, TEMP, MU, padding=padding)
    elif contender.startswith("recipe"):
        with tempfile.TemporaryDirectory() as tmp:  # the recipe file is read once, by build
            method = build_recipe(contender, Path(tmp), teacher, padding, args.max_seq_len, optimiser)
        method.create_parameters(None, device)
    else:
        gates = OptimiserSettings(
            lr=5e-7,
            weight_decay=0.01,
            max_norm=1.0,
            total_step=n,
            warmup_step=max(1, n // 10),
            no_decay=GATE_NO_DECAY,
            clip_per_module=True,
        )
        method = LAD(
            ls, lt, HARD, SOFT, TEMP, MU, d_model=384, seq_len=args.max_seq_len, gate_optimiser=gates, padding=padding
        )
        method.create_parameters(None)
    settings = TrainSettings(
        optimiser=optimiser,
        batch_size=args.batch_size,
        accum_step=1,
        ckpt_step=10**9,
        log_step=args.steps,
        seed=SEED,
        tag_prefix="qqp/train/bert",
    )
    forwards = training_forwards(
        student,
        teacher,
        enabled=True,
        ignores_padding=method.ignores_padding,
        device_type=device.type,
        student_record=method.recorded_layers("student"),
        teacher_record=method.recorded_layers("teacher"),
    )
    if forwards.takes_layout:  # as fine_tune.run.training: the packing built on the host, once per batch
        collator.layout = forwards.layout
    collator.pin_memory = device.type == "cuda"
    stamps = Stamps(args)

    with tempfile.TemporaryDirectory() as tmp:
        exp = ExperimentDir(Path(tmp), "bench")
        exp.path.mkdir()
        trainer = Trainer(
            student,
            method,
            stamps.wrap(collator),
            len(features),
            settings,
            exp,
            device,
            toolkit_precision(args, device),
            teacher=teacher,
            progress=False,
            student_forward=forwards.student,
            teacher_forward=forwards.teacher,
            forward=forward,
            reporter=TensorBoardReporter(exp.log_dir),
        )  # as the scripts' default --report_to
        start = time.perf_counter()
        trainer.train()
        train_s = time.perf_counter() - start
    return stamps.result(args, contender, train_s, t0, device.type)


def worker_textbrewer(args, t0: float, contender: str = "textbrewer") -> dict:
    """TextBrewer's GeneralDistiller on the toolkit's batches; ``textbrewer_dyn`` (and every ``_dyn``): dynamic
    padding, and the adaptors return ``inputs_mask`` so that its hidden and attention losses average over the real
    tokens only."""
    from textbrewer import DistillationConfig, GeneralDistiller, TrainingConfig
    from transformers import get_linear_schedule_with_warmup

    from fine_tune.batching import MicroBatchStream

    padding = padding_of(contender)
    attention = reads_attention(contender)
    torch, features, teacher, student, collator = build(args, padding, student_of(contender))
    device = device_of(args)
    if attention:  # Hugging Face returns attention maps (output_attentions) from its eager attention only
        teacher.set_attn_implementation("eager")
        student.set_attn_implementation("eager")
    teacher.to(device)
    student.to(device)
    n = total_steps(args)
    stamps = Stamps(args)
    stream = MicroBatchStream(len(features), args.batch_size, SEED)

    class Batches:  # the toolkit's batch order and padding; stamps the beginning of each step
        def __iter__(self):
            while True:
                stamps.step_begins()
                b = stamps.batch(collator(stream.next()))
                yield {k: b[k] for k in ("input_ids", "token_type_ids", "attention_mask", "labels")}

    adaptor = textbrewer_adaptor(contender)
    with tempfile.TemporaryDirectory() as tmp:
        # fp32 always: TextBrewer's fp16 needs NVIDIA apex (amp.initialize), not torch.amp
        tconf = TrainingConfig(device=str(device), log_dir=None, output_dir=tmp, ckpt_steps=10**9, fp16=False)
        dconf = DistillationConfig(**textbrewer_distillation(contender))
        distiller = GeneralDistiller(tconf, dconf, teacher, student, adaptor, adaptor)
        opt = optimizer_for(student, device)
        start = time.perf_counter()
        with distiller:
            distiller.train(
                opt,
                Batches(),
                num_steps=n,
                scheduler_class=get_linear_schedule_with_warmup,
                scheduler_args={"num_warmup_steps": max(1, n // 10), "num_training_steps": n},
                max_grad_norm=MAX_NORM,
                output_hidden_states=True,
                **({"output_attentions": True} if attention else {}),
            )
        train_s = time.perf_counter() - start
    # TextBrewer fetches one more batch than it trains on only when it cycles past the end: trim to n stamps
    stamps.begin, stamps.widths, stamps.real = stamps.begin[:n], stamps.widths[:n], stamps.real[:n]
    return stamps.result(args, contender, train_s, t0, device.type, precision="fp32")


def contenders_of(methods: str, padding: str) -> tuple[str, ...]:
    """The contenders of ``--methods`` and ``--padding``, in the order of the first alternation."""
    groups = {"pkd_lad": (FIXED, DYNAMIC), "tinybert": (TINYBERT, TINYBERT_DYN), "recipe": (RECIPE, RECIPE_DYN)}
    chosen = list(groups) if methods == "all" else [methods]
    names = [
        c
        for m in chosen
        for c in {"fixed": groups[m][0], "dynamic": groups[m][1], "both": groups[m][0] + groups[m][1]}[padding]
    ]
    return tuple(dict.fromkeys(names))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--contender", choices=CONTENDERS, help="run one contender here (worker)")
    p.add_argument(
        "--padding",
        choices=("fixed", "dynamic", "both"),
        default="both",
        help="fixed: every batch padded to max_seq_len (the scripts' default, as LAD's original gates "
        "need); dynamic: padded to the batch's longest row, hidden losses masked (default: both)",
    )
    p.add_argument(
        "--methods",
        choices=("pkd_lad", "tinybert", "recipe", "all"),
        default="pkd_lad",
        help="pkd_lad: PKD and LAD vs TextBrewer's hidden_mse matches (the default); tinybert: TinyBERT's "
        "intermediate stage vs TextBrewer's attention_mse + hidden_mse with proj matches; recipe: "
        "the PKD recipe vs the PKD method, and a mixed recipe vs TextBrewer's same matches",
    )
    add_worker_args(p, steps=20, rows=2048, repeats=3)
    args = parse_args(p, argv)
    if args is None:
        return 0
    if args.contender:
        t0 = time.perf_counter()
        c = args.contender
        res = worker_textbrewer(args, t0, c) if c.startswith("textbrewer") else worker_toolkit(args, c, t0)
        print(json.dumps(res))
        return 0
    names = contenders_of(args.methods, args.padding)
    info = machine()
    print(
        f"distilling {Path(args.model).name} (6 layers) into a 3-layer student on {args.dataset}: {args.steps} timed "
        f"steps (after {args.warm_steps}) x batch {args.batch_size}, max_seq_len {args.max_seq_len}, padding "
        f"{args.padding}, toolkit {precision_name(args)}, TextBrewer fp32, on {args.device}; torch {info['torch']}, "
        f"{info['cores']} cores; load average at start {info['load_avg_start'][0]:.2f}"
    )
    print("\n| run | contender | examples/s | timed loop s | process wall s | peak MiB |\n|---|---|---|---|---|---|")

    def show(res: dict) -> None:
        print(
            f"| {res['run'] + 1} | {res['contender']} | {res['examples_per_s']:.2f} | {res['loop_s']:.1f} "
            f"| {res['wall_s']:.1f} | {res['peak_mib']:.0f} |",
            flush=True,
        )

    runs = alternate(names, args.repeats, lambda c: run_worker(c, args, __file__, ["--padding", args.padding]), show)
    pairs = [(c, reference_of(c)) for c in names if not c.startswith("textbrewer") and reference_of(c) in names]
    ratios = {c: pair_ratios(runs, c, ref) for c, ref in pairs}
    med = {c: median_of(runs, c, "examples_per_s") for c in names}
    print("\nmedian examples/s: " + ", ".join(f"{c} {med[c]:.2f}" for c in names))
    for c, ref in pairs:
        rs = ratios[c]
        print(f"median ratio toolkit {c} / {ref}: {statistics.median(rs):.3f} (min {min(rs):.3f}, max {max(rs):.3f})")
    print(f"load average at end {os.getloadavg()[0]:.2f}")
    if args.json:
        write_json(args.json, {"args": vars(args), "machine": info, "runs": runs, "ratios": ratios, "median": med})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
