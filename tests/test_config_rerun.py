"""``--config <experiment>/config.json``: every entry script re-issues a run from its config.json; flags given on the
command line override the file and are recorded (``config_from``, ``overrides``); bad files are one line, exit 2."""

from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

import pytest
import torch
from conftest import REPO, run_in_process

from fine_tune import synthetic

TEACHER = [
    "--experiment",
    "orig",
    "--model",
    "bert",
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
    "8",
    "--lr",
    "1e-3",
    "--max_seq_len",
    "24",
    "--max_examples",
    "32",
    "--seed",
    "7",
    "--device_id",
    "-1",
]
PKD = [
    "--experiment",
    "pkd",
    "--task",
    "qqp",
    "--teacher_exp",
    "orig",
    "--tmodel",
    "bert",
    "--tckpt",
    "4",
    "--d_model",
    "32",
    "--d_ff",
    "64",
    "--num_attention_heads",
    "2",
    "--num_hidden_layers",
    "1",
    "--total_step",
    "2",
    "--warmup_step",
    "0",
    "--ckpt_step",
    "2",
    "--log_step",
    "2",
    "--batch_size",
    "8",
    "--max_examples",
    "16",
    "--device_id",
    "-1",
]
RERUN = {"experiment", "provenance", "config_from", "overrides"}


@pytest.fixture(scope="module")
def roots(tmp_path_factory, tiny_bert):
    """One data root and experiment root for the module, with the teacher ``orig`` trained once."""
    base = tmp_path_factory.mktemp("rerun")
    data_root, exp_root = base / "data", base / "exp"
    # 40 dev rows, more than the run's --max_examples 32: an evaluation that took the training run's flags from
    # its config.json would read 32
    synthetic.write_qqp(data_root, n_train=32, n_dev=40, n_test=8)

    def run(script, *args, check=True):
        return run_in_process(script, *args, data_root=data_root, exp_root=exp_root, check=check)

    run("run_fine_tune.py", *TEACHER, "--ptrain_ver", str(tiny_bert))
    return run, data_root, exp_root


def config(exp_root: Path, name: str) -> dict:
    return json.loads((exp_root / name / "config.json").read_text())


def state(exp_root: Path, name: str, step: int) -> dict:
    return torch.load(exp_root / name / f"model-{step}.pt", weights_only=True)


def same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_rerun_from_config_is_bit_identical(roots):
    run, _, exp_root = roots
    orig = config(exp_root, "orig_bert_qqp")
    assert not {"config_from", "overrides"} & set(orig)  # a run without --config writes what it always wrote
    cfg_file = exp_root / "orig_bert_qqp" / "config.json"
    run("run_fine_tune.py", "--config", str(cfg_file), "--experiment", "copy")
    copy = config(exp_root, "copy_bert_qqp")
    assert copy["config_from"] == str(cfg_file) and copy["overrides"] == {"experiment": "copy"}
    assert {k: v for k, v in copy.items() if k not in RERUN} == {k: v for k, v in orig.items() if k not in RERUN}
    for step in (2, 4):
        assert same_tensors(state(exp_root, "orig_bert_qqp", step), state(exp_root, "copy_bert_qqp", step))

    # the new fields are runtime fields: not "different science" for the guard nor for the results tables
    from fine_tune import config as cfg
    from fine_tune import results

    assert set(cfg.RERUN_FIELDS) <= cfg.RUNTIME_FIELDS and set(cfg.RERUN_FIELDS) <= results.IGNORED_FIELDS
    assert cfg.changed_fields(orig, copy) == ["experiment"]
    assert results.science_key(orig) == results.science_key(copy)

    # into the run's own folder: finished, nothing to do, config.json untouched; a changed flag is refused
    before = cfg_file.read_bytes()
    proc = run("run_fine_tune.py", "--config", str(cfg_file))
    assert "already finished" in proc.stdout and cfg_file.read_bytes() == before
    proc = run("run_fine_tune.py", "--config", str(cfg_file), "--warmup_step", "2", check=False)
    assert proc.returncode == 2 and "holds a run with a different config: warmup_step (1 -> 2)" in proc.stderr


def test_override_is_recorded_and_used(roots):
    run, _, exp_root = roots
    cfg_file = exp_root / "orig_bert_qqp" / "config.json"
    # --flag=value and an abbreviation (--warmup_s: --warmup_step) count as given; one equal to the file is no override
    # a boolean flag (store_true) given over the file's false is an override too
    assert config(exp_root, "orig_bert_qqp")["group_by_length"] is False
    run(
        "run_fine_tune.py",
        f"--config={cfg_file}",
        "--experiment",
        "fast",
        "--lr=2e-3",
        "--warmup_s",
        "1",
        "--group_by_length",
    )
    fast = config(exp_root, "fast_bert_qqp")
    assert fast["overrides"] == {"experiment": "fast", "lr": 0.002, "group_by_length": True}
    assert fast["lr"] == 0.002 and fast["warmup_step"] == 1 and fast["group_by_length"] is True
    assert not same_tensors(state(exp_root, "orig_bert_qqp", 4), state(exp_root, "fast_bert_qqp", 4))


