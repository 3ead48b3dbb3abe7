"""What ``config.json`` records besides the flags: command line, git commit, package versions, device,
and the sha256 of every data file used."""

from __future__ import annotations

import platform
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from .experiment import REPO_ROOT

PACKAGES = ("torch", "transformers", "tokenizers", "numpy", "scikit-learn", "tensorboard", "tqdm")


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        if out.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def collect(device: torch.device, data_files: dict[str, str], argv: list[str] | None = None) -> dict[str, Any]:
    argv = sys.argv if argv is None else argv
    return {
        "command": shlex.join([Path(sys.executable).name] + list(argv)),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "packages": package_versions(),
        "device": device_description(device),
        "processes": _world_size(),
        "data_files": data_files,
    }


def _world_size() -> int:
    """Data-parallel processes of this run (torchrun's WORLD_SIZE; 1 for a plain run)."""
    from .engine.distributed import world

    return world().size
