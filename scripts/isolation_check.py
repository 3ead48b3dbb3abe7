#!/usr/bin/env python
"""Isolation check: does every test pass when it runs alone?

A test that reads what another test wrote (a logits set, a trained experiment, a module-global cache) passes in
the suite's order and fails alone, or in another order. CI runs the suite in a random order (pytest-randomly, its
seed printed last), which finds most such dependencies; this script finds the rest: it collects the suite's test
ids and runs each in its own pytest process, ``--jobs`` at a time, and prints those that fail alone.

    python scripts/isolation_check.py                          # every test (49 minutes on 2 cores, 2026-12-06)
    python scripts/isolation_check.py tests/test_model_families.py tests/test_tasks.py
    python scripts/isolation_check.py --jobs 2 --out bench/results/isolation_check.md

Exit status 0 when every test passed alone.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def collect(paths: list[str]) -> list[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:randomly", "-p", "no:cacheprovider", *paths],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    ids = [line for line in proc.stdout.splitlines() if "::" in line and not line.startswith(" ")]
    if proc.returncode != 0 or not ids:
        raise SystemExit(
            f"error: collecting {' '.join(paths) or 'tests'} failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
        )
    return ids


def run_alone(test: str, base: Path) -> tuple[str, int, str, float]:
    env = dict(os.environ, TQDM_DISABLE="1", PYTHONDONTWRITEBYTECODE="1")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=base) as tmp:  # each test its own pytest base folder
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:randomly",
                "-p",
                "no:cacheprovider",
                f"--basetemp={tmp}/t",
                test,
            ],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
        )
    return test, proc.returncode, (proc.stdout + proc.stderr)[-2000:], time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="*", help="test files or ids (default: the whole suite)")
    ap.add_argument("--jobs", type=int, default=2, help="tests run at once (default 2)")
    ap.add_argument("--out", help="also write the result to this markdown file")
    args = ap.parse_args()
    tests = collect(args.paths)
    print(f"{len(tests)} tests, each alone, {args.jobs} at a time", flush=True)
    start, failed = time.perf_counter(), []
    with tempfile.TemporaryDirectory(prefix="isolation-check-") as base, ThreadPoolExecutor(args.jobs) as pool:
        for done, (test, code, out, secs) in enumerate(pool.map(lambda t: run_alone(t, Path(base)), tests), 1):
            if code != 0:
                failed.append((test, code, out))
                print(f"FAILED alone ({code}, {secs:.0f} s): {test}\n{out}", flush=True)
            else:
                print(f"[{done}/{len(tests)}] passed alone ({secs:.0f} s): {test}", flush=True)
    total = time.perf_counter() - start
    lines = [
        f"Isolation check: {len(tests) - len(failed)} of {len(tests)} tests pass alone ({total:.0f} s, "
        f"{args.jobs} at a time)."
    ] + [f"- FAILED alone: `{t}` (exit {c})" for t, c, _ in failed]
    print("\n".join(lines))
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 0 if not failed else 1


if __name__ == "__main__":
    raise SystemExit(main())
