#!/usr/bin/env python
"""Achieved FLOP/s of one MiniLM training step against the machine's measured matrix-multiply peak.

One process: the toolkit engine fine-tunes MiniLM-L6-H384 (``bench_finetune.worker_toolkit``: HardLabel, fused
AdamW, clipping, linear schedule) on qp_pairs rows padded to a fixed ``--max_seq_len`` (128) at ``--batch_size``
(32), so every step has the same shape. The FLOPs of one whole step (forward, backward, optimizer) are counted by
``torch.utils.flop_counter.FlopCounterMode`` over the last untimed step (it counts matrix multiplies and attention,
not element-wise work; the CPU flash-attention kernels are added with torch's own SDPA formulas); the step time
is the mean over the ``--steps`` timed steps after it. Then the peak: the best of ``--mm_repeats`` timed
``torch.mm`` of two ``--mm_size`` square fp32 matrices (2 n^3 FLOPs each), and of the step's autocast dtype too
with ``--amp``. Prints FLOPs per step, achieved FLOP/s, the peak and the percentage; the last line is JSON.

    python bench/bench_flops.py [--steps 10 --max_seq_len 128 --batch_size 32 --mm_size 2048] [--device cuda --amp]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_finetune import worker_toolkit  # noqa: E402
from common import add_worker_args, fmt_flops, parse_args, precision_name  # noqa: E402


def mm_peak(device: str, dtype_name: str, n: int, repeats: int) -> dict:
    """FLOP/s of the fastest of ``repeats`` timed ``torch.mm`` of two n x n matrices (after one untimed)."""
    import torch

    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype_name]
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=g)

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    torch.mm(a, b)
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        sync()
        times.append(time.perf_counter() - start)
    return {"dtype": dtype_name, "n": n, "repeats": repeats, "best_s": min(times), "flops_per_s": 2 * n**3 / min(times)}


def measure(args) -> dict:
    t0 = time.perf_counter()
    res = worker_toolkit(args, t0, padding="max_length", count_flops=True, name="flops", padding_free=False)
    step_s = res["loop_s"] / res["steps"]
    res["step_s"] = step_s
    res["achieved_flops_per_s"] = res["flops_per_step"] / step_s
    prec = precision_name(args)
    n = args.mm_size or (8192 if args.device == "cuda" else 2048)
    res["mm_peak"] = {d: mm_peak(args.device, d, n, args.mm_repeats) for d in dict.fromkeys(("fp32", prec))}
    res["peak_dtype"] = prec
    res["peak_flops_per_s"] = res["mm_peak"][prec]["flops_per_s"]
    res["percent_of_peak"] = 100 * res["achieved_flops_per_s"] / res["peak_flops_per_s"]
    return res


def add_flops_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--mm_size", type=int, default=0, help="n of the n x n torch.mm peak (default 2048 on CPU, 8192 on CUDA)"
    )
    p.add_argument("--mm_repeats", type=int, default=10, help="timed torch.mm calls; the best counts (default 10)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--contender", choices=("flops",), help="(as bench/bench.py calls it; the same measurement)")
    add_worker_args(p, steps=10, rows=0, repeats=1)
    add_flops_args(p)
    args = parse_args(p, argv)
    if args is None:
        return 0
    res = measure(args)
    if not args.contender:
        peak = res["mm_peak"][res["peak_dtype"]]
        print(
            f"{res['flops_per_step'] / 1e12:.3f} TFLOP per step ({args.batch_size} x {args.max_seq_len}, "
            f"{res['precision']}), {res['step_s']:.3f} s per step -> {fmt_flops(res['achieved_flops_per_s'])}; "
            f"torch.mm {peak['n']}x{peak['n']} {peak['dtype']} best of {peak['repeats']}: "
            f"{fmt_flops(peak['flops_per_s'])} -> {res['percent_of_peak']:.1f} % of peak"
        )
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
