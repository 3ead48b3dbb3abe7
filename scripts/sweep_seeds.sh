#!/usr/bin/env bash
# Sweep seeds with bash, evaluate every run, and end with the results table (mean ± std over the seeds).
#
#   bash scripts/sweep_seeds.sh                       # offline: synthetic BoolQ data and a tiny generated model
#   PTRAIN=bert-base-uncased TASK=qqp SEEDS="42 43 44" STEPS=34110 WARMUP=3411 CKPT=1000 bash scripts/sweep_seeds.sh
#
# Every run is resumable and re-running a finished one is a no-op, so the whole sweep can simply be re-run
# after an interruption. Set FT_DATA_ROOT / FT_EXP_ROOT to use your own data and experiment roots.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
SEEDS=${SEEDS:-"42 43 44"}
TASK=${TASK:-boolq}
STEPS=${STEPS:-60}
WARMUP=${WARMUP:-6}
CKPT=${CKPT:-20}
NAME=${NAME:-sweep}
case "$TASK" in boolq) DEV=val ;; qqp) DEV=dev ;; *) echo "TASK must be boolq or qqp" >&2; exit 2 ;; esac

if [ -z "${PTRAIN:-}" ]; then  # the offline default: generate a tiny model and synthetic data once
  export FT_DATA_ROOT=${FT_DATA_ROOT:-data/sweep/data} FT_EXP_ROOT=${FT_EXP_ROOT:-data/sweep/experiments}
  PTRAIN=data/sweep/tiny-bert
  "$PY" - "$PTRAIN" "$FT_DATA_ROOT" <<'PYEOF'
import sys
from pathlib import Path
from fine_tune import synthetic
model, data = map(Path, sys.argv[1:3])
if not (model / "config.json").is_file():
    synthetic.write_tiny_model(model, "bert", num_layers=2, hidden=32, heads=2, ff=64)
if not (data / "BoolQ" / "train.jsonl").is_file():
    synthetic.write_boolq(data, n_train=256, n_val=128, n_test=64)
    synthetic.write_qqp(data, n_train=256, n_dev=128, n_test=64)
PYEOF
fi

for seed in $SEEDS; do
  "$PY" run_fine_tune.py --experiment "${NAME}_s${seed}" --model bert --task "$TASK" --ptrain_ver "$PTRAIN" \
    --seed "$seed" --batch_size 32 --lr "${LR:-1e-3}" --max_seq_len "${MAX_SEQ_LEN:-64}" --total_step "$STEPS" \
    --warmup_step "$WARMUP" --ckpt_step "$CKPT" --log_step "$CKPT"
  "$PY" run_fine_tune_eval.py --experiment "${NAME}_s${seed}" --model bert --task "$TASK" --dataset "$DEV"
done

# one row for the seed group: the checkpoint of each run chosen on the dev split
"$PY" results_table.py --task "$TASK" --experiments "${NAME}_s*" --select_on "$DEV"
