"""Parsing the GLUE tab-separated files and the SuperGLUE JSON-lines files by column.

A :class:`TsvLayout` says where a split's text, optional text pair, label and id are: by header name, or by
position for header-less files (CoLA's train and dev). Labels are read as the file writes them (``"0"``/``"1"``,
``"entailment"``...) and mapped to class indices in the task's order. Every problem is a one-line
:class:`~fine_tune.errors.UserError` naming the file, the line and the column.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

from ..errors import UserError
from .diagnostics import minimal_pairs
from .example import Example, brief, check_unique_ids, exact_id, json_objects, tab_separated_rows


@dataclass(frozen=True)
class TsvLayout:
    """Where a split's fields are. ``header``: the column names the file's first line must contain (in any
    order, others allowed), or None for a header-less file of ``width`` columns addressed by position.
    ``idx``: the id column (None: the row number, from 0)."""

    text: str | int
    pair: str | int | None = None
    label: str | int | None = None
    idx: str | int | None = None
    header: bool = True
    width: int | None = None  # header-less files: the column count


def score(raw: Any, where: str, column: str) -> float:
    """A regression label: a finite number (``column`` as the message shows it)."""
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise UserError(
            f"{where}: label {brief(raw)} in column {column} is not a number (a regression score)"
        ) from None
    except OverflowError:  # an integer beyond any float
        value = float("inf")
    if value != value or value in (float("inf"), float("-inf")):
        raise UserError(f"{where}: label {brief(raw)} in column {column} is not a finite number")
    return value


def _label(raw: str, file_labels: tuple[str, ...] | None, where: str, column: str) -> int | float:
    """The class index of ``raw`` in ``file_labels``; with ``file_labels`` None (regression) the number itself."""
    if file_labels is None:
        return score(raw, where, column)
    try:
        return file_labels.index(raw)
    except ValueError:
        raise UserError(
            f"{where}: unknown label {raw!r} in column {column} (expected one of {', '.join(file_labels)})"
        ) from None


def parse_tsv(path: Path, labelled: bool, layout: TsvLayout, file_labels: tuple[str, ...] | None) -> list[Example]:
    """Rows of a GLUE ``.tsv`` file as :class:`Example`s (``labelled``: the split has gold labels)."""
    rows = tab_separated_rows(path)
    if layout.header:
        header_line, header = next(rows, (1, [""]))
        wanted = [
            c for c in (layout.text, layout.pair, layout.idx, layout.label if labelled else None) if c is not None
        ]
        missing = [c for c in wanted if c not in header]
        if missing:
            raise UserError(
                f"{path}, line {header_line}: header {header} lacks the column(s) {', '.join(map(repr, missing))}"
            )
        width: int | None = len(header)
        # every wanted column is in the (text) header, checked above: a name, never a position
        pos: dict[str | int, int] = {c: header.index(str(c)) for c in wanted}
    else:
        width = layout.width
        # a header-less layout addresses its columns by position (TsvLayout): each is an int
        pos = {c: cast(int, c) for c in (layout.text, layout.pair, layout.idx, layout.label) if c is not None}
    examples: list[Example] = []
    wheres: list[str] = []
    for line_no, cols in rows:
        where = f"{path}, line {line_no}"
        if len(cols) != width:
            raise UserError(f"{where}: {len(cols)} tab-separated columns, expected {width}")
        idx = len(examples)
        if layout.idx is not None:
            idx = exact_id(cols[pos[layout.idx]], where, str(layout.idx))
        label = None
        if labelled and layout.label is not None:
            label = _label(cols[pos[layout.label]], file_labels, where, str(layout.label))
        examples.append(
            Example(
                idx=idx,
                text=cols[pos[layout.text]],
                text_pair=None if layout.pair is None else cols[pos[layout.pair]],
                label=label,
            )
        )
        wheres.append(where)
    if not labelled:
        check_unique_ids(examples, path, wheres)
    return examples


@dataclass(frozen=True)
class JsonFields:
    """The fields of a SuperGLUE JSON-lines row: text, optional text pair, label and id (``idx``).

    The diagnostics' files are labelled and submitted at once: ``submitted_ids`` makes every row's id required and
    unique (as in a test file) although the split is labelled; ``text_ids`` accepts an id written as decimal text
    (``"idx": "0"``, as the official ``AX-b.jsonl`` writes it) beside a JSON integer; ``pairs`` names the field of
    each row's minimal pair (AX-g's ``pair_id``), required, from which :func:`fine_tune.tasks.diagnostics.
    minimal_pairs` forms the pairs (``Example.group``)."""

    text: str
    pair: str | None = None
    label: str = "label"
    idx: str = "idx"
    submitted_ids: bool = False
    text_ids: bool = False
    pairs: str | None = None


def parse_jsonl(path: Path, labelled: bool, fields: JsonFields, file_labels: tuple[str, ...]) -> list[Example]:
    """Rows of a SuperGLUE ``.jsonl`` file as :class:`Example`s."""
    examples: list[Example] = []
    wheres: list[str] = []
    pair_ids: list[int] = []
    submitted = fields.submitted_ids or not labelled
    for where, row in json_objects(path):
        for key in (fields.text, fields.pair):
            if key is not None and not isinstance(row.get(key), str):
                raise UserError(f"{where}: missing or non-string field '{key}'")
        idx = row.get(fields.idx)
        if idx is None and submitted:
            raise UserError(f"{where}: missing field '{fields.idx}' (a row's id names it in the submission)")
        idx = len(examples) if idx is None else idx
        if not (fields.text_ids and isinstance(idx, str)) and (not isinstance(idx, int) or isinstance(idx, bool)):
            raise UserError(f"{where}: field '{fields.idx}' must be an integer, got {idx!r}")
        idx = exact_id(idx, where, repr(fields.idx))
        if fields.pairs is not None:
            if fields.pairs not in row:
                raise UserError(
                    f"{where}: missing field '{fields.pairs}' (AX-g is scored in minimal pairs: gender "
                    f"parity compares the predictions of a pair's two rows)"
                )
            pair_ids.append(exact_id(row[fields.pairs], where, repr(fields.pairs)))
        label = None
        if labelled:
            if fields.label not in row:
                raise UserError(f"{where}: missing '{fields.label}' in a labelled split")
            label = _label(str(row[fields.label]), file_labels, where, fields.label)
        examples.append(
            Example(
                idx=idx, text=row[fields.text], text_pair=None if fields.pair is None else row[fields.pair], label=label
            )
        )
        wheres.append(where)
    if submitted:
        check_unique_ids(examples, path, wheres)
    if fields.pairs is not None and examples:
        groups = minimal_pairs(path, wheres, pair_ids, [e.text_pair for e in examples])
        examples = [replace(e, group=g) for e, g in zip(examples, groups)]
    return examples
