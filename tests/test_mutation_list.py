"""The mutation list itself (scripts/mutation_check.py): every mutation applies to today's tree — its source text
occurs exactly once in its file, and a Python file still parses once mutated (a mutant that does not parse fails
every test, so its "caught" would prove nothing) — and no two share a name."""

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load_mutation_check():
    spec = importlib.util.spec_from_file_location("mutation_check", ROOT / "scripts" / "mutation_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("mutation_check", module)
    spec.loader.exec_module(module)
    return module


def test_every_mutation_applies_once_and_parses(tmp_path):
    mc = load_mutation_check()
    names = [m.name for m in mc.MUTATIONS]
    assert len(names) == len(set(names)), sorted({n for n in names if names.count(n) > 1})
    problems = {}
    for m in mc.MUTATIONS:
        copy = tmp_path / m.file
        if not copy.exists():
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_text((ROOT / m.file).read_text())
        problem = mc.apply(tmp_path, m)
        if problem is None:
            copy.write_text((ROOT / m.file).read_text())  # undone for the next mutation of the same file
        else:
            problems[m.name] = problem
    assert not problems, problems
    # the check refuses a mutant that does not parse, naming it (the mechanism the loop above relies on)
    (tmp_path / "a.py").write_text("if x:\n    y()\n")
    assert "does not parse" in mc.apply(tmp_path, mc.Mutation("b", "b", "a.py", "    y()\n", "", ("t",)))
