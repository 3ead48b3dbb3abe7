"""Commands of the task documents, parsed from their ```sh blocks, and the only rewrites a test may make."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

# The only flags a test may change: the model source, step counts, checkpoint numbers, sequence length.
REWRITABLE = frozenset({"--ptrain_ver", "--total_step", "--warmup_step", "--ckpt_step", "--log_step", "--ckpt",
                        "--max_seq_len"})


@dataclass
class Command:
    section: str
    argv: list[str]  # without the interpreter

    @property
    def script(self) -> str:
        return self.argv[0]

    def flag(self, name: str) -> str | None:
        if name in self.argv:
            i = self.argv.index(name)
            return self.argv[i + 1] if i + 1 < len(self.argv) and not self.argv[i + 1].startswith("--") else ""
        return None


def parse_commands(md_path: Path, stop_heading: str | None = None) -> list[Command]:
    """Every ``python``/``python3.8`` command of the document's ```sh blocks (continuations joined), with the
    heading it stands under; parsing stops at ``stop_heading`` (the maintained document's own additions)."""
    commands: list[Command] = []
    section, in_block, buf = "", False, ""
    for line in Path(md_path).read_text(encoding="utf-8").splitlines():
        if not in_block and line.startswith("#"):
            if stop_heading and line.strip() == stop_heading:
                break
            section = line.lstrip("#").strip()
        elif line.strip().startswith("```"):
            in_block = line.strip() == "```sh" and not in_block
            continue
        elif in_block:
            text = line.split(" #")[0] if not line.lstrip().startswith("#") else ""
            if text.rstrip().endswith("\\"):
                buf += text.rstrip()[:-1] + " "
                continue
            buf += text
            words = shlex.split(buf)
            buf = ""
            if words and re.fullmatch(r"python(3(\.\d+)?)?", words[0]):
                commands.append(Command(section, words[1:]))
    return commands


def rewrite(cmd: Command, **values: str) -> list[str]:
    """argv with the given flags (``total_step=6``) replaced; any other flag is refused."""
    argv = list(cmd.argv)
    for key, value in values.items():
        flag = "--" + key
        assert flag in REWRITABLE, f"a test may not rewrite {flag}"
        if flag in argv:
            argv[argv.index(flag) + 1] = str(value)
    return argv
