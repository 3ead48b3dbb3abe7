"""Shared fixtures: tiny BERT/ALBERT 'pretrained' folders and synthetic data roots, made once per session."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
sys.path.insert(0, str(REPO))
os.environ.setdefault("TQDM_DISABLE", "1")

from fine_tune import synthetic  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def contained_tmpdir(tmp_path_factory):
    """Everything the suite's processes put in a temporary folder (torchrun's torchelastic_* folders, tempfile
    users) lands under pytest's own base folder, which a passing run removes (pytest.ini)."""
    import tempfile

    folder = tmp_path_factory.mktemp("TMPDIR")
    saved = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"] = str(folder)
    tempfile.tempdir = str(folder)
    yield folder
    if saved[0] is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = saved[0]
    tempfile.tempdir = saved[1]


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return synthetic.write_tiny_model(tmp_path_factory.mktemp("models") / "tiny-bert", "bert", num_layers=2)


@pytest.fixture(scope="session")
def tiny_bert12(tmp_path_factory) -> Path:
    """A 12-layer tiny BERT (for layer-wise mappings and the seed documents' 12-layer teachers)."""
    return synthetic.write_tiny_model(tmp_path_factory.mktemp("models") / "tiny-bert12", "bert", num_layers=12)


@pytest.fixture(scope="session")
def tiny_albert(tmp_path_factory) -> Path:
    return synthetic.write_tiny_model(tmp_path_factory.mktemp("models") / "tiny-albert", "albert", num_layers=2)


@pytest.fixture()
def data_root(tmp_path) -> Path:
    root = tmp_path / "data"
    synthetic.write_boolq(root, n_train=96, n_val=48, n_test=32)
    synthetic.write_qqp(root, n_train=96, n_dev=48, n_test=32)
    return root


@pytest.fixture()
def exp_root(tmp_path) -> Path:
    return tmp_path / "exp"


# A hang guard, not a time budget: no test waits on a clock for an outcome (kills and races synchronise on process
# handles, pipes and files). A subprocess that has not ended after this long is stuck (a deadlock), and failing then
# beats holding CI until its own limit; no correct run of the suite's tiny models comes within minutes of it.
HANG_GUARD = 1800


