"""One writer per experiment: an exclusive OS lock on the experiment folder for the whole run.

The lock is ``flock`` on the folder's own file descriptor, so it needs no lock file, and the kernel drops it
when the process ends however it ends: a killed run never leaves a stale lock. Beside it the holder writes
``.writer.json`` (pid, host, command, since when) so that a second writer's error names it; that file is only
information, never trusted as the lock. Readers (evaluation, results tables) take no lock and are never blocked.
Under torchrun rank 0 takes it (the run decides and writes on rank 0).
"""

from __future__ import annotations

import functools
import json
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

from .errors import UserError
from .io_utils import atomic_write_json

P = ParamSpec("P")
R = TypeVar("R")

HOLDER_FILE = ".writer.json"
_held: dict[Path, int] = {}  # folder -> file descriptor holding its lock, in this process


def holder(folder: Path) -> str:
    """Who holds the lock on ``folder``, in words (from its ``.writer.json``)."""
    try:
        info = json.loads((Path(folder) / HOLDER_FILE).read_text(encoding="utf-8"))
        return f"pid {info['pid']} on {info['host']} since {info['since']}: {info['command']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not yet said who it is"


def lock_folder(folder: Path, what: str) -> None:
    """Take the exclusive writer lock of ``folder`` (which exists) for the rest of the run, or fail with one
    line naming the holder. Taking a lock this process already holds is a no-op."""
    import fcntl

    folder = Path(folder).resolve()
    if folder in _held:
        return
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UserError(
            f"{what} {folder} is being written by another run ({holder(folder)}); wait for it to finish or stop it"
        ) from None
    except OSError as e:  # a file system without locks (some network mounts): say so, run unlocked
        os.close(fd)
        print(f"warning: cannot lock {folder} ({e.strerror}); make sure no other run writes it", file=sys.stderr)
        return
    _held[folder] = fd
    atomic_write_json(
        folder / HOLDER_FILE,
        {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        },
    )


def release_all() -> None:
    """Drop every lock this process holds (the end of a run; the OS does it too when the process ends)."""
    import fcntl

    for folder, fd in list(_held.items()):
        try:
            try:  # the holder's name is a courtesy to readers; a folder that no longer lets us remove it keeps it
                (folder / HOLDER_FILE).unlink(missing_ok=True)
            except OSError:
                pass
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
            del _held[folder]


def releases_locks(workflow: Callable[P, R]) -> Callable[P, R]:
    """Decorator: the locks a workflow took are released when it returns or fails."""

    @functools.wraps(workflow)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return workflow(*args, **kwargs)
        finally:
            release_all()

    return run
