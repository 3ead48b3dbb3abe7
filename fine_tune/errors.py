"""One exception type for every error a user can fix, and one line for each.

Entry scripts catch :class:`UserError`, print ``error: <message>`` as one line on stderr and exit with
status 2 (no traceback). Every message names the file, line, flag or folder at fault. Flag syntax errors are one
line too (:class:`OneLineParser`, every entry script's parser, whose ``--help`` :class:`HelpFormatter` lays out).
A misspelt name (a choice, a task, a split, a method) is answered with the closest valid one
(:func:`did_you_mean`).
"""

import argparse
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Any, NoReturn


def closest_name(word: str, names: Iterable[str], aliases: Mapping[str, str] | None = None) -> str | None:
    """The name of ``names`` that a misspelt ``word`` most likely meant, or None when none is close.

    Close: ``difflib.get_close_matches``' default similarity cutoff (0.6), compared without case (``SST-2`` is
    close to ``sst2``). ``aliases`` maps words that are not spelt like a name to the name they mean (another
    library's name of a split: ``validation`` -> the task's ``val``); an alias whose name is not in ``names`` is
    ignored."""
    import difflib

    names = [str(n) for n in names]
    folded = {n.lower(): n for n in reversed(names)}  # (the first of names differing only in case)
    alias = (aliases or {}).get(word.lower())
    if alias in names and alias != word:
        return alias
    close = difflib.get_close_matches(word.lower(), list(folded), n=1)
    return folded[close[0]] if close and folded[close[0]] != word else None


def did_you_mean(word: str, names: Iterable[str], aliases: Mapping[str, str] | None = None) -> str:
    """``"did you mean NAME? "`` for the :func:`closest_name` of ``word``, else ``""``: written before an error
    line's list of what is valid (``--task 'sst-2' is unknown; did you mean sst2? valid tasks: ...``)."""
    name = closest_name(word, names, aliases)
    return f"did you mean {name}? " if name is not None else ""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """``--help`` of every entry script: the description as written (the script's docstring: what it does, where
    the documents are), and each flag's default printed once: ``(default: X)`` is added only where the flag's
    help does not already say what its default is (the word "default") and X is a value (not None, not False:
    an unset flag's help says what happens without it). A ``%`` in a help text is literal (argparse would read it
    as a format)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_ = re.sub(r"(?<!%)%(?![(%])", "%%", action.help or "")
        default = action.default
        if (
            action.option_strings
            and "default" not in help_.lower()
            and default is not argparse.SUPPRESS
            and default is not None
            and default is not False
        ):
            help_ += " (default: %(default)s)"
        return help_


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors (an unknown choice, a word where a number goes) are one line on stderr and
    exit status 2, as every other error of the toolkit; argparse's own prints the usage block first. A value
    outside a flag's choices names the closest choice (:func:`did_you_mean`); ``--help`` is laid out by
    :class:`HelpFormatter`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        try:
            super()._check_value(action, value)
        except argparse.ArgumentError as e:
            name = closest_name(str(value), action.choices) if isinstance(value, str) and action.choices else None
            if name is None:
                raise
            bad = f"invalid choice: {value!r}"
            raise argparse.ArgumentError(action, e.message.replace(bad, f"{bad}; did you mean {name!r}?", 1)) from None

    def error(self, message: str) -> NoReturn:
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

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split("\n")))
