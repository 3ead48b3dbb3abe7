#!/usr/bin/env python
"""The whole bench in one command: fine-tuning, distillation and FLOP/s, side by side, one markdown table.

    python bench/bench.py [--only finetune,distill,flops] [--repeats 3] [--device cuda --amp] [--json OUT]

Sections (each run by the worker scripts beside this one, every run a fresh subprocess, the contenders of a
section alternating A B C D, D C B A, ... ``--repeats`` times; medians; ratios taken per alternation):

* ``finetune`` (``bench_finetune.py``), MiniLM on qp_pairs (max_seq_len 128) and real BoolQ passages (BoolQ
  val, max_seq_len 256, parsed by ``fine_tune.tasks``): toolkit default (dynamic padding, the toolkit's data
  order), toolkit fastest (``group_by_length``), HF Trainer with run_glue defaults (every example padded to
  max_seq_len), HF Trainer best (dynamic padding + length-grouped sampler), and the Trainer's best settings fed
  toolkit fastest's own batches (the same widths every step: the like-for-like engine comparison). Ratios
  toolkit default / Trainer run_glue and toolkit fastest / Trainer best (and / the same batches), next to the
  ideal ratio: padded / real tokens of the data at that max_seq_len.
* ``distill`` (``bench_distill.py``): toolkit PKD and LAD vs TextBrewer ``GeneralDistiller``, at fixed padding (the
  scripts' default) and with dynamic padding (masked hidden losses on both sides).
* ``flops`` (``bench_flops.py``): achieved FLOP/s of one MiniLM training step at batch 32 x 128 (fixed length)
  against the measured ``torch.mm`` peak.

Peak memory: the worker's peak resident set on CPU, ``torch.cuda.max_memory_allocated`` on CUDA.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_flops import add_flops_args  # noqa: E402
from common import (  # noqa: E402
    DATASETS,
    add_worker_args,
    alternate,
    check_args,
    fmt_flops,
    fmt_ratio,
    ideal_ratio,
    load_examples,
    machine,
    markdown_table,
    median_of,
    missing_inputs,
    ok_runs,
    pair_ratios,
    precision_name,
    ratio_summary,
    run_worker,
    skipped,
    token_lengths,
    write_json,
)

SECTIONS = ("finetune", "distill", "flops")
FINETUNE_LEN = {"qp_pairs": 128, "boolq": 256}
DEFAULT_STEPS = {"finetune": 40, "distill": 20, "flops": 10}
DEFAULT_ROWS = {"finetune": 0, "distill": 2048, "flops": 0}
FINETUNE = {  # worker name -> table label, in the order of the first alternation
    "toolkit": "toolkit default (dynamic padding, the toolkit's data order)",
    "toolkit_fast": "toolkit fastest (group_by_length, dynamic padding)",
    "trainer_glue": "HF Trainer, run_glue defaults (pad to max_seq_len, random order)",
    "trainer_best": "HF Trainer best (DataCollatorWithPadding, group_by_length sampler)",
    "trainer_best_same": "HF Trainer best settings fed toolkit fastest's batches (the same widths every step)",
}
FINETUNE_RATIOS = (
    ("toolkit", "trainer_glue"),
    ("toolkit_fast", "trainer_best"),
    ("toolkit_fast", "trainer_glue"),
    ("toolkit_fast", "trainer_best_same"),
)
DISTILL = {
    "textbrewer": "TextBrewer GeneralDistiller",
    "pkd": "toolkit PKD (the same work)",
    "lad": "toolkit LAD (+ 6 gate blocks and their optimizer)",
    "textbrewer_dyn": "TextBrewer GeneralDistiller, inputs_mask (masked hidden_mse)",
    "pkd_dyn": "toolkit PKD --padding dynamic (the same work; padding-free forward)",
    "lad_dyn": "toolkit LAD --padding dynamic (+ gates; padding-free forward)",
}
HEADER = [
    "section",
    "data",
    "contender",
    "precision",
    "examples/s",
    "peak MiB",
    "padded / real tokens",
    "ratio (median per alternation, min–max)",
    "ideal ratio",
    "notes",
]


def worker_args(args, section: str, **over) -> SimpleNamespace:
    """The flags one section's workers get (``common.FORWARDED`` + ``amp``)."""
    ns = SimpleNamespace(
        steps=args.steps or DEFAULT_STEPS[section],
        warm_steps=args.warm_steps,
        batch_size=args.batch_size,
        rows=DEFAULT_ROWS[section] if args.rows is None else args.rows,
        dataset="qp_pairs",
        max_seq_len=args.max_seq_len or 128,
        model=args.model,
        data=args.data,
        boolq=args.boolq,
        device=args.device,
        amp=args.amp,
    )
    for k, v in over.items():
        setattr(ns, k, v)
    return ns


