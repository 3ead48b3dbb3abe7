"""One exception type for every error a user can fix, and one line for each.

Entry scripts catch :class:`UserError`, print ``error: <message>`` as one line on stderr and exit with
status 2 (no traceback). Every message names the file, line, flag or folder at fault. Flag syntax errors are one
line too (:class:`OneLineParser`).
"""

import argparse
import sys


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors (an unknown choice, a word where a number goes) are one line on stderr and
    exit status 2, as every other error of the toolkit; argparse's own prints the usage block first."""

    def error(self, message: str) -> None:
        sys.stderr.write(f"error: {self.prog}: {message} (see --help)\n")
        raise SystemExit(2)


def os_error_line(error: OSError) -> str:
    """One line for an operating-system failure no check foresaw (a folder that cannot be written, a name too long
    for the file system, a disk that is full): the path(s) and the cause as the system says it."""
    cause = error.strerror or str(error) or type(error).__name__
    if error.filename is None:
        return f"{cause} ({type(error).__name__})"
    where = str(error.filename) + (f" -> {error.filename2}" if error.filename2 is not None else "")
    return f"{where}: {cause}"


class UserError(Exception):
    """A problem with the user's input (flags, files, folders) described in one line."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split("\n")))
