"""What every bench script shares: paths and defaults, the command-line flags a worker takes, data loading,
device and precision, the step time stamps (``Stamps``), peak memory, the machine description, running one
worker in a fresh subprocess, medians and the markdown table.

A worker is ``python bench/<script>.py --contender NAME ...``; it prints one JSON object as its last stdout
line (one run: examples/s over the timed steps, peak memory, padded and real tokens, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("FT_SHARED", REPO.parent / "shared"))
DEFAULT_MODEL = SHARED / "models" / "minilm-l6-h384-uncased"
DEFAULT_DATA = SHARED / "data" / "qp_pairs"  # holds QQP/train.tsv
DEFAULT_BOOLQ = SHARED / "data" / "boolq" / "val.jsonl"  # SuperGLUE BoolQ val (labels "true"/"false" or booleans)
DATASETS = ("qp_pairs", "boolq")
SEED = 42


# -- flags ---------------------------------------------------------------------------------------------------
def add_worker_args(
    p: argparse.ArgumentParser,
    *,
    steps: int,
    rows: int | None,
    repeats: int,
    max_seq_len: int = 128,
    worker: bool = True,
    notes: dict[str, str] | None = None,
) -> None:
    """The flags every bench script takes; ``worker``: also ``--dataset`` and ``--profile`` (what one worker runs).
    ``notes`` replaces the "default N" of a flag's help (bench.py: per-section defaults)."""
    notes = notes or {}
    default = {
        "steps": f"default {steps}",
        "rows": f"0 = all; default {rows}",
        "repeats": f"default {repeats}",
        "max_seq_len": f"default {max_seq_len}",
        **notes,
    }
    p.add_argument("--steps", type=int, default=steps, help=f"timed optimizer steps per run ({default['steps']})")
    p.add_argument("--warm_steps", type=int, default=3, help="untimed optimizer steps before the window (default 3)")
    p.add_argument(
        "--repeats", type=int, default=repeats, help=f"alternations of the contenders ({default['repeats']})"
    )
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--max_seq_len", type=int, default=max_seq_len, help=f"truncation length ({default['max_seq_len']})")
    p.add_argument("--rows", type=int, default=rows, help=f"use only the first ROWS training rows ({default['rows']})")
    if worker:
        p.add_argument(
            "--dataset",
            choices=DATASETS,
            default="qp_pairs",
            help="qp_pairs (QQP/train.tsv under --data) or boolq (--boolq, parsed by fine_tune.tasks)",
        )
    p.add_argument("--model", default=str(DEFAULT_MODEL), help="pretrained BERT folder (default: MiniLM of ../shared)")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="data root holding QQP/train.tsv (default: qp_pairs)")
    p.add_argument("--boolq", default=str(DEFAULT_BOOLQ), help="BoolQ jsonl with labels (default: ../shared BoolQ val)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument(
        "--amp",
        action="store_true",
        help="mixed precision: toolkit fp16 autocast + GradScaler and Trainer fp16=True on CUDA "
        "(bf16 on a CPU with native bf16, else fp32); TextBrewer stays fp32 (its fp16 needs apex)",
    )
    if worker:
        p.add_argument("--profile", metavar="TXT", help="worker only: write a torch.profiler table of the timed steps")
    p.add_argument("--json", metavar="OUT", help="write every run and summary to this JSON file")


FORWARDED = ("steps", "warm_steps", "batch_size", "max_seq_len", "rows", "dataset", "model", "data", "boolq", "device")


def check_args(p: argparse.ArgumentParser, args, steps_may_be_0: bool = False) -> None:
    if (args.steps < (0 if steps_may_be_0 else 1)) or args.warm_steps < 1 or args.repeats < 1:
        p.error("--steps, --warm_steps and --repeats must be >= 1")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            p.error("--device cuda: CUDA is not available on this machine")


def parse_args(p: argparse.ArgumentParser, argv=None, steps_may_be_0: bool = False):
    """Parse and check a bench script's flags; None (after printing why) when ``../shared`` inputs are missing."""
    args = p.parse_args(argv)
    check_args(p, args, steps_may_be_0)
    missing = missing_inputs(args)
    if missing:
        print(skipped(missing))
        return None
    return args


def missing_inputs(args, datasets=None) -> list[Path]:
    """The model and data files the run needs that are not there."""
    need = [Path(args.model) / "config.json"]
    for d in datasets or (args.dataset,):
        need.append(Path(args.data) / "QQP" / "train.tsv" if d == "qp_pairs" else Path(args.boolq))
    return [x for x in need if not x.is_file()]


def skipped(missing: list[Path]) -> str:
    return (
        f"skipped: {', '.join(map(str, missing))} not found (the MiniLM model and the data of ../shared; "
        f"pass --model / --data / --boolq or set FT_SHARED)"
    )


# -- steps and data ------------------------------------------------------------------------------------------
def total_steps(args) -> int:
    return args.warm_steps + args.steps + 1  # the window ends where step warm+steps+1 begins


