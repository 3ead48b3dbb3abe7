"""The one record every task parser produces."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Example:
    """One row of a data file.

    ``idx`` is the row's id as the official file gives it (BoolQ ``idx``, QQP ``id``); submissions use it.
    ``label`` is ``None`` for unlabelled splits (test).
    """

    idx: int
    text: str
    text_pair: str | None
    label: int | None
