#!/usr/bin/env python
"""The GPU check (issue 31): the toolkit's CUDA paths in one prepared run, offline, ending with a markdown table.

    bash scripts/gpu_check.sh [--out DIR] [--steps N] [--only amp,resume,memory,throughput,compile]
    bash scripts/gpu_check.sh --smoke       # any machine: tiny models, 2 steps, on the CPU

Checks, one table row per run (``--only`` picks groups):

* ``amp``: fine-tuning, LAD, TinyBERT (the intermediate stage, its export, the prediction stage from it) and MiniLM
  through the real entry scripts (each ``main`` run in one worker process by ``fine_tune.cli.run_main``), under
  ``--amp`` fp16 and under ``--amp_dtype bf16``: exit status 0 and finite last logged losses. Per training step,
  the host-device syncs CUDA itself reports (``torch.cuda.set_sync_debug_mode("warn")``, each warning counted) and
  those ``fine_tune.engine.syncs.SyncCounter`` sees (a CPU run: these only), the engine's logging, finiteness checks
  and checkpoints left out as ``count_training_syncs`` leaves them out: the first step (one-time set-up) and the
  most of any later step, which must be 0, or 1 under fp16 loss scaling (its skip decision). The peak GPU memory
  of the run (``torch.cuda.max_memory_allocated``).
* ``resume``: under ``--deterministic`` a fine-tuning run killed right after its mid-run checkpoint
  (tests/killpoint.py: SIGKILL after ``resume-K.pt`` is renamed into place) and run again ends with the weights of
  the uninterrupted run, bit for bit. Without the flag in this checkout: skipped on a GPU; on a CPU run without it.
* ``memory``: the peak GPU memory of one fine-tuning step sequence (every batch padded to max_seq_len) without
  and with ``--gradient_checkpointing`` (skipped when this checkout has no such flag).
* ``throughput``: ``bench/bench_finetune.py``, the toolkit's engine against the Hugging Face Trainer on the same
  model, batches, optimiser and precision, alternating in fresh processes: the median ratio of examples/s.
* ``compile``: fine-tuning with ``--compile`` over batches of varied widths and a 1-row epoch tail: the
  recompiles ``TORCH_LOGS=recompiles`` reports (into ``logs/compile.log``, with the guard that failed), which must
  be none, and TorchDynamo's counters (``torch._dynamo.utils.counters``): graphs, frame compiles, graph breaks.
  A CPU run captures the graphs only (``FT_COMPILE_BACKEND=eager``), a GPU run compiles them (inductor).

Models: a random BERT-base (12 layers, width 768, 12 heads, feed-forward 3072, 512 positions, vocabulary 30,522)
written on the spot as a pretrained folder, with the tokenizer of ``../shared/models/minilm-l6-h384-uncased`` when
it is there, else the synthetic one (fine_tune/synthetic.py); students of BERT-base's width (LAD), TinyBERT-4L's
(312) and MiniLM's (384). Data: synthetic QQP rows. Nothing is downloaded. Everything lands in ``--out``
(default ``data/gpu_check``, re-created on every run); the table also in ``OUT/gpu_check.md``. Every worker's
output is in ``OUT/logs``. Exit status 0 when every check passed or was skipped, 1 when one failed.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import itertools
import json
import math
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SHARED_TOKENIZER = Path(os.environ.get("FT_SHARED", REPO.parent / "shared")) / "models" / "minilm-l6-h384-uncased"
MARK = ".fine_tune_gpu_check"
GROUPS = ("amp", "resume", "memory", "throughput", "compile")
SYNC_WARNING = "synchronizing CUDA operation"  # what set_sync_debug_mode("warn") says


@dataclasses.dataclass(frozen=True)
class Sizes:
    """The models, data and steps of one mode."""

    teacher: dict  # synthetic.tiny_config's widths
    vocab_size: int | None  # None: the synthetic tokenizer's own
    lad: tuple[str, ...]  # the student flags of each distillation script
    tinybert: tuple[str, ...]
    minilm: tuple[str, ...]
    batch_size: int
    max_seq_len: int
    rows: int
    steps: int
    device_id: str
    bench: tuple[str, ...]  # bench_finetune.py's flags
    deadline_s: float  # no new check starts after this many seconds


def student(width: int, ff: int, heads: int, layers: int) -> tuple[str, ...]:
    return (
        "--d_model",
        str(width),
        "--d_ff",
        str(ff),
        "--num_attention_heads",
        str(heads),
        "--num_hidden_layers",
        str(layers),
    )


GPU = Sizes(
    teacher={"num_layers": 12, "hidden": 768, "heads": 12, "ff": 3072, "max_positions": 512},
    vocab_size=30522,
    lad=student(768, 3072, 12, 6),
    tinybert=student(312, 1200, 12, 4),
    minilm=student(384, 1536, 12, 6),
    batch_size=32,
    max_seq_len=128,
    rows=2048,
    steps=8,
    device_id="0",
    bench=("--device", "cuda", "--amp", "--steps", "20", "--warm_steps", "3", "--repeats", "2"),
    deadline_s=540.0,
)
SMOKE = Sizes(
    teacher={"num_layers": 4, "hidden": 32, "heads": 2, "ff": 64, "max_positions": 128},
    vocab_size=None,
    lad=student(32, 64, 2, 2),
    tinybert=student(24, 48, 2, 2),
    minilm=student(32, 64, 2, 2),
    batch_size=8,
    max_seq_len=32,
    rows=48,
    steps=2,
    device_id="-1",
    bench=("--device", "cpu", "--steps", "2", "--warm_steps", "1", "--repeats", "1", "--rows", "48"),
    deadline_s=float("inf"),
)


def has_flag(group: str, name: str) -> bool:
    """Whether this checkout's flag group (fine_tune/settings.py) has the flag ``name``."""
    from fine_tune import settings

    return name in {f.name for f in dataclasses.fields(getattr(settings, group))}


