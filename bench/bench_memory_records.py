"""Peak memory of one TinyBERT / MiniLM training step on CPU: every layer recorded against only the layers the
method reads, MiniLM's relation KL whole against in chunks (issue 31).

The MiniLM / MiniLMv2 loss is also measured alone (forward and backward on random projections), its peak given in
units of one fp32 [B, H, S, S] relation.

One step = the teacher's forward (no gradient), the student's forward, the method's losses and the backward, through
the run's training forwards (models/padding_free.training_forwards: the own packed forward, or Hugging Face's with
the attention hooks), on a batch of rows of random lengths between half and all of ``--seq_len`` (one full).

Memory counted: the bytes of the tensor storages the step creates that are alive at once, summed after every
operator (a TorchDispatchMode sees each operator's outputs, forward and backward; a storage counts from the
operator that made it until it is freed, which torch.multiprocessing's StorageWeakRef tells). The weights, the
batch and anything made before the step are not counted; nor is scratch memory an operator frees before it
returns (the same in every column). Peak = the most bytes alive at once during the step.

Columns: ``every`` records every layer's attention inputs and hidden states (the toolkit before issue 31:
``training_forwards(record_attention=True)``), ``declared`` only what the method declares
(``Method.recorded_layers``). ``--tree PATH`` imports ``fine_tune`` from another checkout (e.g. the commit before
issue 31: its MiniLM computes the relation KL on whole [B, H, S, S] tensors; it has no ``declared`` column)::

    git archive 3eb6106 fine_tune | tar -x -C /tmp/before
    python bench/bench_memory_records.py --tree /tmp/before --json /tmp/before.json
    python bench/bench_memory_records.py --json /tmp/after.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def live_bytes_mode(ignore):
    """A TorchDispatchMode whose ``peak`` is the most bytes of the storages made under it alive at once (see the
    module's docstring); ``ignore``: tensors whose storages are not counted (weights, the batch)."""
    import torch
    from torch.multiprocessing.reductions import StorageWeakRef
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    class LiveBytes(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.live: dict[int, tuple[StorageWeakRef, int]] = {}
            self.now = self.peak = 0
            self.ignore = {t.untyped_storage().data_ptr() for t in ignore}

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            for key in [k for k, (ref, _) in self.live.items() if ref.expired()]:  # freed since the last operator
                self.now -= self.live.pop(key)[1]
            out = func(*args, **(kwargs or {}))
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor):
                    storage = t.untyped_storage()
                    key = storage.data_ptr()
                    if storage.nbytes() and key not in self.ignore and key not in self.live:
                        self.live[key] = (StorageWeakRef(storage), storage.nbytes())
                        self.now += storage.nbytes()
            self.peak = max(self.peak, self.now)
            return out

    return LiveBytes()


def build(name: str, args):
    """(method, teacher, student) of the contender: tiny-width BERTs with BERT-base's teacher depth."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from fine_tune import synthetic
    from fine_tune.methods.minilm import MiniLM
    from fine_tune.methods.tinybert import TinyBERT

    torch.manual_seed(0)
    width, heads = args.width, args.heads

    def bert(layers):
        return AutoModelForSequenceClassification.from_config(
            synthetic.tiny_config(
                "bert", num_layers=layers, hidden=width, heads=heads, ff=2 * width, max_positions=args.seq_len + 8
            )
        )

    teacher = bert(args.teacher_layers).eval()
    student_layers = 4 if name == "tinybert" else 6
    student = bert(student_layers)
    if name == "tinybert":  # TinyBERT_4 of a 12-layer teacher: teacher layers 3, 6, 9, 12 and the embeddings
        method = TinyBERT(
            student_layers,
            args.teacher_layers,
            0.0,
            0.0,
            1.0,
            1.0,
            stage="intermediate",
            student_heads=heads,
            teacher_heads=heads,
            padding="dynamic",
            student_width=width,
            teacher_width=width,
        )
    else:  # the student's last layer from the teacher's last
        method = MiniLM(
            student_layers,
            args.teacher_layers,
            0.5,
            0.5,
            1.0,
            1.0,
            student_heads=heads,
            teacher_heads=heads,
            relation_heads=heads if name == "minilmv2" else None,
            student_width=width,
            teacher_width=width,
            padding="dynamic",
        )
    method.create_parameters(None)
    return method, teacher, student


def peak_of_step(name: str, forward_kind: str, records: str, args) -> int:
    import torch

    from fine_tune.models.forward import forward
    from fine_tune.models.padding_free import training_forwards

    method, teacher, student = build(name, args)
    chosen = (
        {"record_attention": True}
        if records == "every"
        else {"student_record": method.recorded_layers("student"), "teacher_record": method.recorded_layers("teacher")}
    )
    fw = training_forwards(
        student, teacher, enabled=forward_kind == "own", ignores_padding=method.ignores_padding, **chosen
    )
    g = torch.Generator().manual_seed(1)
    lengths = torch.randint(args.seq_len // 2, args.seq_len + 1, (args.batch_size,), generator=g)
    lengths[0] = args.seq_len
    mask = (torch.arange(args.seq_len)[None, :] < lengths[:, None]).long()
    batch = {
        "input_ids": torch.randint(5, 100, mask.shape, generator=g) * mask,
        "token_type_ids": torch.zeros_like(mask),
        "attention_mask": mask,
        "labels": torch.randint(0, 2, (args.batch_size,), generator=g),
    }
    params = [p for m in (teacher, student) for p in (*m.parameters(), *m.buffers())]
    mode = live_bytes_mode([*params, *(v for v in batch.values())])
    with mode:
        with torch.no_grad():
            t = forward(fw.teacher, batch, method.needs_hidden_states)
        s = forward(fw.student, batch, method.needs_hidden_states)
        method.losses(batch, s, t)["loss"].backward()
        del s, t
    return mode.peak


def peak_of_relation_loss(name: str, args) -> int:
    """The MiniLM (``name`` "minilm") or MiniLMv2 loss alone, forward and backward, on random [B, S, D] projections
    (``--heads`` heads or relation heads, ``--width`` wide, the step's lengths): the peak bytes made."""
    import torch

    from fine_tune.methods.minilm import minilm_loss, minilmv2_loss

    g = torch.Generator().manual_seed(2)
    lengths = torch.randint(args.seq_len // 2, args.seq_len + 1, (args.batch_size,), generator=g)
    lengths[0] = args.seq_len
    mask = (torch.arange(args.seq_len)[None, :] < lengths[:, None]).long()
    student = [torch.randn(args.batch_size, args.seq_len, args.width, generator=g).requires_grad_() for _ in "qkv"]
    teacher = [torch.randn(args.batch_size, args.seq_len, args.width, generator=g) for _ in "qkv"]
    mode = live_bytes_mode([*student, *teacher, mask])
    with mode:
        if name == "minilm":
            total, _ = minilm_loss(*student, *teacher, args.heads, args.heads, mask)
        else:
            total, _ = minilmv2_loss(*student, *teacher, args.heads, mask)
        total.backward()
        del total
    return mode.peak


CONTENDERS = [
    ("tinybert", "own"),
    ("tinybert", "hugging_face"),
    ("minilm", "own"),
    ("minilm", "hugging_face"),
    ("minilmv2", "own"),
]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", type=Path, help="import fine_tune from this checkout (default: this one)")
    ap.add_argument("--batch_size", type=int, default=8)
    ap.add_argument("--seq_len", type=int, default=512)
    ap.add_argument("--width", type=int, default=192)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--teacher_layers", type=int, default=12)
    ap.add_argument(
        "--what",
        choices=("both", "steps", "loss"),
        default="both",
        help="the training steps' table, the MiniLM loss alone, or both",
    )
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    sys.path.insert(0, str((args.tree or Path(__file__).resolve().parents[1]).resolve()))
    import torch

    from fine_tune.methods.base import Method

    torch.set_num_threads(1)
    columns = ["every"] + (["declared"] if hasattr(Method, "recorded_layers") else [])
    rows = []
    for name, kind in CONTENDERS if args.what != "loss" else ():
        rows.append({"method": name, "forward": kind, **{col: peak_of_step(name, kind, col, args) for col in columns}})
        print(rows[-1], file=sys.stderr)
    if rows:
        print(f"| method | forward | {' | '.join(f'peak MB, {c}' for c in columns)} |")
        print("|---|---|" + "---|" * len(columns))
        for r in rows:
            print(f"| {r['method']} | {r['forward']} | {' | '.join(f'{r[c] / 1e6:.1f}' for c in columns)} |")
    relation = args.batch_size * args.heads * args.seq_len**2 * 4  # one fp32 [B, H, S, S]
    losses = (
        {name: peak_of_relation_loss(name, args) for name in ("minilm", "minilmv2")} if args.what != "steps" else {}
    )
    if losses:
        print(f"\n| loss alone (forward + backward) | peak MB | in fp32 [B, H, S, S] ({relation / 1e6:.1f} MB) |")
        print("|---|---|---|")
        for name, peak in losses.items():
            print(f"| {name} | {peak / 1e6:.1f} | {peak / relation:.2f} |")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows, "relation_loss_peaks": losses},
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