def warmup_steps(args) -> int:
    return max(1, total_steps(args) // 10)


def load_examples(args):
    """The training rows: qp_pairs ``QQP/train.tsv`` (the toolkit's QQP parser) or the BoolQ jsonl (its BoolQ
    parser, which takes string and boolean labels); the first ``--rows`` of them when set."""
    from fine_tune.tasks import get_task

    if getattr(args, "dataset", "qp_pairs") == "boolq":
        examples = get_task("boolq").parse(Path(args.boolq), True)
    else:
        examples = get_task("qqp").load(Path(args.data), "train")
    return examples[: args.rows] if args.rows else examples


def token_lengths(args, examples=None):
    """Tokenised lengths (the toolkit's tokenisation, truncated to ``max_seq_len``) of the training rows."""
    from fine_tune.batching import tokenize
    from fine_tune.models.classifier import load_tokenizer

    tok = load_tokenizer(args.model)
    return tokenize(tok, examples if examples is not None else load_examples(args), args.max_seq_len).lengths()


def ideal_ratio(lengths, max_seq_len: int) -> float:
    """Padded tokens / real tokens of the data when every row is padded to ``max_seq_len``: what removing all
    padding saves at most, if a step costs in proportion to its tokens."""
    return len(lengths) * max_seq_len / float(sum(int(x) for x in lengths))


# -- device, precision, memory -------------------------------------------------------------------------------
def device_of(args):
    from fine_tune.engine.device import resolve_device

    return resolve_device(0 if args.device == "cuda" else -1, None, quiet=True)


def precision_name(args) -> str:
    """ "fp32", "fp16" or "bf16": what ``--amp`` means on ``--device`` (the toolkit's own rule)."""
    if not args.amp:
        return "fp32"
    if args.device == "cuda":
        return "fp16"
    from fine_tune.engine.device import cpu_has_native_bf16

    return "bf16" if cpu_has_native_bf16() else "fp32"


def toolkit_precision(args, device):
    """The toolkit's ``Precision`` (fp16 autocast + GradScaler on CUDA with ``--amp``)."""
    from fine_tune.engine.device import resolve_precision

    return resolve_precision(args.amp, "fp16" if device.type == "cuda" else "bf16", device, quiet=True)


def peak_memory(device_type: str) -> dict:
    """Peak memory of this process in MiB: resident set on CPU (``ru_maxrss``), allocated tensors on CUDA."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    out = {"peak_rss_mib": rss}
    if device_type == "cuda":
        import torch

        out["peak_cuda_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
    out["peak_mib"] = out.get("peak_cuda_allocated_mib", rss)
    return out


# -- time stamps ---------------------------------------------------------------------------------------------
class Stamps:
    """Time stamps at the beginning of every optimizer step, the padded width and real tokens of every batch,
    and optionally the FLOPs of the last untimed step (``count_flops``, ``torch.utils.flop_counter``)."""

    def __init__(self, args, count_flops: bool = False):
        self.begin: list[float] = []
        self.widths: list[int] = []
        self.real: list[int] = []
        self.args = args
        self.profiler = None
        self.cuda = getattr(args, "device", "cpu") == "cuda"
        self.count_flops = count_flops
        self.flop_mode = None
        self.flops_per_step: int | None = None

    def step_begins(self) -> None:
        if self.cuda:  # the step before has finished on the GPU, not only been queued
            import torch

            torch.cuda.synchronize()
        if self.flop_mode is not None:  # the counted step ends here, before this step's stamp
            self.flop_mode.__exit__(None, None, None)
            self.flops_per_step = self.flop_mode.get_total_flops()
            self.flop_mode = None
        self.begin.append(time.perf_counter())
        if self.count_flops and len(self.begin) == self.args.warm_steps:  # the last untimed step
            self.flop_mode = flop_counter()
            self.flop_mode.__enter__()
        if self.args.profile:  # torch.profiler over the timed window (it slows the steps; diagnosis only)
            from torch.profiler import profile

            if len(self.begin) == self.args.warm_steps + 1:
                self.profiler = profile(record_shapes=False)
                self.profiler.__enter__()
            elif len(self.begin) == self.args.warm_steps + self.args.steps + 1:
                self.profiler.__exit__(None, None, None)
                table = self.profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=40)
                Path(self.args.profile).write_text(table + "\n")
                self.begin[-1] = time.perf_counter()  # exclude writing the table

    def batch(self, batch: dict) -> dict:
        self.widths.append(int(batch["input_ids"].shape[1]))
        self.real.append(int(batch["attention_mask"].sum()))
        return batch

    def wrap(self, collator):
        """The toolkit's collator, stamped: the engine calls it once at the beginning of each step (accum 1)."""

        def timed_collator(rows):
            self.step_begins()
            return self.batch(collator(rows))

        return timed_collator

    def result(
        self,
        args,
        contender: str,
        train_s: float,
        t0: float,
        device_type: str | None = None,
        precision: str | None = None,
    ) -> dict:
        w = args.warm_steps
        if len(self.begin) != total_steps(args):
            raise SystemExit(f"{contender}: {len(self.begin)} steps seen, expected {total_steps(args)}")
        loop_s = self.begin[w + args.steps] - self.begin[w]
        padded = args.batch_size * sum(self.widths[w : w + args.steps])
        real = sum(self.real[w : w + args.steps])
        out = {
            "contender": contender,
            "steps": args.steps,
            "loop_s": loop_s,
            "examples_per_s": args.steps * args.batch_size / loop_s,
            "padded_tokens": padded,
            "real_tokens": real,
            "padded_over_real": padded / max(real, 1),
            "train_call_s": train_s,
            "in_process_s": time.perf_counter() - t0,
            "precision": precision or precision_name(args),
        }
        out.update(peak_memory(device_type or getattr(args, "device", "cpu")))
        if self.flops_per_step is not None:
            out["flops_per_step"] = self.flops_per_step
        return out


def flop_counter():
    """``FlopCounterMode`` that also counts the CPU flash-attention kernels (this torch registers only the CUDA
    ones), with the same formulas."""
    import torch
    from torch.utils import flop_counter as fc

    aten = torch.ops.aten
    extra = {}
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        extra[aten._scaled_dot_product_flash_attention_for_cpu] = fc.sdpa_flop
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward"):
        extra[aten._scaled_dot_product_flash_attention_for_cpu_backward] = fc.sdpa_backward_flop
    return fc.FlopCounterMode(display=False, custom_mapping=extra)


# -- running workers -----------------------------------------------------------------------------------------
def worker_command(script: str, contender: str, args, extra: list[str] | None = None) -> list[str]:
    cmd = [sys.executable, str(Path(script).resolve()), "--contender", contender]
    for name in FORWARDED:
        cmd += [f"--{name}", str(getattr(args, name))]
    if args.amp:
        cmd.append("--amp")
    return cmd + list(extra or [])


def run_worker(contender: str, args, script: str, extra: list[str] | None = None, allow_fail: bool = False) -> dict:
    """Run one contender in a fresh subprocess of ``script``; its last stdout line is JSON. A failed worker stops
    the bench, or with ``allow_fail`` comes back as ``{"contender", "error"}`` (its last stderr line)."""
    cmd = worker_command(script, contender, args, extra)
    env = {**os.environ, "TQDM_DISABLE": "1", "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        if allow_fail:
            lines = [x for x in out.stderr.strip().splitlines() if x.strip()]
            return {
                "contender": contender,
                "error": lines[-1] if lines else f"exit {out.returncode}",
                "exit": out.returncode,
                "stderr_tail": out.stderr[-3000:],
                "wall_s": wall,
            }
        raise SystemExit(f"{contender} worker failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["wall_s"] = wall
    return result


def machine() -> dict:
    import torch
    import transformers

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "load_avg_start": os.getloadavg(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def write_json(path: str, obj: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(obj, indent=2) + "\n")


# -- alternation and summaries -------------------------------------------------------------------------------
def alternate(names, repeats: int, run, on_result=None) -> list[dict]:
    """Run every contender ``repeats`` times, in order in even alternations and reversed in odd ones (A B C,
    C B A, ...), so a slow phase of the machine hits every side. ``run(name)`` returns one run's dict; a run with
    an ``error`` key drops that contender from the later alternations. ``on_result(run)`` sees each run."""
    names = list(names)
    runs: list[dict] = []
    failed: set[str] = set()
    for r in range(repeats):
        for c in names if r % 2 == 0 else names[::-1]:
            if c in failed:
                continue
            res = run(c)
            res["run"] = r
            runs.append(res)
            if "error" in res:
                failed.add(c)
            if on_result is not None:
                on_result(res)
    return runs


def ok_runs(runs: list[dict], contender: str) -> list[dict]:
    return [x for x in runs if x.get("contender") == contender and "error" not in x]


def pair_ratios(runs: list[dict], num: str, den: str, key: str = "examples_per_s") -> list[float]:
    """``num / den`` of ``key`` taken per alternation (the runs of the same ``run`` index), where both ran."""
    by = {(x["run"], x["contender"]): x for x in runs if "error" not in x}
    return [
        by[(r, num)][key] / by[(r, den)][key]
        for r in sorted({x["run"] for x in runs})
        if (r, num) in by and (r, den) in by
    ]


def median_of(runs: list[dict], contender: str, key: str) -> float | None:
    xs = [r[key] for r in ok_runs(runs, contender) if key in r]
    return statistics.median(xs) if xs else None


def ratio_summary(ratios: list[float]) -> dict | None:
    if not ratios:
        return None
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios), "n": len(ratios)}


def fmt_ratio(s: dict | None) -> str:
    if not s:
        return "n/a"
    if s["n"] == 1:
        return f"**{s['median']:.3f}** (1 pair)"
    return f"**{s['median']:.3f}** ({s['min']:.3f}–{s['max']:.3f})"


def fmt_flops(x: float) -> str:
    return f"{x / 1e12:.2f} TFLOP/s" if x >= 1e12 else f"{x / 1e9:.1f} GFLOP/s"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("-" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)
