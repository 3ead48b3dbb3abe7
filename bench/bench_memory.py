#!/usr/bin/env python
"""Peak memory of a training step with and without ``--gradient_checkpointing`` and the teacher's weights cast
once to the autocast dtype: measured on CPU through the toolkit's engine, computed for BERT-base/large on a GPU.

    python bench/bench_memory.py [--layers 6] [--hidden 256] [--batch_size 16] [--max_seq_len 128] [--json OUT]

Measured (this machine's CPU, random BERTs built from a config, dropout 0.1, rows of lengths spread over
[max_seq_len / 4, max_seq_len]): each contender runs the engine as the scripts wire it (``Trainer`` with the training
forward of ``models/padding_free.training_forwards``), one warm-up step (so AdamW's moments exist), then one step
under :class:`LiveBytes`, which sees every tensor an operator returns (forward, autograd's backward, optimiser)
and counts the bytes of each new storage until it is freed: the step's peak is the most bytes alive at once on
top of what lived before it (weights, moments). That is the memory a step's activations, gradients and
temporaries take, not the process's resident size (which the allocator's caching and the interpreter blur).

* gradient checkpointing: fine-tuning on the packed padding-free forward and on Hugging Face's forward, off/on;
* the teacher cast: PKD (a teacher of twice the student's layers) under bf16 autocast (``Precision("cpu",
  torch.bfloat16)``, the same code path as CUDA's fp16), with the trainer's cast and with it disabled: the
  teacher's resident weight bytes and the step's peak.

Computed (no GPU here): BERT-base and BERT-large at batch 32 x 512 in fp16, the activations a layer keeps for
the backward pass from Korthikanti et al., "Reducing Activation Recomputation in Large Transformer Models"
(MLSys 2023), 34 s b h bytes per layer plus 5 a s^2 b for attention that stores its [S, S] scores and
probabilities (none with PyTorch's fused attention kernels, which a CUDA run of the toolkit's forward uses);
checkpointed, each layer keeps its fp32 input (4 s b h bytes: the residual stream leaves LayerNorm in fp32 under
autocast) and one layer's activations live again during its recomputation. Teacher weights: the parameters of
the model built on the meta device, fp32 against the cast (linear weights and biases fp16; embeddings and
LayerNorm fp32).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import weakref
from pathlib import Path
from unittest import mock

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils._pytree import tree_flatten  # noqa: E402

MB = 1e6


class LiveBytes(TorchDispatchMode):
    """Bytes of the tensor storages created while active and still alive, and their peak: every operator's
    outputs are looked at, a storage counted once and uncounted when it is freed; an output on an input's storage
    (a view, an in-place result: e.g. the transposed weight a linear layer reads) is no new memory."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self._seen: set[int] = set()

    def _free(self, key: int, nbytes: int) -> None:
        self._seen.discard(key)
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {
            t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)
        }
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            key, nbytes = storage.data_ptr(), storage.nbytes()
            if not nbytes or key in self._seen or key in inputs:
                continue
            self._seen.add(key)
            self.live += nbytes
            self.peak = max(self.peak, self.live)
            weakref.finalize(storage, self._free, key, nbytes)
        return out


def _bert(layers: int, args, seed: int):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    return BertForSequenceClassification(
        BertConfig(
            vocab_size=1000,
            hidden_size=args.hidden,
            num_hidden_layers=layers,
            num_attention_heads=args.hidden // 64,
            intermediate_size=4 * args.hidden,
            max_position_embeddings=args.max_seq_len,
            hidden_dropout_prob=0.1,
            attention_probs_dropout_prob=0.1,
        )
    )


