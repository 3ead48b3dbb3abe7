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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

TMP_PREFIX = ".tmp-"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def honour_umask(path: str | Path, folder: bool = False) -> None:
    """Give a temporary file (0600 from ``mkstemp``) or folder (0700 from ``mkdtemp``) the mode a plain
    ``open``/``mkdir`` would have under the user's umask, so shared group folders stay shared."""
    os.chmod(path, (0o777 if folder else 0o666) & ~_umask())


NAME_MAX = 255  # bytes of one file or folder name (Linux, macOS and Windows file systems)
_TMP_NAME_MAX = 200  # of the name part of a temporary's name: room for its prefix, writer tag, random part, ".old"


def tmp_name_part(name: str) -> str:
    """The part of a temporary's name (``.tmp-<part>.<host>-<pid>.<random>``) that names its target ``name``: the
    name itself, or for a name too long to leave room for the rest within :data:`NAME_MAX` bytes, its first bytes
    and a hash of the whole name (still one part per name)."""
    raw = name.encode("utf-8", "surrogateescape")
    if len(raw) <= _TMP_NAME_MAX:
        return name
    head = raw[: _TMP_NAME_MAX - 17].decode("utf-8", "ignore")
    return f"{head}~{hashlib.sha256(raw).hexdigest()[:16]}"


def tmp_prefix(path: Path) -> str:
    """``.tmp-<name part>.<host>-<pid>.``: the start of the name of every temporary this process writes for
    ``path`` (:func:`atomic_write`, :func:`atomic_save_with`), which tells a dead writer's leftovers from a live
    one's (:func:`remove_dead_writers_temporaries`)."""
    return f"{TMP_PREFIX}{tmp_name_part(Path(path).name)}.{_writer_tag()}."


