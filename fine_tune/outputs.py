"""Which files a command may write at the paths it is given: the ones it owns.

A command that writes files where a user points it (``results_table.py``'s table and the files beside it,
``make_submission.py``'s zip, ``generate_test_prediction.py``'s submission file) owns a path that does not exist
yet, or a file that the same command wrote there before and nobody changed since. Every other existing file is
refused before the first write, all of the command's paths at once, with one line naming the file and saying that
``--overwrite`` replaces it; so are a path that is a folder and a path under a regular file.

How a command knows a file is its own: each folder such a command writes into holds :data:`OWNERS_FILE`, a record
of every file written there (its name, the command that wrote it, its sha256 as written), updated after the files
are written. A file the record does not name, names as another command's, or whose content differs from the
recorded sha256 (edited, or replaced by someone else) is not the command's own. A record that cannot be read is an
empty record (nothing is owned: the safe side). Two commands writing one folder at the same moment may drop one
another's entries; the file is then refused once, and ``--overwrite`` takes it back.

Folders written whole carry their own mark instead: an export holds ``export.json``
(fine_tune/export.py), a logits data set ``meta.json`` (fine_tune/tasks/logits.py), an experiment ``config.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from .errors import UserError
from .io_utils import atomic_write_json, check_writable, nearest_existing, sha256_file, writable

OWNERS_FILE = ".fine_tune-outputs.json"


def _owners(folder: Path) -> dict:
    """The record of ``folder``: file name -> {"by": command, "sha256": ...}; empty when absent or unreadable."""
    try:
        files = json.loads((folder / OWNERS_FILE).read_text(encoding="utf-8")).get("files")
    except (OSError, ValueError, AttributeError):
        return {}
    return files if isinstance(files, dict) else {}


def written_by(path: Path, command: str) -> bool:
    """Whether the file ``path`` is the one ``command`` last wrote there, unchanged since."""
    path = Path(path)
    entry = _owners(path.parent).get(path.name)
    if not (isinstance(entry, dict) and entry.get("by") == command) or path.is_symlink() or not path.is_file():
        return False
    try:
        return sha256_file(path) == entry.get("sha256")
    except OSError:
        return False


def check_outputs(paths: Iterable[Path], command: str, overwrite: bool, flag: str | None = None,
                  given: Path | None = None) -> None:
    """Refuse, before anything is written, any of ``paths`` (every file the command will write) that it may not
    write: a folder, a path under a regular file, a folder it cannot write, or an existing file it does not own
    (unless ``overwrite``). ``flag`` and ``given`` name where the paths come from (``--out report.md`` for
    ``report.md`` and the files beside it); without ``flag`` the command chose them."""
    paths = [Path(p) for p in paths]
    given = Path(given) if given is not None else (paths[0] if paths else None)

    def refuse(path: Path, why: str) -> None:
        where = f"{flag} {given}: " if flag else ""
        raise UserError(f"{where}{why}" if flag and path == given else f"{where}{path} {why}")

    for path in paths:
        if path.is_dir():
            refuse(path, "is a folder, not a file; name a file")
        if flag:
            check_writable(path.parent, flag, root=given)
        elif not writable(path.parent):
            raise UserError(f"{path}: its folder {nearest_existing(path.parent)} is not writable")
    if overwrite:
        return
    for path in paths:
        if (path.exists() or path.is_symlink()) and not written_by(path, command):
            refuse(path, f"exists and was not written by {command} (or was changed since); pass --overwrite to "
                         f"replace it")


def record_outputs(paths: Iterable[Path], command: str) -> None:
    """After ``command`` wrote ``paths``: record them as its own in their folders' :data:`OWNERS_FILE`."""
    by_folder: dict[Path, list[Path]] = {}
    for path in map(Path, paths):
        by_folder.setdefault(path.parent, []).append(path)
    for folder, written in by_folder.items():
        files = dict(_owners(folder))
        files.update({p.name: {"by": command, "sha256": sha256_file(p)} for p in written})
        atomic_write_json(folder / OWNERS_FILE, {
            "note": "files written here by the fine_tune toolkit (fine_tune/outputs.py); a command replaces only its "
                    "own, unchanged files without --overwrite",
            "files": files})


def check_folder_output(folder: Path, mark: str, what: str, flag: str, overwrite: bool) -> None:
    """Refuse, before anything is written, an output folder written whole (an export: ``mark`` export.json) that
    the command may not write: a path under a regular file or in a folder it cannot write, anything existing there
    that is not ``what`` (holding ``mark``), and ``what`` itself unless ``overwrite``."""
    folder = Path(folder)
    check_writable(folder.parent, flag, root=folder)
    if not (folder.exists() or folder.is_symlink()):
        return
    if folder.is_symlink() or not (folder.is_dir() and (folder / mark).is_file()):
        raise UserError(f"{flag} {folder} exists and is not {what}; choose another folder")
    if not overwrite:
        raise UserError(f"{flag} {folder} already holds {what}; pass --overwrite to replace it")
