"""``config.json``: save/load, and the guard that protects an existing experiment folder from a run with a
different configuration. The record is every flag of the run (``fine_tune.settings.Flags.record``) plus the values
resolved on the way (from the teacher or the logits data set) and what the method adds (``Method.record``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import UserError
from .io_utils import atomic_write_json, read_json_object

# Fields that may differ between two runs of the same experiment (where it runs, not what it computes).
# config_from and overrides: the config.json a run was re-issued from with --config and the flags given on its
# command line that differ from it (fine_tune/cli.py); only a run started with --config records them.
RERUN_FIELDS = ("config_from", "overrides")
RUNTIME_FIELDS = frozenset(
    {
        "device_id",
        "num_gpu",
        "tdevice_id",
        "gate_device_id",
        "data_root",
        "exp_root",
        "overwrite",
        "provenance",
        "amp_dtype_resolved",
        "ddp_timeout",
        "save_total_limit",
        "eval_dataset",
        "eval_step",
        "eval_batch_size",
        *RERUN_FIELDS,
        "report_to",
    }
)  # --report_to: where the run is tracked, not what it computes

# Flags added after experiments already existed, with the value that means "as before": an older config.json
# without the field matches a new run that leaves it at that value (so older runs still resume).
ADDED_FIELDS: dict[str, Any] = {
    "init_embeddings": False,
    "group_by_length": False,
    "padding_free": "auto",
    "compile": False,
    "student_ptrain_ver": None,
    "teacher_hf": None,
    "teacher_label_map": None,
    "teacher_label_order": None,
    "early_stop_patience": None,
    "eval_dataset": None,
    "eval_step": None,
    "eval_batch_size": 128,
    "deterministic": False,
    "gradient_checkpointing": False,
    "ddp_timeout": 1800,  # a runtime field too: never a different config
    # issue 32 (train): the schedule in epochs / warmup share, the metric for "best"
    "num_epochs": None,
    "warmup_ratio": None,
    "metric_for_best": None,
    # issue 32 (tracking): a runtime field too; as config.json holds it (a list)
    "report_to": ["tensorboard"],
}


def as_before(old: dict[str, Any] | None, record: dict[str, Any]) -> dict[str, Any]:
    """The record a resumed run writes: a field added since the run started (ADDED_FIELDS) that holds its "as
    before" value stays out of the run's config.json, which keeps the fields it started with."""
    if old is None:
        return record
    return {k: v for k, v in record.items() if not (k in ADDED_FIELDS and k not in old and v == ADDED_FIELDS[k])}


# Fields a fidelity fix added, with the rule a run started before the fix used: such a run (its config.json
# lacks the field) resumes and finishes with its old rule, and its config.json keeps saying so by the field's
# absence; new runs record the new rule (doc/methods.md, "Fidelity fixes").
LEGACY_FIELDS: dict[str, Any] = {
    "gate_no_decay": ["bias", "LayerNorm.weight"],  # LAD gates: their layernorm.weight was decayed
    "pkd_cls_reduction": "sum",  # PKD normalized_cls: summed over layers and hidden dimensions
    # issue 30: MiniLM (E)
    "minilm_average": "token",  # MiniLM / MiniLMv2 relation KLs: averaged over the batch's real tokens
    # issue 30: TinyBERT fit_dense (B)
    "tinybert_fit_dense": "when_widths_differ",  # TinyBERT's W_h: none at equal widths, else from N(0, 0.02)
    # issue 30: TinyBERT (A)
    "tinybert_soft_reduction": "batchmean",  # prediction stage: soft CE summed over the classes, mean over the batch
    "tinybert_regression_target": "teacher",  # prediction stage, regression: MSE to the teacher's score
    "tinybert_intermediate_schedule": "linear",  # intermediate stage: linear warmup/decay (not constant)
    "tinybert_incomplete_batches": "train",  # each epoch's short last micro-batch trained
}


# Fields config.json holds besides the flags: what a workflow resolves on the way (from the teacher, the logits
# data set, a task of your own: plan/training.py) and what a method adds (Method.record()). --config
# takes none of them but a script's own flag of that name (ptrain_ver): a re-issued run resolves them again;
# tests/test_config_rerun.py checks that runs record no others.
RESOLVED_FIELDS = frozenset(
    {
        "task_definition",
        "ptrain_ver",
        "teacher_experiment",
        "teacher_checkpoint",
        "logits_split",
        "method",
        "teacher_layers",
        "teacher_label_order",
        "hidden_mapping",
        "gate_no_decay",
        "pkd_cls_reduction",
        "tinybert_layers",
        # issue 30: MiniLM (E)
        "minilm_average",
        # issue 33: a recipe's several teachers as resolved (checkpoints, layers, weights)
        "teachers",
    }
)


