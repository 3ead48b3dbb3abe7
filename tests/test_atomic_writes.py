"""Every kind of file the toolkit writes survives a SIGKILL in the middle of its write: the kill leaves a half-written
``.tmp-*`` file beside the target, exactly as a real kill does, and the target itself is either absent or still
the previous complete version; the same command run again completes and nothing reads the leftover.

(Checkpoints, resume states, LAD gate files and heat-maps: tests/test_resume.py, which also resumes from them.)

Each case is a real child process (forked from the test process: tests/killpoint.py's Forked) killed just before
the rename of its file, all of them started at once; a writer that stopped writing atomically is never killed
there, so its case fails.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
from conftest import HANG_GUARD, REPO, run_in_process
from killpoint import Forked

from fine_tune import synthetic

TEACHER = ["--experiment", "teacher", "--model", "bert", "--task", "qqp"]
FT = [
    "--model",
    "bert",
    "--task",
    "qqp",
    "--total_step",
    "2",
    "--warmup_step",
    "1",
    "--ckpt_step",
    "2",
    "--batch_size",
    "8",
    "--lr",
    "1e-3",
    "--max_seq_len",
    "24",
]

# id: (file-name pattern killed before its rename, where it lands, script, flags)
KILLS = {
    "config": ("config.json", "exp/cfg_bert_qqp", "run_fine_tune.py", ["--experiment", "cfg", *FT]),
    "model_folder": ("model", "exp/dir_bert_qqp", "run_fine_tune.py", ["--experiment", "dir", *FT]),
    # a data root of its own (no other run writes into its cache)
    "tokenisation_cache": (
        "features-*.pt",
        "cache_data/cache",
        "run_fine_tune.py",
        ["--experiment", "cache", *FT, "--max_seq_len", "20", "--data_root", "{base}/cache_data"],
    ),
    "logits": (
        "logits.jsonl",
        "data/logits/teacher_bert_qqp/dev",
        "run_fine_tune_gen_logits.py",
        [*TEACHER, "--ckpt", "2", "--dataset", "dev"],
    ),
    "eval_table": (
        "eval-dev.json",
        "exp/teacher_bert_qqp",
        "run_fine_tune_eval.py",
        [*TEACHER, "--dataset", "dev", "--batch_size", "16"],
    ),
    "submission": (
        "QQP.tsv",
        "exp/teacher_bert_qqp",
        "generate_test_prediction.py",
        [*TEACHER, "--ckpt", "2", "--dataset", "test"],
    ),
}


def command(cid: str, base: Path, tiny_bert: Path) -> tuple[str, list[str]]:
    """A case's script and flags, filled in (its folder, the pretrained model of a fine-tune)."""
    _, _, script, flags = KILLS[cid]
    flags = [f.replace("{base}", str(base)) for f in flags]
    return script, [*flags, "--ptrain_ver", str(tiny_bert)] if script == "run_fine_tune.py" else flags


@pytest.fixture(scope="module")
def killed(tmp_path_factory, tiny_bert):
    """A finished teacher with an evaluation on dev, then every case's command started at once, each killed
    before the rename of its file. Returns the base folder and, per case, the target's bytes before the kill."""
    base = tmp_path_factory.mktemp("atomic")
    data, exp = base / "data", base / "exp"
    synthetic.write_qqp(data, n_train=24, n_dev=16, n_test=8)
    synthetic.write_qqp(base / "cache_data", n_train=24, n_dev=16, n_test=8)
    run_in_process("run_fine_tune.py", *TEACHER, "--ptrain_ver", str(tiny_bert), *FT[4:], data_root=data, exp_root=exp)
    run_in_process(
        "run_fine_tune_eval.py", *TEACHER, "--dataset", "dev", "--batch_size", "16", data_root=data, exp_root=exp
    )
    before = {
        cid: {p.name: p.read_bytes() for p in (base / where).glob(pattern) if p.is_file()}
        for cid, (pattern, where, _, _) in KILLS.items()
    }
    env = dict(os.environ, FT_DATA_ROOT=str(data), FT_EXP_ROOT=str(exp), TQDM_DISABLE="1", OMP_NUM_THREADS="1")
    procs = {}
    for cid, (pattern, _, _, _) in KILLS.items():
        script, flags = command(cid, base, tiny_bert)
        procs[cid] = Forked(f"before:{pattern}", str(REPO / script), flags, env, base)
    results = {cid: (p.communicate(timeout=HANG_GUARD), p.returncode) for cid, p in procs.items()}
    return base, before, results


