"""Commands of the task documents, parsed from their ```sh blocks, and the only rewrites a test may make.

``parse_commands(md)`` returns every command of a ```sh block whose first word is ``python`` or ``python3.8``
(backslash continuations joined, ``#`` comments dropped), with the Markdown heading it stands under and its
argv (script first, interpreter dropped). ``rewrite(cmd, total_step=6, ...)`` returns the argv with only the
flags of :data:`REWRITABLE` changed, and checks that nothing else was touched.

``parse_outcome_table(md)`` returns the rows of the table under the document's "Seed commands: expected
outcome" heading: one row per seed command, in document order, with its script, ``--experiment``,
``--dataset`` and the wording of its ``outcome`` column (the test maps that wording onto outcome kinds).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

# The only flags a test may change: the model source, step counts, checkpoint numbers, sequence length, and
# the student widths, all three together (so they match a tiny teacher).
WIDTHS = ("--d_model", "--d_ff", "--num_attention_heads")
REWRITABLE = frozenset(
    {
        "--ptrain_ver",
        "--total_step",
        "--warmup_step",
        "--ckpt_step",
        "--log_step",
        "--ckpt",
        "--max_seq_len",
        "--tckpt",
        "--gate_total_step",
        "--gate_warmup_step",
        *WIDTHS,
    }
)
INTERPRETER = re.compile(r"python(3(\.\d+)?)?")
OUTCOME_HEADING = "## Seed commands: expected outcome"
NONE_CELLS = frozenset({"", "—", "-"})  # a table cell that states "the command has no such flag"


@dataclass
class Command:
    section: str  # the heading the command stands under (without the leading #s)
    argv: list[str]  # script first, without the interpreter
    interpreter: str = "python"
    line: int = 0  # 1-based line of the document where the command starts
    flags: dict[str, str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.flags = {}
        for i, word in enumerate(self.argv):
            if word.startswith("--"):
                nxt = self.argv[i + 1] if i + 1 < len(self.argv) else None
                self.flags[word] = "" if nxt is None or nxt.startswith("--") else nxt

    @property
    def script(self) -> str:
        return self.argv[0]

    def flag(self, name: str) -> str | None:
        """The value of ``name`` ("" for a switch such as ``--amp``), None when the command lacks it."""
        return self.flags.get(name)

    def __str__(self) -> str:
        return f"{self.interpreter} {shlex.join(self.argv)}  (line {self.line}, under {self.section!r})"


def parse_commands(md_path: Path | str, stop_heading: str | None = None) -> list[Command]:
    """Every ``python``/``python3.8`` command of the document's ```sh blocks, in document order.

    Parsing stops at a heading line equal to ``stop_heading`` (where a maintained document's own additions
    begin), when given.
    """
    commands: list[Command] = []
    section, in_fence, in_sh, words, start = "", False, False, [], 0

    def flush() -> None:
        nonlocal words
        if words and INTERPRETER.fullmatch(words[0]):
            commands.append(Command(section, words[1:], interpreter=words[0], line=start))
        words = []

    for no, line in enumerate(Path(md_path).read_text(encoding="utf-8").splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("```"):
            flush()
            in_fence = not in_fence
            in_sh = in_fence and stripped == "```sh"
            continue
        if not in_fence:
            if line.startswith("#"):
                if stop_heading and stripped == stop_heading:
                    break
                section = line.lstrip("#").strip()
            continue
        if not in_sh or stripped.startswith("#"):  # another language's block, or a comment line
            continue
        if not words:
            start = no
        continued = stripped.endswith("\\")
        words += shlex.split(stripped[:-1] if continued else stripped, comments=True)
        if not continued:
            flush()
    return commands


def rewrite(cmd: Command, **values: object) -> list[str]:
    """``cmd.argv`` with the given flags (``total_step=6``) given new values.

    Only flags of :data:`REWRITABLE` may be named, and only their values change: the result is checked
    word by word against the document's argv.
    """
    argv = list(cmd.argv)
    widths = [f for f in WIDTHS if f in argv]
    named = [f for f in widths if f[2:] in values]
    assert not named or named == widths, f"the widths {widths} are rewritten together, not only {named}"
    for key, value in values.items():
        flag = "--" + key
        assert flag in REWRITABLE, f"a test may not rewrite {flag} (only {sorted(REWRITABLE)})"
        if flag in argv:
            i = argv.index(flag)
            assert i + 1 < len(argv) and not argv[i + 1].startswith("--"), f"{flag} has no value in {cmd}"
            argv[i + 1] = str(value)
    # Nothing else touched: same length, same words except values right after a rewritable flag.
    assert len(argv) == len(cmd.argv)
    for i, (old, new) in enumerate(zip(cmd.argv, argv)):
        if old != new:
            assert i > 0 and cmd.argv[i - 1] in REWRITABLE, f"rewrite changed {old!r} (word {i}) of {cmd}"
    return argv


@dataclass
class OutcomeRow:
    """One row of a "Seed commands: expected outcome" table (cells without their Markdown backticks/bold)."""

    number: int
    script: str
    experiment: str | None  # None: the row says the command has no --experiment ("—")
    dataset: str | None  # None: the row says the command has no --dataset ("—")
    outcome: str  # the wording of the outcome column, e.g. "runs", "error: missing experiment folder"
    cells: dict[str, str]  # every column, by header (cleaned), for columns a test reads besides these
    line: int  # 1-based line of the document

    def __str__(self) -> str:
        return f"row {self.number} (line {self.line}): {self.script} {self.experiment} {self.dataset}: {self.outcome}"


def _cells(line: str) -> list[str]:
    """The cells of a Markdown table line (``\\|`` is a literal bar), stripped."""
    body = line.strip()
    assert body.startswith("|") and body.endswith("|"), line
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", body[1:-1])]


def _clean(cell: str) -> str:
    """A cell's text without surrounding bold and, when the whole cell is one code span, its backticks."""
    cell = cell.strip()
    if cell.startswith("**") and cell.endswith("**") and len(cell) > 4:
        cell = cell[2:-2].strip()
    if re.fullmatch(r"`[^`]*`", cell):
        cell = cell[1:-1]
    return cell


