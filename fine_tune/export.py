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

from .errors import UserError
from .evaluate import _checkpoint, load_split, open_experiment
from .io_utils import atomic_save_with
from .engine.checkpoint import load_checkpoint_into


def run_export(flags) -> Path:
    onnx = flags.export.format == "onnx"
    le = open_experiment(flags)
    step, label = _checkpoint(le, flags)
    ckpt_path = le.exp.checkpoint_path(step)
    default = f"onnx-model-{step}" if onnx else f"hf-model-{step}"
    out = Path(flags.export.out) if flags.export.out else le.exp.path / default
    if out.exists() and not (out.is_dir() and (out / "export.json").is_file()):
        raise UserError(f"--out {out} exists and is not an export; choose another folder")
    if out.exists() and not flags.paths.overwrite:
        raise UserError(f"--out {out} already holds an export; pass --overwrite to replace it")
    if onnx:
        from .onnx_export import check_packages

        check_packages()
    load_checkpoint_into(le.model, ckpt_path)
    features = None
    if onnx:  # the rows the ONNX model is checked on (a missing file is refused before anything is written)
        split = le.task.dev_split
        if split not in le.task.labelled:
            raise UserError(f"--format onnx checks the export on the {le.task.name} split {split!r}, which has no "
                            f"labels")
        _, _, features = load_split(le, split, flags.paths.max_examples)
    model, tokenizer = le.model.eval(), le.tokenizer
    tokenizer.model_max_length = le.config["max_seq_len"]
    model.config.id2label = {i: name for i, name in enumerate(le.task.label_names)}
    model.config.label2id = {name: i for i, name in enumerate(le.task.label_names)}
    record = {"experiment": le.exp.name, "checkpoint": f"model-{step}.pt", "selected": label,
              "task": flags.experiment.task, "max_seq_len": le.config["max_seq_len"],
              "inputs": "tokenizer(text, text_pair, truncation=True): BoolQ text = passage, text_pair = question; "
                        "QQP text = question1, text_pair = question2"}
    if onnx:
        from .onnx_export import export_onnx

        export_onnx(le, step, label, out, record, features, flags.export.quantize)
        return out

    def save(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "export.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")

    atomic_save_with(out, save)
    print(f"exported {label} of {le.exp.name} to {out}")
    return out