# -- the worker: entry scripts in this process, measured -----------------------------------------------------
CURRENT: dict = {}  # the job being run: what it measures, and what was measured


def sync_warnings(caught: list) -> int:
    return sum(SYNC_WARNING in str(w.message) for w in caught)


def counted_train(trainer, resume_step, real_train) -> dict:
    """``Trainer.train`` counting the syncs of each training step (fine_tune.engine.syncs.count_training_syncs's
    regions: logging, finiteness checks, evaluation and checkpoints left out), by CUDA's own report and by
    SyncCounter."""
    import torch

    from fine_tune.engine.syncs import SyncCounter, leave_out_reads_on_purpose

    counter, cuda = SyncCounter(trainer.device), trainer.device.type == "cuda"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        left_out = [0]

        @contextlib.contextmanager
        def region():  # SyncCounter paused, and CUDA's warnings there booked as left out
            before = sync_warnings(caught)
            with counter.paused():
                try:
                    yield
                finally:
                    left_out[0] += sync_warnings(caught) - before

        leave_out_reads_on_purpose(trainer, region)
        marks = [(0, 0)]  # (CUDA's, SyncCounter's) counts at the end of each optimizer step
        step = trainer._optimizer_step

        def stepped():
            out = step()
            marks.append((sync_warnings(caught) - left_out[0], counter.total))
            return out

        trainer._optimizer_step = stepped
        if cuda:
            torch.cuda.set_sync_debug_mode("warn")
        try:
            with counter:
                out = real_train(trainer, resume_step)
        finally:
            if cuda:
                torch.cuda.set_sync_debug_mode(0)
        if len(marks) > 1:  # what ran after the last step's optimizer step belongs to it
            marks[-1] = (sync_warnings(caught) - left_out[0], counter.total)
    per_step = [(b[0] - a[0], b[1] - a[1]) for a, b in itertools.pairwise(marks)]
    CURRENT["syncs"] = {
        "cuda": [c for c, _ in per_step] if cuda else None,
        "counter": [s for _, s in per_step],
        "by_site": dict(counter.by_site.most_common(6)),
    }
    return out


