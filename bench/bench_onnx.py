#!/usr/bin/env python
"""PyTorch fp32 against ONNX Runtime (the exporter's plain graph, the transformer optimiser's fused graph, int8
quantised from it), side by side in one process on the same rows, batches and threads.

    python bench/bench_onnx.py                                   # qp_pairs dev, 5 rounds, the MiniLM student
    python bench/bench_onnx.py --dataset boolq --max_seq_len 256 --repeats 5 --json bench/results/onnx-boolq.json
    python bench/bench_onnx.py --rows 64 --train_steps 2 --repeats 1        # smoke run (figures meaningless)

Model: ``--model`` (default the MiniLM-L6-H384 of ``../shared``) with a fresh two-class head, fine-tuned
``--train_steps`` steps (AdamW, lr 5e-5, batches of ``--batch_size`` from the first training rows; 0: the fresh head)
so its logits are decisive, in PyTorch's SDPA attention as the toolkit evaluates it. Rows: qp_pairs ``QQP/dev.tsv``
or the last ``--rows`` of BoolQ val (the rows before them train), tokenised by the toolkit, ``--rows`` of them
(default 1,000), in the export's batches (``fine_tune.onnx_export``: ``--batch_size`` rows in length order, each
padded to its longest row: dynamic padding).

The graphs are made by the export's own functions (``fine_tune/onnx_export.py``): ``torch.onnx.export`` (eager
attention, opset 17), ``optimize_model`` (``model_type`` bert, ``opt_level`` 0, raw attention mask), and
``quantize_dynamic`` (QInt8, a scale per output channel) of the fused graph; ``--variants`` adds ``int8_plain``
(``quantize_dynamic`` of the plain graph: the int8 model before issue 32), ``int8_per_tensor`` (the fused graph
quantised with one scale per weight matrix: the export before per-channel scales) and ``fp32_mask_index`` (the optimiser's default mask form for BERT,
sequence lengths: right padding only). Every ONNX Runtime session: ``CPUExecutionProvider``, graph optimisation
level ``ORT_ENABLE_ALL`` (its default), ``intra_op_num_threads`` = ``torch.get_num_threads()`` (set
``OMP_NUM_THREADS`` or ``--threads``), one inter-op thread.

Timing: forward passes only (tokenisation and padding excluded), as the export times them. One round runs every
contender once over all rows; the order alternates (A B C D, then D C B A, ...), ``--repeats`` rounds. Printed: a
markdown table of each contender's median examples/s, its ratio to PyTorch fp32 in each round (the same round's
PyTorch pass) and their median, the largest |logit - PyTorch logit|, the share of rows whose predicted class is
PyTorch's, and the accuracy against the labels. ``--json OUT`` writes every pass and the machine.

``--ceiling`` also measures what bounds the fp32 ratio: the model's encoder linear layers alone (every
``nn.Linear`` of its encoder, ``x W^T + b`` on each batch's padded rows), in PyTorch (``F.linear``) and in ONNX
Runtime (one graph of ``MatMul`` + ``Add`` per layer, the same session settings), in each round beside the
contenders; printed: their seconds per pass, their share of the PyTorch / optimised-graph pass, and the bound
PyTorch pass / ONNX Runtime linear layers alone: the fp32 ratio ONNX Runtime would reach if everything but its
matrix multiplies (attention scores, softmax, LayerNorm, GELU, embeddings) cost nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    DEFAULT_BOOLQ,
    DEFAULT_DATA,
    DEFAULT_MODEL,
    SEED,
    machine,
    markdown_table,
    skipped,
    write_json,
)

VARIANTS = ("int8_plain", "int8_per_tensor", "fp32_mask_index")


def parse(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    p.add_argument("--dataset", choices=("qp_pairs", "boolq"), default="qp_pairs")
    p.add_argument("--rows", type=int, default=1000, help="evaluation rows (default 1000)")
    p.add_argument("--batch_size", type=int, default=32, help="rows per batch (default 32, the export's)")
    p.add_argument("--max_seq_len", type=int, default=128, help="truncation length (default 128)")
    p.add_argument("--repeats", type=int, default=5, help="rounds of every contender (default 5)")
    p.add_argument("--train_steps", type=int, default=30, help="fine-tuning steps before the export (default 30)")
    p.add_argument("--threads", type=int, help="torch and ONNX Runtime threads (default torch.get_num_threads())")
    p.add_argument("--variants", default="", help=f"comma-separated extra contenders: {', '.join(VARIANTS)}")
    p.add_argument("--model", default=str(DEFAULT_MODEL), help="pretrained BERT folder (default: MiniLM of ../shared)")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="data root holding QQP/ (default: qp_pairs)")
    p.add_argument("--boolq", default=str(DEFAULT_BOOLQ), help="BoolQ jsonl with labels (default: ../shared)")
    p.add_argument(
        "--ceiling",
        action="store_true",
        help="also time the encoder's linear layers alone in PyTorch and ONNX Runtime (the fp32 bound)",
    )
    p.add_argument("--json", metavar="OUT", help="write every pass, the summary and the machine to this JSON file")
    args = p.parse_args(argv)
    args.variants = [v for v in args.variants.split(",") if v]
    bad = [v for v in args.variants if v not in VARIANTS]
    if bad or args.rows < 1 or args.repeats < 1 or args.train_steps < 0 or args.batch_size < 1:
        p.error(f"--variants from {', '.join(VARIANTS)}; --rows, --repeats, --batch_size >= 1; --train_steps >= 0")
    return args


def load_rows(args):
    """(training examples, evaluation examples): qp_pairs train / dev, or BoolQ val split in two."""
    from fine_tune.tasks import get_task

    if args.dataset == "boolq":
        examples = get_task("boolq").parse(Path(args.boolq), True)
        return examples[: -args.rows], examples[-args.rows :]
    qqp = get_task("qqp")
    return qqp.load(Path(args.data), "train"), qqp.load(Path(args.data), "dev")[: args.rows]


def fine_tune(model, features, pad_token_id: int, args) -> None:
    """``--train_steps`` AdamW steps on the first training rows (in the toolkit's batches, dynamic padding)."""
    import torch

    from fine_tune.batching import Collator

    if not args.train_steps:
        return
    collator = Collator(features, pad_token_id, args.max_seq_len, "dynamic")
    order = torch.randperm(len(features), generator=torch.Generator().manual_seed(SEED)).tolist()
    rows = [order[i : i + args.batch_size] for i in range(0, len(order), args.batch_size)]
    opt = torch.optim.AdamW(model.parameters(), lr=5e-5)
    model.train()
    for step in range(args.train_steps):
        batch = collator(rows[step % len(rows)])
        loss = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            token_type_ids=batch["token_type_ids"],
            labels=batch["labels"],
        ).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()


