"""The one record every task parser produces, and the readers of the text formats the parsers share (UTF-8 lines,
tab-separated cells, CSV by its quoting rules, JSON lines)."""

from __future__ import annotations

import csv
import json
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UserError


@dataclass(frozen=True)
class Example:
    """One row of a data file.

    ``idx`` is the row's id as the official file gives it (BoolQ ``idx``, QQP ``id``); submissions use it.
    ``label`` is ``None`` for unlabelled splits (test). ``group``: the group of rows a metric scores together, or
    ``None``: AX-g's minimal pairs (:mod:`fine_tune.tasks.diagnostics`), the two rows of a pair sharing one value.
    """

    idx: int
    text: str
    text_pair: str | None
    label: int | float | None  # a class index, or a score for regression (STS-B)
    group: int | None = None


def examples_digest(examples: Iterable[Example]) -> str:
    """The sha256 of parsed rows' content (id, text, pair, label, each by ``repr``: a class 1 is not a score 1.0).

    What a row became is decided by the data file, the task's definition (its columns, label order, regression),
    the parser and ``--max_examples``; hashing the rows themselves keys every derived file on all of them at once,
    so an edit of any (a ``task.json`` that reorders the labels) is a miss, never a stale hit. A row's ``group``
    (AX-g's minimal pair) is hashed too where it has one; rows without one hash as they always have. About 1 s per
    million rows."""
    import hashlib

    h = hashlib.sha256()
    for e in examples:
        group = "" if e.group is None else f"\x1f{e.group!r}"
        h.update(f"{e.idx!r}\x1f{e.text!r}\x1f{e.text_pair!r}\x1f{e.label!r}{group}\x1e".encode())
    return h.hexdigest()


def text_lines(path: Path, keep_ends: bool = False) -> Iterator[tuple[int, str]]:
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
                raise UserError(
                    f"{path}, line {line_no}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column "
                    f"{e.start + 1}); save the file as UTF-8"
                ) from None


def tab_separated_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
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


def csv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
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
            raise UserError(
                f"{path}, line {first}: not valid CSV ({e}; a cell in quotes ends at a quote, and a "
                f"quote inside it is doubled)"
            ) from None
        if cells:
            yield first, cells


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's keys; a key written twice is refused (JSON would silently keep the last)."""
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"key {json.dumps(key)} appears twice")
        seen[key] = value
    return seen


def parse_json(text: str) -> Any:
    """The JSON value of ``text``, by the format's rules and this toolkit's: an object with a key written twice is
    refused. Every way it can fail is a ``ValueError`` whose message says why in a few words: not JSON, a key twice,
    nested too deep (Python's recursion limit), an integer of more digits than Python converts."""
    try:
        value = json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as e:
        raise ValueError(e.msg) from None
    except RecursionError:
        raise ValueError("nested too deep") from None
    except ValueError as e:
        if "appears twice" in str(e):
            raise
        raise ValueError(f"an integer of more than {sys.get_int_max_str_digits()} digits") from None
    if "\\u" in text and _holds_lone_surrogate(value):  # only an escape (JSON writes it \\u) can make one
        raise ValueError("a \\u escape of half a surrogate pair, which is no character: not Unicode text")
    return value


def _holds_lone_surrogate(value: Any) -> bool:
    """Whether a JSON value holds a string (or key) with a lone UTF-16 surrogate (``"\\ud800"``): JSON's
    escapes can write one, but it is no character (a tokenizer refuses it, UTF-8 cannot encode it)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str) and any("\ud800" <= c <= "\udfff" for c in item):
            return True
    return False


def json_objects(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(``"<path>, line N"``, object) for every non-blank line of a JSON-lines file; a line that is not a JSON
    object (:func:`parse_json`'s rules: no key twice) is a :class:`UserError` naming the file and the line."""
    for line_no, line in text_lines(path):
        if not line.strip():
            continue
        where = f"{path}, line {line_no}"
        try:
            row = parse_json(line)
        except ValueError as e:
            raise UserError(f"{where}: not valid JSON ({e})") from None
        if not isinstance(row, dict):
            raise UserError(f"{where}: expected a JSON object")
        yield where, row


def brief(value: Any) -> str:
    """``repr(value)`` as a message shows it: control characters escaped, long values shortened; ``true``,
    ``false`` and ``null`` as a JSON file writes them."""
    text = json.dumps(value) if value is None or isinstance(value, bool) else repr(value)
    return text if len(text) <= 60 else f"{text[:40]}...{text[-12:]} ({len(text)} characters)"


# an id as a text cell writes it: decimal digits, no leading zero, an optional minus (not on 0), nothing else
_DECIMAL = re.compile(r"0|-?[1-9][0-9]*")
ID_RANGE = (-(2**63), 2**63 - 1)  # ids are stored as signed 64-bit integers (evaluation tables, logits sets)


def exact_id(raw: Any, where: str, column: str) -> int:
    """An id exactly as the file writes it, which is what a submission writes back: a JSON or Parquet integer, or a
    text cell of canonical decimal digits (``7``, ``-3``; not ``007``, ``+3``, `` 5 ``, ``-0``, ``1_000``, ``1.5``),
    within the signed 64-bit range. Anything else is a :class:`UserError` naming ``where`` (file and line) and
    ``column`` (as the message shows it); nothing is rounded or reformatted."""
    if isinstance(raw, str) and _DECIMAL.fullmatch(raw):
        if len(raw) > 20:  # beyond any 64-bit integer (and int() refuses texts of thousands of digits)
            raise UserError(
                f"{where}: id {brief(raw)} in column {column} is outside the signed 64-bit range "
                f"({ID_RANGE[0]} to {ID_RANGE[1]})"
            )
        value = int(raw)
    elif isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    else:
        written = (
            " (as the file writes it: digits, an optional '-', no leading zero, space or '+')"
            if isinstance(raw, str) and raw.strip().lstrip("+-").isdigit()
            else ""
        )
        raise UserError(f"{where}: id {brief(raw)} in column {column} is not an integer{written}")
    if not ID_RANGE[0] <= value <= ID_RANGE[1]:
        raise UserError(
            f"{where}: id {value} in column {column} is outside the signed 64-bit range "
            f"({ID_RANGE[0]} to {ID_RANGE[1]})"
        )
    return value


def check_unique_ids(examples: Sequence[Example], path: Path, wheres: list[str]) -> None:
    """Ids name the rows of a submission file: two rows with one id are an error, naming the line (``wheres``:
    each example's ``"<path>, line N"``) of the second and of the first."""
    first: dict[int, int] = {}
    for i, ex in enumerate(examples):
        if ex.idx in first:
            before = wheres[first[ex.idx]].removeprefix(f"{path}, ")
            raise UserError(
                f"{wheres[i]}: id {ex.idx} appears twice (first at {before}); a submission needs one row per id"
            )
        first[ex.idx] = i