def progress(section: str, label: str):
    def show(res: dict) -> None:
        head = f"  {section} {label} run {res['run'] + 1} {res['contender']}:"
        if "error" in res:
            print(f"{head} FAILED ({res['error']}); skipped in the later runs", flush=True)
        else:
            print(
                f"{head} {res['examples_per_s']:.2f} examples/s, peak {res['peak_mib']:.0f} MiB, padded/real "
                f"{res['padded_over_real']:.2f}, process {res['wall_s']:.1f} s",
                flush=True,
            )

    return show


def summary_cells(runs: list[dict], c: str) -> list[str]:
    """precision, examples/s, peak MiB, padded/real of a contender's runs (medians), or its failure."""
    ok = ok_runs(runs, c)
    if not ok:
        return ["", "failed", "", ""]
    return [
        ok[0]["precision"],
        f"{median_of(runs, c, 'examples_per_s'):.2f}",
        f"{median_of(runs, c, 'peak_mib'):.0f}",
        f"{median_of(runs, c, 'padded_over_real'):.2f}",
    ]


def failure(runs: list[dict], c: str) -> str:
    errs = [x["error"] for x in runs if x.get("contender") == c and "error" in x]
    return f"failed: {errs[0]}" if errs else ""


def section_finetune(args, datasets: list[str]) -> tuple[dict, list[list[str]]]:
    out, rows = {}, []
    for ds in datasets:
        wa = worker_args(args, "finetune", dataset=ds, max_seq_len=args.max_seq_len or FINETUNE_LEN[ds])
        lengths = token_lengths(wa, load_examples(wa))
        ideal = ideal_ratio(lengths, wa.max_seq_len)
        label = f"{ds}, max_seq_len {wa.max_seq_len}, {len(lengths)} rows"
        print(f"finetune {label}: ideal ratio (padded / real tokens at max_seq_len) {ideal:.3f}", flush=True)
        script = str(HERE / "bench_finetune.py")
        runs = alternate(
            FINETUNE,
            args.repeats,
            lambda c, wa=wa, script=script: run_worker(c, wa, script, allow_fail=True),
            progress("finetune", ds),
        )
        ratios = {f"{a}/{b}": ratio_summary(pair_ratios(runs, a, b)) for a, b in FINETUNE_RATIOS}
        # whole process (Python start to exit: imports, model load, tokenisation, every step, the final save), as a
        # speed ratio: the Trainer's wall time over the toolkit's
        ratios["whole_process toolkit_fast/trainer_best"] = ratio_summary(
            pair_ratios(runs, "trainer_best", "toolkit_fast", key="wall_s")
        )
        out[ds] = {
            "max_seq_len": wa.max_seq_len,
            "rows": len(lengths),
            "real_tokens": int(lengths.sum()),
            "ideal_ratio": ideal,
            "runs": runs,
            "ratios": ratios,
            "worker_args": vars(wa),
        }
        ratio_cell = {
            "toolkit": f"{fmt_ratio(ratios['toolkit/trainer_glue'])} vs Trainer run_glue",
            "toolkit_fast": f"{fmt_ratio(ratios['toolkit_fast/trainer_best'])} vs Trainer best",
            "trainer_glue": "1 (reference)",
            "trainer_best": "1 (reference)",
            "trainer_best_same": "1 (reference)",
        }
        notes = {
            "toolkit_fast": f"vs Trainer run_glue {fmt_ratio(ratios['toolkit_fast/trainer_glue'])}; vs Trainer "
            f"best fed the same batches {fmt_ratio(ratios['toolkit_fast/trainer_best_same'])}; "
            f"whole process vs Trainer best {fmt_ratio(ratios['whole_process toolkit_fast/trainer_best'])}"
        }
        for c, name in FINETUNE.items():
            rows.append(
                [
                    "finetune",
                    label,
                    name,
                    *summary_cells(runs, c),
                    ratio_cell[c],
                    f"{ideal:.3f}" if c in ("toolkit", "toolkit_fast") else "",
                    failure(runs, c) or notes.get(c, ""),
                ]
            )
    return out, rows


