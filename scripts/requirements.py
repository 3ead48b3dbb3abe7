#!/usr/bin/env python
"""Write requirements.txt from pyproject.toml, the one source of the dependencies: the package's own, then its
``onnx``, ``tracking``, ``test`` and ``lint`` extras (what the README's commands install: scripts/setup.sh). Each
line keeps the comment pyproject.toml gives it.

    python scripts/requirements.py           # rewrite requirements.txt
    python scripts/requirements.py --check   # exit 1 (one line) when requirements.txt is not what it would write

tests/test_packaging.py checks it, so an edit of one without the other fails the suite.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, as a package (the test extra)
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
EXTRAS = ("onnx", "tracking", "test", "lint")  # what the README's setup installs beside the package's own
HEADER = (
    "# Generated from pyproject.toml by `python scripts/requirements.py`: edit pyproject.toml, then run it.\n"
    "# Install torch first where a CPU build is wanted: pip install torch==2.13.0 (scripts/setup.sh does)\n"
)


def comments(text: str) -> dict[str, str]:
    """The comment pyproject.toml gives each requirement: on its own line, or, for an extra's list (``name = [...]``
    on one line), the comment line just above it."""
    found: dict[str, str] = {}
    above = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            above = stripped[1:].strip()
            continue
        extra = re.match(r"^[A-Za-z_-]+\s*=\s*\[.*\]\s*$", stripped)
        for spec, note in re.findall(r'"([A-Za-z0-9_.-]+\s*[<>=!~][^"]*)"\s*,?\s*(?:#\s*(.*))?', line):
            found.setdefault(spec, (note or "").strip() or (above if extra else ""))
        above = ""
    return found


def render(pyproject: Path = ROOT / "pyproject.toml") -> str:
    text = pyproject.read_text()
    project = tomllib.loads(text)["project"]
    notes = comments(text)
    specs = [*project["dependencies"], *(s for extra in EXTRAS for s in project["optional-dependencies"][extra])]
    lines = [HEADER]
    for spec in specs:
        note = notes.get(spec, "")
        lines.append(f"{spec:<20} # {note}\n" if note else f"{spec}\n")
    return "".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    want, path = render(), ROOT / "requirements.txt"
    if args.check:
        if not path.is_file() or path.read_text() != want:
            print(f"{path} is not generated from pyproject.toml: run python scripts/requirements.py", file=sys.stderr)
            return 1
        return 0
    path.write_text(want)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
