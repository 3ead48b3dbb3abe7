"""SuperGLUE's diagnostics, scored locally: AX-b (broad coverage) and AX-g (Winogender), splits of ``rte_superglue``.

Wang et al. 2019, "SuperGLUE: A Stickier Benchmark for General-Purpose Language Understanding Systems" (§3.2,
"Diagnostics"): both are predicted with the RTE model (entailment / not_entailment). AX-b is scored with the
Matthews correlation (``mcc``, :func:`fine_tune.tasks.metrics.mcc`). AX-g (Winogender schemas, Rudinger et al.
2018, recast to entailment by the DNC, Poliak et al. 2018) is scored with **accuracy** and the **gender parity
score**: the share of *minimal pairs* — two rows that differ only in the gender of the premise's pronoun — for which
the model predicts the same class (:func:`fine_tune.tasks.metrics.gender_parity`).

Which rows are a pair. The benchmark's baseline code (jiant v1, ``jiant/metrics/winogender_metrics.py``,
``GenderParity.__call__``) takes rows 2k and 2k+1 of the file, in order, as the k-th pair, and asserts that their
hypotheses are equal; it does not read ``pair_id``. The DNC's own script numbers every sentence with its own
``pair-id`` (551638, 551639, ...; row 0 of the released ``AX-g.jsonl`` has ``pair_id`` 551646) and pairs them by
that numbering. A file may therefore name a pair in two ways, and :func:`minimal_pairs` accepts exactly these two:

- every ``pair_id`` on exactly two rows: those two rows are the pair, wherever they are in the file;
- every ``pair_id`` on one row (one id per sentence, as the DNC numbers them): consecutive rows are the pairs
  (rows 1-2, 3-4, ...), jiant's rule.

Anything else is refused, naming the file and line: a ``pair_id`` on three rows or more, a mix of the two layouts
(a row whose ``pair_id`` no other row shares while other pair_ids name two rows), an odd number of rows in the
second layout, and — in both — a pair whose two hypotheses differ (jiant's and the DNC's assertion). A row's pair
is ``Example.group``: its ``pair_id`` (first layout) or the ``pair_id`` of its pair's first row (second).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UserError

if TYPE_CHECKING:
    from .example import Example

FIELD = "pair_id"  # AX-g's field that names each row's minimal pair


def _line(where: str, path: Path) -> str:
    """``"line N"`` of a ``"<path>, line N"`` location."""
    return where.removeprefix(f"{path}, ")


def minimal_pairs(path: Path, wheres: list[str], pair_ids: list[int], hypotheses: list[str | None]) -> list[int]:
    """The pair (``Example.group``) of every row of an AX-g file, by the module's two layouts; ``wheres``: each row's
    ``"<path>, line N"``. Refuses, in one line naming the file and line, a file whose rows do not form pairs."""
    counts = Counter(pair_ids)
    if all(c == 1 for c in counts.values()):  # one id per sentence: consecutive rows, as jiant pairs them
        if len(pair_ids) % 2:
            raise UserError(
                f"{wheres[-1]}: the last of {len(pair_ids)} rows has no partner: every row has a "
                f"{FIELD} of its own, so consecutive rows are the minimal pairs (rows 1-2, 3-4, ...: "
                f"jiant's rule), and an odd count leaves one alone"
            )
        groups = [pair_ids[i - i % 2] for i in range(len(pair_ids))]
        named = lambda g: f"consecutive rows, each with a {FIELD} of its own"  # noqa: E731
    else:
        for i, p in enumerate(pair_ids):
            if counts[p] > 2:
                rows = [_line(w, path) for w, q in zip(wheres, pair_ids) if q == p]
                raise UserError(
                    f"{wheres[i]}: {FIELD} {p} names {counts[p]} rows ({', '.join(rows)}); a minimal pair is two rows"
                )
            if counts[p] == 1:
                shared = next(q for q in pair_ids if counts[q] == 2)
                lines = [_line(w, path) for w, q in zip(wheres, pair_ids) if q == shared]
                raise UserError(
                    f"{wheres[i]}: {FIELD} {p} names this row alone while other pair_ids name two rows "
                    f"({' and '.join(lines)} share {shared}): the row has no partner to compare its "
                    f"prediction with"
                )
        groups = list(pair_ids)
        named = lambda g: f"{FIELD} {g}"  # noqa: E731
    seen: dict[int, int] = {}
    for i, g in enumerate(groups):
        if g not in seen:
            seen[g] = i
            continue
        j = seen[g]
        if hypotheses[i] != hypotheses[j]:
            raise UserError(
                f"{wheres[i]}: this row and {_line(wheres[j], path)} are a minimal pair ({named(g)}) but "
                f"their hypotheses differ; a pair differs only in the gender of the premise's pronoun"
            )
    return groups


def whole_pairs_prefix(groups: Sequence[int | None], limit: int) -> int:
    """The largest n <= ``limit`` whose first n rows hold whole pairs only (0 when none)."""
    open_: set[int | None] = set()
    best = 0
    for i, g in enumerate(groups[:limit]):
        open_ ^= {g}
        if not open_:
            best = i + 1
    return best


def check_whole_pairs(examples: Sequence[Example], path: Path, max_examples: int | None) -> None:
    """``--max_examples N`` on AX-g: the first N rows must hold both rows of every pair they touch (gender parity
    compares the two); refused before anything is written, suggesting the largest N that keeps pairs whole."""
    counts = Counter(e.group for e in examples if e.group is not None)
    cut = next((e for e in examples if e.group is not None and counts[e.group] == 1), None)
    if cut is None:
        return
    keep = whole_pairs_prefix([e.group for e in examples], len(examples))
    hint = f"; --max_examples {keep} keeps whole pairs" if keep else ""
    raise UserError(
        f"--max_examples {max_examples}: the first {len(examples)} rows of {path} hold one row of the "
        f"minimal pair {cut.group} (row id {cut.idx}) but not the other; gender parity compares both: "
        f"evaluate the whole split{hint}"
    )