def parse_outcome_table(md_path: Path | str, heading: str = OUTCOME_HEADING) -> list[OutcomeRow]:
    """The rows of the first table under ``heading`` (and before the next ``#``/``##`` heading), in order.

    The header must name the columns ``#``, ``script``, ``--experiment``, ``--dataset`` and ``outcome`` (any
    order, code spans allowed); every row must have as many cells as the header. A ``--experiment`` or
    ``--dataset`` cell of ``—`` says the command has no such flag.
    """
    lines = Path(md_path).read_text(encoding="utf-8").splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == heading]
    assert len(starts) == 1, f"{md_path}: {len(starts)} headings {heading!r}"
    level = len(heading) - len(heading.lstrip("#"))
    table: list[tuple[int, str]] = []
    in_fence = False
    for no in range(starts[0] + 1, len(lines)):
        line = lines[no]
        if line.strip().startswith("```"):
            in_fence = not in_fence
        if in_fence:
            continue
        heading_level = len(line) - len(line.lstrip("#"))
        if 0 < heading_level <= level and line[heading_level : heading_level + 1] == " ":
            break
        if line.lstrip().startswith("|"):
            table.append((no + 1, line))
        elif table:
            break  # the first table only
    assert len(table) >= 3, f"{md_path}: no table under {heading!r}"
    header = [_clean(c).lower() for c in _cells(table[0][1])]
    assert all(re.fullmatch(r":?-+:?", c) for c in _cells(table[1][1])), (
        f"{md_path}: line {table[1][0]} is not a separator"
    )
    required = ("#", "script", "--experiment", "--dataset", "outcome")
    missing = [c for c in required if c not in header]
    assert not missing, f"{md_path}: the table under {heading!r} lacks the columns {missing} (has {header})"
    rows = []
    for no, line in table[2:]:
        raw = _cells(line)
        assert len(raw) == len(header), f"{md_path}: line {no} has {len(raw)} cells, the header {len(header)}"
        cells = dict(zip(header, raw))
        number = _clean(cells["#"])
        assert number.isdigit(), f"{md_path}: line {no}: row number {number!r}"
        optional = {
            key: (None if _clean(cells[key]) in NONE_CELLS else _clean(cells[key]))
            for key in ("--experiment", "--dataset")
        }
        rows.append(
            OutcomeRow(
                int(number),
                _clean(cells["script"]),
                optional["--experiment"],
                optional["--dataset"],
                " ".join(_clean(cells["outcome"]).split()),
                cells,
                no,
            )
        )
    return rows
