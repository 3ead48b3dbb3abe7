"""BoolQ (SuperGLUE v2 release): parsing ``BoolQ/{train,val,test}.jsonl``.

One JSON object a line with ``question``, ``passage``, ``idx`` and, in train/val, ``label``. The label is a
JSON boolean in the official ``BoolQ.zip`` and the string ``"true"``/``"false"`` in some redistributions;
both are accepted. As in the original code the pair is (text = passage, text_pair = question) and
False -> 0, True -> 1.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from .example import Example, check_unique_ids, exact_id, json_objects

_LABELS = {True: 1, False: 0, "true": 1, "false": 0, "True": 1, "False": 0}


def parse_boolq(path: Path, labelled: bool) -> list[Example]:
    """Parse a BoolQ jsonl file; any malformed line is a :class:`UserError` naming file and line."""
    examples: list[Example] = []
    wheres: list[str] = []
    for where, row in json_objects(path):
        for key in ("question", "passage"):
            if not isinstance(row.get(key), str):
                raise UserError(f"{where}: missing or non-string field '{key}'")
        if "idx" not in row and not labelled:
            raise UserError(f"{where}: missing field 'idx' (a test row's id names it in the submission)")
        idx = row.get("idx", len(examples))
        if not isinstance(idx, int) or isinstance(idx, bool):
            raise UserError(f"{where}: field 'idx' must be an integer, got {idx!r}")
        idx = exact_id(idx, where, "'idx'")
        label = None
        if "label" in row:
            raw = row["label"]
            if isinstance(raw, (bool, str)) and raw in _LABELS:
                label = _LABELS[raw]
            else:
                raise UserError(f"{where}: unknown label {raw!r} (expected true/false)")
        elif labelled:
            raise UserError(f"{where}: missing 'label' in a labelled split")
        examples.append(Example(idx=idx, text=row["passage"], text_pair=row["question"], label=label))
        wheres.append(where)
    if not labelled:
        check_unique_ids(examples, path, wheres)
    return examples
