#!/usr/bin/env bash
# The runs behind docs/gpu_h100.md, as launched on one H100 (16 CPU cores) on
# 2026-11-23: every line is one `python run.py` process, all started at once
# (one GPU shared by up to ~20 processes, OMP_NUM_THREADS=1 each), so the
# s/epoch columns are under that load; accuracy is unaffected.
#   DATA=/path/holding/ml-1m OUT=/tmp/gpu bash benchmarks/gpu_runs.sh
# Then: python benchmarks/summarize_runs.py $OUT/res/<runs> --output docs/results/...
set -u
DATA=${DATA:-../shared/data}
OUT=${OUT:-/tmp/gpu}
export OMP_NUM_THREADS=1
mkdir -p "$OUT/logs" "$OUT/res"
job() {
  local name=$1; shift
  setsid nohup python run.py "$@" --output_dir="$OUT/res/$name" --checkpoint_dir="$OUT/ckpt/$name" \
    > "$OUT/logs/$name.log" 2>&1 < /dev/null &
}
# ml-1m, all ratings, max length 200, seen items filtered (the SASRec/gSASRec protocol)
M1="--dataset=ml-1m --data_path=$DATA --MAX_ITEM_LIST_LENGTH=200 --filter_seen=True"
job m1_attnseq --model=AttnSeq $M1
job m1_sasrec --model=SASRec $M1
# ml-100k (embedded), max length 50: SASRec, NARM, GRU4Rec, AttnRNN with RecBole/our defaults, 3 seeds
for s in 2020 2021 2022; do
  job s_sasrec_$s --model=SASRec --dataset=ml-100k --seed=$s
  job r_narm_$s --model=NARM --dataset=ml-100k --seed=$s
  job r_gru4rec_$s --model=GRU4Rec --dataset=ml-100k --seed=$s
  job r_attnrnn_general_$s --model=AttnRNN --dataset=ml-100k --seed=$s --train_mode=prefix --train_batch_size=2048
done
for t in dot additive linear none; do
  job r_attnrnn_${t}_2020 --model=AttnRNN --dataset=ml-100k --attention_type=$t --train_mode=prefix --train_batch_size=2048
done
# AttnSeq on ml-100k: defaults over 3 seeds and one-knob variations (chosen on validation)
A="--model=AttnSeq --dataset=ml-100k"
job a00_base_2020 $A
job a00_base_2021 $A --seed=2021
job a00_base_2022 $A --seed=2022
job a01_drop01 $A --hidden_dropout_prob=0.1 --attn_dropout_prob=0.1
job a02_h128 $A --hidden_size=128 --inner_size=512
job a03_h128_d03 $A --hidden_size=128 --inner_size=512 --hidden_dropout_prob=0.3 --attn_dropout_prob=0.3
job a05_lr2e3 $A --learning_rate=0.002
job a06_lr5e4 $A --learning_rate=0.0005
job a07_l3 $A --n_layers=3
job a08_wd1e4 $A --weight_decay=0.0001
job a09_h128_nh4 $A --hidden_size=128 --inner_size=512 --n_heads=4
for s in 2020 2021 2022; do
  job b1_h256d3_$s $A --hidden_size=256 --inner_size=1024 --hidden_dropout_prob=0.3 --attn_dropout_prob=0.3 --seed=$s
  job b2_h128lr2_$s $A --hidden_size=128 --inner_size=512 --learning_rate=0.002 --seed=$s
  job b3_h256d3lr2_$s $A --hidden_size=256 --inner_size=1024 --hidden_dropout_prob=0.3 --attn_dropout_prob=0.3 --learning_rate=0.002 --seed=$s
  job b4_lr2_$s $A --learning_rate=0.002 --seed=$s
done
wait
