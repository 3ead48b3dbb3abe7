"""QQP (GLUE ``QQP-clean.zip`` release): parsing ``QQP/{train,dev,test}.tsv``.

train/dev: header ``id qid1 qid2 question1 question2 is_duplicate`` (6 tab-separated columns);
test: header ``id question1 question2``. The header line is skipped; the pair is (question1, question2).
Unlike the original (which crashed), a malformed row is a :class:`UserError` naming file and line.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from .example import Example, check_unique_ids, exact_id, tab_separated_rows

LABELLED_HEADER = ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"]
TEST_HEADER = ["id", "question1", "question2"]


def parse_qqp(path: Path, labelled: bool) -> list[Example]:
    expected = LABELLED_HEADER if labelled else TEST_HEADER
    examples: list[Example] = []
    wheres: list[str] = []
    rows = tab_separated_rows(path)
    header_line, header = next(rows, (1, [""]))
    if header != expected:
        raise UserError(f"{path}, line {header_line}: header {header} does not match the expected {expected}")
    for line_no, cols in rows:
        where = f"{path}, line {line_no}"
        if len(cols) != len(expected):
            raise UserError(f"{where}: {len(cols)} tab-separated columns, expected {len(expected)}")
        idx = exact_id(cols[0], where, "'id'")
        wheres.append(where)
        if labelled:
            if cols[5] not in ("0", "1"):
                raise UserError(f"{where}: unknown label {cols[5]!r} in column is_duplicate (expected 0 or 1)")
            examples.append(Example(idx=idx, text=cols[3], text_pair=cols[4], label=int(cols[5])))
        else:
            examples.append(Example(idx=idx, text=cols[1], text_pair=cols[2], label=None))
    if not labelled:
        check_unique_ids(examples, path, wheres)
    return examples
