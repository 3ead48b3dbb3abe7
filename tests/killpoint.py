"""Run an entry script and SIGKILL it at a chosen file write: deterministic kills for the tests.

    python tests/killpoint.py WHEN:PATTERN script.py [flags...]

Every file the toolkit writes lands through ``os.replace`` (fine_tune/io_utils.py: temporary sibling, fsync,
rename). This launcher wraps ``os.replace`` and, at the first rename whose target's name matches PATTERN (an
``fnmatch`` pattern of the file name, e.g. ``resume-4.pt``, ``gate-*-8.pt``, ``features-*.pt``):

- ``before``: cuts the temporary file to half its size and SIGKILLs the process before the rename, leaving the
  ``.tmp-*`` file exactly as a kill in the middle of the write would;
- ``after``: renames, then SIGKILLs (a kill between two files of one checkpoint, or right after it).

A writer that stops writing atomically never reaches the kill, so the run exits normally and the test that
expects exit status -9 fails. Under torchrun the kill happens on the rank that writes (rank 0); with
``KILLPOINT_GROUP=1`` it SIGKILLs the launcher (its parent) and every rank the launcher started, then itself: the
whole job dies at once, as when a scheduler pre-empts it.

With ``KILLPOINT_ALIVE=FIFO`` every process this launcher runs in (each rank under torchrun) opens the named pipe
FIFO for writing first, writes one ``+`` to it and keeps it open until it dies: a test holding the read end reads
one ``+`` per process and then end-of-file exactly when every one of them is gone (the kernel closes a process's
files when it exits, however it exits), with no polling.
"""

from __future__ import annotations

import fnmatch
import os
import runpy
import signal
import sys
from pathlib import Path


_alive: int | None = None  # this process's write end of KILLPOINT_ALIVE, open until it dies


def main() -> None:
    global _alive
    if os.environ.get("KILLPOINT_ALIVE"):
        _alive = os.open(os.environ["KILLPOINT_ALIVE"], os.O_WRONLY)  # not inherited (PEP 446)
        os.write(_alive, b"+")  # one byte per process: the reader counts who held it
    spec, script, *args = sys.argv[1:]
    when, pattern = spec.split(":", 1)
    if when not in ("before", "after"):
        raise SystemExit(f"killpoint: WHEN must be before or after, not {when!r}")
    real_replace = os.replace

    def kill() -> None:
        if os.environ.get("KILLPOINT_GROUP") == "1":  # the launcher (our parent) and every other rank it started
            parent = os.getppid()
            ranks = [pid for pid in map(int, filter(str.isdigit, os.listdir("/proc"))) if _parent(pid) == parent]
            for pid in [parent, *ranks]:
                if pid != os.getpid():
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        os.kill(os.getpid(), signal.SIGKILL)

    def replace(src, dst, *a, **k):
        hit = fnmatch.fnmatch(Path(dst).name, pattern)
        if hit and when == "before":
            if os.path.isfile(src):
                with open(src, "r+b") as f:
                    f.truncate(os.path.getsize(src) // 2)
            kill()
        real_replace(src, dst, *a, **k)
        if hit:
            kill()

    os.replace = replace
    script = str(Path(script).resolve())
    sys.path.insert(0, str(Path(script).parent))
    sys.argv = [script, *args]
    runpy.run_path(script, run_name="__main__")


def proc_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state, parent pid, ...); None when gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _parent(pid: int) -> int | None:
    stat = proc_stat(pid)
    return int(stat[1]) if stat else None


if __name__ == "__main__":
    main()
