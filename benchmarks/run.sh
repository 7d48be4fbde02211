#!/usr/bin/env bash
# The benchmark suite in one command: build (or reuse) the benchmark venv with the peers, then
# run every section on one CPU core and rewrite docs/BENCHMARKS.md from the results.
#
#   bash benchmarks/run.sh            # full run
#   bash benchmarks/run.sh --quick    # smoke run
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bash "$HERE/setup_venv.sh"
# the last core this process may use, unless BENCH_CPU names one
CPU="${BENCH_CPU:-$("$HERE/.venv/bin/python" -c 'import os; print(max(os.sched_getaffinity(0)))')}"
# one core, one thread: the comparisons are per core
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
exec taskset -c "$CPU" "$HERE/.venv/bin/python" "$HERE/run.py" "$@"