def build_graphs(model, names, folder: Path, args) -> dict[str, Path]:
    """The contenders' ONNX files, made by the export's functions."""
    from fine_tune import onnx_export

    plain, fused = folder / "plain.onnx", folder / "fused.onnx"
    onnx_export._export(model, names, plain, model.config.pad_token_id, args.max_seq_len)
    record = onnx_export._optimize(plain, fused, model.config)
    print(f"optimiser: fused {record['fused']} {record['fused_operators']} {record['reason'] or ''}", flush=True)
    graphs = {"ort_plain_fp32": plain, "ort_fp32": fused if record["fused"] else plain}
    onnx_export._quantize(graphs["ort_fp32"], folder / "fused.int8.onnx")
    graphs["ort_int8"] = folder / "fused.int8.onnx"
    if "int8_plain" in args.variants:
        onnx_export._quantize(plain, folder / "plain.int8.onnx")
        graphs["ort_int8_plain"] = folder / "plain.int8.onnx"
    if "int8_per_tensor" in args.variants:
        graphs["ort_int8_per_tensor"] = per_tensor_int8(graphs["ort_fp32"], folder / "fused.int8_per_tensor.onnx")
    if "fp32_mask_index" in args.variants:
        graphs["ort_fp32_mask_index"] = mask_index_graph(plain, folder / "fused.mask_index.onnx", model.config)
    return graphs


