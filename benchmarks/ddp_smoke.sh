#!/usr/bin/env bash
# Multi-process smoke test: every model trains one epoch under torchrun (DDP) through the real CLI on the embedded
# default, and each run's replicas must hold identical weights after the epoch (history.csv: ranks_in_sync).
# Covers what broke a first multi-GPU run (issue 14): ProMMA under protocols A and B (parameters without a gradient
# on a rank), LNLN with a pretrained BERT-family encoder that ships a pooler (the packaged MiniLM), and a last
# global batch smaller than the number of processes (empty shards).
#
#   benchmarks/ddp_smoke.sh [--nproc 2] [--device auto|cuda|cpu] [--out DIR] [--models "baseline lnln ..."]
#
# On CUDA each process takes one GPU (NCCL), so --nproc must not exceed the visible GPUs; on the CPU it runs gloo
# (slow: minutes per model on 2 cores). Prints one JSON line per run, then "ddp smoke: N/N runs passed"; exits 1
# if any run failed or lost sync. PYTHON selects the interpreter (default: python).
set -uo pipefail

NPROC=2
DEVICE=auto
OUT=""
MODELS="baseline baseline-lastbatch lnln-minilm almt promma-A promma-B mplmm"
while [ $# -gt 0 ]; do
  case "$1" in
    --nproc) NPROC=$2; shift 2 ;;
    --device) DEVICE=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --models) MODELS=$2; shift 2 ;;
    -h|--help) sed -n 2,13p "$0"; exit 0 ;;
    *) echo "ddp_smoke.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-python}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-$(mktemp -d -t ddp_smoke.XXXXXX)}
mkdir -p "$OUT"

if [ "$DEVICE" != cpu ]; then
  NGPU=$($PY -c "import torch; print(torch.cuda.device_count())")
  if [ "$DEVICE" = cuda ] && [ "$NGPU" -lt "$NPROC" ]; then
    echo "ddp_smoke.sh: --nproc $NPROC needs $NPROC visible GPUs, found $NGPU" >&2; exit 2
  fi
  if [ "$DEVICE" = auto ] && [ "$NGPU" -gt 0 ] && [ "$NGPU" -lt "$NPROC" ]; then
    echo "ddp_smoke.sh: --nproc $NPROC needs $NPROC visible GPUs, found $NGPU (use --device cpu for gloo)" >&2; exit 2
  fi
fi
# a batch size whose last global batch (of the 600 training samples) is smaller than the number of processes
SMALL_LAST=$($PY -c "n, p = 600, $NPROC; print(next(b for b in range(64, n) if 0 < n % b < p))")

args_of() {
  case "$1" in
    baseline) echo "--model baseline -p A" ;;
    baseline-lastbatch) echo "--model baseline -p B --set train.batch_size=$SMALL_LAST" ;;
    lnln-minilm) echo "--model lnln -p A --set model_config.text.kind=pretrained --set model_config.text.name_or_path=minilm" ;;
    almt) echo "--model almt -p A" ;;
    promma-A) echo "--model promma -p A" ;;
    promma-B) echo "--model promma -p B" ;;
    mplmm) echo "--model mplmm -p B" ;;
    *) return 1 ;;
  esac
}

passed=0; total=0
for name in $MODELS; do
  total=$((total + 1))
  if ! a=$(args_of "$name"); then echo "ddp_smoke.sh: unknown run $name" >&2; continue; fi
  t0=$(date +%s)
  # shellcheck disable=SC2086
  $PY -m torch.distributed.run --standalone --nproc_per_node="$NPROC" -m mmsa_core train $a --epochs 1 --quiet \
      --device "$DEVICE" --out "$OUT/$name" > "$OUT/$name.log" 2>&1
  rc=$?
  wall=$(( $(date +%s) - t0 ))
  sync=$($PY -c "
import pandas as pd, sys
try:
    h = pd.read_csv(sys.argv[1])
    print(str(bool(h['ranks_in_sync'].astype(bool).all())).lower())
except Exception as e:
    print('null')
" "$OUT/$name/history.csv")
  echo "{\"run\": \"$name\", \"nproc\": $NPROC, \"rc\": $rc, \"ranks_in_sync\": $sync, \"wall_s\": $wall, \"log\": \"$OUT/$name.log\"}"
  if [ "$rc" -eq 0 ] && [ "$sync" = true ]; then passed=$((passed + 1)); else tail -n 30 "$OUT/$name.log" >&2; fi
done
echo "ddp smoke: $passed/$total runs passed (nproc $NPROC, device $DEVICE, out $OUT)"
[ "$passed" -eq "$total" ]
