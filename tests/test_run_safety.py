"""A non-finite loss stops a run naming the step and the loss part and keeps the last good checkpoint;
--save_total_limit keeps the newest K checkpoints (resume state only for the latest); two processes sharing a
tokenisation cache at the same moment both get complete, correct features."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import HANG_GUARD, REPO
from test_scripts_e2e import TRAIN

FLAGS = [*TRAIN, "--batch_size", "8", "--warmup_step", "1", "--lr", "1e-3"]


def files(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_non_finite_loss_stops_run_keeping_last_good_checkpoint(run, exp_root, tiny_bert, monkeypatch):
    from fine_tune.methods import logits_kd

    calls = {"n": 0}
    real = logits_kd.HardLabel.losses

    def poisoned(self, batch, student, teacher=None):
        calls["n"] += 1
        parts = real(self, batch, student, teacher)
        if calls["n"] == 6:  # optimizer step 6 (accum 1)
            parts["loss"] = parts["loss"] * float("nan")
        return parts

    monkeypatch.setattr(logits_kd.HardLabel, "losses", poisoned)
    proc = run(
        "run_fine_tune.py",
        "--experiment",
        "nan",
        "--model",
        "bert",
        "--task",
        "boolq",
        "--ptrain_ver",
        str(tiny_bert),
        *FLAGS,
        "--total_step",
        "12",
        "--ckpt_step",
        "4",
        "--log_step",
        "2",
        check=False,
    )
    assert proc.returncode == 2
    lines = [printed for printed in proc.stderr.splitlines() if printed.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr and proc.stderr.rstrip().endswith(lines[0])
    assert "non-finite loss (loss) at step 6" in lines[0] and "model-4.pt" in lines[0]
    folder = exp_root / "nan_bert_boolq"
    # stopped at the first check after step 6 (the log at step 6), before anything else was saved
    assert sorted(p.name for p in folder.glob("model-*.pt")) == ["model-4.pt"]
    state = torch.load(folder / "model-4.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in state.values())
    # the same command resumes from the good checkpoint (the poison is gone): the run then finishes
    monkeypatch.setattr(logits_kd.HardLabel, "losses", real)
    proc = run(
        "run_fine_tune.py",
        "--experiment",
        "nan",
        "--model",
        "bert",
        "--task",
        "boolq",
        "--ptrain_ver",
        str(tiny_bert),
        *FLAGS,
        "--total_step",
        "12",
        "--ckpt_step",
        "4",
        "--log_step",
        "2",
    )
    assert "resuming from model-4.pt" in proc.stderr
    assert sorted(int(p.name[6:-3]) for p in folder.glob("model-*.pt")) == [4, 8, 12]


def test_save_total_limit_keeps_newest(run, exp_root, tiny_bert):
    run(
        "run_fine_tune.py",
        "--experiment",
        "k",
        "--model",
        "bert",
        "--task",
        "qqp",
        "--ptrain_ver",
        str(tiny_bert),
        *FLAGS,
        "--total_step",
        "10",
        "--ckpt_step",
        "2",
        "--log_step",
        "2",
        "--save_total_limit",
        "2",
    )
    folder = exp_root / "k_bert_qqp"
    assert sorted(p.name for p in folder.glob("model-*.pt")) == ["model-10.pt", "model-8.pt"]
    assert [p.name for p in folder.glob("resume-*.pt")] == ["resume-10.pt"]
    # default: every checkpoint kept (the sweep evaluation sees them all); resume state for the latest only
    run(
        "run_fine_tune.py",
        "--experiment",
        "all",
        "--model",
        "bert",
        "--task",
        "qqp",
        "--ptrain_ver",
        str(tiny_bert),
        *FLAGS,
        "--total_step",
        "10",
        "--ckpt_step",
        "2",
        "--log_step",
        "2",
    )
    folder = exp_root / "all_bert_qqp"
    assert sorted(int(p.name[6:-3]) for p in folder.glob("model-*.pt")) == [2, 4, 6, 8, 10]
    assert [p.name for p in folder.glob("resume-*.pt")] == ["resume-10.pt"]
    proc = run(
        "run_fine_tune.py",
        "--experiment",
        "z",
        "--model",
        "bert",
        "--task",
        "qqp",
        "--ptrain_ver",
        str(tiny_bert),
        *FLAGS,
        "--save_total_limit",
        "0",
        check=False,
    )
    assert proc.returncode == 2 and "--save_total_limit must be positive" in proc.stderr
    assert not (exp_root / "z_bert_qqp").exists()


def test_overwrite_leaves_nothing_of_the_old_run(run, exp_root, tiny_bert):
    """--overwrite with another config: the folder then holds the new run's files only (no old checkpoint, resume
    state, eval table, predictions, submission or leftover temporary file) and the TensorBoard folder the new
    run's events only."""
    common = [
        "--experiment",
        "ow",
        "--model",
        "bert",
        "--task",
        "qqp",
        "--ptrain_ver",
        str(tiny_bert),
        *FLAGS,
        "--ckpt_step",
        "2",
        "--log_step",
        "2",
    ]
    run("run_fine_tune.py", *common, "--total_step", "4")
    folder, log = exp_root / "ow_bert_qqp", exp_root / "log" / "ow_bert_qqp"
    read = ["--experiment", "ow", "--model", "bert", "--task", "qqp"]
    run("run_fine_tune_eval.py", *read, "--dataset", "dev", "--batch_size", "16")
    run("generate_test_prediction.py", *read, "--ckpt", "4", "--dataset", "test")
    (folder / ".tmp-model-6.pt.abcdef").write_bytes(b"half a checkpoint from a killed write")
    old = {p.name for p in folder.iterdir()}
    assert {"eval-dev.json", "eval-dev-predictions.npz", "QQP.tsv", "model-2.pt", "model-4.pt"} <= old
    old_events = set(log.iterdir())

    run("run_fine_tune.py", *common, "--total_step", "2", "--seed", "3", "--overwrite")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model", "model-2.pt", "resume-2.pt"]
    assert json.loads((folder / "config.json").read_text())["seed"] == 3
    new_events = set(log.iterdir())
    assert new_events and not new_events & old_events


