"""Run configuration: validation of flag values (one-line errors), ``config.json`` save/load, and the
guard that protects an existing experiment folder from a run with a different configuration."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .errors import UserError
from .io_utils import atomic_write_json

# Fields that may differ between two runs of the same experiment (where it runs, not what it computes).
RUNTIME_FIELDS = frozenset({"device_id", "num_gpu", "tdevice_id", "gate_device_id", "data_root", "exp_root",
                            "overwrite", "provenance", "amp_dtype_resolved",
                            "save_total_limit"})


def _positive(args: argparse.Namespace, *names: str) -> None:
    for name in names:
        value = getattr(args, name, None)
        if value is not None and value <= 0:
            raise UserError(f"--{name} must be positive, got {value}")


def validate_training(args: argparse.Namespace) -> None:
    _positive(args, "total_step", "batch_size", "accum_step", "ckpt_step", "log_step", "max_seq_len", "lr",
              "max_examples", "num_class", "save_total_limit")
    if args.warmup_step < 0:
        raise UserError(f"--warmup_step must be >= 0, got {args.warmup_step}")
    if args.warmup_step > args.total_step:
        raise UserError(f"--warmup_step {args.warmup_step} exceeds --total_step {args.total_step}")
    if args.batch_size % args.accum_step:
        raise UserError(f"--batch_size {args.batch_size} is not divisible by --accum_step {args.accum_step}")
    if not 0.0 <= args.dropout < 1.0:
        raise UserError(f"--dropout must lie in [0, 1), got {args.dropout}")
    if args.num_class < 2:
        raise UserError(f"--num_class must be at least 2, got {args.num_class}")
    if args.max_norm <= 0:
        raise UserError(f"--max_norm must be positive, got {args.max_norm}")


def validate_student(args: argparse.Namespace) -> None:
    _positive(args, "d_model", "d_ff", "num_attention_heads", "num_hidden_layers", "type_vocab_size", "d_emb")
    if args.d_model % args.num_attention_heads:
        raise UserError(f"--d_model {args.d_model} is not divisible by --num_attention_heads {args.num_attention_heads}")
    if (args.init_start is None) != (args.init_end is None):
        raise UserError("--init_start and --init_end go together")


def check_max_seq_len(max_seq_len: int, max_positions: int, source: str) -> None:
    if max_seq_len > max_positions:
        raise UserError(f"--max_seq_len {max_seq_len} exceeds the {max_positions} positions of {source}")


def to_record(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in vars(args).items()}


def load_config(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise UserError(f"{path} not found") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None


# Flags added after experiments already existed, with the value that means "as before": an older config.json
# without the field matches a new run that leaves it at that value (so older runs still resume).
ADDED_FIELDS: dict[str, Any] = {"init_embeddings": False, "group_by_length": False, "padding_free": "auto",
                                "compile": False}


def differing_fields(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    keys = (set(old) | set(new)) - RUNTIME_FIELDS

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
    diff = differing_fields(old, record)
    if diff and not overwrite:
        shown = ", ".join(f"{k} ({old.get(k)!r} -> {record.get(k)!r})" for k in diff[:6])
        more = f" and {len(diff) - 6} more" if len(diff) > 6 else ""
        raise UserError(f"{config_path.parent} holds a run with a different config: {shown}{more}; "
                        f"use another --experiment or pass --overwrite")
    return old


def save_config(path: Path, record: dict[str, Any]) -> None:
    atomic_write_json(path, record)