def section_distill(args) -> tuple[dict, list[list[str]]]:
    wa = worker_args(args, "distill")
    script = str(HERE / "bench_distill.py")
    runs = alternate(
        DISTILL, args.repeats, lambda c: run_worker(c, wa, script, allow_fail=True), progress("distill", "qp_pairs")
    )
    ref = {c: "textbrewer_dyn" if c.endswith("_dyn") else "textbrewer" for c in DISTILL}
    ratios = {
        f"{c}/{ref[c]}": ratio_summary(pair_ratios(runs, c, ref[c])) for c in DISTILL if not c.startswith("textbrewer")
    }
    rows = []
    for c, name in DISTILL.items():
        label = (
            f"qp_pairs, max_seq_len {wa.max_seq_len} ({'dynamic padding' if c.endswith('_dyn') else 'padded to it'}"
            f"), {wa.rows or 'all'} rows; 6 -> 3 layers"
        )
        cells = summary_cells(runs, c)
        note = failure(runs, c)
        if c.startswith("textbrewer") and args.amp:
            cells[0] = "fp32 (TextBrewer's fp16 needs apex)"
            note = note or "not the same precision as the toolkit rows"
        ratio = (
            "1 (reference)"
            if c.startswith("textbrewer")
            else f"{fmt_ratio(ratios[f'{c}/{ref[c]}'])} vs TextBrewer{' (masked)' if c.endswith('_dyn') else ''}"
        )
        rows.append(["distill", label, name, *cells, ratio, "", note])
    return {"runs": runs, "ratios": ratios, "worker_args": vars(wa)}, rows


