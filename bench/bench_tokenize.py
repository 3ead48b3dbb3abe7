#!/usr/bin/env python
"""Tokenising a large split into the toolkit's cache vs ``datasets.map``, side by side in one run.

    python bench/bench_tokenize.py [--rows 392702] [--repeats 2] [--max_seq_len 128] [--json OUT]

Data: ``--rows`` synthetic sentence pairs shaped like MNLI's training split (392,702 pairs; premises of 8-40 words,
hypotheses of 4-16, drawn from the MiniLM tokenizer's whole-word vocabulary with a fixed seed). Tokenizer: the fast
tokenizer of ``../shared/models/minilm-l6-h384-uncased`` (a BERT WordPiece), truncation ``longest_first`` to
``--max_seq_len``, token type ids, no attention mask (the toolkit builds masks per batch) on both sides.

- **toolkit**: ``fine_tune.batching.cached_features`` into an empty cache folder: tokenise (chunks of 4,096 rows)
  and write the cache file (``features-*.pt``, written atomically), what a first training run does.
- **datasets**: ``Dataset.from_dict`` then ``.map(tokenize, batched=True)`` (default batch of 1,000 rows) with a
  ``cache_file_name`` in an empty folder (the Arrow cache file ``datasets`` writes).

The two alternate (toolkit, datasets, datasets, toolkit, ...) ``--repeats`` times in this one process; rows/s per
run, medians, and the ratio toolkit / datasets per alternation.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
MODEL = HERE.parent.parent / "shared" / "models" / "minilm-l6-h384-uncased"


def synthetic_pairs(tokenizer, rows: int, seed: int = 0) -> tuple[list[str], list[str]]:
    words = [w for w in tokenizer.get_vocab() if w.isalpha() and w.isascii() and len(w) > 1]
    words.sort()
    rng = random.Random(seed)
    premises = [" ".join(rng.choices(words, k=rng.randint(8, 40))) for _ in range(rows)]
    hypotheses = [" ".join(rng.choices(words, k=rng.randint(4, 16))) for _ in range(rows)]
    return premises, hypotheses


def run_toolkit(tokenizer, premises, hypotheses, max_seq_len: int) -> float:
    from fine_tune.batching import cached_features
    from fine_tune.tasks.example import Example

    examples = [Example(i, a, b, 0) for i, (a, b) in enumerate(zip(premises, hypotheses))]
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        features = cached_features(Path(cache), tokenizer, examples, max_seq_len, regression=False)
        seconds = time.perf_counter() - start
        assert len(features) == len(examples) and any(Path(cache).glob("features-*.pt"))
    return seconds


def run_datasets(tokenizer, premises, hypotheses, max_seq_len: int) -> float:
    from datasets import Dataset, disable_progress_bars

    disable_progress_bars()
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        ds = Dataset.from_dict({"text": premises, "text_pair": hypotheses})
        out = ds.map(
            lambda b: tokenizer(
                b["text"],
                b["text_pair"],
                truncation=True,
                max_length=max_seq_len,
                return_attention_mask=False,
                return_token_type_ids=True,
            ),
            batched=True,
            cache_file_name=str(Path(cache) / "tokenised.arrow"),
        )
        seconds = time.perf_counter() - start
        assert len(out) == len(premises) and (Path(cache) / "tokenised.arrow").is_file()
    return seconds


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=392702)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--max_seq_len", type=int, default=128)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(MODEL)
    premises, hypotheses = synthetic_pairs(tokenizer, args.rows)
    runs = {"toolkit": [], "datasets": []}
    ratios = []
    for r in range(args.repeats):
        order = ("toolkit", "datasets") if r % 2 == 0 else ("datasets", "toolkit")
        got = {}
        for name in order:
            fn = run_toolkit if name == "toolkit" else run_datasets
            seconds = fn(tokenizer, premises, hypotheses, args.max_seq_len)
            got[name] = args.rows / seconds
            runs[name].append(got[name])
            print(f"run {r + 1} {name}: {got[name]:,.0f} rows/s ({seconds:.1f} s)", flush=True)
        ratios.append(got["toolkit"] / got["datasets"])
    import datasets
    import tokenizers

    print(
        f"\n{args.rows:,} synthetic MNLI-shaped pairs, max_seq_len {args.max_seq_len}, tokenizers "
        f"{tokenizers.__version__}, datasets {datasets.__version__}"
    )
    print("| contender | rows/s (median) | ratio toolkit / datasets (per alternation) |\n|---|---|---|")
    print(
        f"| toolkit cache | {statistics.median(runs['toolkit']):,.0f} | **{statistics.median(ratios):.3f}** "
        f"({min(ratios):.3f}–{max(ratios):.3f}) |"
    )
    print(f"| datasets.map | {statistics.median(runs['datasets']):,.0f} | 1 (reference) |")
    if args.json:
        args.json.write_text(json.dumps({"rows": args.rows, "runs": runs, "ratios": ratios}, indent=1))


if __name__ == "__main__":
    main()
