"""The one record every task parser produces, and the readers of the text formats the parsers share (UTF-8 lines,
tab-separated cells, CSV by its quoting rules, JSON lines)."""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError


@dataclass(frozen=True)
class Example:
    """One row of a data file.

    ``idx`` is the row's id as the official file gives it (BoolQ ``idx``, QQP ``id``); submissions use it.
    ``label`` is ``None`` for unlabelled splits (test).
    """

    idx: int
    text: str
    text_pair: str | None
    label: int | float | None  # a class index, or a score for regression (STS-B)


def examples_digest(examples) -> str:
    """The sha256 of parsed rows' content (id, text, pair, label, each by ``repr``: a class 1 is not a score 1.0).

    What a row became is decided by the data file, the task's definition (its columns, label order, regression),
    the parser and ``--max_examples``; hashing the rows themselves keys every derived file on all of them at once,
    so an edit of any (a ``task.json`` that reorders the labels) is a miss, never a stale hit. About 1 s per
    million rows."""
    import hashlib

    h = hashlib.sha256()
    for e in examples:
        h.update(f"{e.idx!r}\x1f{e.text!r}\x1f{e.text_pair!r}\x1f{e.label!r}\x1e".encode())
    return h.hexdigest()


def text_lines(path: Path, keep_ends: bool = False):
    """(line number, text) of a UTF-8 text file (a byte-order mark allowed), lines without their ending unless
    ``keep_ends``; bytes that are not UTF-8 are a :class:`UserError` naming the file and the line."""
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                line = raw.decode("utf-8")
                yield line_no, line if keep_ends else line.rstrip("\r\n")
            except UnicodeDecodeError as e:
                raise UserError(f"{path}, line {line_no}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column "
                                f"{e.start + 1}); save the file as UTF-8") from None


def tab_separated_rows(path: Path):
    """(line number, cells) of every non-blank line of a tab-separated file (GLUE's, and ``.tsv`` files of your own):
    cells split on tabs with no quoting (a quote is an ordinary character), every line one row."""
    for line_no, line in text_lines(path):
        if line:
            yield line_no, line.split("\t")


def _lift_csv_field_size_limit() -> None:
    """Let the csv module read a cell of any length (its default stops at 131,072 characters)."""
    limit = sys.maxsize
    while True:
        try:
            csv.field_size_limit(limit)
            return
        except OverflowError:  # a C long narrower than Py_ssize_t
            limit //= 2


def csv_rows(path: Path):
    """(line number of its first line, cells) of every non-blank record of a CSV file, by the format's quoting rules
    (Python's csv module, strict): a cell in quotes may hold commas, doubled quotes and newlines (kept), so a
    record may span lines and the line numbers are the file's own; a malformed quote is a :class:`UserError`
    naming the file and the line."""
    _lift_csv_field_size_limit()
    reader = csv.reader((line for _, line in text_lines(path, keep_ends=True)), strict=True)
    while True:
        first = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise UserError(f"{path}, line {first}: not valid CSV ({e}; a cell in quotes ends at a quote, and a "
                            f"quote inside it is doubled)") from None
        if cells:
            yield first, cells


def json_objects(path: Path):
    """(``"<path>, line N"``, object) for every non-blank line of a JSON-lines file; a line that is not a JSON
    object is a :class:`UserError` naming the file and the line."""
    import json

    for line_no, line in text_lines(path):
        if not line.strip():
            continue
        where = f"{path}, line {line_no}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{where}: not valid JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise UserError(f"{where}: expected a JSON object")
        yield where, row


def check_unique_ids(examples: list, path: Path) -> None:
    """Ids name the rows of a submission file: two rows with one id are an error."""
    seen: set[int] = set()
    for ex in examples:
        if ex.idx in seen:
            raise UserError(f"{path}: id {ex.idx} appears twice; a submission needs one row per id")
        seen.add(ex.idx)
