"""Start-up (issue 32): a command imports only what it uses.

One fresh interpreter walks the commands from the lightest to the heaviest and reports which of the heavy
packages each stage has loaded (doc/performance.md, "Start-up (issue 32)"):

1. ``--help`` of every entry script whose flags need no method: no torch, no transformers, not even NumPy or
   pydantic (the schema of a task of one's own);
2. ``results_table.py``'s modules (its plan and ``fine_tune.results``): no torch, no transformers;
3. the modules every training, evaluation, prediction and export command imports before it builds a model:
   no exporter (onnx, ONNX Runtime), no plotting (matplotlib), no SciPy, no scikit-learn, no ``datasets`` (nor
   pandas / pyarrow), no tracker (mlflow, wandb), and not transformers' modeling utilities, which pull SciPy's
   optimiser, TorchDynamo and torch.distributed.tensor in (the model a run builds loads them, as Hugging Face's
   Trainer does).
"""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO

HELP_SCRIPTS = (
    "run_fine_tune.py",
    "run_fine_tune_distill.py",
    "run_fine_tune_eval.py",
    "run_fine_tune_gen_logits.py",
    "generate_test_prediction.py",
    "export_model.py",
    "results_table.py",
    "make_submission.py",
    "download_data.py",
)
RESULTS_MODULES = ("fine_tune.plan.inference", "fine_tune.results")
COMMAND_MODULES = (
    "fine_tune.plan.training",
    "fine_tune.run",
    "fine_tune.evaluate",
    "fine_tune.export",
    "fine_tune.submission",
)
TORCH = ("torch", "transformers")
NOT_FOR_HELP = ("numpy", "pydantic")
ON_THEIR_PATHS_ONLY = (
    "onnx",
    "onnxruntime",
    "matplotlib",
    "scipy",
    "sklearn",
    "datasets",
    "pandas",
    "pyarrow",
    "mlflow",
    "wandb",
    "transformers.modeling_utils",
)

PROBE = f"""
import contextlib, importlib, io, json, runpy, sys
sys.path.insert(0, {str(REPO)!r})
watch = {list(TORCH + NOT_FOR_HELP + ON_THEIR_PATHS_ONLY)!r}
stages = {{}}
for script in {list(HELP_SCRIPTS)!r}:
    sys.argv = [script, "--help"]
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            runpy.run_path(script, run_name="__main__")
        except SystemExit:
            pass
stages["help"] = [m for m in watch if m in sys.modules]
for name in {list(RESULTS_MODULES)!r}:
    importlib.import_module(name)
stages["results"] = [m for m in watch if m in sys.modules]
for name in {list(COMMAND_MODULES)!r}:
    importlib.import_module(name)
sys.argv = ["run_pkd_distill.py", "--help"]  # a layer-wise script's flags come with its method (torch)
with contextlib.redirect_stdout(io.StringIO()):
    try:
        runpy.run_path("run_pkd_distill.py", run_name="__main__")
    except SystemExit:
        pass
stages["commands"] = [m for m in watch if m in sys.modules]
print(json.dumps(stages))
"""


def test_each_command_imports_only_what_it_uses():
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=str(REPO), timeout=300)
    assert proc.returncode == 0, proc.stderr
    stages = json.loads(proc.stdout.strip().splitlines()[-1])
    assert stages["help"] == [], f"--help imports {stages['help']}"
    results = [m for m in stages["results"] if m in TORCH + ON_THEIR_PATHS_ONLY]
    assert results == [], f"results_table.py's modules import {results}"
    commands = [m for m in stages["commands"] if m in ON_THEIR_PATHS_ONLY]
    assert commands == [], f"the commands' modules import {commands} before they are used"
    assert set(TORCH) <= set(stages["commands"])  # the probe reached the commands' modules
