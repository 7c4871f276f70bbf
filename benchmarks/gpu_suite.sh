#!/usr/bin/env bash
# GPU suite (benchmarks/gpu_suite.py): pretraining, embedding and MIL throughput on one GPU, in plain
# torch, under 8 minutes on an H100/H200. For a lent GPU machine with torch and timm but no Ray,
# MLflow or zarr: zarr and its codecs come from wheels carried in benchmarks/wheels (fetch them
# first with `bash benchmarks/fetch_gpu_wheels.sh` where pip reaches PyPI), installed into a
# private folder, and sslray is imported from this working tree (no install).
#
#   bash benchmarks/gpu_suite.sh                 # writes benchmarks/results/gpu_suite_<device>.csv/.md
#   bash benchmarks/gpu_suite.sh --device cpu --quick   # the same code at toy sizes, seconds
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c "import zarr, numcodecs" 2>/dev/null; then
    if ! compgen -G "benchmarks/wheels/*.whl" >/dev/null; then
        echo "gpu_suite: zarr/numcodecs are not installed and benchmarks/wheels holds no wheels;" \
             "run bash benchmarks/fetch_gpu_wheels.sh where pip reaches PyPI and carry benchmarks/wheels" >&2
        exit 2
    fi
    site=${TMPDIR:-/tmp}/sslray-gpu-suite-site
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
        benchmarks/wheels/*.whl
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "$PYTHON" benchmarks/gpu_suite.py "$@"
