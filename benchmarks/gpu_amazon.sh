#!/usr/bin/env bash
# The seeded Amazon and ml-1m tables on one GPU machine (16 cores): every
# model x seed of a dataset at once (--jobs), each within the same budget,
# so s/epoch columns are under shared load; accuracy is unaffected. The
# AttnSeq row with both dropouts at 0.5 is properties/sparse.yaml.
#   DATA=/path/holding/the/datasets OUT=/tmp/gpu-bench bash benchmarks/gpu_amazon.sh [dataset ...]
set -euo pipefail
DATA=${DATA:-../shared/data}
OUT=${OUT:-/tmp/gpu-bench}
export OMP_NUM_THREADS=1
datasets=("$@")
[ ${#datasets[@]} -gt 0 ] || datasets=(amazon-beauty amazon-sports amazon-toys)
for dataset in "${datasets[@]}"; do
  python -m recbole_attn.bench --dataset="$dataset" --data_path="$DATA" --filter_seen=True --device=cuda \
    --models="AttnSeq,AttnSeq[hidden_dropout_prob=0.5;attn_dropout_prob=0.5],AttnRNN,SASRec,GRU4Rec,NARM" \
    --seeds=2020,2021,2022 --jobs=18 --budget=420 \
    --output_dir="$OUT"
done