def run_script(script: str, *args: str, data_root: Path, exp_root: Path, check: bool = True, timeout: int = HANG_GUARD):
    """Run an entry script in a subprocess, as a user would; returns the CompletedProcess."""
    env = dict(
        os.environ, FT_DATA_ROOT=str(data_root), FT_EXP_ROOT=str(exp_root), TQDM_DISABLE="1", PYTHONUNBUFFERED="1"
    )
    proc = subprocess.run(
        [sys.executable, str(REPO / script), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=str(data_root.parent),
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


_SCRIPTS: dict[str, object] = {}


def run_in_process(script: str, *args: str, data_root: Path, exp_root: Path, check: bool = True):
    """Run an entry script's ``main`` in this process (no interpreter start-up: fast), with the same
    environment, exit code and captured output a subprocess would give."""
    from fine_tune.cli import run_main

    if script not in _SCRIPTS:
        spec = importlib.util.spec_from_file_location(f"entry_{Path(script).stem}", REPO / script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _SCRIPTS[script] = module
    out, err = io.StringIO(), io.StringIO()
    saved = {k: os.environ.get(k) for k in ("FT_DATA_ROOT", "FT_EXP_ROOT")}
    os.environ.update(FT_DATA_ROOT=str(data_root), FT_EXP_ROOT=str(exp_root))
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = run_main(_SCRIPTS[script].main, list(args))
            except SystemExit as e:  # argparse errors
                code = e.code
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    proc = subprocess.CompletedProcess([script, *args], code, out.getvalue(), err.getvalue())
    if check and code != 0:
        raise AssertionError(f"{script} {' '.join(args)} failed ({code}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def run_in_world(w: dict, script: str, *args: str, check: bool = True):
    """:func:`run_in_process` against a module world's roots (``w["data"]``, ``w["exp"]``)."""
    return run_in_process(script, *args, data_root=w["data"], exp_root=w["exp"], check=check)


@contextlib.contextmanager
def one_thread():
    """torch on one thread while a module world is built and used (tiny models: threads only add overhead)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture()
def run(data_root, exp_root):
    """Run an entry script in-process (``subprocess=True``: in a real subprocess, as from a shell)."""

    def _run(script: str, *args: str, check: bool = True, subprocess: bool = False):
        runner = run_script if subprocess else run_in_process
        return runner(script, *args, data_root=data_root, exp_root=exp_root, check=check)

    return _run


@pytest.fixture()
def batch_widths(monkeypatch) -> list[int]:
    """The padded width of every batch the collator builds from here on in this process (in-process runs)."""
    from fine_tune import batching

    widths: list[int] = []
    call = batching.Collator.__call__

    def recording(self, rows):
        batch = call(self, rows)
        widths.append(batch["input_ids"].shape[1])
        return batch

    monkeypatch.setattr(batching.Collator, "__call__", recording)
    return widths


def method_from_flags(name: str, args: list[str], teacher, seed: int, task: str = "qqp"):
    """The layer-wise method ``name`` as its script builds it: its flags parsed (``args`` after an experiment,
    task and teacher of its own), built by the registry's ``build`` from the settings the run plan resolves
    (``method_settings``: of ``task``, against ``teacher``, a TeacherShape), then its parameters (gates,
    projections) created under ``torch.manual_seed(seed)``."""
    import torch

    from fine_tune.cli import parse_layerwise
    from fine_tune.methods import get_method
    from fine_tune.plan.training import method_settings
    from fine_tune.tasks import get_task

    flags = parse_layerwise(
        f"run_{name}_distil.py",
        "",
        name,
        ["--experiment", "x", "--task", task, "--teacher_exp", "t", "--tckpt", "1", *args],
    )
    if flags.batching.max_seq_len is None:  # what the plan resolves from the teacher's config.json
        flags = flags.replace(batching={"max_seq_len": 128})
    method = get_method(name).build(method_settings(flags, get_task(task), get_method(name), teacher))
    torch.manual_seed(seed)
    method.create_parameters(None, None)
    return method


def write_hub_copy(folder: Path, splits: dict[str, list[dict]], columns: list[str]) -> Path:
    """A local stand-in for a Hugging Face dataset: one CSV file per split (``columns`` of each row), which
    ``datasets.load_dataset(folder)`` reads as it would read the hub's files."""
    import csv

    folder.mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        with open(folder / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=columns)
            w.writeheader()
            w.writerows({k: r[k] for k in columns} for r in rows)
    return folder


def checkpoint_logits(folder: Path, step: int, pairs, max_len: int):
    """An experiment checkpoint's logits in plain Hugging Face PyTorch (its model folder's config and tokenizer),
    one (text, text pair) at a time, unpadded: what a prediction of those rows must equal."""
    import numpy as np
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(folder / "model"))
    model.load_state_dict(torch.load(folder / f"model-{step}.pt", weights_only=True))
    tokenizer = AutoTokenizer.from_pretrained(folder / "model")
    model.eval()
    with torch.inference_mode():
        return np.concatenate(
            [
                model(**tokenizer(a, b, truncation=True, max_length=max_len, return_tensors="pt")).logits.numpy()
                for a, b in pairs
            ]
        )


def needs_shared(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not present (../shared is only beside the development checkout)")
    return path


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """The order's seed, last (also under -q, which hides pytest-randomly's header line): CI runs the suite in a
    random order (pytest-randomly, requirements.txt) so that a test depending on another's leftovers fails at
    once; ``python -m pytest -p randomly --randomly-seed=N`` brings the same order back."""
    seed = getattr(config.option, "randomly_seed", None)
    if seed is not None and config.pluginmanager.has_plugin("randomly"):
        terminalreporter.write_line(f"test order: random, --randomly-seed={seed} (-p no:randomly: file order)")


# CI sets FT_REQUIRE_ALL_TESTS=1 (.ci/run): there every skip is a failure, so a missing ../shared (the real-model and
# seed-versus-original tests) or a missing system feature (mount namespaces) can never pass silently.
REQUIRE_ALL = os.environ.get("FT_REQUIRE_ALL_TESTS") == "1"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_ALL and report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped, but FT_REQUIRE_ALL_TESTS=1 forbids skips: {reason}"
