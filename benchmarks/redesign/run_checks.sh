#!/usr/bin/env bash
# Runs make run's flags on the IMDb subset and the smoke presets of trainers/extrapolation.py and
# trainers/pretrain_mlm.py in checkout REPO, writing results under OUT:
#   bash benchmarks/redesign/run_checks.sh REPO OUT SUBSET.json
# Run it on a checkout of the commit before the redesign and on one after, then compare.py.
set -u
repo=$(cd "$1" && pwd); out=$2; subset=$3; mkdir -p "$out"; out=$(cd "$out" && pwd)
py=${PYTHON:-$repo/.venv/bin/python}
cd "$repo"
export PYTHONPATH="$repo"
( time $py trainers/train_classifier.py --flagfile=trainers/configs/main.flags \
    --dataset="$subset" --model_dir="$out/main" --export_dir="$out/saved_models" ) > "$out/main.log" 2>&1
( time $py trainers/extrapolation.py --preset=smoke --output_dir="$out/extrapolation" ) > "$out/extrapolation.log" 2>&1
( time $py trainers/pretrain_mlm.py --preset=smoke --model_dir="$out/mlm" ) > "$out/mlm.log" 2>&1