def instrument() -> None:
    """Wrap ``Trainer.train`` so that every run records its precision, losses and (when asked) its syncs."""
    import torch

    from fine_tune.engine import trainer as engine

    real_train = engine.Trainer.train

    def train(self, resume_step=None):
        CURRENT["precision"] = {None: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[self.precision.dtype]
        out = (
            counted_train(self, resume_step, real_train)
            if "syncs" in CURRENT["measure"]
            else real_train(self, resume_step)
        )
        CURRENT["losses"], CURRENT["steps_run"] = out["last_losses"], out["steps_run"]
        return out

    engine.Trainer.train = train


def run_script(script: str, args: list[str]) -> int:
    from fine_tune.cli import run_main

    spec = importlib.util.spec_from_file_location(f"entry_{Path(script).stem}", REPO / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    print(f"$ {script} {' '.join(args)}", file=sys.stderr, flush=True)
    try:
        return run_main(module.main, args)
    except SystemExit as e:  # argparse
        return e.code if isinstance(e.code, int) else 2


def worker(spec_path: Path) -> int:
    """Run the jobs of ``spec_path`` one after the other in this process; each one's measurements are written to
    the spec's ``out`` as soon as it ends (a crash keeps the ones before)."""
    import gc

    import torch

    spec = json.loads(spec_path.read_text())
    instrument()
    cuda = torch.cuda.is_available() and spec["device"] == "cuda"
    results = []
    for job in spec["jobs"]:
        CURRENT.clear()
        CURRENT.update(name=job["name"], measure=job["measure"])
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            CURRENT["base_mib"] = torch.cuda.memory_allocated() / 2**20
        if "graphs" in job["measure"]:
            import torch._dynamo

            torch._dynamo.reset()
            torch._dynamo.utils.counters.clear()
        start = time.perf_counter()
        CURRENT["exit"] = run_script(job["script"], job["args"])
        CURRENT["seconds"] = time.perf_counter() - start
        if cuda:
            CURRENT["peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
        if "graphs" in job["measure"]:
            import torch._dynamo

            counters = torch._dynamo.utils.counters
            CURRENT["graphs"] = counters["stats"]["unique_graphs"]
            CURRENT["graph_breaks"] = sum(counters["graph_break"].values())
            CURRENT["dynamo_counters"] = {k: dict(v) for k, v in counters.items()}
        results.append(dict(CURRENT))
        Path(spec["out"]).write_text(json.dumps(results, indent=1))
    return 0


# -- the driver ----------------------------------------------------------------------------------------------
class Check:
    """Runs the checks' processes within the deadline, and collects the table's rows."""

    def __init__(self, out: Path, sizes: Sizes, env: dict):
        self.out, self.sizes, self.env = out, sizes, env
        self.start = time.perf_counter()
        self.rows: list[list[str]] = []
        self.failed = False

    def left(self) -> float:
        return self.sizes.deadline_s - (time.perf_counter() - self.start)

    def row(self, check: str, run: str, precision: str, result: str, ok: bool | None, seconds: float) -> None:
        """``ok``: True passed, False failed, None skipped."""
        status = "ok" if ok else ("skipped" if ok is None else "FAIL")
        self.failed |= ok is False
        self.rows.append([check, run, precision, result, status, f"{seconds:.0f}"])
        print(f"[gpu_check] {check} | {run} | {precision} | {result} | {status}", flush=True)

    def process(self, name: str, cmd: list[str], extra_env: dict | None = None) -> tuple[int | None, float]:
        """Run ``cmd`` (output to logs/NAME.log); its exit status (None: out of time) and seconds."""
        timeout = self.left()
        if timeout <= 0:
            return None, 0.0
        start = time.perf_counter()
        with open(self.out / "logs" / f"{name}.log", "w", encoding="utf-8") as log:
            # its own process group: at the deadline it goes with the processes it started (the bench's workers)
            proc = subprocess.Popen(
                cmd,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**self.env, **(extra_env or {})},
            )
            try:
                code = proc.wait(None if math.isinf(timeout) else timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                code = None
        return code, time.perf_counter() - start

    def jobs(self, name: str, jobs: list[dict], extra_env: dict | None = None) -> tuple[list[dict], str]:
        """Run ``jobs`` in one worker process; their measurements, and why any job has none."""
        spec = self.out / "logs" / f"{name}.json"
        results = self.out / "logs" / f"{name}-results.json"
        spec.write_text(
            json.dumps({"device": "cuda" if self.sizes is GPU else "cpu", "jobs": jobs, "out": str(results)})
        )
        code, _ = self.process(name, [sys.executable, str(Path(__file__).resolve()), "--worker", str(spec)], extra_env)
        got = json.loads(results.read_text()) if results.is_file() else []
        why = f"worker {exit_text(code)} (logs/{name}.log)"
        return got, why


def exit_text(code: int | None) -> str:
    return "stopped at the deadline" if code is None else f"exit {code}"


def base_args(s: Sizes, experiment: str, steps: int, ckpt_step: int | None = None) -> list[str]:
    return [
        "--experiment",
        experiment,
        "--model",
        "bert",
        "--task",
        "qqp",
        "--total_step",
        str(steps),
        "--warmup_step",
        "1",
        "--ckpt_step",
        str(ckpt_step or steps),
        "--log_step",
        str(steps),
        "--batch_size",
        str(s.batch_size),
        "--device_id",
        s.device_id,
    ]


def amp_jobs(s: Sizes, pretrained: Path, dtype: str, steps: int, out: Path) -> list[dict]:
    """Fine-tuning, LAD, TinyBERT's two stages and MiniLM under ``--amp --amp_dtype DTYPE``."""
    amp = ["--amp", "--amp_dtype", dtype]
    ft = f"ft_{dtype}"
    teacher = ["--teacher_exp", ft, "--tmodel", "bert", "--tckpt", str(steps)]
    measure = ["syncs"]

    def distil(name: str, extra) -> list[str]:
        return [*base_args(s, f"{name}_{dtype}", steps), *teacher, *extra, *amp]

    export = out / "exports" / f"tinybert1_{dtype}"
    return [
        {
            "name": "fine-tuning",
            "script": "run_fine_tune.py",
            "measure": measure,
            "args": [
                *base_args(s, ft, steps),
                "--ptrain_ver",
                str(pretrained),
                "--lr",
                "5e-5",
                "--max_seq_len",
                str(s.max_seq_len),
                *amp,
            ],
        },
        {"name": "LAD", "script": "run_lad_distil.py", "measure": measure, "args": distil("lad", s.lad)},
        {
            "name": "TinyBERT intermediate",
            "script": "run_tinybert_distil.py",
            "measure": measure,
            "args": distil("tinybert1", s.tinybert),
        },
        {
            "name": "TinyBERT export",
            "script": "export_model.py",
            "measure": [],
            "args": ["--experiment", f"tinybert1_{dtype}", "--model", "bert", "--task", "qqp", "--out", str(export)],
        },
        {
            "name": "TinyBERT prediction",
            "script": "run_tinybert_distil.py",
            "measure": measure,
            "args": distil("tinybert2", ["--tinybert_stage", "prediction", "--student_ptrain_ver", str(export)]),
        },
        {"name": "MiniLM", "script": "run_minilm_distil.py", "measure": measure, "args": distil("minilm", s.minilm)},
    ]


def check_amp(c: Check, pretrained: Path, steps: int) -> None:
    for dtype in ("fp16", "bf16"):
        jobs = amp_jobs(c.sizes, pretrained, dtype, steps, c.out)
        got, why = c.jobs(f"amp_{dtype}", jobs)
        for job, res in zip(jobs, got + [None] * (len(jobs) - len(got))):
            run = f"{job['name']} (--amp --amp_dtype {dtype})"
            if res is None:
                c.row("amp", run, "?", f"no result: {why}", False, 0)
                continue
            if job["script"] == "export_model.py":  # between TinyBERT's stages
                c.row("amp", run, "-", f"exit {res['exit']}", res["exit"] == 0, res["seconds"])
                continue
            losses = res.get("losses") or {}
            finite = res["exit"] == 0 and bool(losses) and all(math.isfinite(v) for v in losses.values())
            precision = res.get("precision", "?")
            syncs = res.get("syncs") or {}
            allowed = 1 if precision == "fp16" else 0  # fp16 loss scaling: the skip decision
            steady = syncs.get("cuda") if syncs.get("cuda") is not None else syncs.get("counter")
            syncs_ok = steady is not None and max(steady[1:], default=0) <= allowed
            parts = [f"exit {res['exit']}", "loss " + (f"{losses['loss']:.4f}" if "loss" in losses else "none")]
            if steady is not None:
                parts.append("syncs/step " + sync_text(syncs) + f" (at most {allowed} after the first)")
            if "peak_mib" in res:
                parts.append(f"peak {res['peak_mib']:,.0f} MiB")
            c.row("amp", run, precision, "; ".join(parts), finite and syncs_ok, res["seconds"])


def sync_text(syncs: dict) -> str:
    def first_then(xs):
        return f"{xs[0]} then {max(xs[1:], default=0)}" if xs else "none"

    text = f"SyncCounter {first_then(syncs['counter'])}"
    if syncs.get("cuda") is not None:
        text = f"CUDA {first_then(syncs['cuda'])}, " + text
    return text


def check_resume(c: Check, pretrained: Path, steps: int) -> None:
    cuda = c.sizes is GPU
    deterministic = has_flag("DeviceFlags", "deterministic")
    if not deterministic and cuda:
        c.row(
            "resume",
            "fine-tuning killed and resumed",
            "--amp",
            "skipped: this checkout has no --deterministic (DeviceFlags.deterministic, issue 31 item 6)",
            None,
            0,
        )
        return
    total, half = 2 * steps, steps

    def flags(experiment: str) -> list[str]:
        return [
            *base_args(c.sizes, experiment, total, half),
            "--ptrain_ver",
            str(pretrained),
            "--lr",
            "5e-5",
            "--max_seq_len",
            str(c.sizes.max_seq_len),
            "--amp",
            *(["--deterministic"] if deterministic else []),
        ]

    start = time.perf_counter()
    runs = [
        ("resume_ref", [sys.executable, "run_fine_tune.py", *flags("resume_ref")], 0),
        (
            "resume_killed",
            [
                sys.executable,
                "tests/killpoint.py",
                f"after:resume-{half}.pt",
                "run_fine_tune.py",
                *flags("resume_killed"),
            ],
            -9,
        ),
        ("resume_again", [sys.executable, "run_fine_tune.py", *flags("resume_killed")], 0),
    ]
    for name, cmd, expected in runs:
        code, _ = c.process(name, cmd)
        if code != expected:
            c.row(
                "resume",
                "fine-tuning killed and resumed",
                "--amp",
                f"{name}: {exit_text(code)}, expected exit {expected} (logs/{name}.log)",
                False,
                time.perf_counter() - start,
            )
            return
    resumed = f"resuming from model-{half}.pt" in (c.out / "logs" / "resume_again.log").read_text()
    same, diff = same_weights(
        c.out / "experiments" / "resume_ref_bert_qqp" / f"model-{total}.pt",
        c.out / "experiments" / "resume_killed_bert_qqp" / f"model-{total}.pt",
    )
    how = "--deterministic" if deterministic else "no --deterministic in this checkout (CPU)"
    c.row(
        "resume",
        f"fine-tuning killed after step {half} of {total}, resumed",
        "--amp",
        f"{how}; {'resumed' if resumed else 'did NOT resume'}; weights "
        f"{'bit-identical' if same else f'differ (max |diff| {diff:.3g})'}",
        same and resumed,
        time.perf_counter() - start,
    )


def same_weights(a: Path, b: Path) -> tuple[bool, float]:
    import torch

    x, y = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    if x.keys() != y.keys():
        return False, float("inf")
    diff = max((x[k].float() - y[k].float()).abs().max().item() for k in x)
    return all(torch.equal(x[k], y[k]) for k in x), diff


def check_memory(c: Check, pretrained: Path, steps: int) -> None:
    if not has_flag("SpeedFlags", "gradient_checkpointing"):
        c.row(
            "memory",
            "fine-tuning, with and without --gradient_checkpointing",
            "--amp",
            "skipped: this checkout "
            "has no --gradient_checkpointing (SpeedFlags.gradient_checkpointing, issue 31 item 4)",
            None,
            0,
        )
        return
    common = [
        "--ptrain_ver",
        str(pretrained),
        "--lr",
        "5e-5",
        "--max_seq_len",
        str(c.sizes.max_seq_len),
        "--padding",
        "max_length",
        "--amp",
    ]
    jobs = [
        {
            "name": name,
            "script": "run_fine_tune.py",
            "measure": [],
            "args": [*base_args(c.sizes, f"memory_{i}", steps), *common, *extra],
        }
        for i, (name, extra) in enumerate((("without", []), ("with", ["--gradient_checkpointing"])))
    ]
    got, why = c.jobs("memory", jobs)
    if len(got) < 2 or any(r["exit"] != 0 for r in got):
        c.row(
            "memory",
            "fine-tuning, with and without --gradient_checkpointing",
            "--amp",
            f"runs failed: {why}",
            False,
            sum(r["seconds"] for r in got),
        )
        return
    seconds = sum(r["seconds"] for r in got)
    if "peak_mib" not in got[0]:
        c.row(
            "memory",
            "fine-tuning, with and without --gradient_checkpointing",
            got[0].get("precision", "?"),
            "both ran; peak memory is CUDA's (n/a on the CPU)",
            True,
            seconds,
        )
        return
    (a, b) = ((r["peak_mib"] - r["base_mib"]) for r in got)
    c.row(
        "memory",
        f"fine-tuning at batch {c.sizes.batch_size} x {c.sizes.max_seq_len}",
        got[0].get("precision", "?"),
        f"peak {a:,.0f} MiB without, {b:,.0f} MiB with --gradient_checkpointing (ratio {b / a:.2f})",
        b < a,
        seconds,
    )


def check_throughput(c: Check, pretrained: Path, data: Path) -> None:
    out = c.out / "logs" / "bench_finetune.json"
    cmd = [
        sys.executable,
        "bench/bench_finetune.py",
        "--model",
        str(pretrained),
        "--data",
        str(data),
        "--batch_size",
        str(c.sizes.batch_size),
        "--max_seq_len",
        str(c.sizes.max_seq_len),
        *c.sizes.bench,
        "--json",
        str(out),
    ]
    code, seconds = c.process("throughput", cmd)
    if code != 0 or not out.is_file():
        c.row(
            "throughput",
            "toolkit vs Hugging Face Trainer",
            "?",
            f"bench {exit_text(code)} (logs/throughput.log)",
            False,
            seconds,
        )
        return
    r = json.loads(out.read_text())
    m = r["median"]
    precision = r["runs"][0].get("precision", "?")
    c.row(
        "throughput",
        f"toolkit vs Hugging Face Trainer, fine-tuning, same batches ({r['args']['steps']} timed "
        f"steps x {len(r['ratios'])} alternations)",
        precision,
        f"{m['toolkit']['examples_per_s']:.1f} vs {m['trainer']['examples_per_s']:.1f} examples/s; ratio "
        f"{r['median_ratio']:.3f} (min {min(r['ratios']):.3f}, max {max(r['ratios']):.3f})",
        True,
        seconds,
    )


def check_compile(c: Check, pretrained: Path, steps: int) -> None:
    s = c.sizes
    rows = 2 * s.batch_size + 1  # two full batches and a 1-row epoch tail
    total = max(steps, 4)
    jobs = [
        {
            "name": "fine-tuning --compile",
            "script": "run_fine_tune.py",
            "measure": ["graphs"],
            "args": [
                *base_args(s, "compile", total),
                "--ptrain_ver",
                str(pretrained),
                "--lr",
                "5e-5",
                "--max_seq_len",
                str(s.max_seq_len),
                "--max_examples",
                str(rows),
                "--compile",
                "--amp",
                "--amp_dtype",
                "bf16",
            ],
        }
    ]
    env = {"TORCH_LOGS": "recompiles"}
    if s is SMOKE:
        env["FT_COMPILE_BACKEND"] = "eager"  # capture only: no code generation on a CPU smoke run
    got, why = c.jobs("compile", jobs, env)
    run = f"fine-tuning --compile, {total} steps of {rows} rows in batches of {s.batch_size} (a 1-row tail)"
    if not got or got[0]["exit"] != 0:
        c.row("compile", run, "bf16", f"failed: {why}", False, got[0]["seconds"] if got else 0)
        return
    r = got[0]
    recompiles = (c.out / "logs" / "compile.log").read_text(errors="replace").count("Recompiling function")
    c.row(
        "compile",
        run,
        r.get("precision", "?"),
        f"{recompiles} recompile(s) (logs/compile.log); "
        f"{r['graphs']} graph(s), {r['dynamo_counters'].get('frames', {}).get('ok', 0)} frame compile(s), "
        f"{r['graph_breaks']} graph break(s)",
        recompiles == 0,
        r["seconds"],
    )


def prepare(out: Path, s: Sizes) -> tuple[Path, Path]:
    """The pretrained folder (random weights, a tokenizer) and the data root."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from fine_tune import synthetic

    data = out / "data"
    synthetic.write_qqp(data, n_train=s.rows, n_dev=16, n_test=8)
    if s.vocab_size is None:
        return synthetic.write_tiny_model(out / "pretrained", "bert", **s.teacher), data
    folder = out / "pretrained"
    if (SHARED_TOKENIZER / "vocab.txt").is_file():
        tokenizer = AutoTokenizer.from_pretrained(SHARED_TOKENIZER)
    else:
        tokenizer = synthetic.tiny_tokenizer("bert", s.teacher["max_positions"])
    torch.manual_seed(0)
    config = synthetic.tiny_config("bert", vocab_size=max(s.vocab_size, len(tokenizer)), **s.teacher)
    AutoModel.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, data


def markdown(rows: list[list[str]]) -> str:
    header = ["check", "run", "precision", "result", "status", "s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("-" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(x.replace("|", "\\|") for x in r) + " |" for r in rows])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny models, 2 steps, on the CPU: that the check runs")
    p.add_argument(
        "--out",
        default=str(REPO / "data" / "gpu_check"),
        help="folder for everything the check writes (re-created on every run; default data/gpu_check)",
    )
    p.add_argument("--steps", type=int, help="optimizer steps per training run (default 8; --smoke 2)")
    p.add_argument("--only", help="comma-separated checks to run: " + ",".join(GROUPS) + " (default all)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(Path(args.worker))
    from fine_tune.errors import UserError
    from fine_tune.io_utils import reset_own_folder

    only = GROUPS if not args.only else tuple(x.strip() for x in args.only.split(","))
    unknown = [x for x in only if x not in GROUPS]
    if unknown:
        raise UserError(f"--only {args.only}: unknown check {unknown[0]!r} (choose from {', '.join(GROUPS)})")
    if args.steps is not None and args.steps < 2:
        raise UserError(f"--steps {args.steps}: at least 2 (the first step is set-up, the syncs are read after it)")
    import torch

    if not args.smoke and not torch.cuda.is_available():
        raise UserError("no CUDA device on this machine: run `bash scripts/gpu_check.sh --smoke` for the CPU run")
    sizes = SMOKE if args.smoke else GPU
    steps = args.steps or sizes.steps
    out = Path(args.out).resolve()
    reset_own_folder(out, MARK, ("data", "experiments", "exports", "logs", "pretrained", "gpu_check.md"), "--out")
    (out / "logs").mkdir()
    env = {
        **os.environ,
        "FT_DATA_ROOT": str(out / "data"),
        "FT_EXP_ROOT": str(out / "experiments"),
        "TQDM_DISABLE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    c = Check(out, sizes, env)
    pretrained, data = prepare(out, sizes)
    machine = torch.cuda.get_device_name(0) if sizes is GPU else f"CPU ({os.cpu_count()} cores)"
    print(f"[gpu_check] {machine}; torch {torch.__version__}; models and data in {out}", flush=True)
    for group, run in (
        ("amp", lambda: check_amp(c, pretrained, steps)),
        ("resume", lambda: check_resume(c, pretrained, steps)),
        ("memory", lambda: check_memory(c, pretrained, steps)),
        ("throughput", lambda: check_throughput(c, pretrained, data)),
        ("compile", lambda: check_compile(c, pretrained, steps)),
    ):
        if group not in only:
            continue
        if c.left() <= 0:
            c.row(group, "-", "-", f"skipped: past the {sizes.deadline_s:.0f}-s deadline", None, 0)
            continue
        run()
    total = time.perf_counter() - c.start
    table = (
        f"GPU check ({'smoke, ' if args.smoke else ''}{machine}, torch {torch.__version__}, {steps} steps per "
        f"run, {total:.0f} s in all)\n\n{markdown(c.rows)}\n"
    )
    (out / "gpu_check.md").write_text(table, encoding="utf-8")
    print("\n" + table + f"\n(written to {out / 'gpu_check.md'})")
    if c.failed:
        raise SystemExit(1)
    return 0


if __name__ == "__main__":
    from fine_tune.cli import run_main

    raise SystemExit(main() if "--worker" in sys.argv else run_main(main))