@contextlib.contextmanager
def atomic_write(path: Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` (``.tmp-<name>.<host>-<pid>.<random>``); on success it replaces ``path``
    atomically. The temporaries of ``path`` that killed writers left are removed first
    (:func:`remove_dead_writers_temporaries`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_writers_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=tmp_prefix(path), dir=path.parent)
    try:
        honour_umask(tmp)
        with os.fdopen(fd, mode) if "b" in mode else os.fdopen(fd, mode, encoding="utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise_write_failure(path, e)
        raise


def _errno_of(error: BaseException) -> int | None:
    """The operating-system error number of a failed write: an OSError's, or the one a Rust library (safetensors'
    ``SafetensorError: ... I/O error: File too large (os error 27)``) names in its message."""
    import re

    if isinstance(error, OSError):
        return error.errno
    found = re.search(r"\(os error (\d+)\)", str(error))
    return int(found.group(1)) if found else None


def write_failure(path: Path, error: BaseException) -> str | None:
    """Why a write failed when the machine, not the code, is at fault (a full disk, a quota, the file-size limit),
    in words; None for any other error. torch.save reports such failures as a RuntimeError of its zip writer,
    safetensors as a SafetensorError naming the OS error number."""
    import errno
    import resource
    import shutil

    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    code = _errno_of(error)
    if code == errno.EFBIG and limit != resource.RLIM_INFINITY:
        return f"the file-size limit (ulimit -f) of {limit} bytes"
    if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return getattr(error, "strerror", None) or os.strerror(code)
    if isinstance(error, RuntimeError) and any(
        s in str(error) for s in ("inline_container", "PytorchStreamWriter", "file write failed")
    ):
        if limit != resource.RLIM_INFINITY:
            return f"the file-size limit (ulimit -f) of {limit} bytes"
        with contextlib.suppress(OSError):
            if shutil.disk_usage(Path(path).parent).free < 64 << 20:
                return "no space left on device"
        return f"the write failed ({(str(error).strip().splitlines() or [''])[0]})"
    return None


def raise_write_failure(path: Path, error: BaseException) -> None:
    """A write that failed for :func:`write_failure`'s reasons becomes one line; other errors are left alone."""
    reason = write_failure(path, error)
    if reason is not None:
        from .errors import UserError

        raise UserError(
            f"could not write {path}: {reason}; nothing was replaced (its previous version and every "
            f"earlier file are intact)"
        ) from None


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def atomic_torch_save(obj: Any, path: Path) -> None:
    import torch

    with atomic_write(path, "wb") as f:
        torch.save(obj, f)


def _writer_tag() -> str:
    """``<host>-<pid>`` of this process (the host as a short hash): what names the temporary folders it writes, so a
    later writer can tell a dead writer's leftovers from a live one's."""
    import socket

    return f"{hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]}-{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process
        return True
    return True


def remove_dead_writers_temporaries(path: Path) -> None:
    """Remove the temporary files and folders of ``path`` (``.tmp-<name>.<host>-<pid>.*``: :func:`atomic_write`,
    :func:`atomic_save_with`) that a writer on this machine left when it was killed (its pid is gone); a live
    writer's, or another machine's, are left alone. A kill between the two renames of a folder's replacement leaves
    ``path`` absent and its previous version in such a folder: it is put back first."""
    import glob

    path = Path(path)
    host = _writer_tag().split("-")[0]
    start = TMP_PREFIX + tmp_name_part(path.name) + "."
    try:
        found = sorted(path.parent.glob(glob.escape(start) + "*"))
    except OSError:
        return
    for leftover in found:
        tag = leftover.name[len(start) :].split(".")[0]
        writer_host, _, pid = tag.partition("-")
        if writer_host != host or not pid.isdigit() or _alive(int(pid)) or leftover.is_symlink():
            continue
        previous = leftover / path.name
        try:
            if leftover.name.endswith(".old") and previous.exists() and not (path.exists() or path.is_symlink()):
                os.replace(previous, path)
            remove_inside(leftover, path.parent)
        except OSError:  # left for a later writer (never the previous version removed before it is back)
            continue


def atomic_save_with(path: Path, save: Callable[[Path], None]) -> None:
    """For writers that need a path (e.g. ``tokenizer.save_pretrained``, an export folder): ``save`` writes into a
    temporary folder beside ``path`` (``.tmp-<name>.<host>-<pid>.<random>``), which then replaces ``path``. Such
    folders of writers that were killed are removed first (:func:`remove_dead_writers_temporaries`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_writers_temporaries(path)
    prefix = tmp_prefix(path)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=path.parent))
    try:
        honour_umask(tmp, folder=True)
        save(tmp)
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=prefix, suffix=".old", dir=path.parent))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            with contextlib.suppress(OSError):  # a leftover is removed by the next writer of this path
                remove_inside(old, path.parent)
        else:
            os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            remove_inside(tmp, path.parent)
        raise_write_failure(path, e)
        raise


def remove_inside(path: Path, root: Path) -> None:
    """Delete the file or folder ``path`` (a symbolic link: the link itself), after checking that it lies inside
    ``root`` (the experiment root, a data root): the one way the toolkit deletes a user's files."""
    import shutil

    path, root = Path(path), Path(root).resolve()
    where = path.parent.resolve() / path.name  # the link itself, not its target
    if root != where.parent and root not in where.parents:
        from .errors import UserError

        raise UserError(f"refusing to delete {path}: it is not inside {root}")
    if where.is_dir() and not where.is_symlink():
        shutil.rmtree(where)
    elif where.exists() or where.is_symlink():
        where.unlink()


def reset_own_folder(path: Path, mark: str, known: tuple[str, ...], flag: str) -> None:
    """Empty the output folder ``path`` of a tool that re-creates it on every run (the demo, check scripts): only a
    folder that tool wrote (holding its ``mark`` file, or nothing but ``known`` names) is deleted, so a mistyped
    ``flag`` never removes a user's folder; then ``path`` is created again, marked."""
    path = Path(path)
    if path.exists() or path.is_symlink():
        names = {p.name for p in path.iterdir()} if path.is_dir() and not path.is_symlink() else None
        if names is None or not (mark in names or names <= set(known)):
            from .errors import UserError

            raise UserError(f"{flag} {path}: exists and was not written by this tool; name a new or empty folder")
        remove_inside(path, path.parent)
    path.mkdir(parents=True)
    (path / mark).write_text(
        "written by the fine_tune toolkit; deleted and re-created on every run\n", encoding="utf-8"
    )


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON file holding an object; anything else is a one-line :class:`UserError` naming the file."""
    from .errors import UserError

    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except FileNotFoundError:
        raise UserError(f"{path} not found") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path}: not a JSON object (a {type(obj).__name__}); not a file written by this toolkit")
    return obj


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