WORKER = textwrap.dedent("""
    import sys, json
    from pathlib import Path
    sys.path.insert(0, {repo!r})
    from fine_tune import batching
    from fine_tune.tasks import get_task
    from fine_tune.models.classifier import load_tokenizer
    from fine_tune.io_utils import sha256_file
    data_root, cache, model = map(Path, sys.argv[1:4])
    task = get_task("boolq")
    examples = task.load(data_root, "train")
    tok = load_tokenizer(model)
    real, calls = batching.tokenize, []

    def tokenize(*a, **k):  # reached only after this worker found no cache file; nothing is written yet
        features = real(*a, **k)
        calls.append(1)
        print("ready", flush=True)  # the barrier: the test answers once both workers are here
        assert sys.stdin.readline().strip() == "go"
        return features

    batching.tokenize = tokenize
    runs = [batching.cached_features(cache, tok, examples, 48, regression=False)
            for _ in range(2)]  # the second read finds the file one of the two wrote
    def listed(f):
        return [f.input_ids.tolist(), f.token_type_ids.tolist(), f.offsets.tolist(), f.labels.tolist()]

    print(json.dumps({{"tokenised": len(calls), "features": [listed(f) for f in runs]}}))
""")


def test_two_processes_share_a_tokenisation_cache(data_root, tmp_path, tiny_bert, monkeypatch):
    """Both workers miss the cache at the same moment (each tokenises, then waits at a barrier before writing; the
    test releases them only when both are there), then write the same cache file at once: both get the whole,
    correct features, the file is whole and holds them, no temporary file is left, and a third read hits it."""
    from fine_tune import batching
    from fine_tune.models.classifier import load_tokenizer
    from fine_tune.tasks import get_task

    cache = tmp_path / "cache"
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(repo=str(REPO)))
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(data_root), str(cache), str(tiny_bert)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for p in procs:  # both have tokenised and neither has written: the race is certain
            assert p.stdout.readline().strip() == "ready", p.communicate(timeout=HANG_GUARD)
        assert not cache.exists() or not any(cache.iterdir())
        outs = [p.communicate("go\n", timeout=HANG_GUARD) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    tok = load_tokenizer(tiny_bert)
    examples = get_task("boolq").load(data_root, "train")
    expected = batching.tokenize(tok, examples, 48)

    def listed(f):
        return [f.input_ids.tolist(), f.token_type_ids.tolist(), f.offsets.tolist(), f.labels.tolist()]

    want = listed(expected)
    assert len(set(want[3])) == 2  # both labels occur
    for out, _ in outs:
        result = json.loads(out)
        assert result == {"tokenised": 1, "features": [want, want]}
    names = sorted(p.name for p in cache.iterdir())
    assert len(names) == 1 and names[0].startswith("features-") and names[0].endswith(".pt"), names
    state = torch.load(cache / names[0], weights_only=True)  # complete and loadable, and it holds the features
    cached = batching.Features.from_state(state)
    assert listed(cached) == want
    # a third reader hits the cache: it never tokenises
    monkeypatch.setattr(batching, "tokenize", lambda *a, **k: pytest.fail("tokenised although the cache was written"))
    hit = batching.cached_features(cache, tok, examples, 48, regression=False)
    assert listed(hit) == want