def section_flops(args) -> tuple[dict, list[list[str]]]:
    wa = worker_args(args, "flops")
    script = str(HERE / "bench_flops.py")
    extra = ["--mm_size", str(args.mm_size), "--mm_repeats", str(args.mm_repeats)]
    runs = alternate(
        ("flops",),
        args.repeats,
        lambda c: run_worker(c, wa, script, extra, allow_fail=True),
        progress("flops", "MiniLM step"),
    )
    label = f"qp_pairs rows padded to {wa.max_seq_len}, batch {wa.batch_size}"
    ok = ok_runs(runs, "flops")
    out = {"runs": runs, "worker_args": vars(wa)}
    if not ok:
        return out, [["flops", label, "toolkit training step", "", "failed", "", "", "", "", failure(runs, "flops")]]
    pct = ratio_summary([x["percent_of_peak"] for x in ok])
    flops = median_of(runs, "flops", "flops_per_step")
    achieved = median_of(runs, "flops", "achieved_flops_per_s")
    dtype = ok[0]["peak_dtype"]
    peaks = {d: ratio_summary([x["mm_peak"][d]["flops_per_s"] for x in ok]) for d in ok[0]["mm_peak"]}
    n, reps = ok[0]["mm_peak"][dtype]["n"], ok[0]["mm_peak"][dtype]["repeats"]
    out.update(
        median_percent_of_peak=pct["median"],
        median_achieved_flops_per_s=achieved,
        flops_per_step=flops,
        median_mm_peak_flops_per_s={d: s["median"] for d, s in peaks.items()},
    )
    pct_cell = f"**{pct['median']:.1f} %** of the {dtype} mm peak" + (
        f" ({pct['min']:.1f}–{pct['max']:.1f})" if pct["n"] > 1 else ""
    )
    rows = [
        [
            "flops",
            label,
            "toolkit training step (forward + backward + AdamW)",
            *summary_cells(runs, "flops"),
            pct_cell,
            "",
            f"{flops / 1e9:.1f} GFLOP per step (FlopCounterMode: matmuls and attention); achieved "
            f"{fmt_flops(achieved)}",
        ]
    ]
    for d, s in peaks.items():
        rows.append(
            [
                "flops",
                f"torch.mm {n} x {n}",
                f"{d} matrix-multiply peak (best of {reps}, median over runs)",
                d,
                "",
                "",
                "",
                "",
                "",
                fmt_flops(s["median"]),
            ]
        )
    return out, rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--only", default=",".join(SECTIONS), help="comma-separated sections (default: all): " + ", ".join(SECTIONS)
    )
    p.add_argument("--datasets", default=",".join(DATASETS), help="finetune data sets (default: qp_pairs,boolq)")
    add_worker_args(
        p,
        steps=0,
        rows=None,
        repeats=3,
        max_seq_len=0,
        worker=False,
        notes={
            "steps": "default: finetune 40, distill 20, flops 10",
            "rows": "0 = all; default: all, distill 2048",
            "max_seq_len": "overrides every section's; default: qp_pairs 128, BoolQ 256, distill and flops 128",
        },
    )
    add_flops_args(p)
    args = p.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    datasets = [s.strip() for s in args.datasets.split(",") if s.strip()]
    bad = [s for s in only if s not in SECTIONS] + [d for d in datasets if d not in DATASETS]
    if bad or not only:
        p.error(f"unknown section or data set {bad}; sections: {', '.join(SECTIONS)}; data sets: {', '.join(DATASETS)}")
    check_args(p, args, steps_may_be_0=True)
    need = datasets if "finetune" in only else []
    missing = missing_inputs(args, list(dict.fromkeys(["qp_pairs", *need])))
    if missing:
        print(skipped(missing))
        return 0

    info = machine()
    where = info.get("gpu", info["cpu"]) if args.device == "cuda" else f"{info['cpu']}, {info['cores']} cores"
    print(
        f"bench: {', '.join(only)} on {args.device} ({where}), {precision_name(args)}, {args.repeats} alternations, "
        f"torch {info['torch']}, transformers {info['transformers']}, {info['torch_threads']} torch threads; load "
        f"average at start {info['load_avg_start'][0]:.2f}",
        flush=True,
    )
    started = time.perf_counter()
    sections, rows = {}, []
    for s in SECTIONS:
        if s not in only:
            continue
        data, r = (
            section_finetune(args, datasets)
            if s == "finetune"
            else section_distill(args)
            if s == "distill"
            else section_flops(args)
        )
        sections[s] = data
        rows += r
    table = markdown_table(HEADER, rows)
    print(f"\n{table}\n")
    print(
        f"medians of {args.repeats} runs per contender; ratios: examples/s of the two contenders taken per alternation. "
        f"Ideal ratio: padded / real tokens of the data when every row is padded to max_seq_len. Peak MiB: "
        f"{'torch.cuda.max_memory_allocated' if args.device == 'cuda' else 'peak resident set (ru_maxrss)'} of the "
        f"worker process. Load average at end {os.getloadavg()[0]:.2f}; {time.perf_counter() - started:.0f} s."
    )
    if args.json:
        write_json(
            args.json,
            {
                "args": vars(args),
                "machine": info,
                "load_avg_end": os.getloadavg(),
                "sections": sections,
                "table": table,
            },
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
