#!/usr/bin/env python
"""Make tests/data/legacy_runs: experiments interrupted under an OLD version of the toolkit, for
tests/test_legacy_resume.py (runs made by older code must resume under the current code, bit-identically).

Run it with the old code's checkout as the working directory (its ``fine_tune`` package, entry scripts and
``tests/killpoint.py`` are used; nothing of the current checkout is imported)::

    cd /tmp/wt_before   # a worktree of the old commit, e.g. git worktree add /tmp/wt_before a29836d
    OMP_NUM_THREADS=1 python /work/main/tests/data/make_legacy_runs.py --out /work/main/tests/data/legacy_runs

(``--repo DIR`` names the old checkout instead of the working directory; ``--force`` replaces an existing
``--out``.) It writes, under ``--out``:

- ``models/tiny-bert/``: a tiny 'pretrained' BERT (fine_tune.synthetic.write_tiny_model: 6 layers, hidden 8, 2
  heads, feed-forward 16, 32 positions);
- ``data/``: the data root: synthetic QQP (48 train, 16 dev, 8 test rows), the teacher's train logits data set
  (run_fine_tune_gen_logits.py) and the tokenisation cache the runs left;
- ``exp/``: the experiment root: the finished teacher ``fine_tune_ref_bert_qqp`` (config.json, model/, model-4.pt; the
  uninterrupted fine-tuning run, teacher of the three distillation cases) and, per case, the experiment
  ``{case}_stopped_bert_qqp`` exactly as a run killed (SIGKILL, tests/killpoint.py ``after:resume-2.pt``) right
  after its first checkpoint left it, with its TensorBoard folder ``exp/log/{case}_stopped_bert_qqp``;
- ``reference/{case}/``: the final ``model-4.pt`` (and LAD's ``gate-*-4.pt``) of the same command run without
  interruption (its experiment folder itself is deleted);
- ``manifest.json``: the old commit, package versions, the absolute prefix (``--out`` resolved) that the
  config.json files and the logits data set's meta file contain, the files that contain it, the environment
  and the exact argv of every command, and per case the flags to re-run.

Cases (every optimiser, schedule and loss flag given explicitly, so a later change of a default cannot matter;
total 4 steps, checkpoints every 2, dropout on, one thread): ``fine_tune`` (run_fine_tune.py), ``lad``
(run_lad_distil.py, 1-layer student, gate weight decay 0.01 on every gate parameter the old code decays),
``pkd`` (run_pkd_distill.py --pkd_loss normalized_cls, 3-layer student: two [CLS] pairs, so a sum over layers
and a mean over layers differ) and ``offline_kd`` (run_fine_tune_distill.py from the logits data set).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
from pathlib import Path

STEPS, CKPT = 4, 2
TINY = dict(num_layers=6, hidden=8, heads=2, ff=16, max_positions=32)
WIDTHS = ["--d_model", "8", "--d_ff", "16", "--num_attention_heads", "2"]
# every flag of the shared optimiser/schedule group that changes what a run computes
OPTIM = ["--task", "qqp", "--model", "bert", "--seed", "7", "--dropout", "0.1", "--total_step", str(STEPS),
         "--warmup_step", "1", "--ckpt_step", str(CKPT), "--log_step", "1", "--batch_size", "8", "--accum_step", "1",
         "--beta1", "0.9", "--beta2", "0.999", "--eps", "1e-08", "--weight_decay", "0.01", "--max_norm", "1.0",
         "--max_seq_len", "32", "--num_class", "2", "--padding_free", "auto"]
TEACHER = ["--teacher_exp", "fine_tune_ref", "--tmodel", "bert", "--tckpt", str(STEPS)]
LAYERWISE = [*TEACHER, *WIDTHS, "--dataset", "train", "--padding", "max_length", "--softmax_temp", "2.0",
             "--soft_weight", "0.5", "--hard_weight", "0.5", "--map_examples", "0", *OPTIM]
CASES = {  # case id: (script, flags without --experiment)
    "fine_tune": ("run_fine_tune.py", ["--ptrain_ver", "{models}/tiny-bert", "--dataset", "train", "--padding",
                                       "dynamic", "--lr", "1e-3", *OPTIM]),
    "lad": ("run_lad_distil.py", [*LAYERWISE, "--num_hidden_layers", "1", "--mu", "1.0", "--lr", "1e-3",
                                  "--gate_lr", "1e-2", "--gate_beta1", "0.9", "--gate_beta2", "0.999",
                                  "--gate_eps", "1e-08", "--gate_weight_decay", "0.01", "--gate_max_norm", "1.0",
                                  "--gate_total_step", str(STEPS), "--gate_warmup_step", "1"]),
    "pkd": ("run_pkd_distill.py", [*LAYERWISE, "--num_hidden_layers", "3", "--mu", "10.0", "--lr", "1e-3",
                                   "--pkd_loss", "normalized_cls", "--pkd_strategy", "skip"]),
    "offline_kd": ("run_fine_tune_distill.py", ["--dataset", "fine_tune_ref_bert_qqp", *WIDTHS, "--num_hidden_layers", "2",
                                                "--padding", "dynamic", "--softmax_temp", "2.0", "--soft_weight",
                                                "0.7", "--hard_weight", "0.3", "--lr", "1e-3", *OPTIM]),
}


def machine() -> dict:
    """What decides the last bits of a CPU run besides the code: the processor and the kernels torch picks for it
    (tests/test_legacy_resume.py compares bit for bit only on a machine with the same signature)."""
    import torch

    model = ""
    try:
        model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo", encoding="utf-8")
                      if line.startswith("model name")), "")
    except OSError:
        pass
    return {"cpu": model or platform.processor(), "capability": torch.backends.cpu.get_cpu_capability(),
            "torch": torch.__version__}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="folder to write (tests/data/legacy_runs)")
    ap.add_argument("--repo", default=".", help="the OLD checkout whose code makes the runs (default: cwd)")
    ap.add_argument("--force", action="store_true", help="replace an existing --out")
    a = ap.parse_args()
    repo, out = Path(a.repo).resolve(), Path(a.out).resolve()
    if not (repo / "fine_tune" / "synthetic.py").is_file() or not (repo / "tests" / "killpoint.py").is_file():
        raise SystemExit(f"{repo} is not a checkout of the toolkit (run from the old checkout or pass --repo)")
    if out.exists():
        if not a.force:
            raise SystemExit(f"{out} exists; pass --force to replace it")
        shutil.rmtree(out)
    sys.path.insert(0, str(repo))
    from fine_tune import synthetic  # the old code's

    models, data, exp = out / "models", out / "data", out / "exp"
    synthetic.write_tiny_model(models / "tiny-bert", "bert", **TINY)
    synthetic.write_qqp(data, n_train=48, n_dev=16, n_test=8)
    env = {"FT_DATA_ROOT": str(data), "FT_EXP_ROOT": str(exp), "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONUNBUFFERED": "1"}
    commands: list[dict] = []

    def run(script: str, args: list[str], kill: str | None = None) -> None:
        argv = [sys.executable, str(repo / script), *args]
        if kill:
            argv = [sys.executable, str(repo / "tests" / "killpoint.py"), kill, str(repo / script), *args]
        proc = subprocess.run(argv, capture_output=True, text=True, cwd=str(out), env=dict(os.environ, **env),
                              timeout=600)
        want = -signal.SIGKILL if kill else 0
        if proc.returncode != want:
            raise SystemExit(f"{' '.join(argv)}: exit {proc.returncode}, expected {want}\n{proc.stdout}\n{proc.stderr}")
        commands.append({"argv": argv, "cwd": str(out), "returncode": proc.returncode})
        print(f"ok ({proc.returncode}): {script} {' '.join(args)}", file=sys.stderr)

    def flags(case: str, name: str) -> list[str]:
        return [f.replace("{models}", str(models)) for f in CASES[case][1]] + ["--experiment", name]

    cases = []
    for case, (script, _) in CASES.items():
        ref, stopped = flags(case, f"{case}_ref"), flags(case, f"{case}_stopped")
        run(script, ref)
        run(script, stopped, kill=f"after:resume-{CKPT}.pt")
        folder = exp / f"{case}_stopped_bert_qqp"
        assert (folder / f"resume-{CKPT}.pt").is_file() and not (folder / f"model-{STEPS}.pt").exists()
        ref_dir, keep = exp / f"{case}_ref_bert_qqp", out / "reference" / case
        keep.mkdir(parents=True)
        kept = [p.name for p in sorted(ref_dir.glob(f"*-{STEPS}.pt")) if not p.name.startswith("resume-")]
        for name in kept:
            shutil.copy2(ref_dir / name, keep / name)
        if case == "fine_tune":  # the teacher of the other cases, and the logits data set for offline_kd
            run("run_fine_tune_gen_logits.py", ["--experiment", "fine_tune_ref", "--model", "bert", "--task", "qqp",
                                                "--ckpt", str(STEPS), "--dataset", "train", "--batch_size", "16"])
        cases.append({"id": case, "script": script, "args": stopped, "experiment_folder": folder.name,
                      "resume_from": CKPT, "total_step": STEPS, "reference": f"reference/{case}",
                      "reference_files": kept, "stopped_files": sorted(p.name for p in folder.iterdir())})

    # keep what a user would have: the finished teacher (config, model/, its last checkpoint), the stopped runs
    for case in CASES:
        if case != "fine_tune":
            shutil.rmtree(exp / f"{case}_ref_bert_qqp")
        shutil.rmtree(exp / "log" / f"{case}_ref_bert_qqp", ignore_errors=True)
    teacher = exp / "fine_tune_ref_bert_qqp"
    for p in teacher.iterdir():
        if p.name not in ("config.json", "model", f"model-{STEPS}.pt"):
            shutil.rmtree(p) if p.is_dir() else p.unlink()

    with_prefix = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.suffix == ".json"
                         and str(out) in p.read_text(encoding="utf-8", errors="replace"))
    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True).stdout.strip())
    import torch
    import transformers

    manifest = {
        "about": "made by tests/data/make_legacy_runs.py with the code of 'commit'; read by tests/test_legacy_resume.py",
        "commit": commit, "dirty": dirty, "repo": str(repo),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__},
        "machine": machine(),
        "prefix": str(out), "prefix_files": with_prefix,
        "layout": {"models": "models", "data_root": "data", "exp_root": "exp", "reference": "reference"},
        "env": env, "tiny_model": TINY, "commands": commands, "cases": cases,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
