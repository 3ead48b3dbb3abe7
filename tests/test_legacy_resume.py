"""Experiments interrupted under an OLDER version of the toolkit resume under this one, bit-identically.

tests/data/legacy_runs was made by tests/data/make_legacy_runs.py with the code of the commit its manifest.json
names: per case (fine-tuning, LAD, PKD with ``--pkd_loss normalized_cls``, offline logits KD) a run of 4 steps
SIGKILLed right after its checkpoint 2 was complete, and the final checkpoint (LAD: and gates) of the same
command run without interruption. Here the stopped run's exact command runs again with the current code (the
absolute folder of the old tree is rewritten to this test's copy, as a user re-running the command names the same
folders): it must resume from model-2.pt and end bit-identical to the old code's uninterrupted run. A behaviour
change meant for new runs (e.g. another weight-decay rule for LAD's gates, another reduction of PKD's
normalized_cls loss) must not reach an experiment whose config.json predates it. A fresh run with the same
flags under a new experiment name must still work.

The reference tensors were computed on one CPU thread; the resumed runs use one thread too (OMP_NUM_THREADS=1).
Bit for bit holds on the kind of machine that made them (the manifest's ``machine``: processor, the kernels torch
picks for it, torch; a manifest without it, made before it was recorded, counts as another machine). Another
processor picks other kernels whose float32 sums round differently in the last bit: there each tensor must agree
within ``ULPS`` float32 rounding units of its largest magnitude, plus ``FLOOR``. Measured on an AMD EPYC against
the stored references: at most one unit (1.2e-7 on a weight of 1), and up to 1e-9 on the attention key biases,
which softmax leaves gradient-free in exact arithmetic, so that their values are rounding noise. Both are far
below the smallest behaviour this test tells apart (PKD's fix moves a query weight by 2e-6, LAD's a gate
LayerNorm weight by 2e-4).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from conftest import run_in_process, run_script

from fine_tune.config import ADDED_FIELDS

LEGACY = Path(__file__).resolve().parent / "data" / "legacy_runs"
MANIFEST = json.loads((LEGACY / "manifest.json").read_text(encoding="utf-8"))
CASES = {c["id"]: c for c in MANIFEST["cases"]}
sys.path.insert(0, str(LEGACY.parent))
from make_legacy_runs import machine  # noqa: E402

SAME_MACHINE = MANIFEST.get("machine") == machine()
ULPS = 4  # float32 rounding units allowed on another kind of machine (see the module docstring)
FLOOR = 1e-8  # absolute, for weights that are rounding noise themselves (attention key biases: no gradient exactly)


@pytest.fixture(scope="module")
def legacy(tmp_path_factory) -> Path:
    """A copy of legacy_runs with the recorded absolute prefix rewritten to the copy in every JSON file."""
    root = tmp_path_factory.mktemp("legacy") / "legacy_runs"
    shutil.copytree(LEGACY, root)
    old, new = MANIFEST["prefix"], str(root)
    rewritten = []
    for path in sorted(root.rglob("*.json")):
        if path.name == "manifest.json" and path.parent == root:
            continue
        text = path.read_text(encoding="utf-8")
        if old in text:
            path.write_text(text.replace(old, new), encoding="utf-8")
            rewritten.append(str(path.relative_to(root)))
    assert rewritten == sorted(MANIFEST["prefix_files"])
    return root


def loaded(path: Path) -> dict:
    return torch.load(path, weights_only=True, map_location="cpu")


def assert_bitwise_equal(a, b, what: str) -> None:
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{what}: keys {sorted(a)} vs {sorted(b)}"
        for k in a:
            assert_bitwise_equal(a[k], b[k], f"{what}/{k}")
    elif isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, what
        if SAME_MACHINE or not a.is_floating_point():
            assert torch.equal(a, b), f"{what}: differs from the old code's uninterrupted run"
        else:  # another processor: the last bits of a float32 sum may differ, nothing more
            unit = torch.finfo(a.dtype).eps
            scale = a.abs().max().item() if a.numel() else 0.0
            worst = (a - b).abs().max().item() if a.numel() else 0.0
            assert worst <= ULPS * unit * scale + FLOOR, (
                f"{what}: differs from the old code's uninterrupted run by {worst:.3g}, beyond {ULPS} float32 units"
            )
    else:
        assert a == b, what


# case -> (the field a fidelity fix added, its new value, a file whose weights the fix changes)
FIXED = {
    "lad": ("gate_no_decay", ["bias", "LayerNorm.weight", "layernorm.weight"], "gate-3-4.pt"),
    "pkd": ("pkd_cls_reduction", "mean", "model-4.pt"),
}
KEY = {"lad": "layernorm.weight", "pkd": "bert.encoder.layer.0.attention.self.query.weight"}


@pytest.mark.parametrize("cid", list(CASES))
def test_old_run_resumes_bit_identically(cid, legacy, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    case = CASES[cid]
    data, exp = legacy / MANIFEST["layout"]["data_root"], legacy / MANIFEST["layout"]["exp_root"]
    args = [a.replace(MANIFEST["prefix"], str(legacy)) for a in case["args"]]
    folder = exp / case["experiment_folder"]
    step, total = case["resume_from"], case["total_step"]
    assert (folder / f"resume-{step}.pt").is_file() and not (folder / f"model-{total}.pt").exists()
    old_config = json.loads((folder / "config.json").read_text(encoding="utf-8"))

    resumed = run_script(case["script"], *args, data_root=data, exp_root=exp)  # the same command, the new code
    assert f"resuming from model-{step}.pt" in resumed.stderr, resumed.stderr
    assert (folder / f"model-{total}.pt").is_file(), sorted(p.name for p in folder.iterdir())
    reference = legacy / case["reference"]
    assert case["reference_files"] and sorted(p.name for p in reference.iterdir()) == sorted(case["reference_files"])
    for name in case["reference_files"]:  # model-4.pt, LAD: gate-{i}-4.pt too
        assert (folder / name).is_file(), name
        assert_bitwise_equal(loaded(reference / name), loaded(folder / name), f"{cid}/{name}")

    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    for key, value in old_config.items():  # the flags the experiment started with are kept
        if key != "provenance":
            assert config.get(key) == value, f"{cid}: config.json {key}: {value!r} -> {config.get(key)!r}"

    # the same flags under a new experiment name: a fresh run (today's rules) works
    i = args.index("--experiment")
    fresh = [*args[:i], "--experiment", f"{cid}_fresh", *args[i + 2 :]]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_in_process(case["script"], *fresh, data_root=data, exp_root=exp)
    finally:
        torch.set_num_threads(threads)
    new_folder = exp / case["experiment_folder"].replace("_stopped_", "_fresh_")
    assert (new_folder / f"model-{total}.pt").is_file()
    new_config = json.loads((new_folder / "config.json").read_text(encoding="utf-8"))

    # The fidelity fixes: the resumed run keeps its old rule (its config.json still lacks the new field and the
    # run says so); a new run records the new rule and, with it, trains to other weights. Elsewhere nothing
    # changed: the new run equals the old code's run bit for bit.
    fixed = FIXED.get(cid)
    assert set(config) - {"provenance"} == set(old_config) - {"provenance"}, cid
    # config.json keeps its fields (and a new run adds only the fix's)
    added = {k for k in ADDED_FIELDS if k not in old_config}  # flags added since the fixtures were made
    assert set(new_config) - {"provenance"} - added == set(old_config) - {"provenance"} | (
        {fixed[0]} if fixed else set()
    )
    if fixed is None:
        assert "fidelity fix" not in resumed.stderr
        for name in case["reference_files"]:
            assert_bitwise_equal(loaded(reference / name), loaded(new_folder / name), f"{cid} fresh/{name}")
        return
    field, value, changed_file = fixed
    assert "fidelity fix" in resumed.stderr and field in resumed.stderr, resumed.stderr
    assert new_config[field] == value and field not in config
    assert not torch.equal(*(loaded(folder / changed_file)[KEY[cid]] for folder in (reference, new_folder)))
