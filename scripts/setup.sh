#!/usr/bin/env bash
# Install what the toolkit needs into the current Python environment (idempotent).
# torch is installed first, pinned: on a CPU-only machine `torch==2.13.0` may come as a CPU build, while an
# unpinned torch would pull a multi-GB CUDA build. Set TORCH_SPEC to choose another build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  "$PY" -m pip install -q --disable-pip-version-check "${TORCH_SPEC:-torch==2.13.0}"
fi
"$PY" -m pip install -q --disable-pip-version-check -r requirements.txt
