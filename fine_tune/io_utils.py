"""Atomic file writes and content hashes.

Every file the toolkit writes (checkpoints, configs, logits, caches, tables, submissions) goes through
:func:`atomic_write` : written to a temporary file in the target folder, flushed, fsync'ed and renamed over
the target, so a kill during a save never leaves a truncated file that anything would pick up.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, IO, Iterator

TMP_PREFIX = ".tmp-"


@contextlib.contextmanager
def atomic_write(path: Path, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary sibling of ``path``; on success it replaces ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX + path.name + ".", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def atomic_torch_save(obj: Any, path: Path) -> None:
    import torch

    with atomic_write(path, "wb") as f:
        torch.save(obj, f)


def atomic_save_with(path: Path, save: Callable[[Path], None]) -> None:
    """For writers that need a path (e.g. ``tokenizer.save_pretrained``): write to a temp dir, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX + path.name + ".", dir=path.parent))
    try:
        save(tmp)
        if path.exists():
            import shutil

            old = Path(tempfile.mkdtemp(prefix=TMP_PREFIX + "old.", dir=path.parent))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        raise


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def nearest_existing(path: Path) -> Path:
    """``path`` itself, or its nearest ancestor that exists (where a ``mkdir -p`` of ``path`` would start)."""
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def writable(folder: Path) -> bool:
    """Whether ``folder`` exists as a writable folder or could be created (its nearest existing ancestor is one)."""
    probe = nearest_existing(folder)
    return probe.is_dir() and os.access(probe, os.W_OK | os.X_OK)


def check_writable(folder: Path, flag: str, root: Path | None = None) -> None:
    """Refuse, before anything is written, a ``folder`` that cannot be created or written: its nearest existing
    ancestor must be a writable folder. The one-line message names ``flag`` and ``root`` (default: ``folder``)."""
    from .errors import UserError

    root = Path(folder if root is None else root)
    probe = nearest_existing(folder)
    if not probe.is_dir():
        raise UserError(f"{flag} {root}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        where = "folder is not writable" if probe == root else f"folder {probe} is not writable"
        raise UserError(f"{flag} {root}: {where}")
