"""Commands of the task documents, parsed from their ```sh blocks, and the only rewrites a test may make.

``parse_commands(md)`` returns every command of a ```sh block whose first word is ``python`` or ``python3.8``
(backslash continuations joined, ``#`` comments dropped), with the Markdown heading it stands under and its
argv (script first, interpreter dropped). ``rewrite(cmd, total_step=6, ...)`` returns the argv with only the
flags of :data:`REWRITABLE` changed, and checks that nothing else was touched.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

# The only flags a test may change: the model source, step counts, checkpoint numbers, sequence length, and
# the student widths, all three together (so they match a tiny teacher).
WIDTHS = ("--d_model", "--d_ff", "--num_attention_heads")
REWRITABLE = frozenset({"--ptrain_ver", "--total_step", "--warmup_step", "--ckpt_step", "--log_step", "--ckpt",
                        "--max_seq_len", "--tckpt", "--gate_total_step", "--gate_warmup_step", *WIDTHS})
INTERPRETER = re.compile(r"python(3(\.\d+)?)?")


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
