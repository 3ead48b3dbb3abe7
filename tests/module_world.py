"""Module-scoped worlds for the slower end-to-end modules: one synthetic QQP data root and experiment root per test
module, and test_layerwise_scripts' tiny 12-layer teacher (checkpoints 2 and 4) trained once for the module.
A module imports the fixtures it uses (``from module_world import data_root, exp_root, teacher``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_in_process

from fine_tune import synthetic


@pytest.fixture(scope="module")
def data_root(request, tmp_path_factory) -> Path:
    """One data root and experiment root for the module (the teacher trained once)."""
    root = tmp_path_factory.mktemp(request.module.__name__.removeprefix("test_")) / "data"
    synthetic.write_qqp(root, n_train=96, n_dev=48, n_test=8)
    return root


@pytest.fixture(scope="module")
def exp_root(data_root) -> Path:
    return data_root.parent / "exp"


@pytest.fixture(scope="module")
def teacher(data_root, exp_root, tiny_bert12) -> Path:
    """test_layerwise_scripts' teacher ("teacher", 12 layers, checkpoints 2 and 4), trained once for the module."""
    run_in_process(
        "run_fine_tune.py",
        "--experiment",
        "teacher",
        "--model",
        "bert",
        "--ptrain_ver",
        str(tiny_bert12),
        "--task",
        "qqp",
        "--total_step",
        "4",
        "--warmup_step",
        "1",
        "--ckpt_step",
        "2",
        "--log_step",
        "2",
        "--batch_size",
        "16",
        "--lr",
        "1e-3",
        "--max_seq_len",
        "24",
        data_root=data_root,
        exp_root=exp_root,
    )
    return exp_root / "teacher_bert_qqp"
