"""Which files a command may write at the paths it is given: the ones it owns.

A command that writes files where a user points it (``results_table.py``'s table and the files beside it,
``make_submission.py``'s zip, ``generate_test_prediction.py``'s submission file) owns a path that does not exist
yet, or a file that the same command wrote there before and nobody changed since. Every other existing file is
refused before the first write, all of the command's paths at once, with one line naming the file and saying that
``--overwrite`` replaces it; so are a path that is a folder and a path under a regular file.

How a command knows a file is its own: each folder such a command writes into holds :data:`OWNERS_FILE`, a record
of every file written there (its name, the command that wrote it, its sha256 as written), updated after the files
are written. A file the record does not name, names as another command's, or whose content differs from the
recorded sha256 (edited, or replaced by someone else) is not the command's own. An existing
:data:`OWNERS_FILE` that is not such a record (not JSON, or not of its shape) is a file the toolkit did not write:
refused like any other, and replaced (by a new record) only with ``--overwrite``. Two commands writing one folder at
the same moment may drop one another's entries; the file is then refused once, and ``--overwrite`` takes it back.

A command writing several files (``results_table.py``: the table, its CSV and JSON) replaces them as one
(:func:`write_outputs`): the record first names, for each file, both the sha256 it is about to write and the one it
replaces, then the files are written, then the record names the new ones only. A kill anywhere in between leaves
each file in its old or new version, both the command's own, so the re-run replaces them without ``--overwrite``;
the killed writer's temporaries (``.tmp-<name>.<host>-<pid>.*``) are removed by the next write of the same files
(fine_tune/io_utils.py).

Where a flag names the output (``--out``), the name is checked first (:func:`out_file`, :func:`out_folder`): not
empty, a file where the command writes a file (a name ending in ``/``, or ``.``, ``..``, ``/``, names a folder and
is refused), and no part of it, nor of the files written beside it, longer than :data:`NAME_MAX` bytes.

Folders written whole carry their own mark instead: an export holds ``export.json``
(fine_tune/export.py), a logits data set ``meta.json`` (fine_tune/tasks/logits.py), an experiment ``config.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .errors import UserError
from .io_utils import NAME_MAX, atomic_write, atomic_write_json, check_writable, nearest_existing, sha256_file, writable

OWNERS_FILE = ".fine_tune-outputs.json"


def _record(folder: Path) -> dict[str, Any] | None:
    """The record of ``folder``: file name -> {"by": command, "sha256": ..., ["previous_sha256": ...]}; empty when
    there is none; None when :data:`OWNERS_FILE` there is not such a record (not JSON, another shape, a link)."""
    path = Path(folder) / OWNERS_FILE
    if not (path.exists() or path.is_symlink()):
        return {}
    if path.is_symlink() or not path.is_file():
        return None
    try:
        files = json.loads(path.read_text(encoding="utf-8")).get("files")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(files, dict) or not all(isinstance(v, dict) for v in files.values()):
        return None
    return files


def _owners(folder: Path) -> dict[str, Any]:
    """The record of ``folder``; empty when absent or not a record (nothing is owned: the safe side)."""
    return _record(folder) or {}


def written_by(path: Path, command: str) -> bool:
    """Whether the file ``path`` is the one ``command`` last wrote there, unchanged since (or, while a replacement
    of :func:`write_outputs` is under way or was killed, the one it replaces)."""
    path = Path(path)
    entry = _owners(path.parent).get(path.name)
    if not (isinstance(entry, dict) and entry.get("by") == command) or path.is_symlink() or not path.is_file():
        return False
    try:
        digest = sha256_file(path)
    except OSError:
        return False
    return digest in (entry.get("sha256"), entry.get("previous_sha256")) and digest is not None


def _too_long(path: Path) -> tuple[str, int] | None:
    """The first part of ``path`` longer than :data:`NAME_MAX` bytes, and its length; None when none is."""
    for part in Path(path).parts:
        size = len(part.encode("utf-8", "surrogateescape"))
        if size > NAME_MAX:
            return part, size
    return None


def check_name_length(path: Path, flag: str, given: Path | str) -> None:
    """Refuse a ``path`` (``given`` with ``flag``, or a file written beside it) with a part longer than
    :data:`NAME_MAX` bytes, before anything is written."""
    long = _too_long(path)
    if long:
        what = "a name" if long[0] in Path(given).parts else "writes beside it a file name"
        raise UserError(
            f"{flag} {given}: {what} of {long[1]} bytes ({long[0][:24]}…); file systems take at most "
            f"{NAME_MAX}: choose a shorter name"
        )


def out_file(given: str | None, flag: str, default: Path) -> Path:
    """The file a command writes where ``flag`` names it (``default`` when not given). Refused in one line: an empty
    name, a name of a folder (ending in ``/``, or ``.``, ``..``, ``/``: ``flag`` names a file, not the folder to
    write it in), a part longer than :data:`NAME_MAX` bytes."""
    if given is None:
        return Path(default)
    if given == "":
        raise UserError(f"{flag} '': an empty name; name a file such as {Path(default).name}")
    path = Path(given)
    if given.endswith(("/", os.sep)) or path.name in ("", ".", ".."):
        example = os.path.join(given, Path(default).name)
        raise UserError(f"{flag} {given}: a folder, not a file; name a file such as {example}")
    check_name_length(path, flag, given)
    return path


def out_folder(given: str | None, flag: str) -> Path | None:
    """The folder a command writes whole where ``flag`` names it (None when not given: the command's default).
    Refused in one line: an empty name, a part longer than :data:`NAME_MAX` bytes."""
    if given is None:
        return None
    if given == "":
        raise UserError(f"{flag} '': an empty name; name a folder")
    check_name_length(Path(given), flag, given)
    return Path(given)


def check_outputs(
    paths: Iterable[Path], command: str, overwrite: bool, flag: str | None = None, given: Path | None = None
) -> None:
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
        if flag:
            assert given is not None  # paths is not empty here: given defaults to its first
            check_name_length(path, flag, given)
        if path.name == OWNERS_FILE:  # the record itself: an output of that name would replace it (and lose it)
            refuse(path, "is the name of the record of the files written in its folder; name another file")
        if path.is_dir():
            refuse(path, "is a folder, not a file; name a file")
        if flag:
            check_writable(path.parent, flag, root=given)
        elif not writable(path.parent):
            raise UserError(f"{path}: its folder {nearest_existing(path.parent)} is not writable")
    for folder in dict.fromkeys(p.parent for p in paths):
        record = folder / OWNERS_FILE
        if record.is_dir() and not record.is_symlink():
            refuse(record, "is a folder, not the toolkit's record of the files written there; remove or rename it")
        if not overwrite and _record(folder) is None:
            refuse(
                record,
                "exists and is not the toolkit's record of the files written there (a file of someone "
                "else's?); pass --overwrite to replace it",
            )
    if overwrite:
        return
    for path in paths:
        if (path.exists() or path.is_symlink()) and not written_by(path, command):
            refuse(
                path, f"exists and was not written by {command} (or was changed since); pass --overwrite to replace it"
            )


def _update_record(entries: Mapping[Path, dict[str, Any]], command: str) -> None:
    """Name each path of ``entries`` in its folder's :data:`OWNERS_FILE` as ``command``'s, with the entry's
    digests (a record that is not one, refused by :func:`check_outputs` unless --overwrite, is replaced)."""
    by_folder: dict[Path, dict[str, dict[str, Any]]] = {}
    for path, entry in entries.items():
        by_folder.setdefault(Path(path).parent, {})[Path(path).name] = {"by": command, **entry}
    for folder, named in by_folder.items():
        files = dict(_owners(folder))
        files.update(named)
        atomic_write_json(
            folder / OWNERS_FILE,
            {
                "note": "files written here by the fine_tune toolkit (fine_tune/outputs.py); a command replaces only its "
                "own, unchanged files without --overwrite",
                "files": files,
            },
        )


def record_outputs(paths: Iterable[Path], command: str) -> None:
    """After ``command`` wrote ``paths``: record them as its own in their folders' :data:`OWNERS_FILE`."""
    _update_record({Path(p): {"sha256": sha256_file(p)} for p in paths}, command)


def write_outputs(contents: Mapping[Path, str | bytes], command: str) -> None:
    """Write ``contents`` (path -> text or bytes), checked by :func:`check_outputs`, as one replacement a kill
    cannot block: the record first accepts each file's new sha256 and the one it replaces, then each file is
    written atomically, then the record names the new ones only. A re-run after a kill finds every file in a
    version the record accepts as ``command``'s own."""
    data = {Path(p): c.encode("utf-8") if isinstance(c, str) else bytes(c) for p, c in contents.items()}
    new = {p: hashlib.sha256(b).hexdigest() for p, b in data.items()}
    _update_record(
        {p: {"sha256": new[p], "previous_sha256": sha256_file(p) if p.is_file() else None} for p in data}, command
    )
    for path, content in data.items():
        with atomic_write(path) as f:
            f.write(content)
    _update_record({p: {"sha256": new[p]} for p in data}, command)


def check_folder_output(folder: Path, mark: str, what: str, flag: str, overwrite: bool) -> None:
    """Refuse, before anything is written, an output folder written whole (an export: ``mark`` export.json) that
    the command may not write: a path under a regular file or in a folder it cannot write, anything existing there
    that is not ``what`` (holding ``mark``), and ``what`` itself unless ``overwrite``."""
    folder = Path(folder)
    check_name_length(folder, flag, folder)
    check_writable(folder.parent, flag, root=folder)
    if not (folder.exists() or folder.is_symlink()):
        return
    if folder.is_symlink() or not (folder.is_dir() and (folder / mark).is_file()):
        raise UserError(f"{flag} {folder} exists and is not {what}; choose another folder")
    if not overwrite:
        raise UserError(f"{flag} {folder} already holds {what}; pass --overwrite to replace it")
