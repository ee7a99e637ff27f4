#!/bin/bash
# Run benchmarks/fashion_mnist.py once per line of a sweep file, PAR at a time; JSON lines land in $OUT.
#   OUT=/tmp/sweep PAR=4 bash benchmarks/sweep.sh benchmarks/sweeps/recipe-7.txt
# Sweep file lines: NAME|EPOCHS|key=value;key=value;...  (the recipe search of docs/recipes.md)
# SIAMKIT_FASHION_MNIST may point at a folder with the IDX files (default: Debian's dataset-fashion-mnist).
export PYTHONPATH=$PWD/src
OUT=${OUT:-/tmp/siamkit-sweep}
mkdir -p $OUT
run() {
  name=$1; epochs=$2; shift 2
  sets=(); for o in "$@"; do sets+=(--set "$o"); done
  python benchmarks/fashion_mnist.py --epochs $epochs "${sets[@]}" --pairs 50000 2>$OUT/$name.err | sed "s/^{/{\"name\": \"$name\", /" > $OUT/$name.json
}
N=${PAR:-4}
while IFS='|' read -r name epochs overrides; do
  [ -z "$name" ] && continue
  IFS=';' read -ra arr <<< "$overrides"
  run $name $epochs "${arr[@]}" &
  while [ $(jobs -r | wc -l) -ge $N ]; do sleep 1; done
done < $1
wait
cat $OUT/*.json
