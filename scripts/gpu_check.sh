#!/usr/bin/env bash
# The device check (issue 19): on a GPU machine ~8 minutes, no download (models random-initialised
# from configs); on a CPU the checks that need no GPU, under 2 minutes, the GPU rows skipped with a
# line. One JSON line (also in $OUT/gpu_check.json when OUT is set) and a table.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
exec "$PY" benchmarks/gpu_check.py ${OUT:+--out "$OUT/gpu_check.json"} "$@"