def recorded_fields() -> frozenset[str]:
    """Every field a config.json may hold that is not a flag: resolved and method fields, runtime fields
    (provenance, config_from, overrides), added and fidelity-fix fields."""
    return RESOLVED_FIELDS | RUNTIME_FIELDS | frozenset(ADDED_FIELDS) | frozenset(LEGACY_FIELDS)


def check_max_seq_len(max_seq_len: int, max_positions: int, source: str) -> None:
    if max_seq_len > max_positions:
        raise UserError(f"--max_seq_len {max_seq_len} exceeds the {max_positions} positions of {source}")


def check_room_for_text(max_seq_len: int, tokenizer: Any) -> None:
    """``--max_seq_len`` must leave room for at least one token of each text of a pair beside the special tokens
    the tokenizer adds ([CLS] a [SEP] b [SEP]: 3 for BERT)."""
    need = tokenizer.num_special_tokens_to_add(pair=True) + 2
    if max_seq_len < need:
        raise UserError(
            f"--max_seq_len {max_seq_len} leaves no room for the text: the tokenizer adds "
            f"{need - 2} special tokens to a pair; use at least {need}"
        )


def load_config(path: Path, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """A config.json: a JSON object holding at least the ``required`` fields."""
    config = read_json_object(path)
    missing = [k for k in required if k not in config]
    if missing:
        raise UserError(f"{path}: missing field{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    return config


def legacy_values(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The fidelity-fix fields ``new`` records and the older run ``old`` lacks, with the old rule's value."""
    return {k: v for k, v in LEGACY_FIELDS.items() if k in new and k not in old}


def changed_fields(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The fields of two runs' records that make them different runs (runtime fields aside; an added flag
    missing from an older record counts as its "as before" value, a fidelity-fix field as the old rule)."""
    legacy = legacy_values(old, new)
    keys = (set(old) | set(new)) - RUNTIME_FIELDS - set(legacy)

    def same(k: str) -> bool:
        if k in ADDED_FIELDS and (k not in old or k not in new):
            return old.get(k, ADDED_FIELDS[k]) == new.get(k, ADDED_FIELDS[k])
        return old.get(k) == new.get(k)

    return sorted(k for k in keys if not same(k))


def guard_experiment(config_path: Path, record: dict[str, Any], overwrite: bool) -> dict[str, Any] | None:
    """Refuse to start over an experiment whose config differs (device fields aside), unless --overwrite.
    Returns the existing config (or None when the folder is new)."""
    if not config_path.is_file():
        return None
    old = load_config(config_path)
    diff = changed_fields(old, record)
    if diff and not overwrite:
        shown = ", ".join(f"{k} ({old.get(k)!r} -> {record.get(k)!r})" for k in diff[:6])
        more = f" and {len(diff) - 6} more" if len(diff) > 6 else ""
        raise UserError(
            f"{config_path.parent} holds a run with a different config: {shown}{more}; "
            f"use another --experiment or pass --overwrite"
        )
    return old


def config_digest(config: dict[str, Any]) -> str:
    """The sha256 of the fields of a config.json that make its run (every field but the runtime ones, which a
    resume may change) and of the inputs it recorded (``provenance.data_files``: each file's name and sha256, not
    its folder, which a resume from moved roots changes), as canonical JSON: each resume state records the one of
    the config.json its run wrote, so a resume notices a config.json edited by hand since, its recorded inputs
    cleared or changed included (fine_tune/run/start.py)."""
    import hashlib
    import json

    fields = {k: v for k, v in config.items() if k not in RUNTIME_FIELDS}
    provenance = config.get("provenance")
    recorded = provenance.get("data_files") if isinstance(provenance, dict) else None
    inputs = (
        sorted([Path(str(path)).name, digest] for path, digest in recorded.items())
        if isinstance(recorded, dict)
        else recorded
    )
    return hashlib.sha256(
        json.dumps([fields, inputs], sort_keys=True, ensure_ascii=True, default=str).encode()
    ).hexdigest()


def save_config(path: Path, record: dict[str, Any]) -> None:
    atomic_write_json(path, record)