def test_layerwise_script_reissues_from_its_config(roots):
    run, _, exp_root = roots
    run("run_pkd_distill.py", *PKD)
    pkd = config(exp_root, "pkd_bert_qqp")
    assert pkd["teacher_layers"] == 2 and "hidden_mapping" in pkd  # resolved fields: ignored by --config
    run("run_pkd_distill.py", "--config", str(exp_root / "pkd_bert_qqp" / "config.json"), "--experiment", "pkd2")
    pkd2 = config(exp_root, "pkd2_bert_qqp")
    assert pkd2["overrides"] == {"experiment": "pkd2"}
    assert {k: v for k, v in pkd2.items() if k not in RERUN} == {k: v for k, v in pkd.items() if k not in RERUN}
    assert same_tensors(state(exp_root, "pkd_bert_qqp", 2), state(exp_root, "pkd2_bert_qqp", 2))


def test_evaluation_takes_the_experiment_from_the_config(roots):
    run, _, exp_root = roots
    # a re-issued run of its own (this test runs alone too): its config.json holds config_from and overrides,
    # recorded fields that the evaluation ignores
    run("run_fine_tune.py", "--config", str(exp_root / "orig_bert_qqp" / "config.json"), "--experiment", "evalsrc")
    assert config(exp_root, "evalsrc_bert_qqp")["overrides"] == {"experiment": "evalsrc"}
    run("run_fine_tune_eval.py", "--config", str(exp_root / "evalsrc_bert_qqp" / "config.json"), "--dataset", "dev")
    table = json.loads((exp_root / "evalsrc_bert_qqp" / "eval-dev.json").read_text())
    assert [r["ckpt"] for r in table["rows"]] == [2, 4] and table["num_rows"] == 40  # the run's max_examples: not taken


BAD = {  # (change to the teacher's config.json, the message after "error: --config <file>: ")
    "bad_json": (None, "not valid JSON (line 1: Expecting ',' delimiter)"),
    "unknown_field": (
        {"colour": "blue"},
        'unknown field "colour" (no script has a flag --colour, and no run records such a field)',
    ),
    "wrong_type": ({"lr": "fast"}, 'field "lr": --lr takes a number, got "fast"'),
    "list_for_int": ({"total_step": [4]}, 'field "total_step": --total_step takes an integer, got [4]'),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_config_is_one_line_and_writes_nothing(roots, tmp_path, tiny_bert, case):
    run, data_root, exp_root = roots
    change, message = BAD[case]
    path = tmp_path / f"{case}.json"
    if change is None:
        path.write_text('{"experiment": "bad" "task": "qqp"}')
    else:
        path.write_text(json.dumps({**config(exp_root, "orig_bert_qqp"), "ptrain_ver": str(tiny_bert), **change}))
    fresh = tmp_path / "exp"
    proc = run_in_process(
        "run_fine_tune.py",
        "--config",
        str(path),
        "--experiment",
        "bad",
        data_root=data_root,
        exp_root=fresh,
        check=False,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == f"error: --config {path}: {message}\n"
    assert not fresh.exists() and not (exp_root / "bad_bert_qqp").exists()


def _recorded_names() -> set[str]:
    """Every field name the planners add to ``flags.record()`` and every ``Method.record()`` key, read from the
    source: ``dict(<...>.record() or record, name=...)``, ``_record(flags, task, name=...)`` (the planners'),
    ``record["name"] = ...``, ``def record(): return {...}``."""
    names: set[str] = set()
    for path in (
        *(REPO / "fine_tune" / "plan").glob("*.py"),
        *(REPO / "fine_tune" / "run").glob("*.py"),
        *(REPO / "fine_tune" / "methods").glob("*.py"),
    ):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "_record":
                names |= {k.arg for k in node.keywords if k.arg}
            elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "dict" and node.args:
                first = node.args[0]
                if (isinstance(first, ast.Name) and first.id == "record") or (
                    isinstance(first, ast.Call) and getattr(first.func, "attr", None) == "record"
                ):
                    names |= {k.arg for k in node.keywords if k.arg}
            elif isinstance(node, ast.Assign):
                for t in node.targets:
                    if (
                        isinstance(t, ast.Subscript)
                        and getattr(t.value, "id", None) == "record"
                        and isinstance(t.slice, ast.Constant)
                    ):
                        names.add(t.slice.value)
            elif isinstance(node, ast.FunctionDef) and node.name == "record":
                for ret in ast.walk(node):
                    if isinstance(ret, ast.Return) and ret.value is not None:
                        for d in ast.walk(ret.value):
                            if isinstance(d, ast.Dict):
                                names |= {k.value for k in d.keys if isinstance(k, ast.Constant)}
    return names


def test_every_recorded_field_is_known_to_config():
    """A field a run records is a flag or a known recorded field, so its config.json re-issues (else: 'unknown
    field')."""
    from fine_tune import cli
    from fine_tune import config as cfg

    names = _recorded_names()
    assert {
        "teacher_label_order",
        "hidden_mapping",
        "tinybert_layers",
        "gate_no_decay",
        "task_definition",
        "provenance",
        "logits_split",
    } <= names  # the scan sees the planners' and the methods' records
    flags = {f.name for g in cli._all_flag_groups() for f in dataclasses.fields(g)}
    assert names - flags - cfg.recorded_fields() == set()
