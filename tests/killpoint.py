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
    arm(spec)
    run_script(script, args)


def arm(spec: str) -> None:
    """Wrap ``os.replace`` in this process: SIGKILL it at the first rename whose target matches ``spec``
    (WHEN:PATTERN, as on the command line)."""
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


def run_script(script: str, args: list[str]) -> None:
    """Run an entry script as ``python script args`` would (``__main__``, its folder first on the path)."""
    script = str(Path(script).resolve())
    sys.path.insert(0, str(Path(script).parent))
    sys.argv = [script, *args]
    runpy.run_path(script, run_name="__main__")


class Forked:
    """A child forked from the test process running one entry script under a kill point: a real process, killed by
    a real SIGKILL, that skips the interpreter's start-up and the imports the test process has already done (several
    seconds per launch on the suite's machine). Its stdout and stderr go to files; ``communicate`` and
    ``returncode`` answer as :class:`subprocess.Popen`'s do (``-9`` for the planned SIGKILL)."""

    def __init__(
        self, spec: str, script: str, args: list[str], env: dict, cwd: str | Path, logs: str | Path | None = None
    ):
        import tempfile

        import torch

        assert env.get("KILLPOINT_GROUP") != "1", (
            "a forked child's parent is the test process: kill groups need torchrun"
        )
        # GNU OpenMP's thread pool does not survive a fork: a child that starts a parallel region of two threads
        # waits forever at its barrier. So only a command that a subprocess would run on one thread is forked.
        assert env.get("OMP_NUM_THREADS") == "1", "fork only a one-thread command (OMP_NUM_THREADS=1 in env)"
        fd, self._out = tempfile.mkstemp(prefix="forked-out-", dir=logs)
        os.close(fd)
        fd, self._err = tempfile.mkstemp(prefix="forked-err-", dir=logs)
        os.close(fd)
        sys.stdout.flush()
        sys.stderr.flush()
        self.pid = os.fork()
        if self.pid == 0:  # the child: never returns into the test process (os._exit)
            code = 1
            try:
                for fd, path in ((1, self._out), (2, self._err)):
                    target = os.open(path, os.O_WRONLY | os.O_TRUNC)
                    os.dup2(target, fd)
                    os.close(target)
                sys.stdout = open(1, "w", buffering=1, closefd=False)
                sys.stderr = open(2, "w", buffering=1, closefd=False)
                os.chdir(cwd)
                os.environ.clear()
                os.environ.update(env)
                # tokenizers' threads are not in the child either (its fork handler turned them off): keep them off
                os.environ["TOKENIZERS_PARALLELISM"] = "false"
                torch.set_num_threads(1)
                arm(spec)
                run_script(script, args)
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
                if not isinstance(e.code, (int, type(None))):
                    print(e.code, file=sys.stderr)
            except BaseException:  # noqa: BLE001 - reported as an interpreter would, then the exit status 1
                import traceback

                traceback.print_exc()
            finally:
                try:
                    sys.stdout.flush()
                    sys.stderr.flush()
                finally:
                    os._exit(code)
        self.returncode: int | None = None

    def wait(self, timeout: float | None = None) -> int:
        """The child's exit status, once it has ended; a child still running after ``timeout`` seconds (a hang
        guard: a deadlock) is killed and :class:`subprocess.TimeoutExpired` raised. Waits on a pidfd, no polling."""
        if self.returncode is None:
            if timeout is not None:
                import select
                import subprocess

                pidfd = os.pidfd_open(self.pid)
                try:
                    ended, _, _ = select.select([pidfd], [], [], timeout)
                finally:
                    os.close(pidfd)
                if not ended:
                    os.kill(self.pid, signal.SIGKILL)
                    os.waitpid(self.pid, 0)
                    raise subprocess.TimeoutExpired(f"forked {self.pid}", timeout)
            _, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        """Wait for the child (as :meth:`wait`), then its stdout and stderr."""
        self.wait(timeout)
        out, err = Path(self._out).read_text(), Path(self._err).read_text()
        for path in (self._out, self._err):
            os.unlink(path)
        return out, err


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