def _batch(args) -> dict:
    g = torch.Generator().manual_seed(0)
    b, s = args.batch_size, args.max_seq_len
    lengths = torch.linspace(s // 4, s, b).round().long()
    mask = (torch.arange(s)[None, :] < lengths[:, None]).long()
    return {
        "input_ids": torch.randint(5, 1000, (b, s), generator=g) * mask,
        "attention_mask": mask,
        "token_type_ids": torch.zeros(b, s, dtype=torch.long),
        "labels": torch.randint(0, 2, (b,), generator=g),
        "lengths": lengths.numpy(),
    }


def step_peak(
    args,
    root: Path,
    name: str,
    *,
    checkpointing: bool = False,
    padding_free: bool = True,
    teacher_layers: int = 0,
    precision=None,
) -> dict:
    """One warm-up step, then the peak bytes of one step under :class:`LiveBytes`; the teacher's weight bytes."""
    from fine_tune.engine.device import Precision
    from fine_tune.engine.optim import OptimiserSettings
    from fine_tune.engine.trainer import Trainer, TrainSettings
    from fine_tune.experiment import ExperimentDir
    from fine_tune.methods import PKD, HardLabel
    from fine_tune.models.forward import forward
    from fine_tune.models.padding_free import training_forwards
    from fine_tune.reporting import TensorBoardReporter

    student = _bert(args.layers, args, 0)
    teacher = _bert(teacher_layers, args, 1) if teacher_layers else None
    method = PKD(args.layers, teacher_layers, 0.5, 0.5, 1.0, 1.0, padding="dynamic") if teacher else HardLabel()
    forwards = training_forwards(
        student,
        teacher,
        enabled=padding_free,
        ignores_padding=method.ignores_padding,
        gradient_checkpointing=checkpointing,
    )
    batch = _batch(args)
    if forwards.takes_layout:
        batch["model_kwargs"] = {"layout": forwards.layout(batch["lengths"], args.max_seq_len)}
    batch.pop("lengths")
    settings = TrainSettings(
        optimiser=OptimiserSettings(lr=1e-4, total_step=2, warmup_step=1),
        batch_size=args.batch_size,
        accum_step=1,
        ckpt_step=100,
        log_step=100,
        seed=0,
        tag_prefix="qqp/train/bert",
    )
    exp = ExperimentDir(root, name)
    exp.path.mkdir(parents=True)
    trainer = Trainer(
        student,
        method,
        lambda rows: dict(batch),
        args.batch_size,
        settings,
        exp,
        torch.device("cpu"),
        precision or Precision("cpu", None),
        teacher=teacher,
        progress=False,
        student_forward=forwards.student,
        teacher_forward=forwards.teacher,
        forward=forward,
        reporter=TensorBoardReporter(exp.log_dir),
    )  # as the scripts' default --report_to
    student.train()
    rows = list(range(args.batch_size))
    trainer._micro_step(rows)  # warm-up: AdamW's moments exist from here on
    trainer._optimizer_step()
    with LiveBytes() as live:
        trainer._micro_step(rows)
        trainer._optimizer_step()
    weights = sum(p.numel() * p.element_size() for p in teacher.parameters()) if teacher else 0
    return {"peak_mb": live.peak / MB, "teacher_weights_mb": weights / MB}


def measured(args) -> list[dict]:
    from fine_tune.engine.device import Precision

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for forward_name, padding_free in (("padding-free (packed)", True), ("Hugging Face", False)):
            for ckpt in (False, True):
                r = step_peak(args, root, f"ft_{padding_free}_{ckpt}", checkpointing=ckpt, padding_free=padding_free)
                rows.append(
                    {
                        "what": f"fine-tuning, {forward_name} forward",
                        "variant": "--gradient_checkpointing" if ckpt else "plain",
                        **r,
                    }
                )
        bf16 = Precision("cpu", torch.bfloat16)
        for cast in (False, True):
            with (
                contextlib.nullcontext()
                if cast
                else mock.patch.object(Precision, "cast_frozen_linears", lambda self, module, device: 0)
            ):
                r = step_peak(args, root, f"pkd_{cast}", teacher_layers=2 * args.layers, precision=bf16)
            rows.append(
                {
                    "what": f"PKD, teacher {2 * args.layers} layers, bf16 autocast",
                    "variant": "teacher cast once" if cast else "teacher fp32 (before)",
                    **r,
                }
            )
    return rows


def computed() -> list[dict]:
    """BERT-base/large at batch 32 x 512, fp16 autocast on a GPU: activations kept for the backward pass and the
    teacher's weight bytes (see the module's docstring)."""
    from transformers import BertConfig, BertForSequenceClassification

    from fine_tune.engine.device import Precision

    out = []
    b, s = 32, 512
    for name, h, layers, heads in (("BERT-base", 768, 12, 12), ("BERT-large", 1024, 24, 16)):
        sbh = s * b * h
        per_layer, scores = 34 * sbh, 5 * heads * s * s * b
        with torch.device("meta"):
            model = BertForSequenceClassification(
                BertConfig(hidden_size=h, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=4 * h)
            )
        fp32 = sum(p.numel() * 4 for p in model.parameters())
        Precision("cuda", torch.float16).cast_frozen_linears(model, torch.device("cuda"))
        cast = sum(p.numel() * p.element_size() for p in model.parameters())
        out.append(
            {
                "model": name,
                "layers": layers,
                "fused_gb": layers * per_layer / 1e9,
                "eager_gb": layers * (per_layer + scores) / 1e9,
                "checkpointed_gb": (layers * 4 * sbh + per_layer) / 1e9,
                "teacher_fp32_gb": fp32 / 1e9,
                "teacher_cast_gb": cast / 1e9,
            }
        )
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=6, help="student layers (the teacher has twice as many)")
    ap.add_argument("--hidden", type=int, default=256, help="hidden size (heads of 64)")
    ap.add_argument("--batch_size", type=int, default=16)
    ap.add_argument("--max_seq_len", type=int, default=128)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows, gpu = measured(args), computed()
    print(
        f"measured on CPU: {args.layers} layers, hidden {args.hidden}, batch {args.batch_size} x {args.max_seq_len}\n"
    )
    print("| step | variant | peak bytes of the step (MB) | teacher weights (MB) |\n|---|---|---|---|")
    for r in rows:
        weights = f"{r['teacher_weights_mb']:.1f}" if r["teacher_weights_mb"] else "-"
        print(f"| {r['what']} | {r['variant']} | {r['peak_mb']:.1f} | {weights} |")
    print("\ncomputed: batch 32 x 512, fp16 autocast on a GPU\n")
    print(
        "| model | activations kept, fused attention (GB) | eager attention (GB) | --gradient_checkpointing (GB) "
        "| teacher weights fp32 (GB) | cast once (GB) |\n|---|---|---|---|---|---|"
    )
    for g in gpu:
        print(
            f"| {g['model']} ({g['layers']} layers) | {g['fused_gb']:.2f} | {g['eager_gb']:.2f} | "
            f"{g['checkpointed_gb']:.2f} | {g['teacher_fp32_gb']:.3f} | {g['teacher_cast_gb']:.3f} |"
        )
    if args.json:
        args.json.write_text(
            json.dumps({"measured": rows, "computed": gpu, "args": vars(args) | {"json": None}}, indent=1, default=str)
        )


if __name__ == "__main__":
    main()