@pytest.mark.parametrize("cid", list(KILLS))
def test_kill_mid_write_leaves_the_target_whole_and_the_rerun_completes(cid, killed, tiny_bert):
    base, before, results = killed
    pattern, where, _, _ = KILLS[cid]
    (out, err), code = results[cid]
    assert code == -signal.SIGKILL, f"{cid}: not killed at the write of {pattern} ({code}):\n{out}\n{err}"
    folder = base / where
    # a logits data set is built whole in a staging folder inside it, then renamed into place file by file
    leftovers = list(folder.glob(".tmp-new.*" if cid == "logits" else f".tmp-{pattern}.*"))
    assert leftovers, sorted(os.listdir(folder))
    now = {p.name: p.read_bytes() for p in folder.glob(pattern) if p.is_file()}
    assert now == before[cid]  # absent, or the previous complete version byte for byte
    script, flags = command(cid, base, tiny_bert)
    run_in_process(script, *flags, data_root=base / "data", exp_root=base / "exp")
    check_complete(cid, base)


def check_complete(cid: str, base: Path) -> None:
    """What the rerun wrote is whole and right."""
    exp, data = base / "exp", base / "data"
    if cid == "config":
        assert json.loads((exp / "cfg_bert_qqp" / "config.json").read_text())["experiment"] == "cfg"
    elif cid == "model_folder":
        from transformers import AutoConfig, AutoTokenizer

        assert AutoConfig.from_pretrained(exp / "dir_bert_qqp" / "model").num_labels == 2
        assert AutoTokenizer.from_pretrained(exp / "dir_bert_qqp" / "model").pad_token == "[PAD]"
    elif cid == "tokenisation_cache":  # the rerun's cache file is whole: read back, never re-tokenised
        from fine_tune import batching
        from fine_tune.models.classifier import load_tokenizer
        from fine_tune.tasks import get_task

        tok = load_tokenizer(exp / "cache_bert_qqp" / "model")
        examples = get_task("qqp").load(base / "cache_data", "train", None)
        fresh = batching.tokenize(tok, examples, 20)
        real, batching.tokenize = batching.tokenize, None  # any attempt to tokenise again fails
        try:
            cached = batching.cached_features(base / "cache_data" / "cache", tok, examples, 20, regression=False)
        finally:
            batching.tokenize = real
        for a, b in (
            (cached.input_ids, fresh.input_ids),
            (cached.offsets, fresh.offsets),
            (cached.labels, fresh.labels),
        ):
            assert np.array_equal(a, b)
    elif cid == "logits":
        from fine_tune.tasks.logits import read_logits

        ds = read_logits(data, "teacher_bert_qqp:dev", "qqp")
        assert ds.logits.shape == (16, 2) and ds.meta["checkpoint"] == 2
    elif cid == "eval_table":
        table = json.loads((exp / "teacher_bert_qqp" / "eval-dev.json").read_text())
        pred = np.load(exp / "teacher_bert_qqp" / "eval-dev-predictions.npz")
        assert [r["ckpt"] for r in table["rows"]] == [2] and len(pred["pred_2"]) == table["num_rows"]
        from fine_tune.tasks import get_task  # the accuracy in the table is the one of the saved predictions

        labels = np.array([e.label for e in get_task("qqp").load(data, "dev", None)])
        assert table["rows"][0]["accuracy"] == pytest.approx(float((pred["pred_2"] == labels[pred["idx"]]).mean()))
    elif cid == "submission":
        lines = (exp / "teacher_bert_qqp" / "QQP.tsv").read_text().splitlines()
        assert lines[0] == "index\tprediction" and len(lines) == 9
