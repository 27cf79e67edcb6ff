#!/usr/bin/env bash
# The medfm-clip recipe sweep on one GPU machine (the `device` call of the model card's "GPU sweep"):
# the bundle of scripts/clip_sweep.py pack travels in runs/; eight shards of the grid share the GPU.
set -uo pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
out=${OUT:-runs/sweep-best}
work=/tmp/clip-sweep
shards=${SHARDS:-8}
python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name())"
python3 scripts/clip_sweep.py unpack --bundle runs/clip-bundle.xz -o $work/caches || exit 1
for k in $(seq 0 $((shards - 1))); do
    timeout "${SHARD_LIMIT_S:-470}" python3 scripts/clip_sweep.py run --caches $work/caches --device cuda \
        --shard "$k/$shards" --budget-s "${BUDGET_S:-300}" -o $work > $work/shard-$k.log 2>&1 &
done
wait
python3 scripts/clip_sweep.py merge --runs $work -o "$out"
cat $work/shard-*.log | grep -v '^{"epoch"' > "$out/shards.log"