def per_tensor_int8(src: Path, dst: Path) -> Path:
    """``quantize_dynamic`` as the export did before per-channel weights: one scale per weight matrix."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from fine_tune import onnx_export

    with onnx_export._quiet_root_logger():
        quantize_dynamic(
            str(src),
            str(dst),
            weight_type=QuantType.QInt8,
            per_channel=False,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    return dst


def mask_index_graph(src: Path, dst: Path, config) -> Path:
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    from fine_tune import onnx_export

    options = FusionOptions("bert")
    options.use_raw_attention_mask(False)
    with onnx_export._quiet_root_logger():
        optimize_model(
            str(src),
            model_type="bert",
            num_heads=config.num_attention_heads,
            hidden_size=config.hidden_size,
            optimization_options=options,
            opt_level=onnx_export.OPTIMIZER_OPT_LEVEL,
        ).save_model_to_file(str(dst))
    return dst


def encoder_linears(model) -> list:
    """Every ``nn.Linear`` of the encoder (Q, K, V, attention output, feed-forward in and out, per layer)."""
    import torch

    return [m for m in model.base_model.encoder.modules() if isinstance(m, torch.nn.Linear)]


def linears_graph(linears, path: Path) -> Path:
    """One ONNX graph: for each linear layer i, ``y_i = x_{in width} W_i^T + b_i`` (MatMul, Add), with one input
    per input width ([rows, width], rows dynamic)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    widths = sorted({m.in_features for m in linears})
    nodes, inits, outputs = [], [], []
    for i, m in enumerate(linears):
        inits += [
            numpy_helper.from_array(m.weight.detach().t().contiguous().numpy(), f"w{i}"),
            numpy_helper.from_array(m.bias.detach().numpy(), f"b{i}"),
        ]
        nodes += [
            helper.make_node("MatMul", [f"x{m.in_features}", f"w{i}"], [f"m{i}"]),
            helper.make_node("Add", [f"m{i}", f"b{i}"], [f"y{i}"]),
        ]
        outputs.append(helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, ["rows", m.out_features]))
    inputs = [helper.make_tensor_value_info(f"x{w}", TensorProto.FLOAT, ["rows", w]) for w in widths]
    graph = helper.make_graph(nodes, "encoder_linears", inputs, outputs, inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def linears_passes(linears, session, batches):
    """(PyTorch seconds, ONNX Runtime seconds) of the encoder's linear layers alone over every batch's padded rows
    (random inputs of the batch's [rows x width]: the cost of a matrix multiply does not depend on its values)."""
    import time

    import numpy as np
    import torch
    import torch.nn.functional as F

    widths = sorted({m.in_features for m in linears})
    rng = np.random.default_rng(SEED)
    torch_s = ort_s = 0.0
    for _, feed in batches:
        rows = int(np.prod(feed["input_ids"].shape))
        xs = {w: rng.standard_normal((rows, w), dtype=np.float32) for w in widths}
        tx = {w: torch.from_numpy(x) for w, x in xs.items()}
        start = time.perf_counter()
        with torch.inference_mode():
            for m in linears:
                F.linear(tx[m.in_features], m.weight, m.bias)
        torch_s += time.perf_counter() - start
        start = time.perf_counter()
        session.run(None, {f"x{w}": x for w, x in xs.items()})
        ort_s += time.perf_counter() - start
    return torch_s, ort_s


def ceiling_rows(seconds: dict, ceiling: dict) -> list[list[str]]:
    """The ceiling table: per pass medians of the linear layers alone, their shares, and the bound."""
    med = {k: statistics.median(v) for k, v in {**seconds, **ceiling}.items()}
    bound = [p / o for p, o in zip(seconds["pytorch_fp32"], ceiling["ort_linears"])]
    return [
        [
            "PyTorch F.linear",
            f"{med['torch_linears']:.2f}",
            f"{100 * med['torch_linears'] / med['pytorch_fp32']:.0f} % of the PyTorch pass",
            "",
        ],
        [
            "ONNX Runtime MatMul + Add",
            f"{med['ort_linears']:.2f}",
            f"{100 * med['ort_linears'] / med['ort_fp32']:.0f} % of the optimised graph's pass",
            " / ".join(f"{b:.2f}" for b in bound) + f" (median **{statistics.median(bound):.2f}x**)",
        ],
    ]


def main(argv=None) -> int:
    args = parse(argv)
    missing = [
        p
        for p in (Path(args.model), Path(args.boolq) if args.dataset == "boolq" else Path(args.data))
        if not p.exists()
    ]
    if missing:
        print(skipped(missing))
        return 0
    os.environ.setdefault("TQDM_DISABLE", "1")
    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification

    from fine_tune import onnx_export
    from fine_tune.batching import tokenize
    from fine_tune.models.classifier import load_tokenizer, quiet_hf

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    host = machine()  # the load average at the start
    tokenizer = load_tokenizer(args.model)
    train, dev = load_rows(args)
    train_features = tokenize(tokenizer, train[: args.train_steps * args.batch_size], args.max_seq_len)
    features = tokenize(tokenizer, dev, args.max_seq_len)
    torch.manual_seed(SEED)
    with quiet_hf():
        model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=2, attn_implementation="sdpa")
    fine_tune(model, train_features, tokenizer.pad_token_id, args)
    names = onnx_export.input_names(model)
    le = SimpleNamespace(model=model, tokenizer=tokenizer, config={"max_seq_len": args.max_seq_len})
    batches = onnx_export._batches(le, features, names)
    n, labels = len(features), np.asarray(features.labels)
    lengths = features.lengths()
    print(
        f"{args.dataset}: {n} rows, mean {np.mean(lengths):.1f} tokens (max_seq_len {args.max_seq_len}), "
        f"batches of {args.batch_size} padded to their longest row, {threads} thread(s)",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        graphs = build_graphs(model, names, Path(tmp), args)
        sessions = {k: onnx_export._session(p, threads) for k, p in graphs.items()}
        contenders = ["pytorch_fp32", *sessions]

        def one_pass(name):
            if name == "pytorch_fp32":
                return onnx_export._pytorch_pass(le, features)
            return onnx_export._ort_pass(sessions[name], batches, n, model.config.num_labels)

        seconds = {c: [] for c in contenders}
        logits = {}
        linears = encoder_linears(model) if args.ceiling else []
        ceiling = {"torch_linears": [], "ort_linears": []}
        lin_session = (
            onnx_export._session(linears_graph(linears, Path(tmp) / "linears.onnx"), threads) if linears else None
        )
        one_pass("pytorch_fp32")  # warm-up: first-call allocations of each runtime
        for s in sessions:
            one_pass(s)
        if lin_session is not None:
            linears_passes(linears, lin_session, batches[:2])
        for r in range(args.repeats):
            for c in contenders if r % 2 == 0 else contenders[::-1]:
                out, sec = one_pass(c)
                seconds[c].append(sec)
                logits.setdefault(c, out)
            if lin_session is not None:
                torch_s, ort_s = linears_passes(linears, lin_session, batches)
                ceiling["torch_linears"].append(torch_s)
                ceiling["ort_linears"].append(ort_s)
            print(f"round {r + 1}: " + ", ".join(f"{c} {n / seconds[c][-1]:.1f}/s" for c in contenders), flush=True)
    ref = logits["pytorch_fp32"]
    rows, summary = [], {}
    for c in contenders:
        ratios = [p / s for p, s in zip(seconds["pytorch_fp32"], seconds[c])]
        summary[c] = {
            "examples_per_s": [n / s for s in seconds[c]],
            "median_examples_per_s": n / statistics.median(seconds[c]),
            "ratios": ratios,
            "median_ratio": statistics.median(ratios),
            "max_abs_diff": float(np.abs(logits[c] - ref).max()),
            "agreement": float((logits[c].argmax(1) == ref.argmax(1)).mean()),
            "accuracy": float((logits[c].argmax(1) == labels).mean()),
        }
        s = summary[c]
        rows.append(
            [
                c,
                f"{s['median_examples_per_s']:.1f}",
                " / ".join(f"{x:.2f}" for x in ratios),
                f"**{s['median_ratio']:.2f}x**",
                f"{s['max_abs_diff']:.2g}",
                f"{100 * s['agreement']:.1f} %",
                f"{s['accuracy']:.3f}",
            ]
        )
    print(
        markdown_table(
            [
                "contender",
                "examples/s (median)",
                "ratio to PyTorch fp32 per round",
                "median ratio",
                "max abs logit diff",
                "argmax = PyTorch's",
                "accuracy",
            ],
            rows,
        )
    )
    if linears:
        print(
            f"\nThe fp32 bound: the encoder's {len(linears)} linear layers alone on the same padded rows, seconds "
            "per pass (median); bound = PyTorch's whole pass / ONNX Runtime's linear layers alone, per round:"
        )
        print(
            markdown_table(
                ["linear layers alone", "s per pass", "share", "bound on the fp32 ratio per round"],
                ceiling_rows(seconds, ceiling),
            )
        )
    if args.json:
        write_json(
            args.json,
            {
                "args": vars(args),
                "rows": n,
                "threads": threads,
                "seconds": seconds,
                "ceiling": ceiling,
                "summary": summary,
                "machine": {**host, "load_avg_end": os.getloadavg()},
            },
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
