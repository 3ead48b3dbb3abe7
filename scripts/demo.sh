#!/usr/bin/env bash
# Set up, then run the offline demo: teacher -> eval -> logits -> student -> eval -> test predictions on a
# synthetic BoolQ-format data set and a tiny model the project generates itself (no network).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${PYTHON:-python3}" -m fine_tune.demo "$@"
