#!/usr/bin/env bash
# The GPU check (issue 31): the toolkit's CUDA paths in one prepared run, offline, under 10 minutes on one H100,
# ending with a markdown table (stdout and data/gpu_check/gpu_check.md). scripts/gpu_check.py says what each row
# checks; doc/performance.md, "GPU check (issue 31)", what the table reports.
#   bash scripts/gpu_check.sh            # a machine with a CUDA GPU: BERT-base-sized random models
#   bash scripts/gpu_check.sh --smoke    # any machine: tiny models, 2 steps, on the CPU
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" scripts/gpu_check.py "$@"
