"""engine/allocator.py: with the tuning, the steady steps of a training-like allocation pattern (several
20-30 MB activations alive at once, then freed) reuse the heap's pages instead of faulting in new ones.
Counted with getrusage in a fresh process, since mallopt settings are per process. Without the tuning the
count depends on where glibc happened to place the blocks (0 in about one run of four here, 200k-380k page
faults over 10 steps otherwise), so only the tuned side is asserted."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

PROBE = """
import json, resource, torch
from fine_tune.engine.allocator import tune_malloc_for_training
applied = tune_malloc_for_training()
def step(k):
    xs = [torch.empty((20 + (i + k) % 3 * 5) * 1024 * 1024 // 4).fill_(1.0) for i in range(6)]
    return sum(float(x[0]) for x in xs)
for k in range(3):
    step(k)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for k in range(10):
    step(k)
print(json.dumps({"applied": applied, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def probe(tuning: str) -> dict:
    env = {**os.environ, "FT_MALLOC_TUNING": tuning, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")
def test_tuned_steps_reuse_pages():
    for _ in range(2):
        on = probe("1")
        assert on["applied"] is True
        # one 20 MB block is 5120 pages; 10 steps of 6 blocks untuned fault in up to 380k pages here
        assert on["faults"] < 5120, on


def test_tuning_can_be_switched_off():
    assert probe("0")["applied"] is False
