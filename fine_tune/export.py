"""Export an experiment checkpoint as a Hugging Face model folder (``--format hf``, the default) or an ONNX model
checked against PyTorch (``--format onnx [--quantize int8]``: fine_tune/onnx_export.py).

The folder holds ``config.json``, the weights (``model.safetensors``), the tokenizer (with ``model_max_length``
set to the experiment's ``max_seq_len``, so ``tokenizer(text, text_pair, truncation=True)`` cuts pairs exactly
as the toolkit does) and ``export.json`` (which experiment and checkpoint, chosen by which rule). It loads with
``AutoModelForSequenceClassification.from_pretrained`` and ``AutoTokenizer.from_pretrained``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, cast

from .engine.checkpoint import load_checkpoint_into
from .evaluate import _checkpoint, load_split, open_experiment
from .io_utils import atomic_save_with, sha256_file
from .models.classifier import set_task_labels
from .outputs import check_folder_output

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from .plan.types import ExportPlan


def run_export(plan: ExportPlan) -> Path:
    """``export_model.py``: the plan (fine_tune/plan/inference.py) has checked the flags, the experiment folder's
    name and, for ONNX, the packages and the split the export is checked on."""
    onnx = plan.format == "onnx"
    le = open_experiment(plan.target)
    step, label = _checkpoint(le, plan.target, plan.checkpoint)
    ckpt_path = le.exp.checkpoint_path(step)
    default = f"onnx-model-{step}" if onnx else f"hf-model-{step}"
    out = plan.out if plan.out is not None else le.exp.path / default
    check_folder_output(out, "export.json", "an export", "--out", plan.overwrite)  # a given --out: also in the plan
    load_checkpoint_into(le.model, ckpt_path)
    features = None
    if onnx:  # the rows the ONNX model is checked on (a missing file is refused before anything is written)
        assert plan.check_split is not None  # the plan names it for every ONNX export (plan/inference.py)
        _, _, features = load_split(le, plan.check_split, plan.max_examples)
    # LoadedExperiment types them loosely (a Module, an object): they are the Hugging Face model open_experiment
    # built from the experiment's config (models/classifier.build_from_config) and its tokenizer
    model = cast("PreTrainedModel", le.model.eval())
    tokenizer = cast("PreTrainedTokenizerBase", le.tokenizer)
    tokenizer.model_max_length = le.config["max_seq_len"]
    set_task_labels(model.config, le.task.label_names)
    record = {
        "experiment": le.exp.name,
        "checkpoint": f"model-{step}.pt",
        "selected": label,
        "checkpoint_sha256": sha256_file(ckpt_path),
        "task": le.task.name,
        "label_names": list(le.task.label_names),
        "max_seq_len": le.config["max_seq_len"],
        "inputs": "tokenizer(text, text_pair, truncation=True): BoolQ text = passage, text_pair = question; "
        "QQP text = question1, text_pair = question2",
    }
    if onnx:
        from .onnx_export import export_onnx

        assert features is not None  # loaded above for an ONNX export
        export_onnx(le, step, label, out, record, features, plan.quantize)
        return out

    def save(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "export.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")

    atomic_save_with(out, save)
    print(f"exported {label} of {le.exp.name} to {out}")
    return out
