#!/usr/bin/env python
"""How finely the padding-free forward should split a batch into attention buckets: one training step of MiniLM
(forward with dropout, backward) through ``models/padding_free.py`` on real batches, for several values of the
per-bucket overhead of ``plan_buckets`` (0: one bucket per distinct length; inf: one bucket for the whole batch,
padded to its longest sequence), plus Hugging Face's padded forward on the same batches. Batches are random
``--batch_size`` draws of the real rows (seeded, the same for every setting), padded to their longest row
(dynamic padding). Settings alternate ``--repeats`` times; prints the median step time of each and its ratio to
the padded forward.

    python bench/bench_attention_buckets.py [--dataset boolq --max_seq_len 256 --batches 6 --repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import DEFAULT_BOOLQ, DEFAULT_DATA, DEFAULT_MODEL, load_examples, missing_inputs, skipped  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", choices=("qp_pairs", "boolq"), default="boolq")
    p.add_argument("--max_seq_len", type=int, default=None, help="default: 256 for boolq, 128 for qp_pairs")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--batches", type=int, default=6)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--overheads", default="0,2048,8192,32768,inf")
    p.add_argument("--model", default=str(DEFAULT_MODEL))
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--boolq", default=str(DEFAULT_BOOLQ))
    p.add_argument("--rows", type=int, default=None)
    args = p.parse_args(argv)
    args.max_seq_len = args.max_seq_len or (256 if args.dataset == "boolq" else 128)
    missing = missing_inputs(args, [args.dataset])
    if missing:
        print(skipped(missing))
        return 0

    import torch
    from transformers import AutoModelForSequenceClassification

    from fine_tune.batching import Collator, tokenize
    from fine_tune.models import padding_free
    from fine_tune.models.classifier import load_tokenizer

    torch.manual_seed(0)
    tok = load_tokenizer(args.model)
    enc = tokenize(tok, load_examples(args), args.max_seq_len)
    collate = Collator(enc, tok.pad_token_id, args.max_seq_len, "dynamic")  # each batch padded to its longest row
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(args.batches):
        b = collate(torch.randperm(len(enc), generator=g)[: args.batch_size].numpy())
        batches.append({k: b[k] for k in ("input_ids", "token_type_ids", "attention_mask")})
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=2).train()
    pf = padding_free.PaddingFree(model)
    head_dim = model.config.hidden_size // model.config.num_attention_heads

    def step(module, b):
        model.zero_grad(set_to_none=True)
        module(**b).logits.float().pow(2).mean().backward()

    settings = ["padded"] + args.overheads.split(",")
    times = {s: [] for s in settings}
    buckets = {}
    for b in batches[:1]:
        for s in settings:  # warm-up
            if s != "padded":
                padding_free.BUCKET_OVERHEAD["cpu"] = float(s)
            step(model if s == "padded" else pf, b)
    for _ in range(args.repeats):
        for s in settings:
            if s != "padded":
                padding_free.BUCKET_OVERHEAD["cpu"] = float(s)
                buckets[s] = statistics.mean(
                    len(padding_free.Packing(b["attention_mask"], head_dim).buckets) for b in batches
                )
            t0 = time.perf_counter()
            for b in batches:
                step(model if s == "padded" else pf, b)
            times[s].append((time.perf_counter() - t0) / len(batches))
    real = sum(int(b["attention_mask"].sum()) for b in batches)
    padded = sum(b["attention_mask"].numel() for b in batches)
    full = len(batches) * args.batch_size * args.max_seq_len
    print(
        f"{args.dataset} at {args.max_seq_len}: {len(batches)} batches of {args.batch_size}, real tokens "
        f"{real}, padded to batch max {padded} ({padded / real:.3f}x), to max_seq_len {full} ({full / real:.3f}x)"
    )
    base = statistics.median(times["padded"])
    print("| forward | buckets/batch | s/step (median) | speed-up vs padded |")
    print("|---|---|---|---|")
    for s in settings:
        med = statistics.median(times[s])
        name = "HF padded" if s == "padded" else f"padding-free, overhead {s}"
        print(
            f"| {name} | {buckets.get(s, '-') if s == 'padded' else f'{buckets[s]:.1f}'} | {med:.3f} | "
            f"{base / med:.3f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
